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

use super::event_clock::TimeConfig;
use super::partition_task::{PartitionTask, TaskCommit, TaskEnv, TaskTransaction};
use super::status::TaskStats;
use super::worker::Worker;
use super::worker_commit::{CommitError, TransactionFailure, WorkerCommit};
use super::{JobError, assignment};
use crate::checkpoint::CheckpointStore;
use crate::checkpoint::CompletedCheckpoint;
use crate::checkpoint::transactional::{self, PartitionStateDir};
use crate::config::{Config, DeliveryMode};
use crate::kafka::consumer::SourceConsumer;
use crate::kafka::embedded::EmbeddedCluster;
use crate::kafka::producer::SinkProducer;
use crate::kafka::transaction::{self, WorkerTransaction};
use crate::kafka::{consumer, producer};
use crate::metrics::JobMetrics;
use crate::runtime::instance::BatchError;
use crate::runtime::snapshot::Snapshot;
use crate::runtime::snapshot::SnapshotError;
use crate::runtime::{PluginEngine, PluginError, PluginInstance, PluginModule};
use rdkafka::producer::Producer;
use std::collections::HashMap;
use std::sync::Arc;

/// What the running job needs from its start-up.
pub(super) struct Prepared {
    /// The checkpoint store (checkpoints on, not exactly-once).
    pub store: Option<CheckpointStore>,
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
    /// One per partition task, in assignment order.
    pub all_stats: Vec<Arc<TaskStats>>,
    /// `(topic, partition, worker)` for each partition task.
    pub assignments: Vec<(String, i32, usize)>,
}

/// Sets the job up; blocking (see the module docs).
pub(super) fn prepare(config: &Config, metrics: &Arc<JobMetrics>) -> Result<Prepared, JobError> {
    config.validate()?;
    let module = load_plugin(config)?;
    let mode = config.delivery_mode();
    let (store, restored) = open_store(config, mode)?;
    let embedded = start_embedded(config, mode)?;
    let bootstrap = match &embedded {
        Some(c) => c.bootstrap_servers(),
        None => config.kafka.bootstrap_servers.clone(),
    };
    let consumer = consumer::create(config, &bootstrap)?;
    check_output_topics(config, &consumer)?;
    // Exactly-once: fence every zombie before reading committed offsets.
    let mut commits = if mode.transactional() {
        start_transactions(config, &bootstrap, &consumer, metrics)?
    } else {
        Vec::new()
    };
    let mut starts = consumer::resolve_starts(config, &consumer)?;
    if let Some(c) = &restored {
        for s in &mut starts {
            if let Some((offset, _)) = c.partition(&s.topic, s.partition) {
                s.start = offset;
            }
        }
    }
    // Exactly-once: found before assigning, because the restored state's
    // offset is where reading resumes.
    let mut transactional_restores = if mode.transactional() {
        transactional_restores(config, &mut starts)?
    } else {
        HashMap::new()
    };
    let producer = producer::create(config, &bootstrap)?;
    let queues = consumer::assign(&consumer, &starts)?;
    if mode.auto_commit() {
        tracing::info!("checkpoints off: offsets of delivered output are auto-committed");
    }
    let env = Arc::new(task_env(
        config, &module, &store, &consumer, &producer, metrics,
    ));
    let parallelism = config.pipeline.parallelism;
    let mut workers: Vec<Worker> = (0..parallelism)
        .map(|id| Worker {
            id,
            tasks: Vec::new(),
            commit: commits.get_mut(id).and_then(Option::take),
        })
        .collect();
    let mut all_stats = Vec::new();
    let mut assignments = Vec::new();
    for (start, queue) in starts.into_iter().zip(queues) {
        let w = assignment::worker_for(&start.topic, start.partition, parallelism);
        // Where the state comes from: the checkpoint store (at-least-once,
        // none), the snapshot recorded for the group's committed offset
        // (exactly-once), or a fresh start with the plugin's config.
        let from_checkpoint = restored.as_ref().and_then(|c| {
            c.partition(&start.topic, start.partition)
                .map(|(offset, snap)| StateSource::new(c.id, offset, snap.clone()))
        });
        let from_transaction =
            transactional_restores.remove(&(start.topic.clone(), start.partition));
        let state = from_checkpoint.or(from_transaction);
        let commit = task_commit(config, &env, &workers[w], &start, mode.auto_commit())?;
        assignments.push((start.topic.clone(), start.partition, w));
        tracing::info!(topic = %start.topic, partition = start.partition, worker = w, start = start.start, end = ?start.end, "partition assigned");
        let (task, stats) = build_task(config, &env, start, queue, commit, state)?;
        all_stats.push(stats);
        workers[w].tasks.push(task);
    }
    Ok(Prepared {
        store,
        restored_from: restored.map(|c| c.id),
        embedded,
        consumer,
        producer,
        workers,
        all_stats,
        assignments,
    })
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
) -> Result<(Option<CheckpointStore>, Option<CompletedCheckpoint>), JobError> {
    if !mode.uses_store() {
        return Ok((None, None));
    }
    let store = CheckpointStore::open(&config.checkpoint_dir(), config.checkpoint.retain)?
        .with_full_snapshot_every(config.checkpoint.full_snapshot_every);
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

/// Exactly-once: for each partition with a committed offset, the snapshot
/// recorded for exactly that offset; its start moves there.
fn transactional_restores(
    config: &Config,
    starts: &mut [consumer::PartitionStart],
) -> Result<HashMap<(String, i32), StateSource>, JobError> {
    let mut restores = HashMap::new();
    for s in starts {
        let dir = PartitionStateDir::open(&config.checkpoint_dir(), &s.topic, s.partition)?;
        let Some(committed) = s.committed else {
            continue;
        };
        match dir.load(committed)? {
            Some(snap) => {
                s.start = committed;
                let source = StateSource::new(committed as u64, committed, snap);
                restores.insert((s.topic.clone(), s.partition), source);
            }
            None if dir.offsets()?.is_empty() => tracing::warn!(
                topic = %s.topic, partition = s.partition, committed,
                "the group has a committed offset but no exactly-once state exists; the plugin starts fresh"
            ),
            None => {
                return Err(JobError::Restore {
                    id: committed as u64,
                    topic: s.topic.clone(),
                    partition: s.partition,
                    cause: SnapshotError::Shape(format!(
                        "no state file for the group's committed offset {committed} (state exists for offsets {:?})",
                        dir.offsets()?
                    )),
                });
            }
        }
    }
    Ok(restores)
}

/// What every partition task of the job shares.
fn task_env(
    config: &Config,
    module: &PluginModule,
    store: &Option<CheckpointStore>,
    consumer: &Arc<SourceConsumer>,
    producer: &Arc<SinkProducer>,
    metrics: &Arc<JobMetrics>,
) -> TaskEnv {
    TaskEnv {
        module: module.clone(),
        batch_size: config.pipeline.batch_size,
        sink_topics: config.sink.topics.clone().into(),
        plugin_config: config.plugin_config_entries(),
        allow_module_change: config.checkpoint.allow_module_change,
        store: store.clone(),
        consumer: consumer.clone(),
        producer: producer.clone(),
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
    }
}

/// Where a restored task's state comes from: checkpoint (or committed
/// offset) `id`, the offset it reflects, and the snapshot.
struct StateSource {
    id: u64,
    offset: i64,
    snapshot: Snapshot,
}

impl StateSource {
    fn new(id: u64, offset: i64, snapshot: Snapshot) -> Self {
        StateSource {
            id,
            offset,
            snapshot,
        }
    }
}

/// How a task makes its progress durable: its worker's transaction
/// (exactly-once), delivery-tracked auto-commit (checkpoints off), or the
/// checkpoint store; and the producer its output goes through.
fn task_commit(
    config: &Config,
    env: &TaskEnv,
    worker: &Worker,
    start: &consumer::PartitionStart,
    auto_commit: bool,
) -> Result<(TaskCommit, Arc<SinkProducer>), JobError> {
    if let Some(commit) = &worker.commit {
        let dir = PartitionStateDir::open(&config.checkpoint_dir(), &start.topic, start.partition)?
            .with_full_snapshot_every(config.checkpoint.full_snapshot_every);
        // The offset the last committed transaction reached.
        let transaction = TaskTransaction::new(dir, start.committed, commit.producer());
        return Ok((TaskCommit::Transaction(transaction), commit.producer()));
    }
    if auto_commit {
        let tracker = env.producer.context().trackers.register(
            &start.topic,
            start.partition,
            env.consumer.clone(),
        );
        let cell = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        return Ok((TaskCommit::AutoCommit(tracker, cell), env.producer.clone()));
    }
    Ok((TaskCommit::Checkpoint, env.producer.clone()))
}

/// A partition task with its own plugin instance, restored from `state` or
/// initialised with the plugin's config.
fn build_task(
    config: &Config,
    env: &Arc<TaskEnv>,
    start: consumer::PartitionStart,
    queue: consumer::SourceQueue,
    (commit, sink_producer): (TaskCommit, Arc<SinkProducer>),
    state: Option<StateSource>,
) -> Result<(PartitionTask, Arc<TaskStats>), JobError> {
    let plugin_path = config.plugin_path();
    let sink = Box::new(match &commit {
        TaskCommit::AutoCommit(tracker, cell) => {
            producer::KafkaSink::tracked(sink_producer, tracker.clone(), cell.clone())
        }
        _ => producer::KafkaSink::new(sink_producer),
    });
    let mut instance =
        PluginInstance::new(&env.module, sink, env.sink_topics.clone()).map_err(|fault| {
            PluginError::Start {
                path: plugin_path.clone(),
                stage: "instantiation",
                fault,
            }
        })?;
    match state {
        Some(StateSource {
            id,
            offset,
            snapshot,
        }) => {
            debug_assert_eq!(start.start, offset);
            instance
                .restore(&snapshot, config.checkpoint.allow_module_change)
                .map_err(|cause| JobError::Restore {
                    id,
                    topic: start.topic.clone(),
                    partition: start.partition,
                    cause,
                })?;
            tracing::info!(topic = %start.topic, partition = start.partition, offset, "state restored");
        }
        None => instance.init(&env.plugin_config).map_err(|e| match e {
            BatchError::Fault(fault) => JobError::Plugin(PluginError::Start {
                path: plugin_path.clone(),
                stage: "weir_init",
                fault,
            }),
            BatchError::Sink(s) => JobError::InitOutput(s),
        })?,
    }
    let stats = Arc::new(TaskStats::new(&start.topic, start.partition, start.start));
    let task = PartitionTask::new(start, queue, instance, stats.clone(), commit, env.clone());
    Ok((task, stats))
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
    consumer: &SourceConsumer,
    metrics: &Arc<JobMetrics>,
) -> Result<Vec<Option<WorkerCommit>>, JobError> {
    let root = config.checkpoint_dir();
    let parallelism = config.pipeline.parallelism;
    let mut busy = vec![false; parallelism];
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
            let txn = WorkerTransaction::start(config, bootstrap, consumer, w)
                .map_err(|e| failed(w, e))?;
            let retries = (
                config.pipeline.restart_attempts,
                config.pipeline.restart_backoff,
            );
            commits.push(Some(WorkerCommit::new(txn, w, retries, metrics.clone())));
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
