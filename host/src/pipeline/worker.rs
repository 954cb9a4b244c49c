//! A worker: one OS thread that runs its partition tasks round-robin.
//!
//! Plugin calls are CPU work, so they run here and never on the async
//! reactor. A worker never blocks on one partition while another has data:
//! it polls every task without waiting and only waits (briefly, on one
//! queue) when a whole round found nothing.

use super::JobError;
use super::partition_task::{PartitionTask, Step};
use super::worker_commit::WorkerCommit;
use crate::checkpoint::{CheckpointTrigger, TaskCheckpoint};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How long an idle worker waits on one queue before the next round.
const IDLE_WAIT: Duration = Duration::from_millis(5);

/// A worker and the tasks assigned to it.
pub struct Worker {
    pub id: usize,
    pub tasks: Vec<PartitionTask>,
    /// Exactly-once: the worker's transaction over its tasks.
    pub commit: Option<WorkerCommit>,
}

/// How a worker talks to the checkpoint coordinator.
#[derive(Clone)]
pub struct CheckpointLink {
    pub trigger: Arc<CheckpointTrigger>,
    pub answers: tokio::sync::mpsc::UnboundedSender<TaskCheckpoint>,
    /// Bumped when a checkpoint failed because output was not delivered:
    /// every task restarts from the last complete checkpoint.
    pub restarts: Arc<AtomicU64>,
    /// Set when the job stops because something failed. Workers then end
    /// without committing a final transaction or taking a final checkpoint:
    /// under exactly-once the failure may be that another process now owns
    /// these partitions (this one is a zombie), and every commit would only
    /// wait to be fenced. What was not committed is replayed on restart.
    pub failing: Arc<AtomicBool>,
}

/// Final positions of a worker's tasks: `(topic, partition, next offset)`.
pub type Positions = Vec<(String, i32, i64)>;

/// How a worker ended.
pub struct WorkerExit {
    pub positions: Positions,
    pub error: Option<JobError>,
    /// With checkpoints on and no error: each task's final state.
    pub finals: Vec<TaskCheckpoint>,
}

impl Worker {
    /// Runs until every task is finished (bounded jobs), `stop` is set, or a
    /// task fails.
    pub fn run(mut self, stop: Arc<AtomicBool>, link: Option<CheckpointLink>) -> WorkerExit {
        let _span = tracing::info_span!("worker", id = self.id).entered();
        tracing::debug!(tasks = self.tasks.len(), "worker started");
        let mut idle = false;
        let mut restarts_seen = 0u64;
        let mut next_wait = 0usize;
        let error = loop {
            if stop.load(Ordering::Relaxed) {
                break None;
            }
            if let Some(link) = &link {
                let wanted = link.restarts.load(Ordering::Relaxed);
                if wanted > restarts_seen {
                    restarts_seen = wanted;
                    let mut failed = None;
                    for task in &mut self.tasks {
                        if let Err(e) = task.failed(task.undelivered()) {
                            failed = Some(e);
                            break;
                        }
                    }
                    if let Some(e) = failed {
                        break Some(e.into());
                    }
                }
            }
            if let Some(commit) = &mut self.commit
                && let Err(e) = commit.retry_if_due(&mut self.tasks)
            {
                break Some(e);
            }
            // Answer a checkpoint request between batches. (Ending, a clean
            // stop commits at exit; a failed job starts no other commit.)
            if let Some(link) = &link
                && !stop.load(Ordering::Relaxed)
                && let Err(e) = self.checkpoint(link)
            {
                break Some(e);
            }
            let mut progressed = false;
            let mut open = 0;
            let n = self.tasks.len();
            let mut failed = None;
            let mut rolled_back = false;
            for (i, task) in self.tasks.iter_mut().enumerate() {
                let wait = if idle && i == next_wait % n.max(1) {
                    IDLE_WAIT
                } else {
                    Duration::ZERO
                };
                if task.is_waiting() {
                    // A failed task restarts after its backoff; the others
                    // keep running meanwhile. A stopping worker starts no
                    // restart.
                    open += 1;
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    if let Err(e) = task.restart_if_due() {
                        match task.failed(e) {
                            Ok(()) => rolled_back = true,
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    continue;
                }
                match task.step(wait) {
                    Ok(Step::Processed(_)) => {
                        progressed = true;
                        open += 1;
                    }
                    Ok(Step::Idle) => open += 1,
                    Ok(Step::Finished) => {}
                    Err(e) => {
                        open += 1;
                        match task.failed(e) {
                            Ok(()) => rolled_back = true,
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                }
            }
            if let Some(e) = failed {
                break Some(e.into());
            }
            // Exactly-once: a task that restarts takes the worker's
            // transaction, and so its neighbours' progress, with it.
            if rolled_back
                && let Some(commit) = &mut self.commit
                && let Err(e) = commit.task_failed(&mut self.tasks)
            {
                break Some(e);
            }
            if open == 0 {
                // Every task finished (bounded job), or this worker owns no
                // partition (more workers than partitions).
                break None;
            }
            idle = !progressed;
            if idle {
                next_wait += 1;
            }
        };
        let positions = self
            .tasks
            .iter()
            .map(|t| (t.start.topic.clone(), t.start.partition, t.position()))
            .collect();
        let mut error = error;
        let mut finals = Vec::new();
        if let (Some(link), None) = (&link, &error)
            && !link.failing.load(Ordering::Relaxed)
        {
            match &mut self.commit {
                // The last transaction commits everything processed.
                Some(commit) => error = commit.final_commit(&mut self.tasks).err(),
                None => {
                    finals = self
                        .tasks
                        .iter_mut()
                        .map(|t| t.final_checkpoint())
                        .collect()
                }
            }
        }
        WorkerExit {
            positions,
            error,
            finals,
        }
    }

    /// Answers checkpoint request: each task's capture to the coordinator,
    /// or (exactly-once) the worker's transaction committed.
    fn checkpoint(&mut self, link: &CheckpointLink) -> Result<(), JobError> {
        let requested = link.trigger.requested();
        match &mut self.commit {
            Some(commit) => {
                if self.tasks.iter().any(|t| t.checkpointed() < requested) {
                    commit.checkpoint(&mut self.tasks, requested)?;
                }
            }
            None => {
                for task in &mut self.tasks {
                    if task.checkpointed() < requested && !task.is_waiting() {
                        let _ = link.answers.send(task.checkpoint(requested));
                    }
                }
            }
        }
        Ok(())
    }
}
