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
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::BaseRecord;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
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

/// The progress-topic partition a transactional id writes to.
pub fn progress_partition(transactional_id: &str, partitions: i32) -> i32 {
    let h = crate::pipeline::assignment::java_string_hash(transactional_id) & 0x7fff_ffff;
    h % partitions.max(1)
}

/// Reads every task's committed progress (transactional id → next offset)
/// from the progress topic: the last committed record per key, through
/// the log-level read_committed view (see `kafka::log_reader`).
pub fn read_progress(
    consumer: &SourceConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<HashMap<String, i64>, KafkaError> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(request(&format!("metadata of progress topic {topic}")))?;
    let brokers: HashMap<i32, String> = md
        .brokers()
        .iter()
        .map(|b| (b.id(), format!("{}:{}", b.host(), b.port())))
        .collect();
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| KafkaError::MissingTopic {
            role: "progress (sink.progress_topic)",
            topic: topic.to_string(),
            detail: None,
        })?;
    let mut progress = HashMap::new();
    for p in t.partitions() {
        let address = brokers.get(&p.leader()).ok_or_else(|| KafkaError::Option {
            reason: format!("no leader for {topic}/{}", p.id()),
        })?;
        let log = super::log_reader::read_partition(address, topic, p.id()).map_err(|e| {
            KafkaError::Option {
                reason: e.to_string(),
            }
        })?;
        for r in log.visible {
            let (Some(k), Some(v)) = (r.key, r.value) else {
                continue;
            };
            let key = String::from_utf8_lossy(&k).into_owned();
            if let Some(offset) = std::str::from_utf8(&v).ok().and_then(|v| v.parse().ok()) {
                progress.insert(key, offset);
            }
        }
    }
    Ok(progress)
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
    /// The transactional id: the key of this task's progress records.
    id: String,
    progress_topic: String,
    progress_partition: i32,
}

impl PartitionTransaction {
    /// Creates the producer, fences any zombie with the same id (aborting
    /// its open transaction), and begins the first transaction.
    ///
    /// Fence every task before reading the progress topic: only then can no
    /// zombie transaction still commit.
    pub fn start(
        config: &Config,
        bootstrap: &str,
        consumer: &SourceConsumer,
        topic: &str,
        partition: i32,
        progress_partitions: i32,
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
        let producer: SinkProducer =
            cc.create_with_context(DeliveryContext::default())
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
        let group = consumer
            .group_metadata()
            .ok_or_else(|| KafkaError::Option {
                reason: "exactly-once needs kafka.group_id (no consumer group metadata)".into(),
            })?;
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
            committed: None,
            progress_topic: config.sink.progress_topic.clone(),
            progress_partition: progress_partition(&id, progress_partitions),
            id,
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
    pub fn commit(
        &mut self,
        next_offset: i64,
        snapshot: &Snapshot,
    ) -> Result<u64, TransactionError> {
        let bytes = self.state.write(next_offset, snapshot, &mut self.buf)?;
        failpoint::hit(failpoint::AFTER_SNAPSHOT_BEFORE_COMMIT);
        // The progress record commits (or aborts) with the output.
        let value = next_offset.to_string();
        let mut record = BaseRecord::<str, str, usize>::with_opaque_to(&self.progress_topic, 0)
            .partition(self.progress_partition)
            .key(&self.id)
            .payload(&value);
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => {
                    let _ = self.producer.abort_transaction(self.timeout);
                    return Err(KafkaError::Request {
                        what: format!("progress record to {}", self.progress_topic),
                        cause: e,
                    }
                    .into());
                }
            }
        }
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

    /// Records the committed offset read from the progress topic at start.
    pub fn set_committed(&mut self, offset: Option<i64>) {
        self.committed = offset;
    }

    /// Aborts the open transaction and begins a new one (a task restarting
    /// after a fault). Returns the offset to resume from.
    pub fn abort_and_restart(&mut self) -> Result<Option<i64>, TransactionError> {
        self.producer
            .abort_transaction(self.timeout)
            .map_err(request("abort_transaction"))?;
        self.producer
            .begin_transaction()
            .map_err(request("begin_transaction"))?;
        Ok(self.committed)
    }

    /// The transactional id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The offset last committed, if any.
    pub fn committed(&self) -> Option<i64> {
        self.committed
    }
}
