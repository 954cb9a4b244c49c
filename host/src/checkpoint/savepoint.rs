//! Savepoints: named, self-contained states an operator takes on purpose
//! (before an upgrade, a move, a rescale) and starts from on purpose.
//!
//! ```text
//! <checkpoint.directory>/savepoints/<name>/
//!     <topic>-<partition>.snap    every partition's full state
//!     module-<sha256>.wasm        the module that wrote them (.wat for text)
//!     _savepoint.json             written last: the savepoint exists once it does
//! ```
//!
//! A savepoint holds full snapshots only (no delta links to anything
//! outside it) and the module bytes, so it can be copied anywhere and a
//! later module can take its state over through portable state (ABI 1.1)
//! even where the checkpoint directory is gone. Retention never touches
//! it: checkpoints are `chk-*` and `eos/`, savepoints live apart and are
//! never rewritten (a name that exists is refused).
//!
//! Restoring one (`weir run --from-savepoint NAME|PATH`) makes its offsets
//! and states the job's starting point, winning over both the start
//! position and the newest checkpoint, like Flink's `-s`.

use super::CheckpointError;
use super::folder::{Folder, StoreLocation};
use super::module_archive::ModuleArchive;
use super::store::CheckpointedPartition;
use crate::runtime::snapshot::{Snapshot, hex};
use crate::topic_partition::{Position, TopicPartition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const METADATA: &str = "_savepoint.json";

/// Which savepoint: a name under the job's `savepoints/`, or a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavepointRef {
    /// `<checkpoint.directory>/savepoints/<name>`.
    Named(String),
    /// A local folder holding a savepoint (copied from elsewhere).
    Path(PathBuf),
}

impl std::str::FromStr for SavepointRef {
    type Err = String;

    /// A bare name (letters, digits, `-`, `_`, `.`) is a name; anything
    /// with a `/` is a path.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.contains('/') {
            return Ok(SavepointRef::Path(PathBuf::from(s)));
        }
        check_name(s).map(|()| SavepointRef::Named(s.to_string()))
    }
}

impl std::fmt::Display for SavepointRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SavepointRef::Named(n) => write!(f, "savepoint {n:?}"),
            SavepointRef::Path(p) => write!(f, "savepoint at {}", p.display()),
        }
    }
}

/// A savepoint name is one path segment: `[A-Za-z0-9._-]+`, not `.`/`..`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "savepoint name {name:?}: use letters, digits, `-`, `_` and `.` (or give a path with a `/`)"
        ))
    }
}

/// One partition's entry in a savepoint's metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavepointPartition {
    pub topic: String,
    pub partition: i32,
    /// The next offset to read: everything before it is in the state.
    pub offset: i64,
    pub file: String,
    pub size: u64,
}

/// A savepoint's metadata file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavepointMetadata {
    pub name: String,
    /// Wall-clock time it was written, milliseconds since the epoch.
    pub created_ms: u64,
    /// The delivery guarantee of the job that wrote it.
    pub delivery: String,
    /// SHA-256 of the module that wrote the states (hex).
    pub module_sha256: String,
    /// The module's file inside the savepoint.
    pub module_file: String,
    pub partitions: Vec<SavepointPartition>,
}

/// A listed savepoint's metadata, or why it cannot be read.
pub type Listed = Result<SavepointMetadata, String>;

/// A savepoint read back and verified.
#[derive(Debug)]
pub struct Savepoint {
    pub metadata: SavepointMetadata,
    /// Where it was read from, for messages.
    pub at: PathBuf,
    pub partitions: Vec<CheckpointedPartition>,
    /// The module that wrote the states.
    pub module: Vec<u8>,
}

/// The savepoints folder of a checkpoint location, and savepoints in it.
#[derive(Debug, Clone)]
pub struct Savepoints {
    location: StoreLocation,
}

impl Savepoints {
    pub fn new(location: &StoreLocation) -> Self {
        Savepoints {
            location: location.clone(),
        }
    }

    /// The savepoint's folder; a local one is created only to write.
    fn folder(&self, which: &SavepointRef, create: bool) -> Result<Folder, CheckpointError> {
        Ok(match (which, &self.location) {
            (SavepointRef::Path(p), _) => Folder::Local(p.clone()),
            (SavepointRef::Named(n), StoreLocation::Local(root)) if !create => {
                Folder::Local(local_path(root, n))
            }
            (SavepointRef::Named(n), _) => self.location.folder(&["savepoints", n])?,
        })
    }

    /// Where a savepoint is (its metadata file), for messages.
    pub fn describe(&self, which: &SavepointRef) -> Result<PathBuf, CheckpointError> {
        Ok(self.folder(which, false)?.describe(METADATA))
    }

    /// Whether a complete savepoint exists there.
    pub fn exists(&self, which: &SavepointRef) -> Result<bool, CheckpointError> {
        Ok(self
            .folder(which, false)?
            .read(METADATA, Some(1))?
            .is_some())
    }

    /// The names of the complete savepoints under `savepoints/`, with
    /// their metadata (or why it cannot be read), by name.
    pub fn list(&self) -> Result<Vec<(String, Listed)>, CheckpointError> {
        let StoreLocation::Local(root) = &self.location else {
            return Ok(Vec::new());
        };
        let dir = root.join("savepoints");
        let mut names: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => return Ok(Vec::new()),
        };
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let folder = self.folder(&SavepointRef::Named(name.clone()), false)?;
            let meta = match folder.read(METADATA, None)? {
                Some(json) => serde_json::from_slice(&json).map_err(|e| format!("{METADATA}: {e}")),
                None => Err("incomplete: no metadata (it was never finished)".to_string()),
            };
            out.push((name, meta));
        }
        Ok(out)
    }

    /// Writes savepoint `name`: every partition's full state, the module,
    /// then the metadata. A savepoint of that name that exists is refused.
    pub fn write(
        &self,
        name: &str,
        delivery: &str,
        (sha256, module): (&[u8; 32], &[u8]),
        partitions: &[(Position, Snapshot)],
    ) -> Result<SavepointMetadata, CheckpointError> {
        let which = SavepointRef::Named(name.to_string());
        if self.exists(&which)? {
            return Err(CheckpointError::Corrupt {
                path: self.describe(&which)?,
                reason: "a savepoint of this name exists; savepoints are never overwritten".into(),
            });
        }
        let folder = self.folder(&which, true)?;
        let module_file = format!(
            "module-{}.{}",
            hex(sha256),
            if module.starts_with(b"\0asm") {
                "wasm"
            } else {
                "wat"
            }
        );
        folder.write(&module_file, &format!("{module_file}.tmp"), module)?;
        let mut entries = Vec::with_capacity(partitions.len());
        let mut buf = Vec::new();
        for ((tp, offset), state) in partitions {
            buf.clear();
            state.encode(&mut buf);
            let file = format!("{}-{}.snap", tp.topic, tp.partition);
            folder.write(&file, &format!("{file}.tmp"), &buf)?;
            entries.push(SavepointPartition {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: *offset,
                file,
                size: buf.len() as u64,
            });
        }
        let metadata = SavepointMetadata {
            name: name.to_string(),
            created_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            delivery: delivery.to_string(),
            module_sha256: hex(sha256),
            module_file,
            partitions: entries,
        };
        let json = serde_json::to_vec_pretty(&metadata).expect("metadata serializes");
        folder.write(METADATA, &format!("{METADATA}.tmp"), &json)?;
        Ok(metadata)
    }

    /// Reads a savepoint whole and checks every file (sizes, the
    /// snapshots' CRCs, that each state names the savepoint's module).
    pub fn read(&self, which: &SavepointRef) -> Result<Savepoint, CheckpointError> {
        let folder = self.folder(which, false)?;
        let at = folder.describe(METADATA);
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: at.clone(),
            reason,
        };
        let json = folder
            .read(METADATA, None)?
            .ok_or_else(|| corrupt(format!("no {which} here (no {METADATA})")))?;
        let metadata: SavepointMetadata =
            serde_json::from_slice(&json).map_err(|e| corrupt(format!("{METADATA}: {e}")))?;
        let module = read_named(&folder, &metadata.module_file, None).map_err(corrupt)?;
        let mut partitions = Vec::with_capacity(metadata.partitions.len());
        for e in &metadata.partitions {
            let bytes = read_named(&folder, &e.file, Some(e.size)).map_err(corrupt)?;
            let state =
                Snapshot::decode(&bytes).map_err(|err| corrupt(format!("{}: {err}", e.file)))?;
            if hex(&state.module_sha256) != metadata.module_sha256 {
                return Err(corrupt(format!(
                    "{}: written by module {}, the savepoint names {}",
                    e.file,
                    hex(&state.module_sha256),
                    metadata.module_sha256
                )));
            }
            partitions.push(CheckpointedPartition {
                tp: TopicPartition::new(&e.topic, e.partition),
                offset: e.offset,
                state,
            });
        }
        Ok(Savepoint {
            metadata,
            at,
            partitions,
            module,
        })
    }
}

impl Savepoint {
    /// Puts the savepoint's module into the job's module archive, so that
    /// a different configured module can take the states over.
    pub fn archive_module(&self, archive: &ModuleArchive) -> Result<(), CheckpointError> {
        match self.partitions.first() {
            Some(p) => archive.keep(&p.state.module_sha256, &self.module),
            None => Ok(()),
        }
    }
}

/// File `name` of a savepoint folder, size-checked when `size` is given.
fn read_named(folder: &Folder, name: &str, size: Option<u64>) -> Result<Vec<u8>, String> {
    if name.contains('/') || name.contains("..") {
        return Err(format!("file name {name:?} escapes the savepoint"));
    }
    let bytes = folder
        .read(name, None)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{name}: missing"))?;
    match size {
        Some(n) if bytes.len() as u64 != n => Err(format!(
            "{name}: {} bytes, the metadata says {n}",
            bytes.len()
        )),
        _ => Ok(bytes),
    }
}

/// The local folder a savepoint path names, for messages and listing.
pub fn local_path(root: &Path, name: &str) -> PathBuf {
    root.join("savepoints").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::snapshot::HostTime;

    fn snapshot(sha: u8, fill: u8) -> Snapshot {
        Snapshot {
            module_sha256: [sha; 32],
            globals: Vec::new(),
            time: HostTime::default(),
            memory: vec![fill; 65536],
        }
    }

    #[test]
    fn a_savepoint_reads_back_whole_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let sp = Savepoints::new(&StoreLocation::Local(dir.path().into()));
        let parts = vec![
            ((TopicPartition::new("in", 0), 17), snapshot(7, 1)),
            ((TopicPartition::new("in", 3), 4), snapshot(7, 2)),
        ];
        let meta = sp
            .write(
                "before-v2",
                "exactly-once",
                (&[7; 32], b"\0asm mod"),
                &parts,
            )
            .unwrap();
        assert_eq!(meta.partitions.len(), 2);
        let which: SavepointRef = "before-v2".parse().unwrap();
        let back = sp.read(&which).unwrap();
        assert_eq!(back.module, b"\0asm mod");
        assert_eq!(back.partitions[1].tp, TopicPartition::new("in", 3));
        assert_eq!(back.partitions[1].offset, 4);
        assert_eq!(back.partitions[1].state, parts[1].1);
        let again = sp.write("before-v2", "exactly-once", (&[7; 32], b"x"), &parts);
        assert!(again.unwrap_err().to_string().contains("never overwritten"));
        // Read through its path too (a savepoint copied elsewhere).
        let path = SavepointRef::Path(local_path(dir.path(), "before-v2"));
        assert_eq!(sp.read(&path).unwrap().partitions.len(), 2);
        let listed = sp.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1.as_ref().unwrap().delivery, "exactly-once");
    }

    #[test]
    fn a_damaged_savepoint_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let sp = Savepoints::new(&StoreLocation::Local(dir.path().into()));
        let parts = vec![((TopicPartition::new("in", 0), 1), snapshot(7, 1))];
        sp.write("a", "at-least-once", (&[7; 32], b"(module)"), &parts)
            .unwrap();
        let file = local_path(dir.path(), "a").join("in-0.snap");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        let err = sp.read(&SavepointRef::Named("a".into())).unwrap_err();
        assert!(err.to_string().contains("in-0.snap"), "{err}");
        let err = sp.read(&SavepointRef::Named("b".into())).unwrap_err();
        assert!(err.to_string().contains("no savepoint \"b\""), "{err}");
    }

    #[test]
    fn names_are_one_path_segment() {
        assert_eq!(
            "v1.2_x-y".parse::<SavepointRef>(),
            Ok(SavepointRef::Named("v1.2_x-y".into()))
        );
        assert!("..".parse::<SavepointRef>().is_err());
        assert!("a b".parse::<SavepointRef>().is_err());
        assert_eq!(
            "./sp/a".parse::<SavepointRef>(),
            Ok(SavepointRef::Path("./sp/a".into()))
        );
    }
}
