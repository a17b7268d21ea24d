use cache_aside::cached;

struct Db;

#[cached]
async fn f(db: &Db, code: &str) -> u32 {
    let _ = (db, code);
    1
}

fn main() {}
