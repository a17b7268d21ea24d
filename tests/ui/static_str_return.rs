use cache_aside::cached;

#[cached]
async fn f(code: u32) -> &'static str {
    if code == 0 { "zero" } else { "other" }
}

fn main() {}
