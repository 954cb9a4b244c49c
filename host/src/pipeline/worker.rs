//! A worker: one OS thread that runs its partition tasks round-robin.
//!
//! Plugin calls are CPU work, so they run here and never on the async
//! reactor. A worker never blocks on one partition while another has data:
//! it polls every task without waiting and only waits (briefly, on one
//! queue) when a whole round found nothing.

use super::partition_task::{PartitionTask, Step, TaskError};
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
    pub error: Option<TaskError>,
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
                    if failed.is_some() {
                        break failed;
                    }
                }
            }
            // Answer a checkpoint request between batches.
            if let Some(link) = &link {
                let requested = link.trigger.requested();
                let mut failed = None;
                for task in &mut self.tasks {
                    if stop.load(Ordering::Relaxed) {
                        // Ending: a clean stop commits at exit, a failed
                        // job must not start another commit.
                        break;
                    }
                    if task.checkpointed() < requested && !task.is_waiting() {
                        if task.is_transactional() {
                            if let Err(e) = task.commit_transaction(requested)
                                && let Err(e) = task.failed(e)
                            {
                                failed = Some(e);
                                break;
                            }
                        } else {
                            let _ = link.answers.send(task.checkpoint(requested));
                        }
                    }
                }
                if failed.is_some() {
                    break failed;
                }
            }
            let mut progressed = false;
            let mut open = 0;
            let n = self.tasks.len();
            let mut failed = None;
            for (i, task) in self.tasks.iter_mut().enumerate() {
                let wait = if idle && i == next_wait % n.max(1) {
                    IDLE_WAIT
                } else {
                    Duration::ZERO
                };
                if task.is_waiting() {
                    // A failed task restarts after its backoff; the others
                    // keep running meanwhile. A stopping worker starts no
                    // restart (its abort can block on the broker).
                    open += 1;
                    if stop.load(Ordering::Relaxed) {
                        continue;
                    }
                    match task.restart_if_due() {
                        Ok(_) => {}
                        Err(e) => {
                            if let Err(e) = task.failed(e) {
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
                        if let Err(e) = task.failed(e) {
                            failed = Some(e);
                            break;
                        }
                    }
                }
            }
            if failed.is_some() {
                break failed;
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
            for t in &mut self.tasks {
                if t.is_transactional() {
                    // The last transaction commits everything processed.
                    if let Err(e) = t.commit_transaction(u64::MAX) {
                        error = Some(e);
                        break;
                    }
                } else {
                    finals.push(t.final_checkpoint());
                }
            }
        }
        WorkerExit {
            positions,
            error,
            finals,
        }
    }
}
