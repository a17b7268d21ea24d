// `return` and `?` inside a body, whatever the stored form of the value.
use std::collections::HashMap;

use cache_aside::{cache_put, cached};

#[cached(ns = "blob")]
async fn blob(n: u32) -> Vec<u8> {
    if n == 0 {
        return Vec::new();
    }
    vec![1; n as usize]
}

#[cached(ns = "blob_checked")]
async fn blob_checked(n: u32) -> Result<Vec<u8>, String> {
    if n == 0 {
        return Err("empty".into());
    }
    let len: usize = n.to_string().parse().map_err(|_| "no".to_string())?;
    Ok(vec![1; len])
}

#[cache_put(ns = "blob", key(n))]
async fn put_blob(n: u32) -> Vec<u8> {
    if n == 0 {
        return Vec::new();
    }
    vec![2; n as usize]
}

#[cached(ns = "blob", batch)]
async fn blobs(ns: &[u32]) -> HashMap<u32, Vec<u8>> {
    if ns.is_empty() {
        return HashMap::new();
    }
    ns.iter().map(|&n| (n, vec![1; n as usize])).collect()
}

fn main() {
    let _ = (blob(1), blob_checked(1), put_blob(1), blobs(&[1]));
}
