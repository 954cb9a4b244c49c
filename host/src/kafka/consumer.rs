//! The one consumer of a Weir process.
//!
//! Partitions are assigned manually (`assign`), as Flink's Kafka source
//! does: the job decides which partitions it reads and from where, and the
//! group is used only for committed offsets; or, with `source.assignment =
//! "group"`, the consumer group assigns them (see [`super::group`]). Each
//! assigned partition is
//! split into its own queue (`split_partition_queue`) so that its partition
//! task reads it alone, in order, without a shared dispatcher.

use super::KafkaError;
use super::connect::{self, ClientFaults};
use super::start_position::{self, PartitionFacts, ResetPolicy};
use crate::config::Config;
use crate::topic_partition::{Position, TopicPartition};
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Logs client-level errors (broker down, auth) through `tracing` and keeps
/// the last one for the start-up check ([`super::connect`]).
#[derive(Default)]
pub struct SourceContext {
    pub faults: ClientFaults,
    /// Group assignment: what the rebalance callback needs (set once the
    /// job runs, before the consumer subscribes).
    pub group: std::sync::OnceLock<super::group::GroupHooks>,
}

impl ClientContext for SourceContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(target: "weir::kafka", %error, "consumer: {reason}");
        self.faults.record(&error, reason);
    }
}
impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match self.group.get() {
            Some(hooks) => hooks.rebalance(consumer, err, tpl),
            // Manual assignment never rebalances.
            None => {
                tracing::warn!(target: "weir::kafka", ?err, "rebalance without group assignment; ignored")
            }
        }
    }
}

/// The consumer type.
pub type SourceConsumer = BaseConsumer<SourceContext>;
/// One partition's own queue.
pub type SourceQueue = PartitionQueue<SourceContext>;

/// Where one partition starts and, for a bounded job, where it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStart {
    pub tp: TopicPartition,
    /// Index of the topic in `source.topics`.
    pub topic_index: u32,
    /// First offset to read.
    pub start: i64,
    /// Stop before this offset (bounded jobs only).
    pub end: Option<i64>,
    /// The group's committed offset (exactly-once recovers from it).
    pub committed: Option<i64>,
    /// The committed offset's metadata: under exactly-once with group
    /// assignment, which process wrote the state for it ("" otherwise).
    pub committed_writer: String,
}

/// Creates the consumer and checks, within `kafka.connect_timeout`, that the
/// cluster answers.
pub fn create(config: &Config, bootstrap: &str) -> Result<Arc<SourceConsumer>, KafkaError> {
    let mut cc = super::base_client_config(&config.kafka, bootstrap);
    cc.set("group.id", &config.kafka.group_id)
        .set("enable.partition.eof", "false");
    let mode = config.delivery_mode();
    if mode.transactional() {
        // Never process records of aborted transactions.
        cc.set("isolation.level", "read_committed");
    }
    let group = config.source.assignment == crate::config::Assignment::Group;
    let consumer_protocol = config
        .kafka
        .consumer_options
        .get("group.protocol")
        .is_some_and(|p| p == "consumer");
    if group && !consumer_protocol {
        // The classic protocol, rebalancing incrementally: partitions that
        // stay are not revoked (and committed, and restored) on every
        // rebalance. (KIP-848's `group.protocol = "consumer"` is
        // incremental by itself.)
        cc.set("partition.assignment.strategy", "cooperative-sticky");
    }
    for (k, v) in &config.kafka.consumer_options {
        cc.set(k, v);
    }
    // Offsets are stored by Weir, only for processed (and delivered)
    // records: see `kafka::delivery`.
    cc.set("enable.auto.offset.store", "false");
    if !mode.auto_commit() {
        // Checkpoints (or the end of the job) commit offsets.
        if mode.checkpoints() && cc.get("enable.auto.commit") == Some("true") {
            tracing::warn!("enable.auto.commit is ignored while checkpoints are enabled");
        }
        cc.set("enable.auto.commit", "false");
    }
    connect::check_mechanism(cc.get("sasl.mechanism").or(cc.get("sasl.mechanisms")))?;
    let consumer: SourceConsumer = cc
        .create_with_context(SourceContext::default())
        .map_err(|cause| KafkaError::client("consumer", cause))?;
    connect::await_cluster(
        &consumer,
        &consumer.context().faults,
        bootstrap,
        config.kafka.connect_timeout,
    )?;
    Ok(Arc::new(consumer))
}

/// The partition ids of `topic`, or an error if it does not exist.
pub fn partitions_of(
    consumer: &SourceConsumer,
    topic: &str,
    role: &'static str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|cause| KafkaError::Request {
            what: format!("metadata of topic `{topic}`"),
            cause,
        })?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Err(KafkaError::MissingTopic {
            role,
            topic: topic.to_string(),
            detail: None,
        });
    };
    if let Some(err) = t.error() {
        return Err(KafkaError::MissingTopic {
            role,
            topic: topic.to_string(),
            detail: Some(format!("{:?}", rdkafka::types::RDKafkaErrorCode::from(err))),
        });
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    if ids.is_empty() {
        return Err(KafkaError::MissingTopic {
            role,
            topic: topic.to_string(),
            detail: Some("no partitions".into()),
        });
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Resolves the start (and bounded end) offset of every partition of every
/// source topic.
pub fn resolve_starts(
    config: &Config,
    consumer: &SourceConsumer,
) -> Result<Vec<PartitionStart>, KafkaError> {
    let timeout = config.kafka.connect_timeout;
    let mut list = Vec::new();
    for (index, topic) in config.source.topics.iter().enumerate() {
        for p in partitions_of(consumer, topic, "source", timeout)? {
            list.push((index as u32, topic.clone(), p));
        }
    }
    resolve_partitions(config, consumer, list)
}

/// Resolves the start of each of `list` (`(topic index, topic,
/// partition)`), as [`resolve_starts`] does for all.
pub fn resolve_partitions(
    config: &Config,
    consumer: &SourceConsumer,
    list: Vec<(u32, String, i32)>,
) -> Result<Vec<PartitionStart>, KafkaError> {
    let timeout = config.kafka.connect_timeout;
    let reset_value = config
        .kafka
        .consumer_options
        .get("auto.offset.reset")
        .or_else(|| config.kafka.options.get("auto.offset.reset"));
    let reset = ResetPolicy::parse(reset_value.map(String::as_str))
        .map_err(|reason| KafkaError::Option { reason })?;
    let mut all = TopicPartitionList::new();
    for (_, topic, p) in &list {
        all.add_partition(topic, *p);
    }
    let committed =
        committed_offsets(consumer, &all, timeout).map_err(|cause| KafkaError::Request {
            what: format!("committed offsets of group `{}`", config.kafka.group_id),
            cause,
        })?;
    let by_time =
        match &config.source.start {
            crate::config::StartPosition::Timestamp { timestamp_ms } => {
                let mut q = TopicPartitionList::new();
                for (_, t, p) in &list {
                    q.add_partition_offset(t, *p, Offset::Offset(*timestamp_ms))
                        .expect("valid offset");
                }
                Some(consumer.offsets_for_times(q, timeout).map_err(|cause| {
                    KafkaError::Request {
                        what: "offsets for timestamp".into(),
                        cause,
                    }
                })?)
            }
            _ => None,
        };

    let mut starts = Vec::with_capacity(list.len());
    for (topic_index, topic, partition) in list {
        let (low, high) = consumer
            .fetch_watermarks(&topic, partition, timeout)
            .map_err(|cause| KafkaError::Request {
                what: format!("watermarks of {topic}/{partition}"),
                cause,
            })?;
        let offset_in = |tpl: &TopicPartitionList| match tpl
            .find_partition(&topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) if o >= 0 => Some(o),
            _ => None,
        };
        let facts = PartitionFacts {
            low,
            high,
            committed: offset_in(&committed),
            by_time: by_time.as_ref().and_then(offset_in),
        };
        let Some(start) =
            start_position::resolve(&config.source.start, &topic, partition, facts, reset)
        else {
            return Err(KafkaError::NoOffset {
                topic,
                partition,
                group: config.kafka.group_id.clone(),
                reset: reset_value.cloned().unwrap_or_default(),
            });
        };
        tracing::info!(
            topic, partition, start, low, high, committed = ?facts.committed,
            "start position resolved"
        );
        let committed_writer = committed
            .find_partition(&topic, partition)
            .map(|e| e.metadata().to_string())
            .unwrap_or_default();
        starts.push(PartitionStart {
            tp: TopicPartition::new(topic, partition),
            topic_index,
            start,
            end: config.source.bounded.then_some(high),
            committed: facts.committed,
            committed_writer,
        });
    }
    Ok(starts)
}

/// The group's committed offsets of `partitions`, retrying for up to
/// `timeout` while the group coordinator is moving or loading (a broker
/// that just started, a coordinator failover) or, under `read_committed`,
/// while a transactional offset commit is still pending.
pub fn committed_offsets(
    consumer: &SourceConsumer,
    partitions: &TopicPartitionList,
    timeout: Duration,
) -> rdkafka::error::KafkaResult<TopicPartitionList> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.committed_offsets(partitions.clone(), left) {
            Err(e) if coordinator_busy(&e) && Instant::now() < deadline => {
                tracing::debug!(error = %e, "committed offsets: coordinator not ready; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

fn coordinator_busy(e: &rdkafka::error::KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::UnstableOffsetCommit
        )
    )
}

/// Splits every partition into its own queue, then assigns them all at
/// their start offsets. Returns the queues in the order of `starts`.
pub fn assign(
    consumer: &Arc<SourceConsumer>,
    starts: &[PartitionStart],
) -> Result<Vec<SourceQueue>, KafkaError> {
    if starts.is_empty() {
        // Nothing to assign (group assignment subscribes instead).
        return Ok(Vec::new());
    }
    let mut queues = Vec::with_capacity(starts.len());
    let mut tpl = TopicPartitionList::new();
    for s in starts {
        let q = consumer
            .split_partition_queue(&s.tp.topic, s.tp.partition)
            .ok_or_else(|| KafkaError::Request {
                what: format!("split queue of {}", s.tp),
                cause: rdkafka::error::KafkaError::Subscription("split".into()),
            })?;
        queues.push(q);
        tpl.add_partition_offset(&s.tp.topic, s.tp.partition, Offset::Offset(s.start))
            .expect("valid offset");
    }
    consumer.assign(&tpl).map_err(|cause| KafkaError::Request {
        what: "assign partitions".into(),
        cause,
    })?;
    Ok(queues)
}

/// Partitions of the source topics that `known` lacks (Flink's partition
/// discovery): each starts at its first offset, since all its records are
/// new to the job.
pub fn discover(
    config: &Config,
    consumer: &SourceConsumer,
    known: &std::collections::HashSet<TopicPartition>,
) -> Result<Vec<PartitionStart>, KafkaError> {
    let timeout = config.kafka.connect_timeout;
    let mut found = Vec::new();
    for (index, topic) in config.source.topics.iter().enumerate() {
        for p in partitions_of(consumer, topic, "source", timeout)? {
            let tp = TopicPartition::new(topic.clone(), p);
            if known.contains(&tp) {
                continue;
            }
            let (low, _) = consumer
                .fetch_watermarks(topic, p, timeout)
                .map_err(|cause| KafkaError::Request {
                    what: format!("watermarks of {tp}"),
                    cause,
                })?;
            found.push(PartitionStart {
                tp,
                topic_index: index as u32,
                start: low,
                end: None,
                committed: None,
                committed_writer: String::new(),
            });
        }
    }
    Ok(found)
}

/// Adds one partition to a running consumer's assignment, at its start
/// offset, with its own queue (split off first, so that none of its
/// records reach the main queue).
pub fn assign_one(
    consumer: &Arc<SourceConsumer>,
    start: &PartitionStart,
) -> Result<SourceQueue, KafkaError> {
    let tp = &start.tp;
    let queue = consumer
        .split_partition_queue(&tp.topic, tp.partition)
        .ok_or_else(|| KafkaError::Request {
            what: format!("split queue of {tp}"),
            cause: rdkafka::error::KafkaError::Subscription("split".into()),
        })?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(start.start))
        .expect("valid offset");
    consumer
        .incremental_assign(&tpl)
        .map_err(|cause| KafkaError::Request {
            what: format!("assign {tp}"),
            cause,
        })?;
    Ok(queue)
}

/// Takes one partition out of a running consumer's assignment: nothing
/// more is fetched for it.
pub fn unassign_one(consumer: &SourceConsumer, tp: &TopicPartition) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&tp.topic, tp.partition);
    consumer
        .incremental_unassign(&tpl)
        .map_err(|cause| KafkaError::Request {
            what: format!("unassign {tp}"),
            cause,
        })
}

/// How long [`commit`] keeps retrying an offset commit that failed with a
/// retriable error (coordinator moving, loading or unreachable).
pub const COMMIT_RETRY_FOR: Duration = Duration::from_secs(30);

/// Whether an offset-commit error is worth another try: the group
/// coordinator is moving, loading, or cannot be reached right now.
fn retriable_commit(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::TimedOutQueue
            | RDKafkaErrorCode::WaitingForCoordinator
            | RDKafkaErrorCode::Retry
    )
}

/// Commits each partition's next offset to the group, synchronously.
///
/// librdkafka retries NOT_COORDINATOR and COORDINATOR_NOT_AVAILABLE
/// itself but hands other retriable errors of a synchronous commit back to
/// the caller (measured on the mock cluster: COORDINATOR_LOAD_IN_PROGRESS,
/// which failed a checkpoint and so the whole job); they are retried here
/// with backoff for up to [`COMMIT_RETRY_FOR`]. Other errors are returned
/// at once.
pub fn commit(consumer: &SourceConsumer, positions: &[Position]) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for (tp, o) in positions {
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*o))
            .expect("valid offset");
    }
    commit_list(consumer, &tpl)
}

/// Commits the offsets (and their metadata) of `tpl`, as [`commit`] does.
pub fn commit_list(consumer: &SourceConsumer, tpl: &TopicPartitionList) -> Result<(), KafkaError> {
    if tpl.count() == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + COMMIT_RETRY_FOR;
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 1u32;
    loop {
        let call = Instant::now();
        let result = consumer.commit(tpl, CommitMode::Sync);
        tracing::debug!(
            attempt,
            ms = call.elapsed().as_millis() as u64,
            ok = result.is_ok(),
            "offset commit call returned"
        );
        match result {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(attempt, "offsets committed after retrying");
                }
                return Ok(());
            }
            Err(rdkafka::error::KafkaError::ConsumerCommit(code))
                if retriable_commit(code) && Instant::now() + backoff < deadline =>
            {
                tracing::warn!(
                    error = %code,
                    attempt,
                    retry_in_ms = backoff.as_millis() as u64,
                    "offset commit failed with a retriable error; retrying"
                );
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                attempt += 1;
            }
            Err(cause) => {
                return Err(KafkaError::Request {
                    what: if attempt > 1 {
                        format!("commit offsets (attempt {attempt})")
                    } else {
                        "commit offsets".into()
                    },
                    cause,
                });
            }
        }
    }
}
