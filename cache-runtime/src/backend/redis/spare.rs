//! Per-thread spare clones of the kept connections.
//!
//! A call needs a connection it can borrow mutably, so it used to clone the
//! slot's multiplexed connection, and drop the clone after: several atomic
//! increments and decrements of reference counts that every worker thread
//! shares, which bounce between cores under load (about a tenth of the
//! throughput at 64 tasks on 2 cores). Instead, a call takes a spare clone
//! from its thread's list and puts it back, on whatever thread it finishes,
//! when it is done: in the steady state no shared counter is touched.
//!
//! A spare belongs to one slot (a process-unique id) and one connection of
//! it (the slot's epoch). When a thread meets a spare of a replaced
//! connection it drops every spare of that slot's older connections; when a
//! cache is dropped its slots are retired, and each thread drops their
//! spares the next time it lends or returns one. Each thread keeps at most
//! [`CAP`] spares; the oldest go first.

use std::cell::{Cell, RefCell};
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Spares one thread keeps, over all slots.
const CAP: usize = 128;

/// A process-unique slot id.
pub(crate) fn slot_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Relaxed)
}

/// Slots of dropped caches, and a counter of retirements.
static RETIRED: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static RETIREMENTS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The retirements this thread has swept its spares for.
    static SWEPT: Cell<u64> = const { Cell::new(0) };
}

/// The slots of a dropped cache: their spares are dropped by every thread
/// the next time it lends or returns a connection.
pub(crate) fn retire(slots: impl IntoIterator<Item = u64>) {
    let mut r = crate::sync::lock(&RETIRED);
    r.extend(slots);
    RETIREMENTS.fetch_add(1, Relaxed);
}

/// Drops this thread's spares of retired slots, if any were retired since
/// it last looked (one atomic load otherwise).
fn sweep_retired<C>(list: &mut Vec<Spare<C>>) {
    let now = RETIREMENTS.load(Relaxed);
    if SWEPT.try_with(Cell::get).ok() == Some(now) {
        return;
    }
    let retired = crate::sync::lock(&RETIRED).clone();
    list.retain(|x| !retired.contains(&x.slot));
    let _ = SWEPT.try_with(|s| s.set(now));
}

/// One spare connection (see [`spares!`]).
pub(crate) struct Spare<C> {
    slot: u64,
    epoch: u64,
    conn: C,
}

/// A connection lent to one call; goes back to the spares when dropped.
pub(crate) struct Lent<'a, C: 'static> {
    conn: Option<C>,
    slot: u64,
    epoch: u64,
    /// The slot's current connection epoch (0: none).
    current: &'a AtomicU64,
    spares: &'static std::thread::LocalKey<RefCell<Vec<Spare<C>>>>,
}

impl<C: 'static> Lent<'_, C> {
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl<C> Deref for Lent<'_, C> {
    type Target = C;
    fn deref(&self) -> &C {
        // Only `drop` takes it.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl<C> DerefMut for Lent<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        self.conn.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl<C: 'static> Drop for Lent<'_, C> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let current = self.current.load(Relaxed);
        if current != self.epoch {
            // Replaced or broken: let it go, with this thread's other spares
            // of the slot's older connections.
            let slot = self.slot;
            let _ = self.spares.try_with(|s| {
                if let Ok(mut s) = s.try_borrow_mut() {
                    s.retain(|x| x.slot != slot || x.epoch == current);
                }
            });
            return;
        }
        let spare = Spare {
            slot: self.slot,
            epoch: self.epoch,
            conn,
        };
        // During thread teardown the list may be gone: drop the spare.
        let _ = self.spares.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                sweep_retired(&mut s);
                if s.len() >= CAP {
                    s.remove(0);
                }
                s.push(spare);
            }
        });
    }
}

/// A spare of this thread for slot `slot` at `epoch`, if there is one.
pub(crate) fn take<C: 'static>(
    spares: &'static std::thread::LocalKey<RefCell<Vec<Spare<C>>>>,
    slot: u64,
    epoch: u64,
) -> Option<C> {
    spares
        .try_with(|s| {
            let mut s = s.try_borrow_mut().ok()?;
            let i = s.iter().rposition(|x| x.slot == slot)?;
            if s[i].epoch != epoch {
                // Spares of a replaced connection: drop them all.
                s.retain(|x| x.slot != slot || x.epoch == epoch);
                return None;
            }
            Some(s.swap_remove(i).conn)
        })
        .ok()
        .flatten()
}

/// Lends `conn` (connection `epoch` of slot `slot`, whose current epoch is
/// `current`) to one call.
pub(crate) fn lend<'a, C: 'static>(
    spares: &'static std::thread::LocalKey<RefCell<Vec<Spare<C>>>>,
    conn: C,
    slot: u64,
    epoch: u64,
    current: &'a AtomicU64,
) -> Lent<'a, C> {
    Lent {
        conn: Some(conn),
        slot,
        epoch,
        current,
        spares,
    }
}

/// Declares the thread-local list of spares for connection type `$c`.
macro_rules! spares {
    ($name:ident, $c:ty) => {
        thread_local! {
            static $name: std::cell::RefCell<Vec<$crate::backend::redis::spare::Spare<$c>>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
    };
}
pub(crate) use spares;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    spares!(TEST_SPARES, Arc<u32>);

    #[test]
    fn spares_are_reused_and_replaced_connections_are_not() {
        let current = AtomicU64::new(1);
        let conn = Arc::new(7u32);
        let slot = slot_id();
        assert!(take(&TEST_SPARES, slot, 1).is_none());
        {
            let a = lend(&TEST_SPARES, Arc::clone(&conn), slot, 1, &current);
            assert_eq!(**a, 7);
            assert_eq!(Arc::strong_count(&conn), 2);
        }
        // Back in the list, and lent again without a clone.
        let again = take(&TEST_SPARES, slot, 1).expect("a spare");
        let b = lend(&TEST_SPARES, again, slot, 1, &current);
        assert_eq!(Arc::strong_count(&conn), 2);
        // The connection is replaced: the spare is dropped, not kept.
        current.store(2, Relaxed);
        drop(b);
        assert_eq!(Arc::strong_count(&conn), 1);
        assert!(take(&TEST_SPARES, slot, 2).is_none());
        let c = lend(&TEST_SPARES, Arc::new(8), slot, 2, &current);
        assert_eq!((**c, c.epoch()), (8, 2));
    }

    #[test]
    fn spares_of_replaced_connections_and_retired_slots_go() {
        let current = AtomicU64::new(1);
        let conn = Arc::new(3u32);
        let (slot, other) = (slot_id(), slot_id());
        let lent: Vec<_> = (0..5)
            .map(|_| lend(&TEST_SPARES, Arc::clone(&conn), slot, 1, &current))
            .collect();
        drop(lent);
        assert_eq!(Arc::strong_count(&conn), 6);
        // The connection is replaced: the first look drops every old spare.
        current.store(2, Relaxed);
        assert!(take(&TEST_SPARES, slot, 2).is_none());
        assert_eq!(Arc::strong_count(&conn), 1);
        // A retired slot's spares go at this thread's next return.
        let c = lend(&TEST_SPARES, Arc::clone(&conn), other, 2, &current);
        drop(c);
        assert_eq!(Arc::strong_count(&conn), 2);
        retire([other]);
        drop(lend(&TEST_SPARES, Arc::new(9), slot, 2, &current));
        assert_eq!(Arc::strong_count(&conn), 1);
    }

    #[test]
    fn a_thread_keeps_at_most_cap_spares() {
        let current = AtomicU64::new(1);
        let conn = Arc::new(1u32);
        let slot = slot_id();
        let lent: Vec<_> = (0..CAP + 10)
            .map(|_| lend(&TEST_SPARES, Arc::clone(&conn), slot, 1, &current))
            .collect();
        drop(lent);
        assert_eq!(Arc::strong_count(&conn), 1 + CAP);
    }
}
