use cache_aside::cached;

trait Repo {
    #[cached]
    async fn f(&self) -> u32;
}

fn main() {}
