use cache_aside::cached;

#[cached(unless = |v: &String| v.is_empty())]
async fn f() -> u32 {
    1
}

fn main() {}
