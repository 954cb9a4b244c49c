//! Savepoints in a run: starting from one (`--from-savepoint`), leaving
//! one when the job stops cleanly (`--savepoint-on-stop`, or
//! `weir savepoint --stop` through the running process's admin endpoint),
//! and taking one while the job goes on (`weir savepoint`).
//!
//! Starting from a savepoint makes its offsets and states where the job
//! starts, as a checkpoint would be:
//!
//! - at-least-once / none: the savepoint is written into the checkpoint
//!   store as its newest checkpoint, so that the job restores it now and a
//!   crash before the next checkpoint restores it again;
//! - exactly-once: each partition's state is written as its state file for
//!   the savepoint's offset, and the job starts there as if the group had
//!   committed that offset. The group's offsets move with the first
//!   transaction; a crash before it goes back to what the group committed
//!   (and its state), which is consistent, only older.
//!
//! Taking one reads back what a complete checkpoint made durable: at a
//! stop the final checkpoint (or the final exactly-once transactions),
//! while running the first checkpoint that completes after the request
//! (no other starts until the savepoint is written). That is the store's
//! newest checkpoint, or under exactly-once each partition's state file
//! for its final offset, or while running for the offset the group
//! committed.
//!
//! Group assignment refuses both: one member holds only some partitions
//! (a savepoint of a group is not built).

use crate::checkpoint::folder::StoreLocation;
use crate::checkpoint::module_archive::ModuleArchive;
use crate::checkpoint::savepoint::{Savepoint, SavepointMetadata, SavepointRef, Savepoints};
use crate::checkpoint::transactional::PartitionStateDir;
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::config::{Assignment, Config, DeliveryMode};
use crate::kafka::consumer::PartitionStart;
use crate::runtime::PluginModule;
use crate::runtime::snapshot::Snapshot;
use crate::topic_partition::Position;

/// What the command line asks of a run's savepoints.
#[derive(Debug, Clone, Default)]
pub struct SavepointOptions {
    /// Start from this savepoint: its offsets and states win over the
    /// start position and the newest checkpoint.
    pub from: Option<SavepointRef>,
    /// Write a savepoint of this name once the job has stopped cleanly.
    pub on_stop: Option<String>,
}

/// A savepoint cannot be taken or used.
#[derive(Debug, thiserror::Error)]
pub enum SavepointError {
    #[error(
        "savepoints need checkpoints ([checkpoint] enabled = true): without them no state is kept"
    )]
    NoCheckpoints,
    #[error(
        "savepoints are not built for group assignment (source.assignment = \"group\"): a member holds only some of the partitions"
    )]
    Group,
    #[error(
        "savepoint {name:?} exists ({path}); savepoints are never overwritten: choose another name"
    )]
    Exists { name: String, path: String },
    #[error("savepoint {name:?}: {tp} has no state file for its offset {offset}")]
    NoFinalState {
        name: String,
        tp: crate::topic_partition::TopicPartition,
        offset: i64,
    },
    #[error("reading {which}: {cause}")]
    Read {
        which: SavepointRef,
        cause: CheckpointError,
    },
    #[error("writing savepoint {name:?}: {cause}")]
    Write {
        name: String,
        cause: CheckpointError,
    },
    #[error("savepoint {name:?}: reading the group's committed offsets: {cause}")]
    Committed {
        name: String,
        cause: rdkafka::error::KafkaError,
    },
}

/// Checks at start, before any work, that what `options` asks can be
/// done: checkpoints on, manual assignment, a savepoint name not taken.
pub(super) fn check(
    config: &Config,
    mode: DeliveryMode,
    location: &StoreLocation,
    options: &SavepointOptions,
) -> Result<(), SavepointError> {
    if options.from.is_none() && options.on_stop.is_none() {
        return Ok(());
    }
    check_can_take(config, mode)?;
    match &options.on_stop {
        Some(name) => check_free(location, name),
        None => Ok(()),
    }
}

/// Whether this job can take a savepoint at all.
pub(super) fn check_can_take(config: &Config, mode: DeliveryMode) -> Result<(), SavepointError> {
    if !mode.checkpoints() {
        return Err(SavepointError::NoCheckpoints);
    }
    if config.source.assignment == Assignment::Group {
        return Err(SavepointError::Group);
    }
    Ok(())
}

/// The name is not taken.
pub(super) fn check_free(location: &StoreLocation, name: &str) -> Result<(), SavepointError> {
    let which = SavepointRef::Named(name.to_string());
    let write = |cause| SavepointError::Write {
        name: name.to_string(),
        cause,
    };
    let savepoints = Savepoints::new(location);
    if savepoints.exists(&which).map_err(write)? {
        return Err(SavepointError::Exists {
            name: name.to_string(),
            path: savepoints
                .describe(&which)
                .map_err(write)?
                .display()
                .to_string(),
        });
    }
    Ok(())
}

/// Reads the savepoint to start from and keeps its module in the job's
/// archive (a different configured module takes the states over).
pub(super) fn read(
    location: &StoreLocation,
    which: &SavepointRef,
    archive: Option<&ModuleArchive>,
) -> Result<Savepoint, SavepointError> {
    let read = |cause| SavepointError::Read {
        which: which.clone(),
        cause,
    };
    let savepoint = Savepoints::new(location).read(which).map_err(read)?;
    if let Some(archive) = archive {
        savepoint.archive_module(archive).map_err(read)?;
    }
    tracing::info!(
        savepoint = %savepoint.metadata.name,
        at = %savepoint.at.display(),
        partitions = savepoint.partitions.len(),
        module = %savepoint.metadata.module_sha256,
        "starting from a savepoint; its offsets win over the start position and the checkpoints"
    );
    Ok(savepoint)
}

/// At-least-once / none: the savepoint becomes the store's newest
/// checkpoint (see the module docs).
pub(super) fn into_store(
    store: &CheckpointStore,
    savepoint: &Savepoint,
) -> Result<u64, CheckpointError> {
    let id = store.next_id()?;
    let parts: Vec<(Position, &Snapshot)> = savepoint
        .partitions
        .iter()
        .map(|p| ((p.tp.clone(), p.offset), &p.state))
        .collect();
    store.write(id, &parts)?;
    Ok(id)
}

/// Exactly-once: each savepoint partition's state becomes its state file
/// for the savepoint's offset, and its start that offset, as if committed.
pub(super) fn into_state_files(
    location: &StoreLocation,
    savepoint: &Savepoint,
    starts: &mut [PartitionStart],
) -> Result<(), CheckpointError> {
    for start in starts {
        let Some(p) = savepoint.partitions.iter().find(|p| p.tp == start.tp) else {
            tracing::warn!(topic = %start.tp.topic, partition = start.tp.partition, "not in the savepoint: starts as it would without one");
            continue;
        };
        let mut dir = PartitionStateDir::open(location, &start.tp.topic, start.tp.partition)?;
        dir.write_full(p.offset, &p.state)?;
        start.committed = Some(p.offset);
        start.committed_writer = String::new();
    }
    Ok(())
}

/// Savepoint `name` from what the last complete checkpoint made durable;
/// under exactly-once, at `positions` (see the module docs).
pub(super) fn take(
    name: &str,
    mode: DeliveryMode,
    (store, location): (Option<&CheckpointStore>, &StoreLocation),
    module: &PluginModule,
    positions: &[Position],
) -> Result<SavepointMetadata, SavepointError> {
    let write = |cause| SavepointError::Write {
        name: name.to_string(),
        cause,
    };
    let parts: Vec<(Position, Snapshot)> = match store {
        Some(store) => match store.latest().map_err(write)? {
            Some(c) => c
                .partitions
                .into_iter()
                .map(|p| ((p.tp, p.offset), p.state))
                .collect(),
            None => Vec::new(),
        },
        None => {
            let mut parts = Vec::with_capacity(positions.len());
            for (tp, offset) in positions {
                let dir =
                    PartitionStateDir::open(location, &tp.topic, tp.partition).map_err(write)?;
                let state = dir.load(*offset).map_err(write)?.ok_or_else(|| {
                    SavepointError::NoFinalState {
                        name: name.to_string(),
                        tp: tp.clone(),
                        offset: *offset,
                    }
                })?;
                parts.push(((tp.clone(), *offset), state));
            }
            parts
        }
    };
    let delivery = match mode {
        DeliveryMode::Transactional => "exactly-once",
        DeliveryMode::Checkpointed { flush: true } => "at-least-once",
        _ => "none",
    };
    let meta = Savepoints::new(location)
        .write(name, delivery, (&module.sha256, &module.bytes), &parts)
        .map_err(write)?;
    tracing::info!(
        savepoint = name,
        partitions = meta.partitions.len(),
        "savepoint written"
    );
    Ok(meta)
}

/// Exactly-once, while running: the offsets the group committed for
/// `partitions` (with the last complete transactions), those it has.
pub(super) fn committed_positions(
    name: &str,
    consumer: &crate::kafka::consumer::SourceConsumer,
    partitions: &[crate::topic_partition::TopicPartition],
    timeout: std::time::Duration,
) -> Result<Vec<Position>, SavepointError> {
    let mut list = rdkafka::TopicPartitionList::new();
    for tp in partitions {
        list.add_partition(&tp.topic, tp.partition);
    }
    let committed =
        crate::kafka::consumer::committed_offsets(consumer, &list, timeout).map_err(|cause| {
            SavepointError::Committed {
                name: name.to_string(),
                cause,
            }
        })?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some((
                crate::topic_partition::TopicPartition::new(e.topic(), e.partition()),
                o,
            )),
            _ => None,
        })
        .collect())
}
