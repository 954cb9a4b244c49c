//! The job driver with partitions added to and removed from running
//! workers, over a fake durability: no broker (librdkafka clients that
//! point nowhere give the tasks their queues, which stay empty).

use super::JobDriver;
use crate::checkpoint::{CheckpointError, CheckpointStore, TaskCheckpoint};
use crate::config::Config;
use crate::kafka::consumer::{PartitionStart, SourceConsumer, SourceContext};
use crate::kafka::producer::{DeliveryContext, SinkProducer};
use crate::metrics::JobMetrics;
use crate::pipeline::JobError;
use crate::pipeline::durability::{
    CheckpointPart, Durability, DurabilityError, DurabilityFactory, RestartError, RestorePoint,
};
use crate::pipeline::plan::{PlanEntry, StateOrigin};
use crate::pipeline::startup::{Prepared, task_env};
use crate::pipeline::task_factory::TaskFactory;
use crate::pipeline::worker::Worker;
use crate::runtime::snapshot_delta::CapturedState;
use crate::runtime::{OutputSink, PluginEngine, PluginInstance, PluginModule, SinkError};
use crate::topic_partition::TopicPartition;
use rdkafka::ClientConfig;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_plugin_sdk::abi::RecordIter;

/// What the fake durability was asked, in order.
type Log = Arc<Mutex<Vec<String>>>;

struct FakeFactory {
    log: Log,
    producer: Arc<SinkProducer>,
}

struct FakeDurability {
    log: Log,
    producer: Arc<SinkProducer>,
}

struct NoSink;

impl OutputSink for NoSink {
    fn emit(&mut self, _: RecordIter<'_>, _: &[String]) -> Result<(), SinkError> {
        Ok(())
    }
}

impl DurabilityFactory for FakeFactory {
    fn for_task(
        &self,
        start: &PartitionStart,
        _: Option<&Arc<SinkProducer>>,
    ) -> Result<Box<dyn Durability>, DurabilityError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("for_task {}", start.tp));
        Ok(Box::new(FakeDurability {
            log: self.log.clone(),
            producer: self.producer.clone(),
        }))
    }
}

impl Durability for FakeDurability {
    fn sink(&self) -> Box<dyn OutputSink> {
        Box::new(NoSink)
    }

    fn producer(&self) -> Arc<SinkProducer> {
        self.producer.clone()
    }

    fn restore_point(&mut self, tp: &TopicPartition) -> Result<Option<RestorePoint>, RestartError> {
        self.log.lock().unwrap().push(format!("restore_point {tp}"));
        Ok(None)
    }

    fn checkpoint(
        &mut self,
        id: u64,
        tp: &TopicPartition,
        next_offset: i64,
        instance: &mut PluginInstance,
    ) -> Result<CheckpointPart, CheckpointError> {
        Ok(CheckpointPart::Capture(TaskCheckpoint {
            id,
            tp: tp.clone(),
            offset: next_offset,
            capture: instance.capture(false),
        }))
    }
}

fn config(dir: &std::path::Path) -> Config {
    let plugin = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/mirror.wat");
    let text = format!(
        "[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\n[source]\ntopics = [\"in\"]\n\
         [pipeline]\nplugin = \"{plugin}\"\nparallelism = 2\n[sink]\ntopics = [\"out\"]\n\
         [checkpoint]\nenabled = true\ninterval = \"1h\"\ndirectory = \"{}\"\n\
         commit_offsets_on_checkpoint = false\n",
        dir.display()
    );
    Config::parse(&text, dir).expect("test config")
}

fn entry(partition: i32, start: i64, worker: usize, state: StateOrigin) -> PlanEntry {
    PlanEntry {
        start: PartitionStart {
            tp: TopicPartition::new("in", partition),
            topic_index: 0,
            start,
            end: None,
            committed: None,
            committed_writer: String::new(),
        },
        worker,
        state,
    }
}

/// Waits until the fake was asked for `n` durabilities.
fn wait_for_tasks(log: &Log, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("for_task"))
        .count()
        < n
    {
        assert!(
            Instant::now() < deadline,
            "tasks not built: {:?}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A started driver over two workers without partitions, clients that
/// point nowhere, the fake durability (and its log) and a checkpoint store.
fn driver(dir: &std::path::Path) -> (JobDriver, Log, CheckpointStore) {
    let config = Arc::new(config(dir));
    let metrics = Arc::new(JobMetrics::new("mirror.wat"));
    let client = |group: bool| {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", "127.0.0.1:1");
        if group {
            cc.set("group.id", "test");
        }
        cc
    };
    let consumer: Arc<SourceConsumer> = Arc::new(
        client(true)
            .create_with_context(SourceContext::default())
            .unwrap(),
    );
    let producer: Arc<SinkProducer> = Arc::new(
        client(false)
            .create_with_context(DeliveryContext::default())
            .unwrap(),
    );
    let engine = PluginEngine::with_limits(config.limits.to_limits()).unwrap();
    let module = PluginModule::load(&engine, &config.plugin_path()).unwrap();
    let log = Log::default();
    let factory = Arc::new(TaskFactory {
        env: Arc::new(task_env(&config, (&module, None), &consumer, &metrics)),
        durability: Arc::new(FakeFactory {
            log: log.clone(),
            producer: producer.clone(),
        }),
        plugin_path: config.plugin_path(),
    });
    let store = CheckpointStore::open(dir, 3).unwrap();
    let workers = (0..2)
        .map(|id| Worker {
            id,
            tasks: Vec::new(),
            commit: None,
            factory: factory.clone(),
            bounded: false,
        })
        .collect();
    let prepared = Prepared {
        module: module.clone(),
        store: Some(store.clone()),
        location: crate::checkpoint::folder::StoreLocation::Local(dir.to_path_buf()),
        restored_from: None,
        embedded: None,
        consumer,
        producer,
        workers,
        all_stats: Vec::new(),
        assignments: Vec::new(),
    };
    let driver = JobDriver::start(config, metrics, prepared, None).unwrap();
    (driver, log, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_join_and_leave_a_running_job_with_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let (mut driver, log, store) = driver(dir.path());

    // Two partitions join, one per worker.
    driver
        .add_partition(entry(0, 42, 0, StateOrigin::Fresh), None)
        .unwrap();
    driver
        .add_partition(entry(1, 7, 1, StateOrigin::Fresh), None)
        .unwrap();
    wait_for_tasks(&log, 2);

    // Partition 0 leaves with its final state, at its position.
    let tp0 = TopicPartition::new("in", 0);
    let left = driver.remove_partition(&tp0).await.unwrap();
    assert_eq!((left.position, left.error.is_none()), (Some(42), true));
    let state = left.final_state.expect("a final state for the store");
    assert_eq!((&state.tp, state.offset), (&tp0, 42));
    let CapturedState::Full(snapshot) = &state.capture.state else {
        panic!("a partition leaves with a full capture");
    };

    // It comes back (say, to the other worker) restored from that state,
    // and leaves again with the same memory: the state followed it.
    let back = entry(0, 42, 1, StateOrigin::Checkpoint { id: 1 });
    driver.add_partition(back, Some(snapshot.clone())).unwrap();
    wait_for_tasks(&log, 3);
    let again = driver.remove_partition(&tp0).await.unwrap();
    let CapturedState::Full(after) = &again.final_state.unwrap().capture.state else {
        panic!("full capture");
    };
    assert_eq!(after.memory, snapshot.memory);
    assert!(matches!(
        driver.remove_partition(&tp0).await,
        Err(JobError::NotAssigned(_))
    ));
    // Neither fresh start nor restore asked the durability where to
    // restart: that is for restarts after a fault.
    assert!(
        !log.lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("restore_point"))
    );

    // Stop: the job's final checkpoint still holds the partition that
    // left, with its final state, beside the one that stayed.
    driver.drive(async {}).await;
    let summary = driver.finish().await.unwrap();
    let positions: Vec<(i32, i64)> = summary
        .positions
        .iter()
        .map(|(tp, o)| (tp.partition, *o))
        .collect();
    assert_eq!(positions, vec![(0, 42), (1, 7)]);
    let latest = store.latest().unwrap().expect("the final checkpoint");
    let part = |p| latest.partition(&TopicPartition::new("in", p));
    assert_eq!(part(0).map(|p| p.offset), Some(42));
    assert_eq!(part(1).map(|p| p.offset), Some(7));
    assert_eq!(part(0).unwrap().state.memory, snapshot.memory);
}
