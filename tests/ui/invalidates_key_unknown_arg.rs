use cache_aside::invalidates;

#[invalidates(ns = "airport", key(cod))]
async fn f(code: &str) {
    let _ = code;
}

fn main() {}
