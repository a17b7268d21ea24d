//! In-process single-flight: concurrent callers of the same missing key
//! share one computation. The first caller leads; the others wait for its
//! outcome. A leader whose future is dropped (timeout, client gone) hands
//! leadership on: its waiters wake up and one of them leads. Only misses
//! come here; a hit never takes this lock.
//!
//! A flight is keyed by what its leader *read*, not only by the entry key:
//! the namespace generation and the entry's bytes (nothing, a tombstone, a
//! dead entry, or a lease). A caller that read something else (a newer
//! generation, a tombstone written by an invalidation that returned before
//! it started) must not take a value computed from older reads, so it does
//! not join. After taking its lease, the leader is also found under the
//! lease it wrote, so callers that read that lease join it.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::sync::lock;

/// What a leader hands its followers.
pub(crate) enum Outcome {
    /// The value, encoded with the cache's codec.
    Value(Arc<[u8]>),
    /// A result that is not cached but can be shared (a `Clone` error).
    Shared(Arc<dyn Any + Send + Sync>),
    /// The body failed, and the leader served this fail-safe value.
    FailSafe(Arc<[u8]>),
    /// No result to share: a follower leads next.
    Abandoned,
    /// A value that is not handed on (computed without a claim, or its
    /// store refused: a follower may have read after a change): each
    /// follower computes for itself, at once and without storing.
    Recompute,
}

type Slot = Option<Arc<Outcome>>;

#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, watch::Sender<Slot>>>,
}

/// The flight key: entry key, generation and the bytes read.
pub(crate) fn flight_key(
    entry_key: &str,
    generation: Option<&[u8]>,
    read: Option<&[u8]>,
) -> String {
    let mut k = String::with_capacity(entry_key.len() + 64);
    k.push_str(entry_key);
    for part in [generation, read] {
        k.push('\n');
        if let Some(bytes) = part {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for b in bytes {
                k.push(char::from(HEX[usize::from(b >> 4)]));
                k.push(char::from(HEX[usize::from(b & 0xF)]));
            }
        } else {
            k.push('-');
        }
    }
    k
}

pub(crate) enum Role<'a> {
    Leader(Leader<'a>),
    Follower(watch::Receiver<Slot>),
}

impl Flights {
    pub(crate) fn join(&self, key: &str) -> Role<'_> {
        let mut map = lock(&self.map);
        if let Some(tx) = map.get(key)
            && tx.borrow().is_none()
        {
            return Role::Follower(tx.subscribe());
        }
        let (tx, _) = watch::channel(None);
        map.insert(key.to_owned(), tx.clone());
        Role::Leader(Leader {
            flights: self,
            keys: vec![key.to_owned()],
            tx,
            done: false,
        })
    }
}

/// The leader's handle; finishing (or dropping) it wakes the followers.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    keys: Vec<String>,
    tx: watch::Sender<Slot>,
    done: bool,
}

impl Leader<'_> {
    /// Also lead the flight under `key` (the lease this leader wrote).
    pub(crate) fn alias(&mut self, key: String) {
        let mut map = lock(&self.flights.map);
        map.entry(key.clone()).or_insert_with(|| self.tx.clone());
        self.keys.push(key);
    }

    /// Are callers waiting for this computation?
    pub(crate) fn has_followers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.publish(outcome);
    }

    fn publish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        let mut map = lock(&self.flights.map);
        for key in &self.keys {
            if map.get(key).is_some_and(|tx| tx.same_channel(&self.tx)) {
                map.remove(key);
            }
        }
        drop(map);
        self.tx.send_replace(Some(Arc::new(outcome)));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.publish(Outcome::Abandoned);
    }
}

/// Waits for the leader's outcome (at most `wait`, if given); `None` if it
/// did not come in time.
pub(crate) async fn follow(
    mut rx: watch::Receiver<Slot>,
    wait: Option<std::time::Duration>,
) -> Option<Arc<Outcome>> {
    match wait {
        Some(w) => match tokio::time::timeout(w, rx.wait_for(Option::is_some)).await {
            Ok(Ok(slot)) => slot.clone(),
            _ => None,
        },
        None => rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|s| s.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn followers_get_the_leaders_outcome() {
        let f = Flights::default();
        let Role::Leader(leader) = f.join("k") else {
            panic!("first caller leads")
        };
        let Role::Follower(rx) = f.join("k") else {
            panic!("second caller follows")
        };
        assert!(leader.has_followers());
        leader.finish(Outcome::Value(Arc::from(&b"v"[..])));
        match follow(rx, Some(Duration::from_secs(1))).await.as_deref() {
            Some(Outcome::Value(v)) => assert_eq!(&v[..], b"v"),
            _ => panic!("no value"),
        }
        assert!(matches!(f.join("k"), Role::Leader(_)), "the flight is over");
    }

    #[tokio::test]
    async fn a_dropped_leader_hands_leadership_on() {
        let f = Flights::default();
        let leader = f.join("k");
        let Role::Follower(rx) = f.join("k") else {
            panic!()
        };
        drop(leader);
        assert!(matches!(
            follow(rx, Some(Duration::from_secs(1))).await.as_deref(),
            Some(Outcome::Abandoned)
        ));
        assert!(matches!(f.join("k"), Role::Leader(_)));
    }

    #[tokio::test]
    async fn a_follower_gives_up_after_its_wait() {
        let f = Flights::default();
        let _leader = f.join("k");
        let Role::Follower(rx) = f.join("k") else {
            panic!()
        };
        assert!(follow(rx, Some(Duration::from_millis(20))).await.is_none());
    }
}
