//! Refreshes in the background: borrowed and owned arguments, methods with
//! `&self` and `self: Arc<Self>`, a skipped argument the body uses, and one
//! the body does not use (not copied, so it need not be `Clone`).
use std::sync::Arc;

use cache_aside::{Cache, cached};

#[derive(Clone)]
struct Pool(u32);

struct NotClone;

#[cached(ns = "a", stale = "30s", skip(pool, _unused))]
async fn by_ref(pool: &Pool, _unused: &NotClone, code: &str, n: String) -> usize {
    pool.0 as usize + code.len() + n.len()
}

#[derive(Clone)]
struct Service {
    cache: Cache,
    pool: Pool,
}

impl Service {
    #[cached(ns = "b", early_refresh, cache = &self.cache)]
    async fn method(&self, code: &str) -> u32 {
        self.pool.0 + code.len() as u32
    }

    #[cached(ns = "c", stale = "5s", cache = self.cache.clone())]
    async fn arc(self: Arc<Self>, id: u32) -> Result<u32, String> {
        Ok(self.pool.0 + id)
    }
}

fn main() {
    let _ = (by_ref, Service::method, Service::arc);
}
