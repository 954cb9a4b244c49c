//! Kafka: everything that touches librdkafka.
//!
//! - [`connect`]: the start-up check that the cluster answers, and why not.
//! - [`consumer`]: the one consumer per process, topic discovery, and the
//!   split of each assigned partition into its own queue.
//! - [`group`]: group assignment, the rebalance callback.
//! - [`start_position`]: Flink's start positions resolved to offsets.
//! - [`producer`]: the producer and the [`OutputSink`](crate::runtime::OutputSink)
//!   that sends a plugin's output straight from guest memory.
//! - [`embedded`]: librdkafka's mock cluster with sample input, for the
//!   zero-setup demo.
//! - [`error`]: the crate-boundary error type.

pub mod connect;
pub mod consumer;
pub mod dead_letter;
pub mod delivery;
pub mod embedded;
pub mod error;
pub mod group;
pub mod producer;
pub mod start_position;
pub mod transaction;

pub use error::KafkaError;

use crate::config::KafkaConfig;
use rdkafka::ClientConfig;

/// Client config shared by consumer and producer: brokers plus the
/// passthrough options.
pub(crate) fn base_client_config(kafka: &KafkaConfig, bootstrap: &str) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", bootstrap);
    // Fail connection attempts in bounded time; the start-up check reports it.
    cc.set("socket.connection.setup.timeout.ms", "10000");
    for (k, v) in &kafka.options {
        cc.set(k, v);
    }
    cc
}
