use cache_aside::cached;

#[cached(cache = 5)]
async fn f() -> u32 {
    1
}

fn main() {}
