use cache_aside::cached;

#[cached(ns = "bad ns")]
async fn f() -> u32 {
    1
}

fn main() {}
