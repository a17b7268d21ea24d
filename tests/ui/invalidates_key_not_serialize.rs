use cache_aside::invalidates;

struct Code;

#[invalidates(ns = "airport", key(code))]
async fn f(code: &Code) {
    let _ = code;
}

fn main() {}
