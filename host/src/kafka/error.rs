//! Errors at the Kafka boundary.

use std::time::Duration;

/// A Kafka operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// No broker answered within the connect timeout.
    #[error(
        "cannot reach Kafka at {servers} within {}s: {cause}{} (check kafka.bootstrap_servers, or raise kafka.connect_timeout)",
        timeout.as_secs_f32(),
        last.as_ref().map(|l| format!("; last error: {l}")).unwrap_or_default()
    )]
    Unreachable {
        servers: String,
        timeout: Duration,
        cause: rdkafka::error::KafkaError,
        /// librdkafka's last client-level error, if any.
        last: Option<String>,
    },
    /// A broker answered but refused the connection's security settings.
    #[error("Kafka at {servers} refused the connection: {refusal}: {reason}")]
    Refused {
        servers: String,
        refusal: super::connect::Refusal,
        /// librdkafka's description.
        reason: String,
    },
    /// A configured topic does not exist on the cluster.
    #[error("{role} topic `{topic}` does not exist on the cluster{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    MissingTopic {
        role: &'static str,
        topic: String,
        detail: Option<String>,
    },
    /// A client could not be created (usually a bad librdkafka option).
    #[error("cannot create the Kafka {role}: {cause}")]
    Client {
        role: &'static str,
        cause: rdkafka::error::KafkaError,
    },
    /// A request failed.
    #[error("{what}: {cause}")]
    Request {
        what: String,
        cause: rdkafka::error::KafkaError,
    },
    /// No committed offset and `auto.offset.reset = none`.
    #[error(
        "{topic}/{partition}: no committed offset for group `{group}` and auto.offset.reset is `{reset}`"
    )]
    NoOffset {
        topic: String,
        partition: i32,
        group: String,
        reset: String,
    },
    /// A Kafka option has a value Weir cannot use.
    #[error("kafka option {reason}")]
    Option { reason: String },
    /// Output could not be delivered.
    #[error("delivery failed for {failed} record(s); first error: {first}")]
    Delivery { failed: u64, first: String },
    /// The embedded mock cluster could not start.
    #[error("embedded cluster: {0}")]
    Embedded(String),
}
