//! The checkpoint coordinator: when to take a checkpoint, and when one is
//! complete.
//!
//! The job bumps the [`CheckpointTrigger`]; every worker notices it between
//! batches and sends one [`TaskCheckpoint`] per partition task (a capture
//! of its instance and its next offset, taken with no guest frame on the
//! stack). The capture is the task's whole pause: a copy of the pages
//! written since its previous capture (the whole memory the first time).
//! When every task has answered, [`complete`] runs off the async reactor
//! and off the workers: the captures go into the store's mirrors, then
//! flush the producer (so all output produced before the captures is
//! acknowledged), encode and write the state files (deltas, or full
//! snapshots when compacting), write the metadata (the checkpoint is now
//! complete), then commit the offsets to the group.
//! Tasks of a bounded job that already finished answer with their final
//! state.

use super::failpoint;
use super::store::{CheckpointError, CheckpointStore};
use crate::runtime::snapshot_delta::Capture;
use crate::topic_partition::{Position, TopicPartition};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The id of the checkpoint workers should take next (0 = none yet).
#[derive(Debug, Default)]
pub struct CheckpointTrigger {
    requested: AtomicU64,
}

impl CheckpointTrigger {
    /// Asks every task for checkpoint `id`.
    pub fn request(&self, id: u64) {
        self.requested.store(id, Ordering::Release);
    }
    /// The latest requested id.
    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::Acquire)
    }
}

/// One task's part of a checkpoint.
#[derive(Debug, Clone)]
pub struct TaskCheckpoint {
    pub id: u64,
    pub tp: TopicPartition,
    /// Next offset to read.
    pub offset: i64,
    /// The instance's state, or what changed since its previous capture.
    pub capture: Capture,
}

/// Collects task checkpoints.
pub struct Coordinator {
    tasks: usize,
    next_id: u64,
    in_flight: Option<(u64, Instant)>,
    /// The in-flight checkpoint has all its parts and is being persisted.
    sealed: bool,
    collected: BTreeMap<TopicPartition, TaskCheckpoint>,
    finals: BTreeMap<TopicPartition, TaskCheckpoint>,
}

/// What a completed checkpoint cost.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointStats {
    pub id: u64,
    pub bytes: u64,
    /// From the trigger to the last task snapshot.
    pub align: Duration,
    /// Flush + write + commit.
    pub persist: Duration,
}

impl Coordinator {
    /// A coordinator for `tasks` partition tasks, numbering from `next_id`.
    pub fn new(tasks: usize, next_id: u64) -> Self {
        Coordinator {
            tasks,
            next_id,
            in_flight: None,
            sealed: false,
            collected: BTreeMap::new(),
            finals: BTreeMap::new(),
        }
    }

    /// Starts the next checkpoint unless one is in flight; returns its id.
    pub fn start_next(&mut self) -> Option<u64> {
        if self.in_flight.is_some() {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight = Some((id, Instant::now()));
        self.sealed = false;
        self.collected.clear();
        Some(id)
    }

    /// Takes a task's answer. Returns the whole set once every task has
    /// answered (finished tasks count with their final state).
    pub fn offer(&mut self, tc: TaskCheckpoint) -> Option<(u64, Duration, Vec<TaskCheckpoint>)> {
        let (id, _) = self.in_flight?;
        if tc.id != id {
            return None;
        }
        self.collected.insert(tc.tp.clone(), tc);
        self.ready()
    }

    /// A partition task joins the job: the next checkpoints wait for its
    /// answer too. (A partition that left and comes back answers again
    /// instead of its final state.)
    pub fn add_task(&mut self, tp: &TopicPartition) {
        if self.finals.remove(tp).is_none() {
            self.tasks += 1;
        }
    }

    /// Records the final state of a task whose worker has exited, or
    /// which left the job: later checkpoints carry it as it is.
    pub fn task_finished(
        &mut self,
        tc: TaskCheckpoint,
    ) -> Option<(u64, Duration, Vec<TaskCheckpoint>)> {
        self.finals.insert(tc.tp.clone(), tc);
        self.ready()
    }

    fn ready(&mut self) -> Option<(u64, Duration, Vec<TaskCheckpoint>)> {
        let (id, started) = self.in_flight?;
        if self.sealed {
            return None;
        }
        let extra = self
            .finals
            .keys()
            .filter(|k| !self.collected.contains_key(*k))
            .count();
        if self.collected.len() + extra < self.tasks {
            return None;
        }
        self.sealed = true;
        let mut all: Vec<TaskCheckpoint> =
            std::mem::take(&mut self.collected).into_values().collect();
        for (k, f) in &self.finals {
            if !all.iter().any(|t| &t.tp == k) {
                all.push(TaskCheckpoint { id, ..f.clone() });
            }
        }
        Some((id, started.elapsed(), all))
    }

    /// Marks the in-flight checkpoint done (completed or abandoned).
    pub fn finish(&mut self) {
        self.in_flight = None;
        self.sealed = false;
    }

    /// The final checkpoint of a job whose tasks all finished.
    pub fn final_set(&mut self) -> Option<(u64, Vec<TaskCheckpoint>)> {
        if self.finals.len() < self.tasks {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        Some((
            id,
            self.finals
                .values()
                .map(|f| TaskCheckpoint { id, ..f.clone() })
                .collect(),
        ))
    }
}

/// Makes a checkpoint durable, in order: the captures into the store's
/// mirrors (first, so a checkpoint that fails loses none of them), `flush`
/// (delivery of everything produced before the captures), state files and
/// metadata, then `commit` of the offsets.
pub fn complete<E>(
    store: &CheckpointStore,
    id: u64,
    align: Duration,
    parts: Vec<TaskCheckpoint>,
    flush: impl FnOnce() -> Result<(), E>,
    commit: impl FnOnce(&[Position]) -> Result<(), E>,
) -> Result<CheckpointStats, E>
where
    E: From<CheckpointError>,
{
    let started = Instant::now();
    let positions: Vec<Position> = parts.iter().map(|t| (t.tp.clone(), t.offset)).collect();
    store.absorb(parts.into_iter().map(|t| (t.tp, t.capture)))?;
    flush()?;
    let bytes = store.write_mirrored(id, &positions)?;
    failpoint::hit(failpoint::AFTER_METADATA);
    commit(&positions)?;
    Ok(CheckpointStats {
        id,
        bytes,
        align,
        persist: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::snapshot::{HostTime, Snapshot};
    use crate::runtime::snapshot_delta::CapturedState;

    fn part(id: u64, partition: i32, offset: i64) -> TaskCheckpoint {
        TaskCheckpoint {
            id,
            tp: TopicPartition::new("in", partition),
            offset,
            capture: Capture {
                instance: partition as u64,
                seq: 1,
                state: CapturedState::Full(Snapshot {
                    module_sha256: [0; 32],
                    globals: Vec::new(),
                    time: HostTime {
                        event_time: 0,
                        clock_ns: 0,
                    },
                    memory: Vec::new(),
                }),
            },
        }
    }

    fn offsets(set: &[TaskCheckpoint]) -> Vec<(i32, i64, u64)> {
        let mut v: Vec<_> = set
            .iter()
            .map(|t| (t.tp.partition, t.offset, t.id))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_checkpoint_is_complete_when_every_task_answered() {
        let mut c = Coordinator::new(2, 5);
        assert!(c.offer(part(5, 0, 10)).is_none(), "nothing in flight yet");
        assert_eq!(c.start_next(), Some(5));
        assert_eq!(c.start_next(), None, "one checkpoint at a time");
        assert!(c.offer(part(5, 0, 10)).is_none());
        assert!(c.offer(part(4, 1, 3)).is_none(), "an answer to an older id");
        let (id, _, set) = c.offer(part(5, 1, 20)).expect("complete");
        assert_eq!(id, 5);
        assert_eq!(offsets(&set), vec![(0, 10, 5), (1, 20, 5)]);
        assert!(c.offer(part(5, 1, 21)).is_none(), "sealed: persisted once");
        c.finish();
        assert_eq!(c.start_next(), Some(6));
    }

    #[test]
    fn finished_tasks_count_with_their_final_state() {
        let mut c = Coordinator::new(2, 1);
        assert!(
            c.task_finished(part(0, 1, 99)).is_none(),
            "nothing in flight"
        );
        assert_eq!(c.start_next(), Some(1));
        let (id, _, set) = c.offer(part(1, 0, 7)).expect("the finished task fills in");
        assert_eq!(id, 1);
        assert_eq!(offsets(&set), vec![(0, 7, 1), (1, 99, 1)]);
        c.finish();
        assert!(c.final_set().is_none(), "task 0 has not finished");
        assert_eq!(c.start_next(), Some(2));
        let (id, _, set) = c.task_finished(part(0, 0, 8)).expect("last task finished");
        assert_eq!((id, offsets(&set)), (2, vec![(0, 8, 2), (1, 99, 2)]));
        c.finish();
        let (id, set) = c.final_set().expect("every task finished");
        assert_eq!((id, offsets(&set)), (3, vec![(0, 8, 3), (1, 99, 3)]));
    }

    #[test]
    fn tasks_join_and_leave_between_checkpoints() {
        let mut c = Coordinator::new(1, 1);
        c.add_task(&TopicPartition::new("in", 1));
        assert_eq!(c.start_next(), Some(1));
        assert!(
            c.offer(part(1, 0, 5)).is_none(),
            "the added task must answer"
        );
        let (_, _, set) = c.offer(part(1, 1, 6)).expect("both answered");
        assert_eq!(offsets(&set), vec![(0, 5, 1), (1, 6, 1)]);
        c.finish();
        // Partition 1 leaves with its final state: later checkpoints carry it.
        assert!(c.task_finished(part(0, 1, 9)).is_none());
        assert_eq!(c.start_next(), Some(2));
        let (_, _, set) = c.offer(part(2, 0, 7)).expect("the one left answered");
        assert_eq!(offsets(&set), vec![(0, 7, 2), (1, 9, 2)]);
        c.finish();
        // It comes back: its answers replace the final state again.
        c.add_task(&TopicPartition::new("in", 1));
        assert_eq!(c.start_next(), Some(3));
        assert!(
            c.offer(part(3, 0, 8)).is_none(),
            "partition 1 answers again"
        );
        let (_, _, set) = c.offer(part(3, 1, 10)).expect("both answered");
        assert_eq!(offsets(&set), vec![(0, 8, 3), (1, 10, 3)]);
    }
}
