use cache_aside::invalidates;

// A lowercase name is an option, not a constant: "did you mean".
#[invalidates("flight_count", scopd)]
async fn add_flight(id: i64) -> Result<i64, String> {
    Ok(id)
}

fn main() {}
