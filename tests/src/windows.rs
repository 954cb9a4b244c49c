//! The model of `plugins/tumbling-window` (sum per key and tumbling
//! event-time window) and input for it: out-of-order timestamps, with some
//! records later than `max_out_of_orderness` allows.
//!
//! Lateness follows the host's rule (`pipeline::event_clock`): a record is
//! late when its window ends at or before the watermark of the records
//! before it in its partition (highest timestamp minus the out-of-orderness
//! minus 1 ms); late records are dropped. Every other record counts in its
//! window, and every window is emitted once, in start order per key.

use crate::{Input, Output};
use std::collections::BTreeMap;

/// The window job's settings, as the model needs them.
#[derive(Debug, Clone, Copy)]
pub struct WindowSpec {
    pub size_ms: i64,
    pub max_out_of_orderness_ms: i64,
}

impl WindowSpec {
    /// The `[pipeline]` lines for this spec.
    pub fn pipeline_lines(&self) -> String {
        format!(
            "max_out_of_orderness = \"{}ms\"\ntick_interval = \"100ms\"",
            self.max_out_of_orderness_ms
        )
    }

    /// The plugin's `[pipeline.config]` table: windows of the spec's size,
    /// summing.
    pub fn plugin_table(&self) -> String {
        format!(
            "[pipeline.config]\nsize_ms = {}\naggregate = \"sum\"\n",
            self.size_ms
        )
    }
}

/// The first input timestamp: an hour ago, on a whole 1000 s. (Near the
/// present, so that the broker's time-based retention and segment rolling
/// leave the records alone.)
pub fn first_timestamp() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t = now - 3_600_000;
    t - t.rem_euclid(1_000_000)
}

/// `n` records from `t0` over `keys` keys (key `w<k>` always in partition
/// `k % partitions`), 5 ms of event time apart, each up to `jitter_ms`
/// early; every `late_every`-th record is `late_ms` early, beyond an
/// out-of-orderness below `late_ms - jitter_ms`: late whenever its window
/// has closed by then, which for a `late_ms` near the window size depends
/// on exactly which records came before it. Values are small integers.
pub fn windowed_input(
    t0: i64,
    n: usize,
    keys: usize,
    partitions: i32,
    jitter_ms: i64,
    (late_every, late_ms): (usize, i64),
) -> Vec<Input> {
    (0..n)
        .map(|i| {
            let k = (i * 7919 + i / 3) % keys;
            let mix = (i as i64).wrapping_mul(2_654_435_761) & 0xffff;
            let mut ts = t0 + i as i64 * 5 - mix % jitter_ms.max(1);
            if late_every > 0 && i % late_every == late_every - 1 {
                ts -= late_ms;
            }
            Input {
                partition: (k as i32) % partitions,
                key: format!("w{k}"),
                value: (mix % 10).to_string(),
                timestamp: Some(ts),
            }
        })
        .collect()
}

/// What the model expects: per key, the `"start,end,sum"` values in
/// window order; and how many records were late.
pub fn expected_windows(
    input: &[Input],
    spec: WindowSpec,
) -> (BTreeMap<String, Vec<String>>, usize) {
    let mut newest: BTreeMap<i32, i64> = BTreeMap::new();
    let mut sums: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let mut late = 0;
    for r in input {
        let ts = r.timestamp.expect("windowed input has timestamps");
        let start = ts - ts.rem_euclid(spec.size_ms);
        let end = start + spec.size_ms;
        let watermark = newest
            .get(&r.partition)
            .map(|m| m - spec.max_out_of_orderness_ms - 1);
        if watermark.is_some_and(|w| w >= end - 1) {
            late += 1;
        } else {
            *sums.entry((r.key.clone(), start)).or_default() += r.value.parse::<i64>().unwrap();
        }
        let m = newest.entry(r.partition).or_insert(ts);
        *m = (*m).max(ts);
    }
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((key, start), sum) in sums {
        out.entry(key)
            .or_default()
            .push(format!("{start},{},{sum}", start + spec.size_ms));
    }
    (out, late)
}

/// Compares window output with the model: per key, the same windows with
/// the same sums in the same order, each stamped with its end - 1. Returns
/// the number of windows checked.
pub fn judge_windows(out: &[Vec<Output>], want: &BTreeMap<String, Vec<String>>) -> usize {
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for o in out.iter().flatten() {
        let value = o.value.clone().unwrap_or_default();
        let end: i64 = value.split(',').nth(1).unwrap().parse().unwrap();
        assert_eq!(
            o.timestamp,
            Some(end - 1),
            "window {value} is stamped with its end - 1"
        );
        got.entry(o.key.clone().unwrap_or_default())
            .or_default()
            .push(value);
    }
    for (key, windows) in want {
        let have = got.get(key).map(Vec::as_slice).unwrap_or_default();
        if have != windows.as_slice() {
            let at = have
                .iter()
                .zip(windows)
                .position(|(a, b)| a != b)
                .unwrap_or(have.len().min(windows.len()));
            panic!(
                "key {key}: {} windows emitted, {} expected; first difference at {at}: got {:?}, expected {:?}",
                have.len(),
                windows.len(),
                have.get(at),
                windows.get(at)
            );
        }
    }
    assert_eq!(
        got.len(),
        want.len(),
        "keys the model does not know were emitted"
    );
    want.values().map(Vec::len).sum()
}
