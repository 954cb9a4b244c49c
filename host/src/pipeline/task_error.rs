//! How a partition task fails: [`TaskError`] says which task, which
//! offsets and why; [`TaskFailure`] is the why, [`RestartError`] the why of
//! a restart that could not be made.

use crate::checkpoint::store::CheckpointError;
use crate::runtime::instance::BatchError;

/// A batch failed in a partition task: which one, where, and why.
#[derive(Debug, thiserror::Error)]
#[error(
    "plugin `{plugin}` on {topic}/{partition}, offsets {first_offset}..={last_offset}: {failure}"
)]
pub struct TaskError {
    pub plugin: String,
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub failure: Box<TaskFailure>,
}

/// Why a partition task failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskFailure {
    /// A batch failed (plugin fault or output refused).
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// `weir_tick` failed (plugin fault or output refused).
    #[error("weir_tick: {0}")]
    Tick(BatchError),
    /// Restarting the task after a failure failed.
    #[error("restart: {0}")]
    Restart(#[from] RestartError),
    /// A checkpoint failed because output was not delivered.
    #[error("output after the last complete checkpoint was not delivered")]
    Undelivered,
}

/// Why a partition task could not be restarted.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// Its last checkpoint or state file could not be read.
    #[error("reading its last state: {0}")]
    State(#[from] CheckpointError),
    /// A fresh instance could not be made (or restored, or initialised).
    #[error(transparent)]
    Instance(#[from] super::task_env::InstanceError),
    /// The partition could not be re-read from the restart offset.
    #[error("seeking to offset {offset}: {cause}")]
    Seek {
        offset: i64,
        cause: rdkafka::error::KafkaError,
    },
}
