use cachet::invalidates;

#[invalidates(ns = "airport", key(cod))]
async fn f(code: &str) {
    let _ = code;
}

fn main() {}
