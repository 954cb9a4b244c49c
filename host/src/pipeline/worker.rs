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
            // Answer a checkpoint request between batches. (Ending, a clean
            // stop commits at exit; a failed job starts no other commit.)
            if let Some(link) = &link
                && !stop.load(Ordering::Relaxed)
            {
                let requested = link.trigger.requested();
                let due = |t: &PartitionTask| t.checkpointed() < requested && !t.is_waiting();
                let mut failed = None;
                for task in &mut self.tasks {
                    if due(task) && !task.is_transactional() {
                        let _ = link.answers.send(task.checkpoint(requested));
                    }
                }
                for (task, result) in commit_concurrently(&mut self.tasks, requested, due) {
                    if let Err(e) = result
                        && let Err(e) = task.failed(e)
                    {
                        failed = Some(e);
                        break;
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
                if !t.is_transactional() {
                    finals.push(t.final_checkpoint());
                }
            }
            // The last transactions commit everything processed.
            let results = commit_concurrently(&mut self.tasks, u64::MAX, |_| true);
            error = results.into_iter().find_map(|(_, r)| r.err());
        }
        WorkerExit {
            positions,
            error,
            finals,
        }
    }
}

/// Commits the transaction of every exactly-once task that `due` selects,
/// each on its own scoped thread, and returns each task with its result.
///
/// A commit is several blocking round trips to the transaction and group
/// coordinators (offsets to the transaction, EndTxn) plus writing the state
/// file; one after another, a worker with many partitions paused for the
/// sum of them at every checkpoint (~100 ms each on the mock cluster, so
/// 12 partitions held a worker for over a second). Concurrently it pauses
/// for the slowest. The tasks are independent: each has its own producer,
/// transactional id and state directory.
fn commit_concurrently(
    tasks: &mut [PartitionTask],
    id: u64,
    due: impl Fn(&PartitionTask) -> bool,
) -> Vec<(&mut PartitionTask, Result<(), TaskError>)> {
    // Tasks with nothing new only record the checkpoint: no thread for
    // them (an idle job would otherwise start one per partition per
    // interval).
    let (mut chosen, idle): (Vec<&mut PartitionTask>, Vec<&mut PartitionTask>) = tasks
        .iter_mut()
        .filter(|t| t.is_transactional() && due(t))
        .partition(|t| t.has_uncommitted());
    let inline = |t: &mut PartitionTask| t.commit_transaction(id);
    let mut done: Vec<(&mut PartitionTask, Result<(), TaskError>)> = idle
        .into_iter()
        .map(|t| {
            let r = inline(t);
            (t, r)
        })
        .collect();
    if chosen.len() <= 1 {
        done.extend(chosen.into_iter().map(|t| {
            let r = inline(t);
            (t, r)
        }));
        return done;
    }
    // Err: no thread could be started; that task then commits here.
    let spawned: Vec<Result<Result<(), TaskError>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = chosen
            .iter_mut()
            .map(|t| {
                std::thread::Builder::new()
                    .name("weir-commit".into())
                    .spawn_scoped(s, move || t.commit_transaction(id))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => Ok(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
                Err(e) => Err(e.to_string()),
            })
            .collect()
    });
    done.extend(chosen.into_iter().zip(spawned).map(|(t, r)| {
        let r = r.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no thread for a concurrent commit; committing on the worker");
            inline(t)
        });
        (t, r)
    }));
    done
}
