use cache_aside::cache_put;

struct Airport {
    name: String,
}

#[cache_put(ns = "airport", key(code))]
async fn rename(code: &str, name: &str) -> Result<Airport, std::io::Error> {
    let _ = code;
    Ok(Airport { name: name.into() })
}

fn main() {}
