use cache_aside::invalidates;

#[invalidates()]
async fn f() {}

fn main() {}
