use cache_aside::invalidates;

#[invalidates(tag(user))]
async fn add_order(user: u32) -> Result<(), std::io::Error> {
    let _ = user;
    Ok(())
}

fn main() {}
