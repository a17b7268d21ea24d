use cache_aside::cached;

struct Db;

#[cached(skip(dbb))]
async fn f(db: &Db, code: &str) -> u32 {
    let _ = (db, code);
    1
}

fn main() {
    let _ = f(&Db, "FRA");
}
