use cache_aside::cached;

struct Db;

impl Db {
    fn count(&self) -> u32 {
        1
    }
}

#[cached(ns = "counts", stale = "30s", skip(db))]
async fn count(db: &Db, id: u32) -> u32 {
    db.count() + id
}

fn main() {}
