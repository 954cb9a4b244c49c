//! The producer, and the sink that sends a plugin's output from guest
//! memory straight into librdkafka's queue (librdkafka copies the bytes; no
//! intermediate buffer on the host side).

use super::KafkaError;
use super::delivery::{DeliveryTracker, UNTRACKED};
use crate::config::Config;
use crate::runtime::{OutputSink, SinkError};
use rdkafka::ClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_plugin_sdk::abi::{self, RecordIter};

/// Counts deliveries and keeps the first failure.
#[derive(Default)]
pub struct DeliveryContext {
    /// Records acknowledged by the broker.
    pub delivered: AtomicU64,
    /// Records that failed after librdkafka's retries.
    pub failed: AtomicU64,
    /// The first delivery error, for the job's error message.
    pub first_error: Mutex<Option<String>>,
    /// Offset trackers (auto-commit mode), by delivery ticket.
    pub trackers: super::delivery::Trackers,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(target: "weir::kafka", %error, "producer: {reason}");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, ticket: usize) {
        self.trackers.delivered(ticket, result.is_ok());
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, msg)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                if first.is_none() {
                    use rdkafka::Message;
                    *first = Some(format!("{e} (topic {})", msg.topic()));
                }
            }
        }
    }
}

impl DeliveryContext {
    /// An error if any delivery failed (unless only logging is wanted).
    pub fn check(&self, log_failures_only: bool) -> Result<(), KafkaError> {
        let failed = self.failed.load(Ordering::Relaxed);
        if failed == 0 {
            return Ok(());
        }
        if log_failures_only {
            tracing::warn!(failed, "deliveries failed (sink.log_failures_only = true)");
            return Ok(());
        }
        let first = self
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        Err(KafkaError::Delivery { failed, first })
    }
}

/// The producer type: librdkafka's own thread polls for delivery reports.
pub type SinkProducer = ThreadedProducer<DeliveryContext>;

/// Creates the producer.
pub fn create(config: &Config, bootstrap: &str) -> Result<Arc<SinkProducer>, KafkaError> {
    let mut cc = super::base_client_config(&config.kafka, bootstrap);
    if let Some(retries) = config.sink.retries {
        cc.set("message.send.max.retries", retries.to_string());
    }
    for (k, v) in &config.kafka.producer_options {
        cc.set(k, v);
    }
    let producer = cc
        .create_with_context(DeliveryContext::default())
        .map_err(|cause| KafkaError::Client {
            role: "producer",
            cause,
        })?;
    Ok(Arc::new(producer))
}

/// Waits until every queued record is delivered (or `timeout` passes), then
/// reports any failed delivery.
pub fn flush(
    producer: &SinkProducer,
    timeout: Duration,
    log_failures_only: bool,
) -> Result<(), KafkaError> {
    producer
        .flush(timeout)
        .map_err(|cause| KafkaError::Request {
            what: "flush producer".into(),
            cause,
        })?;
    producer.context().check(log_failures_only)
}

/// Sends emitted records to Kafka.
pub struct KafkaSink {
    producer: Arc<SinkProducer>,
    /// Auto-commit mode: the partition's tracker and the open batch.
    tracking: Option<(Arc<DeliveryTracker>, Arc<AtomicUsize>)>,
}

impl KafkaSink {
    /// A sink over a shared producer.
    pub fn new(producer: Arc<SinkProducer>) -> Self {
        KafkaSink {
            producer,
            tracking: None,
        }
    }

    /// A sink whose outputs carry the batch ticket held in `ticket`.
    pub fn tracked(
        producer: Arc<SinkProducer>,
        tracker: Arc<DeliveryTracker>,
        ticket: Arc<AtomicUsize>,
    ) -> Self {
        KafkaSink {
            producer,
            tracking: Some((tracker, ticket)),
        }
    }
}

impl OutputSink for KafkaSink {
    fn emit(&mut self, records: RecordIter<'_>, topics: &[String]) -> Result<(), SinkError> {
        let half = records.remaining() / 2;
        for (i, r) in records.enumerate() {
            if i as u32 == half && i > 0 {
                crate::checkpoint::failpoint::hit(crate::checkpoint::failpoint::MID_BATCH);
            }
            // Validated by the host function before the sink sees it.
            let r = r.map_err(|e| SinkError(e.to_string()))?;
            let ticket = match &self.tracking {
                Some((tracker, ticket)) => {
                    let t = ticket.load(Ordering::Relaxed);
                    tracker.sent(t);
                    t
                }
                None => UNTRACKED,
            };
            let mut rec: BaseRecord<'_, [u8], [u8], usize> =
                BaseRecord::with_opaque_to(&topics[r.topic as usize], ticket);
            rec.key = r.key;
            rec.payload = r.value;
            if r.partition != abi::ANY_PARTITION {
                rec.partition = Some(r.partition);
            }
            if r.timestamp >= 0 {
                rec.timestamp = Some(r.timestamp);
            }
            if r.header_count > 0 {
                let mut h = OwnedHeaders::new_with_capacity(r.header_count as usize);
                for hd in r.headers() {
                    h = h.insert(Header {
                        key: std::str::from_utf8(hd.name).unwrap_or("?"),
                        value: hd.value,
                    });
                }
                rec.headers = Some(h);
            }
            loop {
                match self.producer.send(rec) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                        back,
                    )) => {
                        // librdkafka's queue is full: let its thread drain it.
                        rec = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => {
                        return Err(SinkError(format!(
                            "produce to {}: {e}",
                            topics[r.topic as usize]
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}
