//! The checkpoint store on disk.
//!
//! ```text
//! <directory>/chk-<id, 10 digits>/
//!     <topic>-<partition>.snap    one encoded snapshot per partition task
//!     _metadata.json              written last: temp file, fsync, rename
//! ```
//!
//! A checkpoint is complete only when its metadata exists, because the
//! metadata is written after every state file is durable. Loading verifies
//! every file named in the metadata (size, and the snapshot's own CRC); a
//! partial or corrupt checkpoint is skipped with a warning and the previous
//! one is used. Files are untrusted input.

use crate::runtime::snapshot::{Snapshot, SnapshotError};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

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
    /// `(topic, partition, next offset, state)`.
    pub partitions: Vec<(String, i32, i64, Snapshot)>,
}

impl CompletedCheckpoint {
    /// The entry of one partition, if the checkpoint has it.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<(i64, &Snapshot)> {
        self.partitions
            .iter()
            .find(|(t, p, _, _)| t == topic && *p == partition)
            .map(|(_, _, o, s)| (*o, s))
    }
}

/// The store: a directory of checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    retain: usize,
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
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ids(&self) -> Result<Vec<u64>, CheckpointError> {
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

    /// Writes a checkpoint: state files (each fsynced), then the metadata
    /// (temp file, fsync, rename, fsync of the directory). Returns the
    /// bytes written.
    pub fn write(
        &self,
        id: u64,
        partitions: &[(String, i32, i64, &Snapshot)],
    ) -> Result<u64, CheckpointError> {
        let dir = self.path_of(id);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut entries = Vec::with_capacity(partitions.len());
        let mut total = 0u64;
        let mut buf = Vec::new();
        for (topic, partition, offset, snap) in partitions {
            let file = format!("{topic}-{partition}.snap");
            let path = dir.join(&file);
            buf.clear();
            snap.encode(&mut buf);
            write_durably(&path, &buf)?;
            total += buf.len() as u64;
            entries.push(PartitionEntry {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                file,
                size: buf.len() as u64,
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
        Ok(total + json.len() as u64)
    }

    /// Deletes checkpoints older than the newest `retain` up to `newest`.
    fn prune(&self, newest: u64) -> Result<(), CheckpointError> {
        let keep_from = newest.saturating_sub(self.retain as u64 - 1);
        for id in self.ids()? {
            if id < keep_from {
                let p = self.path_of(id);
                fs::remove_dir_all(&p).map_err(io(&p))?;
            }
        }
        Ok(())
    }

    /// Loads one checkpoint, verifying everything it names.
    pub fn load(&self, id: u64) -> Result<CompletedCheckpoint, CheckpointError> {
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
        let mut partitions = Vec::with_capacity(meta.partitions.len());
        for e in meta.partitions {
            if e.file.contains('/') || e.file.contains("..") {
                return Err(corrupt(format!(
                    "state file name {:?} escapes the directory",
                    e.file
                )));
            }
            let path = dir.join(&e.file);
            let bytes = fs::read(&path).map_err(|err| corrupt(format!("{}: {err}", e.file)))?;
            if bytes.len() as u64 != e.size {
                return Err(corrupt(format!(
                    "{}: {} bytes, metadata says {}",
                    e.file,
                    bytes.len(),
                    e.size
                )));
            }
            let snap = Snapshot::decode(&bytes)
                .map_err(|err: SnapshotError| corrupt(format!("{}: {err}", e.file)))?;
            partitions.push((e.topic, e.partition, e.offset, snap));
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

    fn snap(fill: u8) -> Snapshot {
        Snapshot {
            module_sha256: [1; 32],
            globals: vec![GlobalValue::I32(fill as i32)],
            memory: vec![fill; 65536],
        }
    }

    #[test]
    fn newest_complete_checkpoint_wins_and_retention_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 2).unwrap();
        for id in 1..=4u64 {
            let s = snap(id as u8);
            store
                .write(id, &[("t".into(), 0, id as i64 * 10, &s)])
                .unwrap();
        }
        assert_eq!(store.ids().unwrap(), vec![3, 4]);
        let c = store.latest().unwrap().unwrap();
        assert_eq!(c.id, 4);
        assert_eq!(c.partition("t", 0).unwrap().0, 40);
        assert_eq!(c.partition("t", 0).unwrap().1, &snap(4));
        assert_eq!(store.next_id().unwrap(), 5);
    }

    #[test]
    fn partial_and_corrupt_checkpoints_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 10).unwrap();
        let s = snap(1);
        store.write(1, &[("t".into(), 0, 5, &s)]).unwrap();
        store.write(2, &[("t".into(), 0, 9, &s)]).unwrap();
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
