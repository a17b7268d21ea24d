use cachet::cached;

#[cached(cache = 5)]
async fn f() -> u32 {
    1
}

fn main() {}
