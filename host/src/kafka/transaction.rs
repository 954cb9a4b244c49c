//! One partition task's Kafka transaction (exactly-once).
//!
//! Each partition task owns a transactional producer with a stable id,
//! `<prefix>-<topic>-<partition>`: a restarted task fences its zombie and
//! aborts the zombie's open transaction in `init_transactions`, and the
//! number of ids is bounded by the number of partitions. At every
//! checkpoint the task commits: snapshot to disk keyed by its next offset,
//! the offset into the transaction, commit, begin the next one.

use super::KafkaError;
use super::consumer::SourceConsumer;
use super::producer::{DeliveryContext, SinkProducer};
use crate::checkpoint::failpoint;
use crate::checkpoint::store::CheckpointError;
use crate::checkpoint::transactional::PartitionStateDir;
use crate::config::Config;
use crate::runtime::snapshot::Snapshot;
use rdkafka::consumer::{Consumer, ConsumerGroupMetadata};

use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

/// A transaction step failed.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    State(#[from] CheckpointError),
}

fn request(what: &str) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaError + '_ {
    move |cause| KafkaError::Request {
        what: what.to_string(),
        cause,
    }
}

/// The transactional id of a partition task.
pub fn transactional_id(prefix: &str, topic: &str, partition: i32) -> String {
    format!("{prefix}-{topic}-{partition}")
}

/// The consumer group that holds a partition task's transactional offset.
///
/// One group per partition task rather than one per job: each task
/// commits its offset in its own transaction, and a group per task keeps
/// those commits independent of each other. (Measured with Tansu: with
/// four transactional producers committing offsets to one group, the
/// group's committed offsets went stale and stayed stale after fencing,
/// e.g. 5120 for a partition committed up to 9216; Kafka itself does not
/// need this, but it is valid Kafka usage and costs nothing.)
pub fn offsets_group(group_id: &str, topic: &str, partition: i32) -> String {
    format!("{group_id}.{topic}.{partition}")
}

/// A partition task's transactional producer and state directory.
pub struct PartitionTransaction {
    producer: Arc<SinkProducer>,
    state: PartitionStateDir,
    group: ConsumerGroupMetadata,
    topic: String,
    partition: i32,
    timeout: Duration,
    buf: Vec<u8>,
    /// The offset last committed in a transaction.
    committed: Option<i64>,
}

impl PartitionTransaction {
    /// Creates the producer, fences any zombie with the same id (aborting
    /// its open transaction), and begins the first transaction.
    ///
    /// Then reads the partition's committed offset: only after the fencing
    /// is it stable (an open zombie transaction could still commit it).
    pub fn start(
        config: &Config,
        bootstrap: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Self, TransactionError> {
        let id = transactional_id(&config.sink.transactional_id_prefix, topic, partition);
        let mut cc = super::base_client_config(&config.kafka, bootstrap);
        cc.set("transactional.id", &id);
        if let Some(retries) = config.sink.retries {
            cc.set("message.send.max.retries", retries.to_string());
        }
        for (k, v) in &config.kafka.producer_options {
            cc.set(k, v);
        }
        let producer: SinkProducer = cc
            .create_with_context(DeliveryContext::default())
            .map_err(|cause| KafkaError::Client {
                role: "transactional producer",
                cause,
            })?;
        let timeout = config.kafka.connect_timeout.max(Duration::from_secs(30));
        producer
            .init_transactions(timeout)
            .map_err(request(&format!("init_transactions for {id}")))?;
        producer
            .begin_transaction()
            .map_err(request("begin_transaction"))?;
        let group_name = offsets_group(&config.kafka.group_id, topic, partition);
        let offsets: SourceConsumer = super::base_client_config(&config.kafka, bootstrap)
            .set("group.id", &group_name)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_uncommitted")
            .create_with_context(super::consumer::SourceContext)
            .map_err(|cause| KafkaError::Client {
                role: "offsets consumer",
                cause,
            })?;
        let group = offsets.group_metadata().ok_or_else(|| KafkaError::Option {
            reason: format!("no consumer group metadata for {group_name}"),
        })?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let committed = match offsets
            .committed_offsets(tpl, timeout)
            .map_err(request(&format!("committed offset of {group_name}")))?
            .find_partition(topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) if o >= 0 => Some(o),
            _ => None,
        };
        let state = PartitionStateDir::open(&config.checkpoint_dir(), topic, partition)?;
        tracing::info!(transactional_id = %id, "transactional producer ready");
        Ok(PartitionTransaction {
            producer: Arc::new(producer),
            state,
            group,
            topic: topic.to_string(),
            partition,
            timeout,
            buf: Vec::new(),
            committed,
        })
    }

    /// The producer the task's sink must use.
    pub fn producer(&self) -> Arc<SinkProducer> {
        self.producer.clone()
    }

    /// The state directory (for restore).
    pub fn state(&self) -> &PartitionStateDir {
        &self.state
    }

    /// Commits everything produced so far together with `next_offset` and
    /// the state it reflects. Returns the snapshot's size in bytes.
    pub fn commit(&mut self, next_offset: i64, snapshot: &Snapshot) -> Result<u64, TransactionError> {
        let bytes = self.state.write(next_offset, snapshot, &mut self.buf)?;
        failpoint::hit(failpoint::AFTER_SNAPSHOT_BEFORE_COMMIT);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(next_offset))
            .expect("valid offset");
        let result = self
            .producer
            .send_offsets_to_transaction(&tpl, &self.group, self.timeout)
            .map_err(request("send_offsets_to_transaction"))
            .and_then(|()| {
                self.producer
                    .commit_transaction(self.timeout)
                    .map_err(request("commit_transaction"))
            });
        if let Err(e) = result {
            // Whatever the cause, the open transaction must not become
            // visible: abort it (best effort; a fenced producer cannot).
            let _ = self.producer.abort_transaction(self.timeout);
            return Err(e.into());
        }
        failpoint::hit(failpoint::AFTER_COMMIT);
        self.committed = Some(next_offset);
        self.state.prune_below(next_offset)?;
        self.producer
            .begin_transaction()
            .map_err(request("begin_transaction"))?;
        Ok(bytes)
    }

    /// The offset last committed (at start: the committed offset read after
    /// fencing), if any.
    pub fn committed(&self) -> Option<i64> {
        self.committed
    }
}
