use cachet::cached;

trait Repo {
    #[cached]
    async fn f(&self) -> u32;
}

fn main() {}
