use cache_aside::{cached, invalidates};

struct User {
    id: u32,
}

#[cached(ns = "orders", tags(user), skip(user))]
async fn orders(user: &User, day: u32) -> Vec<u64> {
    vec![u64::from(user.id + day)]
}

#[invalidates(ns = "orders", tag(user))]
async fn add_order(user: &User) -> Result<(), std::io::Error> {
    let _ = user.id;
    Ok(())
}

fn main() {}
