//! What tests do with the broker as clients: create topics, write input,
//! read output back (as written, or as a `read_committed` consumer sees
//! it), and read or set a group's committed offsets.

use crate::broker::Broker;
use crate::{Input, Output, log_view};
use anyhow::{Result, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// How long reading a topic back may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

impl Broker {
    fn client_config(&self) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", self.bootstrap());
        cc
    }

    /// Runs one admin request on its own thread and runtime (callers may
    /// be inside a runtime) and checks every per-topic result.
    fn admin<F, Fut>(&self, what: &str, call: F) -> Result<()>
    where
        F: FnOnce(AdminClient<DefaultClientContext>, AdminOptions) -> Fut + Send + 'static,
        Fut: std::future::Future<
                Output = rdkafka::error::KafkaResult<Vec<rdkafka::admin::TopicResult>>,
            >,
    {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let res = std::thread::spawn(move || -> Result<_> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(call(admin, options))?)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("{what} thread panicked"))??;
        for r in res {
            r.map_err(|(t, e)| anyhow::anyhow!("{what} {t}: {e}"))?;
        }
        Ok(())
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let topic = topic.to_string();
        self.admin("create topic", move |admin, options| async move {
            let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
            admin.create_topics(&[new], &options).await
        })
    }

    /// Grows `topic` to `total` partitions.
    pub fn add_partitions(&self, topic: &str, total: usize) -> Result<()> {
        let topic = topic.to_string();
        self.admin("add partitions to", move |admin, options| async move {
            admin
                .create_partitions(&[NewPartitions::new(&topic, total)], &options)
                .await
        })
    }

    /// A producer to this broker (librdkafka's default batching).
    pub fn producer(&self) -> Result<ThreadedProducer<DefaultProducerContext>> {
        Ok(self.client_config().create()?)
    }

    /// Writes `records` and waits for delivery.
    pub fn produce(&self, topic: &str, records: &[Input]) -> Result<()> {
        let producer = self.producer()?;
        for r in records {
            let mut rec = BaseRecord::<[u8], [u8]>::to(topic)
                .partition(r.partition)
                .key(r.key.as_bytes())
                .payload(r.value.as_bytes());
            if let Some(ts) = r.timestamp {
                rec = rec.timestamp(ts);
            }
            while let Err((e, back)) = producer.send(rec) {
                if !matches!(
                    e,
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)
                ) {
                    bail!("produce to {topic}: {e}");
                }
                rec = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        producer.flush(Duration::from_secs(60))?;
        Ok(())
    }

    /// Every record of `topic` as written (aborted and open transactions
    /// included), per partition in offset order.
    pub fn read_all(&self, topic: &str, partitions: i32) -> Result<Vec<Vec<Output>>> {
        self.read(topic, partitions, "read_uncommitted")
    }

    /// What a `read_committed` consumer sees of `topic`, per partition in
    /// offset order.
    ///
    /// The same view is computed a second, independent way, from the raw
    /// record batches and their transaction markers ([`log_view`]); the
    /// two must agree record for record, or this fails saying where.
    pub fn read_committed(&self, topic: &str, partitions: i32) -> Result<Vec<Vec<Output>>> {
        let consumed = self.read(topic, partitions, "read_committed")?;
        for (p, part) in consumed.iter().enumerate() {
            let log = log_view::read_partition(&self.bootstrap(), topic, p as i32)?;
            let from_log = log.visible.iter().map(|v| {
                (
                    v.offset,
                    v.key.as_deref().map(String::from_utf8_lossy),
                    v.value.as_deref().map(String::from_utf8_lossy),
                )
            });
            let from_consumer = part.iter().map(|o| {
                (
                    o.offset,
                    o.key.as_deref().map(Into::into),
                    o.value.as_deref().map(Into::into),
                )
            });
            if let Some((i, (c, l))) = from_consumer
                .zip(from_log)
                .enumerate()
                .find(|(_, (c, l))| c != l)
            {
                bail!(
                    "{topic}/{p}: read_committed consumer and log view disagree at record {i}: {c:?} vs {l:?}"
                );
            }
            if part.len() != log.visible.len() {
                bail!(
                    "{topic}/{p}: the read_committed consumer saw {} records, the log view {}",
                    part.len(),
                    log.visible.len()
                );
            }
        }
        Ok(consumed)
    }

    /// Reads every partition from its start to its end as `isolation`
    /// sees it (the high watermark, or the last stable offset).
    fn read(&self, topic: &str, partitions: i32, isolation: &str) -> Result<Vec<Vec<Output>>> {
        let consumer: BaseConsumer<Reader> = self
            .client_config()
            .set("group.id", "weir-test-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", isolation)
            .create_with_context(Reader)?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let mut out = vec![Vec::new(); partitions as usize];
        let mut at_end = vec![false; partitions as usize];
        let deadline = Instant::now() + READ_TIMEOUT;
        while !at_end.iter().all(|e| *e) {
            if Instant::now() > deadline {
                bail!("reading {topic} ({isolation}) timed out; at end: {at_end:?}");
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out[m.partition() as usize].push(output(&m)),
                Some(Err(KafkaError::PartitionEOF(p))) => at_end[p as usize] = true,
                Some(Err(e)) => bail!("read {topic}: {e}"),
                None => {}
            }
        }
        Ok(out)
    }

    /// The end offset (high watermark) of every partition of `topic`.
    pub fn end_offsets(&self, topic: &str, partitions: i32) -> Result<Vec<i64>> {
        let consumer: BaseConsumer<Reader> = self.client_config().create_with_context(Reader)?;
        (0..partitions)
            .map(|p| {
                Ok(consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))?
                    .1)
            })
            .collect()
    }

    /// Commits offsets for `group` without joining it.
    pub fn commit(&self, group: &str, topic: &str, offsets: &[(i32, i64)]) -> Result<()> {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in offsets {
            tpl.add_partition_offset(topic, p, Offset::Offset(o))?;
        }
        consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)?;
        Ok(())
    }

    /// The group's committed offset per partition (`None` if none); a
    /// pending transactional commit is waited for (`require_stable`).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Result<Vec<Option<i64>>> {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", group)
            .set("isolation.level", "read_committed")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let got = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        Ok((0..partitions)
            .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            })
            .collect())
    }
}

/// A reader's client context: the end of a partition is what it waits
/// for, not an error to log.
struct Reader;

impl rdkafka::ClientContext for Reader {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            tracing::error!("test reader: {error}: {reason}");
        }
    }
}
impl rdkafka::consumer::ConsumerContext for Reader {}

fn output(m: &rdkafka::message::BorrowedMessage<'_>) -> Output {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    Output {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        value: m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
        timestamp: m.timestamp().to_millis(),
        headers,
    }
}
