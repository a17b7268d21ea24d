// The warning is made an error here, so that its text is checked.
#![deny(deprecated)]

use cache_aside::invalidates;

pub struct Transaction<'c>(&'c mut Vec<i64>);

// Invalidates before the caller's COMMIT: warned about at the argument.
#[invalidates("flight_count")]
async fn add_flight(tx: &mut Transaction<'_>, id: i64) -> Result<(), String> {
    tx.0.push(id);
    Ok(())
}

// `scoped`: callers run it in `cache_aside::transaction`; no warning.
#[invalidates("flight_count", scoped)]
async fn add_flight_scoped(tx: &mut Transaction<'_>, id: i64) -> Result<(), String> {
    tx.0.push(id);
    Ok(())
}

fn main() {}
