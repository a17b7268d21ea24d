// `keep_decoded` needs a value type that can be cloned out of the local
// tier; a batch fn cannot keep its values decoded; nor a fn without the
// local tier.
use cache_aside::cached;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Report {
    rows: Vec<u32>,
}

#[cached(local = "30s", keep_decoded)]
async fn report(id: u32) -> Report {
    Report { rows: vec![id] }
}

#[cached(ns = "airport", batch, keep_decoded)]
async fn airports(codes: &[String]) -> std::collections::HashMap<String, u32> {
    codes.iter().map(|c| (c.clone(), 1)).collect()
}

#[cached(local = false, keep_decoded)]
async fn nothing_kept(id: u32) -> u32 {
    id
}

fn main() {}
