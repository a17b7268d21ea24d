use cache_aside::cached;

#[cached]
async fn größe(id: u32) -> u32 {
    id
}

fn main() {}
