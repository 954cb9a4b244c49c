//! Group assignment (`source.assignment = "group"`): the consumer group
//! decides which partitions this process reads, and the rebalance
//! callback hands them to the job.
//!
//! The callback runs inside librdkafka's poll of the main queue, on the
//! job's consumer thread, with `max.poll.interval.ms` ticking:
//!
//! - **Assign.** Each new partition's start is resolved (the group's
//!   committed offset, read stable: a previous owner's pending
//!   transactional commit is waited for), its queue is split off, and only
//!   then is it assigned at that offset, so none of its records reach the
//!   main queue. The job gets the partitions with their queues and builds
//!   their tasks (restoring the state recorded for the committed offset).
//! - **Revoke.** The job is told and the callback waits, bounded, until
//!   the job has made the partitions' progress durable (exactly-once: the
//!   worker's transaction committed with their offsets) and dropped their
//!   tasks; then they are unassigned and the group may give them to
//!   another process.

use super::KafkaError;
use super::consumer::{self, PartitionStart, SourceConsumer, SourceContext, SourceQueue};
use crate::config::Config;
use crate::topic_partition::TopicPartition;
use rdkafka::consumer::{BaseConsumer, Consumer, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// What the rebalance callback tells the job.
pub enum GroupEvent {
    /// Partitions the group gave this process, each with its resolved
    /// start and its own queue, already assigned.
    Assigned(Vec<(PartitionStart, SourceQueue)>),
    /// Partitions the group takes away: make them durable, let them go,
    /// then send on `done`.
    Revoked {
        partitions: Vec<TopicPartition>,
        done: std::sync::mpsc::Sender<()>,
    },
    /// An assignment could not be set up: the job fails.
    Failed(KafkaError),
}

/// What the rebalance callback needs.
pub struct GroupHooks {
    pub config: Arc<Config>,
    /// The consumer itself (to split partition queues).
    pub consumer: Weak<SourceConsumer>,
    pub events: tokio::sync::mpsc::UnboundedSender<GroupEvent>,
    /// Set when the job stops: its workers commit their partitions
    /// themselves, so a revoke (the consumer leaving the group) waits for
    /// nothing.
    pub stopping: Arc<AtomicBool>,
    /// Longest wait for the job to let revoked partitions go.
    pub revoke_timeout: Duration,
}

impl GroupHooks {
    /// Serves one rebalance: revoke or assign, then the (incremental)
    /// change of the assignment.
    pub(super) fn rebalance(
        &self,
        consumer: &BaseConsumer<SourceContext>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let queues = self.prepare_assign(tpl);
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Some(queues) = queues {
                    let _ = self.events.send(GroupEvent::Assigned(queues));
                }
                result
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(tpl);
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(target: "weir::kafka", ?other, "rebalance error");
                // Give everything up, as librdkafka advises: the group
                // assigns again.
                self.revoke(tpl);
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(target: "weir::kafka", error = %e, "changing the assignment failed");
        }
    }

    /// Resolves where each partition of `tpl` starts, sets it in `tpl`,
    /// and splits each partition's queue off. `None` when the job is gone
    /// or stopping, or the starts could not be resolved (the job is told).
    fn prepare_assign(
        &self,
        tpl: &mut TopicPartitionList,
    ) -> Option<Vec<(PartitionStart, SourceQueue)>> {
        let consumer = self.consumer.upgrade()?;
        if self.stopping.load(Ordering::Relaxed) {
            return None;
        }
        let list: Vec<(u32, String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| {
                let index = self
                    .config
                    .source
                    .topics
                    .iter()
                    .position(|t| t == e.topic());
                (
                    index.unwrap_or(0) as u32,
                    e.topic().to_string(),
                    e.partition(),
                )
            })
            .collect();
        let starts = match consumer::resolve_partitions(&self.config, &consumer, list) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.events.send(GroupEvent::Failed(e));
                return None;
            }
        };
        let mut out = Vec::with_capacity(starts.len());
        for start in starts {
            let tp = &start.tp;
            let _ = tpl.set_partition_offset(&tp.topic, tp.partition, Offset::Offset(start.start));
            let Some(queue) = consumer.split_partition_queue(&tp.topic, tp.partition) else {
                let _ = self.events.send(GroupEvent::Failed(KafkaError::Option {
                    reason: format!("could not split the queue of {tp}"),
                }));
                return None;
            };
            tracing::info!(target: "weir::kafka", partition = %tp, start = start.start, "assigned by the group");
            out.push((start, queue));
        }
        Some(out)
    }

    /// Tells the job that `tpl` is revoked and waits (bounded) until it has
    /// let the partitions go.
    fn revoke(&self, tpl: &TopicPartitionList) {
        if self.stopping.load(Ordering::Relaxed) || tpl.count() == 0 {
            return;
        }
        let partitions: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition::new(e.topic(), e.partition()))
            .collect();
        let (done, released) = std::sync::mpsc::channel();
        let event = GroupEvent::Revoked {
            partitions: partitions.clone(),
            done,
        };
        if self.events.send(event).is_err() {
            return;
        }
        if released.recv_timeout(self.revoke_timeout).is_err() {
            tracing::warn!(
                target: "weir::kafka",
                partitions = partitions.len(),
                timeout_ms = self.revoke_timeout.as_millis() as u64,
                "revoked partitions were not let go in time; their next owner replays what was not committed"
            );
        } else {
            tracing::info!(target: "weir::kafka", partitions = partitions.len(), "revoked partitions let go");
        }
    }
}

/// Subscribes the consumer to the source topics: from now on the group's
/// assignment arrives through [`GroupHooks`].
pub fn subscribe(consumer: &SourceConsumer, config: &Config) -> Result<(), KafkaError> {
    let topics: Vec<&str> = config.source.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|cause| KafkaError::Request {
            what: format!("subscribe to {topics:?}"),
            cause,
        })
}
