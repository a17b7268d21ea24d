use cache_aside::cached;

#[cached(tll = "5m")]
async fn f() -> u32 {
    1
}

fn main() {
    let _ = f();
}
