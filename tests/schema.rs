//! Two builds of one service share a Redis while a cached type changes
//! shape (a rolling deploy) and nobody bumps `version`: the schema
//! fingerprint keeps every build to its own type's bytes. Each module below
//! stands for one build: the fingerprint depends only on the type's serde
//! shape, not on the module it is in.

mod support;

use cache_aside::{Cache, Status, cached, with_status};
use serde::{Deserialize, Serialize};
use support::{Backend, cache};

on_every_backend!(
    a_changed_shape_never_reads_the_old_shape,
    an_unchanged_type_keeps_its_entries_across_builds,
);

/// The old build.
mod old {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Seat {
        pub row: u32,
        pub col: u32,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Price {
        pub cents: u64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Balance {
        pub amount: u64,
    }

    #[cached(ns = "seat", cache = cache, skip(cache))]
    pub async fn seat(cache: &Cache, id: u32) -> Seat {
        Seat {
            row: id,
            col: id + 100,
        }
    }

    #[cached(ns = "price", cache = cache, skip(cache))]
    pub async fn price(cache: &Cache, id: u32) -> Price {
        Price {
            cents: 1001 + u64::from(id),
        }
    }

    #[cached(ns = "balance", cache = cache, skip(cache))]
    pub async fn balance(cache: &Cache, id: u32) -> Balance {
        Balance {
            amount: u64::from(id) + 1,
        }
    }
}

/// The new build: fields swapped, a field renamed with a new meaning, a
/// `u64` that became an `i64`.
mod new {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Seat {
        pub col: u32,
        pub row: u32,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Price {
        pub dollars: u64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Balance {
        pub amount: i64,
    }

    #[cached(ns = "seat", cache = cache, skip(cache))]
    pub async fn seat(cache: &Cache, id: u32) -> Seat {
        Seat {
            col: id + 100,
            row: id,
        }
    }

    #[cached(ns = "price", cache = cache, skip(cache))]
    pub async fn price(cache: &Cache, id: u32) -> Price {
        Price {
            dollars: 10 + u64::from(id),
        }
    }

    #[cached(ns = "balance", cache = cache, skip(cache))]
    pub async fn balance(cache: &Cache, id: u32) -> Balance {
        Balance {
            amount: -1 - i64::from(id),
        }
    }
}

/// A build that changed nothing in `Seat` (a copy of `old`'s, elsewhere).
mod same {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Seat {
        pub row: u32,
        pub col: u32,
    }

    #[cached(ns = "seat", cache = cache, skip(cache))]
    pub async fn seat(cache: &Cache, id: u32) -> Seat {
        // Never runs: the old build's entry is this build's too.
        Seat { row: 0, col: id }
    }
}

async fn a_changed_shape_never_reads_the_old_shape(b: Backend) {
    let c = cache(b, "schema_deploy").await;
    let mut wrong = 0;
    // Both builds serve, alternately, 5 rounds of 3 keys of each type.
    for round in 0..5 {
        for id in 0..3 {
            let seat = if round % 2 == 0 {
                let s = old::seat(&c, id).await;
                (s.row, s.col)
            } else {
                let s = new::seat(&c, id).await;
                (s.row, s.col)
            };
            wrong += usize::from(seat != (id, id + 100));
            if round % 2 == 0 {
                wrong += usize::from(old::price(&c, id).await.cents != 1001 + u64::from(id));
                wrong += usize::from(old::balance(&c, id).await.amount != u64::from(id) + 1);
            } else {
                wrong += usize::from(new::price(&c, id).await.dollars != 10 + u64::from(id));
                wrong += usize::from(new::balance(&c, id).await.amount != -1 - i64::from(id));
            }
        }
    }
    assert_eq!(wrong, 0, "{wrong} wrong values of 45");
    let st = c.stats().total;
    assert_eq!(
        st.decode_errors, 0,
        "told by the schema, not by a decode failure"
    );
    assert_eq!(
        st.schema_mismatches, 36,
        "every read after the other build stored"
    );
}

async fn an_unchanged_type_keeps_its_entries_across_builds(b: Backend) {
    let c = cache(b, "schema_same").await;
    let s = old::seat(&c, 7).await;
    let (t, status) = with_status(same::seat(&c, 7)).await;
    assert_eq!((t.row, t.col, status), (s.row, s.col, Status::Hit));
}

/// What a rolling deploy does to the hit ratio while both builds run: 200
/// keys, requests routed to either build at random, 4000 requests. An
/// unchanged type keeps the ratio of one build; a changed one is shared by
/// nobody, so a key hits only when the last build that stored it serves
/// the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_ratio_during_a_rolling_deploy() {
    let c = cache(Backend::Redis, "schema_ratio").await;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut changed_hits, mut same_hits) = (0u32, 0u32);
    const REQUESTS: u32 = 4000;
    for _ in 0..REQUESTS {
        let id = (next() % 200) as u32;
        let to_new = next() % 2 == 0;
        let changed = if to_new {
            with_status(new::seat(&c, id)).await.1
        } else {
            with_status(old::seat(&c, id)).await.1
        };
        changed_hits += u32::from(changed == Status::Hit);
        // An unchanged type: both builds read one entry (`old`'s shape in both).
        let unchanged = with_status(old::price(&c, id)).await.1;
        same_hits += u32::from(unchanged == Status::Hit);
    }
    let (changed, same) = (
        f64::from(changed_hits) / f64::from(REQUESTS),
        f64::from(same_hits) / f64::from(REQUESTS),
    );
    eprintln!(
        "rolling deploy, 200 keys, 4000 requests: hit ratio {same:.3} for an unchanged type, {changed:.3} for a changed one"
    );
    assert!(same > 0.9, "{same}");
    assert!(changed > 0.3 && changed < 0.6, "{changed}");
}
