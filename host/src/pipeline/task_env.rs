//! What every partition task of a job shares ([`TaskEnv`]), and the one
//! way to make a task's plugin instance: restored from a state, or
//! initialised with the plugin's config. Used at start-up, on a restart
//! after a fault, and for a partition added to a running job.

use super::durability::Durability;
use super::event_clock::TimeConfig;
use super::state_upgrade::{self, StateUpgrade, UpgradeError};
use crate::config::FaultPolicy;
use crate::kafka::consumer::SourceConsumer;
use crate::metrics::JobMetrics;
use crate::runtime::instance::BatchError;
use crate::runtime::snapshot::{Snapshot, SnapshotError};
use crate::runtime::{PluginFault, PluginInstance, PluginModule};
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
    /// How a state written by another module is taken over.
    pub upgrade: StateUpgrade,
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
    /// A state written by another module could not be taken over.
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
}

impl TaskEnv {
    /// A new instance writing through `durability`'s sink, restored from
    /// `state`, or initialised with the plugin's config without one. A
    /// state another module wrote is taken over through portable state
    /// (see `state_upgrade`), unless `allow_module_change` restores its
    /// memory image as it is.
    pub fn instance(
        &self,
        durability: &dyn Durability,
        state: Option<&Snapshot>,
    ) -> Result<PluginInstance, InstanceError> {
        let other_module =
            state.filter(|s| s.module_sha256 != self.module.sha256 && !self.allow_module_change);
        let exported = other_module
            .map(|s| self.upgrade.export(s, &self.module))
            .transpose()?;
        let mut instance =
            PluginInstance::new(&self.module, durability.sink(), self.sink_topics.clone())?;
        match (state, exported) {
            (Some(snapshot), Some(portable)) => {
                instance.init(&self.plugin_config)?;
                state_upgrade::import(&mut instance, &portable, snapshot, &self.module)?;
                tracing::info!(
                    format_version = portable.format_version,
                    bytes = portable.bytes.len(),
                    "state taken over from another plugin module"
                );
            }
            (Some(snapshot), None) => instance.restore(snapshot, self.allow_module_change)?,
            (None, _) => instance.init(&self.plugin_config)?,
        }
        Ok(instance)
    }
}
