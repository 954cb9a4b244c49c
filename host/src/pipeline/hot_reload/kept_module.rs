//! The module a run started with, copied aside as it was loaded: what a
//! rollback starts again, whatever happened to the file since.
//!
//! The copy lives in a temporary folder named after the process
//! (`weir-kept-module-<pid>-…`), removed when the run ends. A process that
//! ends without cleaning up (kill -9, a crash) leaves its folder behind;
//! the next run removes the folders of processes that are gone, so a
//! process restarted after crashes does not fill the temporary directory.

use super::JobError;
use crate::config::Config;
use std::path::{Path, PathBuf};

const PREFIX: &str = "weir-kept-module-";

pub(super) struct KeptModule {
    dir: tempfile::TempDir,
    file: PathBuf,
}

impl KeptModule {
    pub(super) fn of(config: &Config) -> Result<Self, JobError> {
        let path = config.plugin_path();
        let tmp = std::env::temp_dir();
        sweep_stale(&tmp);
        let keep = || -> std::io::Result<KeptModule> {
            let dir = tempfile::Builder::new()
                .prefix(&format!("{PREFIX}{}-", std::process::id()))
                .tempdir_in(&tmp)?;
            let file = PathBuf::from(path.file_name().unwrap_or("plugin.wasm".as_ref()));
            std::fs::copy(&path, dir.path().join(&file))?;
            Ok(KeptModule { dir, file })
        };
        keep().map_err(|cause| JobError::KeepModule {
            path: path.clone(),
            cause,
        })
    }

    /// `config` with its plugin the kept copy.
    pub(super) fn config(&self, config: &Config) -> Config {
        let mut c = config.clone();
        c.pipeline.plugins_dir = self.dir.path().to_path_buf();
        c.pipeline.plugin = self.file.clone();
        c
    }
}

/// Removes the kept-module folders in `tmp` whose process is gone. A
/// folder it cannot remove is left (and logged); one whose name carries no
/// process id is not touched.
fn sweep_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok());
        let Some(pid) = pid.filter(|&pid| pid > 0 && !alive(pid)) else {
            continue;
        };
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => {
                tracing::debug!(folder = %entry.path().display(), pid, "removed a module kept by a process that is gone")
            }
            Err(e) => {
                tracing::warn!(folder = %entry.path().display(), pid, error = %e, "cannot remove a module kept by a process that is gone")
            }
        }
    }
}

/// Whether process `pid` exists (signal 0 checks without sending).
fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_of_gone_processes_are_swept_and_the_others_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let folder = |name: String| {
            let p = tmp.path().join(name);
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("m.wasm"), b"\0asm").unwrap();
            p
        };
        let stale = folder(format!("{PREFIX}{gone}-aB3dE1"));
        let ours = folder(format!("{PREFIX}{}-xY7zQ2", std::process::id()));
        let unnamed = folder(format!("{PREFIX}Qw8rTy"));
        let other = folder("something-else-1-2".into());
        sweep_stale(tmp.path());
        assert!(!stale.exists(), "the gone process's copy is removed");
        assert!(ours.exists() && unnamed.exists() && other.exists());
    }
}
