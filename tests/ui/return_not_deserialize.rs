use cache_aside::cached;
use serde::Serialize;

#[derive(Serialize)]
struct Flight;

#[cached]
async fn f(code: &str) -> Flight {
    let _ = code;
    Flight
}

fn main() {}
