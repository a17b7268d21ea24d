use cache_aside::cached;

struct Repo;

impl Repo {
    #[cached(key(self, code))]
    async fn f(&self, code: &str) -> u32 {
        let _ = code;
        1
    }
}

fn main() {}
