use cache_aside::cached;

#[cached]
async fn f(x: impl std::fmt::Display) -> String {
    x.to_string()
}

fn main() {}
