//! Admin calls on the running job: reload (see `pipeline::hot_reload`),
//! asked for or on a change of the watched files, and savepoints: asked for at start
//! (`--savepoint-on-stop`) or through the admin endpoint
//! (`weir savepoint`), written once the job has stopped cleanly, from what
//! the final checkpoint made durable (see `pipeline::savepoint_options`).

use super::JobDriver;
use crate::checkpoint::folder::StoreLocation;
use crate::checkpoint::savepoint::{self, SavepointRef, Savepoints};
use crate::metrics::server::AdminRequest;
use crate::pipeline::JobError;
use crate::pipeline::savepoint_options::{self, SavepointError};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// `pipeline.reload_on_change`: the config and module files, with their
/// size and modification time at the start.
pub(super) struct ReloadWatch {
    files: Vec<(PathBuf, Option<(u64, SystemTime)>)>,
    ticker: tokio::time::Interval,
}

fn stamp(path: &std::path::Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

impl ReloadWatch {
    pub(super) fn new(config: &crate::config::Config) -> Option<Self> {
        if !config.pipeline.reload_on_change {
            return None;
        }
        let files = config
            .path
            .iter()
            .cloned()
            .chain([config.plugin_path()])
            .map(|p| {
                let s = stamp(&p);
                (p, s)
            })
            .collect();
        let period = Duration::from_secs(1);
        let ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        Some(ReloadWatch { files, ticker })
    }

    /// Waits for the next look (forever without a watch).
    pub(super) async fn tick(watch: &mut Option<Self>) {
        match watch {
            Some(w) => {
                w.ticker.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// The first watched file that changed since the start.
    fn changed(&self) -> Option<&std::path::Path> {
        self.files
            .iter()
            .find(|(p, s)| stamp(p) != *s)
            .map(|(p, _)| p.as_path())
    }
}

impl JobDriver {
    /// Leaves savepoint `name` when the job stops cleanly.
    pub(in crate::pipeline) fn with_savepoint_on_stop(mut self, name: Option<String>) -> Self {
        self.savepoint_on_stop = name;
        self
    }

    /// An admin call arrived.
    pub(super) fn on_admin(&mut self, request: AdminRequest) {
        match request {
            AdminRequest::StopWithSavepoint { name, reply } => {
                let answer = self
                    .accept_savepoint(&name)
                    .map(|path| format!("stopping; the savepoint will be at {path}"));
                if answer.is_ok() {
                    tracing::info!(savepoint = %name, "stop with a savepoint requested");
                    self.savepoint_on_stop = Some(name);
                    self.on_shutdown();
                }
                let _ = reply.send(answer);
            }
            AdminRequest::Reload { reply } => {
                let answer = self.accept_reload();
                if answer.is_ok() {
                    tracing::info!(
                        "reload requested: stopping at a checkpoint boundary to switch modules"
                    );
                    self.reload_requested = Some(std::time::Instant::now());
                    self.on_shutdown();
                }
                let _ = reply.send(answer);
            }
        }
    }

    /// Time to look at the watched files: a change reloads (once).
    pub(super) fn on_reload_watch(&mut self) {
        let Some(changed) = self.reload_watch.as_ref().and_then(|w| w.changed()) else {
            return;
        };
        let changed = changed.display().to_string();
        self.reload_watch = None;
        match self.accept_reload() {
            Ok(_) => {
                tracing::info!(file = %changed, "a watched file changed: reloading at a checkpoint boundary");
                self.reload_requested = Some(std::time::Instant::now());
                self.on_shutdown();
            }
            Err(why) => {
                tracing::warn!(file = %changed, "a watched file changed, but no reload: {why}")
            }
        }
    }

    /// Whether a reload can begin.
    fn accept_reload(&self) -> Result<String, String> {
        if self.control.failure.is_some() || self.control.shutdown_seen {
            return Err("the job is stopping: no reload".into());
        }
        if self.on_trial_now() {
            return Err(
                "the module of the last reload is still on trial: ask again once it has passed"
                    .into(),
            );
        }
        if self.embedded.is_some() {
            return Err("the embedded demo cluster does not outlive a run: no reload".into());
        }
        if !self.mode.checkpoints() {
            return Err("a reload needs checkpoints ([checkpoint] enabled = true): without them no state is kept".into());
        }
        if self.config.source.assignment == crate::config::Assignment::Group {
            return Err("a reload is not built for group assignment: restart the members one by one (members on different versions convert or refuse partitions)".into());
        }
        Ok(
            "reloading: the job stops at a checkpoint boundary and starts on the configured module"
                .into(),
        )
    }

    /// Whether a stop with savepoint `name` can be promised; where it
    /// will be.
    fn accept_savepoint(&self, name: &str) -> Result<String, String> {
        savepoint::check_name(name)?;
        if self.control.failure.is_some() {
            return Err("the job is failing: no savepoint".into());
        }
        if self.reload_requested.is_some() {
            return Err("the job is switching modules (reload): ask again once it runs".into());
        }
        if let Some(asked) = &self.savepoint_on_stop {
            return Err(format!("the job already stops with savepoint {asked:?}"));
        }
        savepoint_options::check_can_take(&self.config, self.mode).map_err(|e| e.to_string())?;
        // A local name is checked now (a file open); an object store's at
        // the write, which refuses a name that exists.
        if let StoreLocation::Local(_) = &self.location {
            savepoint_options::check_free(&self.location, name).map_err(|e| e.to_string())?;
        }
        Savepoints::new(&self.location)
            .describe(&SavepointRef::Named(name.to_string()))
            .map(|p| p.display().to_string())
            .map_err(|e| e.to_string())
    }

    /// After the final checkpoint: the savepoint asked for, if any.
    pub(super) async fn take_savepoint(&mut self) -> Result<Option<(String, PathBuf)>, JobError> {
        // A reload's stop is not the end: the savepoint is left at the end.
        if self.reload_requested.is_some() {
            return Ok(None);
        }
        let Some(name) = self.savepoint_on_stop.take() else {
            return Ok(None);
        };
        let store = self.checkpoints.persister.as_ref().map(|p| p.store.clone());
        let (location, module, mode) = (self.location.clone(), self.module.clone(), self.mode);
        let positions = self.positions.clone();
        let written = tokio::task::spawn_blocking(move || {
            savepoint_options::take_at_stop(
                &name,
                mode,
                (store.as_ref(), &location),
                &module,
                &positions,
            )
            .and_then(|meta| {
                let at = Savepoints::new(&location)
                    .describe(&SavepointRef::Named(name.clone()))
                    .map_err(|cause| SavepointError::Write {
                        name: name.clone(),
                        cause,
                    })?;
                Ok((meta.name, at))
            })
        })
        .await??;
        Ok(Some(written))
    }
}
