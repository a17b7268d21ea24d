//! When `Db::open` generates data, and when it must not: an empty database
//! is generated, data that is there is kept (whatever `--flights` says)
//! unless replacing is asked for, and tables flight-db did not make are
//! never dropped without `Seeding::Always`. SQLite always; PostgreSQL when
//! `DATABASE_URL` is set, in a schema of its own.

use flight_db::db::{Contents, DATA_VERSION, DbError, Generated};
use flight_db::{Dataset, Db, Opened, Seeding};
use sqlx::Row;

const SMALL: Dataset = Dataset {
    flights: 1000,
    seed: 7,
};
const OTHER: Dataset = Dataset {
    flights: 1500,
    seed: 8,
};

fn generated(dataset: Dataset) -> Generated {
    Generated {
        version: DATA_VERSION.to_string(),
        dataset,
    }
}

async fn flights(db: &Db) -> i64 {
    sqlx::query("SELECT count(*) FROM flight")
        .fetch_one(&db.pool)
        .await
        .and_then(|r| r.try_get(0))
        .expect("count flights")
}

async fn exec(db: &Db, sql: &'static str) {
    sqlx::query(sql).execute(&db.pool).await.expect(sql);
}

async fn open(url: &str, dataset: Dataset, seeding: Seeding) -> Result<(Db, Opened), DbError> {
    Db::open(url, dataset, seeding, false).await
}

/// Every rule, in order, on an empty database at `url`.
async fn the_rules(url: &str) {
    // Empty: generated whatever the seeding.
    let (db, opened) = open(url, SMALL, Seeding::IfEmpty).await.unwrap();
    assert_eq!(opened, Opened::Generated(generated(SMALL)));
    assert_eq!(flights(&db).await, 1000);
    // A flight added later (as through the API) shows whether data was replaced.
    exec(
        &db,
        "INSERT INTO flight (flightno, airline_id, src, dst, departure, arrival, seats)
         SELECT flightno, airline_id, src, dst, departure, arrival, seats FROM flight LIMIT 1",
    )
    .await;

    // Serve and demo with other --flights/--seed: kept as it is.
    let (db, opened) = open(url, OTHER, Seeding::IfEmpty).await.unwrap();
    assert_eq!(opened, Opened::Existing(generated(SMALL)));
    assert_eq!(flights(&db).await, 1001, "nothing was dropped");

    // The tests' mode: the same dataset is kept ...
    let (db, opened) = open(url, SMALL, Seeding::UnlessSame).await.unwrap();
    assert_eq!(opened, Opened::Existing(generated(SMALL)));
    assert_eq!(flights(&db).await, 1001);
    // ... another one replaces it.
    let (db, opened) = open(url, OTHER, Seeding::UnlessSame).await.unwrap();
    assert_eq!(opened, Opened::Generated(generated(OTHER)));
    assert_eq!(flights(&db).await, 1500);

    // `seed --force`: replaced even when the same.
    exec(
        &db,
        "INSERT INTO flight (flightno, airline_id, src, dst, departure, arrival, seats)
         SELECT flightno, airline_id, src, dst, departure, arrival, seats FROM flight LIMIT 1",
    )
    .await;
    let (db, opened) = open(url, OTHER, Seeding::Always).await.unwrap();
    assert_eq!(opened, Opened::Generated(generated(OTHER)));
    assert_eq!(flights(&db).await, 1500);

    // Data of another version: refused, kept, and the error says what to do.
    exec(&db, "UPDATE meta SET v = '1/1500/8' WHERE k = 'data'").await;
    let e = open(url, OTHER, Seeding::IfEmpty).await.unwrap_err();
    assert!(
        matches!(e, DbError::OtherVersion { ref found, .. } if found == "1"),
        "{e}"
    );
    assert!(e.to_string().contains("seed --force"), "{e}");
    assert_eq!(flights(&db).await, 1500);

    // Tables of our names that flight-db did not generate: never dropped
    // without being asked.
    exec(&db, "DROP TABLE meta").await;
    assert_eq!(
        db.contents().await.unwrap(),
        Contents::Unknown(vec!["airline".into(), "airport".into(), "flight".into()])
    );
    let e = open(url, SMALL, Seeding::IfEmpty).await.unwrap_err();
    assert!(matches!(e, DbError::NotGenerated { .. }), "{e}");
    assert!(e.to_string().contains("refusing"), "{e}");
    assert_eq!(flights(&db).await, 1500);
    let (db, opened) = open(url, SMALL, Seeding::Always).await.unwrap();
    assert_eq!(opened, Opened::Generated(generated(SMALL)));
    assert_eq!(flights(&db).await, 1000);
    db.pool.close().await;
}

#[tokio::test]
async fn sqlite() {
    let path =
        std::env::temp_dir().join(format!("flightdb-seeding-{}.sqlite3", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    the_rules(&format!("sqlite://{}?mode=rwc", path.display())).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test]
async fn postgres() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("DATABASE_URL is not set: PostgreSQL seeding rules not checked here");
        return;
    };
    // A schema of its own, so that the API tests' data in the same database
    // is not touched.
    let admin = Db::connect(&url).await.expect("postgres");
    exec(&admin, "DROP SCHEMA IF EXISTS flightdb_seeding CASCADE").await;
    exec(&admin, "CREATE SCHEMA flightdb_seeding").await;
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options[search_path]=flightdb_seeding");
    the_rules(&scoped).await;
    exec(&admin, "DROP SCHEMA flightdb_seeding CASCADE").await;
}
