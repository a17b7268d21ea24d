use cachet::cached;

#[cached(stale = "a while")]
async fn routes(from: String) -> Vec<String> {
    vec![from]
}

fn main() {}
