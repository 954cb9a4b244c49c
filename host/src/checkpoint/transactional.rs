//! Exactly-once state files: Kafka is the source of truth.
//!
//! Under exactly-once each partition task commits its own Kafka
//! transaction at every checkpoint, with its input offset inside it
//! (`send_offsets_to_transaction`). Before that commit it writes its
//! snapshot here, keyed by the offset the snapshot reflects:
//!
//! ```text
//! <directory>/eos/<topic>-<partition>/<offset, 20 digits>.snap
//! ```
//!
//! Recovery reads the group's committed offset and loads the snapshot for
//! exactly that offset. A crash between the snapshot and the commit leaves
//! the older committed offset, whose snapshot is still here (files below
//! the committed offset are deleted only after a later commit), and the
//! transaction aborts: nothing is lost, nothing is duplicated, and the
//! state never runs ahead of committed output.

use super::store::CheckpointError;
use crate::runtime::snapshot::Snapshot;
use std::fs;
use std::path::{Path, PathBuf};

/// One partition's exactly-once state directory.
#[derive(Debug, Clone)]
pub struct PartitionStateDir {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |cause| CheckpointError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

impl PartitionStateDir {
    /// Opens (creating) `<root>/eos/<topic>-<partition>`.
    pub fn open(root: &Path, topic: &str, partition: i32) -> Result<Self, CheckpointError> {
        let dir = root.join("eos").join(format!("{topic}-{partition}"));
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(PartitionStateDir { dir })
    }

    fn path(&self, offset: i64) -> PathBuf {
        self.dir.join(format!("{offset:020}.snap"))
    }

    /// Offsets that have a snapshot file, ascending.
    pub fn offsets(&self) -> Result<Vec<i64>, CheckpointError> {
        let mut v = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let e = e.map_err(io(&self.dir))?;
            if let Some(o) = e
                .file_name()
                .to_string_lossy()
                .strip_suffix(".snap")
                .and_then(|s| s.parse().ok())
            {
                v.push(o);
            }
        }
        v.sort_unstable();
        Ok(v)
    }

    /// Writes the snapshot for `offset` durably (temp file, fsync, rename,
    /// directory fsync). Returns its size.
    pub fn write(
        &self,
        offset: i64,
        snap: &Snapshot,
        buf: &mut Vec<u8>,
    ) -> Result<u64, CheckpointError> {
        buf.clear();
        snap.encode(buf);
        let tmp = self.dir.join(format!("{offset:020}.tmp"));
        super::store::write_durably(&tmp, buf)?;
        let path = self.path(offset);
        fs::rename(&tmp, &path).map_err(io(&path))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(buf.len() as u64)
    }

    /// The snapshot for exactly `offset`, if one was written.
    pub fn load(&self, offset: i64) -> Result<Option<Snapshot>, CheckpointError> {
        let path = self.path(offset);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        Snapshot::decode(&bytes)
            .map(Some)
            .map_err(|e| CheckpointError::Corrupt {
                path,
                reason: e.to_string(),
            })
    }

    /// Deletes snapshots of offsets below `committed` (they can no longer be
    /// what the group's committed offset points at).
    pub fn prune_below(&self, committed: i64) -> Result<(), CheckpointError> {
        for o in self.offsets()? {
            if o < committed {
                let p = self.path(o);
                fs::remove_file(&p).map_err(io(&p))?;
            }
        }
        Ok(())
    }
}
