use cache_aside::cache_put;

#[cache_put(ns = "airport", key(code))]
async fn rename(code: &str, name: &str) -> Result<(), std::io::Error> {
    let _ = (code, name);
    Ok(())
}

fn main() {}
