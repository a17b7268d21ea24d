//! Generic functions and methods of generic impls (the expansion's inner
//! blocks must not clash with the outer generics), `Self` in the return type, a trait method with a default
//! body, and futures that stay `Send`.
#![deny(warnings)]

use std::marker::PhantomData;

use cache_aside::{Cache, cached, invalidates};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Page<T> {
    items: Vec<T>,
}

struct Store<T> {
    cache: Cache,
    marker: PhantomData<T>,
}

impl<T> Store<T>
where
    T: Serialize + DeserializeOwned + Clone + Send + Sync,
{
    #[cached(cache = &self.cache, ns = "page")]
    async fn page(&self, items: &[T], len: usize) -> Page<T> {
        Page {
            items: items.iter().take(len).cloned().collect(),
        }
    }

    #[invalidates(ns = "page", key(items, len), cache = &self.cache)]
    async fn forget(&self, items: &[T], len: usize) {
        let _ = (items, len);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

impl Point {
    #[cached(cache = c, skip(c))]
    async fn mirrored(c: &Cache, x: i32, y: i32) -> Self {
        Self { x: -x, y: -y }
    }
}

trait Lookup {
    fn cache(&self) -> &Cache;

    #[cached(cache = self.cache(), ns = "lookup_default")]
    async fn lookup(&self, id: u32) -> Result<String, std::fmt::Error> {
        Ok(format!("#{id}"))
    }
}

struct Service(Cache);

impl Lookup for Service {
    fn cache(&self) -> &Cache {
        &self.0
    }
}

#[cached(cache = c, key = items.len())]
async fn count<T: Sync>(c: &Cache, items: &[T]) -> usize {
    items.len()
}

fn assert_send<F: Send>(f: F) -> F {
    f
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = Cache::builder()
        .memory()
        .prefix("ui_generic")
        .build()
        .unwrap();
    let store = Store::<u8> {
        cache: cache.clone(),
        marker: PhantomData,
    };
    let items = [1, 2, 3];
    let page = assert_send(store.page(&items, 2)).await;
    assert_eq!(page.items, [1, 2]);
    assert_send(store.forget(&items, 2)).await;
    let p = assert_send(Point::mirrored(&cache, 1, 2)).await;
    assert_eq!(p, Point { x: -1, y: -2 });
    let svc = Service(cache.clone());
    assert_eq!(svc.lookup(7).await.unwrap(), "#7");
    assert_eq!(assert_send(count(&cache, &[(), ()])).await, 2);
}
