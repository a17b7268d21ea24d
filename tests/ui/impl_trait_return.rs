use cachet::cached;

#[cached]
async fn f() -> impl std::fmt::Display {
    1
}

fn main() {}
