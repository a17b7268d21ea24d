use cache_aside::invalidates;

#[invalidates("airport", "flight_count", key(code))]
async fn f(code: &str) {
    let _ = code;
}

fn main() {}
