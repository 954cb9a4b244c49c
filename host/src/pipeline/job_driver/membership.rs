//! Partitions joining and leaving a running job: added and removed on
//! the driver (by partition discovery here; by the consumer group's
//! assignments next), each one call that the unit tests exercise over a
//! fake durability.

use super::{Discovering, JobDriver};
use crate::checkpoint::transactional::PartitionStateDir;
use crate::kafka::KafkaError;
use crate::kafka::consumer::{self, PartitionStart, SourceQueue};
use crate::kafka::group::GroupEvent;
use crate::pipeline::JobError;
use crate::pipeline::plan::{self, PlanEntry, Recovered};
use crate::pipeline::status::TaskStats;
use crate::pipeline::worker::{Adoption, Released, WorkerCommand};
use crate::runtime::snapshot::Snapshot;
use crate::topic_partition::TopicPartition;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

impl JobDriver {
    /// The discovery interval passed: look for new partitions (blocking
    /// metadata requests, off the reactor).
    pub(super) fn on_discovery_due(&mut self) {
        let (config, consumer, known) = (
            self.config.clone(),
            self.consumer.clone(),
            self.known.clone(),
        );
        self.discovering = Some(tokio::task::spawn_blocking(move || {
            consumer::discover(&config, &consumer, &known)
        }));
    }

    /// New partitions were found: each is planned like a partition at
    /// start-up (fresh state, from its first offset) and added. A failed
    /// look is tried again at the next interval.
    pub(super) fn on_discovered(
        &mut self,
        found: Result<Result<Vec<PartitionStart>, KafkaError>, tokio::task::JoinError>,
    ) {
        self.discovering = None;
        let starts = match found.map_err(JobError::from) {
            Ok(Ok(starts)) => starts,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "looking for new partitions failed; trying again at the next interval");
                return;
            }
            Err(e) => return self.control.fail(e),
        };
        let parallelism = self.config.pipeline.parallelism;
        for start in starts {
            tracing::warn!(
                partition = %start.tp, start = start.start,
                "new partition found; it is read from its first offset. A key's new records may now go to another partition than its earlier ones, so per-key state of a keyed plugin splits between them"
            );
            self.known.insert(start.tp.clone());
            let entry = plan::entry(start, &Recovered::Nothing, parallelism)
                .expect("a plan without durable state cannot fail");
            if let Err(e) = self.add_partition(entry, None) {
                tracing::error!(error = %e, "adding a new partition failed; stopping the job");
                return self.control.fail(e);
            }
        }
    }

    /// Starts running the partition of `entry` (on the worker the entry
    /// names, which builds its task): it is split off and assigned at its
    /// start, its task restored from `snapshot` (a checkpoint's state for
    /// it) or as the entry's state origin says, and from now on every
    /// checkpoint waits for it.
    pub(super) fn add_partition(
        &mut self,
        entry: PlanEntry,
        snapshot: Option<Snapshot>,
    ) -> Result<(), JobError> {
        let queue = consumer::assign_one(&self.consumer, &entry.start)?;
        self.adopt(entry, queue, snapshot)
    }

    /// Hands a partition already assigned (its queue split off) to its
    /// worker, which builds its task (see [`add_partition`](Self::add_partition)).
    fn adopt(
        &mut self,
        entry: PlanEntry,
        queue: SourceQueue,
        snapshot: Option<Snapshot>,
    ) -> Result<(), JobError> {
        let (tp, worker) = (entry.start.tp.clone(), entry.worker);
        let sender = self
            .commands
            .get(worker)
            .ok_or(JobError::WorkerGone { worker })?;
        let stats = Arc::new(TaskStats::new(&tp.topic, tp.partition, entry.start.start));
        let adoption = Adoption {
            entry,
            queue,
            snapshot,
            stats: stats.clone(),
        };
        sender
            .send(WorkerCommand::Adopt(Box::new(adoption)))
            .map_err(|_| JobError::WorkerGone { worker })?;
        self.checkpoints.coordinator.add_task(&tp);
        if self.workers_commit() {
            // Its worker's commits now count for the job's checkpoints.
            let complete = self.checkpoints.eos_complete;
            self.checkpoints
                .eos_workers
                .entry(worker)
                .or_insert(complete);
        }
        self.positions.retain(|(t, _)| t != &tp);
        tracing::info!(partition = %tp, worker, "partition added");
        self.assignments.push((tp, worker));
        self.all_stats.push(stats);
        self.metrics
            .assigned_partitions
            .set(self.all_stats.len() as i64);
        Ok(())
    }

    /// Lets a partition go: nothing more is fetched for it, its worker
    /// makes its progress durable (exactly-once: commits its transaction;
    /// with the checkpoint store: hands over its final state, which later
    /// checkpoints carry) and drops its task.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) async fn remove_partition(
        &mut self,
        tp: &TopicPartition,
    ) -> Result<Released, JobError> {
        if !self.assignments.iter().any(|(t, _)| t == tp) {
            return Err(JobError::NotAssigned(tp.clone()));
        }
        consumer::unassign_one(&self.consumer, tp)?;
        self.release(tp).await
    }

    /// Has the worker of `tp` make it durable and drop its task (see
    /// [`remove_partition`](Self::remove_partition)); the partition is
    /// unassigned already, or is about to be.
    async fn release(&mut self, tp: &TopicPartition) -> Result<Released, JobError> {
        let i = self
            .assignments
            .iter()
            .position(|(t, _)| t == tp)
            .ok_or_else(|| JobError::NotAssigned(tp.clone()))?;
        let worker = self.assignments[i].1;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let release = WorkerCommand::Release {
            tp: tp.clone(),
            reply,
        };
        self.commands[worker]
            .send(release)
            .map_err(|_| JobError::WorkerGone { worker })?;
        let released = answer.await.map_err(|_| JobError::WorkerGone { worker })?;
        if let Some(f) = released.final_state.clone() {
            let set = self.checkpoints.coordinator.task_finished(f);
            self.checkpoints.persist(set);
        }
        if let Some(p) = released.position {
            self.positions.push((tp.clone(), p));
        }
        self.assignments.remove(i);
        self.all_stats.remove(&tp.topic, tp.partition);
        self.metrics
            .assigned_partitions
            .set(self.all_stats.len() as i64);
        tracing::info!(partition = %tp, worker, position = ?released.position, "partition removed");
        Ok(released)
    }
}

impl JobDriver {
    /// The consumer group changed this process's assignment (see
    /// `kafka::group`): new partitions are planned and adopted, their
    /// state restored for the committed offset; revoked ones are made
    /// durable and let go before the callback may unassign them.
    pub(super) async fn on_group_event(&mut self, event: GroupEvent) {
        match event {
            GroupEvent::Assigned(parts) => {
                for (start, queue) in parts {
                    let result = self
                        .group_entry(start)
                        .and_then(|entry| self.adopt(entry, queue, None));
                    if let Err(e) = result {
                        tracing::error!(error = %e, "adopting a partition the group assigned failed; stopping the job");
                        return self.control.fail(e);
                    }
                }
            }
            GroupEvent::Revoked { partitions, done } => {
                for tp in &partitions {
                    match self.release(tp).await {
                        Ok(Released { error: Some(e), .. }) => {
                            tracing::warn!(partition = %tp, error = %e, "a revoked partition's last commit failed; its next owner replays from the last one");
                        }
                        Ok(_) | Err(JobError::NotAssigned(_)) => {}
                        Err(e) => {
                            tracing::error!(partition = %tp, error = %e, "releasing a revoked partition failed; stopping the job");
                            self.control.fail(e);
                        }
                    }
                }
                let _ = done.send(());
            }
            GroupEvent::Failed(e) => {
                tracing::error!(error = %e, "the group's assignment could not be set up; stopping the job");
                self.control.fail(e.into());
            }
        }
    }

    /// The plan entry of a partition the group assigned: exactly-once, so
    /// its state is the file recorded for the committed offset.
    fn group_entry(&self, start: PartitionStart) -> Result<PlanEntry, JobError> {
        let dir = PartitionStateDir::open(&self.location, &start.tp.topic, start.tp.partition)?;
        let files = HashMap::from([(start.tp.clone(), dir.files()?)]);
        let recovered = Recovered::StateFiles(files);
        Ok(plan::entry(
            start,
            &recovered,
            self.config.pipeline.parallelism,
        )?)
    }
}

/// The next event of the consumer group, or never without group assignment.
pub(super) async fn group_event(
    events: &mut Option<UnboundedReceiver<GroupEvent>>,
) -> Option<GroupEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits for the look for new partitions under way, or forever without one.
pub(super) async fn discovered(
    discovering: &mut Option<Discovering>,
) -> Result<Result<Vec<PartitionStart>, KafkaError>, tokio::task::JoinError> {
    match discovering {
        Some(d) => d.await,
        None => std::future::pending().await,
    }
}
