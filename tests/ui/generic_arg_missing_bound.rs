use cache_aside::cached;

#[cached]
async fn f<T: Clone>(x: T) -> u32 {
    let _ = x.clone();
    1
}

fn main() {}
