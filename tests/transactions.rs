//! Invalidations inside database transactions (`cache_aside::transaction`):
//! a write's rows become visible at COMMIT, after its `#[invalidates]`
//! returned. Deterministic schedules on both backends, a dropped scope, a
//! writer process killed between its COMMIT and the end of its scope, and a
//! randomized checker across two instances (with a run without scopes that
//! shows what the checker catches).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cache_aside::{Cache, Status, cached, invalidates, transaction, with_status};
use redis::AsyncCommands;
use support::{Backend, cache, connected, raw, redis_url, unique_prefix};

on_every_backend!(
    a_read_during_a_transaction_does_not_outlive_it,
    a_key_read_during_a_transaction_does_not_outlive_it,
    a_rollback_still_invalidates_and_returns_its_error,
    nested_scopes_are_one_scope,
    a_dropped_scope_still_ends,
);

/// A table whose rows a transaction changes: `pending` until COMMIT.
#[derive(Default)]
struct Db {
    committed: AtomicI64,
    pending: AtomicI64,
}

impl Db {
    fn commit(&self) {
        self.committed
            .fetch_add(self.pending.swap(0, SeqCst), SeqCst);
    }

    fn rollback(&self) {
        self.pending.store(0, SeqCst);
    }
}

#[cached(ns = "txn_count", cache = cache, skip(cache, db))]
async fn count(cache: &Cache, db: &Db) -> i64 {
    db.committed.load(SeqCst)
}

#[invalidates("txn_count", cache = cache)]
async fn add(cache: &Cache, db: &Db) -> Result<(), String> {
    db.pending.fetch_add(1, SeqCst);
    Ok(())
}

async fn a_read_during_a_transaction_does_not_outlive_it(b: Backend) {
    let c = cache(b, "txn_ns").await;
    let db = Db::default();
    assert_eq!(with_status(count(&c, &db)).await, (0, Status::Miss));
    assert_eq!(with_status(count(&c, &db)).await, (0, Status::Hit));
    transaction(async {
        add(&c, &db).await.unwrap();
        // Not committed yet: a read sees what the database shows it, and
        // its value is not stored (the namespace is fenced).
        assert_eq!(with_status(count(&c, &db)).await, (0, Status::Miss));
        assert_eq!(with_status(count(&c, &db)).await, (0, Status::Miss));
        db.commit();
    })
    .await;
    // Once the scope returned, every read sees the commit.
    assert_eq!(with_status(count(&c, &db)).await, (1, Status::Miss));
    assert_eq!(with_status(count(&c, &db)).await, (1, Status::Hit));
    assert!(c.stats().namespaces["txn_count"].fenced >= 2);
}

#[cached(ns = "txn_airport", cache = cache, skip(cache, names))]
async fn airport(cache: &Cache, names: &std::sync::Mutex<Vec<String>>, code: &str) -> String {
    let names = names.lock().unwrap();
    format!("{code}: {}", names[0])
}

#[invalidates(ns = "txn_airport", key(code), cache = cache)]
async fn rename(cache: &Cache, code: &str) -> Result<(), String> {
    Ok(())
}

async fn a_key_read_during_a_transaction_does_not_outlive_it(b: Backend) {
    let c = cache(b, "txn_key").await;
    let names = std::sync::Mutex::new(vec!["Frankfurt".to_string()]);
    assert_eq!(airport(&c, &names, "FRA").await, "FRA: Frankfurt");
    assert_eq!(airport(&c, &names, "MUC").await, "MUC: Frankfurt");
    transaction(async {
        rename(&c, "FRA").await.unwrap();
        let (v, s) = with_status(airport(&c, &names, "FRA")).await;
        assert_eq!((v.as_str(), s), ("FRA: Frankfurt", Status::Miss));
        // Another key of the namespace is not fenced.
        assert_eq!(with_status(airport(&c, &names, "MUC")).await.1, Status::Hit);
        names.lock().unwrap()[0] = "Frankfurt am Main".into(); // COMMIT
    })
    .await;
    let (v, s) = with_status(airport(&c, &names, "FRA")).await;
    assert_eq!((v.as_str(), s), ("FRA: Frankfurt am Main", Status::Miss));
    assert_eq!(with_status(airport(&c, &names, "FRA")).await.1, Status::Hit);
}

async fn a_rollback_still_invalidates_and_returns_its_error(b: Backend) {
    let c = cache(b, "txn_rollback").await;
    let db = Db::default();
    assert_eq!(count(&c, &db).await, 0);
    let out = transaction(async {
        add(&c, &db).await.unwrap();
        db.rollback();
        Err::<(), _>("rolled back")
    })
    .await;
    assert_eq!(out, Err("rolled back"));
    // Invalidated (harmlessly), and not fenced any more.
    assert_eq!(with_status(count(&c, &db)).await, (0, Status::Miss));
    assert_eq!(with_status(count(&c, &db)).await, (0, Status::Hit));
}

async fn nested_scopes_are_one_scope(b: Backend) {
    let c = cache(b, "txn_nested").await;
    let db = Db::default();
    assert_eq!(count(&c, &db).await, 0);
    transaction(async {
        transaction(async {
            add(&c, &db).await.unwrap();
        })
        .await;
        // The inner scope's end is the outer one's: still fenced.
        assert_eq!(with_status(count(&c, &db)).await, (0, Status::Miss));
        assert_eq!(with_status(count(&c, &db)).await, (0, Status::Miss));
        db.commit();
    })
    .await;
    assert_eq!(with_status(count(&c, &db)).await, (1, Status::Miss));
    assert_eq!(with_status(count(&c, &db)).await, (1, Status::Hit));
}

async fn a_dropped_scope_still_ends(b: Backend) {
    let c = cache(b, "txn_dropped").await;
    let db = Db::default();
    assert_eq!(count(&c, &db).await, 0);
    // The client gave up after the COMMIT, before the scope ended.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        transaction(async {
            add(&c, &db).await.unwrap();
            db.commit();
            tokio::time::sleep(Duration::from_secs(30)).await;
        }),
    )
    .await;
    assert!(gave_up.is_err());
    // The scope ends in a task of its own: soon the namespace is cached again.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (v, _) = with_status(count(&c, &db)).await;
        assert_eq!(v, 1, "no pre-commit value after the commit");
        if with_status(count(&c, &db)).await.1 == Status::Hit {
            break;
        }
        assert!(Instant::now() < deadline, "the dropped scope never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The database of the killed-writer tests, in Redis (shared by the two
/// processes): `txn:{prefix}:count` is the committed count.
async fn committed_in(db: &str) -> i64 {
    let mut conn = raw(&redis_url()).await;
    conn.get::<_, Option<i64>>(db).await.unwrap().unwrap_or(0)
}

#[cached(ns = "proc_count", cache = cache, skip(cache, db))]
async fn count_in(cache: &Cache, db: &str) -> i64 {
    committed_in(db).await
}

#[invalidates("proc_count", cache = cache)]
async fn add_in(cache: &Cache) {}

/// Entries of one user, invalidated by tag.
#[cached(ns = "proc_orders", tags(user), cache = cache, skip(cache, db))]
async fn orders_in(cache: &Cache, db: &str, user: u32) -> i64 {
    committed_in(db).await
}

#[invalidates(ns = "proc_orders", tag(user), cache = cache)]
async fn add_order_in(cache: &Cache, user: u32) {}

/// An inner entry (invalidated by key) and an outer one built from it.
#[cached(ns = "proc_airport", cache = cache, skip(cache, db))]
async fn airport_in(cache: &Cache, db: &str, code: u32) -> i64 {
    committed_in(db).await
}

#[cached(ns = "proc_board", cache = cache, skip(cache, db))]
async fn board_in(cache: &Cache, db: &str, code: u32) -> i64 {
    airport_in(cache, db, code).await
}

#[invalidates(ns = "proc_airport", key(code), cache = cache)]
async fn rename_in(cache: &Cache, code: u32) {}

/// What the killed writer invalidates, and what the reader reads.
#[derive(Clone, Copy)]
enum Killed {
    /// The namespace (`count_in`).
    Namespace,
    /// A tag (`orders_in` of user 7).
    Tag,
    /// An inner key (`airport_in` 3), read through `board_in`.
    Nested,
}

impl Killed {
    fn name(self) -> &'static str {
        match self {
            Killed::Namespace => "ns",
            Killed::Tag => "tag",
            Killed::Nested => "nested",
        }
    }

    async fn write(self, c: &Cache) {
        match self {
            Killed::Namespace => add_in(c).await,
            Killed::Tag => add_order_in(c, 7).await,
            Killed::Nested => rename_in(c, 3).await,
        }
    }

    async fn read(self, c: &Cache, db: &str) -> (i64, Status) {
        match self {
            Killed::Namespace => with_status(count_in(c, db)).await,
            Killed::Tag => with_status(orders_in(c, db, 7)).await,
            Killed::Nested => with_status(board_in(c, db, 3)).await,
        }
    }
}

const CHILD: &str = "CACHE_ASIDE_TXN_CHILD";
const CHILD_KIND: &str = "CACHE_ASIDE_TXN_KIND";

async fn wait_for(conn: &mut redis::aio::MultiplexedConnection, key: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Option<String> = conn.get(key).await.unwrap();
        if v.as_deref() == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{key} never became {want}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The writer (run only when re-executed by the tests below): writes inside
/// a scope, waits for the reader, commits, and hangs inside the scope
/// until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the killed-writer tests"]
async fn txn_child() {
    let (Ok(prefix), Ok(kind)) = (std::env::var(CHILD), std::env::var(CHILD_KIND)) else {
        return;
    };
    let Some(kind) = [Killed::Namespace, Killed::Tag, Killed::Nested]
        .into_iter()
        .find(|k| k.name() == kind)
    else {
        return;
    };
    let c = Cache::builder()
        .redis_url(redis_url())
        .prefix(&prefix)
        .transaction_fence(Duration::from_millis(1500))
        .build()
        .unwrap();
    connected(&c).await;
    let mut conn = raw(&redis_url()).await;
    let phase = format!("txn:{prefix}:phase");
    transaction(async {
        kind.write(&c).await;
        let _: () = conn.set(&phase, "written").await.unwrap();
        wait_for(&mut conn, &phase, "read").await;
        let _: () = conn.set(format!("txn:{prefix}:count"), 1).await.unwrap(); // COMMIT
        let _: () = conn.set(&phase, "committed").await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
}

/// A writer process dies between its COMMIT and the end of its scope: the
/// value a reader computed from the data before the commit is never served,
/// and the entry is cached again after the fence lapses (1.5 s here).
async fn killed_writer(kind: Killed) {
    let prefix = unique_prefix("txn_kill");
    let c = Cache::builder()
        .redis_url(redis_url())
        .prefix(&prefix)
        .build()
        .unwrap();
    connected(&c).await;
    let db = format!("txn:{prefix}:count");
    let phase = format!("txn:{prefix}:phase");
    let mut conn = raw(&redis_url()).await;
    assert_eq!(kind.read(&c, &db).await, (0, Status::Miss));
    assert_eq!(kind.read(&c, &db).await, (0, Status::Hit));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["txn_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD, &prefix)
        .env(CHILD_KIND, kind.name())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&mut conn, &phase, "written").await;
    // Between the write and its COMMIT: the old count, computed, not kept.
    assert_eq!(kind.read(&c, &db).await, (0, Status::Miss));
    let _: () = conn.set(&phase, "read").await.unwrap();
    wait_for(&mut conn, &phase, "committed").await;
    child.kill().unwrap();
    let _ = child.wait();
    let killed = Instant::now();
    // The scope never ends. Every read from now on sees the commit.
    loop {
        let (v, s) = kind.read(&c, &db).await;
        assert_eq!(v, 1, "a pre-commit value was served after the commit");
        if s == Status::Hit {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the dead writer's fence never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lapsed = killed.elapsed();
    eprintln!(
        "{}: cached again {lapsed:?} after the writer was killed (fence 1.5 s)",
        kind.name()
    );
    assert!(
        lapsed >= Duration::from_millis(1000),
        "fenced until the lapse: {lapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_writer_leaves_no_pre_commit_value() {
    killed_writer(Killed::Namespace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_writer_leaves_no_pre_commit_value_of_a_tag() {
    killed_writer(Killed::Tag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_writer_leaves_no_pre_commit_outer_value() {
    killed_writer(Killed::Nested).await;
}

#[cached(ns = "checker", cache = cache, skip(cache, db))]
async fn checked_count(cache: &Cache, db: &Db) -> i64 {
    let v = db.committed.load(SeqCst);
    // A slow query: reads race the writers' commits.
    tokio::time::sleep(Duration::from_millis(fastrand() % 5)).await;
    v
}

#[invalidates("checker", cache = cache)]
async fn checked_add(cache: &Cache, db: &Db) -> Result<(), String> {
    db.pending.fetch_add(1, SeqCst);
    Ok(())
}

fn fastrand() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, SeqCst);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// 2 writers (write fn, 0 to 15 ms of other work, COMMIT) and 6 readers on
/// two instances for 3 s: a read that starts after a writer's transaction
/// returned must see its commit. Returns (violations, checked reads).
async fn check_transactions(scoped: bool) -> (usize, usize) {
    let prefix = unique_prefix(if scoped { "txn_checker" } else { "txn_plain" });
    let instance = || async {
        let c = Cache::builder()
            .redis_url(redis_url())
            .prefix(&prefix)
            .build()
            .unwrap();
        connected(&c).await;
        c
    };
    let (a, b) = (instance().await, instance().await);
    let db = Arc::new(Db::default());
    // The highest count a returned transaction committed.
    let floor = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer_lock = Arc::new(tokio::sync::Mutex::new(()));
    let mut tasks = vec![];
    for w in 0..2 {
        let (c, db, floor, done, lock) = (
            if w == 0 { a.clone() } else { b.clone() },
            db.clone(),
            floor.clone(),
            done.clone(),
            writer_lock.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !done.load(SeqCst) {
                // One transaction at a time (the table is locked).
                let _g = lock.lock().await;
                let body = async {
                    checked_add(&c, &db).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(fastrand() % 16)).await;
                    db.commit();
                };
                if scoped {
                    transaction(body).await;
                } else {
                    body.await;
                }
                floor.fetch_max(db.committed.load(SeqCst), SeqCst);
                n += 1;
                drop(_g);
                tokio::time::sleep(Duration::from_millis(fastrand() % 10)).await;
            }
            n
        }));
    }
    let mut readers = vec![];
    for r in 0..6 {
        let (c, db, floor, done) = (
            if r % 2 == 0 { a.clone() } else { b.clone() },
            db.clone(),
            floor.clone(),
            done.clone(),
        );
        readers.push(tokio::spawn(async move {
            let (mut violations, mut reads) = (0, 0);
            while !done.load(SeqCst) {
                let must_see = floor.load(SeqCst);
                let v = checked_count(&c, &db).await;
                reads += 1;
                if v < must_see {
                    violations += 1;
                }
                tokio::time::sleep(Duration::from_millis(fastrand() % 3)).await;
            }
            (violations, reads)
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    done.store(true, SeqCst);
    let mut commits = 0;
    for t in tasks {
        commits += t.await.unwrap();
    }
    let (mut violations, mut reads) = (0, 0);
    for r in readers {
        let (v, n) = r.await.unwrap();
        violations += v;
        reads += n;
    }
    assert!(commits > 20, "the writers wrote: {commits}");
    assert!(reads > 500, "the readers read: {reads}");
    (violations, reads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_transactions_across_instances_leave_no_stale_read() {
    let (violations, reads) = check_transactions(true).await;
    eprintln!("scoped: {violations} stale reads out of {reads}");
    assert_eq!(violations, 0, "{violations} stale reads out of {reads}");
}

/// The same workload without scopes: the checker sees the bug the scope
/// exists for (so the test above could fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_scope_the_checker_finds_stale_reads() {
    let (violations, reads) = check_transactions(false).await;
    eprintln!("without scopes: {violations} stale reads out of {reads}");
    assert!(violations > 0, "the checker found nothing in {reads} reads");
}

#[invalidates("scoped_count", cache = cache, scoped)]
async fn scoped_add(cache: &Cache) -> Result<(), String> {
    let _ = cache;
    Ok(())
}

#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `scoped` is a promise that is checked: called inside a scope, nothing
/// is said; outside one, an error names the fn, once.
#[test]
fn a_scoped_writer_outside_a_scope_is_logged_once() {
    use tracing_subscriber::util::SubscriberInitExt;
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let _guard = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish()
        .set_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = Cache::builder().memory().prefix("scoped").build().unwrap();
    let errors = || {
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter(|l| l.contains("ERROR") && l.contains("transactions::scoped_add"))
            .count()
    };
    rt.block_on(async {
        transaction(async { scoped_add(&c).await }).await.unwrap();
        assert_eq!(errors(), 0);
        for _ in 0..3 {
            scoped_add(&c).await.unwrap();
        }
    });
    assert_eq!(errors(), 1);
}
