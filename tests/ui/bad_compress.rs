use cache_aside::cached;

// A size needs a unit cache-aside knows (B, KiB, MiB).
#[cached(ns = "page", compress = "16 kB")]
async fn page(n: u32) -> String {
    n.to_string()
}

// A negative size.
#[cached(ns = "blob", compress = -1)]
async fn blob(n: u32) -> Vec<u8> {
    vec![n as u8]
}

fn main() {}
