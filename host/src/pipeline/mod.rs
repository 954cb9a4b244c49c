//! The job: wires config, Kafka and the runtime together and runs it.
//!
//! - [`partition_task`]: one partition's loop over batches; [`task_error`]:
//!   how it fails.
//! - [`event_clock`]: watermarks and ticks for plugins that export
//!   `weir_tick`.
//! - [`worker`]: the threads that run partition tasks.
//! - [`assignment`]: which worker owns which partition (Flink's rule).
//! - [`status`]: counters and the periodic status line.
//! - `startup`: everything before the workers start (blocking work, run
//!   off the reactor).
//!
//! [`run`] is the entry point: resolve start positions, assign and split
//! partitions, create one plugin instance per partition, spread the tasks
//! over `parallelism` worker threads, then wait for the end (bounded jobs),
//! a failure, or the shutdown future; flush the producer and commit the
//! processed offsets.

pub mod assignment;
pub mod event_clock;
pub mod partition_task;
mod startup;
pub mod status;
pub mod task_error;
pub mod worker;
pub mod worker_commit;

use crate::checkpoint::coordinator::{self, CheckpointStats, Coordinator};
use crate::checkpoint::{CheckpointError, CheckpointTrigger, TaskCheckpoint};
use crate::config::{Config, ConfigError};
use crate::kafka::embedded::OutputSummary;
use crate::kafka::{KafkaError, consumer, producer};
use crate::metrics::JobMetrics;
use crate::metrics::server::Health;
use crate::runtime::PluginError;
use crate::runtime::snapshot::SnapshotError;
use partition_task::TaskError;
use rdkafka::consumer::Consumer;
use status::StatusReporter;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use worker::{CheckpointLink, WorkerExit};

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Transaction(#[from] Box<worker_commit::TransactionFailure>),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("restoring {topic}/{partition} from checkpoint {id}: {cause}")]
    Restore {
        id: u64,
        topic: String,
        partition: i32,
        cause: SnapshotError,
    },
    #[error("wasmtime engine: {0}")]
    Engine(String),
    /// A thread of the job could not be started.
    #[error("starting the {what} thread: {cause}")]
    Spawn {
        what: &'static str,
        cause: std::io::Error,
    },
    /// A blocking task of the job (start-up, a checkpoint's persistence,
    /// the final flush or commit) panicked.
    #[error("a blocking task of the job failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The embedded demo's checkpoint directory could not be made.
    #[error("demo checkpoint directory: {0}")]
    DemoDirectory(std::io::Error),
    /// The plugin emitted during `weir_init` and the producer refused it.
    #[error("output of weir_init: {0}")]
    InitOutput(#[from] crate::runtime::SinkError),
    #[error("metrics.listen = \"{addr}\": cannot listen there: {cause}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        cause: std::io::Error,
    },
}

/// What a finished job reports.
#[derive(Debug, Clone)]
pub struct JobSummary {
    /// Records read and handed to the plugin.
    pub records_in: u64,
    /// Records the plugin emitted.
    pub records_out: u64,
    /// `(topic, partition, next offset)` at the end.
    pub positions: Vec<(String, i32, i64)>,
    /// `(topic, partition, worker)`: which worker ran each partition.
    pub assignments: Vec<(String, i32, usize)>,
    /// Wall time from the first record to the end.
    pub elapsed: Duration,
    /// For the embedded demo: what the sink topic holds.
    pub embedded_output: Option<OutputSummary>,
    /// The checkpoint the job restored on start, if any.
    pub restored_from: Option<u64>,
    /// Checkpoints completed during the run (including the final one).
    pub checkpoints: u64,
    /// The last completed checkpoint's figures.
    pub last_checkpoint: Option<CheckpointStats>,
    /// Times every task restarted from the last complete checkpoint
    /// because a checkpoint's output could not be delivered.
    pub restarts: u64,
    /// Per partition task, in assignment order.
    pub tasks: Vec<TaskSummary>,
}

/// What one partition task did.
#[derive(Debug, Clone)]
pub struct TaskSummary {
    pub topic: String,
    pub partition: i32,
    /// Records handed to the plugin (replays after a restart count again).
    pub records_in: u64,
    /// Plugin faults handled by `skip` / `dead-letter`.
    pub faults: u64,
    /// Records skipped after they faulted.
    pub skipped: u64,
    /// Records written to the dead-letter topic.
    pub dead_lettered: u64,
    /// Time from the task's start to its end offset (bounded jobs).
    pub finished_after: Option<Duration>,
}

/// How long the producer may take to deliver what is queued at the end.
const FINAL_FLUSH: Duration = Duration::from_secs(60);

/// How long a failing job waits for its workers (and its producer) before
/// it returns the failure anyway. A worker can sit in one blocking Kafka
/// call for the whole transaction timeout (a broker that never answers an
/// EndTxn, as Tansu does for a fenced zombie); nothing such a call could
/// still do matters once the job has failed, since uncommitted work is
/// replayed on restart.
const FAILING_GRACE: Duration = Duration::from_secs(5);

/// Runs the job until it ends (bounded), fails, or `shutdown` resolves.
pub async fn run(
    mut config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<JobSummary, JobError> {
    // The embedded cluster starts empty on every run, so nothing of an
    // earlier run's checkpoints may be restored into it: its checkpoints
    // live in a directory of this run's own.
    let mode = config.delivery_mode();
    let _embedded_checkpoints = if config.is_embedded() && mode.checkpoints() {
        let dir = tempfile::Builder::new()
            .prefix("weir-demo-checkpoints-")
            .tempdir()
            .map_err(JobError::DemoDirectory)?;
        config.checkpoint.directory = dir.path().to_path_buf();
        Some(dir)
    } else {
        None
    };
    // The metrics port first: a port in use fails the job before any work.
    let listener = match config.metrics.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|cause| JobError::MetricsListen { addr, cause })?,
        ),
        None => None,
    };
    let plugin_name = config.pipeline.plugin.file_name().map_or_else(
        || config.pipeline.plugin.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let metrics = Arc::new(JobMetrics::new(&plugin_name));
    // Start-up is blocking work (compiling the module, metadata requests,
    // fencing zombies, restoring plugin memory): off the reactor.
    let config = Arc::new(config);
    let prepared = {
        let (config, metrics) = (config.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || startup::prepare(&config, &metrics))
            .await
            .map_err(JobError::from)??
    };
    let exactly_once = mode.transactional();
    let startup::Prepared {
        store,
        restored_from,
        embedded,
        consumer,
        producer,
        workers,
        all_stats,
        assignments,
    } = prepared;

    // The main queue must still be served (errors, events); partitions
    // deliver to their own queues.
    let stop = Arc::new(AtomicBool::new(false));
    let main_poller = {
        let consumer = consumer.clone();
        let stop = stop.clone();
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
            })?
    };

    let started = Instant::now();
    let task_count = all_stats.len();
    metrics.assigned_partitions.set(task_count as i64);
    metrics.job_started();
    let _metrics_server = listener.map(|listener| {
        let health = Arc::new(Health {
            metrics: metrics.clone(),
            tasks: all_stats.clone(),
            consumer: consumer.clone(),
            checkpoint_interval: mode.checkpoints().then_some(config.checkpoint.interval),
            ready_intervals: config.metrics.ready_checkpoint_intervals,
            timeout: config.kafka.connect_timeout.min(Duration::from_secs(2)),
        });
        tracing::info!(address = %config.metrics.listen.expect("listening"), "metrics at /metrics, health at /healthz and /readyz");
        AbortOnDrop(tokio::spawn(crate::metrics::server::serve(listener, health)))
    });
    let trigger = Arc::new(CheckpointTrigger::default());
    let (answer_tx, mut answer_rx) = tokio::sync::mpsc::unbounded_channel::<TaskCheckpoint>();
    let checkpoints_on = mode.checkpoints();
    let mut eos_id = 0u64;
    // Raised when a checkpoint fails because output was not delivered:
    // every task then restarts from the last complete checkpoint.
    let restarts = Arc::new(AtomicU64::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let link = checkpoints_on.then(|| CheckpointLink {
        trigger: trigger.clone(),
        answers: answer_tx.clone(),
        restarts: restarts.clone(),
        failing: failing.clone(),
    });
    drop(answer_tx);
    let next_id = match &store {
        Some(s) => s.next_id()?,
        None => 1,
    };
    let mut coordinator = Coordinator::new(task_count, next_id);
    let flush_on_checkpoint = mode.flushes_on_checkpoint();
    let log_failures_only = config.sink.log_failures_only;
    let commit_on_checkpoint = config.checkpoint.commit_offsets_on_checkpoint;
    // Makes a set of task checkpoints durable, off the reactor.
    let persist = |id: u64, align: Duration, parts: Vec<TaskCheckpoint>| {
        let store = store.clone().expect("checkpoints enabled");
        let producer = producer.clone();
        let consumer = consumer.clone();
        tokio::task::spawn_blocking(move || {
            coordinator::complete::<JobError>(
                &store,
                id,
                align,
                parts,
                || {
                    if flush_on_checkpoint {
                        producer::flush(&producer, FINAL_FLUSH, log_failures_only)?;
                    }
                    Ok(())
                },
                |positions| {
                    if commit_on_checkpoint {
                        consumer::commit(&consumer, positions)?;
                    }
                    Ok(())
                },
            )
        })
    };
    let mut persisting: Option<tokio::task::JoinHandle<Result<CheckpointStats, JobError>>> = None;
    let mut checkpoints = 0u64;
    let mut last_checkpoint = None;
    let checkpoint_interval = config.checkpoint.interval;
    let mut checkpoint_ticker = tokio::time::interval(if checkpoints_on {
        checkpoint_interval
    } else {
        Duration::from_secs(3600)
    });
    checkpoint_ticker.tick().await;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<WorkerExit>();
    let mut running = 0;
    for worker in workers {
        let stop = stop.clone();
        let done = done_tx.clone();
        let link = link.clone();
        running += 1;
        std::thread::Builder::new()
            .name(format!("weir-worker-{}", worker.id))
            .spawn(move || {
                let exit = worker.run(stop, link);
                let _ = done.send(exit);
            })
            .map_err(|cause| JobError::Spawn {
                what: "worker",
                cause,
            })?;
    }
    drop(done_tx);

    let mut reporter = StatusReporter::default();
    let interval = config.status.interval;
    let mut ticker = tokio::time::interval(if interval.is_zero() {
        Duration::from_secs(3600)
    } else {
        interval
    });
    ticker.tick().await;
    tokio::pin!(shutdown);
    let mut shutdown_seen = false;
    let mut positions = Vec::new();
    let mut failure: Option<JobError> = None;
    let mut failed_checkpoints = 0u32;
    // Set when the job starts failing: the workers' deadline to report.
    let mut give_up: Option<tokio::time::Instant> = None;
    while running > 0 {
        tokio::select! {
            _ = &mut shutdown, if !shutdown_seen => {
                tracing::info!("shutdown requested; stopping workers");
                shutdown_seen = true;
                stop.store(true, Ordering::Relaxed);
            }
            exit = done_rx.recv() => {
                let Some(exit) = exit else { break };
                running -= 1;
                positions.extend(exit.positions);
                for f in exit.finals {
                    if let Some((id, align, parts)) = coordinator.task_finished(f)
                        && persisting.is_none()
                    {
                        persisting = Some(persist(id, align, parts));
                    }
                }
                if let Some(e) = exit.error {
                    tracing::error!(error = %e, "a worker failed; stopping the job");
                    failing.store(true, Ordering::Relaxed);
                    stop.store(true, Ordering::Relaxed);
                    failure.get_or_insert(e);
                    give_up.get_or_insert(tokio::time::Instant::now() + FAILING_GRACE);
                }
            }
            _ = checkpoint_ticker.tick(), if checkpoints_on && persisting.is_none() && failure.is_none() => {
                if exactly_once {
                    // Each worker commits its own transaction between batches.
                    eos_id += 1;
                    checkpoints += 1;
                    trigger.request(eos_id);
                } else if let Some(id) = coordinator.start_next() {
                    trigger.request(id);
                }
            }
            answer = answer_rx.recv(), if store.is_some() => {
                if let Some(tc) = answer
                    && let Some((id, align, parts)) = coordinator.offer(tc)
                {
                    persisting = Some(persist(id, align, parts));
                }
            }
            result = async { persisting.as_mut().expect("guarded").await }, if persisting.is_some() => {
                persisting = None;
                coordinator.finish();
                match result.map_err(JobError::from).and_then(|r| r) {
                    Ok(stats) => {
                        checkpoints += 1;
                        failed_checkpoints = 0;
                        metrics.checkpoint_completed(stats.align + stats.persist, stats.bytes);
                        tracing::info!(
                            checkpoint = stats.id,
                            bytes = stats.bytes,
                            align_ms = stats.align.as_millis() as u64,
                            persist_ms = stats.persist.as_millis() as u64,
                            "checkpoint complete"
                        );
                        last_checkpoint = Some(stats);
                    }
                    Err(JobError::Kafka(e @ KafkaError::Delivery { .. }))
                        if failed_checkpoints < config.pipeline.restart_attempts =>
                    {
                        metrics.checkpoints_failed.inc();
                        // Output of records after the last complete
                        // checkpoint was lost: replay them.
                        failed_checkpoints += 1;
                        tracing::warn!(
                            error = %e,
                            attempt = failed_checkpoints,
                            of = config.pipeline.restart_attempts,
                            "checkpoint failed; every task restarts from the last complete checkpoint"
                        );
                        restarts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        metrics.checkpoints_failed.inc();
                        tracing::error!(error = %e, "checkpoint failed; stopping the job");
                        failing.store(true, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                        failure.get_or_insert(e);
                        give_up.get_or_insert(tokio::time::Instant::now() + FAILING_GRACE);
                    }
                }
            }
            _ = async { tokio::time::sleep_until(give_up.expect("guarded")).await }, if give_up.is_some() => {
                tracing::error!(
                    workers = running,
                    grace_ms = FAILING_GRACE.as_millis() as u64,
                    "workers still busy in a Kafka call after the job failed; not waiting for them"
                );
                break;
            }
            _ = ticker.tick(), if !interval.is_zero() => reporter.report(&all_stats),
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(p) = persisting.take() {
        // A checkpoint that was being written finishes (or fails) first.
        let _ = p.await;
        coordinator.finish();
    }
    let elapsed = started.elapsed();
    reporter.report(&all_stats);

    // Deliver what is queued, then commit only what was processed and
    // delivered. On failure nothing is committed: the input is re-read.
    let flushed = {
        let producer = producer.clone();
        // Failing, the flush is best effort (nothing is committed) and
        // bounded like the wait for the workers.
        let limit = if failure.is_some() {
            FAILING_GRACE
        } else {
            FINAL_FLUSH
        };
        tokio::task::spawn_blocking(move || producer::flush(&producer, limit, log_failures_only))
            .await
            .map_err(JobError::from)?
    };
    let _ = tokio::task::spawn_blocking(move || main_poller.join()).await;
    if let Some(e) = failure {
        return Err(e);
    }
    flushed?;
    positions.sort();
    if store.is_some() {
        // The final checkpoint: every task's state at the end.
        if let Some((id, parts)) = coordinator.final_set() {
            let stats = persist(id, Duration::ZERO, parts)
                .await
                .map_err(JobError::from)??;
            checkpoints += 1;
            tracing::info!(
                checkpoint = stats.id,
                bytes = stats.bytes,
                "final checkpoint complete"
            );
            last_checkpoint = Some(stats);
        }
    } else if !exactly_once {
        let consumer = consumer.clone();
        let positions = positions.clone();
        tokio::task::spawn_blocking(move || consumer::commit(&consumer, &positions))
            .await
            .map_err(JobError::from)??;
    }
    consumer.unassign().ok();

    let records_in = all_stats
        .iter()
        .map(|s| s.records_in.load(Ordering::Relaxed))
        .sum();
    let records_out = all_stats
        .iter()
        .map(|s| s.records_out.load(Ordering::Relaxed))
        .sum();
    let tasks = all_stats
        .iter()
        .map(|s| TaskSummary {
            topic: s.topic.clone(),
            partition: s.partition,
            records_in: s.records_in.load(Ordering::Relaxed),
            faults: s.faults.load(Ordering::Relaxed),
            skipped: s.skipped.load(Ordering::Relaxed),
            dead_lettered: s.dead_lettered.load(Ordering::Relaxed),
            finished_after: s.finished_after(),
        })
        .collect();
    let embedded_output = match &embedded {
        Some(c) => Some(c.read_output(&config.sink.topics[0])?),
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
        positions,
        assignments,
        elapsed,
        embedded_output,
        restored_from,
        checkpoints,
        last_checkpoint,
        restarts: restarts.load(Ordering::Relaxed),
        tasks,
    })
}

/// Aborts a spawned task when dropped (the metrics endpoint ends with the
/// job).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
