//! A worker: one OS thread that runs its partition tasks round-robin.
//!
//! Plugin calls are CPU work, so they run here and never on the async
//! reactor. A worker never blocks on one partition while another has data:
//! it polls every task without waiting and only waits (briefly, on one
//! queue) when a whole round found nothing.
//!
//! Partitions come and go between rounds, by [`WorkerCommand`]: `Adopt`
//! builds a task here (instantiating and restoring are CPU work too) and
//! runs it from then on; `Release` makes the partition's progress durable
//! and lets it go. Start-up builds its tasks with the same factory before
//! the workers start.

use super::JobError;
use super::durability::CheckpointPart;
use super::partition_task::{PartitionTask, Step};
use super::plan::PlanEntry;
use super::status::TaskStats;
use super::task_factory::TaskFactory;
use super::worker_durability::WorkerDurability;
use crate::checkpoint::{CheckpointTrigger, TaskCheckpoint};
use crate::kafka::consumer::SourceQueue;
use crate::runtime::snapshot::Snapshot;
use crate::topic_partition::{Position, TopicPartition};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// How long an idle worker waits on one queue before the next round.
const IDLE_WAIT: Duration = Duration::from_millis(5);

/// How long a worker without partitions waits for a command per round.
const NO_TASKS_WAIT: Duration = Duration::from_millis(50);

/// A worker and the tasks assigned to it.
pub struct Worker {
    pub id: usize,
    pub tasks: Vec<PartitionTask>,
    /// Exactly-once, or group assignment: how the worker makes its tasks'
    /// progress durable (its transaction; its offset commits). `None`: the
    /// checkpoint coordinator does.
    pub commit: Option<Box<dyn WorkerDurability>>,
    /// Builds the tasks the worker adopts.
    pub factory: Arc<TaskFactory>,
    /// A bounded job's worker ends once all its tasks have finished; an
    /// unbounded job's worker waits for partitions when it has none.
    pub bounded: bool,
}

/// What the job asks of a running worker, between two rounds.
pub enum WorkerCommand {
    /// Build this partition's task and run it.
    Adopt(Box<Adoption>),
    /// Make the partition's progress durable and let it go.
    Release {
        tp: TopicPartition,
        reply: tokio::sync::oneshot::Sender<Released>,
    },
}

/// A partition for a worker: its plan entry, its queue (split off before
/// the partition was assigned), the state a checkpoint recorded for it
/// (`StateOrigin::Checkpoint`), and the stats its task reports into.
pub struct Adoption {
    pub entry: PlanEntry,
    pub queue: SourceQueue,
    pub snapshot: Option<Snapshot>,
    pub stats: Arc<TaskStats>,
}

/// A partition a worker let go.
pub struct Released {
    pub tp: TopicPartition,
    /// Its next offset when it left (`None`: the worker did not run it).
    pub position: Option<i64>,
    /// With the checkpoint store: its final state (a full capture).
    pub final_state: Option<TaskCheckpoint>,
    /// The commit before it left failed; its progress since the last
    /// commit is not durable (its next owner replays it).
    pub error: Option<JobError>,
}

/// How a worker talks to the checkpoint coordinator.
#[derive(Clone)]
pub struct CheckpointLink {
    pub trigger: Arc<CheckpointTrigger>,
    pub answers: tokio::sync::mpsc::UnboundedSender<TaskCheckpoint>,
    /// Workers that commit themselves (exactly-once; group assignment):
    /// `(worker, checkpoint id)` once the worker committed that checkpoint.
    pub committed: tokio::sync::mpsc::UnboundedSender<(usize, u64)>,
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

/// How a worker ended.
pub struct WorkerExit {
    pub id: usize,
    pub positions: Vec<Position>,
    pub error: Option<JobError>,
    /// With checkpoints on and no error: each task's final state.
    pub finals: Vec<TaskCheckpoint>,
    /// A worker that commits itself: its final commit succeeded.
    pub final_committed: bool,
}

/// A worker's pacing between rounds.
#[derive(Default)]
struct Pace {
    /// The last round found nothing.
    idle: bool,
    /// Which task's queue the next idle round waits on.
    next_wait: usize,
    /// The last `CheckpointLink::restarts` acted on.
    restarts_seen: u64,
}

impl Worker {
    /// Runs until every task is finished (bounded jobs), `stop` is set, or a
    /// task fails.
    pub fn run(
        mut self,
        stop: Arc<AtomicBool>,
        link: Option<CheckpointLink>,
        commands: Receiver<WorkerCommand>,
    ) -> WorkerExit {
        let _span = tracing::info_span!("worker", id = self.id).entered();
        let link = link.as_ref();
        let mut pace = Pace::default();
        let error = loop {
            if stop.load(Ordering::Relaxed) {
                break None;
            }
            if let Err(e) = self.between_rounds(&commands, link, &stop, &mut pace) {
                break Some(e);
            }
            match self.round(&stop, &mut pace) {
                Err(e) => break Some(e),
                // Every task finished (bounded job), or this worker owns
                // no partition (more workers than partitions).
                Ok(0) if self.bounded => break None,
                Ok(_) => {}
            }
        };
        self.exit(error, link)
    }

    /// Commands, restarts asked by the job, a rollback to retry, and the
    /// answer to a checkpoint request: everything between two rounds.
    fn between_rounds(
        &mut self,
        commands: &Receiver<WorkerCommand>,
        link: Option<&CheckpointLink>,
        stop: &AtomicBool,
        pace: &mut Pace,
    ) -> Result<(), JobError> {
        self.take_commands(commands, link)?;
        if let Some(link) = link {
            let wanted = link.restarts.load(Ordering::Relaxed);
            if wanted > pace.restarts_seen {
                pace.restarts_seen = wanted;
                for task in &mut self.tasks {
                    task.failed(task.undelivered())?;
                }
            }
        }
        if let Some(commit) = &mut self.commit {
            commit.retry_if_due(&mut self.tasks)?;
        }
        // Answer a checkpoint request between batches. (Ending, a clean
        // stop commits at exit; a failed job starts no other commit.)
        match link {
            Some(link) if !stop.load(Ordering::Relaxed) => self.checkpoint(link),
            _ => Ok(()),
        }
    }

    /// Carries out the commands waiting (a worker without tasks waits a
    /// little for one).
    fn take_commands(
        &mut self,
        commands: &Receiver<WorkerCommand>,
        link: Option<&CheckpointLink>,
    ) -> Result<(), JobError> {
        let mut wait = if self.tasks.is_empty() && !self.bounded {
            NO_TASKS_WAIT
        } else {
            Duration::ZERO
        };
        loop {
            let command = match commands.recv_timeout(wait) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return Ok(()),
            };
            wait = Duration::ZERO;
            match command {
                WorkerCommand::Adopt(a) => self.adopt(*a)?,
                WorkerCommand::Release { tp, reply } => {
                    let _ = reply.send(self.release(tp, link));
                }
            }
        }
    }

    /// Builds an adopted partition's task (restoring its state) and runs
    /// it from the next round.
    fn adopt(&mut self, a: Adoption) -> Result<(), JobError> {
        let producer = self.commit.as_ref().and_then(|c| c.producer());
        let task = self
            .factory
            .build(&a.entry, a.queue, a.snapshot, producer.as_ref(), a.stats)
            .map_err(|e| self.factory.job_error(e, &a.entry))?;
        tracing::debug!(partition = %a.entry.start.tp, start = a.entry.start.start, "partition adopted");
        self.tasks.push(task);
        Ok(())
    }

    /// Lets a partition go: a task waiting for a restart is restarted
    /// first (back to its last durable point); exactly-once commits the
    /// worker's transaction, the checkpoint store gets the final state.
    fn release(&mut self, tp: TopicPartition, link: Option<&CheckpointLink>) -> Released {
        let mut released = Released {
            tp,
            position: None,
            final_state: None,
            error: None,
        };
        let Some(i) = self.tasks.iter().position(|t| t.tp() == &released.tp) else {
            return released;
        };
        if self.tasks[i].is_waiting()
            && let Err(e) = self.tasks[i].restart_now()
        {
            released.error = Some(e.into());
        }
        match &mut self.commit {
            Some(commit) if released.error.is_none() => {
                let id = link.map_or(0, |l| l.trigger.requested());
                if let Err(e) = commit.checkpoint(&mut self.tasks, id) {
                    released.error = Some(e);
                }
            }
            None if link.is_some() && released.error.is_none() => {
                released.final_state = Some(self.tasks[i].final_checkpoint());
            }
            _ => {}
        }
        let task = self.tasks.remove(i);
        released.position = Some(task.position());
        tracing::debug!(partition = %released.tp, position = task.position(), "partition released");
        released
    }

    /// One round over the tasks: each steps once, or restarts if its
    /// backoff has passed. Returns how many tasks are still open.
    fn round(&mut self, stop: &AtomicBool, pace: &mut Pace) -> Result<usize, JobError> {
        let (mut progressed, mut open, mut rolled_back) = (false, 0, false);
        let n = self.tasks.len().max(1);
        for (i, task) in self.tasks.iter_mut().enumerate() {
            let wait = if pace.idle && i == pace.next_wait % n {
                IDLE_WAIT
            } else {
                Duration::ZERO
            };
            let result = if task.is_waiting() {
                // A failed task restarts after its backoff; the others keep
                // running meanwhile. A stopping worker starts no restart.
                open += 1;
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                task.restart_if_due().map(|_| ())
            } else {
                match task.step(wait) {
                    Ok(Step::Processed(_)) => {
                        progressed = true;
                        open += 1;
                        Ok(())
                    }
                    Ok(Step::Idle) => {
                        open += 1;
                        Ok(())
                    }
                    Ok(Step::Finished) => Ok(()),
                    Err(e) => {
                        open += 1;
                        Err(e)
                    }
                }
            };
            if let Err(e) = result {
                task.failed(e)?;
                rolled_back = true;
            }
        }
        // Exactly-once: a task that restarts takes the worker's
        // transaction, and so its neighbours' progress, with it.
        if rolled_back && let Some(commit) = &mut self.commit {
            commit.task_failed(&mut self.tasks)?;
        }
        pace.idle = !progressed;
        if pace.idle {
            pace.next_wait += 1;
        }
        Ok(open)
    }

    /// The worker's report: positions, and (no failure) the final commit
    /// or every task's final state.
    fn exit(mut self, error: Option<JobError>, link: Option<&CheckpointLink>) -> WorkerExit {
        let positions = self
            .tasks
            .iter()
            .map(|t| (t.tp().clone(), t.position()))
            .collect();
        let mut exit = WorkerExit {
            id: self.id,
            positions,
            error,
            finals: Vec::new(),
            final_committed: false,
        };
        let clean = link.is_some_and(|l| !l.failing.load(Ordering::Relaxed));
        if exit.error.is_some() || !clean {
            return exit;
        }
        match &mut self.commit {
            // The last transaction commits everything processed.
            Some(commit) => match commit.final_commit(&mut self.tasks) {
                Ok(()) => exit.final_committed = true,
                Err(e) => exit.error = Some(e),
            },
            None => {
                exit.finals = self
                    .tasks
                    .iter_mut()
                    .map(|t| t.final_checkpoint())
                    .collect()
            }
        }
        exit
    }

    /// Answers a checkpoint request: each task's capture to the
    /// coordinator, or (exactly-once) the worker's transaction committed.
    fn checkpoint(&mut self, link: &CheckpointLink) -> Result<(), JobError> {
        let requested = link.trigger.requested();
        let due = |t: &PartitionTask| t.checkpointed() < requested && !t.is_waiting();
        if !self.tasks.iter().any(due) {
            return Ok(());
        }
        match &mut self.commit {
            Some(commit) => {
                if commit.checkpoint(&mut self.tasks, requested)? {
                    let _ = link.committed.send((self.id, requested));
                }
            }
            None => {
                for task in self.tasks.iter_mut().filter(|t| due(t)) {
                    if let CheckpointPart::Capture(tc) = task.checkpoint(requested)? {
                        let _ = link.answers.send(tc);
                    }
                }
            }
        }
        Ok(())
    }
}
