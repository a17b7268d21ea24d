use cache_aside::invalidates;

const COUNT: u32 = 3;

#[invalidates(COUNT)]
async fn rename(id: u32) -> u32 {
    id
}

fn main() {}
