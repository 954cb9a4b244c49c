//! Flink's start positions, resolved to a concrete offset per partition.
//!
//! The decision is a pure function of the configured position, the group's
//! committed offset, the `auto.offset.reset` policy and the partition's
//! watermarks, so it is tested without a broker; [`consumer`](super::consumer)
//! fetches those inputs.

use crate::config::StartPosition;

/// librdkafka's `auto.offset.reset`, used by `group-offsets` when the group
/// has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetPolicy {
    Earliest,
    Latest,
    /// Fail: the operator must choose.
    None,
}

impl ResetPolicy {
    /// Parses librdkafka's spellings; librdkafka's default is `latest`.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.unwrap_or("latest") {
            "smallest" | "earliest" | "beginning" => Ok(ResetPolicy::Earliest),
            "largest" | "latest" | "end" => Ok(ResetPolicy::Latest),
            "error" | "none" => Ok(ResetPolicy::None),
            other => Err(format!(
                "auto.offset.reset = {other:?}: expected earliest, latest or none"
            )),
        }
    }
}

/// What is known about one partition when choosing where to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionFacts {
    /// First available offset.
    pub low: i64,
    /// Next offset to be written (end of the log).
    pub high: i64,
    /// The group's committed offset, if any.
    pub committed: Option<i64>,
    /// For `timestamp`: the first offset at or after the time, if any.
    pub by_time: Option<i64>,
}

/// Where one partition starts, or `None` when `group-offsets` finds no
/// committed offset under `auto.offset.reset = none`.
pub fn resolve(
    start: &StartPosition,
    topic: &str,
    partition: i32,
    facts: PartitionFacts,
    reset: ResetPolicy,
) -> Option<i64> {
    let clamp = |o: i64| o.clamp(facts.low, facts.high);
    let group = || match facts.committed {
        // A committed offset out of range is reset, as librdkafka does.
        Some(o) if o >= facts.low && o <= facts.high => Some(o),
        _ => match reset {
            ResetPolicy::Earliest => Some(facts.low),
            ResetPolicy::Latest => Some(facts.high),
            ResetPolicy::None => None,
        },
    };
    match start {
        StartPosition::GroupOffsets => group(),
        StartPosition::Earliest => Some(facts.low),
        StartPosition::Latest => Some(facts.high),
        // No record at or after the time: start at the end.
        StartPosition::Timestamp { .. } => Some(facts.by_time.map_or(facts.high, clamp)),
        StartPosition::Specific { offsets } => offsets
            .get(topic)
            .and_then(|parts| parts.get(&partition.to_string()))
            .map(|&o| clamp(o))
            .or_else(group),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const F: PartitionFacts = PartitionFacts {
        low: 10,
        high: 100,
        committed: Some(40),
        by_time: Some(70),
    };

    #[test]
    fn group_offsets_prefer_committed_then_reset() {
        let g = StartPosition::GroupOffsets;
        assert_eq!(resolve(&g, "t", 0, F, ResetPolicy::Latest), Some(40));
        let none = PartitionFacts {
            committed: None,
            ..F
        };
        assert_eq!(resolve(&g, "t", 0, none, ResetPolicy::Earliest), Some(10));
        assert_eq!(resolve(&g, "t", 0, none, ResetPolicy::Latest), Some(100));
        assert_eq!(resolve(&g, "t", 0, none, ResetPolicy::None), None);
        let stale = PartitionFacts {
            committed: Some(3),
            ..F
        };
        assert_eq!(resolve(&g, "t", 0, stale, ResetPolicy::Earliest), Some(10));
    }

    #[test]
    fn earliest_latest_timestamp_ignore_committed() {
        let r = ResetPolicy::None;
        assert_eq!(resolve(&StartPosition::Earliest, "t", 0, F, r), Some(10));
        assert_eq!(resolve(&StartPosition::Latest, "t", 0, F, r), Some(100));
        let ts = StartPosition::Timestamp { timestamp_ms: 5 };
        assert_eq!(resolve(&ts, "t", 0, F, r), Some(70));
        let after_end = PartitionFacts { by_time: None, ..F };
        assert_eq!(resolve(&ts, "t", 0, after_end, r), Some(100));
    }

    #[test]
    fn specific_falls_back_to_group_offsets() {
        let mut parts = BTreeMap::new();
        parts.insert("1".to_string(), 55);
        let mut offsets = BTreeMap::new();
        offsets.insert("t".to_string(), parts);
        let s = StartPosition::Specific { offsets };
        assert_eq!(resolve(&s, "t", 1, F, ResetPolicy::Latest), Some(55));
        assert_eq!(resolve(&s, "t", 0, F, ResetPolicy::Latest), Some(40));
        assert_eq!(resolve(&s, "u", 1, F, ResetPolicy::Latest), Some(40));
    }

    #[test]
    fn reset_policy_spellings() {
        assert_eq!(ResetPolicy::parse(None), Ok(ResetPolicy::Latest));
        assert_eq!(
            ResetPolicy::parse(Some("smallest")),
            Ok(ResetPolicy::Earliest)
        );
        assert_eq!(ResetPolicy::parse(Some("none")), Ok(ResetPolicy::None));
        assert!(ResetPolicy::parse(Some("sometimes")).is_err());
    }
}
