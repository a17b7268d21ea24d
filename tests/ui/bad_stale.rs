use cache_aside::cached;

#[cached(stale = "a while")]
async fn routes(from: String) -> Vec<String> {
    vec![from]
}

fn main() {}
