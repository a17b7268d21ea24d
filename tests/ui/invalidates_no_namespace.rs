use cachet::invalidates;

#[invalidates]
async fn f() {}

fn main() {}
