//! Admin calls on the running job: reload (see `pipeline::hot_reload`),
//! asked for or on a change of the watched files, and savepoints (see
//! `pipeline::savepoint_options`): at a clean stop, asked for at start
//! (`--savepoint-on-stop`) or through the admin endpoint
//! (`weir savepoint --stop`), from what the final checkpoint made durable;
//! or while the job goes on (`weir savepoint`), from the next checkpoint
//! that completes, asked for at once.

use super::JobDriver;
use crate::checkpoint::folder::StoreLocation;
use crate::checkpoint::savepoint::{self, SavepointRef, Savepoints};
use crate::metrics::server::AdminRequest;
use crate::pipeline::JobError;
use crate::pipeline::savepoint_options::{self, SavepointError};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::task::{JoinError, JoinHandle};

/// Writes savepoints from what the job's checkpoints made durable (see
/// `savepoint_options::take`).
struct SavepointWriter {
    store: Option<crate::checkpoint::CheckpointStore>,
    location: StoreLocation,
    module: crate::runtime::PluginModule,
    mode: crate::config::DeliveryMode,
}

impl SavepointWriter {
    /// Savepoint `name`; under exactly-once at `positions`.
    fn write(
        &self,
        name: &str,
        positions: &[crate::topic_partition::Position],
    ) -> Result<crate::checkpoint::savepoint::SavepointMetadata, SavepointError> {
        let durable = (self.store.as_ref(), &self.location);
        savepoint_options::take(name, self.mode, durable, &self.module, positions)
    }
}

/// A savepoint of the running job being written off the reactor.
pub(super) type Saving = JoinHandle<Result<(), SavepointError>>;

/// Waits for the savepoint being written, or forever without one.
pub(super) async fn saved(
    saving: &mut Option<Saving>,
) -> Result<Result<(), SavepointError>, JoinError> {
    match saving {
        Some(s) => s.await,
        None => std::future::pending().await,
    }
}

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
            AdminRequest::Savepoint { name, reply } => {
                let answer = self.accept_savepoint_now(&name);
                if answer.is_ok() {
                    tracing::info!(savepoint = %name, "savepoint requested: written from the next complete checkpoint, the job going on");
                    self.savepoint_next = Some(name);
                    if self.may_checkpoint() {
                        self.on_checkpoint_due();
                    }
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

    /// Whether a savepoint of the running job can be promised; where it
    /// will be.
    fn accept_savepoint_now(&self, name: &str) -> Result<String, String> {
        if self.control.shutdown_seen {
            return Err("the job is stopping: no savepoint".into());
        }
        if let Some(asked) = self.savepoint_next.as_ref() {
            return Err(format!(
                "savepoint {asked:?} is being taken: ask again once it is written"
            ));
        }
        if self.saving.is_some() {
            return Err("a savepoint is being written: ask again once it is".into());
        }
        self.accept_savepoint(name).map(|at| {
            format!("savepoint {name} is taken at the next complete checkpoint; it will be at {at}")
        })
    }

    /// A checkpoint completed: the savepoint asked for while running, if
    /// any, is written from it (off the reactor; no checkpoint starts
    /// until it is).
    pub(super) fn savepoint_if_asked(&mut self) {
        let Some(name) = self.savepoint_next.take() else {
            return;
        };
        let writer = self.savepoint_writer();
        let consumer = self.consumer.clone();
        let timeout = self.config.kafka.connect_timeout;
        let partitions: Vec<_> = self
            .all_stats
            .snapshot()
            .iter()
            .map(|t| crate::topic_partition::TopicPartition::new(&t.topic, t.partition))
            .collect();
        self.saving = Some(tokio::task::spawn_blocking(move || {
            let positions = match writer.store {
                Some(_) => Vec::new(),
                None => {
                    savepoint_options::committed_positions(&name, &consumer, &partitions, timeout)?
                }
            };
            writer.write(&name, &positions).map(|_| ())
        }));
    }

    /// The savepoint of the running job was written, or not: either way
    /// the job goes on.
    pub(super) fn on_saved(&mut self, result: Result<Result<(), SavepointError>, JoinError>) {
        self.saving = None;
        match result
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            Ok(()) => tracing::info!("the job goes on after its savepoint"),
            Err(e) => tracing::error!(error = %e, "the savepoint failed; the job goes on"),
        }
    }

    /// At the end: a savepoint being written finishes first.
    pub(super) async fn finish_saving(&mut self) {
        if let Some(s) = self.saving.take() {
            let result = s.await;
            self.on_saved(result);
        }
        if let Some(name) = self.savepoint_next.take() {
            if self.savepoint_on_stop.is_none() {
                tracing::info!(savepoint = %name, "the job stops before a checkpoint completed: the savepoint is written from the final one");
                self.savepoint_on_stop = Some(name);
            } else {
                tracing::warn!(savepoint = %name, "the job stops with another savepoint: this one is not written");
            }
        }
    }

    /// What writing a savepoint takes from the driver, for a blocking
    /// thread.
    fn savepoint_writer(&self) -> SavepointWriter {
        SavepointWriter {
            store: self.checkpoints.persister.as_ref().map(|p| p.store.clone()),
            location: self.location.clone(),
            module: self.module.clone(),
            mode: self.mode,
        }
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
        let writer = self.savepoint_writer();
        let positions = self.positions.clone();
        let written = tokio::task::spawn_blocking(move || {
            writer.write(&name, &positions).and_then(|meta| {
                let at = Savepoints::new(&writer.location)
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
