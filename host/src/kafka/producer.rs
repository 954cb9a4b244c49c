//! The producer, and the sink that sends a plugin's output from guest
//! memory straight into librdkafka's queue (librdkafka copies the bytes; no
//! intermediate buffer on the host side).

use super::KafkaError;
use super::delivery::{DeliveryTracker, TICKET_MASK, UNTRACKED};
use crate::config::Config;
use crate::runtime::{OutputSink, SinkError};
use rdkafka::ClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_plugin_sdk::abi::{self, RecordIter};

/// Counts deliveries and keeps the first failure.
#[derive(Default)]
pub struct DeliveryContext {
    /// Records acknowledged by the broker.
    pub delivered: AtomicU64,
    /// Records that failed after librdkafka's retries (all of them; a
    /// flush reports those of the records it waited for).
    pub failed: AtomicU64,
    /// The first delivery error of the whole run.
    pub first_error: Mutex<Option<String>>,
    /// Offset trackers (auto-commit mode), by delivery ticket.
    pub trackers: super::delivery::Trackers,
    /// Outputs sent and not yet reported, by generation (see [`flush`]).
    pub in_flight: InFlight,
}

/// Opaque bit: the record is counted in [`InFlight`].
const COUNTED: usize = 1 << 63;
/// Opaque bit: the record's [`InFlight`] generation (0 or 1).
const GENERATION: usize = 1 << 62;
const _: () = assert!(TICKET_MASK & (COUNTED | GENERATION) == 0);

/// Records handed to librdkafka whose delivery is not reported yet,
/// counted in two alternating generations, so that [`flush`] can wait for
/// exactly the records sent before it began while the partition tasks go
/// on producing. (librdkafka's own flush waits until its queue is empty,
/// which under sustained production may never happen: a checkpoint would
/// then never complete.)
///
/// Each counted record carries its generation in its delivery opaque
/// ([`COUNTED`], [`GENERATION`]); the tracker ticket uses the other bits.
///
/// Failed deliveries are counted by generation too, and each flush reports
/// those of the generations it waited for: a checkpoint fails for the
/// records sent before it, not for failures an earlier flush already
/// reported.
#[derive(Default)]
pub struct InFlight {
    generation: std::sync::atomic::AtomicU64,
    pending: [AtomicU64; 2],
    /// Failed deliveries not yet reported by a flush, by generation.
    failed: [AtomicU64; 2],
    /// The first of them, by generation.
    first_error: [Mutex<Option<String>>; 2],
    /// One flush at a time; `true` while records of a flush that timed
    /// out may still be pending in the current generation.
    flushing: Mutex<bool>,
}

impl InFlight {
    /// Counts a record about to be sent; returns the opaque bits it must
    /// carry.
    fn enter(&self) -> usize {
        loop {
            let g = self.generation.load(Ordering::SeqCst) & 1;
            self.pending[g as usize].fetch_add(1, Ordering::SeqCst);
            // A flush that switched generations in between must not miss
            // this record, nor wait for it: count it in the new one.
            if self.generation.load(Ordering::SeqCst) & 1 == g {
                return COUNTED | if g == 1 { GENERATION } else { 0 };
            }
            self.pending[g as usize].fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A counted record left librdkafka: delivered, failed, or never
    /// queued.
    fn leave(&self, opaque: usize) {
        if opaque & COUNTED != 0 {
            let g = usize::from(opaque & GENERATION != 0);
            self.pending[g].fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A record failed: counted against its generation (a record that was
    /// not counted, against the current one). Call before [`leave`].
    fn failed(&self, opaque: usize, error: impl FnOnce() -> String) {
        let g = if opaque & COUNTED != 0 {
            usize::from(opaque & GENERATION != 0)
        } else {
            (self.generation.load(Ordering::SeqCst) & 1) as usize
        };
        let mut first = self.first_error[g]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(error());
        }
        self.failed[g].fetch_add(1, Ordering::SeqCst);
    }

    /// Takes the unreported failures of the generations in `which`.
    fn take_failures(&self, which: &[usize]) -> (u64, Option<String>) {
        let mut n = 0;
        let mut first = None;
        for &g in which {
            let mut f = self.first_error[g]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            n += self.failed[g].swap(0, Ordering::SeqCst);
            first = first.or(f.take());
        }
        (n, first)
    }

    /// Counted records not yet reported.
    pub fn pending(&self) -> u64 {
        self.pending[0].load(Ordering::SeqCst) + self.pending[1].load(Ordering::SeqCst)
    }

    /// Waits until every record counted before this call is reported;
    /// returns the generations it waited for.
    /// `nudge` asks the client to send what it holds now.
    fn wait(&self, nudge: impl Fn(), timeout: Duration) -> Result<Vec<usize>, KafkaError> {
        let mut stale = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let old = (self.generation.fetch_add(1, Ordering::SeqCst) & 1) as usize;
        let started = Instant::now();
        let deadline = started + timeout;
        let mut next_note = started + Duration::from_secs(1);
        loop {
            let mut left = self.pending[old].load(Ordering::SeqCst);
            if *stale {
                // A flush timed out before: its records may be pending in
                // the generation that is current now. Wait for them too.
                left += self.pending[old ^ 1].load(Ordering::SeqCst);
            }
            if left == 0 {
                let waited = if *stale {
                    vec![old, old ^ 1]
                } else {
                    vec![old]
                };
                *stale = false;
                return Ok(waited);
            }
            if Instant::now() >= deadline {
                *stale = true;
                tracing::warn!(undelivered = left, ?timeout, "producer flush timed out");
                return Err(KafkaError::Request {
                    what: format!(
                        "flush producer ({left} record(s) undelivered after {timeout:?})"
                    ),
                    cause: rdkafka::error::KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut),
                });
            }
            if Instant::now() >= next_note {
                next_note += Duration::from_secs(1);
                tracing::debug!(
                    undelivered = left,
                    waited_ms = started.elapsed().as_millis() as u64,
                    "producer flush waiting for deliveries"
                );
            }
            nudge();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(target: "weir::kafka", %error, "producer: {reason}");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        self.trackers
            .delivered(opaque & TICKET_MASK, result.is_ok());
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, msg)) => {
                use rdkafka::Message;
                let error = || format!("{e} (topic {})", msg.topic());
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                if first.is_none() {
                    *first = Some(error());
                }
                self.in_flight.failed(opaque, error);
            }
        }
        // Last: a flush waiting for this record then sees its failure.
        self.in_flight.leave(opaque);
    }
}

impl DeliveryContext {
    /// An error if any delivery failed that no flush has reported yet
    /// (unless only logging is wanted).
    pub fn check(&self, log_failures_only: bool) -> Result<(), KafkaError> {
        self.report(&[0, 1], log_failures_only)
    }

    /// Reports the unreported failures of the generations in `which`.
    fn report(&self, which: &[usize], log_failures_only: bool) -> Result<(), KafkaError> {
        let (failed, first) = self.in_flight.take_failures(which);
        if failed == 0 {
            return Ok(());
        }
        if log_failures_only {
            tracing::warn!(failed, first = ?first, "deliveries failed (sink.log_failures_only = true)");
            return Ok(());
        }
        Err(KafkaError::Delivery {
            failed,
            first: first.unwrap_or_default(),
        })
    }
}

/// The producer type: librdkafka's own thread polls for delivery reports.
pub type SinkProducer = ThreadedProducer<DeliveryContext>;

/// Whether the config sets librdkafka option `key` for the producer.
fn chosen(config: &Config, key: &str) -> bool {
    config.kafka.options.contains_key(key) || config.kafka.producer_options.contains_key(key)
}

/// Unless the config chooses one, the partitioner of the Java producer:
/// murmur2 of the key (random for keyless records). librdkafka's default
/// (`consistent_random`, CRC32) puts a key on another partition than a
/// Java producer does, so Weir's keyed output would not be co-partitioned
/// with topics Java clients write, and a Kafka Streams or Flink job
/// joining them would be wrong.
pub(crate) fn java_partitioner(cc: &mut rdkafka::ClientConfig, config: &Config) {
    if !chosen(config, "partitioner") {
        cc.set("partitioner", "murmur2_random");
    }
}

/// Creates the producer.
///
/// Idempotent unless the config says otherwise (`enable.idempotence` in
/// the options, or `sink.retries = 0`, which idempotence cannot run
/// with), as Java producers are since Kafka 3.0: a retry can then neither
/// duplicate nor reorder a partition's records. It also bounds the
/// requests in flight per connection to five, so records wait for a batch
/// instead of going out a few at a time: measured on Apache Kafka at 128
/// output partitions, at-least-once ran 3x faster with it (BENCHMARKS.md).
pub fn create(config: &Config, bootstrap: &str) -> Result<Arc<SinkProducer>, KafkaError> {
    let mut cc = super::base_client_config(&config.kafka, bootstrap);
    if !chosen(config, "enable.idempotence") && config.sink.retries != Some(0) {
        cc.set("enable.idempotence", "true");
    }
    java_partitioner(&mut cc, config);
    if let Some(retries) = config.sink.retries {
        cc.set("message.send.max.retries", retries.to_string());
    }
    for (k, v) in &config.kafka.producer_options {
        cc.set(k, v);
    }
    let producer = cc
        .create_with_context(DeliveryContext::default())
        .map_err(|cause| KafkaError::client("producer", cause))?;
    Ok(Arc::new(producer))
}

/// Waits until every record sent through [`send`] before this call is
/// reported (or `timeout` passes), then reports the failed deliveries of
/// those records (and of records not sent through [`send`] that failed
/// since the previous flush).
///
/// Records sent while it waits are not waited for: the partition tasks go
/// on producing during a checkpoint, and only what was produced before
/// their snapshots must be delivered for the checkpoint to complete.
pub fn flush(
    producer: &SinkProducer,
    timeout: Duration,
    log_failures_only: bool,
) -> Result<(), KafkaError> {
    // A zero-time librdkafka flush wakes its broker threads: what lingers
    // is sent now.
    let nudge = || {
        let _ = producer.flush(Duration::ZERO);
    };
    let waited = producer.context().in_flight.wait(nudge, timeout)?;
    producer.context().report(&waited, log_failures_only)
}

/// Queues `record` (waiting while librdkafka's queue is full), counted so
/// that [`flush`] waits for its delivery. Every record of a sink producer
/// should go through here.
pub fn send<K, P>(
    producer: &SinkProducer,
    mut record: BaseRecord<'_, K, P, usize>,
) -> Result<(), rdkafka::error::KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    let in_flight = &producer.context().in_flight;
    let bits = in_flight.enter();
    record.delivery_opaque |= bits;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                back,
            )) => {
                // librdkafka's queue is full: let its thread drain it.
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => {
                in_flight.leave(bits);
                return Err(e);
            }
        }
    }
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
        // The batch was validated by the host function, so every record
        // decodes: count them all with the tracker at once (one lock per
        // emitted batch, not per record).
        let ticket = match &self.tracking {
            Some((tracker, ticket)) => {
                let t = ticket.load(Ordering::Relaxed);
                tracker.sent_many(t, records.remaining().into());
                t
            }
            None => UNTRACKED,
        };
        for (i, r) in records.enumerate() {
            if i as u32 == half && i > 0 {
                crate::checkpoint::failpoint::hit(crate::checkpoint::failpoint::MID_BATCH);
            }
            let r = r.map_err(|e| SinkError(e.to_string()))?;
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
            send(&self.producer, rec)
                .map_err(|e| SinkError(format!("produce to {}: {e}", topics[r.topic as usize])))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn a_flush_waits_for_records_sent_before_it_and_not_after() {
        let f = Arc::new(InFlight::default());
        let before = f.enter();
        let done = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (f, done) = (f.clone(), done.clone());
            std::thread::spawn(move || {
                let r = f.wait(|| {}, Duration::from_secs(10));
                done.store(true, Ordering::SeqCst);
                r
            })
        };
        // Once the flush has switched generations, new records are not
        // waited for: one stays in flight for the whole test.
        while f.generation.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let after = f.enter();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !done.load(Ordering::SeqCst),
            "returned before its record left"
        );
        f.leave(before);
        let waited = waiter.join().unwrap().unwrap();
        assert_eq!(waited, vec![0]);
        assert_eq!(f.pending(), 1);
        f.leave(after);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn failures_are_reported_by_the_flush_of_their_generation() {
        let f = InFlight::default();
        let a = f.enter();
        f.failed(a, || "first".into());
        f.leave(a);
        let waited = f.wait(|| {}, Duration::from_secs(1)).unwrap();
        let (n, first) = f.take_failures(&waited);
        assert_eq!((n, first.as_deref()), (1, Some("first")));
        // The next flush has nothing to report.
        let b = f.enter();
        f.leave(b);
        let waited = f.wait(|| {}, Duration::from_secs(1)).unwrap();
        assert_eq!(f.take_failures(&waited), (0, None));
    }

    #[test]
    fn after_a_timed_out_flush_the_next_one_waits_for_the_leftovers() {
        let f = InFlight::default();
        let stuck = f.enter();
        assert!(f.wait(|| {}, Duration::from_millis(20)).is_err());
        let f = Arc::new(f);
        let waiter = {
            let f = f.clone();
            std::thread::spawn(move || f.wait(|| {}, Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "the leftover must still be waited for"
        );
        f.leave(stuck);
        assert_eq!(waiter.join().unwrap().unwrap().len(), 2);
    }
}
