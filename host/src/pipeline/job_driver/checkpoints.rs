//! The checkpoint traffic of the running job: requests to the workers,
//! their answers, and the persistence of complete sets off the reactor.

use super::ticker;
use crate::checkpoint::coordinator::{self, CheckpointStats, Coordinator};
use crate::checkpoint::{CheckpointStore, CheckpointTrigger, TaskCheckpoint};
use crate::config::{Config, DeliveryMode};
use crate::kafka::consumer::SourceConsumer;
use crate::kafka::producer::SinkProducer;
use crate::kafka::{consumer, producer};
use crate::pipeline::startup::Prepared;
use crate::pipeline::{FINAL_FLUSH, JobError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A checkpoint being made durable off the reactor.
pub(super) type Persisting = JoinHandle<Result<CheckpointStats, JobError>>;

/// Makes a set of task checkpoints durable: flush (when the mode asks for
/// it), state files and metadata, then the offset commit.
#[derive(Clone)]
pub(super) struct Persister {
    pub(super) store: CheckpointStore,
    pub(super) producer: Arc<SinkProducer>,
    pub(super) consumer: Arc<SourceConsumer>,
    pub(super) flush: bool,
    pub(super) log_failures_only: bool,
    pub(super) commit: bool,
}

impl Persister {
    /// Persists checkpoint `id` on a blocking thread.
    pub(super) fn spawn(&self, id: u64, align: Duration, parts: Vec<TaskCheckpoint>) -> Persisting {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            coordinator::complete::<JobError>(
                &this.store,
                id,
                align,
                parts,
                || {
                    if this.flush {
                        producer::flush(&this.producer, FINAL_FLUSH, this.log_failures_only)?;
                    }
                    Ok(())
                },
                |positions| {
                    if this.commit {
                        consumer::commit(&this.consumer, positions)?;
                    }
                    Ok(())
                },
            )
        })
    }
}

/// The checkpoint traffic: requests to the workers, their answers, the
/// persistence of complete sets.
pub(super) struct Checkpoints {
    pub(super) coordinator: Coordinator,
    pub(super) trigger: Arc<CheckpointTrigger>,
    /// Raised when a checkpoint fails because output was not delivered:
    /// every task then restarts from the last complete checkpoint.
    pub(super) restarts: Arc<AtomicU64>,
    /// The checkpoint store's persister (checkpoints on, not exactly-once).
    pub(super) persister: Option<Persister>,
    pub(super) persisting: Option<Persisting>,
    /// Exactly-once: the id of the last commit requested of the workers.
    pub(super) eos_id: u64,
    /// Workers that commit themselves (exactly-once; group assignment)
    /// and have partitions, and the last
    /// checkpoint each committed.
    pub(super) eos_workers: BTreeMap<usize, u64>,
    /// The last checkpoint every such worker has committed.
    pub(super) eos_complete: u64,
    /// Checkpoints completed (exactly-once: committed by every worker).
    pub(super) completed: u64,
    pub(super) last: Option<CheckpointStats>,
    /// Delivery failures since the last complete checkpoint.
    pub(super) failed_in_a_row: u32,
    /// Every checkpoint interval (`None`: checkpoints off).
    pub(super) ticker: Option<tokio::time::Interval>,
}

impl Checkpoints {
    /// The checkpoint traffic of a prepared job: numbering continues after
    /// the store's newest checkpoint; exactly-once waits for every worker
    /// that has a transaction and partitions.
    pub(super) fn new(
        config: &Config,
        mode: DeliveryMode,
        prepared: &Prepared,
    ) -> Result<Self, JobError> {
        Ok(Checkpoints {
            coordinator: Coordinator::new(prepared.all_stats.len(), next_checkpoint_id(prepared)?),
            trigger: Arc::new(CheckpointTrigger::default()),
            restarts: Arc::new(AtomicU64::new(0)),
            persister: prepared.store.clone().map(|store| Persister {
                store,
                producer: prepared.producer.clone(),
                consumer: prepared.consumer.clone(),
                flush: mode.flushes_on_checkpoint(),
                log_failures_only: config.sink.log_failures_only,
                commit: config.checkpoint.commit_offsets_on_checkpoint,
            }),
            persisting: None,
            eos_id: 0,
            eos_workers: prepared
                .workers
                .iter()
                .filter(|w| w.commit.is_some() && !w.tasks.is_empty())
                .map(|w| (w.id, 0))
                .collect(),
            eos_complete: 0,
            completed: 0,
            last: None,
            failed_in_a_row: 0,
            ticker: ticker(mode.checkpoints().then_some(config.checkpoint.interval)),
        })
    }

    /// Starts persisting a complete set, if one came and none is under way.
    pub(super) fn persist(&mut self, set: Option<(u64, Duration, Vec<TaskCheckpoint>)>) {
        if let (Some((id, align, parts)), None, Some(p)) = (set, &self.persisting, &self.persister)
        {
            self.persisting = Some(p.spawn(id, align, parts));
        }
    }
}

/// Waits for the checkpoint under way, or forever without one.
pub(super) async fn persisted(
    persisting: &mut Option<Persisting>,
) -> Result<Result<CheckpointStats, JobError>, tokio::task::JoinError> {
    match persisting {
        Some(p) => p.await,
        None => std::future::pending().await,
    }
}

/// The id the next checkpoint takes.
fn next_checkpoint_id(prepared: &Prepared) -> Result<u64, JobError> {
    Ok(match &prepared.store {
        Some(s) => s.next_id()?,
        None => 1,
    })
}
