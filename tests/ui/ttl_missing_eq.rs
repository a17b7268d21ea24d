use cachet::cached;

#[cached(ttl)]
async fn f() -> u32 {
    1
}

fn main() {}
