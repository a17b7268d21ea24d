use cache_aside::cached;

#[cached(ttl)]
async fn f() -> u32 {
    1
}

fn main() {}
