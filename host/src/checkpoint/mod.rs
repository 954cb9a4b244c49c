//! Checkpoints: offsets and plugin state saved together, restored together.
//!
//! - [`store`]: the on-disk layout (a directory per checkpoint, state files,
//!   metadata written last), retention, and finding the newest complete one.
//! - [`coordinator`]: when to take one, and the order that makes it
//!   complete: snapshots from every task → flush the producer → state files
//!   → metadata → commit offsets to the group.
//! - [`state_mirror`]: the writer's copy of every partition's state, which
//!   deltas are planned from (and compaction written from).
//! - [`transactional`]: exactly-once state files keyed by offset.
//! - [`folder`]: a local directory or an object-store prefix.
//! - [`failpoint`]: deterministic crash points for the crash tests.
//! - [`inspect`]: `weir checkpoints list|show|verify`.
//! - [`module_archive`]: the plugin modules the state was written by.
//! - [`savepoint`]: named, self-contained states taken and restored on
//!   purpose, which retention never deletes.

pub mod coordinator;
pub mod failpoint;
pub mod folder;
pub mod inspect;
pub mod module_archive;
pub mod savepoint;
pub mod state_mirror;
pub mod store;
pub mod transactional;

pub use coordinator::{CheckpointTrigger, TaskCheckpoint};
pub use store::{CheckpointError, CheckpointStore, CheckpointedPartition, CompletedCheckpoint};
