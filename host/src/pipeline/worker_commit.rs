//! Exactly-once for a worker: one Kafka transaction over all its tasks.
//!
//! A checkpoint writes each task's state file (keyed by the task's next
//! offset), then sends every task's offset into the worker's transaction
//! and commits it once: one commit per worker per checkpoint, however many
//! partitions the worker runs. A transaction cannot be committed in part,
//! so whatever makes one task restart (a plugin fault, refused output)
//! aborts the worker's transaction, and every task of the worker rolls
//! back to its last commit with it.

use super::JobError;
use super::durability::CheckpointPart;
use super::partition_task::PartitionTask;
use crate::checkpoint::failpoint;
use crate::checkpoint::store::CheckpointError;
use crate::kafka::transaction::{TransactionError, WorkerTransaction};
use crate::metrics::JobMetrics;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A worker's commit failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// A task's state file could not be written.
    #[error("writing the state of {topic}/{partition}: {cause}")]
    State {
        topic: String,
        partition: i32,
        cause: CheckpointError,
    },
    /// A transactional call failed.
    #[error(transparent)]
    Transaction(#[from] TransactionError),
}

/// A worker's transaction failed for good: fenced, or out of attempts.
#[derive(Debug, thiserror::Error)]
#[error("worker {worker} (transactional id {id}): {cause}")]
pub struct TransactionFailure {
    pub worker: usize,
    pub id: String,
    pub cause: CommitError,
}

/// Most threads writing one worker's state files at a commit.
const STATE_WRITERS: usize = 4;

/// Writes every task's state file for checkpoint `id` (see
/// [`PartitionTask::checkpoint`]); per task, its next offset and the
/// file's size, or `None` when it has nothing to commit.
///
/// The worker waits for this at every commit (no record may be produced
/// into the transaction between a state and its commit), and it is most of
/// the wait: measured at 16 partitions per worker, 15–45 ms of deltas and
/// 110–125 ms for the first full states against 3–10 ms for the
/// transaction calls. Each file is captured, encoded and fsynced on its
/// own, so the tasks are split over a few scoped threads.
pub(super) fn write_states(
    tasks: &mut [PartitionTask],
    id: u64,
) -> Result<Vec<Option<(i64, u64)>>, CommitError> {
    let write = |t: &mut PartitionTask| match t.checkpoint(id) {
        Ok(CheckpointPart::StateWritten { offset, bytes }) => Ok(Some((offset, bytes))),
        Ok(_) => Ok(None),
        Err(cause) => Err(CommitError::State {
            topic: t.tp().topic.clone(),
            partition: t.tp().partition,
            cause,
        }),
    };
    // Tasks with nothing new only record the checkpoint: no thread for
    // them (an idle worker would otherwise start threads every interval).
    if tasks.iter().filter(|t| t.has_uncommitted()).count() <= 1 {
        return tasks.iter_mut().map(write).collect();
    }
    let per_thread = tasks.len().div_ceil(STATE_WRITERS);
    std::thread::scope(|s| {
        let handles: Vec<_> = tasks
            .chunks_mut(per_thread)
            .map(|chunk| s.spawn(move || chunk.iter_mut().map(write).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::new();
        for h in handles {
            let results = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            for r in results {
                out.push(r?);
            }
        }
        Ok(out)
    })
}

/// A worker's transaction and its failure bookkeeping.
pub struct WorkerCommit {
    txn: WorkerTransaction,
    worker: usize,
    /// Consecutive failed commits or rollbacks.
    failures: u32,
    attempts: u32,
    backoff: Duration,
    /// A rollback whose abort failed is tried again then; the tasks wait.
    pending: Option<Instant>,
    /// Group assignment: this process's name on its state files, recorded
    /// in each committed offset's metadata ("" otherwise).
    writer: String,
    metrics: Arc<JobMetrics>,
}

impl WorkerCommit {
    /// `attempts` consecutive failures are retried, after `backoff`
    /// doubling each time; one more ends the worker.
    pub fn new(
        txn: WorkerTransaction,
        worker: usize,
        (attempts, backoff): (u32, Duration),
        metrics: Arc<JobMetrics>,
    ) -> Self {
        WorkerCommit {
            txn,
            worker,
            failures: 0,
            attempts,
            backoff,
            pending: None,
            metrics,
            writer: String::new(),
        }
    }

    /// Records `writer` in the metadata of every committed offset.
    pub fn with_writer(self, writer: &str) -> Self {
        WorkerCommit {
            writer: writer.to_string(),
            ..self
        }
    }

    /// The transaction's producer.
    pub fn producer(&self) -> Arc<crate::kafka::producer::SinkProducer> {
        self.txn.producer()
    }

    /// Checkpoint `id`: commits every task's progress since the last one.
    /// Returns whether it committed (or had nothing to commit). A failure
    /// rolls the tasks back (and they retry after a backoff); only fencing
    /// or running out of attempts is returned as an error.
    pub fn checkpoint(&mut self, tasks: &mut [PartitionTask], id: u64) -> Result<bool, JobError> {
        if self.pending.is_some() {
            // The transaction is not open until the rollback succeeds.
            return Ok(false);
        }
        match self.commit(tasks, id) {
            Ok(()) => {
                self.failures = 0;
                Ok(true)
            }
            Err(cause) => self.failed(tasks, cause).map(|()| false),
        }
    }

    /// The last commit when the worker ends: any failure is returned.
    pub fn final_commit(&mut self, tasks: &mut [PartitionTask]) -> Result<(), JobError> {
        if self.pending.is_some() {
            return Err(
                self.failure(CommitError::Transaction(TransactionError::Kafka(
                    crate::kafka::KafkaError::Option {
                        reason: "the worker's transaction was still being rolled back".into(),
                    },
                ))),
            );
        }
        self.commit(tasks, u64::MAX)
            .map_err(|cause| self.failure(cause))
    }

    fn commit(&mut self, tasks: &mut [PartitionTask], id: u64) -> Result<(), CommitError> {
        let started = Instant::now();
        let mut offsets = TopicPartitionList::new();
        let mut written = Vec::new();
        let mut bytes = 0;
        // The producer drains while the state files are written: a commit
        // waits for every record sent in its transaction to be delivered
        // (measured: up to 100 ms for a full producer queue), and nothing
        // is sent meanwhile, so the two waits overlap instead of adding up.
        // The drain stops shortly after the files are written: the commit
        // waits for any rest itself, and fails properly if the transaction
        // did.
        let txn = &self.txn;
        let states = if tasks.iter().any(PartitionTask::has_uncommitted) {
            let written = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|s| {
                let drain = s.spawn(|| txn.drain(&written));
                let states = write_states(tasks, id);
                written.store(true, std::sync::atomic::Ordering::Release);
                let _ = drain.join();
                states
            })?
        } else {
            write_states(tasks, id)?
        };
        for (i, state) in states.into_iter().enumerate() {
            if let Some((next, size)) = state {
                let tp = tasks[i].tp();
                let mut e = offsets.add_partition(&tp.topic, tp.partition);
                e.set_offset(Offset::Offset(next)).expect("a valid offset");
                if !self.writer.is_empty() {
                    e.set_metadata(&self.writer);
                }
                written.push((i, next));
                bytes += size;
            }
        }
        if written.is_empty() {
            return Ok(());
        }
        let states_written = started.elapsed();
        failpoint::hit(failpoint::AFTER_SNAPSHOT_BEFORE_COMMIT);
        self.txn.commit(&offsets)?;
        for (i, next) in written {
            tasks[i].completed(next);
        }
        self.metrics.transactions_committed.inc();
        self.metrics.checkpoint_completed(started.elapsed(), bytes);
        tracing::debug!(
            partitions = offsets.count(),
            bytes,
            states_ms = states_written.as_secs_f64() * 1e3,
            commit_ms = (started.elapsed() - states_written).as_secs_f64() * 1e3,
            "transaction committed"
        );
        Ok(())
    }

    /// A task of the worker failed and will restart: abort the
    /// transaction, so nothing the tasks sent since the last commit
    /// becomes visible, and roll every task back to its last commit.
    pub fn task_failed(&mut self, tasks: &mut [PartitionTask]) -> Result<(), JobError> {
        self.roll_back(tasks, Instant::now())
    }

    /// Tries a rollback whose abort failed again, once it is due.
    pub fn retry_if_due(&mut self, tasks: &mut [PartitionTask]) -> Result<(), JobError> {
        match self.pending {
            Some(at) if Instant::now() >= at => self.roll_back(tasks, at),
            _ => Ok(()),
        }
    }

    /// Aborts the transaction and begins the next; every task restarts
    /// from its last commit, not before `at`. If the abort itself fails,
    /// it counts as a failure and is tried again after the backoff, the
    /// tasks waiting until then.
    fn roll_back(&mut self, tasks: &mut [PartitionTask], at: Instant) -> Result<(), JobError> {
        match self.txn.abort_and_begin() {
            Ok(producer) => {
                self.pending = None;
                self.metrics.transactions_aborted.inc();
                let partitions: Vec<String> = tasks.iter().map(|t| t.tp().to_string()).collect();
                tracing::warn!(
                    transactional_id = %self.txn.id(),
                    partitions = %partitions.join(","),
                    "the worker's transaction was aborted; all its partitions restart from their last commit"
                );
                for t in tasks {
                    t.roll_back(&producer, at);
                }
                Ok(())
            }
            Err(e) => {
                let retry_at = self.count_failure(e.into())?;
                self.pending = Some(retry_at);
                // The tasks must not send into a transaction that is not
                // open: they wait at least until the rollback is retried.
                let producer = self.txn.producer();
                for t in tasks {
                    t.roll_back(&producer, retry_at + Duration::from_millis(1));
                }
                Ok(())
            }
        }
    }

    /// A commit failed: the tasks roll back and wait for the backoff.
    fn failed(&mut self, tasks: &mut [PartitionTask], cause: CommitError) -> Result<(), JobError> {
        let at = self.count_failure(cause)?;
        self.roll_back(tasks, at)
    }

    /// Counts a failed commit or abort. Returns when to go on (after a
    /// backoff doubling with each consecutive failure), or the error that
    /// ends the worker: fencing, or no attempts left.
    fn count_failure(&mut self, cause: CommitError) -> Result<Instant, JobError> {
        self.metrics.checkpoints_failed.inc();
        self.failures += 1;
        let fenced = matches!(
            cause,
            CommitError::Transaction(TransactionError::Fenced { .. })
        );
        if fenced || self.failures > self.attempts {
            // Fenced: another process owns the id now, and a new producer
            // would fence it in turn. Stop.
            return Err(self.failure(cause));
        }
        let backoff = self.backoff * 2u32.saturating_pow(self.failures - 1);
        tracing::warn!(
            transactional_id = %self.txn.id(),
            error = %cause,
            attempt = self.failures,
            of = self.attempts,
            backoff_ms = backoff.as_millis() as u64,
            "exactly-once commit or abort failed; the worker's tasks restart from their last commit after the backoff"
        );
        Ok(Instant::now() + backoff)
    }

    fn failure(&self, cause: CommitError) -> JobError {
        Box::new(TransactionFailure {
            worker: self.worker,
            id: self.txn.id().to_string(),
            cause,
        })
        .into()
    }
}
