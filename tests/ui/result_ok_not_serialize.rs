use cache_aside::cached;

struct Flight;

#[cached]
async fn f(code: &str) -> Result<Flight, std::io::Error> {
    let _ = code;
    Ok(Flight)
}

fn main() {}
