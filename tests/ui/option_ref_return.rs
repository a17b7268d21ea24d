use cache_aside::cached;

#[cached]
async fn f(code: u32) -> Option<&'static str> {
    if code == 0 { Some("zero") } else { None }
}

fn main() {}
