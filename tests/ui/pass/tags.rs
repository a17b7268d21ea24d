use cache_aside::{cached, invalidates};
use serde::Serialize;

#[derive(Serialize)]
struct Order {
    user_id: u32,
    shop: String,
}

#[cached(ns = "orders", tags(user, shop = shop.to_lowercase()))]
async fn orders(user: u32, shop: &str, day: u32) -> Vec<u64> {
    vec![u64::from(user + day), shop.len() as u64]
}

#[invalidates(ns = "orders", tag(user = order.user_id), tag(shop = order.shop.to_lowercase()))]
async fn cancel(order: &Order) -> Result<(), std::io::Error> {
    let _ = order;
    Ok(())
}

#[invalidates(ns = "orders", key(user, shop, day), tag(user))]
async fn fix(user: u32, shop: &str, day: u32) -> Result<(), std::io::Error> {
    let _ = (user, shop, day);
    Ok(())
}

fn main() {
    let _ = orders(1, "a", 2);
    let _ = cancel(&Order { user_id: 1, shop: "A".into() });
    let _ = fix(1, "a", 2);
}
