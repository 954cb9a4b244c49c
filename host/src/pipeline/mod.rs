//! The job: wires config, Kafka and the runtime together and runs it.
//!
//! - [`plan`]: per partition, where it starts, which worker runs it and
//!   where its state comes from (a pure function of what start-up found).
//! - [`durability`]: how a task's progress becomes durable, one
//!   implementation per delivery mode behind one interface.
//! - [`task_env`]: what every task shares, and the one way to make a
//!   task's instance; [`task_factory`]: a plan entry in, a task out.
//! - [`hot_reload`]: switching a running job to another module at a
//!   checkpoint boundary, and back when the new one cannot start.
//! - [`savepoint_options`]: starting from a savepoint, and leaving one at
//!   a clean stop.
//! - [`state_upgrade`]: a state another plugin module wrote, taken over
//!   through portable state (ABI 1.1).
//! - [`partition_task`]: one partition's loop over batches; [`task_error`]:
//!   how it fails.
//! - [`event_clock`]: watermarks and ticks for plugins that export
//!   `weir_tick`.
//! - [`worker`]: the threads that run partition tasks, adopting and
//!   releasing partitions between rounds; [`worker_commit`]: a worker's
//!   exactly-once transaction.
//! - [`assignment`]: which worker owns which partition (Flink's rule).
//! - [`status`]: counters and the periodic status line.
//! - `startup`: everything before the workers start (blocking work, run
//!   off the reactor).
//! - `job_driver`: the running job, one method per event (a worker ends, a
//!   checkpoint is due or completes, a failure, stop, new partitions) and
//!   its `finish`; `job_driver::membership`: adding and removing a
//!   partition of the running job; `job_driver::checkpoints`: the
//!   checkpoint traffic; `job_driver::admin`: savepoints and reload asked
//!   of the running job; `job_driver::trial`: a reloaded module's trial.
//!
//! [`run`] is the entry point: `startup` resolves start positions, plans,
//! assigns and splits partitions and builds one task per partition; the
//! driver runs the tasks on `parallelism` worker threads, waits for the
//! end (bounded jobs), a failure, or the shutdown future, then flushes the
//! producer and commits the processed offsets.

pub mod assignment;
pub mod durability;
pub mod event_clock;
pub mod hot_reload;
mod job_driver;
pub mod partition_task;
pub mod plan;
pub mod savepoint_options;
mod startup;
pub mod state_upgrade;
pub mod status;
pub mod task_env;
pub mod task_error;
pub mod task_factory;
pub mod worker;
pub mod worker_commit;
pub mod worker_durability;

use crate::checkpoint::CheckpointError;
use crate::checkpoint::coordinator::CheckpointStats;
use crate::config::{Config, ConfigError};
use crate::kafka::KafkaError;
use crate::kafka::embedded::OutputSummary;
use crate::metrics::JobMetrics;
use crate::runtime::PluginError;
use crate::runtime::snapshot::SnapshotError;
use crate::topic_partition::{Position, TopicPartition};
use job_driver::JobDriver;
use partition_task::TaskError;
pub use savepoint_options::SavepointOptions;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

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
    /// A partition's task could not be built.
    #[error("starting the task of {tp}: {cause}")]
    Build {
        tp: crate::topic_partition::TopicPartition,
        cause: Box<task_factory::BuildError>,
    },
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Savepoint(#[from] savepoint_options::SavepointError),
    /// A partition to remove is not assigned to this job.
    #[error("{0} is not assigned to this job")]
    NotAssigned(crate::topic_partition::TopicPartition),
    /// A worker ended while the job asked something of it.
    #[error("worker {worker} has ended")]
    WorkerGone { worker: usize },
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
    /// A batch of the module a reload switched to failed during its trial.
    #[error("{tp}: a batch failed (see the log above)")]
    TrialBatch {
        tp: crate::topic_partition::TopicPartition,
    },
    /// The module a reload switched to failed during its trial: the
    /// reload rolls back.
    #[error("the module a reload switched to failed during its trial: {0}")]
    FailedTrial(Box<JobError>),
    /// Hot reload could not keep the running module aside for a rollback.
    #[error("reload: keeping {path} for a rollback: {cause}")]
    KeepModule {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
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
    /// Each partition's next offset at the end.
    pub positions: Vec<Position>,
    /// Which worker ran each partition.
    pub assignments: Vec<(TopicPartition, usize)>,
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
    /// The savepoint written at the stop, if one was asked for: its name
    /// and its metadata file.
    pub savepoint: Option<(String, std::path::PathBuf)>,
    /// The job stopped because a reload was asked for, at this moment.
    pub reload_requested: Option<std::time::Instant>,
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
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<JobSummary, JobError> {
    run_with(config, SavepointOptions::default(), shutdown).await
}

/// [`run`], starting from a savepoint or leaving one at a clean stop, as
/// `options` ask.
pub async fn run_with(
    config: Config,
    options: SavepointOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<JobSummary, JobError> {
    start(config, options).await?.run(shutdown).await
}

/// A job whose start-up succeeded: its workers run.
pub struct StartedJob {
    driver: JobDriver,
    /// The embedded demo's checkpoint directory, removed at the end.
    _embedded_checkpoints: Option<TempDir>,
}

impl StartedJob {
    /// Runs the job until it ends (bounded), fails, or `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<JobSummary, JobError> {
        self.driver.drive(shutdown).await;
        self.driver.finish().await
    }

    /// Puts the module on trial (a reload's new module): no checkpoint
    /// until every partition has processed a batch or `limit` has passed;
    /// a failed batch meanwhile fails the job as [`JobError::FailedTrial`].
    pub fn on_trial(self, limit: Duration) -> Self {
        StartedJob {
            driver: self.driver.on_trial(limit),
            ..self
        }
    }
}

/// Starts the job: everything that can refuse it (config, plugin, broker,
/// store, restoring or taking over each partition's state) happens here.
pub async fn start(mut config: Config, options: SavepointOptions) -> Result<StartedJob, JobError> {
    let _embedded_checkpoints = demo_checkpoint_directory(&mut config)?;
    // The metrics port first: a port in use fails the job before any work.
    let listener = match config.metrics.listen {
        Some(addr) => Some(bind(addr).await?),
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
        let options = options.clone();
        tokio::task::spawn_blocking(move || startup::prepare(&config, &options, &metrics)).await??
    };
    let driver = JobDriver::start(config, metrics, prepared, listener)?
        .with_savepoint_on_stop(options.on_stop);
    Ok(StartedJob {
        driver,
        _embedded_checkpoints,
    })
}

/// Binds the metrics port. A job started again in this process (a reload)
/// may find the previous run's endpoint still closing: a port in use is
/// tried again for a moment.
async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, JobError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(cause) => return Err(JobError::MetricsListen { addr, cause }),
        }
    }
}

/// The embedded cluster starts empty on every run, so nothing of an
/// earlier run's checkpoints may be restored into it: its checkpoints live
/// in a directory of this run's own, removed when the returned guard drops.
fn demo_checkpoint_directory(config: &mut Config) -> Result<Option<TempDir>, JobError> {
    if !(config.is_embedded() && config.delivery_mode().checkpoints()) {
        return Ok(None);
    }
    let dir = tempfile::Builder::new()
        .prefix("weir-demo-checkpoints-")
        .tempdir()
        .map_err(JobError::DemoDirectory)?;
    config.checkpoint.directory = dir.path().to_path_buf();
    Ok(Some(dir))
}
