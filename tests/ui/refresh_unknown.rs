use cache_aside::cached;

#[cached(ns = "counts", stale = "30s", refresh = "later")]
async fn count(id: u32) -> u32 {
    id
}

fn main() {}
