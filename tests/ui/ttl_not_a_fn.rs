use cache_aside::cached;

#[cached(ns = "n", ttl = 60 * 5)]
async fn f(id: u32) -> u32 {
    id
}

fn main() {}
