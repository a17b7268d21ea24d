use cache_aside::cached;

#[cached(ttl = 0)]
async fn f() -> u32 {
    1
}

fn main() {}
