use cache_aside::cached;

#[cached]
async fn f((a, b): (u32, u32)) -> u32 {
    a + b
}

fn main() {}
