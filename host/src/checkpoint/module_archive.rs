//! The plugin modules a job's state was written by, kept beside the state.
//!
//! ```text
//! <checkpoint.directory>/modules/<sha256 hex>.wasm   (or .wat for text)
//! ```
//!
//! A snapshot names its module by SHA-256 and holds that module's memory
//! image, which no other module can read. When the configured module is a
//! different one, the host restores the image into a scratch instance of the
//! module that wrote it, asks it for its portable state
//! (`weir_state_export`) and gives that to the new module
//! (`weir_state_import`); see docs/ABI.md, section 3b. That needs the old
//! module's bytes, so every job that checkpoints keeps its module here at
//! start-up. Files are named by content and never change; nothing prunes
//! them (a module is a few KiB to a few MiB, written once per version).

use super::CheckpointError;
use super::folder::{Folder, StoreLocation};
use crate::runtime::snapshot::hex;
use std::path::PathBuf;

/// The `modules/` folder of a checkpoint location.
#[derive(Debug, Clone)]
pub struct ModuleArchive {
    folder: Folder,
}

impl ModuleArchive {
    /// The archive under `location` (created if local).
    pub fn open(location: &StoreLocation) -> Result<Self, CheckpointError> {
        Ok(ModuleArchive {
            folder: location.folder(&["modules"])?,
        })
    }

    /// Keeps a module's file `bytes` under `sha256`, unless it is there.
    pub fn keep(&self, sha256: &[u8; 32], bytes: &[u8]) -> Result<(), CheckpointError> {
        let name = file_name(sha256, bytes.starts_with(b"\0asm"));
        if self.folder.list()?.contains(&name) {
            return Ok(());
        }
        // Members of a group sharing a local directory start together: each
        // writes through a temp name of its own (same bytes, same name).
        let temp = format!("{name}.{}.tmp", std::process::id());
        self.folder.write(&name, &temp, bytes)
    }

    /// The module with this SHA-256, with the path it is known by (its
    /// extension says whether it is binary or text), or `None` if this
    /// archive does not have it.
    pub fn get(&self, sha256: &[u8; 32]) -> Result<Option<(PathBuf, Vec<u8>)>, CheckpointError> {
        for binary in [true, false] {
            let name = file_name(sha256, binary);
            if let Some(bytes) = self.folder.read(&name, None)? {
                return Ok(Some((self.folder.describe(&name), bytes)));
            }
        }
        Ok(None)
    }

    /// Where a module with this SHA-256 would be, for messages.
    pub fn describe(&self, sha256: &[u8; 32]) -> PathBuf {
        self.folder.describe(&file_name(sha256, true))
    }
}

fn file_name(sha256: &[u8; 32], binary: bool) -> String {
    let ext = if binary { "wasm" } else { "wat" };
    format!("{}.{ext}", hex(sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_each_module_once_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let archive = ModuleArchive::open(&StoreLocation::Local(dir.path().into())).unwrap();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        archive.keep(&a, b"\0asm one").unwrap();
        archive.keep(&a, b"\0asm one").unwrap();
        archive.keep(&b, b"(module)").unwrap();
        let (path, bytes) = archive.get(&a).unwrap().unwrap();
        assert_eq!(bytes, b"\0asm one");
        assert!(path.ends_with(format!("modules/{}.wasm", hex(&a))));
        let (path, _) = archive.get(&b).unwrap().unwrap();
        assert_eq!(path.extension().unwrap(), "wat");
        assert!(archive.get(&[3; 32]).unwrap().is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join("modules"))
                .unwrap()
                .count(),
            2
        );
    }
}
