use cachet::cached;

#[cached(lock = "no")]
async fn routes(from: String) -> Vec<String> {
    vec![from]
}

fn main() {}
