//! The [`TaskFactory`]: a plan entry, a queue and a state in, a partition
//! task out (its durability from the mode's factory, its instance made the
//! one way `task_env` defines). Start-up and adopting workers use it; a
//! restart after a fault makes its new instance the same way.

use super::JobError;
use super::durability::{DurabilityError, DurabilityFactory};
use super::partition_task::PartitionTask;
use super::plan::{PlanEntry, StateOrigin};
use super::status::TaskStats;
use super::task_env::{InstanceError, TaskEnv};
use super::task_error::RestartError;
use crate::kafka::consumer::SourceQueue;
use crate::kafka::producer::SinkProducer;
use crate::runtime::PluginError;
use crate::runtime::instance::BatchError;
use crate::runtime::snapshot::Snapshot;
use std::path::PathBuf;
use std::sync::Arc;

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
