//! The running job: a struct with one method per event, and a `finish`
//! that returns the job summary.
//!
//! [`JobDriver::start`] starts the threads a prepared job needs (the main
//! queue's poller, the workers, the metrics endpoint); [`JobDriver::drive`]
//! waits for events and hands each to its method: a worker ended, a
//! checkpoint is due, a task's part of a checkpoint arrived, a checkpoint's
//! persistence finished, the workers overstayed a failure, stop was asked.
//! Job control (stop, failing, the first failure) lives in [`JobControl`],
//! apart from the checkpoint traffic in [`Checkpoints`].

use super::startup::Prepared;
use super::status::{StatusReporter, TaskList, TaskStats};
use super::worker::{CheckpointLink, Worker, WorkerCommand, WorkerExit};
use super::{FAILING_GRACE, FINAL_FLUSH, JobError, JobSummary, TaskSummary};
use crate::checkpoint::TaskCheckpoint;
use crate::checkpoint::coordinator::CheckpointStats;
use crate::config::{Assignment, Config, DeliveryMode};
use crate::kafka::consumer::{PartitionStart, SourceConsumer};
use crate::kafka::embedded::EmbeddedCluster;
use crate::kafka::group::{self, GroupEvent, GroupHooks};
use crate::kafka::producer::SinkProducer;
use crate::kafka::{KafkaError, consumer, producer};
use crate::metrics::JobMetrics;
use crate::metrics::server::{AdminRequest, Health};
use crate::topic_partition::{Position, TopicPartition};
use rdkafka::consumer::Consumer;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

mod admin;
mod checkpoints;
mod membership;
#[cfg(test)]
mod tests;
mod trial;

use checkpoints::{Checkpoints, persisted};
use membership::{discovered, group_event};

/// New partitions being looked for off the reactor.
type Discovering = JoinHandle<Result<Vec<PartitionStart>, KafkaError>>;

/// Stop, failing and the first failure: what ends the job.
struct JobControl {
    /// Tells the workers and the main poller to end.
    stop: Arc<AtomicBool>,
    /// Tells the workers the job failed: no final commit or checkpoint.
    failing: Arc<AtomicBool>,
    /// The shutdown future has resolved.
    shutdown_seen: bool,
    /// The first failure; the job returns it.
    failure: Option<JobError>,
    /// Set when the job starts failing: the workers' deadline to report.
    give_up: Option<tokio::time::Instant>,
}

impl JobControl {
    fn new() -> Self {
        JobControl {
            stop: Arc::new(AtomicBool::new(false)),
            failing: Arc::new(AtomicBool::new(false)),
            shutdown_seen: false,
            failure: None,
            give_up: None,
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The job fails with `e` (the first failure wins) and stops.
    fn fail(&mut self, e: JobError) {
        self.failing.store(true, Ordering::Relaxed);
        self.stop();
        self.failure.get_or_insert(e);
        self.give_up
            .get_or_insert(tokio::time::Instant::now() + FAILING_GRACE);
    }
}

/// A job whose workers are running.
pub(super) struct JobDriver {
    config: Arc<Config>,
    mode: DeliveryMode,
    metrics: Arc<JobMetrics>,
    consumer: Arc<SourceConsumer>,
    producer: Arc<SinkProducer>,
    /// Where the partitions' state files live.
    location: crate::checkpoint::folder::StoreLocation,
    embedded: Option<Arc<EmbeddedCluster>>,
    restored_from: Option<u64>,
    /// Which worker runs each partition task.
    assignments: Vec<(TopicPartition, usize)>,
    /// One per partition task, in assignment order (shared with the
    /// metrics endpoint).
    all_stats: TaskList,
    control: JobControl,
    checkpoints: Checkpoints,
    /// Workers still running.
    running: usize,
    /// Each worker's commands (partitions to adopt or release).
    commands: Vec<std::sync::mpsc::Sender<WorkerCommand>>,
    exits: UnboundedReceiver<WorkerExit>,
    answers: UnboundedReceiver<TaskCheckpoint>,
    /// Workers that commit themselves: `(worker, checkpoint id)` committed.
    committed: UnboundedReceiver<(usize, u64)>,
    /// The next offset of every task that ended or left.
    positions: Vec<Position>,
    /// Every partition the job has run: what discovery does not add again.
    known: HashSet<TopicPartition>,
    /// Every `source.partition_discovery_interval` (unbounded jobs).
    discovery: Option<tokio::time::Interval>,
    /// A look for new partitions, under way off the reactor.
    discovering: Option<Discovering>,
    /// Group assignment: what the rebalance callback reports.
    group_events: Option<UnboundedReceiver<GroupEvent>>,
    /// Taken when the job finishes.
    main_poller: Option<std::thread::JoinHandle<()>>,
    reporter: StatusReporter,
    status_ticker: Option<tokio::time::Interval>,
    started: Instant,
    /// The configured module (what a savepoint keeps beside its states).
    module: crate::runtime::PluginModule,
    /// The savepoint to write once the job has stopped cleanly.
    savepoint_on_stop: Option<String>,
    /// The savepoint to write from the next complete checkpoint, the job
    /// going on (`weir savepoint`).
    savepoint_next: Option<String>,
    /// That savepoint being written off the reactor (no checkpoint starts
    /// meanwhile).
    saving: Option<admin::Saving>,
    /// When a reload was asked for (the job then stops to switch modules).
    reload_requested: Option<Instant>,
    /// `pipeline.reload_on_change`: the files watched, as they were at the
    /// start, and the ticker that looks at them.
    reload_watch: Option<admin::ReloadWatch>,
    /// Admin calls from the metrics endpoint.
    admin: UnboundedReceiver<AdminRequest>,
    /// A reload's new module on trial: no checkpoint until it passes.
    trial: Option<trial::Trial>,
    _metrics_server: Option<AbortOnDrop>,
}

/// An interval whose first tick is one period away (`None`: never ticks).
fn ticker(period: Option<Duration>) -> Option<tokio::time::Interval> {
    let period = period.filter(|p| !p.is_zero())?;
    Some(tokio::time::interval_at(
        tokio::time::Instant::now() + period,
        period,
    ))
}

/// Waits for the next tick of `ticker`, or forever without one.
async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Waits until `deadline`, or forever without one.
async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl JobDriver {
    /// Starts the prepared job's threads and its metrics endpoint.
    pub(super) fn start(
        config: Arc<Config>,
        metrics: Arc<JobMetrics>,
        prepared: Prepared,
        listener: Option<tokio::net::TcpListener>,
    ) -> Result<Self, JobError> {
        let mode = config.delivery_mode();
        let control = JobControl::new();
        let main_poller = spawn_main_poller(prepared.consumer.clone(), control.stop.clone())?;
        metrics
            .assigned_partitions
            .set(prepared.all_stats.len() as i64);
        metrics.job_started();
        let tasks = TaskList::new(prepared.all_stats.clone());
        let (admin_tx, admin) = tokio::sync::mpsc::unbounded_channel();
        let metrics_server = listener.map(|l| {
            let health = health(&config, &metrics, &prepared, &tasks, admin_tx);
            serve_metrics(health, l)
        });
        let checkpoints = Checkpoints::new(&config, mode, &prepared)?;
        let (answer_tx, answers) = tokio::sync::mpsc::unbounded_channel();
        let (committed_tx, committed) = tokio::sync::mpsc::unbounded_channel();
        let link = mode.checkpoints().then(|| CheckpointLink {
            trigger: checkpoints.trigger.clone(),
            answers: answer_tx,
            committed: committed_tx,
            restarts: checkpoints.restarts.clone(),
            failing: control.failing.clone(),
        });
        let Prepared {
            workers,
            consumer,
            producer,
            embedded,
            restored_from,
            assignments,
            location,
            module,
            ..
        } = prepared;
        let known = assignments.iter().map(|(tp, _)| tp.clone()).collect();
        let (commands, exits) = spawn_workers(workers, &control.stop, link)?;
        let group = config.source.assignment == Assignment::Group;
        let group_events = if group {
            Some(join_group(&config, &consumer, &control)?)
        } else {
            None
        };
        Ok(JobDriver {
            config: config.clone(),
            status_ticker: ticker(Some(config.status.interval)),
            mode,
            metrics,
            consumer,
            producer,
            location,
            embedded,
            restored_from,
            assignments,
            all_stats: tasks,
            control,
            checkpoints,
            running: commands.len(),
            commands,
            exits,
            answers,
            committed,
            positions: Vec::new(),
            known,
            discovery: ticker(
                (!config.source.bounded && !group)
                    .then_some(config.source.partition_discovery_interval),
            ),
            discovering: None,
            group_events,
            main_poller: Some(main_poller),
            reporter: StatusReporter::default(),
            started: Instant::now(),
            module,
            savepoint_on_stop: None,
            savepoint_next: None,
            saving: None,
            reload_requested: None,
            reload_watch: admin::ReloadWatch::new(&config),
            admin,
            trial: None,
            _metrics_server: metrics_server,
        })
    }

    /// Hands events to their methods until every worker has ended (or
    /// overstayed a failure).
    pub(super) async fn drive(&mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let has_store = self.checkpoints.persister.is_some();
        while self.running > 0 {
            let may_checkpoint = self.may_checkpoint();
            tokio::select! {
                _ = &mut shutdown, if !self.control.shutdown_seen => self.on_shutdown(),
                exit = self.exits.recv() => match exit {
                    Some(exit) => self.on_worker_exit(exit),
                    None => break,
                },
                _ = tick(&mut self.checkpoints.ticker), if may_checkpoint => self.on_checkpoint_due(),
                answer = self.answers.recv(), if has_store => {
                    if let Some(tc) = answer {
                        self.on_task_checkpoint(tc);
                    }
                }
                Some((worker, id)) = self.committed.recv() => self.on_transaction_committed(worker, id),
                result = persisted(&mut self.checkpoints.persisting) => self.on_persisted(result),
                _ = until(self.control.give_up) => {
                    self.on_give_up();
                    break;
                }
                _ = tick(&mut self.status_ticker) => self.reporter.report(&self.all_stats.snapshot()),
                _ = tick(&mut self.discovery), if self.discovering.is_none() && self.control.failure.is_none() => self.on_discovery_due(),
                found = discovered(&mut self.discovering) => self.on_discovered(found),
                Some(event) = group_event(&mut self.group_events) => self.on_group_event(event).await,
                Some(request) = self.admin.recv() => self.on_admin(request),
                _ = admin::ReloadWatch::tick(&mut self.reload_watch) => self.on_reload_watch(),
                _ = trial::Trial::tick(&mut self.trial) => self.on_trial_tick(),
                saved = admin::saved(&mut self.saving) => self.on_saved(saved),
            }
        }
    }

    /// Whether a checkpoint may start now: none under way or being
    /// savepointed, nothing failed, no module on trial.
    fn may_checkpoint(&self) -> bool {
        self.checkpoints.persisting.is_none()
            && self.saving.is_none()
            && self.control.failure.is_none()
            && !self.on_trial_now()
    }

    /// Whether each worker makes its tasks' progress durable itself
    /// (exactly-once; group assignment), not the checkpoint coordinator.
    fn workers_commit(&self) -> bool {
        self.mode.transactional() || self.config.source.assignment == Assignment::Group
    }

    /// The shutdown future resolved: the workers stop between batches.
    fn on_shutdown(&mut self) {
        // A failure the trial has not looked at yet is not stopped on cleanly.
        self.on_trial_tick();
        tracing::info!("shutdown requested; stopping workers");
        self.control.shutdown_seen = true;
        self.control.stop();
    }

    /// A worker ended: keep its positions and its tasks' final states; a
    /// worker that failed fails the job.
    fn on_worker_exit(&mut self, exit: WorkerExit) {
        self.running -= 1;
        if exit.final_committed {
            self.checkpoints.eos_workers.insert(exit.id, u64::MAX);
        } else {
            self.checkpoints.eos_workers.remove(&exit.id);
        }
        self.positions.extend(exit.positions);
        for f in exit.finals {
            let set = self.checkpoints.coordinator.task_finished(f);
            self.checkpoints.persist(set);
        }
        if let Some(e) = exit.error {
            tracing::error!(error = %e, "a worker failed; stopping the job");
            self.control.fail(e);
        }
    }

    /// The checkpoint interval passed: ask the workers for the next one.
    fn on_checkpoint_due(&mut self) {
        let workers_commit = self.workers_commit();
        let c = &mut self.checkpoints;
        if workers_commit {
            // Each worker commits its own transaction between batches;
            // the checkpoint counts once every worker has committed it.
            c.eos_id += 1;
            c.trigger.request(c.eos_id);
        } else if let Some(id) = c.coordinator.start_next() {
            c.trigger.request(id);
        }
    }

    /// `worker` committed checkpoint `id` itself. A checkpoint is
    /// complete once every worker with a transaction committed it (or a
    /// later one).
    fn on_transaction_committed(&mut self, worker: usize, id: u64) {
        let c = &mut self.checkpoints;
        if let Some(last) = c.eos_workers.get_mut(&worker) {
            *last = (*last).max(id);
        }
        let all = c.eos_workers.values().copied().min().unwrap_or(0);
        if all > c.eos_complete && all != u64::MAX {
            c.eos_complete = all;
            c.completed += 1;
            self.savepoint_if_asked();
        }
    }

    /// A task's part of the checkpoint in flight arrived.
    fn on_task_checkpoint(&mut self, tc: TaskCheckpoint) {
        let set = self.checkpoints.coordinator.offer(tc);
        self.checkpoints.persist(set);
    }

    /// A checkpoint's persistence ended. A delivery failure restarts every
    /// task from the last complete checkpoint (bounded by
    /// `restart_attempts`); any other failure fails the job.
    fn on_persisted(
        &mut self,
        result: Result<Result<CheckpointStats, JobError>, tokio::task::JoinError>,
    ) {
        let c = &mut self.checkpoints;
        c.persisting = None;
        c.coordinator.finish();
        let attempts = self.config.pipeline.restart_attempts;
        match result.map_err(JobError::from).and_then(|r| r) {
            Ok(stats) => {
                c.completed += 1;
                c.failed_in_a_row = 0;
                self.metrics
                    .checkpoint_completed(stats.align + stats.persist, stats.bytes);
                tracing::info!(
                    checkpoint = stats.id,
                    bytes = stats.bytes,
                    align_ms = stats.align.as_millis() as u64,
                    persist_ms = stats.persist.as_millis() as u64,
                    "checkpoint complete"
                );
                c.last = Some(stats);
                self.savepoint_if_asked();
            }
            Err(JobError::Kafka(e @ KafkaError::Delivery { .. }))
                if c.failed_in_a_row < attempts =>
            {
                self.metrics.checkpoints_failed.inc();
                // Output of records after the last complete checkpoint
                // was lost: replay them.
                c.failed_in_a_row += 1;
                tracing::warn!(
                    error = %e,
                    attempt = c.failed_in_a_row,
                    of = attempts,
                    "checkpoint failed; every task restarts from the last complete checkpoint"
                );
                c.restarts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.metrics.checkpoints_failed.inc();
                tracing::error!(error = %e, "checkpoint failed; stopping the job");
                self.control.fail(e);
            }
        }
    }

    /// The job failed and some workers are still inside a Kafka call after
    /// the grace: nothing they could still do matters.
    fn on_give_up(&self) {
        tracing::error!(
            workers = self.running,
            grace_ms = FAILING_GRACE.as_millis() as u64,
            "workers still busy in a Kafka call after the job failed; not waiting for them"
        );
    }

    /// Ends the job: the checkpoint under way, the final flush, then (if
    /// nothing failed) the final checkpoint or offset commit, and the
    /// summary.
    pub(super) async fn finish(mut self) -> Result<JobSummary, JobError> {
        self.control.stop();
        if let Some(p) = self.checkpoints.persisting.take() {
            // A checkpoint that was being written finishes (or fails) first.
            let _ = p.await;
            self.checkpoints.coordinator.finish();
        }
        self.finish_saving().await;
        let elapsed = self.started.elapsed();
        self.reporter.report(&self.all_stats.snapshot());
        let flushed = self.final_flush().await?;
        if let Some(poller) = self.main_poller.take() {
            let _ = tokio::task::spawn_blocking(move || poller.join()).await;
        }
        if let Some(e) = self.control.failure.take() {
            return Err(self.judged(e));
        }
        flushed?;
        self.positions.sort();
        self.final_commit().await?;
        self.consumer.unassign().ok();
        let savepoint = self.take_savepoint().await?;
        let mut summary = self.summary(elapsed)?;
        summary.savepoint = savepoint;
        Ok(summary)
    }

    /// Delivers what is queued. Failing, the flush is best effort (nothing
    /// is committed) and bounded like the wait for the workers.
    async fn final_flush(&self) -> Result<Result<(), KafkaError>, JobError> {
        let producer = self.producer.clone();
        let limit = if self.control.failure.is_some() {
            FAILING_GRACE
        } else {
            FINAL_FLUSH
        };
        let log_failures_only = self.config.sink.log_failures_only;
        Ok(tokio::task::spawn_blocking(move || {
            producer::flush(&producer, limit, log_failures_only)
        })
        .await?)
    }

    /// Commits only what was processed and delivered: the final checkpoint
    /// (every task's state at the end) with a store, the end positions
    /// without one (exactly-once workers committed their own).
    async fn final_commit(&mut self) -> Result<(), JobError> {
        let workers_commit = self.workers_commit();
        let c = &mut self.checkpoints;
        if let Some(persister) = &c.persister {
            if let Some((id, parts)) = c.coordinator.final_set() {
                let stats = persister.spawn(id, Duration::ZERO, parts).await??;
                c.completed += 1;
                tracing::info!(
                    checkpoint = stats.id,
                    bytes = stats.bytes,
                    "final checkpoint complete"
                );
                c.last = Some(stats);
            }
        } else if workers_commit {
            // Every worker's last transaction committed.
            if c.eos_workers.values().all(|&last| last == u64::MAX) && !c.eos_workers.is_empty() {
                c.completed += 1;
            }
        } else {
            let consumer = self.consumer.clone();
            let positions = self.positions.clone();
            tokio::task::spawn_blocking(move || consumer::commit(&consumer, &positions)).await??;
        }
        Ok(())
    }

    /// What the finished job reports.
    fn summary(self, elapsed: Duration) -> Result<JobSummary, JobError> {
        let all_stats = self.all_stats.snapshot();
        let load = |f: fn(&TaskStats) -> &AtomicU64| -> u64 {
            all_stats.iter().map(|s| f(s).load(Ordering::Relaxed)).sum()
        };
        let records_in = load(|s| &s.records_in);
        let records_out = load(|s| &s.records_out);
        let tasks = all_stats.iter().map(|s| task_summary(s)).collect();
        let embedded_output = match &self.embedded {
            Some(c) => Some(c.read_output(&self.config.sink.topics[0])?),
            None => None,
        };
        tracing::info!(
            records_in,
            records_out,
            elapsed_ms = elapsed.as_millis() as u64,
            "job finished"
        );
        Ok(JobSummary {
            records_in,
            records_out,
            positions: self.positions,
            assignments: self.assignments,
            elapsed,
            embedded_output,
            restored_from: self.restored_from,
            checkpoints: self.checkpoints.completed,
            last_checkpoint: self.checkpoints.last,
            restarts: self.checkpoints.restarts.load(Ordering::Relaxed),
            tasks,
            savepoint: None,
            reload_requested: self.reload_requested,
        })
    }
}

/// One task's figures for the summary.
fn task_summary(s: &TaskStats) -> TaskSummary {
    TaskSummary {
        topic: s.topic.clone(),
        partition: s.partition,
        records_in: s.records_in.load(Ordering::Relaxed),
        faults: s.faults.load(Ordering::Relaxed),
        skipped: s.skipped.load(Ordering::Relaxed),
        dead_lettered: s.dead_lettered.load(Ordering::Relaxed),
        finished_after: s.finished_after(),
    }
}

/// Group assignment: the rebalance callback's hooks, then the
/// subscription. Returns where the group's events arrive.
fn join_group(
    config: &Arc<Config>,
    consumer: &Arc<SourceConsumer>,
    control: &JobControl,
) -> Result<UnboundedReceiver<GroupEvent>, JobError> {
    let (events, rx) = tokio::sync::mpsc::unbounded_channel();
    let hooks = GroupHooks {
        config: config.clone(),
        consumer: Arc::downgrade(consumer),
        events,
        stopping: control.stop.clone(),
        revoke_timeout: REVOKE_TIMEOUT,
    };
    if consumer.context().group.set(hooks).is_err() {
        return Err(KafkaError::Option {
            reason: "the consumer is already in a group".into(),
        }
        .into());
    }
    group::subscribe(consumer, config)?;
    tracing::info!(group = %config.kafka.group_id, topics = ?config.source.topics, "subscribed; partitions come from the group");
    Ok(rx)
}

/// How long a revoke waits for the job to commit and let the partitions go.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves the consumer's main queue (errors, events) until `stop`;
/// partitions deliver to their own queues.
fn spawn_main_poller(
    consumer: Arc<SourceConsumer>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, JobError> {
    std::thread::Builder::new()
        .name("weir-consumer".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
                    tracing::warn!(target: "weir::kafka", error = %e, "consumer error");
                }
            }
        })
        .map_err(|cause| JobError::Spawn {
            what: "consumer",
            cause,
        })
}

/// Starts one thread per worker; returns each worker's command sender
/// and where they report their end.
#[allow(clippy::type_complexity)]
fn spawn_workers(
    workers: Vec<Worker>,
    stop: &Arc<AtomicBool>,
    link: Option<CheckpointLink>,
) -> Result<
    (
        Vec<std::sync::mpsc::Sender<WorkerCommand>>,
        UnboundedReceiver<WorkerExit>,
    ),
    JobError,
> {
    let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut commands = Vec::with_capacity(workers.len());
    for worker in workers {
        let (stop, done, link) = (stop.clone(), done_tx.clone(), link.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("weir-worker-{}", worker.id))
            .spawn(move || {
                let _ = done.send(worker.run(stop, link, rx));
            })
            .map_err(|cause| JobError::Spawn {
                what: "worker",
                cause,
            })?;
        commands.push(tx);
    }
    Ok((commands, done_rx))
}

/// What the metrics endpoint reads, and where its admin calls go.
fn health(
    config: &Config,
    metrics: &Arc<JobMetrics>,
    prepared: &Prepared,
    tasks: &TaskList,
    admin: tokio::sync::mpsc::UnboundedSender<AdminRequest>,
) -> Arc<Health> {
    Arc::new(Health {
        metrics: metrics.clone(),
        tasks: tasks.clone(),
        consumer: prepared.consumer.clone(),
        checkpoint_interval: config
            .delivery_mode()
            .checkpoints()
            .then_some(config.checkpoint.interval),
        ready_intervals: config.metrics.ready_checkpoint_intervals,
        timeout: config.kafka.connect_timeout.min(Duration::from_secs(2)),
        admin,
    })
}

/// Serves `/metrics`, `/healthz`, `/readyz` and the admin calls until the
/// job ends.
fn serve_metrics(health: Arc<Health>, listener: tokio::net::TcpListener) -> AbortOnDrop {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "metrics at /metrics, health at /healthz and /readyz");
    }
    AbortOnDrop(tokio::spawn(crate::metrics::server::serve(
        listener, health,
    )))
}

/// Aborts a spawned task when dropped (the metrics endpoint ends with the
/// job).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
