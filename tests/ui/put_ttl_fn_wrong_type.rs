use cache_aside::cache_put;

#[cache_put(ns = "airport", key(code), ttl = |_: &u32| std::time::Duration::from_secs(60))]
async fn rename(code: &str, name: &str) -> Result<String, std::io::Error> {
    Ok(format!("{code} {name}"))
}

fn main() {}
