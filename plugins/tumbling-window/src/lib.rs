//! `tumbling-window`: per key, the count or the sum of the records in each
//! tumbling event-time window, emitted once, when the partition's
//! watermark passes the window's end (ABI 1.1 `weir_tick`).
//!
//! Config (`[pipeline.config]`):
//! - `size_ms`: the window length in ms (default 60000). Windows are
//!   `[k * size_ms, (k + 1) * size_ms)` of the record timestamps.
//! - `aggregate`: `"count"` (default) or `"sum"`, the sum of the values
//!   read as decimal integers.
//!
//! Output, one record per key and window, to sink topic 0 partitioned by
//! key: the key, the value `"<start>,<end>,<aggregate>"` in decimal, and
//! the timestamp `end - 1` (the last instant in the window, as Flink
//! stamps window results). A window's keys come out in byte order.
//!
//! A record that arrives after its window was emitted is late: it is
//! dropped and counted, and the count is logged at the next tick. The open
//! windows, the last watermark and that count live in the plugin value, so
//! they are snapshotted with every checkpoint.

use std::collections::BTreeMap;
use weir_plugin_sdk::abi::WATERMARK_NONE;
use weir_plugin_sdk::prelude::*;

/// What a window adds up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Aggregate {
    #[default]
    Count,
    Sum,
}

pub struct TumblingWindow {
    size: i64,
    aggregate: Aggregate,
    /// Open windows by start, each with its keys' aggregates.
    windows: BTreeMap<i64, BTreeMap<Vec<u8>, i64>>,
    /// The last watermark the host gave.
    watermark: i64,
    /// Late records dropped, and how many of them were already logged.
    late: u64,
    late_logged: u64,
}

impl Default for TumblingWindow {
    fn default() -> Self {
        TumblingWindow {
            size: 60_000,
            aggregate: Aggregate::Count,
            windows: BTreeMap::new(),
            watermark: WATERMARK_NONE,
            late: 0,
            late_logged: 0,
        }
    }
}

impl TumblingWindow {
    fn start_of(&self, timestamp: i64) -> i64 {
        timestamp - timestamp.rem_euclid(self.size)
    }

    fn amount(&self, record: &Record<'_>) -> Result<i64, Error> {
        match self.aggregate {
            Aggregate::Count => Ok(1),
            Aggregate::Sum => {
                let text = std::str::from_utf8(record.value.unwrap_or_default())
                    .map_err(|_| Error::new("value is not UTF-8 text"))?;
                text.trim()
                    .parse()
                    .map_err(|_| Error::new(format!("value {text:?} is not an integer")))
            }
        }
    }

    /// Emits and drops every window that ends at or before `watermark + 1`.
    fn close(&mut self, watermark: i64, out: &mut Output) {
        let mut text = String::new();
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            let end = start.saturating_add(self.size);
            if !closed_by(watermark, end) {
                break;
            }
            for (key, value) in entry.remove() {
                text.clear();
                use std::fmt::Write as _;
                let _ = write!(text, "{start},{end},{value}");
                out.emit_record(OutRecord {
                    key: Some(&key),
                    value: Some(text.as_bytes()),
                    timestamp: end - 1,
                    ..OutRecord::default()
                });
            }
        }
    }
}

/// Whether `watermark` completes a window ending at `end` (exclusive).
fn closed_by(watermark: i64, end: i64) -> bool {
    Tick {
        watermark,
        processing_time: 0,
    }
    .closes(end)
}

impl Plugin for TumblingWindow {
    fn init(&mut self, config: &Config) -> Result<(), Error> {
        if let Some(size) = config.parse::<i64>("size_ms")? {
            if size <= 0 {
                return Err(Error::new(format!("size_ms must be positive, got {size}")));
            }
            self.size = size;
        }
        self.aggregate = match config.get("aggregate") {
            None | Some("count") => Aggregate::Count,
            Some("sum") => Aggregate::Sum,
            Some(other) => {
                return Err(Error::new(format!(
                    "aggregate must be \"count\" or \"sum\", got {other:?}"
                )));
            }
        };
        Ok(())
    }

    fn process(&mut self, record: Record<'_>, _out: &mut Output) -> Result<(), Error> {
        if record.timestamp < 0 {
            return Err(Error::new(
                "the record has no timestamp; tumbling-window needs event time",
            ));
        }
        let start = self.start_of(record.timestamp);
        let end = start.saturating_add(self.size);
        if closed_by(self.watermark, end) {
            self.late += 1;
            return Ok(());
        }
        let amount = self.amount(&record)?;
        let key = record.key.unwrap_or_default();
        let window = self.windows.entry(start).or_default();
        match window.get_mut(key) {
            Some(v) => *v += amount,
            None => {
                window.insert(key.to_vec(), amount);
            }
        }
        Ok(())
    }

    fn on_tick(&mut self, time: Tick, out: &mut Output) -> Result<(), Error> {
        // The host promises watermarks that never go back, also across
        // restores (the watermark is part of the snapshot): a window
        // emitted must stay emitted.
        if time.watermark < self.watermark {
            return Err(Error::new(format!(
                "the watermark went back from {} to {}",
                self.watermark, time.watermark
            )));
        }
        if time.watermark > self.watermark {
            self.watermark = time.watermark;
            self.close(time.watermark, out);
        }
        if self.late > self.late_logged {
            weir_plugin_sdk::warn!(
                "{} late records dropped so far (after their window closed)",
                self.late
            );
            self.late_logged = self.late;
        }
        Ok(())
    }
}

// The open windows, the watermark and the late count are the state a
// later build takes over (portable state from serde, format 1); size and
// aggregate come from the config, through `init`.
export_plugin!(TumblingWindow, serde_state(windows, watermark, late) = 1);
