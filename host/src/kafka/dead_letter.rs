//! The dead-letter queue: where an input record that made the plugin fault
//! goes under `on_fault = "dead-letter"`, so one bad record neither stops
//! the job nor disappears.
//!
//! The record is written as it arrived (key, value, timestamp, headers)
//! plus headers that say what went wrong and where it came from. It goes
//! through the partition task's own producer: inside its transaction under
//! exactly-once (so it is written exactly once, with the output around it),
//! and under the batch's delivery ticket with auto-commit (so the input
//! offset is not committed before the dead letter is delivered).

use super::delivery::{DeliveryTracker, UNTRACKED};
use super::producer::SinkProducer;
use crate::runtime::PluginFault;
use rdkafka::Message;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::BaseRecord;

/// Header: the fault's kind (`FaultKind::code`, e.g. `timeout`).
pub const HEADER_KIND: &str = "weir.error.kind";
/// Header: the fault's message (names the limit, trap or reason).
pub const HEADER_MESSAGE: &str = "weir.error.message";
/// Header: the input record's topic.
pub const HEADER_TOPIC: &str = "weir.source.topic";
/// Header: the input record's partition (decimal text).
pub const HEADER_PARTITION: &str = "weir.source.partition";
/// Header: the input record's offset (decimal text).
pub const HEADER_OFFSET: &str = "weir.source.offset";
/// Header: the plugin's name.
pub const HEADER_PLUGIN: &str = "weir.plugin";

/// Where the faulted record came from and why it is here.
pub struct DeadLetter<'a> {
    pub topic: &'a str,
    pub plugin: &'a str,
    pub fault: &'a PluginFault,
}

/// Queues `message` on `dlq_topic`. With `tracking`, the record counts
/// towards the ticket's deliveries, like the batch's own output.
pub fn send<M: Message>(
    producer: &SinkProducer,
    dlq_topic: &str,
    message: &M,
    why: &DeadLetter<'_>,
    tracking: Option<(&DeliveryTracker, usize)>,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for h in original.iter() {
            headers = headers.insert(h);
        }
    }
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    for (key, value) in [
        (HEADER_KIND, why.fault.kind.code()),
        (HEADER_MESSAGE, why.fault.to_string().as_str()),
        (HEADER_TOPIC, why.topic),
        (HEADER_PARTITION, partition.as_str()),
        (HEADER_OFFSET, offset.as_str()),
        (HEADER_PLUGIN, why.plugin),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let ticket = match tracking {
        Some((tracker, t)) => {
            tracker.sent(t);
            t
        }
        None => UNTRACKED,
    };
    let mut record: BaseRecord<'_, [u8], [u8], usize> =
        BaseRecord::with_opaque_to(dlq_topic, ticket).headers(headers);
    record.key = message.key();
    record.payload = message.payload();
    if let Some(ts) = message.timestamp().to_millis() {
        record.timestamp = Some(ts);
    }
    // Counted like the batch's own output, so a checkpoint's flush waits
    // for it.
    super::producer::send(producer, record)
}
