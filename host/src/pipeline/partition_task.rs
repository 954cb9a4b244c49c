//! The partition task: the unit to read first.
//!
//! It owns one partition's queue, one plugin instance (its own `Store`,
//! memory and state) and the partition's next offset. Each step takes the
//! records already waiting (up to `batch_size`), encodes them straight into
//! the guest's input buffer, calls the plugin once, and advances the offset.
//! Checkpoints (a capture of the instance plus the offset) are taken
//! between steps, when no guest frame is on the stack.

use super::durability::{CheckpointPart, Durability, RestorePoint};
use super::event_clock::{self, EventClock};
use super::status::TaskStats;
use super::task_env::TaskEnv;
use crate::checkpoint::TaskCheckpoint;
use crate::checkpoint::store::CheckpointError;
use crate::config::FaultPolicy;
use crate::kafka::consumer::{PartitionStart, SourceQueue};
use crate::kafka::dead_letter;
use crate::kafka::producer::SinkProducer;
use crate::runtime::PluginInstance;
use crate::runtime::instance::BatchError;
use crate::runtime::{PluginFault, SinkError};
use crate::topic_partition::TopicPartition;
use rdkafka::Message;
use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;
use weir_plugin_sdk::abi;

pub use super::task_error::{RestartError, TaskError, TaskFailure};

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
    queue: Arc<SourceQueue>,
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
    durability: Box<dyn Durability>,
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

impl PartitionTask {
    /// A task over `queue`, with an instance already initialised.
    pub fn new(
        start: PartitionStart,
        queue: SourceQueue,
        instance: PluginInstance,
        stats: Arc<TaskStats>,
        durability: Box<dyn Durability>,
        env: Arc<TaskEnv>,
    ) -> Self {
        let plugin = env.module.name.clone();
        let batch_size = env.batch_size;
        let initial_offset = start.start;
        let span = tracing::info_span!(
            "task", plugin = %plugin, topic = %start.tp.topic, partition = start.tp.partition
        );
        let clock = EventClock::new(env.time, instance.event_time(), Instant::now());
        PartitionTask {
            next_offset: start.start,
            start,
            queue: Arc::new(queue),
            clock,
            instance,
            plugin,
            batch_size,
            stats,
            span,
            finished: false,
            checkpointed: 0,
            initial_offset,
            durability,
            env,
            failures: 0,
            fail_mark: None,
            retry_at: None,
            poison: BTreeMap::new(),
            suspects: Vec::new(),
        }
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
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
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
        self.durability.use_producer(producer);
        self.wait_until(self.retry_at.map_or(at, |r| r.max(at)));
    }

    /// The task restarts at `at`, not before.
    fn wait_until(&mut self, at: Instant) {
        self.retry_at = Some(at);
        self.stats.waiting.store(true, Ordering::Relaxed);
    }

    /// Restarts the task if its backoff has passed: fresh instance, state
    /// and offset from its durability's restore point (the last
    /// checkpoint, the last commit, the committed offset), the partition
    /// re-read from there. Other partitions are not touched.
    pub fn restart_if_due(&mut self) -> Result<bool, TaskError> {
        match self.retry_at {
            Some(at) if Instant::now() >= at => {}
            _ => return Ok(false),
        }
        self.retry_at = None;
        let at = self.next_offset;
        self.restart()
            .map_err(|e| self.error(at, at, TaskFailure::Restart(e)))?;
        Ok(true)
    }

    /// Restarts the task now, whatever its backoff (a partition released
    /// while it waits leaves at its last durable point).
    pub fn restart_now(&mut self) -> Result<(), TaskError> {
        self.retry_at = Some(Instant::now());
        self.restart_if_due().map(|_| ())
    }

    /// The restart itself (see [`restart_if_due`](Self::restart_if_due)).
    fn restart(&mut self) -> Result<(), RestartError> {
        let point = self.durability.restore_point(&self.start.tp)?;
        let RestorePoint { offset, snapshot } = point.unwrap_or(RestorePoint {
            offset: self.initial_offset,
            snapshot: None,
        });
        let instance = self.env.instance(&*self.durability, snapshot.as_ref())?;
        let tp = &self.start.tp;
        self.env
            .consumer
            .seek(
                &tp.topic,
                tp.partition,
                Offset::Offset(offset),
                self.env.timeout,
            )
            .map_err(|cause| RestartError::Seek { offset, cause })?;
        self.clock = EventClock::new(self.env.time, instance.event_time(), Instant::now());
        self.instance = instance;
        self.next_offset = offset;
        self.finished = false;
        self.stats.position.store(offset, Ordering::Relaxed);
        self.stats.waiting.store(false, Ordering::Relaxed);
        self.env
            .metrics
            .task_restarts
            .with_label_values(&[tp.topic.as_str(), &tp.partition.to_string()])
            .inc();
        let _enter = self.span.clone().entered();
        tracing::info!(
            offset,
            restored = snapshot.is_some(),
            "partition task restarted"
        );
        Ok(())
    }

    fn error(&self, first_offset: i64, last_offset: i64, source: TaskFailure) -> TaskError {
        TaskError {
            plugin: self.plugin.to_string(),
            topic: self.start.tp.topic.clone(),
            partition: self.start.tp.partition,
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
        ticket: Option<usize>,
    ) -> Result<(), TaskFailure> {
        let offset = m.offset();
        match &self.env.dead_letter_topic {
            Some(dlq) if self.env.on_fault == FaultPolicy::DeadLetter => {
                let producer = self.durability.producer();
                let tracking = self.durability.tracker().zip(ticket);
                let why = dead_letter::DeadLetter {
                    topic: &self.start.tp.topic,
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

    /// Whether a checkpoint would have something to make durable now
    /// (input read since the last one, and no restart pending).
    pub fn has_uncommitted(&self) -> bool {
        self.retry_at.is_none() && self.durability.has_uncommitted(self.next_offset)
    }

    /// The task's part of checkpoint `id`, taken between batches (no guest
    /// frame on the stack): a capture for the coordinator, or (exactly-once)
    /// the state file for the task's next offset, which its worker's
    /// transaction then commits. Nothing while the task waits for a
    /// restart: its instance is not to be trusted, and (exactly-once) its
    /// output went with an aborted transaction.
    pub fn checkpoint(&mut self, id: u64) -> Result<CheckpointPart, CheckpointError> {
        if self.retry_at.is_some() {
            // Answered once restarted (the worker asks only tasks that run).
            return Ok(CheckpointPart::Nothing);
        }
        self.checkpointed = id;
        let _enter = self.span.clone().entered();
        let part =
            self.durability
                .checkpoint(id, &self.start.tp, self.next_offset, &mut self.instance)?;
        if let CheckpointPart::Capture(c) = &part {
            self.forget_before(c.offset);
        }
        Ok(part)
    }

    /// The part [`checkpoint`](Self::checkpoint) returned is durable at
    /// `offset` (exactly-once: the worker's transaction committed it).
    pub fn completed(&mut self, offset: i64) {
        self.forget_before(offset);
        if let Err(e) = self.durability.completed(offset) {
            let _enter = self.span.clone().entered();
            tracing::warn!(error = %e, "pruning old state files failed; retried at the next commit");
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
            tp: self.start.tp.clone(),
            offset: self.next_offset,
            capture: self.instance.capture(true),
        }
    }

    /// The task's partition.
    pub fn tp(&self) -> &TopicPartition {
        &self.start.tp
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
            return self.finish();
        }
        let _enter = self.span.clone().entered();
        // The batch borrows the queue, not the task.
        let queue = self.queue.clone();
        let batch = self.poll_batch(&queue, wait);
        let Some(last) = batch.last() else {
            drop(batch);
            if self.instance.has_tick() {
                self.tick_idle()?;
            }
            return Ok(Step::Idle);
        };
        let next = last.offset() + 1;
        let ticket = self.durability.begin_batch(next);
        let mut emitted = self.process(&batch, ticket)?;
        let n = batch.len();
        drop(batch);
        self.next_offset = next;
        if self.instance.has_tick() {
            // The tick's output belongs to this batch: same ticket, same
            // checkpoint, same transaction.
            let now = Instant::now();
            self.clock.records_arrived(now);
            emitted += self.tick_if_due(now, next)?;
        }
        self.durability.end_batch(ticket);
        self.batch_done(n, emitted);
        Ok(Step::Processed(n))
    }

    /// The end of a bounded task: the final watermark closes every window,
    /// once (the event time it sets is snapshotted, so a restore does not
    /// repeat it).
    fn finish(&mut self) -> Result<Step, TaskError> {
        if self.instance.has_tick() && self.instance.event_time() != abi::WATERMARK_END {
            self.instance.observe_event_time(abi::WATERMARK_END);
            self.tick_alone(Instant::now())?;
        }
        self.finished = true;
        self.stats.finish();
        Ok(Step::Finished)
    }

    /// The records waiting in `queue`, up to `batch_size` and the end of a
    /// bounded task; waits up to `wait` for the first.
    fn poll_batch<'q>(&self, queue: &'q SourceQueue, wait: Duration) -> Vec<BorrowedMessage<'q>> {
        let mut batch = Vec::with_capacity(self.batch_size.min(4096));
        let mut timeout = wait;
        while batch.len() < self.batch_size {
            match queue.poll(timeout) {
                None => break,
                Some(Ok(m)) => {
                    if self.at_end(m.offset()) {
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
        batch
    }

    /// Hands a batch to the plugin: usually in one call. Records known to
    /// fault go to the policy instead, records of a batch that faulted go
    /// one per call (see `failed`), and a late record waits until the
    /// plugin was given the watermark it is late against (see
    /// `event_clock`). Returns what the plugin emitted.
    fn process(
        &mut self,
        batch: &[BorrowedMessage<'_>],
        ticket: Option<usize>,
    ) -> Result<u64, TaskError> {
        let mut emitted = 0;
        let mut rest = batch;
        while let Some(m) = rest.first() {
            let at = m.offset();
            if let Some(fault) = self.poison.get(&at).cloned() {
                self.divert(m, &fault, ticket)
                    .map_err(|e| self.error(at, at, e))?;
                rest = &rest[1..];
                continue;
            }
            let mut len = self.clean_run(rest);
            if self.instance.has_tick() {
                emitted += self.tick_if_due(Instant::now(), at)?;
                let timestamps = rest.iter().map(|m| m.timestamp().to_millis());
                len = len.min(
                    self.clock
                        .late_split(self.instance.event_time(), timestamps),
                );
            }
            let (chunk, tail) = rest.split_at(len);
            emitted += self.call(chunk)?;
            rest = tail;
        }
        Ok(emitted)
    }

    /// How many records from the start of `rest` may go in one call: all
    /// of them unless fault bookkeeping says otherwise.
    fn clean_run(&self, rest: &[BorrowedMessage<'_>]) -> usize {
        if self.poison.is_empty() && self.suspects.is_empty() {
            return rest.len();
        }
        if self.is_suspect(rest[0].offset()) {
            return 1;
        }
        rest.iter()
            .position(|m| self.poison.contains_key(&m.offset()) || self.is_suspect(m.offset()))
            .unwrap_or(rest.len())
    }

    /// One plugin call over `chunk`; returns what it emitted.
    fn call(&mut self, chunk: &[BorrowedMessage<'_>]) -> Result<u64, TaskError> {
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
        let last = chunk[chunk.len() - 1].offset();
        let emitted = result.map_err(|e| self.error(first, last, e.into()))?;
        if let Some(t) = chunk.iter().filter_map(|m| m.timestamp().to_millis()).max() {
            self.instance.observe_event_time(t);
        }
        Ok(emitted)
    }

    /// Counts a processed batch; a task that got past the batch that
    /// failed last has its failures forgiven.
    fn batch_done(&mut self, n: usize, emitted: u64) {
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
        let ticket = self.durability.begin_batch(self.next_offset);
        let at = self.next_offset;
        let emitted = self
            .instance
            .tick(watermark, event_clock::processing_time())
            .map_err(|e| self.error(at, at, TaskFailure::Tick(e)))?;
        self.durability.end_batch(ticket);
        self.stats.records_out.fetch_add(emitted, Ordering::Relaxed);
        Ok(())
    }

    /// Calls `weir_tick` inside a batch if the watermark advanced or the
    /// tick interval passed at `now`; a failure is reported at offset
    /// `at`. Returns what it emitted.
    fn tick_if_due(&mut self, now: Instant, at: i64) -> Result<u64, TaskError> {
        let Some(watermark) = self.clock.due(self.instance.event_time(), now) else {
            return Ok(0);
        };
        self.instance
            .tick(watermark, event_clock::processing_time())
            .map_err(|e| self.error(at, at, TaskFailure::Tick(e)))
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
