//! A method with `&self` and `cache = &self.cache`, `unless`, `key = (a, b)`,
//! an `std::io::Result<T>` alias, `skip(self)`, a raw identifier argument,
//! arguments named `key` and `cache` (hygiene), and a body using `return`
//! and `?`. The expansion must not trigger any lint.
#![deny(warnings)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use cache_aside::{Cache, cached, invalidates};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Airport {
    code: String,
    runways: u32,
}

struct Repo {
    cache: Cache,
    calls: AtomicU32,
}

impl Repo {
    #[cached(cache = &self.cache, ns = "airport", ttl = "5m", unless = Option::is_none, skip(self))]
    async fn airport(&self, code: &str) -> Option<Airport> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if code.is_empty() {
            return None;
        }
        Some(Airport {
            code: code.to_owned(),
            runways: 2,
        })
    }

    #[cached(cache = &self.cache, key = (a, b), ttl = 60)]
    async fn pair(&self, a: u32, b: u32, unused: &str) -> std::io::Result<u32> {
        let _ = unused;
        let n: u32 = "7".parse().map_err(std::io::Error::other)?;
        if a == 0 {
            return Err(std::io::Error::other("a is zero"));
        }
        Ok(a + b + n)
    }

    #[invalidates(ns = "airport", key(code), cache = &self.cache)]
    async fn rename_airport(&self, code: &str) -> Result<(), String> {
        let _ = code;
        Ok(())
    }
}

/// Arguments named `key` and `cache`, and a raw identifier.
#[cached(cache = shared, skip(shared), version = 3)]
async fn hygiene(shared: &Arc<Cache>, key: String, cache: u32, r#type: u8) -> (String, u32, u8) {
    let _ = shared;
    (key, cache, r#type)
}

#[cached(cache = c, skip(c), unless = |v: &u32| *v == 0)]
async fn closure_filter(c: &Arc<Cache>, x: u32) -> u32 {
    let _ = c;
    x
}

#[invalidates("airport", "hygiene", cache = c, crate = ::cache_aside)]
async fn wipe(c: &Cache) -> u32 {
    let _ = c;
    1
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = Cache::builder().memory().prefix("ui").build().unwrap();
    let repo = Repo {
        cache: cache.clone(),
        calls: AtomicU32::new(0),
    };
    assert_eq!(repo.airport("").await, None);
    assert_eq!(repo.airport("").await, None);
    assert_eq!(repo.calls.load(Ordering::SeqCst), 2);
    let fra = repo.airport("FRA").await.unwrap();
    assert_eq!(repo.airport("FRA").await.unwrap(), fra);
    assert_eq!(repo.calls.load(Ordering::SeqCst), 3);
    repo.rename_airport("FRA").await.unwrap();
    repo.airport("FRA").await.unwrap();
    assert_eq!(repo.calls.load(Ordering::SeqCst), 4);

    assert_eq!(repo.pair(1, 2, "x").await.unwrap(), 10);
    assert!(repo.pair(0, 2, "x").await.is_err());

    let arc = Arc::new(cache.clone());
    let out = hygiene(&arc, "k".into(), 5, 9).await;
    assert_eq!(out, ("k".to_string(), 5, 9));
    assert_eq!(closure_filter(&arc, 0).await, 0);
    assert_eq!(wipe(&cache).await, 1);
}
