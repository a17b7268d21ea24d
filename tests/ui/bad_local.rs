use cache_aside::cached;

// `local` takes how long a hit stays in this process, or `false`.
#[cached(local = true)]
async fn f() -> u32 {
    1
}

fn main() {
    let _ = f();
}
