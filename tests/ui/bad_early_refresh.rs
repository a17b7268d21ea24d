use cache_aside::cached;

#[cached(early_refresh = 0.0)]
async fn routes(from: String) -> Vec<String> {
    vec![from]
}

fn main() {}
