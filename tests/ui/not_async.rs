use cache_aside::cached;

#[cached]
fn f() -> u32 {
    1
}

fn main() {
    let _ = f();
}
