use cache_aside::cached;

struct Db;

#[cached(key = db)]
async fn f(db: &Db) -> u32 {
    let _ = db;
    1
}

fn main() {}
