use cachet::cached;

#[cached(ttl = -1)]
async fn f() -> u32 {
    1
}

fn main() {}
