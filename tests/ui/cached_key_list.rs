use cache_aside::cached;

#[cached(key(cod))]
async fn f(code: &str) -> u32 {
    let _ = code;
    1
}

fn main() {}
