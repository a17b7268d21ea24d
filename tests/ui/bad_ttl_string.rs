use cache_aside::cached;

#[cached(ttl = "5 minutes please")]
async fn f() -> u32 {
    1
}

fn main() {}
