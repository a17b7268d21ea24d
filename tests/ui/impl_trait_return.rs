use cache_aside::cached;

#[cached]
async fn f() -> impl std::fmt::Display {
    1
}

fn main() {}
