//! Exactly-once state files: Kafka is the source of truth.
//!
//! Under exactly-once each worker commits one Kafka transaction at every
//! checkpoint, with the input offsets of its partitions inside it
//! (`send_offsets_to_transaction`). Before that commit each partition task
//! writes its snapshot here, keyed by the offset the snapshot reflects:
//!
//! ```text
//! <directory>/eos/<topic>-<partition>/<offset, 20 digits>.snap
//! <directory>/eos/<topic>-<partition>/<offset, 20 digits>-<writer>.snap
//! ```
//!
//! The second form is for group assignment, where several processes share
//! the directory and a partition's previous owner may still write after it
//! lost the partition (a zombie). Each process writes under its own
//! `writer` name, and its commit names the writer in the committed
//! offset's metadata; a restore loads exactly the file that commit
//! recorded, so a zombie's files are never read.
//!
//! Recovery reads the group's committed offset and loads the snapshot for
//! exactly that offset. A crash between the snapshot and the commit leaves
//! the older committed offset, whose snapshot is still here (files below
//! the committed offset are deleted only after a later commit), and the
//! transaction aborts: nothing is lost, nothing is duplicated, and the
//! state never runs ahead of committed output.
//!
//! A file is a full snapshot or a delta (`WEIRDLT1`) whose link names the
//! offset of the file it applies to and that file's CRC. The task writes a
//! delta only on top of the file it wrote last in this process, for the
//! capture right before (same instance lineage); otherwise, and every
//! `full_snapshot_every` files or when the chain's bytes reach the memory
//! size, it captures and writes its full state. Pruning below the
//! committed offset keeps every file the committed one's chain needs.

use super::folder::{Folder, StoreLocation};
use super::store::CheckpointError;
use crate::runtime::snapshot::Snapshot;
use crate::runtime::snapshot_delta::{self, Capture, CapturedState, DeltaLink, StateFile};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// One partition's exactly-once state directory.
#[derive(Debug, Clone)]
pub struct PartitionStateDir {
    dir: Folder,
    /// The file this process wrote last, which the next delta may link to.
    head: Option<Box<Head>>,
    /// The offsets of the head's chain, its full snapshot first: what
    /// pruning keeps without reading the files' headers back.
    chain: Vec<i64>,
    /// A full snapshot at least every this many files.
    full_every: u32,
    /// Whose files this process writes ("" with manual assignment).
    writer: String,
}

/// The last file written, and the capture it holds.
#[derive(Debug, Clone, Copy)]
struct Head {
    offset: i64,
    crc: u32,
    /// Lineage and number of the capture in it.
    instance: u64,
    seq: u64,
    /// Deltas since the last full file, and their bytes.
    chain_len: u32,
    chain_bytes: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |cause| CheckpointError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

impl PartitionStateDir {
    /// Opens (creating) `<root>/eos/<topic>-<partition>`.
    pub fn open(
        root: &StoreLocation,
        topic: &str,
        partition: i32,
    ) -> Result<Self, CheckpointError> {
        let dir = root.folder(&["eos", &format!("{topic}-{partition}")])?;
        Ok(PartitionStateDir {
            dir,
            head: None,
            chain: Vec::new(),
            full_every: crate::config::default_full_snapshot_every(),
            writer: String::new(),
        })
    }

    /// Writes a full snapshot at least every `n` files (1: always).
    pub fn with_full_snapshot_every(self, n: u32) -> Self {
        PartitionStateDir {
            full_every: n.max(1),
            ..self
        }
    }

    /// Writes files under `writer`'s name (see the module docs).
    pub fn with_writer(self, writer: &str) -> Self {
        PartitionStateDir {
            writer: writer.to_string(),
            ..self
        }
    }

    /// Whose files this process writes.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Whether the next capture must be full: nothing written yet by this
    /// process, the last file does not hold the instance's last capture
    /// (`(lineage, seq)` from `PluginInstance::capture_position`), or the
    /// chain is long enough to compact.
    pub fn wants_full(&self, position: (u64, u64), memory_len: usize) -> bool {
        match self.head.as_deref() {
            Some(h) => {
                (h.instance, h.seq) != position
                    || h.chain_len + 1 >= self.full_every
                    || h.chain_bytes >= memory_len as u64
            }
            None => true,
        }
    }

    fn path(&self, offset: i64, writer: &str) -> PathBuf {
        self.dir.describe(&file_name(offset, writer, "snap"))
    }

    /// The files there are: `(offset, writer)`, ascending.
    pub fn files(&self) -> Result<Vec<(i64, String)>, CheckpointError> {
        let mut v = Vec::new();
        for name in self.dir.list()? {
            let Some(stem) = name.strip_suffix(".snap").map(str::to_string) else {
                continue;
            };
            let (offset, writer) = stem.split_once('-').unwrap_or((&stem, ""));
            if let Ok(o) = offset.parse() {
                v.push((o, writer.to_string()));
            }
        }
        v.sort_unstable();
        Ok(v)
    }

    /// Offsets that have a snapshot file (of any writer), ascending.
    pub fn offsets(&self) -> Result<Vec<i64>, CheckpointError> {
        let mut v: Vec<i64> = self.files()?.into_iter().map(|(o, _)| o).collect();
        v.dedup();
        Ok(v)
    }

    /// Writes the capture for `offset` durably (locally: temp file, fsync,
    /// rename, directory fsync; an object store: one put): a full snapshot, or a delta linked to the file
    /// written last (see [`wants_full`](Self::wants_full)). Returns its
    /// size.
    pub fn write(
        &mut self,
        offset: i64,
        capture: &Capture,
        buf: &mut Vec<u8>,
    ) -> Result<u64, CheckpointError> {
        buf.clear();
        let head = match (&capture.state, self.head.as_deref()) {
            (CapturedState::Full(snap), _) => {
                snap.encode(buf);
                Head {
                    offset,
                    crc: 0,
                    instance: capture.instance,
                    seq: capture.seq,
                    chain_len: 0,
                    chain_bytes: 0,
                }
            }
            (CapturedState::Delta(delta), Some(h))
                if h.instance == capture.instance
                    && h.seq + 1 == capture.seq
                    && h.offset < offset =>
            {
                delta.encode(
                    DeltaLink {
                        base: h.offset as u64,
                        base_crc: h.crc,
                    },
                    buf,
                );
                Head {
                    offset,
                    crc: 0,
                    instance: capture.instance,
                    seq: capture.seq,
                    chain_len: h.chain_len + 1,
                    chain_bytes: h.chain_bytes + buf.len() as u64,
                }
            }
            (CapturedState::Delta(_), _) => {
                return Err(CheckpointError::Corrupt {
                    path: self.path(offset, &self.writer),
                    reason: format!(
                        "a delta of capture {} (instance {}) does not follow the last state file written",
                        capture.seq, capture.instance
                    ),
                });
            }
        };
        // Until the new file is durable, nothing may link to the old head
        // by mistake: a failure below leaves no head (the next is full).
        self.head = None;
        self.dir.write(
            &file_name(offset, &self.writer, "snap"),
            &file_name(offset, &self.writer, "tmp"),
            buf,
        )?;
        if head.chain_len == 0 {
            self.chain.clear();
        }
        self.chain.push(offset);
        self.head = Some(Box::new(Head {
            crc: snapshot_delta::file_crc(buf),
            ..head
        }));
        Ok(buf.len() as u64)
    }

    /// Writes `state` whole as the state for `offset` (a savepoint being
    /// restored): nothing links to it, and the next capture is full.
    pub fn write_full(&mut self, offset: i64, state: &Snapshot) -> Result<u64, CheckpointError> {
        let mut buf = Vec::with_capacity(state.encoded_len());
        state.encode(&mut buf);
        self.head = None;
        self.chain.clear();
        self.dir.write(
            &file_name(offset, &self.writer, "snap"),
            &file_name(offset, &self.writer, "tmp"),
            &buf,
        )?;
        Ok(buf.len() as u64)
    }

    /// The state for exactly `offset` written with manual assignment (no
    /// writer name); see [`load_from`](Self::load_from).
    pub fn load(&self, offset: i64) -> Result<Option<Snapshot>, CheckpointError> {
        self.load_from(offset, "")
    }

    /// The state `writer` wrote for exactly `offset`, if it wrote one: its
    /// full snapshot, or its chain of deltas applied to the full snapshot
    /// it starts from (a chain is one writer's). A broken link makes it
    /// corrupt.
    pub fn load_from(
        &self,
        offset: i64,
        writer: &str,
    ) -> Result<Option<Snapshot>, CheckpointError> {
        let path = self.path(offset, writer);
        let Some(bytes) = self.dir.read(&file_name(offset, writer, "snap"), None)? else {
            return Ok(None);
        };
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.clone(),
            reason,
        };
        let mut deltas = Vec::new();
        let (mut at, mut bytes) = (offset, bytes);
        let base = loop {
            match StateFile::decode(&bytes).map_err(|e| corrupt(format!("offset {at}: {e}")))? {
                StateFile::Full(s) => break s,
                StateFile::Delta(link, d) => {
                    let base = i64::try_from(link.base).unwrap_or(i64::MAX);
                    if base >= at {
                        return Err(corrupt(format!(
                            "offset {at}: delta links forward to {}",
                            link.base
                        )));
                    }
                    let next = match self.dir.read(&file_name(base, writer, "snap"), None) {
                        Ok(Some(b)) => b,
                        Ok(None) => {
                            return Err(corrupt(format!(
                                "offset {at}: base state at offset {base}: no such file"
                            )));
                        }
                        Err(e) => {
                            return Err(corrupt(format!(
                                "offset {at}: base state at offset {base}: {e}"
                            )));
                        }
                    };
                    if snapshot_delta::file_crc(&next) != link.base_crc {
                        return Err(corrupt(format!(
                            "offset {at}: the state file at offset {base} is not the one the delta was taken against (CRC differs)"
                        )));
                    }
                    deltas.push(d);
                    (at, bytes) = (base, next);
                }
            }
        };
        let mut state = base;
        for d in deltas.iter().rev() {
            state
                .apply_delta(d)
                .map_err(|e| corrupt(format!("applying a delta of the chain: {e}")))?;
        }
        Ok(Some(state))
    }

    /// Offsets of the files the state at `offset` is made of (itself and,
    /// for a delta, its chain), read from the files' headers. A header
    /// that cannot be read is an error, not the chain's end: pruning must
    /// not take the rest of the chain for unneeded.
    fn chain_of(&self, offset: i64, writer: &str) -> Result<BTreeSet<i64>, CheckpointError> {
        let mut out = BTreeSet::new();
        let mut at = offset;
        while out.insert(at) {
            let header = self
                .dir
                .read(&file_name(at, writer, "snap"), Some(HEADER))?;
            let link = header
                .filter(|h| h.len() == HEADER)
                .and_then(|h| snapshot_delta::peek_link(&h));
            match link.and_then(|l| i64::try_from(l.base).ok()) {
                Some(base) if base < at => at = base,
                _ => break,
            }
        }
        Ok(out)
    }

    /// Deletes state files of offsets below `committed` (they can no longer
    /// be what the group's committed offset points at), of every writer,
    /// except those the committed state's delta chain (this process's)
    /// needs. A file another process removed first is no error.
    pub fn prune_below(&self, committed: i64) -> Result<(), CheckpointError> {
        let keep = match self.head.as_deref() {
            Some(h) if h.offset == committed => self.chain.iter().copied().collect(),
            _ => self.chain_of(committed, &self.writer)?,
        };
        for (o, writer) in self.files()? {
            if o < committed && !(writer == self.writer && keep.contains(&o)) {
                self.dir.delete(&file_name(o, &writer, "snap"))?;
            }
        }
        Ok(())
    }
}

/// The bytes of a state file's header that name its delta link.
const HEADER: usize = 52;

/// `<offset, 20 digits>[-<writer>].<ext>`.
fn file_name(offset: i64, writer: &str, ext: &str) -> String {
    if writer.is_empty() {
        format!("{offset:020}.{ext}")
    } else {
        format!("{offset:020}-{writer}.{ext}")
    }
}

/// How many workers' transactional ids may hold a live producer: the
/// largest `parallelism` of any run since the ids above the current one
/// were last fenced. `<directory>/eos/workers`, one decimal number.
///
/// A run with fewer workers than recorded fences the ids it does not use
/// (a zombie of the larger run could otherwise still commit); a run with
/// more records its count before its producers start, so a crash cannot
/// leave an id unrecorded.
pub fn recorded_workers(root: &Path) -> Result<usize, CheckpointError> {
    let path = root.join("eos").join("workers");
    match fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map_err(|e| CheckpointError::Corrupt {
            path: path.clone(),
            reason: format!("not a worker count: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Records `workers` as the number of ids that may be live (see
/// [`recorded_workers`]): durably, through a temporary file.
pub fn record_workers(root: &Path, workers: usize) -> Result<(), CheckpointError> {
    let dir = root.join("eos");
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let (tmp, path) = (dir.join("workers.tmp"), dir.join("workers"));
    super::store::write_durably(&tmp, workers.to_string().as_bytes())?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io(&dir))
}

#[cfg(test)]
mod worker_count_tests {
    use super::*;

    #[test]
    fn the_worker_count_round_trips_and_defaults_to_zero() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(recorded_workers(dir.path()).unwrap(), 0);
        record_workers(dir.path(), 3).unwrap();
        assert_eq!(recorded_workers(dir.path()).unwrap(), 3);
        record_workers(dir.path(), 1).unwrap();
        assert_eq!(recorded_workers(dir.path()).unwrap(), 1);
        fs::write(dir.path().join("eos").join("workers"), "x").unwrap();
        let err = recorded_workers(dir.path()).unwrap_err().to_string();
        assert!(err.contains("workers"), "{err}");
    }
}

#[cfg(test)]
mod writer_tests {
    use super::*;
    use crate::runtime::snapshot::HostTime;

    fn full(memory: Vec<u8>, instance: u64) -> Capture {
        Capture {
            instance,
            seq: 1,
            state: CapturedState::Full(Snapshot {
                module_sha256: [0; 32],
                globals: Vec::new(),
                time: HostTime {
                    event_time: 0,
                    clock_ns: 0,
                },
                memory,
            }),
        }
    }

    #[test]
    fn each_writer_reads_and_keeps_its_own_files() {
        let root = tempfile::tempdir().unwrap();
        let mut owner = PartitionStateDir::open(&StoreLocation::Local(root.path().into()), "in", 0)
            .unwrap()
            .with_writer("owner");
        let mut zombie =
            PartitionStateDir::open(&StoreLocation::Local(root.path().into()), "in", 0)
                .unwrap()
                .with_writer("zombie");
        let mut buf = Vec::new();
        owner.write(10, &full(vec![1; 65536], 1), &mut buf).unwrap();
        // The zombie writes the same offset after the owner: nothing of
        // the owner's is replaced.
        zombie
            .write(10, &full(vec![2; 65536], 2), &mut buf)
            .unwrap();
        let state = |w: &str| owner.load_from(10, w).unwrap().map(|s| s.memory);
        assert_eq!(state("owner"), Some(vec![1; 65536]));
        assert_eq!(state("zombie"), Some(vec![2; 65536]));
        assert_eq!(owner.load(10).unwrap().map(|s| s.memory), None);
        assert_eq!(owner.offsets().unwrap(), vec![10]);
        // Pruning below a later commit removes every writer's older files.
        owner.write(20, &full(vec![3; 65536], 3), &mut buf).unwrap();
        owner.prune_below(20).unwrap();
        assert_eq!(owner.files().unwrap(), vec![(20, "owner".to_string())]);
    }
}
