use cache_aside::cached;

#[cached(unless = |v: &u32| *v)]
async fn f() -> u32 {
    1
}

fn main() {}
