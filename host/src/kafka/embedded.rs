//! The embedded demo cluster: librdkafka's in-process mock cluster, the
//! configured topics, and a built-in sample input. Selected by
//! `bootstrap_servers = "embedded"`, so the shipped `config.toml` runs on a
//! machine with no broker at all.
//!
//! With checkpoints on, the demo also shows recovery: once half of the
//! output is written, [`EmbeddedCluster::start_failure_drill`] makes the
//! cluster refuse one produce request (a permanent error librdkafka does
//! not retry), so the checkpoint in flight fails and every partition task
//! restarts from the last complete checkpoint. The final count per key is
//! then compared with the sample input's ([`OutputSummary::expected`]).

use super::KafkaError;
use crate::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Partitions of every topic the demo creates.
pub const PARTITIONS: i32 = 8;
/// Records of built-in sample input: enough for a few checkpoints to
/// complete before the failure drill, and little enough for the mock
/// cluster, which keeps at most 5 MiB per partition.
pub const SAMPLE_RECORDS: usize = 400_000;

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
    /// The sample input's record count per key (set by [`seed`](Self::seed)).
    expected: OnceLock<BTreeMap<String, u64>>,
}

// SAFETY: `MockCluster` holds raw librdkafka handles, so it is not `Send`
// by default. librdkafka's mock-cluster API is thread-safe: every
// `rd_kafka_mock_*` call posts an op to the cluster's own thread, and the
// handle is only dropped once. Moving it lets `run()`'s future be `Send`,
// so it can be spawned on a multi-threaded runtime.
unsafe impl Send for EmbeddedCluster {}
// SAFETY: as for `Send`: every call posts an op to the cluster's thread, so
// the failure drill's thread may call it while the job runs.
unsafe impl Sync for EmbeddedCluster {}

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
        Ok(EmbeddedCluster {
            cluster,
            expected: OnceLock::new(),
        })
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
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .map_err(|e| KafkaError::Embedded(e.to_string()))?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut x: u32 = 0x9e37_79b9;
        for i in 0..SAMPLE_RECORDS {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Skewed: low indexes are more frequent.
            let word = WORDS[((x % 16) * (x / 16 % 16) / 16) as usize];
            *counts.entry(word.to_string()).or_default() += 1;
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
        let _ = self.expected.set(counts);
        Ok(SAMPLE_RECORDS)
    }

    /// Once `topic` holds `after` records, makes the cluster refuse the
    /// next produce request with TOPIC_AUTHORIZATION_FAILED, which
    /// librdkafka does not retry: the checkpoint in flight fails and the
    /// job restarts every task from the last complete checkpoint. Runs on
    /// its own thread; ends with the cluster, or after a minute.
    pub fn start_failure_drill(self: &Arc<Self>, topic: &str, after: i64) {
        let (cluster, topic) = (Arc::downgrade(self), topic.to_string());
        let spawned = std::thread::Builder::new()
            .name("weir-demo-drill".into())
            .spawn(move || failure_drill(cluster, &topic, after));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "demo: the failure drill did not start");
        }
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
            expected: self.expected.get().cloned().unwrap_or_default(),
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
    /// Key → how many records of the sample input carry it (for
    /// running-count: what the last value must be).
    pub expected: BTreeMap<String, u64>,
}

/// The body of [`EmbeddedCluster::start_failure_drill`].
fn failure_drill(cluster: Weak<EmbeddedCluster>, topic: &str, after: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut watcher: Option<BaseConsumer> = None;
    while Instant::now() < deadline {
        let Some(c) = cluster.upgrade() else {
            return;
        };
        let watcher = match &watcher {
            Some(w) => w,
            None => match ClientConfig::new()
                .set("bootstrap.servers", c.bootstrap_servers())
                .create()
            {
                Ok(w) => watcher.insert(w),
                Err(e) => {
                    tracing::warn!(error = %e, "demo: the failure drill has no client");
                    return;
                }
            },
        };
        let written: i64 = (0..PARTITIONS)
            .filter_map(|p| {
                watcher
                    .fetch_watermarks(topic, p, Duration::from_secs(1))
                    .ok()
            })
            .map(|(_, high)| high)
            .sum();
        if written >= after {
            tracing::warn!(
                written,
                "demo: the cluster refuses the next produce request (failure drill); the job must restart from its last checkpoint"
            );
            c.cluster.request_errors(
                RDKafkaApiKey::Produce,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
            );
            return;
        }
        drop(c);
        std::thread::sleep(Duration::from_millis(5));
    }
}
