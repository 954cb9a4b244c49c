//! The checkpoint store on disk.
//!
//! ```text
//! <directory>/chk-<id, 10 digits>/
//!     <topic>-<partition>.snap    a partition's full state, or
//!     <topic>-<partition>.delta   what changed since its state in chk-<base>
//!     _metadata.json              written last: temp file, fsync, rename
//! ```
//!
//! A checkpoint is complete only when its metadata exists, because the
//! metadata is written after every state file is durable. Loading verifies
//! every file named in the metadata (size, and the snapshot's own CRC) and,
//! for a delta, every link of its chain down to a full snapshot (each base
//! must be a complete checkpoint whose file has the CRC the link records);
//! a partial or corrupt checkpoint, or one with a broken chain, is skipped
//! with a warning and the previous one is used. Files are untrusted input.
//!
//! Deltas are planned by the [`StateMirrors`] the store keeps (what each
//! partition's state is, and what changed since it was last written), and
//! retention keeps every checkpoint a retained one links to.

use super::state_mirror::{LineageError, Planned, StateMirrors};
use crate::runtime::snapshot::{Snapshot, SnapshotError};
use crate::runtime::snapshot_delta::{self, Capture, DeltaLink, SnapshotDelta, StateFile};
use crate::topic_partition::{Position, TopicPartition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Errors of the checkpoint store.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Filesystem error, with the path.
    #[error("checkpoint store: {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// A checkpoint on disk is not usable.
    #[error("checkpoint {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A task's capture does not follow the state the writer has.
    #[error("checkpoint writer: {0}")]
    Lineage(#[from] LineageError),
    /// An object-store request failed (after its retries).
    #[error("checkpoint store: {url}: {cause}")]
    Store {
        url: String,
        cause: Box<object_store::Error>,
    },
    /// `[checkpoint] directory` names an object store that cannot be used.
    #[error("checkpoint.directory = \"{url}\": {reason}")]
    StoreConfig { url: String, reason: String },
}

const METADATA: &str = "_metadata.json";
const PREFIX: &str = "chk-";

/// One partition's entry in a checkpoint's metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionEntry {
    pub topic: String,
    pub partition: i32,
    /// The next offset to read: everything before it is in the state.
    pub offset: i64,
    /// State file name inside the checkpoint directory.
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// For a delta: the checkpoint holding the state it applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<u64>,
}

/// A checkpoint's metadata file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Metadata {
    pub id: u64,
    /// Wall-clock time of completion, milliseconds since the epoch.
    pub created_ms: u64,
    pub partitions: Vec<PartitionEntry>,
}

/// A complete checkpoint, loaded and verified.
#[derive(Debug, Clone)]
pub struct CompletedCheckpoint {
    pub id: u64,
    pub partitions: Vec<CheckpointedPartition>,
}

/// One partition in a complete checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointedPartition {
    pub tp: TopicPartition,
    /// The next offset to read: everything before it is in `state`.
    pub offset: i64,
    pub state: Snapshot,
}

impl CompletedCheckpoint {
    /// The entry of one partition, if the checkpoint has it.
    pub fn partition(&self, tp: &TopicPartition) -> Option<&CheckpointedPartition> {
        self.partitions.iter().find(|p| p.tp == *tp)
    }
}

/// The store: a directory of checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    retain: usize,
    /// Every partition's state as last captured, and what changed since it
    /// was written: what deltas are made of. Shared by the clones.
    mirrors: Arc<Mutex<StateMirrors>>,
}

/// What was written for one partition: what a later delta links to.
struct WrittenFile {
    /// Trailing CRC32 of the file.
    crc: u32,
    size: u64,
    /// A full snapshot (not a delta).
    full: bool,
}

/// One partition's file in a checkpoint being written.
enum ToWrite<'a> {
    Full(&'a Snapshot),
    Delta(DeltaLink, SnapshotDelta),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |cause| CheckpointError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

impl CheckpointStore {
    /// Opens (creating) the directory; keeps the newest `retain` checkpoints.
    pub fn open(dir: &Path, retain: usize) -> Result<Self, CheckpointError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(CheckpointStore {
            dir: dir.to_path_buf(),
            retain: retain.max(1),
            mirrors: Arc::new(Mutex::new(StateMirrors::new(
                crate::config::default_full_snapshot_every(),
            ))),
        })
    }

    /// Writes a partition's full state at least every `n` checkpoints
    /// (1: never a delta); see `checkpoint.full_snapshot_every`.
    pub fn with_full_snapshot_every(self, n: u32) -> Self {
        CheckpointStore {
            mirrors: Arc::new(Mutex::new(StateMirrors::new(n))),
            ..self
        }
    }

    fn lock_mirrors(&self) -> std::sync::MutexGuard<'_, StateMirrors> {
        // A panic while applying a capture leaves at worst a mirror whose
        // lineage check refuses the next delta: no silent corruption.
        self.mirrors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the partition tasks' captures into the writer's mirrors. Call
    /// before anything that can fail a checkpoint, so that a checkpoint
    /// that fails loses no capture (the next delta covers its pages).
    pub fn absorb(
        &self,
        captures: impl IntoIterator<Item = (TopicPartition, Capture)>,
    ) -> Result<(), CheckpointError> {
        let mut mirrors = self.lock_mirrors();
        for (tp, capture) in captures {
            mirrors.apply(&tp, capture)?;
        }
        Ok(())
    }

    /// Writes checkpoint `id` from the mirrored states: per partition a
    /// delta against its last written state, or the full state (the first
    /// time, and for compaction). `positions` are each partition's next
    /// offset; every partition must have been [`absorb`](Self::absorb)ed.
    /// Returns the bytes written.
    pub fn write_mirrored(&self, id: u64, positions: &[Position]) -> Result<u64, CheckpointError> {
        let mut mirrors = self.lock_mirrors();
        let mut planned = Vec::with_capacity(positions.len());
        for (tp, offset) in positions {
            let file = match mirrors.plan(tp) {
                Some(Planned::Full(s)) => ToWrite::Full(s),
                Some(Planned::Delta(link, d)) => ToWrite::Delta(link, d),
                None => {
                    return Err(CheckpointError::Corrupt {
                        path: self.path_of(id),
                        reason: format!("no state captured for {tp}"),
                    });
                }
            };
            planned.push((tp, *offset, file));
        }
        let (total, written) = self.write_files(id, &planned)?;
        drop(planned);
        for ((tp, _), w) in positions.iter().zip(written) {
            mirrors.written(tp, id, w.crc, w.size, w.full);
        }
        Ok(total)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Ids of the checkpoint directories on disk, complete or not,
    /// ascending.
    pub fn ids(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_prefix(PREFIX).and_then(|s| s.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn path_of(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{id:010}"))
    }

    /// An id greater than any checkpoint on disk, complete or not.
    pub fn next_id(&self) -> Result<u64, CheckpointError> {
        Ok(self.ids()?.last().map_or(1, |id| id + 1))
    }

    /// Writes a checkpoint of full states: state files (each fsynced),
    /// then the metadata (temp file, fsync, rename, fsync of the
    /// directory). Returns the bytes written.
    pub fn write(
        &self,
        id: u64,
        partitions: &[(Position, &Snapshot)],
    ) -> Result<u64, CheckpointError> {
        let files: Vec<_> = partitions
            .iter()
            .map(|((tp, o), s)| (tp, *o, ToWrite::Full(s)))
            .collect();
        Ok(self.write_files(id, &files)?.0)
    }

    /// Writes state files, then the metadata. Returns the bytes written
    /// and, per partition, the file's CRC, size and whether it is full.
    fn write_files(
        &self,
        id: u64,
        partitions: &[(&TopicPartition, i64, ToWrite<'_>)],
    ) -> Result<(u64, Vec<WrittenFile>), CheckpointError> {
        let dir = self.path_of(id);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut entries = Vec::with_capacity(partitions.len());
        let mut written = Vec::with_capacity(partitions.len());
        let mut total = 0u64;
        let mut buf = Vec::new();
        for (tp, offset, state) in partitions {
            let (topic, partition) = (&tp.topic, tp.partition);
            buf.clear();
            let (file, base) = match state {
                ToWrite::Full(snap) => {
                    snap.encode(&mut buf);
                    (format!("{topic}-{partition}.snap"), None)
                }
                ToWrite::Delta(link, delta) => {
                    delta.encode(*link, &mut buf);
                    (format!("{topic}-{partition}.delta"), Some(link.base))
                }
            };
            let path = dir.join(&file);
            write_durably(&path, &buf)?;
            total += buf.len() as u64;
            written.push(WrittenFile {
                crc: snapshot_delta::file_crc(&buf),
                size: buf.len() as u64,
                full: base.is_none(),
            });
            entries.push(PartitionEntry {
                topic: topic.clone(),
                partition,
                offset: *offset,
                file,
                size: buf.len() as u64,
                base,
            });
        }
        super::failpoint::hit(super::failpoint::AFTER_STATE_FILES);
        let meta = Metadata {
            id,
            created_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            partitions: entries,
        };
        let json = serde_json::to_vec_pretty(&meta).expect("metadata serializes");
        let tmp = dir.join(format!("{METADATA}.tmp"));
        write_durably(&tmp, &json)?;
        let meta_path = dir.join(METADATA);
        fs::rename(&tmp, &meta_path).map_err(io(&meta_path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))?;
        self.prune(id)?;
        Ok((total + json.len() as u64, written))
    }

    /// Deletes checkpoints older than the newest `retain` up to `newest`,
    /// except those a retained checkpoint's deltas link to (directly or
    /// down the chain).
    fn prune(&self, newest: u64) -> Result<(), CheckpointError> {
        let keep_from = newest.saturating_sub(self.retain as u64 - 1);
        let ids = self.ids()?;
        let mut needed: BTreeSet<u64> = ids.iter().copied().filter(|&i| i >= keep_from).collect();
        let mut todo: Vec<u64> = needed.iter().copied().collect();
        while let Some(id) = todo.pop() {
            // An unreadable metadata file is an unusable checkpoint: it
            // needs nothing.
            let Ok(meta) = self.metadata(id) else {
                continue;
            };
            for base in meta.partitions.iter().filter_map(|e| e.base) {
                if base < id && needed.insert(base) {
                    todo.push(base);
                }
            }
        }
        for id in ids {
            if id < keep_from && !needed.contains(&id) {
                let p = self.path_of(id);
                fs::remove_dir_all(&p).map_err(io(&p))?;
            }
        }
        Ok(())
    }

    /// A checkpoint's metadata, checked against its id.
    /// The metadata of checkpoint `id`; an error if it never completed.
    pub fn metadata(&self, id: u64) -> Result<Metadata, CheckpointError> {
        let dir = self.path_of(id);
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: dir.clone(),
            reason,
        };
        let meta_path = dir.join(METADATA);
        let json = match fs::read(&meta_path) {
            Ok(j) => j,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(corrupt(
                    "no metadata: the checkpoint never completed".into(),
                ));
            }
            Err(e) => return Err(io(&meta_path)(e)),
        };
        let meta: Metadata =
            serde_json::from_slice(&json).map_err(|e| corrupt(format!("metadata: {e}")))?;
        if meta.id != id {
            return Err(corrupt(format!("metadata names id {}", meta.id)));
        }
        Ok(meta)
    }

    /// The bytes of one partition's file in checkpoint `id`, size-checked.
    fn read_entry(&self, id: u64, e: &PartitionEntry) -> Result<Vec<u8>, String> {
        if e.file.contains('/') || e.file.contains("..") {
            return Err(format!(
                "state file name {:?} escapes the directory",
                e.file
            ));
        }
        let path = self.path_of(id).join(&e.file);
        let bytes = fs::read(&path).map_err(|err| format!("{}: {err}", e.file))?;
        if bytes.len() as u64 != e.size {
            return Err(format!(
                "{}: {} bytes, metadata says {}",
                e.file,
                bytes.len(),
                e.size
            ));
        }
        Ok(bytes)
    }

    /// A partition's state in checkpoint `id`: its full snapshot, or its
    /// chain of deltas applied in order to the full snapshot they start
    /// from. Any broken link is an error (the reason).
    fn resolve(&self, id: u64, entry: &PartitionEntry) -> Result<Snapshot, String> {
        let mut deltas = Vec::new();
        let (mut at, mut e) = (id, entry.clone());
        let mut expected_crc = None;
        let base = loop {
            let bytes = self
                .read_entry(at, &e)
                .map_err(|r| format!("chk-{at:010}: {r}"))?;
            if let Some(crc) = expected_crc
                && snapshot_delta::file_crc(&bytes) != crc
            {
                return Err(format!(
                    "chk-{at:010}/{}: not the file the delta above it was taken against (CRC differs)",
                    e.file
                ));
            }
            match StateFile::decode(&bytes)
                .map_err(|err: SnapshotError| format!("chk-{at:010}/{}: {err}", e.file))?
            {
                StateFile::Full(s) => break s,
                StateFile::Delta(link, d) => {
                    if e.base != Some(link.base) || link.base >= at {
                        return Err(format!(
                            "chk-{at:010}/{}: delta links to checkpoint {}, metadata says {:?}",
                            e.file, link.base, e.base
                        ));
                    }
                    let meta = self
                        .metadata(link.base)
                        .map_err(|err| format!("base of chk-{at:010}/{}: {err}", e.file))?;
                    let next = meta
                        .partitions
                        .into_iter()
                        .find(|b| b.topic == e.topic && b.partition == e.partition)
                        .ok_or_else(|| {
                            format!(
                                "base checkpoint {} has no state for {}/{}",
                                link.base, e.topic, e.partition
                            )
                        })?;
                    deltas.push(d);
                    expected_crc = Some(link.base_crc);
                    at = link.base;
                    e = next;
                }
            }
        };
        let mut state = base;
        for d in deltas.iter().rev() {
            state
                .apply_delta(d)
                .map_err(|err| format!("applying a delta of the chain: {err}"))?;
        }
        Ok(state)
    }

    /// Loads one checkpoint, verifying everything it names.
    pub fn load(&self, id: u64) -> Result<CompletedCheckpoint, CheckpointError> {
        let meta = self.metadata(id)?;
        let mut partitions = Vec::with_capacity(meta.partitions.len());
        for e in &meta.partitions {
            let snap = self
                .resolve(id, e)
                .map_err(|reason| CheckpointError::Corrupt {
                    path: self.path_of(id),
                    reason,
                })?;
            partitions.push(CheckpointedPartition {
                tp: TopicPartition::new(e.topic.clone(), e.partition),
                offset: e.offset,
                state: snap,
            });
        }
        Ok(CompletedCheckpoint { id, partitions })
    }

    /// The newest complete, valid checkpoint; incomplete or corrupt ones
    /// are skipped with a warning.
    pub fn latest(&self) -> Result<Option<CompletedCheckpoint>, CheckpointError> {
        for id in self.ids()?.into_iter().rev() {
            match self.load(id) {
                Ok(c) => return Ok(Some(c)),
                Err(CheckpointError::Corrupt { path, reason }) => {
                    tracing::warn!(checkpoint = %path.display(), %reason, "skipping unusable checkpoint");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let mut f = File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::snapshot::GlobalValue;

    fn t0() -> TopicPartition {
        TopicPartition::new("t", 0)
    }

    fn snap(fill: u8) -> Snapshot {
        Snapshot {
            module_sha256: [1; 32],
            globals: vec![GlobalValue::I32(fill as i32)],
            time: Default::default(),
            memory: vec![fill; 65536],
        }
    }

    #[test]
    fn newest_complete_checkpoint_wins_and_retention_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 2).unwrap();
        for id in 1..=4u64 {
            let s = snap(id as u8);
            store.write(id, &[((t0(), id as i64 * 10), &s)]).unwrap();
        }
        assert_eq!(store.ids().unwrap(), vec![3, 4]);
        let c = store.latest().unwrap().unwrap();
        assert_eq!(c.id, 4);
        assert_eq!(c.partition(&t0()).unwrap().offset, 40);
        assert_eq!(c.partition(&t0()).unwrap().state, snap(4));
        assert_eq!(store.next_id().unwrap(), 5);
    }

    #[test]
    fn partial_and_corrupt_checkpoints_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 10).unwrap();
        let s = snap(1);
        store.write(1, &[((t0(), 5), &s)]).unwrap();
        store.write(2, &[((t0(), 9), &s)]).unwrap();
        // 3: state written, no metadata (crash before completion).
        let p3 = store.path_of(3);
        fs::create_dir_all(&p3).unwrap();
        fs::write(p3.join("t-0.snap"), b"partial").unwrap();
        assert_eq!(store.latest().unwrap().unwrap().id, 2);
        // 2 gets a flipped byte: 1 is used.
        let f = store.path_of(2).join("t-0.snap");
        let mut bytes = fs::read(&f).unwrap();
        bytes[100] ^= 1;
        fs::write(&f, &bytes).unwrap();
        assert!(matches!(
            store.load(2),
            Err(CheckpointError::Corrupt { .. })
        ));
        assert_eq!(store.latest().unwrap().unwrap().id, 1);
        // Truncated file of 1: nothing usable.
        let f = store.path_of(1).join("t-0.snap");
        let bytes = fs::read(&f).unwrap();
        fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
        assert!(store.latest().unwrap().is_none());
        assert_eq!(store.next_id().unwrap(), 4);
    }
}
