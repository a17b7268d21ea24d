use cache_aside::cached;

struct Flight;

#[cached]
async fn f(code: &str) -> Flight {
    let _ = code;
    Flight
}

fn main() {}
