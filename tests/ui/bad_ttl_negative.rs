use cache_aside::cached;

#[cached(ttl = -1)]
async fn f() -> u32 {
    1
}

fn main() {}
