//! An instance's WASI monotonic clock, continuous across snapshots.
//!
//! wasmtime-wasi's default monotonic clock counts from the creation of the
//! instance's WASI context. A restored instance is a fresh one, so a
//! plugin whose runtime reads the monotonic clock (Go's `nanotime`, Rust's
//! `Instant`) would see time jump backwards after every restore, and its
//! timers and deadlines would misfire. This clock starts where the snapshot
//! left it instead: the snapshot records the reading
//! ([`HostTime::clock_ns`](super::snapshot::HostTime)), and
//! [`continue_from`](InstanceClock::continue_from) resumes from there. Time
//! while no instance ran (between a crash and the restore) is not counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use wasmtime_wasi::HostMonotonicClock;

/// One instance's monotonic clock; clones share it.
#[derive(Clone)]
pub struct InstanceClock {
    inner: Arc<Inner>,
}

struct Inner {
    origin: Instant,
    /// Added to the time since `origin`: what a restore or a skipped sleep
    /// moved the clock ahead by.
    offset_ns: AtomicU64,
}

impl InstanceClock {
    /// A clock at zero.
    pub fn new() -> Self {
        InstanceClock {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                offset_ns: AtomicU64::new(0),
            }),
        }
    }

    /// The reading in ns.
    pub fn now_ns(&self) -> u64 {
        let elapsed = self.inner.origin.elapsed().as_nanos() as u64;
        elapsed.saturating_add(self.inner.offset_ns.load(Ordering::Relaxed))
    }

    /// Moves the clock to at least `ns`, never back: a restored instance
    /// resumes from its snapshot's reading.
    pub fn continue_from(&self, ns: u64) {
        let now = self.now_ns();
        if ns > now {
            self.advance(ns - now);
        }
    }

    /// Moves the clock ahead by `ns` (a sleep the host did not wait out).
    pub fn advance(&self, ns: u64) {
        self.inner.offset_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl Default for InstanceClock {
    fn default() -> Self {
        Self::new()
    }
}

impl HostMonotonicClock for InstanceClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.now_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_clock_never_goes_back() {
        let before = InstanceClock::new();
        before.advance(5_000_000_000);
        let reading = before.now_ns();
        let after = InstanceClock::new();
        assert!(after.now_ns() < reading);
        after.continue_from(reading);
        assert!(after.now_ns() >= reading);
        // Continuing from an earlier reading changes nothing.
        let now = after.now_ns();
        after.continue_from(1);
        assert!(after.now_ns() >= now);
    }
}
