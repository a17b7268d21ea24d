use cache_aside::invalidates;

#[invalidates(ns = "airport", key(code), version = 2)]
async fn rename(code: &str) {}

fn main() {}
