use cache_aside::{Cache, cache_put, cached};
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct Airport {
    iata: String,
    name: String,
}

struct Repo {
    cache: Cache,
}

const AIRPORT: &str = "airport";

impl Repo {
    #[cached(ns = AIRPORT, cache = &self.cache)]
    async fn airport(&self, iata: &str) -> Result<Option<Airport>, std::io::Error> {
        Ok(Some(Airport { iata: iata.into(), name: "x".into() }))
    }

    #[cache_put(ns = AIRPORT, key(iata), ttl = |a: &Option<Airport>| std::time::Duration::from_secs(if a.is_some() { 3600 } else { 60 }), cache = &self.cache)]
    async fn rename(&self, iata: &str, name: &str) -> Result<Option<Airport>, std::io::Error> {
        Ok(Some(Airport { iata: iata.into(), name: name.into() }))
    }

    #[cache_put(ns = "by_pair", key = (a.iata.as_str(), b), version = 2, lease = "2s", cache = &self.cache)]
    async fn pair(&self, a: &Airport, b: u32) -> u64 {
        u64::from(b) + a.name.len() as u64
    }
}

fn main() {
    let repo = Repo { cache: Cache::builder().memory().build().unwrap() };
    let _ = repo.airport("FRA");
    let _ = repo.rename("FRA", "Frankfurt");
    let _ = repo.pair(&Airport { iata: "FRA".into(), name: "F".into() }, 1);
}
