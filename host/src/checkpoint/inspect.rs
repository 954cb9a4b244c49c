//! `weir checkpoints list|show|verify`: what is in a checkpoint directory,
//! for an operator.
//!
//! At-least-once and `none` keep numbered checkpoints (`chk-N/`, metadata
//! written last); exactly-once keeps per-partition state files keyed by
//! offset (`eos/<topic>-<partition>/`), the one the group's committed
//! offset names being the live one. Both are listed, and the savepoints
//! (`savepoints/<name>/`); `verify` reads every
//! file a state needs (the whole delta chain) and checks every checksum.

use super::store::{CheckpointError, CheckpointStore};
use super::transactional::PartitionStateDir;
use std::fmt::Write;
use std::path::Path;

/// Milliseconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS`.
fn utc(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// One line per checkpoint: id, completion time, partitions, state bytes
/// (full and delta files); then the exactly-once state files.
pub fn list(dir: &Path) -> Result<String, CheckpointError> {
    let store = CheckpointStore::open(dir, usize::MAX)?;
    let mut out = String::new();
    for id in store.ids()? {
        match store.metadata(id) {
            Ok(m) => {
                let full: u64 = m
                    .partitions
                    .iter()
                    .filter(|e| e.base.is_none())
                    .map(|e| e.size)
                    .sum();
                let delta: u64 = m
                    .partitions
                    .iter()
                    .filter(|e| e.base.is_some())
                    .map(|e| e.size)
                    .sum();
                let _ = writeln!(
                    out,
                    "chk-{id:010}  {}  {} partitions  {} bytes (full {full}, delta {delta})",
                    utc(m.created_ms),
                    m.partitions.len(),
                    full + delta
                );
            }
            Err(e) => {
                let _ = writeln!(out, "chk-{id:010}  unusable: {e}");
            }
        }
    }
    for (name, dir) in eos_dirs(dir)? {
        let offsets = dir.offsets()?;
        let _ = writeln!(
            out,
            "eos/{name}  state files for offsets {offsets:?} (the group's committed offset names the live one)"
        );
    }
    let location = super::folder::StoreLocation::Local(dir.to_path_buf());
    for (name, meta) in super::savepoint::Savepoints::new(&location).list()? {
        let _ = match meta {
            Ok(m) => writeln!(
                out,
                "savepoint {name}  {}  {} partitions  {} bytes  {}  module {}",
                utc(m.created_ms),
                m.partitions.len(),
                m.partitions.iter().map(|p| p.size).sum::<u64>(),
                m.delivery,
                &m.module_sha256[..m.module_sha256.len().min(12)],
            ),
            Err(why) => writeln!(out, "savepoint {name}  unusable: {why}"),
        };
    }
    if out.is_empty() {
        out.push_str("no checkpoints\n");
    }
    Ok(out)
}

/// Checkpoint `id` per partition: offset, file, size, full or delta (and
/// the checkpoint its delta applies to).
pub fn show(dir: &Path, id: u64) -> Result<String, CheckpointError> {
    let store = CheckpointStore::open(dir, usize::MAX)?;
    let m = store.metadata(id)?;
    let mut out = format!("chk-{id:010}  completed {}\n", utc(m.created_ms));
    for e in &m.partitions {
        let kind = match e.base {
            Some(b) => format!("delta on chk-{b:010}"),
            None => "full".to_string(),
        };
        let _ = writeln!(
            out,
            "  {}/{}  next offset {}  {}  {} bytes  {kind}",
            e.topic, e.partition, e.offset, e.file, e.size
        );
    }
    Ok(out)
}

/// Verifies checkpoint `id` (every one when `None`) and every
/// exactly-once state file: each file's checksum and every link of its
/// delta chain. Returns the report and whether all were sound.
pub fn verify(dir: &Path, id: Option<u64>) -> Result<(String, bool), CheckpointError> {
    let store = CheckpointStore::open(dir, usize::MAX)?;
    let ids = match id {
        Some(id) => vec![id],
        None => store.ids()?,
    };
    let (mut out, mut sound) = (String::new(), true);
    for id in ids {
        match store.load(id) {
            Ok(c) => {
                let bytes: usize = c.partitions.iter().map(|p| p.state.encoded_len()).sum();
                let _ = writeln!(
                    out,
                    "chk-{id:010}  ok: {} partitions restore to {bytes} bytes of state",
                    c.partitions.len()
                );
            }
            Err(e) => {
                sound = false;
                let _ = writeln!(out, "chk-{id:010}  FAILED: {e}");
            }
        }
    }
    if id.is_none() {
        for (name, state) in eos_dirs(dir)? {
            for offset in state.offsets()? {
                match state.load(offset) {
                    Ok(Some(_)) => {
                        let _ = writeln!(out, "eos/{name}  offset {offset}  ok");
                    }
                    Ok(None) => {}
                    Err(e) => {
                        sound = false;
                        let _ = writeln!(out, "eos/{name}  offset {offset}  FAILED: {e}");
                    }
                }
            }
        }
    }
    Ok((out, sound))
}

/// The exactly-once state directories, by `<topic>-<partition>` name.
fn eos_dirs(dir: &Path) -> Result<Vec<(String, PartitionStateDir)>, CheckpointError> {
    let root = dir.join("eos");
    let mut v = Vec::new();
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(v);
    };
    for entry in entries.flatten() {
        if !entry.path().is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((topic, partition)) = name
            .rsplit_once('-')
            .and_then(|(t, p)| Some((t.to_string(), p.parse::<i32>().ok()?)))
        else {
            continue;
        };
        let local = super::folder::StoreLocation::Local(dir.to_path_buf());
        v.push((name, PartitionStateDir::open(&local, &topic, partition)?));
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}
