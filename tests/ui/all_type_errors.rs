// Several independent type errors: each is reported once, at its token.
use cache_aside::cached;

struct Db;
struct Flight;

#[cached(unless = |_: &Flight| false)]
async fn f(db: &Db, code: &str) -> Result<Flight, std::io::Error> {
    let _ = (db, code);
    Ok(Flight)
}

#[tokio::main]
async fn main() {
    let _ = f(&Db, "FRA").await;
}
