use cache_aside::cached;

#[cached(ns = "orders", tag(user))]
async fn orders(user: u32) -> Vec<u64> {
    vec![u64::from(user)]
}

fn main() {}
