//! The job: wires config, Kafka and the runtime together and runs it.
//!
//! - [`partition_task`]: one partition's loop over batches.
//! - [`worker`]: the threads that run partition tasks.
//! - [`assignment`]: which worker owns which partition (Flink's rule).
//! - [`status`]: counters and the periodic status line.
//!
//! [`run`] is the entry point: resolve start positions, assign and split
//! partitions, create one plugin instance per partition, spread the tasks
//! over `parallelism` worker threads, then wait for the end (bounded jobs),
//! a failure, or the shutdown future; flush the producer and commit the
//! processed offsets.

pub mod assignment;
pub mod partition_task;
pub mod status;
pub mod worker;

use crate::config::{Config, ConfigError};
use crate::kafka::embedded::{EmbeddedCluster, OutputSummary};
use crate::kafka::{KafkaError, consumer, producer};
use crate::runtime::{PluginEngine, PluginError, PluginInstance, PluginModule};
use partition_task::{PartitionTask, TaskError};
use rdkafka::consumer::Consumer;
use status::{StatusReporter, TaskStats};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use worker::{Worker, WorkerExit};

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
    #[error("wasmtime engine: {0}")]
    Engine(String),
    #[error("worker thread: {0}")]
    Worker(String),
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
}

/// How long the producer may take to deliver what is queued at the end.
const FINAL_FLUSH: Duration = Duration::from_secs(60);

/// Runs the job until it ends (bounded), fails, or `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<JobSummary, JobError> {
    config.validate()?;
    let engine = PluginEngine::new().map_err(|e| JobError::Engine(format!("{e:#}")))?;
    let plugin_path = config.plugin_path();
    let module = PluginModule::load(&engine, &plugin_path)?;
    tracing::info!(plugin = %module.name, path = %plugin_path.display(), "plugin loaded");

    let embedded = if config.is_embedded() {
        let cluster = EmbeddedCluster::start(&config)?;
        let n = cluster.seed(&config.source.topics[0])?;
        tracing::info!(records = n, topic = %config.source.topics[0], "sample input written");
        Some(cluster)
    } else {
        None
    };
    let bootstrap = match &embedded {
        Some(c) => c.bootstrap_servers(),
        None => config.kafka.bootstrap_servers.clone(),
    };

    let consumer = consumer::create(&config, &bootstrap)?;
    for topic in &config.sink.topics {
        consumer::partitions_of(&consumer, topic, "sink", config.kafka.connect_timeout)?;
    }
    let starts = consumer::resolve_starts(&config, &consumer)?;
    let producer = producer::create(&config, &bootstrap)?;
    let queues = consumer::assign(&consumer, &starts)?;

    // One instance per partition task, each with its own store and state.
    let sink_topics: Arc<[String]> = config.sink.topics.clone().into();
    let plugin_config = config.plugin_config_entries();
    let parallelism = config.pipeline.parallelism;
    let mut workers: Vec<Worker> = (0..parallelism)
        .map(|id| Worker {
            id,
            tasks: Vec::new(),
        })
        .collect();
    let mut all_stats = Vec::new();
    let mut assignments = Vec::new();
    for (start, queue) in starts.into_iter().zip(queues) {
        let sink = Box::new(producer::KafkaSink::new(producer.clone()));
        let mut instance =
            PluginInstance::new(&module, sink, sink_topics.clone()).map_err(|fault| {
                PluginError::Start {
                    path: plugin_path.clone(),
                    stage: "instantiation",
                    fault,
                }
            })?;
        instance.init(&plugin_config).map_err(|e| match e {
            crate::runtime::instance::BatchError::Fault(fault) => {
                JobError::Plugin(PluginError::Start {
                    path: plugin_path.clone(),
                    stage: "weir_init",
                    fault,
                })
            }
            crate::runtime::instance::BatchError::Sink(s) => JobError::Worker(s.to_string()),
        })?;
        let stats = Arc::new(TaskStats::new(&start.topic, start.partition, start.start));
        all_stats.push(stats.clone());
        let w = assignment::worker_for(&start.topic, start.partition, parallelism);
        assignments.push((start.topic.clone(), start.partition, w));
        tracing::info!(topic = %start.topic, partition = start.partition, worker = w, start = start.start, end = ?start.end, "partition assigned");
        workers[w].tasks.push(PartitionTask::new(
            start,
            queue,
            instance,
            module.name.clone(),
            config.pipeline.batch_size,
            stats,
        ));
    }

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
            .map_err(|e| JobError::Worker(e.to_string()))?
    };

    let started = Instant::now();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<WorkerExit>();
    let mut running = 0;
    for worker in workers {
        let stop = stop.clone();
        let done = done_tx.clone();
        running += 1;
        std::thread::Builder::new()
            .name(format!("weir-worker-{}", worker.id))
            .spawn(move || {
                let exit = worker.run(stop);
                let _ = done.send(exit);
            })
            .map_err(|e| JobError::Worker(e.to_string()))?;
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
    let mut failure: Option<TaskError> = None;
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
                if let Some(e) = exit.error {
                    tracing::error!(error = %e, "partition task failed; stopping the job");
                    stop.store(true, Ordering::Relaxed);
                    failure.get_or_insert(e);
                }
            }
            _ = ticker.tick(), if !interval.is_zero() => reporter.report(&all_stats),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    reporter.report(&all_stats);

    // Deliver what is queued, then commit only what was processed and
    // delivered. On failure nothing is committed: the input is re-read.
    let flushed = {
        let producer = producer.clone();
        tokio::task::spawn_blocking(move || producer::flush(&producer, FINAL_FLUSH))
            .await
            .map_err(|e| JobError::Worker(e.to_string()))?
    };
    let _ = tokio::task::spawn_blocking(move || main_poller.join()).await;
    if let Some(e) = failure {
        return Err(e.into());
    }
    flushed?;
    positions.sort();
    {
        let consumer = consumer.clone();
        let positions = positions.clone();
        tokio::task::spawn_blocking(move || consumer::commit(&consumer, &positions))
            .await
            .map_err(|e| JobError::Worker(e.to_string()))??;
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
    })
}
