use cache_aside::cached;

#[cached(ns = "orders", tags(usr))]
async fn orders(user: u32, day: u32) -> Vec<u64> {
    vec![u64::from(user + day)]
}

fn main() {}
