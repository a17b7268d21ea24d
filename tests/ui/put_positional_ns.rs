use cache_aside::cache_put;

#[cache_put("airport", key(code))]
async fn rename(code: &str, name: &str) -> Result<String, std::io::Error> {
    Ok(format!("{code} {name}"))
}

fn main() {}
