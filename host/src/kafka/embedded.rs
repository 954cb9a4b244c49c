//! The embedded demo cluster: librdkafka's in-process mock cluster, the
//! configured topics, and a built-in sample input. Selected by
//! `bootstrap_servers = "embedded"`, so the shipped `config.toml` runs on a
//! machine with no broker at all.

use super::KafkaError;
use crate::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;

/// Partitions of every topic the demo creates.
pub const PARTITIONS: i32 = 4;
/// Records of built-in sample input.
pub const SAMPLE_RECORDS: usize = 20_000;

const WORDS: [&str; 16] = [
    "kafka",
    "weir",
    "stream",
    "wasm",
    "plugin",
    "state",
    "offset",
    "checkpoint",
    "partition",
    "record",
    "batch",
    "sink",
    "source",
    "flink",
    "rust",
    "river",
];

/// A running mock cluster; dropping it stops the cluster.
pub struct EmbeddedCluster {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

// SAFETY: `MockCluster` holds raw librdkafka handles, so it is not `Send`
// by default. librdkafka's mock-cluster API is thread-safe: every
// `rd_kafka_mock_*` call posts an op to the cluster's own thread, and the
// handle is only dropped once. Moving it lets `run()`'s future be `Send`,
// so it can be spawned on a multi-threaded runtime.
unsafe impl Send for EmbeddedCluster {}

impl EmbeddedCluster {
    /// Starts the cluster and creates every source and sink topic.
    pub fn start(config: &Config) -> Result<Self, KafkaError> {
        let cluster = MockCluster::new(1).map_err(|e| KafkaError::Embedded(e.to_string()))?;
        for topic in config.source.topics.iter().chain(&config.sink.topics) {
            cluster
                .create_topic(topic, PARTITIONS, 1)
                .map_err(|e| KafkaError::Embedded(format!("create topic {topic}: {e}")))?;
        }
        tracing::info!(bootstrap = %cluster.bootstrap_servers(), "embedded mock cluster started");
        Ok(EmbeddedCluster { cluster })
    }

    /// The cluster's bootstrap servers.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Writes the sample input to the first source topic: words keyed by
    /// themselves, from a fixed pseudo-random sequence.
    pub fn seed(&self, topic: &str) -> Result<usize, KafkaError> {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap_servers())
            .create()
            .map_err(|e| KafkaError::Embedded(e.to_string()))?;
        let mut x: u32 = 0x9e37_79b9;
        for i in 0..SAMPLE_RECORDS {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Skewed: low indexes are more frequent.
            let word = WORDS[((x % 16) * (x / 16 % 16) / 16) as usize];
            let value = format!("{word} #{i}");
            let mut rec = BaseRecord::<str, str>::to(topic).key(word).payload(&value);
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        rec = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        producer
            .flush(Duration::from_secs(30))
            .map_err(|e| KafkaError::Embedded(format!("seed: {e}")))?;
        Ok(SAMPLE_RECORDS)
    }

    /// Reads every record of `topic` and returns how many there were and
    /// the last value seen per key (for running-count: the final count).
    pub fn read_output(&self, topic: &str) -> Result<OutputSummary, KafkaError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap_servers())
            .set("group.id", "weir-embedded-reader")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| KafkaError::Embedded(e.to_string()))?;
        let mut tpl = TopicPartitionList::new();
        let mut end = 0i64;
        for p in 0..PARTITIONS {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map_err(|e| KafkaError::Embedded(e.to_string()))?;
            end += high;
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("valid");
        }
        consumer
            .assign(&tpl)
            .map_err(|e| KafkaError::Embedded(e.to_string()))?;
        let mut summary = OutputSummary {
            topic: topic.to_string(),
            records: 0,
            last_by_key: BTreeMap::new(),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while (summary.records as i64) < end && std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    summary.records += 1;
                    let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                    let value =
                        String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                    summary.last_by_key.insert(key, value);
                }
                Some(Err(e)) => return Err(KafkaError::Embedded(e.to_string())),
                None => {}
            }
        }
        Ok(summary)
    }
}

/// What the demo shows at the end.
#[derive(Debug, Clone)]
pub struct OutputSummary {
    pub topic: String,
    pub records: u64,
    /// Key → the last value written for it.
    pub last_by_key: BTreeMap<String, String>,
}
