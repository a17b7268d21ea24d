use cache_aside::cached;

const USERS: &str = "user accounts";

#[cached(ns = USERS)]
async fn user(id: u32) -> String {
    format!("user {id}")
}

fn main() {}
