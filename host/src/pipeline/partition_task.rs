//! The partition task: the unit to read first.
//!
//! It owns one partition's queue, one plugin instance (its own `Store`,
//! memory and state) and the partition's next offset. Each step takes the
//! records already waiting (up to `batch_size`), encodes them straight into
//! the guest's input buffer, calls the plugin once, and advances the offset.
//! Checkpoints (a capture of the instance plus the offset) are taken
//! between steps, when no guest frame is on the stack.

use super::event_clock::{self, EventClock, TimeConfig};
use super::status::TaskStats;
use crate::checkpoint::CheckpointStore;
use crate::checkpoint::TaskCheckpoint;
use crate::checkpoint::store::CheckpointError;
use crate::checkpoint::transactional::PartitionStateDir;
use crate::config::FaultPolicy;
use crate::kafka::consumer::SourceConsumer;
use crate::kafka::consumer::{PartitionStart, SourceQueue};
use crate::kafka::dead_letter;
use crate::kafka::delivery::DeliveryTracker;
use crate::kafka::producer::{KafkaSink, SinkProducer};
use crate::runtime::PluginInstance;
use crate::runtime::instance::BatchError;
use crate::runtime::{OutputSink, PluginFault, PluginModule, SinkError};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use std::time::Instant;
use weir_plugin_sdk::abi;

pub use super::task_error::{RestartError, TaskError, TaskFailure};

/// What every partition task of a job shares, and what a restart needs.
pub struct TaskEnv {
    pub module: PluginModule,
    /// Most records per plugin call.
    pub batch_size: usize,
    pub sink_topics: Arc<[String]>,
    pub plugin_config: Vec<(String, String)>,
    pub allow_module_change: bool,
    /// The checkpoint store (at-least-once / none with checkpoints on).
    pub store: Option<CheckpointStore>,
    pub consumer: Arc<SourceConsumer>,
    /// The shared (non-transactional) producer.
    pub producer: Arc<SinkProducer>,
    pub timeout: Duration,
    pub restart_attempts: u32,
    pub restart_backoff: Duration,
    /// What a plugin fault does.
    pub on_fault: FaultPolicy,
    /// `on_fault = "dead-letter"`: where faulted records go.
    pub dead_letter_topic: Option<String>,
    /// The job's metrics (plugin call times, faults, restarts).
    pub metrics: Arc<crate::metrics::JobMetrics>,
    /// Watermarks and ticks, for plugins that export `weir_tick`.
    pub time: TimeConfig,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A batch of this many records was processed.
    Processed(usize),
    /// Nothing was waiting.
    Idle,
    /// A bounded task reached its end offset.
    Finished,
}

/// One partition's task.
pub struct PartitionTask {
    /// Topic, partition, start and (bounded) end.
    pub start: PartitionStart,
    queue: SourceQueue,
    instance: PluginInstance,
    /// When the plugin is ticked (`weir_tick`), and with what watermark.
    clock: EventClock,
    plugin: Arc<str>,
    /// Next offset to process.
    next_offset: i64,
    batch_size: usize,
    stats: Arc<TaskStats>,
    span: tracing::Span,
    finished: bool,
    /// The last checkpoint id this task answered.
    checkpointed: u64,
    /// How this task's progress becomes durable.
    commit: TaskCommit,
    env: Arc<TaskEnv>,
    /// Where the task first started (restart point without a checkpoint).
    initial_offset: i64,
    /// Consecutive failures: reset once the task gets past the batch that
    /// failed (a record that fails deterministically exhausts the retries).
    failures: u32,
    /// The last offset of the batch that failed last.
    fail_mark: Option<i64>,
    /// A failed task waits until then before restarting.
    retry_at: Option<Instant>,
    /// `skip` / `dead-letter`: records known to make the plugin fault, with
    /// the fault. They are never handed to the plugin again.
    poison: BTreeMap<i64, PluginFault>,
    /// `skip` / `dead-letter`: offset ranges of batches that faulted; their
    /// records are processed one per call, so the record at fault is known.
    suspects: Vec<(i64, i64)>,
}

/// How a partition task's offsets (and state) become durable.
pub enum TaskCommit {
    /// Checkpoints, or a final commit when the job ends: nothing per batch.
    Checkpoint,
    /// Exactly-once: the task's part of its worker's Kafka transaction.
    Transaction(TaskTransaction),
    /// Auto-commit: the delivery tracker, and the cell holding the ticket of
    /// the open batch that the task's sink stamps on every output.
    AutoCommit(Arc<DeliveryTracker>, Arc<AtomicUsize>),
}

/// Exactly-once: what a partition task keeps of its worker's transaction.
pub struct TaskTransaction {
    /// The partition's state files, keyed by offset.
    state: PartitionStateDir,
    /// The offset the last committed transaction reached for the partition.
    committed: Option<i64>,
    /// The worker's transactional producer: the task's output goes into
    /// the worker's open transaction.
    producer: Arc<SinkProducer>,
    buf: Vec<u8>,
}

impl TaskTransaction {
    /// A task's part, with the group's committed offset read at start.
    pub fn new(
        state: PartitionStateDir,
        committed: Option<i64>,
        producer: Arc<SinkProducer>,
    ) -> Self {
        TaskTransaction {
            state,
            committed,
            producer,
            buf: Vec::new(),
        }
    }
}

impl PartitionTask {
    /// A task over `queue`, with an instance already initialised.
    pub fn new(
        start: PartitionStart,
        queue: SourceQueue,
        instance: PluginInstance,
        stats: Arc<TaskStats>,
        commit: TaskCommit,
        env: Arc<TaskEnv>,
    ) -> Self {
        let plugin = env.module.name.clone();
        let batch_size = env.batch_size;
        let initial_offset = start.start;
        let span = tracing::info_span!(
            "task", plugin = %plugin, topic = %start.topic, partition = start.partition
        );
        let clock = EventClock::new(env.time, instance.event_time(), Instant::now());
        PartitionTask {
            next_offset: start.start,
            start,
            queue,
            clock,
            instance,
            plugin,
            batch_size,
            stats,
            span,
            finished: false,
            checkpointed: 0,
            initial_offset,
            commit,
            env,
            failures: 0,
            fail_mark: None,
            retry_at: None,
            poison: BTreeMap::new(),
            suspects: Vec::new(),
        }
    }

    /// The sink for a (new) instance of this task.
    fn new_sink(&self) -> Box<dyn OutputSink> {
        Box::new(match &self.commit {
            TaskCommit::Transaction(t) => KafkaSink::new(t.producer.clone()),
            TaskCommit::AutoCommit(tracker, cell) => {
                KafkaSink::tracked(self.env.producer.clone(), tracker.clone(), cell.clone())
            }
            TaskCommit::Checkpoint => KafkaSink::new(self.env.producer.clone()),
        })
    }

    /// Handles a failure: schedules a restart with backoff, or gives up
    /// (returns the error) once `restart_attempts` are used.
    ///
    /// A plugin fault is first pinned to one record. The instance that
    /// faulted cannot be trusted (a trap can leave its memory half-updated),
    /// so the task restarts from its last checkpoint at once, without using
    /// an attempt, and replays the batch that faulted one record per call.
    /// When a single record faults, `fail` counts an attempt (and names the
    /// record's offset); `skip` and `dead-letter` set the record aside and
    /// restart again, so on the replay it goes to the policy instead of the
    /// plugin. The plugin's state thus ends up as if that record had never
    /// arrived, and under exactly-once nothing of a faulted batch becomes
    /// visible: the restart aborts its transaction.
    pub fn failed(&mut self, error: TaskError) -> Result<(), TaskError> {
        if let TaskFailure::Batch(BatchError::Fault(fault)) = &*error.failure {
            let _enter = self.span.clone().entered();
            if error.first_offset == error.last_offset {
                self.env.metrics.fault(fault.kind.code());
            }
            if error.first_offset != error.last_offset {
                tracing::warn!(
                    first = error.first_offset, last = error.last_offset, error = %error,
                    "a batch faulted the plugin; replaying it one record per call to find the record"
                );
                self.suspects.push((error.first_offset, error.last_offset));
                self.wait_until(Instant::now());
                return Ok(());
            }
            if self.env.on_fault != FaultPolicy::Fail {
                self.stats.faults.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    offset = error.first_offset, error = %error,
                    "the record faulted the plugin; replaying from the last checkpoint without it"
                );
                self.poison.insert(error.first_offset, fault.clone());
                self.wait_until(Instant::now());
                return Ok(());
            }
        }
        self.failures += 1;
        self.fail_mark = Some(error.last_offset);
        if self.failures > self.env.restart_attempts {
            return Err(error);
        }
        let backoff = self.env.restart_backoff * 2u32.saturating_pow(self.failures - 1);
        let _enter = self.span.clone().entered();
        tracing::warn!(
            error = %error,
            attempt = self.failures,
            of = self.env.restart_attempts,
            backoff_ms = backoff.as_millis() as u64,
            "partition task failed; restarting from its last checkpoint"
        );
        self.wait_until(Instant::now() + backoff);
        Ok(())
    }

    /// The error of a task whose output since the last checkpoint was not
    /// all delivered.
    pub fn undelivered(&self) -> TaskError {
        self.error(self.next_offset, self.next_offset, TaskFailure::Undelivered)
    }

    /// Whether the task waits for a restart.
    pub fn is_waiting(&self) -> bool {
        self.retry_at.is_some()
    }

    /// Exactly-once: the worker's transaction was aborted, so this task
    /// restarts from its last commit, not before `at` (a later restart
    /// already scheduled stays). From now on it sends through `producer`.
    pub fn roll_back(&mut self, producer: &Arc<SinkProducer>, at: Instant) {
        if let TaskCommit::Transaction(t) = &mut self.commit {
            t.producer = producer.clone();
        }
        self.wait_until(self.retry_at.map_or(at, |r| r.max(at)));
    }

    /// The task restarts at `at`, not before.
    fn wait_until(&mut self, at: Instant) {
        self.retry_at = Some(at);
        self.stats.waiting.store(true, Ordering::Relaxed);
    }

    /// Restarts the task if its backoff has passed: fresh instance, state
    /// and offset from the last checkpoint (or the committed offset), the
    /// partition re-read from there. Other partitions are not touched.
    pub fn restart_if_due(&mut self) -> Result<bool, TaskError> {
        match self.retry_at {
            Some(at) if Instant::now() >= at => {}
            _ => return Ok(false),
        }
        self.retry_at = None;
        let (plugin, at) = (self.plugin.to_string(), self.next_offset);
        let (t_name, p_id) = (self.start.topic.clone(), self.start.partition);
        let fail = |reason: RestartError| TaskError {
            plugin: plugin.clone(),
            topic: t_name.clone(),
            partition: p_id,
            first_offset: at,
            last_offset: at,
            failure: Box::new(TaskFailure::Restart(reason)),
        };
        let (topic, partition) = (self.start.topic.clone(), self.start.partition);
        let (offset, snapshot) = match &mut self.commit {
            // The worker aborted its transaction before (see `roll_back`).
            TaskCommit::Transaction(t) => match t.committed {
                Some(c) => {
                    let snap = t.state.load(c).map_err(|e| fail(e.into()))?;
                    (c, snap)
                }
                None => (self.initial_offset, None),
            },
            TaskCommit::AutoCommit(tracker, _) => {
                tracker.reset();
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&topic, partition);
                let committed = crate::kafka::consumer::committed_offsets(
                    &self.env.consumer,
                    &tpl,
                    self.env.timeout,
                )
                .ok()
                .and_then(|t| t.find_partition(&topic, partition).map(|e| e.offset()));
                match committed {
                    Some(Offset::Offset(o)) if o >= 0 => (o, None),
                    _ => (self.initial_offset, None),
                }
            }
            TaskCommit::Checkpoint => match &self.env.store {
                Some(store) => match store.latest().map_err(|e| fail(e.into()))? {
                    Some(c) => match c.partition(&topic, partition) {
                        Some((o, snap)) => (o, Some(snap.clone())),
                        None => (self.initial_offset, None),
                    },
                    None => (self.initial_offset, None),
                },
                None => (self.initial_offset, None),
            },
        };
        let mut instance = PluginInstance::new(
            &self.env.module,
            self.new_sink(),
            self.env.sink_topics.clone(),
        )
        .map_err(|e| fail(e.into()))?;
        match &snapshot {
            Some(snap) => instance
                .restore(snap, self.env.allow_module_change)
                .map_err(|e| fail(e.into()))?,
            None => instance
                .init(&self.env.plugin_config)
                .map_err(|e| fail(e.into()))?,
        }
        self.env
            .consumer
            .seek(&topic, partition, Offset::Offset(offset), self.env.timeout)
            .map_err(|cause| fail(RestartError::Seek { offset, cause }))?;
        self.clock = EventClock::new(self.env.time, instance.event_time(), Instant::now());
        self.instance = instance;
        self.next_offset = offset;
        self.finished = false;
        self.stats.position.store(offset, Ordering::Relaxed);
        self.stats.waiting.store(false, Ordering::Relaxed);
        self.env
            .metrics
            .task_restarts
            .with_label_values(&[self.start.topic.as_str(), &self.start.partition.to_string()])
            .inc();
        let _enter = self.span.clone().entered();
        tracing::info!(
            offset,
            restored = snapshot.is_some(),
            "partition task restarted"
        );
        Ok(true)
    }

    fn error(&self, first_offset: i64, last_offset: i64, source: TaskFailure) -> TaskError {
        TaskError {
            plugin: self.plugin.to_string(),
            topic: self.start.topic.clone(),
            partition: self.start.partition,
            first_offset,
            last_offset,
            failure: Box::new(source),
        }
    }

    /// Whether `offset` lies in a batch that faulted.
    fn is_suspect(&self, offset: i64) -> bool {
        self.suspects
            .iter()
            .any(|&(a, b)| (a..=b).contains(&offset))
    }

    /// Drops fault bookkeeping below a durable position: no restart goes
    /// back before it.
    fn forget_before(&mut self, offset: i64) {
        self.poison = self.poison.split_off(&offset);
        self.suspects.retain(|&(_, last)| last >= offset);
    }

    /// Applies the `skip` / `dead-letter` policy to a record known to fault.
    fn divert(
        &self,
        m: &BorrowedMessage<'_>,
        fault: &PluginFault,
        tracking: Option<(&DeliveryTracker, usize)>,
    ) -> Result<(), TaskFailure> {
        let offset = m.offset();
        match &self.env.dead_letter_topic {
            Some(dlq) if self.env.on_fault == FaultPolicy::DeadLetter => {
                let producer = match &self.commit {
                    TaskCommit::Transaction(t) => t.producer.clone(),
                    _ => self.env.producer.clone(),
                };
                let why = dead_letter::DeadLetter {
                    topic: &self.start.topic,
                    plugin: &self.plugin,
                    fault,
                };
                dead_letter::send(&producer, dlq, m, &why, tracking).map_err(|e| {
                    TaskFailure::Batch(BatchError::Sink(SinkError(format!(
                        "dead letter to {dlq}: {e}"
                    ))))
                })?;
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(offset, dead_letter_topic = %dlq, error = %fault, "record dead-lettered");
            }
            _ => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(offset, error = %fault, "record skipped");
            }
        }
        Ok(())
    }

    /// Exactly-once: whether [`prepare_commit`](Self::prepare_commit) would
    /// write a state file now (input read since the last commit, and no
    /// restart pending).
    pub fn has_uncommitted(&self) -> bool {
        self.retry_at.is_none()
            && matches!(&self.commit, TaskCommit::Transaction(t) if t.committed != Some(self.next_offset))
    }

    /// Exactly-once checkpoint `id`, before the worker commits: writes
    /// the state file for the task's next offset and returns that offset
    /// and the file's size.
    /// `None` when nothing was read since the last commit, or when the
    /// task waits for a restart (its instance is not to be trusted, and
    /// its output went with an aborted transaction).
    pub fn prepare_commit(&mut self, id: u64) -> Result<Option<(i64, u64)>, CheckpointError> {
        self.checkpointed = id;
        let next = self.next_offset;
        let TaskCommit::Transaction(txn) = &self.commit else {
            return Ok(None);
        };
        if self.retry_at.is_some() || txn.committed == Some(next) {
            return Ok(None);
        }
        let _enter = self.span.clone().entered();
        // A delta on top of the last state file, unless the chain must be
        // compacted or does not hold this instance's previous capture.
        let full = txn.state.wants_full(
            self.instance.capture_position(),
            self.instance.memory_size(),
        );
        let capture = self.instance.capture(full);
        let TaskCommit::Transaction(txn) = &mut self.commit else {
            unreachable!("checked above")
        };
        let bytes = txn.state.write(next, &capture, &mut txn.buf)?;
        tracing::debug!(offset = next, bytes, "state file written");
        Ok(Some((next, bytes)))
    }

    /// Exactly-once: the worker's transaction committed `offset` for this
    /// task. State files below it are no longer needed.
    pub fn committed(&mut self, offset: i64) {
        self.forget_before(offset);
        if let TaskCommit::Transaction(txn) = &mut self.commit {
            txn.committed = Some(offset);
            if let Err(e) = txn.state.prune_below(offset) {
                let _enter = self.span.clone().entered();
                tracing::warn!(error = %e, "pruning old state files failed; retried at the next commit");
            }
        }
    }

    /// The task's part of checkpoint `id`: its next offset and a capture
    /// of its state (the pages written since its previous capture). Taken
    /// between batches, so no guest frame is on the stack; the copy is the
    /// whole pause, encoding and writing happen in the checkpoint writer.
    pub fn checkpoint(&mut self, id: u64) -> TaskCheckpoint {
        self.checkpointed = id;
        self.forget_before(self.next_offset);
        TaskCheckpoint {
            id,
            topic: self.start.topic.clone(),
            partition: self.start.partition,
            offset: self.next_offset,
            capture: self.instance.capture(false),
        }
    }

    /// The task's final state, when its worker exits: like
    /// [`checkpoint`](Self::checkpoint) but always a full capture, because
    /// the job may hand it to a checkpoint before (or instead of) this
    /// task's last answer, which the checkpoint writer then never sees.
    pub fn final_checkpoint(&mut self) -> TaskCheckpoint {
        self.forget_before(self.next_offset);
        TaskCheckpoint {
            id: 0,
            topic: self.start.topic.clone(),
            partition: self.start.partition,
            offset: self.next_offset,
            capture: self.instance.capture(true),
        }
    }

    /// The last checkpoint id this task answered.
    pub fn checkpointed(&self) -> u64 {
        self.checkpointed
    }

    /// The next offset to process (what a commit would record).
    pub fn position(&self) -> i64 {
        self.next_offset
    }

    /// Whether a bounded task has reached its end.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn at_end(&self, offset: i64) -> bool {
        self.start.end.is_some_and(|end| offset >= end)
    }

    /// Processes what is waiting; blocks up to `wait` for the first record.
    pub fn step(&mut self, wait: Duration) -> Result<Step, TaskError> {
        if self.finished || self.at_end(self.next_offset) {
            // The final watermark closes every window, once: the event
            // time it sets is snapshotted, so a restore does not repeat it.
            if self.instance.has_tick() && self.instance.event_time() != abi::WATERMARK_END {
                self.instance.observe_event_time(abi::WATERMARK_END);
                self.tick_alone(Instant::now())?;
            }
            self.finished = true;
            self.stats.finish();
            return Ok(Step::Finished);
        }
        let _enter = self.span.clone().entered();
        let mut batch: Vec<BorrowedMessage<'_>> = Vec::with_capacity(self.batch_size.min(4096));
        let mut timeout = wait;
        while batch.len() < self.batch_size {
            match self.queue.poll(timeout) {
                None => break,
                Some(Ok(m)) => {
                    if self.start.end.is_some_and(|end| m.offset() >= end) {
                        break;
                    }
                    batch.push(m);
                }
                Some(Err(e)) => {
                    // Fetch errors are retried by librdkafka; report them.
                    tracing::warn!(error = %e, "consumer queue error");
                    break;
                }
            }
            timeout = Duration::ZERO;
        }
        let Some(last) = batch.last() else {
            drop(batch);
            if self.instance.has_tick() {
                self.tick_idle()?;
            }
            return Ok(Step::Idle);
        };
        let last_offset = last.offset();
        let ticket = match &self.commit {
            TaskCommit::AutoCommit(tracker, cell) => {
                let t = tracker.open(last_offset + 1);
                cell.store(t, Ordering::Relaxed);
                Some((tracker.clone(), t))
            }
            _ => None,
        };
        // Usually one plugin call for the whole batch. Records known to
        // fault go to the policy instead, and records of a batch that
        // faulted go one per call (see `failed`).
        let mut emitted = 0;
        let mut rest = &batch[..];
        while let Some(m) = rest.first() {
            if let Some(fault) = self.poison.get(&m.offset()) {
                let tracking = ticket.as_ref().map(|(t, id)| (&**t, *id));
                self.divert(m, &fault.clone(), tracking)
                    .map_err(|e| self.error(m.offset(), m.offset(), e))?;
                rest = &rest[1..];
                continue;
            }
            let mut len = if self.poison.is_empty() && self.suspects.is_empty() {
                // The usual case: no fault bookkeeping, one call per batch.
                rest.len()
            } else if self.is_suspect(m.offset()) {
                1
            } else {
                rest.iter()
                    .position(|m| {
                        self.poison.contains_key(&m.offset()) || self.is_suspect(m.offset())
                    })
                    .unwrap_or(rest.len())
            };
            if self.instance.has_tick() {
                // A late record waits until the plugin was given the
                // watermark it is late against (see `event_clock`).
                let at = m.offset();
                emitted += tick_if_due(&mut self.clock, &mut self.instance, Instant::now())
                    .map_err(|e| self.error(at, at, TaskFailure::Tick(e)))?;
                let timestamps = rest.iter().map(|m| m.timestamp().to_millis());
                len = len.min(
                    self.clock
                        .late_split(self.instance.event_time(), timestamps),
                );
            }
            let (chunk, tail) = rest.split_at(len);
            let topic_index = self.start.topic_index;
            let called = Instant::now();
            let result = self
                .instance
                .process(batch_size_of(chunk), |buf| encode(chunk, topic_index, buf));
            self.env
                .metrics
                .plugin_call
                .observe(called.elapsed().as_secs_f64());
            let first = chunk[0].offset();
            let last = chunk[len - 1].offset();
            emitted += result.map_err(|e| self.error(first, last, e.into()))?;
            if let Some(t) = chunk.iter().filter_map(|m| m.timestamp().to_millis()).max() {
                self.instance.observe_event_time(t);
            }
            rest = tail;
        }
        let n = batch.len();
        drop(batch);
        self.next_offset = last_offset + 1;
        if self.instance.has_tick() {
            // The tick's output belongs to this batch: same ticket, same
            // checkpoint, same transaction.
            let now = Instant::now();
            self.clock.records_arrived(now);
            let at = self.next_offset;
            emitted += tick_if_due(&mut self.clock, &mut self.instance, now)
                .map_err(|e| self.error(at, at, TaskFailure::Tick(e)))?;
        }
        if let Some((tracker, t)) = ticket {
            tracker.seal(t);
        }
        if self.fail_mark.is_some_and(|m| self.next_offset > m) {
            self.failures = 0;
            self.fail_mark = None;
        }
        self.stats.records_in.fetch_add(n as u64, Ordering::Relaxed);
        crate::checkpoint::failpoint::add_records(n as u64);
        self.stats.records_out.fetch_add(emitted, Ordering::Relaxed);
        self.stats
            .position
            .store(self.next_offset, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .memory_bytes
            .store(self.instance.memory_size() as u64, Ordering::Relaxed);
        if self.at_end(self.next_offset) {
            self.finished = true;
        }
        Ok(Step::Processed(n))
    }
}

impl PartitionTask {
    /// An idle step of a ticking plugin: the watermark may follow
    /// processing time (`idle_timeout`), and the plugin is ticked once
    /// `tick_interval` has passed.
    fn tick_idle(&mut self) -> Result<(), TaskError> {
        let now = Instant::now();
        let now_ms = event_clock::processing_time();
        if let Some(t) = self
            .clock
            .idle_advance(self.instance.event_time(), now, now_ms)
        {
            self.instance.observe_event_time(t);
        }
        self.tick_alone(now)
    }

    /// A tick outside a batch, if one is due at `now`. Auto-commit tracks
    /// its output like a batch's, at the unchanged position.
    fn tick_alone(&mut self, now: Instant) -> Result<(), TaskError> {
        let Some(watermark) = self.clock.due(self.instance.event_time(), now) else {
            return Ok(());
        };
        let ticket = match &self.commit {
            TaskCommit::AutoCommit(tracker, cell) => {
                let t = tracker.open(self.next_offset);
                cell.store(t, Ordering::Relaxed);
                Some((tracker.clone(), t))
            }
            _ => None,
        };
        let at = self.next_offset;
        let emitted = self
            .instance
            .tick(watermark, event_clock::processing_time())
            .map_err(|e| self.error(at, at, TaskFailure::Tick(e)))?;
        if let Some((tracker, t)) = ticket {
            tracker.seal(t);
        }
        self.stats.records_out.fetch_add(emitted, Ordering::Relaxed);
        Ok(())
    }
}

/// Calls `weir_tick` if the watermark advanced or the tick interval passed
/// at `now`. Returns what it emitted.
fn tick_if_due(
    clock: &mut EventClock,
    instance: &mut PluginInstance,
    now: Instant,
) -> Result<u64, BatchError> {
    match clock.due(instance.event_time(), now) {
        Some(watermark) => instance.tick(watermark, event_clock::processing_time()),
        None => Ok(0),
    }
}

/// A message's headers as ABI headers.
fn headers_of<'m>(m: &'m BorrowedMessage<'_>) -> impl Iterator<Item = abi::Header<'m>> + Clone {
    let h = m.headers();
    let n = h.map_or(0, |h| h.count());
    (0..n).map(move |i| {
        let h = h.expect("count > 0").get(i);
        abi::Header {
            name: h.key.as_bytes(),
            value: h.value,
        }
    })
}

/// The exact encoded size of a batch.
fn batch_size_of(batch: &[BorrowedMessage<'_>]) -> usize {
    abi::BATCH_HEADER_LEN
        + batch
            .iter()
            .map(|m| abi::record_size(m.key(), m.payload(), abi::headers_size(headers_of(m))))
            .sum::<usize>()
}

/// Encodes a batch into guest memory.
fn encode(batch: &[BorrowedMessage<'_>], topic_index: u32, buf: &mut [u8]) -> usize {
    let mut w = abi::BatchWriter::new(buf).expect("sized by batch_size_of");
    for m in batch {
        w.push(
            m.offset(),
            m.timestamp().to_millis().unwrap_or(abi::NO_TIMESTAMP),
            m.partition(),
            topic_index,
            m.key(),
            m.payload(),
            headers_of(m),
        )
        .expect("sized by batch_size_of");
    }
    w.finish()
}
