//! Failpoints: crash the process at a named point, deterministically.
//!
//! `WEIR_FAILPOINT=name:n` aborts the process (like `kill -9`: no cleanup,
//! no flush) the `n`-th time execution reaches the point `name`;
//! `WEIR_FAILPOINT=name@n` aborts the first time it is reached after the
//! process has processed at least `n` records (so a test can crash mid-
//! stream whatever the machine's speed). Unset, a failpoint costs one
//! check of a `OnceLock`. Used by the crash tests; harmless in production
//! because nothing sets the variable.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Named points.
pub const AFTER_STATE_FILES: &str = "checkpoint-after-state-files";
pub const AFTER_METADATA: &str = "checkpoint-after-metadata";
pub const MID_BATCH: &str = "mid-batch";
pub const AFTER_SNAPSHOT_BEFORE_COMMIT: &str = "after-snapshot-before-commit";
pub const AFTER_COMMIT: &str = "after-commit";

struct Armed {
    name: String,
    /// Hits left before aborting (`name:n`).
    remaining: AtomicI64,
    /// Records that must have been processed first (`name@n`).
    after_records: u64,
}

/// Records processed by this process (partition tasks add per batch).
static RECORDS: AtomicU64 = AtomicU64::new(0);

/// Counts processed records for `name@n` failpoints.
pub fn add_records(n: u64) {
    if armed().is_some() {
        RECORDS.fetch_add(n, Ordering::Relaxed);
    }
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("WEIR_FAILPOINT").ok()?;
            if let Some((name, n)) = spec.split_once('@') {
                return Some(Armed {
                    name: name.to_string(),
                    remaining: AtomicI64::new(1),
                    after_records: n.parse().unwrap_or(0),
                });
            }
            let (name, n) = spec.split_once(':').unwrap_or((&spec, "1"));
            Some(Armed {
                name: name.to_string(),
                remaining: AtomicI64::new(n.parse().unwrap_or(1)),
                after_records: 0,
            })
        })
        .as_ref()
}

/// Crashes here if this point is armed and its count is reached.
pub fn hit(name: &str) {
    if let Some(a) = armed()
        && a.name == name
        && RECORDS.load(Ordering::Relaxed) >= a.after_records
        && a.remaining.fetch_sub(1, Ordering::SeqCst) == 1
    {
        eprintln!("failpoint {name} reached: aborting");
        std::process::abort();
    }
}
