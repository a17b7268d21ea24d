use cache_aside::cached;

#[cached(lock = "no")]
async fn routes(from: String) -> Vec<String> {
    vec![from]
}

fn main() {}
