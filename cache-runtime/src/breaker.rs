//! Circuit breaker in front of Redis: after a few consecutive failures the
//! cache stops paying the operation timeout on every call and runs bodies
//! uncached; after a cooldown one caller probes, and a success closes it.
//! Logs once when it opens and once when it closes (one line per outage,
//! not one per call).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

pub(crate) struct Breaker {
    epoch: Instant,
    threshold: u32,
    cooldown_ms: u64,
    failures: AtomicU32,
    /// 0: closed. Otherwise: ms since `epoch` until which calls bypass.
    open_until: AtomicU64,
    bypassed: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            epoch: Instant::now(),
            threshold: threshold.max(1),
            cooldown_ms: (cooldown.as_millis() as u64).max(1),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            bypassed: AtomicU64::new(0),
        }
    }

    /// A closed breaker with the same threshold and cooldown.
    pub(crate) fn like(&self) -> Self {
        Breaker::new(self.threshold, Duration::from_millis(self.cooldown_ms))
    }

    fn now_ms(&self) -> u64 {
        // +1 so that 0 keeps meaning "closed".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// May this call use Redis? Closed: always (one relaxed load). Open: no,
    /// except one caller per cooldown period, which probes.
    #[inline]
    pub(crate) fn allow(&self) -> bool {
        let until = self.open_until.load(Relaxed);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        if now >= until
            && self
                .open_until
                .compare_exchange(until, now + self.cooldown_ms, Relaxed, Relaxed)
                .is_ok()
        {
            return true; // the probe
        }
        self.bypassed.fetch_add(1, Relaxed);
        false
    }

    #[inline]
    pub(crate) fn success(&self) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        if self.open_until.load(Relaxed) != 0 && self.open_until.swap(0, Relaxed) != 0 {
            let turned_away = self.bypassed.swap(0, Relaxed);
            tracing::info!(
                calls_turned_away = turned_away,
                "cache-aside: Redis answers again; caching resumed (calls_turned_away: those \
                 that did not try Redis while the breaker was open; Stats::bypasses also counts \
                 the calls that tried and failed)"
            );
        }
    }

    pub(crate) fn failure(&self, err: &dyn std::fmt::Display) {
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        let now = self.now_ms();
        let until = self.open_until.load(Relaxed);
        if until != 0 {
            // A failed probe: stay open for another cooldown.
            let _ =
                self.open_until
                    .compare_exchange(until, now + self.cooldown_ms, Relaxed, Relaxed);
            tracing::debug!(error = %err, "cache-aside: Redis probe failed");
        } else if n >= self.threshold {
            if self
                .open_until
                .compare_exchange(0, now + self.cooldown_ms, Relaxed, Relaxed)
                .is_ok()
            {
                tracing::warn!(
                    error = %err,
                    consecutive_failures = n,
                    "cache-aside: Redis unavailable; running cached functions uncached until it answers"
                );
            }
        } else {
            tracing::debug!(error = %err, consecutive_failures = n, "cache-aside: Redis operation failed");
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_after_cooldown_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_millis(30));
        assert!(b.allow());
        b.failure(&"x");
        b.failure(&"x");
        assert!(b.allow() && !b.is_open());
        b.failure(&"x");
        assert!(b.is_open());
        assert!(!b.allow(), "open: bypass");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "one probe after the cooldown");
        assert!(!b.allow(), "only one probe");
        b.failure(&"x");
        assert!(!b.allow(), "failed probe keeps it open");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow());
        b.success();
        assert!(!b.is_open());
        assert!(b.allow() && b.allow());
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let b = Breaker::new(2, Duration::from_secs(60));
        b.failure(&"x");
        b.success();
        b.failure(&"x");
        assert!(!b.is_open());
        b.failure(&"x");
        assert!(b.is_open());
    }
}
