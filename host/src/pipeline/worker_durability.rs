//! A worker's share of durability, when its partitions' progress is made
//! durable per worker rather than by the checkpoint coordinator: under
//! exactly-once its Kafka transaction ([`WorkerCommit`]); with group
//! assignment and at-least-once, an [`OffsetCommit`]: state files, a
//! flush, then the offsets committed to the group.

use super::JobError;
use super::partition_task::PartitionTask;
use super::worker_commit::{self, CommitError, TransactionFailure, WorkerCommit};
use crate::kafka::consumer::{self, SourceConsumer};
use crate::kafka::producer::{self, SinkProducer};
use crate::kafka::transaction::TransactionError;
use crate::metrics::JobMetrics;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a worker makes its tasks' progress durable at a checkpoint.
pub trait WorkerDurability: Send {
    /// The producer the worker's tasks send through: exactly-once, its
    /// transaction's; `None`, the job's shared producer.
    fn producer(&self) -> Option<Arc<SinkProducer>>;

    /// Checkpoint `id` of every task. Returns whether it completed; a
    /// failure that is retried later is `Ok(false)`.
    fn checkpoint(&mut self, tasks: &mut [PartitionTask], id: u64) -> Result<bool, JobError>;

    /// The last checkpoint when the worker ends.
    fn final_commit(&mut self, tasks: &mut [PartitionTask]) -> Result<(), JobError>;

    /// A task failed and restarts: exactly-once rolls its neighbours back.
    fn task_failed(&mut self, _tasks: &mut [PartitionTask]) -> Result<(), JobError> {
        Ok(())
    }

    /// Retries what failed before, once it is due.
    fn retry_if_due(&mut self, _tasks: &mut [PartitionTask]) -> Result<(), JobError> {
        Ok(())
    }
}

impl WorkerDurability for WorkerCommit {
    fn producer(&self) -> Option<Arc<SinkProducer>> {
        Some(WorkerCommit::producer(self))
    }

    fn checkpoint(&mut self, tasks: &mut [PartitionTask], id: u64) -> Result<bool, JobError> {
        WorkerCommit::checkpoint(self, tasks, id)
    }

    fn final_commit(&mut self, tasks: &mut [PartitionTask]) -> Result<(), JobError> {
        WorkerCommit::final_commit(self, tasks)
    }

    fn task_failed(&mut self, tasks: &mut [PartitionTask]) -> Result<(), JobError> {
        WorkerCommit::task_failed(self, tasks)
    }

    fn retry_if_due(&mut self, tasks: &mut [PartitionTask]) -> Result<(), JobError> {
        WorkerCommit::retry_if_due(self, tasks)
    }
}

/// Group assignment, at-least-once: each task's state file for its next
/// offset, then (with `flush`) every output sent before it acknowledged,
/// then the offsets committed to the group, each naming this process's
/// state file in its metadata. The group coordinator refuses the commit of
/// a member that lost its partitions (a zombie), so the committed offset,
/// and with it the state a new owner restores, only moves forward with the
/// partition's owner.
pub struct OffsetCommit {
    pub worker: usize,
    pub producer: Arc<SinkProducer>,
    pub consumer: Arc<SourceConsumer>,
    /// At-least-once: wait for the output before the offsets (`none`: not).
    pub flush: bool,
    pub log_failures_only: bool,
    /// This process's name on its state files.
    pub writer: String,
    pub metrics: Arc<JobMetrics>,
    /// Consecutive failed checkpoints; past `attempts` the worker ends.
    pub failures: u32,
    pub attempts: u32,
}

/// How long a checkpoint's flush may wait for the output before it.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

impl OffsetCommit {
    fn commit(&mut self, tasks: &mut [PartitionTask], id: u64) -> Result<(), CommitError> {
        let started = Instant::now();
        let states = worker_commit::write_states(tasks, id)?;
        let mut offsets = TopicPartitionList::new();
        let mut written = Vec::new();
        let mut bytes = 0;
        for (i, state) in states.into_iter().enumerate() {
            if let Some((next, size)) = state {
                let tp = tasks[i].tp();
                let mut e = offsets.add_partition(&tp.topic, tp.partition);
                e.set_offset(Offset::Offset(next)).expect("a valid offset");
                e.set_metadata(&self.writer);
                written.push((i, next));
                bytes += size;
            }
        }
        if written.is_empty() {
            return Ok(());
        }
        if self.flush {
            producer::flush(&self.producer, FLUSH_TIMEOUT, self.log_failures_only)
                .map_err(|e| CommitError::Transaction(TransactionError::Kafka(e)))?;
        }
        consumer::commit_list(&self.consumer, &offsets)
            .map_err(|e| CommitError::Transaction(TransactionError::Kafka(e)))?;
        for (i, next) in written {
            tasks[i].completed(next);
        }
        self.metrics.checkpoint_completed(started.elapsed(), bytes);
        Ok(())
    }

    fn failure(&self, cause: CommitError) -> JobError {
        Box::new(TransactionFailure {
            worker: self.worker,
            id: format!("offsets of worker {}", self.worker),
            cause,
        })
        .into()
    }
}

impl WorkerDurability for OffsetCommit {
    fn producer(&self) -> Option<Arc<SinkProducer>> {
        None
    }

    fn checkpoint(&mut self, tasks: &mut [PartitionTask], id: u64) -> Result<bool, JobError> {
        match self.commit(tasks, id) {
            Ok(()) => {
                self.failures = 0;
                Ok(true)
            }
            Err(cause) => {
                self.metrics.checkpoints_failed.inc();
                self.failures += 1;
                if self.failures > self.attempts {
                    return Err(self.failure(cause));
                }
                // Output since the last commit may not have been delivered:
                // every task replays from its last committed state.
                tracing::warn!(error = %cause, attempt = self.failures, of = self.attempts, "checkpoint failed; the worker's tasks restart from their last commit");
                for task in tasks.iter_mut() {
                    task.failed(task.undelivered())?;
                }
                Ok(false)
            }
        }
    }

    fn final_commit(&mut self, tasks: &mut [PartitionTask]) -> Result<(), JobError> {
        self.commit(tasks, u64::MAX)
            .map_err(|cause| self.failure(cause))
    }
}
