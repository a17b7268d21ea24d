use cache_aside::invalidates;

#[invalidates("airport", ttl = "5m")]
async fn f() {}

fn main() {}
