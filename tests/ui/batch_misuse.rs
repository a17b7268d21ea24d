use std::collections::HashMap;

use cache_aside::cached;

struct Db;
struct NotCacheable;

// A batch shares its entries with the single-key fn: it names the namespace.
#[cached(batch)]
async fn no_ns(codes: &[String]) -> HashMap<String, u32> {
    codes.iter().map(|c| (c.clone(), 1)).collect()
}

// The keys are one argument of a slice or a `Vec`.
#[cached(ns = "a", batch)]
async fn one_key(code: &str) -> HashMap<String, u32> {
    HashMap::from([(code.to_string(), 1)])
}

// Two key arguments.
#[cached(ns = "b", batch)]
async fn two_keys(codes: &[String], days: &[u32]) -> HashMap<String, u32> {
    let _ = (codes, days);
    HashMap::new()
}

// The values come back by key.
#[cached(ns = "c", batch)]
async fn not_a_map(codes: &[String]) -> Vec<u32> {
    codes.iter().map(|_| 1).collect()
}

// Not with the options a batch does not have.
#[cached(ns = "d", batch, stale = "1m")]
async fn with_stale(codes: &[String]) -> HashMap<String, u32> {
    codes.iter().map(|c| (c.clone(), 1)).collect()
}

// Other arguments by reference: the body may run more than once.
#[cached(ns = "e", batch, skip(db))]
async fn owned_db(db: Db, codes: &[String]) -> HashMap<String, u32> {
    let _ = db;
    codes.iter().map(|c| (c.clone(), 1)).collect()
}

// A value that cannot be cached is reported at its type.
#[cached(ns = "f", batch)]
async fn bad_value(codes: &[String]) -> HashMap<String, NotCacheable> {
    codes.iter().map(|c| (c.clone(), NotCacheable)).collect()
}

fn main() {}
