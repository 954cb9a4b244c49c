//! A worker's Kafka transaction (exactly-once).
//!
//! Each worker owns one transactional producer, and its transaction spans
//! every partition the worker runs (Kafka Streams' EOS v2, KIP-447: a
//! producer per thread, not per task). The id is stable across restarts,
//! `<prefix>-<worker>`, so a restarted worker fences its zombie and aborts
//! the zombie's open transaction in `init_transactions`; the number of ids
//! is bounded by `parallelism`. Ids a previous run with a larger
//! `parallelism` used are fenced at start (see [`fence`]). At every
//! checkpoint the worker commits: each partition's state file keyed by its
//! next offset, then all the offsets into the transaction, commit, begin
//! the next one. This module is the Kafka half; the state files are
//! `checkpoint::transactional`.

use super::KafkaError;
use super::consumer::SourceConsumer;
use super::producer::{DeliveryContext, SinkProducer};
use crate::checkpoint::failpoint;
use crate::config::Config;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, ConsumerGroupMetadata};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer;
use std::sync::Arc;
use std::time::Duration;

/// A transaction step failed.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Another producer with the same transactional id took over (a newer
    /// instance of this task, usually another process): this one is a
    /// zombie and must stop; restarting it would fence the live one.
    #[error(
        "transactional id {id} was fenced by a newer producer (another Weir process runs these partitions?): {cause}"
    )]
    Fenced { id: String, cause: String },
    /// A transactional call did not return long after its timeout; the
    /// producer is given up and replaced.
    #[error(
        "transactional producer {id}: {what} did not return within {waited:?} (its timeout passed); the producer is replaced"
    )]
    Stuck {
        id: String,
        what: &'static str,
        waited: Duration,
    },
}

/// How librdkafka classifies a failed transactional call (see the
/// transactional producer's API docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Call it again.
    Retriable,
    /// The transaction must be aborted; the producer stays usable.
    Abortable,
    /// The producer is unusable; a new one must be created.
    Fatal,
    /// Fatal because a newer producer fenced this one.
    Fenced,
    /// Anything else (a timeout of the call, a local state error).
    Other,
}

fn classify(e: &rdkafka::error::KafkaError) -> Failure {
    let fenced = |code: RDKafkaErrorCode| {
        matches!(
            code,
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::TransactionCoordinatorFenced
        )
    };
    match e {
        // Fenced whether or not librdkafka marks it fatal: some brokers
        // (Tansu) answer a zombie's TxnOffsetCommit with PRODUCER_FENCED as
        // an abortable error, and aborting then hangs on the coordinator.
        rdkafka::error::KafkaError::Transaction(t) if fenced(t.code()) => Failure::Fenced,
        rdkafka::error::KafkaError::Transaction(t) if t.is_fatal() => Failure::Fatal,
        rdkafka::error::KafkaError::Transaction(t) if t.txn_requires_abort() => Failure::Abortable,
        rdkafka::error::KafkaError::Transaction(t) if t.is_retriable() => Failure::Retriable,
        _ => Failure::Other,
    }
}

/// How long [`WorkerTransaction::drain`] goes on once the caller's own
/// work is done: longer than a healthy delivery of a full producer queue
/// takes (about 100 ms measured), short enough that a transaction in an
/// error state costs a commit little.
const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// Retriable failures of one transactional call are retried this often.
const CALL_ATTEMPTS: u32 = 10;

/// How long past its deadline `send_offsets_to_transaction` may run before
/// the producer is given up. librdkafka's call can wait forever for a group
/// coordinator that was down: its coordinator request never times out
/// (librdkafka issues #5456 and #5511, open in 2.12), and the call waits
/// for that request's reply without a bound.
const STUCK_GRACE: Duration = Duration::from_secs(5);

fn request(what: &str) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaError + '_ {
    move |cause| KafkaError::Request {
        what: what.to_string(),
        cause,
    }
}

/// The transactional id of worker `worker`.
pub fn transactional_id(prefix: &str, worker: usize) -> String {
    format!("{prefix}-{worker}")
}

/// With group assignment, the transactional id of worker `worker` of this
/// process (`instance`, random per start). Several processes share the
/// partitions, so their ids must differ; a previous owner of a partition
/// is fenced by the group's generation in `send_offsets_to_transaction`
/// (KIP-447), not by the id.
pub fn group_transactional_id(prefix: &str, instance: &str, worker: usize) -> String {
    format!("{prefix}-{instance}-{worker}")
}

/// The consumer's group metadata, as of now (member and generation).
fn group_metadata(consumer: &SourceConsumer) -> Result<ConsumerGroupMetadata, TransactionError> {
    consumer.group_metadata().ok_or_else(|| {
        KafkaError::Option {
            reason: "exactly-once needs kafka.group_id (no consumer group metadata)".into(),
        }
        .into()
    })
}

/// The client config of a transactional producer with id `id`.
fn client_config(config: &Config, bootstrap: &str, id: &str) -> rdkafka::ClientConfig {
    let mut cc = super::base_client_config(&config.kafka, bootstrap);
    cc.set("transactional.id", id);
    let key = "transaction.timeout.ms";
    if !config.kafka.options.contains_key(key) {
        cc.set(key, config.default_transaction_timeout_ms().to_string());
    }
    super::producer::java_partitioner(&mut cc, config);
    if let Some(retries) = config.sink.retries {
        cc.set("message.send.max.retries", retries.to_string());
    }
    for (k, v) in &config.kafka.producer_options {
        cc.set(k, v);
    }
    cc
}

/// How long one transactional call may take.
fn call_timeout(config: &Config) -> Duration {
    config.kafka.connect_timeout.max(Duration::from_secs(30))
}

/// Fences transactional id `id` without using it: `init_transactions`
/// bumps its epoch (a zombie holding it can no longer commit) and aborts
/// its open transaction. For ids of a previous run's workers that this
/// run does not have.
pub fn fence(config: &Config, bootstrap: &str, id: &str) -> Result<(), TransactionError> {
    let cc = client_config(config, bootstrap, id);
    drop(create_and_init(&cc, id, call_timeout(config))?);
    tracing::info!(transactional_id = %id, "fenced a transactional id no worker of this run uses");
    Ok(())
}

/// A worker's transactional producer.
pub struct WorkerTransaction {
    producer: Arc<SinkProducer>,
    /// Its group metadata goes with every commit: with group assignment it
    /// carries the generation that fences a previous owner.
    consumer: Arc<SourceConsumer>,
    timeout: Duration,
    /// The transactional id.
    id: String,
    /// The producer's configuration, to replace it after a fatal error.
    client_config: rdkafka::ClientConfig,
    /// A transaction is open (begun, neither committed nor aborted).
    open: bool,
    /// The producer hit a fatal error and must be replaced.
    fatal: bool,
}

impl WorkerTransaction {
    /// Creates the producer of worker `worker`, fences any zombie with the
    /// same id (aborting its open transaction), and begins the first
    /// transaction.
    ///
    /// Fence every id before reading the group's committed offsets: only
    /// then can no zombie transaction still commit.
    pub fn start(
        config: &Config,
        bootstrap: &str,
        consumer: &Arc<SourceConsumer>,
        id: String,
    ) -> Result<Self, TransactionError> {
        let cc = client_config(config, bootstrap, &id);
        let timeout = call_timeout(config);
        let producer = create_and_init(&cc, &id, timeout)?;
        producer
            .begin_transaction()
            .map_err(request("begin_transaction"))?;
        group_metadata(consumer)?;
        tracing::info!(transactional_id = %id, "transactional producer ready");
        Ok(WorkerTransaction {
            producer: Arc::new(producer),
            consumer: consumer.clone(),
            timeout,
            id,
            client_config: cc,
            open: true,
            fatal: false,
        })
    }

    /// Waits until everything sent so far is delivered, or until
    /// [`DRAIN_GRACE`] after `enough` is set, or the call timeout: what
    /// `commit_transaction` would otherwise wait for first. Errors are
    /// left to the commit, hence the bound: a transaction in an error
    /// state never delivers what it holds.
    ///
    /// Not `flush`: rust-rdkafka's flush of a `ThreadedProducer` polls the
    /// delivery queue in steps of up to 100 ms while the producer's own
    /// thread takes the reports from it, so it waited 100 ms every time.
    pub fn drain(&self, enough: &std::sync::atomic::AtomicBool) {
        let deadline = std::time::Instant::now() + self.timeout;
        // A zero-time flush wakes the broker threads: what lingers is sent now.
        let _ = self.producer.flush(Duration::ZERO);
        let mut grace_ends = None;
        while self.producer.in_flight_count() > 0 && std::time::Instant::now() < deadline {
            if enough.load(std::sync::atomic::Ordering::Acquire) {
                let ends =
                    *grace_ends.get_or_insert_with(|| std::time::Instant::now() + DRAIN_GRACE);
                if std::time::Instant::now() >= ends {
                    break;
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// The producer the worker's tasks must send through.
    pub fn producer(&self) -> Arc<SinkProducer> {
        self.producer.clone()
    }

    /// Commits everything produced so far together with `offsets` (each
    /// partition's next offset, whose state file is already durable) and
    /// begins the next transaction.
    ///
    /// Retriable failures of each call are retried. On an abortable one
    /// the transaction is aborted here; on a fatal one the producer is
    /// marked for replacement. Either way the error is returned, and the
    /// worker rolls its tasks back through
    /// [`abort_and_begin`](Self::abort_and_begin).
    pub fn commit(&mut self, offsets: &TopicPartitionList) -> Result<(), TransactionError> {
        if self.fatal || !self.open {
            return Err(self.unusable());
        }
        let group = group_metadata(&self.consumer)?;
        let producer = self.producer.clone();
        let started = std::time::Instant::now();
        // One deadline for the whole commit: a broker that never answers
        // holds the worker for the timeout once, not once per call and
        // retry.
        let deadline = started + self.timeout;
        match self.send_offsets(offsets, group, deadline) {
            Ok(()) => {}
            Err(Unfinished::Failed(e)) => {
                return Err(self.failed("send_offsets_to_transaction".into(), e));
            }
            Err(Unfinished::Stuck) => {
                self.fatal = true;
                let e = TransactionError::Stuck {
                    id: self.id.clone(),
                    what: "send_offsets_to_transaction",
                    waited: started.elapsed(),
                };
                tracing::error!(transactional_id = %self.id, error = %e, "transactional call stuck in librdkafka");
                return Err(e);
            }
        }
        let offsets_sent = started.elapsed();
        if let Err(e) = retry(&self.id, "commit_transaction", deadline, |left| {
            producer.commit_transaction(left)
        }) {
            return Err(self.failed("commit_transaction".into(), e));
        }
        tracing::debug!(
            transactional_id = %self.id,
            offsets_ms = offsets_sent.as_secs_f64() * 1e3,
            end_ms = (started.elapsed() - offsets_sent).as_secs_f64() * 1e3,
            "send_offsets_to_transaction and commit_transaction"
        );
        self.open = false;
        failpoint::hit(failpoint::AFTER_COMMIT);
        self.producer
            .begin_transaction()
            .map_err(request("begin_transaction"))?;
        self.open = true;
        Ok(())
    }

    /// `send_offsets_to_transaction`, retried like [`retry`], on a thread of
    /// its own that the worker waits for until [`STUCK_GRACE`] past
    /// `deadline`. A call still running then is left behind with its
    /// producer (which the worker replaces); it ends when librdkafka lets
    /// it, or with the process.
    fn send_offsets(
        &self,
        offsets: &TopicPartitionList,
        group: ConsumerGroupMetadata,
        deadline: std::time::Instant,
    ) -> Result<(), Unfinished> {
        let (producer, offsets, id) = (self.producer.clone(), offsets.clone(), self.id.clone());
        let (done, result) = std::sync::mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("weir-txn-offsets".into())
            .spawn(move || {
                let r = retry(&id, "send_offsets_to_transaction", deadline, |left| {
                    producer.send_offsets_to_transaction(&offsets, &group, left)
                });
                let _ = done.send(r);
            });
        if let Err(e) = spawned {
            tracing::error!(transactional_id = %self.id, error = %e, "no thread for send_offsets_to_transaction");
            return Err(Unfinished::Stuck);
        }
        let wait = deadline.saturating_duration_since(std::time::Instant::now()) + STUCK_GRACE;
        match result.recv_timeout(wait) {
            Ok(r) => r.map_err(Unfinished::Failed),
            Err(_) => Err(Unfinished::Stuck),
        }
    }

    /// Handles a failed step of [`commit`](Self::commit): aborts the
    /// transaction if it can be (so nothing of it becomes visible), or
    /// marks the producer for replacement; returns the error to report.
    fn failed(&mut self, what: String, cause: rdkafka::error::KafkaError) -> TransactionError {
        match classify(&cause) {
            Failure::Fenced => {
                self.fatal = true;
                return TransactionError::Fenced {
                    id: self.id.clone(),
                    cause: format!("{what}: {cause}"),
                };
            }
            Failure::Fatal => {
                self.fatal = true;
                tracing::warn!(transactional_id = %self.id, error = %cause, "{what}: fatal producer error; the producer will be replaced when the task restarts");
            }
            kind => {
                tracing::warn!(transactional_id = %self.id, error = %cause, ?kind, "{what} failed; aborting the transaction");
                // Best effort: if it fails, the restart aborts again.
                if let Err(e) = self.abort() {
                    tracing::warn!(transactional_id = %self.id, error = %e, "abort_transaction failed; retried at restart");
                }
            }
        }
        KafkaError::Request { what, cause }.into()
    }

    /// Aborts the open transaction, retrying retriable failures.
    fn abort(&mut self) -> Result<(), TransactionError> {
        if !self.open {
            return Ok(());
        }
        let producer = self.producer.clone();
        let deadline = std::time::Instant::now() + self.timeout;
        match retry(&self.id, "abort_transaction", deadline, |left| {
            producer.abort_transaction(left)
        }) {
            Ok(()) => {
                self.open = false;
                Ok(())
            }
            Err(e) => {
                // Whatever the cause, this producer is not asked to abort
                // again: an abort that timed out waits on the same stuck
                // messages the next time too (librdkafka's mock, having
                // refused a produce request, forgets the topic's partitions
                // and never purges the 3 messages queued for them). It is
                // replaced instead, and the new producer's
                // `init_transactions` aborts what this one left open.
                self.fatal = true;
                if classify(&e) == Failure::Fenced {
                    return Err(TransactionError::Fenced {
                        id: self.id.clone(),
                        cause: format!("abort_transaction: {e}"),
                    });
                }
                Err(request("abort_transaction")(e).into())
            }
        }
    }

    /// The error for a call on a producer that cannot take it.
    fn unusable(&self) -> TransactionError {
        KafkaError::Option {
            reason: format!(
                "transactional producer {} is {}; the task must restart",
                self.id,
                if self.fatal {
                    "in a fatal state"
                } else {
                    "not in a transaction"
                }
            ),
        }
        .into()
    }

    /// Aborts the open transaction and begins a new one (the worker's
    /// tasks roll back to their last commit). Returns the producer to send
    /// through from now on: a new one after a fatal error.
    ///
    /// After a fatal producer error (other than fencing) the producer is
    /// replaced: a new one with the same transactional id, whose
    /// `init_transactions` aborts whatever the old one left open. A fenced
    /// producer is not replaced: a newer instance owns the id.
    pub fn abort_and_begin(&mut self) -> Result<Arc<SinkProducer>, TransactionError> {
        // An abort that fails marks the producer for replacement (see
        // `abort`); only fencing ends the roll-back here.
        if !self.fatal
            && let Err(e @ TransactionError::Fenced { .. }) = self.abort()
        {
            return Err(e);
        }
        if self.fatal {
            self.replace_producer()?;
        }
        self.producer
            .begin_transaction()
            .map_err(request("begin_transaction"))?;
        self.open = true;
        Ok(self.producer.clone())
    }

    /// Replaces a producer that hit a fatal error.
    fn replace_producer(&mut self) -> Result<(), TransactionError> {
        // The fatal error says whether it was fencing.
        if let Some((code, reason)) = self.producer.client().fatal_error()
            && matches!(
                code,
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::TransactionCoordinatorFenced
            )
        {
            return Err(TransactionError::Fenced {
                id: self.id.clone(),
                cause: format!("{code:?}: {reason}"),
            });
        }
        tracing::warn!(transactional_id = %self.id, "replacing the transactional producer after a fatal error");
        let producer = create_and_init(&self.client_config, &self.id, self.timeout)?;
        self.producer = Arc::new(producer);
        self.fatal = false;
        self.open = false;
        Ok(())
    }

    /// The transactional id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// How a bounded transactional call ended without success.
enum Unfinished {
    Failed(rdkafka::error::KafkaError),
    /// It had not returned [`STUCK_GRACE`] after its deadline.
    Stuck,
}

/// Runs a transactional call of producer `id` with the time left before
/// `deadline`, retrying it while librdkafka says the failure is retriable
/// (at most [`CALL_ATTEMPTS`] times, and only while time is left).
fn retry(
    id: &str,
    what: &str,
    deadline: std::time::Instant,
    mut f: impl FnMut(Duration) -> rdkafka::error::KafkaResult<()>,
) -> rdkafka::error::KafkaResult<()> {
    let mut attempt = 1;
    loop {
        // librdkafka needs a positive timeout to try at all.
        let left = deadline
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_millis(100));
        match f(left) {
            Err(e)
                if classify(&e) == Failure::Retriable
                    && attempt < CALL_ATTEMPTS
                    && std::time::Instant::now() < deadline =>
            {
                tracing::warn!(
                    transactional_id = %id, error = %e, attempt,
                    "{what} failed with a retriable error; retrying"
                );
                std::thread::sleep(Duration::from_millis(50) * attempt);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Creates a transactional producer and runs `init_transactions`, which
/// fences any older producer with the same id and aborts its open
/// transaction.
fn create_and_init(
    cc: &rdkafka::ClientConfig,
    id: &str,
    timeout: Duration,
) -> Result<SinkProducer, TransactionError> {
    let producer: SinkProducer = cc
        .create_with_context(DeliveryContext::default())
        .map_err(|cause| KafkaError::client("transactional producer", cause))?;
    producer
        .init_transactions(timeout)
        .map_err(request(&format!("init_transactions for {id}")))?;
    Ok(producer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::ClientConfig;
    use rdkafka::mocking::{MockCluster, MockCoordinator};
    use std::time::Instant;

    /// With the group coordinator down, librdkafka's
    /// `send_offsets_to_transaction` does not keep to its timeout
    /// (librdkafka #5456); the worker's call returns anyway, a bounded
    /// time after its deadline, and never with success.
    #[test]
    fn send_offsets_returns_when_the_group_coordinator_is_down() {
        let mock = MockCluster::new(3).unwrap();
        mock.create_topic("out", 1, 3).unwrap();
        mock.coordinator(MockCoordinator::Transaction("t".into()), 1)
            .unwrap();
        mock.coordinator(MockCoordinator::Group("g".into()), 2)
            .unwrap();
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", mock.bootstrap_servers())
            .set("transactional.id", "t");
        let producer: SinkProducer = cc.create_with_context(DeliveryContext::default()).unwrap();
        producer.init_transactions(Duration::from_secs(10)).unwrap();
        producer.begin_transaction().unwrap();
        let consumer: SourceConsumer = ClientConfig::new()
            .set("bootstrap.servers", mock.bootstrap_servers())
            .set("group.id", "g")
            .create_with_context(Default::default())
            .unwrap();
        let group = consumer.group_metadata().unwrap();
        let txn = WorkerTransaction {
            producer: Arc::new(producer),
            consumer: Arc::new(consumer),
            timeout: Duration::from_secs(2),
            id: "t".into(),
            client_config: cc,
            open: true,
            fatal: false,
        };
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset("in", 0, rdkafka::Offset::Offset(7))
            .unwrap();
        mock.broker_down(2).unwrap();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(2);
        let result = txn.send_offsets(&offsets, group, deadline);
        let took = started.elapsed();
        let how = match &result {
            Ok(()) => panic!("offsets sent to a coordinator that is down"),
            Err(Unfinished::Failed(e)) => format!("failed: {e}"),
            Err(Unfinished::Stuck) => "stuck, given up".to_string(),
        };
        println!("send_offsets with the group coordinator down: {how} after {took:?}");
        assert!(
            took < Duration::from_secs(2) + STUCK_GRACE + Duration::from_secs(2),
            "returned after {took:?}"
        );
    }
}
