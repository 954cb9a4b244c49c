//! Time for plugins that export `weir_tick` (ABI 1.1): a partition's
//! event-time watermark, and when to tell the plugin about it.
//!
//! The watermark follows Flink's bounded out-of-orderness: the highest
//! record timestamp the partition has seen, minus `max_out_of_orderness`,
//! minus 1 ms. A watermark `W` says that records stamped `W` or earlier
//! have all arrived (later ones are late), so an event-time window
//! `[start, end)` can close once `W >= end - 1`. The highest timestamp is
//! the instance's event time, which the host snapshots with the plugin's
//! state: a replay after a crash sees the same watermarks at the same
//! records and makes the same lateness decisions.
//!
//! Lateness is decided per record, whatever the batches: a record stamped
//! at or below the watermark of the records before it is late. When such a
//! record would reach the plugin before that watermark did (it is in the
//! same batch as the records that advanced it), the host ends the plugin
//! call before the record and ticks first ([`EventClock::late_split`]). So
//! the plugin always knows the watermark a late record is late against,
//! and a replay that cuts its batches elsewhere drops the same records and
//! closes every window with the same contents.
//!
//! Two things move the event time other than records, both recorded in it:
//! a bounded input's end sets it to `WATERMARK_END` (every window closes),
//! and with `idle_timeout`, a partition that has had no record for that long
//! takes the processing time as its event time (windows close on silence).
//! The second is not deterministic under replay: a replay of the same
//! records may see the idle advance at another point.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weir_plugin_sdk::abi::{WATERMARK_END, WATERMARK_NONE};

/// The job's time settings (`[pipeline]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeConfig {
    /// Longest gap between two ticks of a partition.
    pub tick_interval: Duration,
    /// How far behind the highest timestamp the watermark stays.
    pub max_out_of_orderness: Duration,
    /// Silence after which the watermark follows processing time.
    pub idle_timeout: Option<Duration>,
}

/// When a partition's plugin is ticked, and with what watermark.
#[derive(Debug, Clone)]
pub struct EventClock {
    config: TimeConfig,
    /// The last watermark the plugin was given.
    sent: i64,
    /// When the plugin was last ticked.
    last_tick: Instant,
    /// When the partition last had records.
    last_record: Instant,
}

/// The watermark of a partition whose highest timestamp is `event_time`.
pub fn watermark(event_time: i64, max_out_of_orderness: Duration) -> i64 {
    match event_time {
        WATERMARK_NONE | WATERMARK_END => event_time,
        t => {
            let lag = i64::try_from(max_out_of_orderness.as_millis()).unwrap_or(i64::MAX);
            t.saturating_sub(lag)
                .saturating_sub(1)
                .max(WATERMARK_NONE + 1)
        }
    }
}

/// The wall clock in ms since the epoch.
pub fn processing_time() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl EventClock {
    /// A clock for a plugin whose state holds `event_time` (from a
    /// snapshot, or `WATERMARK_NONE` on a fresh start): the watermark it
    /// already had is not sent again.
    pub fn new(config: TimeConfig, event_time: i64, now: Instant) -> Self {
        let sent = match event_time {
            WATERMARK_NONE => WATERMARK_NONE,
            t => watermark(t, config.max_out_of_orderness),
        };
        EventClock {
            config,
            sent,
            last_tick: now,
            last_record: now,
        }
    }

    /// The partition had records (at `now`).
    pub fn records_arrived(&mut self, now: Instant) {
        self.last_record = now;
    }

    /// With `idle_timeout`: the event time an idle partition takes at
    /// processing time `now_ms`, if it has been idle long enough and that
    /// is later than `event_time`.
    pub fn idle_advance(&self, event_time: i64, now: Instant, now_ms: i64) -> Option<i64> {
        let idle = self.config.idle_timeout?;
        (event_time != WATERMARK_END
            && now.duration_since(self.last_record) >= idle
            && now_ms > event_time)
            .then_some(now_ms)
    }

    /// Where to end a plugin call within a run of records with these
    /// timestamps (`None` for none), when the instance's event time before
    /// them is `event_time`: the index (at least 1) of the first record
    /// that is late against the watermark of the records before it while
    /// the plugin has not been given that watermark yet. `usize::MAX` if
    /// there is none.
    pub fn late_split(
        &self,
        event_time: i64,
        timestamps: impl Iterator<Item = Option<i64>>,
    ) -> usize {
        let mut newest = event_time;
        for (i, ts) in timestamps.enumerate() {
            let Some(ts) = ts else { continue };
            let wm = watermark(newest, self.config.max_out_of_orderness);
            if i > 0 && ts <= wm && wm > self.sent {
                return i;
            }
            newest = newest.max(ts);
        }
        usize::MAX
    }

    /// The watermark to tick the plugin with now, if any: when it advanced
    /// past the last one sent, or `tick_interval` has passed since the last
    /// tick. Records the tick as sent.
    pub fn due(&mut self, event_time: i64, now: Instant) -> Option<i64> {
        let wm = watermark(event_time, self.config.max_out_of_orderness);
        if self.sent == WATERMARK_END {
            return None;
        }
        if wm > self.sent || now.duration_since(self.last_tick) >= self.config.tick_interval {
            self.sent = self.sent.max(wm);
            self.last_tick = now;
            return Some(self.sent);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ooo_ms: u64, idle: Option<u64>) -> TimeConfig {
        TimeConfig {
            tick_interval: Duration::from_millis(100),
            max_out_of_orderness: Duration::from_millis(ooo_ms),
            idle_timeout: idle.map(Duration::from_millis),
        }
    }

    #[test]
    fn the_watermark_trails_the_highest_timestamp() {
        let ooo = Duration::from_millis(500);
        assert_eq!(watermark(10_000, ooo), 9_499);
        assert_eq!(watermark(10_000, Duration::ZERO), 9_999);
        assert_eq!(watermark(WATERMARK_NONE, ooo), WATERMARK_NONE);
        assert_eq!(watermark(WATERMARK_END, ooo), WATERMARK_END);
        // Timestamps near the minimum never reach the "none" value.
        assert_eq!(watermark(WATERMARK_NONE + 1, ooo), WATERMARK_NONE + 1);
    }

    #[test]
    fn ticks_follow_the_watermark_and_the_interval() {
        let t0 = Instant::now();
        let mut c = EventClock::new(config(0, None), WATERMARK_NONE, t0);
        assert_eq!(c.due(WATERMARK_NONE, t0), None);
        assert_eq!(c.due(1_000, t0), Some(999));
        // Same watermark, within the interval: nothing.
        assert_eq!(c.due(1_000, t0 + Duration::from_millis(50)), None);
        // An older record does not move it back.
        assert_eq!(c.due(900, t0 + Duration::from_millis(60)), None);
        // The interval passes: ticked again, same watermark.
        assert_eq!(c.due(1_000, t0 + Duration::from_millis(150)), Some(999));
        assert_eq!(
            c.due(WATERMARK_END, t0 + Duration::from_millis(151)),
            Some(WATERMARK_END)
        );
        // After the end, never again.
        assert_eq!(c.due(WATERMARK_END, t0 + Duration::from_secs(9)), None);
    }

    #[test]
    fn a_late_record_is_split_off_until_its_watermark_was_sent() {
        let t0 = Instant::now();
        let mut c = EventClock::new(config(100, None), WATERMARK_NONE, t0);
        let ts = |v: &[i64]| v.iter().map(|&t| Some(t)).collect::<Vec<_>>();
        // Within the out-of-orderness: nothing is late.
        let fine = ts(&[1_000, 950, 1_100, 1_001]);
        assert_eq!(c.late_split(WATERMARK_NONE, fine.into_iter()), usize::MAX);
        // 850 <= 1_100 - 100 - 1: late, and its watermark was never sent.
        let late = ts(&[1_000, 1_100, 850, 1_200]);
        assert_eq!(c.late_split(WATERMARK_NONE, late.clone().into_iter()), 2);
        // Once the plugin was ticked with 999 (after the first two records
        // in some other run, or here), 850 is late against what it knows.
        assert_eq!(c.due(1_100, t0), Some(999));
        assert_eq!(c.late_split(1_100, late[2..].iter().copied()), usize::MAX);
        // Records without a timestamp are never late and move nothing.
        let none = vec![Some(5_000), None, Some(1)];
        assert_eq!(c.late_split(1_100, none.into_iter()), 2);
    }

    #[test]
    fn a_restored_clock_does_not_repeat_its_watermark() {
        let t0 = Instant::now();
        let mut c = EventClock::new(config(0, None), 5_000, t0);
        assert_eq!(c.due(5_000, t0), None);
        assert_eq!(c.due(5_001, t0), Some(5_000));
        let mut ended = EventClock::new(config(0, None), WATERMARK_END, t0);
        assert_eq!(ended.due(WATERMARK_END, t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn an_idle_partition_follows_processing_time_only_when_configured() {
        let t0 = Instant::now();
        let plain = EventClock::new(config(0, None), 1_000, t0);
        assert_eq!(
            plain.idle_advance(1_000, t0 + Duration::from_secs(60), 90_000),
            None
        );
        let mut c = EventClock::new(config(0, Some(1_000)), 1_000, t0);
        let later = t0 + Duration::from_millis(999);
        assert_eq!(c.idle_advance(1_000, later, 90_000), None);
        let idle = t0 + Duration::from_millis(1_000);
        assert_eq!(c.idle_advance(1_000, idle, 90_000), Some(90_000));
        c.records_arrived(idle);
        assert_eq!(c.idle_advance(1_000, idle, 90_000), None);
        // Never past the end, never backwards.
        let late = idle + Duration::from_secs(5);
        assert_eq!(c.idle_advance(WATERMARK_END, late, 90_000), None);
        assert_eq!(c.idle_advance(100_000, late, 90_000), None);
    }
}
