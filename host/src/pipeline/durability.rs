//! How a partition task's progress becomes durable: one interface, one
//! implementation per delivery mode, chosen once at start-up.
//!
//! A [`Durability`] gives its task the sink to write through, says what
//! happens at a batch boundary, where the task restarts after a fault, and
//! what the task's part of a checkpoint is:
//!
//! - [`StoreCheckpoints`] (at-least-once, `none`): a capture of the
//!   instance goes to the coordinator, which writes the checkpoint store;
//!   a restart restores the store's latest checkpoint.
//! - [`Transactions`] (exactly-once): the task's state file is written for
//!   its next offset and the offset goes into its worker's transaction; a
//!   restart restores the state recorded for the last committed offset.
//! - [`AutoCommit`] (checkpoints off): every batch opens a ticket that the
//!   sink stamps on its output; offsets commit as output is delivered; a
//!   restart starts from the group's committed offset, state fresh.
//! - [`FinalCommit`] (checkpoints and auto-commit off): nothing per batch;
//!   the end of a bounded job commits.
//!
//! A [`DurabilityFactory`] makes one per task, at start-up, for a
//! partition added to a running job, and in tests (a fake).

use crate::checkpoint::TaskCheckpoint;
use crate::checkpoint::folder::StoreLocation;
use crate::checkpoint::store::{CheckpointError, CheckpointStore};
use crate::checkpoint::transactional::PartitionStateDir;
use crate::config::{Config, DeliveryMode};
use crate::kafka::consumer::{PartitionStart, SourceConsumer};
use crate::kafka::delivery::DeliveryTracker;
use crate::kafka::producer::{KafkaSink, SinkProducer};
use crate::runtime::snapshot::Snapshot;
use crate::runtime::{OutputSink, PluginInstance};
use crate::topic_partition::TopicPartition;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use super::task_error::RestartError;

/// Where a task restarts after a fault: the offset its last durable point
/// reached, and the state recorded with it (`None`: a fresh instance).
pub struct RestorePoint {
    pub offset: i64,
    pub snapshot: Option<Snapshot>,
}

/// A task's part of a checkpoint.
pub enum CheckpointPart {
    /// A capture for the coordinator, which makes the set durable.
    Capture(TaskCheckpoint),
    /// Exactly-once: the state file for `offset` is written (`bytes`); the
    /// worker's transaction commits the offset.
    StateWritten { offset: i64, bytes: u64 },
    /// Nothing to make durable now.
    Nothing,
}

/// How one partition task makes its progress durable.
pub trait Durability: Send {
    /// The sink a (new) instance of the task writes through.
    fn sink(&self) -> Box<dyn OutputSink>;

    /// The producer for records the host sends for the task (dead letters).
    fn producer(&self) -> Arc<SinkProducer>;

    /// A batch (or a tick's output) that leaves the task at `next_offset`
    /// begins. Auto-commit returns the ticket its output carries.
    fn begin_batch(&self, _next_offset: i64) -> Option<usize> {
        None
    }

    /// The batch `begin_batch` opened is processed.
    fn end_batch(&self, _ticket: Option<usize>) {}

    /// Auto-commit: the tracker the batch tickets belong to.
    fn tracker(&self) -> Option<&DeliveryTracker> {
        None
    }

    /// Where the task restarts after a fault (`None`: where it first
    /// started, with a fresh instance).
    fn restore_point(&mut self, tp: &TopicPartition) -> Result<Option<RestorePoint>, RestartError>;

    /// Exactly-once: the worker's transaction was aborted (or the task
    /// joined a running worker); output goes through `producer` from now.
    fn use_producer(&mut self, _producer: &Arc<SinkProducer>) {}

    /// Whether the task read input that its last checkpoint part does not
    /// cover yet (exactly-once: whether a commit would write a state file).
    fn has_uncommitted(&self, _next_offset: i64) -> bool {
        false
    }

    /// The task's part of checkpoint `id`, taken between batches (nothing
    /// without checkpoints).
    fn checkpoint(
        &mut self,
        _id: u64,
        _tp: &TopicPartition,
        _next_offset: i64,
        _instance: &mut PluginInstance,
    ) -> Result<CheckpointPart, CheckpointError> {
        Ok(CheckpointPart::Nothing)
    }

    /// The part [`checkpoint`](Self::checkpoint) returned is durable at
    /// `offset` (exactly-once: the worker's transaction committed).
    fn completed(&mut self, _offset: i64) -> Result<(), CheckpointError> {
        Ok(())
    }
}

/// Why a task's durability could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DurabilityError {
    /// Its state directory could not be opened.
    #[error(transparent)]
    State(#[from] CheckpointError),
    /// Exactly-once, on a worker without a transaction (one that started
    /// without partitions).
    #[error("exactly-once: the worker has no transaction to add the partition to")]
    NoTransaction,
}

/// Makes the [`Durability`] of each task of a job.
pub trait DurabilityFactory: Send + Sync {
    /// The durability of the task over `start`. `transaction` is the
    /// producer of the worker's transaction, under exactly-once.
    fn for_task(
        &self,
        start: &PartitionStart,
        transaction: Option<&Arc<SinkProducer>>,
    ) -> Result<Box<dyn Durability>, DurabilityError>;
}

/// The factory for `mode`: the one place the delivery mode picks how
/// tasks make progress durable.
pub fn factory(
    config: &Config,
    mode: DeliveryMode,
    (writer, location): (&str, &StoreLocation),
    store: Option<CheckpointStore>,
    consumer: &Arc<SourceConsumer>,
    producer: &Arc<SinkProducer>,
) -> Arc<dyn DurabilityFactory> {
    let timeout = config.kafka.connect_timeout;
    let group = config.source.assignment == crate::config::Assignment::Group;
    let states = |shared: Option<&Arc<SinkProducer>>| {
        Arc::new(TransactionsFactory {
            root: location.clone(),
            full_snapshot_every: config.checkpoint.full_snapshot_every,
            writer: writer.to_string(),
            shared: shared.cloned(),
        })
    };
    match (mode, store) {
        (DeliveryMode::Transactional, _) => states(None),
        // Group assignment: per-partition state files keyed by the offset
        // the worker commits to the group (see `OffsetCommit`).
        (DeliveryMode::Checkpointed { .. }, _) if group => states(Some(producer)),
        (DeliveryMode::Checkpointed { .. }, Some(store)) => Arc::new(StoreFactory {
            store,
            producer: producer.clone(),
        }),
        (DeliveryMode::Uncheckpointed { auto_commit: true }, _) => Arc::new(AutoCommitFactory {
            producer: producer.clone(),
            consumer: consumer.clone(),
            timeout,
        }),
        _ => Arc::new(FinalCommitFactory {
            producer: producer.clone(),
        }),
    }
}

/// At-least-once / none: checkpoints in the store.
pub struct StoreCheckpoints {
    store: CheckpointStore,
    producer: Arc<SinkProducer>,
}

impl Durability for StoreCheckpoints {
    fn sink(&self) -> Box<dyn OutputSink> {
        Box::new(KafkaSink::new(self.producer.clone()))
    }

    fn producer(&self) -> Arc<SinkProducer> {
        self.producer.clone()
    }

    fn restore_point(&mut self, tp: &TopicPartition) -> Result<Option<RestorePoint>, RestartError> {
        let latest = self.store.latest()?;
        Ok(latest.and_then(|c| {
            c.partition(tp).map(|p| RestorePoint {
                offset: p.offset,
                snapshot: Some(p.state.clone()),
            })
        }))
    }

    fn checkpoint(
        &mut self,
        id: u64,
        tp: &TopicPartition,
        next_offset: i64,
        instance: &mut PluginInstance,
    ) -> Result<CheckpointPart, CheckpointError> {
        Ok(CheckpointPart::Capture(TaskCheckpoint {
            id,
            tp: tp.clone(),
            offset: next_offset,
            capture: instance.capture(false),
        }))
    }
}

struct StoreFactory {
    store: CheckpointStore,
    producer: Arc<SinkProducer>,
}

impl DurabilityFactory for StoreFactory {
    fn for_task(
        &self,
        _start: &PartitionStart,
        _transaction: Option<&Arc<SinkProducer>>,
    ) -> Result<Box<dyn Durability>, DurabilityError> {
        Ok(Box::new(StoreCheckpoints {
            store: self.store.clone(),
            producer: self.producer.clone(),
        }))
    }
}

/// Exactly-once: the task's part of its worker's Kafka transaction.
pub struct Transactions {
    /// The partition's state files, keyed by offset.
    state: PartitionStateDir,
    /// The offset the last committed transaction reached for the partition,
    /// and who wrote the state for it.
    committed: Option<i64>,
    committed_writer: String,
    /// The worker's transactional producer.
    producer: Arc<SinkProducer>,
    buf: Vec<u8>,
}

impl Durability for Transactions {
    fn sink(&self) -> Box<dyn OutputSink> {
        Box::new(KafkaSink::new(self.producer.clone()))
    }

    fn producer(&self) -> Arc<SinkProducer> {
        self.producer.clone()
    }

    fn restore_point(
        &mut self,
        _tp: &TopicPartition,
    ) -> Result<Option<RestorePoint>, RestartError> {
        // The worker aborted its transaction before (see `roll_back`).
        let Some(offset) = self.committed else {
            return Ok(None);
        };
        let snapshot = self.state.load_from(offset, &self.committed_writer)?;
        Ok(Some(RestorePoint { offset, snapshot }))
    }

    fn use_producer(&mut self, producer: &Arc<SinkProducer>) {
        self.producer = producer.clone();
    }

    fn has_uncommitted(&self, next_offset: i64) -> bool {
        self.committed != Some(next_offset)
    }

    fn checkpoint(
        &mut self,
        _id: u64,
        _tp: &TopicPartition,
        next_offset: i64,
        instance: &mut PluginInstance,
    ) -> Result<CheckpointPart, CheckpointError> {
        if self.committed == Some(next_offset) {
            return Ok(CheckpointPart::Nothing);
        }
        // A delta on top of the last state file, unless the chain must be
        // compacted or does not hold this instance's previous capture.
        let full = self
            .state
            .wants_full(instance.capture_position(), instance.memory_size());
        let capture = instance.capture(full);
        let bytes = self.state.write(next_offset, &capture, &mut self.buf)?;
        tracing::debug!(offset = next_offset, bytes, "state file written");
        Ok(CheckpointPart::StateWritten {
            offset: next_offset,
            bytes,
        })
    }

    fn completed(&mut self, offset: i64) -> Result<(), CheckpointError> {
        self.committed = Some(offset);
        self.committed_writer = self.state.writer().to_string();
        self.state.prune_below(offset)
    }
}

struct TransactionsFactory {
    root: StoreLocation,
    full_snapshot_every: u32,
    /// This process's name on its state files ("" with manual assignment).
    writer: String,
    /// Group assignment, at-least-once: the job's shared producer (there
    /// is no transaction).
    shared: Option<Arc<SinkProducer>>,
}

impl DurabilityFactory for TransactionsFactory {
    fn for_task(
        &self,
        start: &PartitionStart,
        transaction: Option<&Arc<SinkProducer>>,
    ) -> Result<Box<dyn Durability>, DurabilityError> {
        let producer = transaction
            .or(self.shared.as_ref())
            .ok_or(DurabilityError::NoTransaction)?;
        let state = PartitionStateDir::open(&self.root, &start.tp.topic, start.tp.partition)?
            .with_full_snapshot_every(self.full_snapshot_every)
            .with_writer(&self.writer);
        Ok(Box::new(Transactions {
            state,
            committed: start.committed,
            committed_writer: start.committed_writer.clone(),
            producer: producer.clone(),
            buf: Vec::new(),
        }))
    }
}

/// Checkpoints off, auto-commit on: offsets commit as output is delivered.
pub struct AutoCommit {
    tracker: Arc<DeliveryTracker>,
    /// The ticket of the open batch, which the task's sink stamps on every
    /// output.
    ticket: Arc<AtomicUsize>,
    producer: Arc<SinkProducer>,
    consumer: Arc<SourceConsumer>,
    timeout: Duration,
}

impl Durability for AutoCommit {
    fn sink(&self) -> Box<dyn OutputSink> {
        Box::new(KafkaSink::tracked(
            self.producer.clone(),
            self.tracker.clone(),
            self.ticket.clone(),
        ))
    }

    fn producer(&self) -> Arc<SinkProducer> {
        self.producer.clone()
    }

    fn begin_batch(&self, next_offset: i64) -> Option<usize> {
        let t = self.tracker.open(next_offset);
        self.ticket.store(t, Ordering::Relaxed);
        Some(t)
    }

    fn end_batch(&self, ticket: Option<usize>) {
        if let Some(t) = ticket {
            self.tracker.seal(t);
        }
    }

    fn tracker(&self) -> Option<&DeliveryTracker> {
        Some(&self.tracker)
    }

    fn restore_point(&mut self, tp: &TopicPartition) -> Result<Option<RestorePoint>, RestartError> {
        self.tracker.reset();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.topic, tp.partition);
        let committed =
            crate::kafka::consumer::committed_offsets(&self.consumer, &tpl, self.timeout)
                .ok()
                .and_then(|t| {
                    t.find_partition(&tp.topic, tp.partition)
                        .map(|e| e.offset())
                });
        Ok(match committed {
            Some(Offset::Offset(offset)) if offset >= 0 => Some(RestorePoint {
                offset,
                snapshot: None,
            }),
            _ => None,
        })
    }
}

struct AutoCommitFactory {
    producer: Arc<SinkProducer>,
    consumer: Arc<SourceConsumer>,
    timeout: Duration,
}

impl DurabilityFactory for AutoCommitFactory {
    fn for_task(
        &self,
        start: &PartitionStart,
        _transaction: Option<&Arc<SinkProducer>>,
    ) -> Result<Box<dyn Durability>, DurabilityError> {
        let tracker = self.producer.context().trackers.register(
            &start.tp.topic,
            start.tp.partition,
            self.consumer.clone(),
        );
        Ok(Box::new(AutoCommit {
            tracker,
            ticket: Arc::new(AtomicUsize::new(0)),
            producer: self.producer.clone(),
            consumer: self.consumer.clone(),
            timeout: self.timeout,
        }))
    }
}

/// Checkpoints and auto-commit off: only the end of a bounded job commits.
pub struct FinalCommit {
    producer: Arc<SinkProducer>,
}

impl Durability for FinalCommit {
    fn sink(&self) -> Box<dyn OutputSink> {
        Box::new(KafkaSink::new(self.producer.clone()))
    }

    fn producer(&self) -> Arc<SinkProducer> {
        self.producer.clone()
    }

    fn restore_point(
        &mut self,
        _tp: &TopicPartition,
    ) -> Result<Option<RestorePoint>, RestartError> {
        Ok(None)
    }
}

struct FinalCommitFactory {
    producer: Arc<SinkProducer>,
}

impl DurabilityFactory for FinalCommitFactory {
    fn for_task(
        &self,
        _start: &PartitionStart,
        _transaction: Option<&Arc<SinkProducer>>,
    ) -> Result<Box<dyn Durability>, DurabilityError> {
        Ok(Box::new(FinalCommit {
            producer: self.producer.clone(),
        }))
    }
}
