use cache_aside::cached;

#[cached(ns = "rate", ttl = "1m", timeout = "2s")]
async fn rate(id: u32) -> Result<u32, std::io::Error> {
    Ok(id)
}

fn main() {}
