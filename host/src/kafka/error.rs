//! Errors at the Kafka boundary.

/// A Kafka operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// No broker answered within the connect timeout.
    #[error(transparent)]
    Unreachable(Box<super::connect::Unreachable>),
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
    /// Built by [`KafkaError::client`], which keeps secret values out.
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

impl KafkaError {
    /// A failed client creation. rust-rdkafka's config error carries the
    /// option's value, and librdkafka's description may quote it: for a
    /// secret option both are replaced.
    pub fn client(role: &'static str, cause: rdkafka::error::KafkaError) -> KafkaError {
        let cause = match cause {
            rdkafka::error::KafkaError::ClientConfig(code, desc, key, value)
                if crate::config::secret::is_secret(&key) =>
            {
                let desc = if value.is_empty() {
                    desc
                } else {
                    desc.replace(&value, REDACTED)
                };
                rdkafka::error::KafkaError::ClientConfig(code, desc, key, REDACTED.into())
            }
            other => other,
        };
        KafkaError::Client { role, cause }
    }
}

/// What stands for a secret value in messages.
const REDACTED: &str = "<redacted>";

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaConfRes;

    #[test]
    fn a_config_error_never_shows_a_secret_value() {
        let secret = "s3cr3t-value";
        let cause = rdkafka::error::KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            format!("Invalid value \"{secret}\" for configuration property"),
            "sasl.oauthbearer.client.secret".into(),
            secret.into(),
        );
        let shown = KafkaError::client("consumer", cause).to_string();
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("sasl.oauthbearer.client.secret"), "{shown}");
        let plain = rdkafka::error::KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value".into(),
            "linger.ms".into(),
            "soon".into(),
        );
        assert!(
            KafkaError::client("producer", plain)
                .to_string()
                .contains("soon")
        );
    }
}
