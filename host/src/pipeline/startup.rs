//! Everything a job does before its workers start: load and compile the
//! plugin, open the checkpoint store and find what to restore, connect,
//! check the topics, fence exactly-once zombies and read their committed
//! progress, resolve start positions, assign partitions, and create (or
//! restore) one plugin instance per partition task.
//!
//! All of it blocks (Cranelift compiles, metadata requests,
//! `init_transactions`, copying restored memory), so [`super::run`] calls
//! [`prepare`] through `spawn_blocking`: the reactor stays free for the
//! shutdown signal and the timers.

use super::durability;
use super::event_clock::TimeConfig;
use super::plan::{self, PlanEntry, Recovered, StateOrigin};
use super::savepoint_options::{self, SavepointOptions};
use super::state_upgrade::StateUpgrade;
use super::status::TaskStats;
use super::task_env::TaskEnv;
use super::task_factory::TaskFactory;
use super::worker::Worker;
use super::worker_commit::{CommitError, TransactionFailure, WorkerCommit};
use super::worker_durability::{OffsetCommit, WorkerDurability};
use super::{JobError, assignment};
use crate::checkpoint::CheckpointStore;
use crate::checkpoint::CompletedCheckpoint;
use crate::checkpoint::folder::StoreLocation;
use crate::checkpoint::module_archive::ModuleArchive;
use crate::checkpoint::savepoint::Savepoint;
use crate::checkpoint::transactional::{self, PartitionStateDir};
use crate::config::{Assignment, Config, DeliveryMode};
use crate::kafka::consumer::{PartitionStart, SourceConsumer, SourceQueue};
use crate::kafka::embedded::EmbeddedCluster;
use crate::kafka::producer::SinkProducer;
use crate::kafka::transaction::{self, WorkerTransaction};
use crate::kafka::{consumer, producer};
use crate::metrics::JobMetrics;
use crate::runtime::snapshot::Snapshot;
use crate::runtime::{PluginEngine, PluginModule};
use crate::topic_partition::TopicPartition;
use std::collections::HashMap;
use std::sync::Arc;

/// What the running job needs from its start-up.
pub(super) struct Prepared {
    /// The configured plugin module.
    pub module: PluginModule,
    /// The checkpoint store (checkpoints on, not exactly-once).
    pub store: Option<CheckpointStore>,
    /// Where the per-partition state files live (local or object store).
    pub location: StoreLocation,
    /// The checkpoint the job's state came from, if any.
    pub restored_from: Option<u64>,
    /// The in-process demo cluster (no bootstrap servers configured).
    pub embedded: Option<Arc<EmbeddedCluster>>,
    pub consumer: Arc<SourceConsumer>,
    /// The shared producer (every guarantee but exactly-once, whose
    /// workers own transactional producers).
    pub producer: Arc<SinkProducer>,
    /// The workers, each with its partition tasks.
    pub workers: Vec<Worker>,
    /// One per partition task, in plan order.
    pub all_stats: Vec<Arc<TaskStats>>,
    /// Which worker runs each partition task.
    pub assignments: Vec<(TopicPartition, usize)>,
}

/// Sets the job up; blocking (see the module docs).
pub(super) fn prepare(
    config: &Config,
    options: &SavepointOptions,
    metrics: &Arc<JobMetrics>,
) -> Result<Prepared, JobError> {
    config.validate()?;
    let module = load_plugin(config)?;
    let mode = config.delivery_mode();
    let location = config.checkpoint_location()?;
    location.probe()?;
    savepoint_options::check(config, mode, &location, options)?;
    let archive = keep_module(&location, mode, &module)?;
    let savepoint = match &options.from {
        Some(which) => Some(savepoint_options::read(&location, which, archive.as_ref())?),
        None => None,
    };
    let (store, restored) = open_store(config, mode, savepoint.as_ref())?;
    let embedded = start_embedded(config, mode)?;
    let bootstrap = match &embedded {
        Some(c) => c.bootstrap_servers(),
        None => config.kafka.bootstrap_servers.clone(),
    };
    let consumer = consumer::create(config, &bootstrap)?;
    check_output_topics(config, &consumer)?;
    let producer = producer::create(config, &bootstrap)?;
    let writer = process_writer(config);
    let group = config.source.assignment == Assignment::Group;
    // Exactly-once: fence every zombie before reading committed offsets.
    let commits: Vec<Option<Box<dyn WorkerDurability>>> = if mode.transactional() {
        start_transactions(config, &bootstrap, &consumer, metrics, &writer)?
            .into_iter()
            .map(|c| c.map(|c| Box::new(c) as Box<dyn WorkerDurability>))
            .collect()
    } else if group {
        offset_commits(config, mode, &producer, &consumer, metrics, &writer)
    } else {
        Vec::new()
    };
    // Group assignment: no partition before the group gives it.
    let mut starts = match config.source.assignment {
        Assignment::Manual => consumer::resolve_starts(config, &consumer)?,
        Assignment::Group => Vec::new(),
    };
    if let (Some(savepoint), true) = (&savepoint, mode.transactional()) {
        savepoint_options::into_state_files(&location, savepoint, &mut starts)?;
    }
    let recovered = recovered(&location, mode, restored.as_ref(), &starts)?;
    let plan = plan::plan(starts, &recovered, config.pipeline.parallelism)?;
    let planned: Vec<PartitionStart> = plan.iter().map(|e| e.start.clone()).collect();
    let queues = consumer::assign(&consumer, &planned)?;
    if mode.auto_commit() {
        tracing::info!("checkpoints off: offsets of delivered output are auto-committed");
    }
    let env = Arc::new(task_env(config, (&module, archive), &consumer, metrics));
    let factory = Arc::new(TaskFactory {
        env,
        durability: durability::factory(
            config,
            mode,
            (&writer, &location),
            store.clone(),
            &consumer,
            &producer,
        ),
        plugin_path: config.plugin_path(),
    });
    let restored_from = restored.as_ref().map(|c| c.id);
    let (workers, all_stats, assignments) =
        build_workers(config, &factory, commits, plan, queues, restored)?;
    Ok(Prepared {
        module,
        store,
        location,
        restored_from,
        embedded,
        consumer,
        producer,
        workers,
        all_stats,
        assignments,
    })
}

/// What is durable from earlier runs, for the plan: the store's latest
/// checkpoint (at-least-once, none), or the partitions' exactly-once state
/// files.
fn recovered(
    location: &StoreLocation,
    mode: DeliveryMode,
    restored: Option<&CompletedCheckpoint>,
    starts: &[PartitionStart],
) -> Result<Recovered, JobError> {
    if mode.transactional() {
        let mut files = HashMap::new();
        for s in starts {
            let dir = PartitionStateDir::open(location, &s.tp.topic, s.tp.partition)?;
            files.insert(s.tp.clone(), dir.files()?);
        }
        return Ok(Recovered::StateFiles(files));
    }
    Ok(match restored {
        Some(c) => Recovered::Checkpoint {
            id: c.id,
            offsets: c
                .partitions
                .iter()
                .map(|p| (p.tp.clone(), p.offset))
                .collect(),
        },
        None => Recovered::Nothing,
    })
}

/// The workers with their tasks, built from the plan: each task's
/// instance restored from its state (see `TaskFactory::build`).
#[allow(clippy::type_complexity)]
fn build_workers(
    config: &Config,
    factory: &Arc<TaskFactory>,
    mut commits: Vec<Option<Box<dyn WorkerDurability>>>,
    plan: Vec<PlanEntry>,
    queues: Vec<SourceQueue>,
    restored: Option<CompletedCheckpoint>,
) -> Result<
    (
        Vec<Worker>,
        Vec<Arc<TaskStats>>,
        Vec<(TopicPartition, usize)>,
    ),
    JobError,
> {
    let mut snapshots: HashMap<TopicPartition, Snapshot> = restored
        .map(|c| c.partitions)
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.tp, p.state))
        .collect();
    let mut workers: Vec<Worker> = (0..config.pipeline.parallelism)
        .map(|id| Worker {
            id,
            tasks: Vec::new(),
            commit: commits.get_mut(id).and_then(Option::take),
            factory: factory.clone(),
            bounded: config.source.bounded,
        })
        .collect();
    let mut all_stats = Vec::new();
    let mut assignments = Vec::new();
    for (entry, queue) in plan.into_iter().zip(queues) {
        let (start, w) = (&entry.start, entry.worker);
        tracing::info!(topic = %start.tp.topic, partition = start.tp.partition, worker = w, start = start.start, end = ?start.end, "partition assigned");
        let snapshot = match entry.state {
            StateOrigin::Checkpoint { .. } => snapshots.remove(&start.tp),
            _ => None,
        };
        let stats = Arc::new(TaskStats::new(
            &start.tp.topic,
            start.tp.partition,
            start.start,
        ));
        let producer = workers[w].commit.as_ref().and_then(|c| c.producer());
        let task = factory
            .build(&entry, queue, snapshot, producer.as_ref(), stats.clone())
            .map_err(|e| factory.job_error(e, &entry))?;
        assignments.push((start.tp.clone(), w));
        all_stats.push(stats);
        workers[w].tasks.push(task);
    }
    Ok((workers, all_stats, assignments))
}

/// Compiles the configured plugin.
fn load_plugin(config: &Config) -> Result<PluginModule, JobError> {
    let engine = PluginEngine::with_limits(config.limits.to_limits())
        .map_err(|e| JobError::Engine(format!("{e:#}")))?;
    let plugin_path = config.plugin_path();
    let module = PluginModule::load(&engine, &plugin_path)?;
    tracing::info!(plugin = %module.name, path = %plugin_path.display(), "plugin loaded");
    Ok(module)
}

/// At-least-once / none: the checkpoint store is the source of truth, and
/// its latest complete checkpoint is what the job restores. (Exactly-once:
/// Kafka is; see `kafka::transaction`.)
fn open_store(
    config: &Config,
    mode: DeliveryMode,
    savepoint: Option<&Savepoint>,
) -> Result<(Option<CheckpointStore>, Option<CompletedCheckpoint>), JobError> {
    // Group assignment keeps per-partition state files instead.
    if !mode.uses_store() || config.source.assignment == Assignment::Group {
        return Ok((None, None));
    }
    let store = CheckpointStore::open(&config.checkpoint_dir(), config.checkpoint.retain)?
        .with_full_snapshot_every(config.checkpoint.full_snapshot_every);
    if let Some(savepoint) = savepoint {
        let id = savepoint_options::into_store(&store, savepoint)?;
        tracing::info!(
            checkpoint = id,
            "savepoint written into the checkpoint store as its newest checkpoint"
        );
    }
    let restored = store.latest()?;
    if let Some(c) = &restored {
        tracing::info!(
            checkpoint = c.id,
            partitions = c.partitions.len(),
            "restoring from checkpoint; its offsets win over the start position"
        );
    }
    Ok((Some(store), restored))
}

/// The demo cluster, seeded, when no bootstrap servers are configured.
fn start_embedded(
    config: &Config,
    mode: DeliveryMode,
) -> Result<Option<Arc<EmbeddedCluster>>, JobError> {
    if !config.is_embedded() {
        return Ok(None);
    }
    let cluster = Arc::new(EmbeddedCluster::start(config)?);
    let n = cluster.seed(&config.source.topics[0])?;
    tracing::info!(records = n, topic = %config.source.topics[0], "sample input written");
    if mode.checkpoints() {
        // Show recovery: a failure once half the output is written.
        cluster.start_failure_drill(&config.sink.topics[0], n as i64 / 2);
    }
    Ok(Some(cluster))
}

/// The sink and dead-letter topics exist (within the connect timeout).
fn check_output_topics(config: &Config, consumer: &SourceConsumer) -> Result<(), JobError> {
    for topic in &config.sink.topics {
        consumer::partitions_of(consumer, topic, "sink", config.kafka.connect_timeout)?;
    }
    if let Some(dlq) = &config.pipeline.dead_letter_topic {
        consumer::partitions_of(
            consumer,
            dlq,
            "dead-letter (pipeline.dead_letter_topic)",
            config.kafka.connect_timeout,
        )?;
    }
    Ok(())
}

/// A job that keeps state keeps its module beside it, so that a later
/// module can take the state over (see `checkpoint::module_archive`).
fn keep_module(
    location: &StoreLocation,
    mode: DeliveryMode,
    module: &PluginModule,
) -> Result<Option<ModuleArchive>, JobError> {
    if !mode.checkpoints() {
        return Ok(None);
    }
    let archive = ModuleArchive::open(location)?;
    archive.keep(&module.sha256, &module.bytes)?;
    Ok(Some(archive))
}

/// What every partition task of the job shares.
pub(super) fn task_env(
    config: &Config,
    (module, archive): (&PluginModule, Option<ModuleArchive>),
    consumer: &Arc<SourceConsumer>,
    metrics: &Arc<JobMetrics>,
) -> TaskEnv {
    TaskEnv {
        module: module.clone(),
        batch_size: config.pipeline.batch_size,
        sink_topics: config.sink.topics.clone().into(),
        plugin_config: config.plugin_config_entries(),
        allow_module_change: config.checkpoint.allow_module_change,
        consumer: consumer.clone(),
        timeout: config.kafka.connect_timeout,
        restart_attempts: config.pipeline.restart_attempts,
        restart_backoff: config.pipeline.restart_backoff,
        on_fault: config.pipeline.on_fault,
        dead_letter_topic: config.pipeline.dead_letter_topic.clone(),
        metrics: metrics.clone(),
        time: TimeConfig {
            tick_interval: config.pipeline.tick_interval,
            max_out_of_orderness: config.pipeline.max_out_of_orderness,
            idle_timeout: config.pipeline.idle_timeout,
        },
        upgrade: StateUpgrade::new(archive),
    }
}

/// Exactly-once: fences every transactional id a zombie could hold (this
/// run's workers' and those of a previous run with more workers) and
/// returns, per worker, its transaction (`None` for a worker without
/// partitions).
///
/// A new producer's `init_transactions` aborts the open transaction of the
/// crashed process with the same id; only then are the group's committed
/// offsets final. `resolve_starts` reads them afterwards with the
/// read_committed consumer, which asks for stable offsets (a pending
/// transactional commit is waited for, not skipped). docs/EXACTLY_ONCE.md
/// says why these offsets, and not a topic of Weir's own, are the record
/// of what was committed.
fn start_transactions(
    config: &Config,
    bootstrap: &str,
    consumer: &Arc<SourceConsumer>,
    metrics: &Arc<JobMetrics>,
    writer: &str,
) -> Result<Vec<Option<WorkerCommit>>, JobError> {
    if config.source.assignment == Assignment::Group {
        return start_group_transactions(config, bootstrap, consumer, metrics, writer);
    }
    let root = config.checkpoint_dir();
    let parallelism = config.pipeline.parallelism;
    // With partition discovery every worker gets a transaction, partitions
    // or not: a partition found while running may go to any of them.
    let discovers = !config.source.bounded && !config.source.partition_discovery_interval.is_zero();
    let mut busy = vec![discovers; parallelism];
    for topic in &config.source.topics {
        let timeout = config.kafka.connect_timeout;
        for p in consumer::partitions_of(consumer, topic, "source", timeout)? {
            busy[assignment::worker_for(topic, p, parallelism)] = true;
        }
    }
    let previous = transactional::recorded_workers(&root)?;
    // The larger count first: a crash below must leave every id this run
    // may have started recorded.
    transactional::record_workers(&root, previous.max(parallelism))?;
    let prefix = &config.sink.transactional_id_prefix;
    let failed = |worker: usize, e: transaction::TransactionError| {
        Box::new(TransactionFailure {
            worker,
            id: transaction::transactional_id(prefix, worker),
            cause: CommitError::Transaction(e),
        })
    };
    let mut commits = Vec::with_capacity(parallelism);
    for w in 0..previous.max(parallelism) {
        if busy.get(w) == Some(&true) {
            let id = transaction::transactional_id(prefix, w);
            let txn = WorkerTransaction::start(config, bootstrap, consumer, id)
                .map_err(|e| failed(w, e))?;
            commits.push(Some(worker_commit(config, txn, w, metrics, "")));
            continue;
        }
        if w < previous {
            transaction::fence(config, bootstrap, &transaction::transactional_id(prefix, w))
                .map_err(|e| failed(w, e))?;
        }
        if w < parallelism {
            commits.push(None);
        }
    }
    transactional::record_workers(&root, parallelism)?;
    if previous > parallelism {
        tracing::info!(
            previous,
            parallelism,
            "fenced the transactional ids of a previous run with more workers"
        );
    }
    Ok(commits)
}

/// A worker's transaction with the job's retry policy.
fn worker_commit(
    config: &Config,
    txn: WorkerTransaction,
    worker: usize,
    metrics: &Arc<JobMetrics>,
    writer: &str,
) -> WorkerCommit {
    let retries = (
        config.pipeline.restart_attempts,
        config.pipeline.restart_backoff,
    );
    WorkerCommit::new(txn, worker, retries, metrics.clone()).with_writer(writer)
}

/// Group assignment, at-least-once (or none): each worker commits its
/// partitions' offsets to the group after their state files (see
/// [`OffsetCommit`]).
fn offset_commits(
    config: &Config,
    mode: DeliveryMode,
    producer: &Arc<SinkProducer>,
    consumer: &Arc<SourceConsumer>,
    metrics: &Arc<JobMetrics>,
    writer: &str,
) -> Vec<Option<Box<dyn WorkerDurability>>> {
    (0..config.pipeline.parallelism)
        .map(|worker| {
            let commit = OffsetCommit {
                worker,
                producer: producer.clone(),
                consumer: consumer.clone(),
                flush: mode.flushes_on_checkpoint(),
                log_failures_only: config.sink.log_failures_only,
                writer: writer.to_string(),
                metrics: metrics.clone(),
                failures: 0,
                attempts: config.pipeline.restart_attempts,
            };
            Some(Box::new(commit) as Box<dyn WorkerDurability>)
        })
        .collect()
}

/// This process's name on its exactly-once state files and in its
/// commits' offset metadata: unique per process start (its pid and start
/// time) with group assignment, where processes share the directory; ""
/// with manual assignment (one process per directory, the file names of
/// earlier versions).
fn process_writer(config: &Config) -> String {
    if config.source.assignment != Assignment::Group {
        return String::new();
    }
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:x}-{:x}", std::process::id(), started.as_millis())
}

/// Group assignment: every worker gets a transaction under an id of this
/// process's own (the group may give any worker a partition at any time).
/// Nothing is fenced by id: the group's generation fences a partition's
/// previous owner at its next `send_offsets_to_transaction`, and a dead
/// owner's open transaction is aborted by the broker after
/// `transaction.timeout.ms` (see `Config::default_transaction_timeout_ms`).
fn start_group_transactions(
    config: &Config,
    bootstrap: &str,
    consumer: &Arc<SourceConsumer>,
    metrics: &Arc<JobMetrics>,
    instance: &str,
) -> Result<Vec<Option<WorkerCommit>>, JobError> {
    let prefix = &config.sink.transactional_id_prefix;
    (0..config.pipeline.parallelism)
        .map(|w| {
            let id = transaction::group_transactional_id(prefix, instance, w);
            let txn =
                WorkerTransaction::start(config, bootstrap, consumer, id.clone()).map_err(|e| {
                    Box::new(TransactionFailure {
                        worker: w,
                        id,
                        cause: CommitError::Transaction(e),
                    })
                })?;
            Ok(Some(worker_commit(config, txn, w, metrics, instance)))
        })
        .collect()
}
