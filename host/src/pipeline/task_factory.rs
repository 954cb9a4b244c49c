//! Building partition tasks: what every task of a job shares ([`TaskEnv`]),
//! the one way to make a task's plugin instance (restored from a state or
//! initialised with the plugin's config, used at start-up, on restart after
//! a fault and for a partition added to a running job), and the
//! [`TaskFactory`] that turns a plan entry into a running task.

use super::JobError;
use super::durability::{Durability, DurabilityError, DurabilityFactory};
use super::event_clock::TimeConfig;
use super::partition_task::PartitionTask;
use super::plan::{PlanEntry, StateOrigin};
use super::status::TaskStats;
use super::task_error::RestartError;
use crate::config::FaultPolicy;
use crate::kafka::consumer::{SourceConsumer, SourceQueue};
use crate::kafka::producer::SinkProducer;
use crate::metrics::JobMetrics;
use crate::runtime::instance::BatchError;
use crate::runtime::snapshot::{Snapshot, SnapshotError};
use crate::runtime::{PluginError, PluginFault, PluginInstance, PluginModule};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What every partition task of a job shares, and what a restart needs.
pub struct TaskEnv {
    pub module: PluginModule,
    /// Most records per plugin call.
    pub batch_size: usize,
    pub sink_topics: Arc<[String]>,
    pub plugin_config: Vec<(String, String)>,
    pub allow_module_change: bool,
    /// Seeks a restarted task back to its restore point.
    pub consumer: Arc<SourceConsumer>,
    pub timeout: Duration,
    pub restart_attempts: u32,
    pub restart_backoff: Duration,
    /// What a plugin fault does.
    pub on_fault: FaultPolicy,
    /// `on_fault = "dead-letter"`: where faulted records go.
    pub dead_letter_topic: Option<String>,
    /// The job's metrics (plugin call times, faults, restarts).
    pub metrics: Arc<JobMetrics>,
    /// Watermarks and ticks, for plugins that export `weir_tick`.
    pub time: TimeConfig,
}

/// Why a task's plugin instance could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Instantiating the module failed.
    #[error("instantiating the plugin: {0}")]
    Instantiate(#[from] PluginFault),
    /// The state does not fit the module.
    #[error("restoring its state: {0}")]
    Restore(#[from] SnapshotError),
    /// `weir_init` failed on a fresh start.
    #[error("weir_init: {0}")]
    Init(#[from] BatchError),
}

impl TaskEnv {
    /// A new instance writing through `durability`'s sink, restored from
    /// `state`, or initialised with the plugin's config without one.
    pub fn instance(
        &self,
        durability: &dyn Durability,
        state: Option<&Snapshot>,
    ) -> Result<PluginInstance, InstanceError> {
        let mut instance =
            PluginInstance::new(&self.module, durability.sink(), self.sink_topics.clone())?;
        match state {
            Some(snapshot) => instance.restore(snapshot, self.allow_module_change)?,
            None => instance.init(&self.plugin_config)?,
        }
        Ok(instance)
    }
}

/// Why a task could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Its durability could not be set up.
    #[error(transparent)]
    Durability(#[from] DurabilityError),
    /// The state recorded for its committed offset could not be read.
    #[error(transparent)]
    State(#[from] RestartError),
    /// Its instance could not be made.
    #[error(transparent)]
    Instance(#[from] InstanceError),
}

/// Builds partition tasks from plan entries.
pub struct TaskFactory {
    pub env: Arc<TaskEnv>,
    pub durability: Arc<dyn DurabilityFactory>,
    /// The plugin's file, named in start-up errors.
    pub plugin_path: PathBuf,
}

impl TaskFactory {
    /// The task of `entry` over `queue`. Its state is `snapshot` (what a
    /// checkpoint recorded for it), the state file of its committed offset
    /// (exactly-once), or fresh, as the entry says. `transaction` is its
    /// worker's transactional producer under exactly-once.
    pub fn build(
        &self,
        entry: &PlanEntry,
        queue: SourceQueue,
        snapshot: Option<Snapshot>,
        transaction: Option<&Arc<SinkProducer>>,
        stats: Arc<TaskStats>,
    ) -> Result<PartitionTask, BuildError> {
        let start = &entry.start;
        let mut durability = self.durability.for_task(start, transaction)?;
        let state = match entry.state {
            StateOrigin::Fresh => None,
            StateOrigin::Checkpoint { .. } => snapshot,
            StateOrigin::Committed => durability
                .restore_point(&start.tp)?
                .and_then(|p| p.snapshot),
        };
        let instance = self.env.instance(&*durability, state.as_ref())?;
        if state.is_some() {
            tracing::info!(topic = %start.tp.topic, partition = start.tp.partition, offset = start.start, "state restored");
        }
        Ok(PartitionTask::new(
            start.clone(),
            queue,
            instance,
            stats,
            durability,
            self.env.clone(),
        ))
    }

    /// The job's error for a task of `entry` that could not be built:
    /// plugin faults name the plugin's file, restores the state's origin.
    pub fn job_error(&self, e: BuildError, entry: &PlanEntry) -> JobError {
        let start = &entry.start;
        let path = self.plugin_path.clone();
        match e {
            BuildError::Instance(InstanceError::Instantiate(fault)) => PluginError::Start {
                path,
                stage: "instantiation",
                fault,
            }
            .into(),
            BuildError::Instance(InstanceError::Init(BatchError::Fault(fault))) => {
                PluginError::Start {
                    path,
                    stage: "weir_init",
                    fault,
                }
                .into()
            }
            BuildError::Instance(InstanceError::Init(BatchError::Sink(s))) => {
                JobError::InitOutput(s)
            }
            BuildError::Instance(InstanceError::Restore(cause)) => JobError::Restore {
                id: match entry.state {
                    StateOrigin::Checkpoint { id } => id,
                    _ => start.start as u64,
                },
                topic: start.tp.topic.clone(),
                partition: start.tp.partition,
                cause,
            },
            e => JobError::Build {
                tp: start.tp.clone(),
                cause: Box::new(e),
            },
        }
    }
}
