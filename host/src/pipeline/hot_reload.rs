//! Hot reload: a running job switches to the configured module without
//! the operator stopping it (`weir reload`, `POST /reload` on the admin
//! endpoint, or a change of the config or module file with
//! `pipeline.reload_on_change`).
//!
//! The switch happens at a checkpoint boundary, by the same path as a
//! clean stop and start, inside the process: the job stops (final
//! checkpoint, or every worker's last transaction under exactly-once, so
//! the switch falls between transactions), the config file is read again,
//! and the job starts on the module it names, each partition's state taken
//! over through portable state when the module changed (docs/ABI.md,
//! section 3b). If the new module cannot start (it is not a valid plugin,
//! or it cannot import the state), the switch is rolled back: the job
//! starts again on the module that ran, kept aside right after it started
//! (the file may have been replaced in place since), from the checkpoint the stop
//! took. Nothing of the refused module reached Kafka, since it never
//! processed a record.
//!
//! A module that starts is on trial (`pipeline.reload_trial`, see
//! `job_driver::trial`): no checkpoint until every partition has processed
//! a batch with it; a batch that fails meanwhile rolls the switch back the
//! same way, from the checkpoint the switch took, since no later one
//! exists. Under exactly-once the new module's output is aborted; under
//! at-least-once it may already be in Kafka, and the old module's replay
//! writes it again.
//!
//! Not built: reload with group assignment (members are upgraded one by
//! one).

mod kept_module;

use super::{JobError, JobSummary, SavepointOptions, StartedJob, start};
use crate::config::{Config, ConfigError};
use kept_module::KeptModule;
use std::future::Future;
use std::time::Instant;

/// Runs the job, switching modules whenever a reload is asked for, until
/// it ends, fails or `shutdown` resolves. `load` reads the config again at
/// each reload.
pub async fn run_reloading(
    mut load: impl FnMut() -> Result<Config, ConfigError>,
    options: SavepointOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<JobSummary, JobError> {
    tokio::pin!(shutdown);
    let mut config = load()?;
    // Kept once the start has checked the module (its errors come first).
    let mut job = start(config.clone(), options.clone()).await?;
    let mut kept = KeptModule::of(&config)?;
    // A savepoint to start from is used once; one to leave, at the end.
    let options = SavepointOptions {
        from: None,
        ..options
    };
    // After a switch: the module that ran before it, for a failed trial.
    let mut before: Option<(Config, KeptModule)> = None;
    loop {
        let summary = match (job.run(shutdown.as_mut()).await, before.take()) {
            (Err(JobError::FailedTrial(e)), Some((back, back_kept))) => {
                tracing::error!(error = %e, "reload refused: the new module failed during its trial; rolling back to the module that ran, from the checkpoint taken at the switch");
                job = rollback(back.clone(), &options).await?;
                (config, kept) = (back, back_kept);
                continue;
            }
            (result, _) => result?,
        };
        let Some(asked) = summary.reload_requested else {
            return Ok(summary);
        };
        let stopped = asked.elapsed();
        let next = load().unwrap_or_else(|e| {
            tracing::error!(error = %e, "reload: the config file does not load; going on with the module that ran");
            kept.config(&config)
        });
        let started = Instant::now();
        (config, kept, job) = match start(next.clone(), options.clone()).await {
            Ok(job) => {
                log_switch(&next, stopped, started, asked);
                let next_kept = KeptModule::of(&next)?;
                let trial = next.pipeline.reload_trial;
                before = Some((kept.config(&config), kept));
                (next, next_kept, job.on_trial(trial))
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the new module cannot start; rolling back to the module that ran, from the checkpoint taken at the switch");
                let back = kept.config(&config);
                let job = rollback(back.clone(), &options).await?;
                (back, kept, job)
            }
        };
    }
}

/// Starts the module that ran again; its failure fails the job.
async fn rollback(config: Config, options: &SavepointOptions) -> Result<StartedJob, JobError> {
    let job = start(config, options.clone()).await?;
    tracing::warn!("rolled back: the job runs on the module it ran before the reload");
    Ok(job)
}

fn log_switch(config: &Config, stopped: std::time::Duration, started: Instant, asked: Instant) {
    tracing::info!(
        plugin = %config.plugin_path().display(),
        stop_ms = stopped.as_millis() as u64,
        start_ms = started.elapsed().as_millis() as u64,
        pause_ms = asked.elapsed().as_millis() as u64,
        "module switched"
    );
}
