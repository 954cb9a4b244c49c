//! The partition plan: per partition, where it starts, which worker runs
//! it, and where its state comes from. A pure function of what start-up
//! found (resolved start positions, what is durable), unit-tested like
//! `start_position::resolve`.

use super::assignment;
use crate::kafka::consumer::PartitionStart;
use crate::topic_partition::TopicPartition;
use std::collections::HashMap;

/// Where a task's state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateOrigin {
    /// A fresh instance, initialised with the plugin's config.
    Fresh,
    /// The partition's state in checkpoint `id` of the store.
    Checkpoint { id: u64 },
    /// Exactly-once: the state file recorded for the group's committed
    /// offset.
    Committed,
}

/// One partition of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanEntry {
    /// Where it starts (moved to the state's offset when there is one).
    pub start: PartitionStart,
    /// The worker that runs it.
    pub worker: usize,
    pub state: StateOrigin,
}

/// What is durable from earlier runs.
#[derive(Debug, Clone, Default)]
pub enum Recovered {
    /// Nothing to restore (checkpoints off, or a first run).
    #[default]
    Nothing,
    /// The store's latest complete checkpoint: each partition's next offset.
    Checkpoint {
        id: u64,
        offsets: HashMap<TopicPartition, i64>,
    },
    /// Exactly-once: per partition, the state files there are, as
    /// `(offset, writer)`.
    StateFiles(HashMap<TopicPartition, Vec<(i64, String)>>),
}

/// The durable state does not fit the group's offsets.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "{tp}: no state file for the group's committed offset {committed} (state exists for offsets {offsets:?})"
    )]
    NoStateForCommitted {
        tp: TopicPartition,
        committed: i64,
        offsets: Vec<i64>,
    },
}

/// The plan for `starts` over `parallelism` workers. A checkpoint's
/// offsets win over the start position; under exactly-once the group's
/// committed offset is where reading resumes, with the state recorded for
/// exactly that offset.
pub fn plan(
    starts: Vec<PartitionStart>,
    recovered: &Recovered,
    parallelism: usize,
) -> Result<Vec<PlanEntry>, PlanError> {
    starts
        .into_iter()
        .map(|start| entry(start, recovered, parallelism))
        .collect()
}

/// One partition's entry (see [`plan`]).
pub fn entry(
    mut start: PartitionStart,
    recovered: &Recovered,
    parallelism: usize,
) -> Result<PlanEntry, PlanError> {
    let worker = assignment::worker_for(&start.tp.topic, start.tp.partition, parallelism);
    let state = match recovered {
        Recovered::Nothing => StateOrigin::Fresh,
        Recovered::Checkpoint { id, offsets } => match offsets.get(&start.tp) {
            Some(&offset) => {
                start.start = offset;
                StateOrigin::Checkpoint { id: *id }
            }
            None => StateOrigin::Fresh,
        },
        Recovered::StateFiles(files) => committed_state(&mut start, files)?,
    };
    Ok(PlanEntry {
        start,
        worker,
        state,
    })
}

/// Exactly-once: the state for the group's committed offset, if any.
fn committed_state(
    start: &mut PartitionStart,
    files: &HashMap<TopicPartition, Vec<(i64, String)>>,
) -> Result<StateOrigin, PlanError> {
    let Some(committed) = start.committed else {
        return Ok(StateOrigin::Fresh);
    };
    let files = files.get(&start.tp).map(Vec::as_slice).unwrap_or_default();
    let offsets: Vec<i64> = files.iter().map(|(o, _)| *o).collect();
    if files
        .iter()
        .any(|(o, w)| *o == committed && *w == start.committed_writer)
    {
        start.start = committed;
        return Ok(StateOrigin::Committed);
    }
    if offsets.is_empty() {
        tracing::warn!(
            topic = %start.tp.topic, partition = start.tp.partition, committed,
            "the group has a committed offset but no exactly-once state exists; the plugin starts fresh"
        );
        return Ok(StateOrigin::Fresh);
    }
    Err(PlanError::NoStateForCommitted {
        tp: start.tp.clone(),
        committed,
        offsets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(partition: i32, start: i64, committed: Option<i64>) -> PartitionStart {
        PartitionStart {
            tp: TopicPartition::new("in", partition),
            topic_index: 0,
            start,
            end: None,
            committed,
            committed_writer: String::new(),
        }
    }

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("in", partition)
    }

    #[test]
    fn without_durable_state_every_partition_starts_fresh_where_resolved() {
        let plan = plan(
            vec![start(0, 5, None), start(1, 7, Some(3))],
            &Recovered::Nothing,
            2,
        )
        .unwrap();
        assert_eq!(
            plan.iter()
                .map(|e| (e.start.start, e.state))
                .collect::<Vec<_>>(),
            vec![(5, StateOrigin::Fresh), (7, StateOrigin::Fresh)]
        );
    }

    #[test]
    fn a_checkpoint_wins_over_the_start_position() {
        let recovered = Recovered::Checkpoint {
            id: 9,
            offsets: HashMap::from([(tp(0), 40)]),
        };
        let plan = plan(
            vec![start(0, 5, Some(30)), start(1, 7, None)],
            &recovered,
            1,
        )
        .unwrap();
        assert_eq!(
            (plan[0].start.start, plan[0].state),
            (40, StateOrigin::Checkpoint { id: 9 })
        );
        // A partition the checkpoint lacks (new since) starts fresh.
        assert_eq!(
            (plan[1].start.start, plan[1].state),
            (7, StateOrigin::Fresh)
        );
    }

    #[test]
    fn exactly_once_resumes_at_the_committed_offset_with_its_state() {
        let file = |o: i64| (o, String::new());
        let files = HashMap::from([(tp(0), vec![file(10), file(20)]), (tp(2), vec![file(4)])]);
        let recovered = Recovered::StateFiles(files);
        let entries = plan(
            vec![
                start(0, 0, Some(20)),
                start(1, 0, Some(8)),
                start(3, 2, None),
            ],
            &recovered,
            2,
        )
        .unwrap();
        assert_eq!(
            (entries[0].start.start, entries[0].state),
            (20, StateOrigin::Committed)
        );
        // Committed offset without any state files: fresh, as resolved.
        assert_eq!(
            (entries[1].start.start, entries[1].state),
            (0, StateOrigin::Fresh)
        );
        // Nothing committed: fresh, whatever files exist.
        assert_eq!(
            (entries[2].start.start, entries[2].state),
            (2, StateOrigin::Fresh)
        );
        let err = plan(vec![start(2, 0, Some(5))], &recovered, 2).unwrap_err();
        assert!(err.to_string().contains("committed offset 5"), "{err}");
    }

    #[test]
    fn with_writers_only_the_committed_writers_file_counts() {
        // A zombie ("old") also wrote offset 20; the commit names "new".
        let files = HashMap::from([(tp(0), vec![(20, "new".into()), (20, "old".into())])]);
        let recovered = Recovered::StateFiles(files);
        let mut s = start(0, 0, Some(20));
        s.committed_writer = "new".into();
        let e = entry(s.clone(), &recovered, 1).unwrap();
        assert_eq!((e.start.start, e.state), (20, StateOrigin::Committed));
        s.committed_writer = "other".into();
        assert!(
            entry(s, &recovered, 1).is_err(),
            "no file of the committed writer"
        );
    }

    #[test]
    fn workers_follow_flinks_assignment() {
        let starts = (0..8).map(|p| start(p, 0, None)).collect();
        for e in plan(starts, &Recovered::Nothing, 3).unwrap() {
            assert_eq!(
                e.worker,
                assignment::worker_for("in", e.start.tp.partition, 3)
            );
        }
    }
}
