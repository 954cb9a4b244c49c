//! Taking a state over from the module that wrote it (ABI 1.1 portable
//! state, docs/ABI.md section 3b). A snapshot is a memory image of one
//! module; when the configured module is another, the image is restored
//! into a scratch instance of the old module (from the [`ModuleArchive`]),
//! which exports its state in a format of its own, and the new module's
//! fresh instance imports it after `weir_init`.

use crate::checkpoint::CheckpointError;
use crate::checkpoint::module_archive::ModuleArchive;
use crate::runtime::instance::{BatchError, PortableState};
use crate::runtime::snapshot::{Snapshot, SnapshotError, hex};
use crate::runtime::{
    OutputSink, PluginError, PluginFault, PluginInstance, PluginModule, SinkError,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use weir_plugin_sdk::abi::RecordIter;

/// Why a state cannot be taken over by the configured module.
#[derive(Debug, thiserror::Error)]
#[error("the state was written by plugin module {old}, the plugin is now {new}: {failure}")]
pub struct UpgradeError {
    /// The modules: SHA-256 prefixes, and the new one's file.
    pub old: String,
    pub new: String,
    pub failure: Box<UpgradeFailure>,
}

/// Which step of taking a state over failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeFailure {
    #[error(
        "another module takes a state over only through portable state (docs/ABI.md, section 3b), and the new module does not export weir_state_import; run the old module, add the export, or set checkpoint.allow_module_change = true if the memory layout did not change"
    )]
    NoImport,
    #[error(
        "the job keeps no module archive (checkpoints are off), so the old module cannot export its state"
    )]
    NoArchive,
    #[error(
        "the old module is not in {0} (it was written before this host kept modules), so it cannot export its state"
    )]
    NotArchived(PathBuf),
    #[error("reading the module archive: {0}")]
    Archive(#[from] CheckpointError),
    #[error("the archived old module does not load: {0}")]
    OldModule(#[from] PluginError),
    #[error(
        "the old module ({0}) does not export weir_state_export, so its state can only be restored into itself (docs/ABI.md, section 3b)"
    )]
    NoExport(PathBuf),
    #[error("instantiating the old module: {0}")]
    Instantiate(#[from] PluginFault),
    #[error("restoring the old module's memory image: {0}")]
    Restore(#[from] SnapshotError),
    #[error("weir_state_export of the old module: {0}")]
    Export(BatchError),
    #[error("weir_state_import of format version {version} ({bytes} bytes): {cause}")]
    Import {
        version: u32,
        bytes: usize,
        cause: BatchError,
    },
}

/// Converts states written by other modules into the configured one's.
pub struct StateUpgrade {
    archive: Option<ModuleArchive>,
    /// Old modules compiled once, by SHA-256 (every partition of a job
    /// usually shares one).
    compiled: Mutex<HashMap<[u8; 32], PluginModule>>,
}

/// The scratch instance's sink: exporting a state emits nothing.
struct NoOutput;

impl OutputSink for NoOutput {
    fn emit(&mut self, _: RecordIter<'_>, _: &[String]) -> Result<(), SinkError> {
        Err(SinkError("weir_state_export may not emit records".into()))
    }
}

impl StateUpgrade {
    /// Upgrades through `archive` (`None`: the job keeps no state).
    pub fn new(archive: Option<ModuleArchive>) -> Self {
        StateUpgrade {
            archive,
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// Checks that `new` can import at all, then has the module that wrote
    /// `snapshot` export it.
    pub fn export(
        &self,
        snapshot: &Snapshot,
        new: &PluginModule,
    ) -> Result<PortableState, UpgradeError> {
        let error = |failure| UpgradeError {
            old: short(&snapshot.module_sha256),
            new: named(new),
            failure: Box::new(failure),
        };
        if !new.has_state_import {
            return Err(error(UpgradeFailure::NoImport));
        }
        self.export_from_old(snapshot, new).map_err(error)
    }

    fn export_from_old(
        &self,
        snapshot: &Snapshot,
        new: &PluginModule,
    ) -> Result<PortableState, UpgradeFailure> {
        let old = self.old_module(&snapshot.module_sha256, new)?;
        if !old.has_state_export {
            return Err(UpgradeFailure::NoExport(old.path.clone()));
        }
        let mut scratch = PluginInstance::new(&old, Box::new(NoOutput), Arc::from([]))?;
        scratch.restore(snapshot, false)?;
        scratch.export_state().map_err(UpgradeFailure::Export)
    }

    /// The old module, compiled with the new one's engine and limits.
    fn old_module(
        &self,
        sha256: &[u8; 32],
        new: &PluginModule,
    ) -> Result<PluginModule, UpgradeFailure> {
        let mut compiled = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = compiled.get(sha256) {
            return Ok(m.clone());
        }
        let archive = self.archive.as_ref().ok_or(UpgradeFailure::NoArchive)?;
        let (path, bytes) = archive
            .get(sha256)?
            .ok_or_else(|| UpgradeFailure::NotArchived(archive.describe(sha256)))?;
        let module = PluginModule::from_bytes(&new.engine, &path, &bytes)?;
        compiled.insert(*sha256, module.clone());
        Ok(module)
    }
}

/// Imports `state` into `instance` (fresh, after `weir_init`).
pub fn import(
    instance: &mut PluginInstance,
    state: &PortableState,
    snapshot: &Snapshot,
    new: &PluginModule,
) -> Result<(), UpgradeError> {
    instance.import_state(state).map_err(|cause| UpgradeError {
        old: short(&snapshot.module_sha256),
        new: named(new),
        failure: Box::new(UpgradeFailure::Import {
            version: state.format_version,
            bytes: state.bytes.len(),
            cause,
        }),
    })
}

/// A module's file and SHA-256 prefix.
fn named(module: &PluginModule) -> String {
    format!("{} ({})", module.path.display(), short(&module.sha256))
}

/// The first 12 hex digits of a module's SHA-256.
fn short(sha256: &[u8; 32]) -> String {
    hex(sha256)[..12].to_string()
}
