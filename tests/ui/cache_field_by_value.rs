use cache_aside::{Cache, cached};

struct Repo {
    cache: Cache,
}

impl Repo {
    #[cached(cache = self.cache)]
    async fn f(&self, code: &str) -> u32 {
        let _ = code;
        1
    }
}

fn main() {}
