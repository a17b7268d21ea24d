use cache_aside::cached;

#[cached(unless = Option::is_none)]
async fn f() -> u32 {
    1
}

fn main() {}
