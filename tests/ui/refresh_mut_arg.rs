use cache_aside::cached;

#[cached(ns = "counts", stale = "30s")]
async fn count(buf: &mut Vec<u8>, id: u32) -> u32 {
    buf.push(1);
    id
}

fn main() {}
