use cache_aside::cached;

#[cached(ns = "counts", refresh = "inline")]
async fn count(id: u32) -> u32 {
    id
}

fn main() {}
