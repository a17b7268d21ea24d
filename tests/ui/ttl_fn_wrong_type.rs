use std::time::Duration;

use cache_aside::cached;

fn by_name(name: &String) -> Duration {
    Duration::from_secs(name.len() as u64)
}

#[cached(ns = "n", ttl = by_name)]
async fn f(id: u32) -> Result<u32, String> {
    Ok(id)
}

fn main() {}
