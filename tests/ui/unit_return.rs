use cache_aside::cached;

// Returns nothing: after the first call the body would not run for a TTL.
#[cached(ns = "log_visit", ttl = "1m")]
async fn log_visit(page: u32) {
    let _ = page;
}

#[cached(ns = "touch", ttl = "1m")]
async fn touch(page: u32) -> () {
    let _ = page;
}

#[cached(ns = "save", ttl = "1m")]
async fn save(page: u32) -> Result<(), String> {
    let _ = page;
    Ok(())
}

fn main() {}
