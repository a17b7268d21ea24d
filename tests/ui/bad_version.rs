use cache_aside::cached;

#[cached(version = -1)]
async fn f() -> u32 {
    1
}

fn main() {}
