//! The live page (`GET /`) in a real headless Chromium (Debian's `chromium`
//! package; `scripts/test` installs it, `$CHROMIUM` names another binary),
//! against the real server on a loopback port, SQLite and real Redis.
//!
//! The page must load, show the namespaces, and update itself: its second
//! poll of `/dashboard.json` is held at the server until a burst of
//! requests has been made and sampled, so the numbers in the final DOM can
//! only have come from a poll the page made by itself after the burst.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::middleware::{self, Next};
use flight_db::demo::call;
use flight_db::{Dataset, Db, Queries, Seeding, api};

const DATA: Dataset = Dataset {
    flights: 20_000,
    seed: 7,
};

fn chromium() -> String {
    if let Ok(c) = std::env::var("CHROMIUM") {
        return c;
    }
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return c.to_owned();
        }
    }
    panic!(
        "no Chromium: the page test needs a headless browser (Debian: apt-get install chromium; \
         scripts/test installs it), or set CHROMIUM to one"
    );
}

/// The text of the `data-field` element inside the `data-ns` section of
/// `dom` (`ns` empty: anywhere in it).
fn field(dom: &str, ns: &str, name: &str) -> String {
    let start = match ns {
        "" => 0,
        _ => dom
            .find(&format!("data-ns=\"{ns}\""))
            .unwrap_or_else(|| panic!("no section for {ns} in the page:\n{dom}")),
    };
    let section = &dom[start..];
    let section = &section[..section.find("</section>").unwrap_or(section.len())];
    let at = section
        .find(&format!("data-field=\"{name}\""))
        .unwrap_or_else(|| panic!("no {name} for {ns}:\n{section}"));
    let rest = &section[at..];
    let open = rest.find('>').map_or(0, |i| i + 1);
    let close = rest.find('<').unwrap_or(rest.len());
    rest[open..close].trim().to_owned()
}

fn number(dom: &str, ns: &str, name: &str) -> f64 {
    let text = field(dom, ns, name);
    text.trim_end_matches(" %")
        .parse()
        .unwrap_or_else(|_| panic!("{ns} {name}: {text:?} is not a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_shows_the_namespaces_and_updates_itself() {
    let browser = chromium();
    let path = std::env::temp_dir().join(format!("flightdb-page-{}.sqlite3", std::process::id()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let (db, _) = Db::open(&url, DATA, Seeding::UnlessSame, false)
        .await
        .expect("the test database");
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("flightdb-page-{}", std::process::id());
    let cache = flight_db::cache(&redis, &prefix).await;
    let app = api::router(Queries { db, cache });

    // The page's second poll waits for the burst.
    let polls = Arc::new(AtomicUsize::new(0));
    let burst_done = Arc::new(AtomicBool::new(false));
    let gate = {
        let (polls, burst_done) = (Arc::clone(&polls), Arc::clone(&burst_done));
        move |req: Request, next: Next| {
            let (polls, burst_done) = (Arc::clone(&polls), Arc::clone(&burst_done));
            async move {
                if req.uri().path() == "/dashboard.json" && polls.fetch_add(1, SeqCst) == 1 {
                    while !burst_done.load(SeqCst) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                next.run(req).await
            }
        }
    };
    let served = app.clone().layer(middleware::from_fn(gate));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, served).await });

    // Before: a miss and a hit in two namespaces.
    for uri in ["/airports/FRA", "/flights/count?from=FRA&to=JFK"] {
        for _ in 0..2 {
            assert_eq!(call(&app, "GET", uri, None).await.0, 200, "{uri}");
        }
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let page = format!("http://127.0.0.1:{port}/");
    let dump = tokio::task::spawn_blocking(move || {
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
            ])
            .args(["--no-first-run", "--virtual-time-budget=4000", "--dump-dom"])
            .arg(page)
            .output()
            .expect("Chromium runs")
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while polls.load(SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the page never polled twice");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before: serde_json::Value = call(&app, "GET", "/dashboard.json", None).await.1;
    let hits_before = before["namespaces"]["airport"]["total_hits"]
        .as_u64()
        .unwrap();

    // The burst: 200 hits, and 10 misses on routes not asked for yet.
    for _ in 0..200 {
        assert_eq!(call(&app, "GET", "/airports/FRA", None).await.0, 200);
    }
    for to in [
        "LHR", "CDG", "AMS", "MAD", "FCO", "ZRH", "VIE", "CPH", "OSL", "ARN",
    ] {
        let uri = format!("/flights/count?from=FRA&to={to}");
        assert_eq!(call(&app, "GET", &uri, None).await.0, 200, "{uri}");
    }
    // Until the sampler has counted the whole burst, calls and request
    // times (it samples once a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: serde_json::Value = call(&app, "GET", "/dashboard.json", None).await.1;
        let (airport, count) = (
            &now["namespaces"]["airport"],
            &now["namespaces"]["flight_count"],
        );
        let at_least = |v: &serde_json::Value, n: u64| v.as_u64().is_some_and(|v| v >= n);
        if at_least(&airport["total_hits"], hits_before + 200)
            && at_least(&airport["recent"]["cached"]["requests"], 200)
            && at_least(&count["total_misses"], 11)
            && at_least(&count["recent"]["uncached"]["requests"], 10)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the burst was never sampled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    burst_done.store(true, SeqCst);

    let out = tokio::time::timeout(Duration::from_secs(60), dump)
        .await
        .expect("Chromium finished within 60 s")
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "Chromium failed: {}\n{dom}",
        String::from_utf8_lossy(&out.stderr)
    );

    // It shows the namespaces, and numbers from after the burst.
    assert!(dom.contains("flight-db: the cache, live"), "{dom}");
    for ns in ["airport", "flight_count"] {
        assert!(
            dom.contains(&format!("data-ns=\"{ns}\"")),
            "{ns} missing:\n{dom}"
        );
    }
    let updates = number(&dom, "", "updates");
    assert!(updates >= 2.0, "the page updated {updates} times");
    let hits_after = number(&dom, "airport", "total_hits");
    assert!(
        hits_after >= (hits_before + 200) as f64,
        "airport hits: {hits_before} before the burst, {hits_after} on the page"
    );
    assert!(number(&dom, "airport", "hits_per_s") > 0.0);
    assert!(number(&dom, "airport", "cached_requests") >= 200.0);
    // (A local-tier hit may round to 0.00 ms.)
    assert!(number(&dom, "airport", "cached_p50_ms") >= 0.0);
    assert!(number(&dom, "flight_count", "uncached_requests") >= 10.0);
    assert!(number(&dom, "flight_count", "total_misses") >= 11.0);
    let ratio = number(&dom, "airport", "hit_ratio");
    assert!(
        (50.0..=100.0).contains(&ratio),
        "airport hit ratio {ratio} %"
    );
    eprintln!(
        "page: {updates} updates; airport {hits_before} -> {hits_after} hits, p50 {} ms cached; \
         flight_count p50 {} ms uncached",
        field(&dom, "airport", "cached_p50_ms"),
        field(&dom, "flight_count", "uncached_p50_ms")
    );
    let _ = std::fs::remove_file(&path);
}
