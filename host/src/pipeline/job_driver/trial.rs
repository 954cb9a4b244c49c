//! The trial of a module a reload switched to (see `pipeline::hot_reload`):
//! until every partition has processed a batch with it, or
//! `pipeline.reload_trial` has passed, the job takes no checkpoint, so
//! nothing the new module did is durable (under exactly-once none of its
//! output is committed). A batch that fails meanwhile fails the job as
//! [`JobError::FailedTrial`], and the reload rolls back to the module that
//! ran, from the checkpoint the switch took.

use super::JobDriver;
use crate::pipeline::JobError;
use crate::pipeline::status::TaskStats;
use crate::topic_partition::TopicPartition;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often the trial looks at the tasks' counters.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// A new module on trial.
pub(super) struct Trial {
    ends: tokio::time::Instant,
    ticker: tokio::time::Interval,
}

/// What the tasks' counters say of a trial.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    Pending,
    /// Every partition processed a batch, or the time is up.
    Passed(&'static str),
    /// A batch of this partition failed.
    Failed(TopicPartition),
}

impl Trial {
    pub(super) fn new(limit: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Trial {
            ends: now + limit,
            ticker: tokio::time::interval_at(now + LOOK_EVERY, LOOK_EVERY),
        }
    }

    /// Waits for the next look (forever without a trial).
    pub(super) async fn tick(trial: &mut Option<Self>) {
        match trial {
            Some(t) => {
                t.ticker.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// The verdict on `tasks` (whose counters started at zero with the
    /// module) at `now`. A failure wins over everything else.
    pub(super) fn verdict(&self, tasks: &[Arc<TaskStats>], now: tokio::time::Instant) -> Verdict {
        if let Some(t) = tasks.iter().find(|t| t.failed.load(Ordering::Relaxed) > 0) {
            return Verdict::Failed(TopicPartition::new(&t.topic, t.partition));
        }
        if !tasks.is_empty() && tasks.iter().all(|t| t.batches.load(Ordering::Relaxed) > 0) {
            return Verdict::Passed("every partition processed a batch");
        }
        if now >= self.ends {
            return Verdict::Passed("its trial time passed without a failure");
        }
        Verdict::Pending
    }
}

impl JobDriver {
    /// Puts the module on trial for at most `limit` (a reload's start).
    pub(in crate::pipeline) fn on_trial(mut self, limit: Duration) -> Self {
        self.trial = Some(Trial::new(limit));
        self
    }

    /// Whether the module is still on trial (no checkpoint meanwhile).
    pub(super) fn on_trial_now(&self) -> bool {
        self.trial.is_some()
    }

    /// Looks at the tasks: a failure fails the job (as a failed trial),
    /// a pass ends the trial and lets checkpoints go on.
    pub(super) fn on_trial_tick(&mut self) {
        let Some(trial) = &self.trial else { return };
        if self.control.failure.is_some() {
            return;
        }
        match trial.verdict(&self.all_stats.snapshot(), tokio::time::Instant::now()) {
            Verdict::Pending => {}
            Verdict::Passed(why) => {
                tracing::info!("the new module passed its trial: {why}; checkpoints go on");
                self.trial = None;
            }
            Verdict::Failed(tp) => {
                tracing::error!(%tp, "the new module failed a batch during its trial; rolling back");
                self.control.fail(JobError::TrialBatch { tp });
            }
        }
    }

    /// The job's failure, as a failed trial while the module was on one.
    pub(super) fn judged(&self, e: JobError) -> JobError {
        match (&self.trial, e) {
            (Some(_), e @ JobError::FailedTrial(_)) | (None, e) => e,
            (Some(_), e) => JobError::FailedTrial(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks(n: usize) -> Vec<Arc<TaskStats>> {
        (0..n)
            .map(|p| Arc::new(TaskStats::new("in", p as i32, 0)))
            .collect()
    }

    #[tokio::test]
    async fn a_trial_passes_on_a_batch_everywhere_or_on_time_and_fails_on_any_failure() {
        let trial = Trial::new(Duration::from_secs(10));
        let now = tokio::time::Instant::now();
        let t = tasks(3);
        assert_eq!(trial.verdict(&t, now), Verdict::Pending);
        t[0].batches.store(4, Ordering::Relaxed);
        t[1].batches.store(1, Ordering::Relaxed);
        assert_eq!(trial.verdict(&t, now), Verdict::Pending);
        // An idle partition holds the trial until its time is up.
        let later = now + Duration::from_secs(10);
        assert!(matches!(trial.verdict(&t, later), Verdict::Passed(_)));
        t[2].batches.store(1, Ordering::Relaxed);
        assert!(matches!(trial.verdict(&t, now), Verdict::Passed(_)));
        // A failure anywhere wins, even after every partition ran a batch.
        t[1].failed.store(1, Ordering::Relaxed);
        assert_eq!(
            trial.verdict(&t, later),
            Verdict::Failed(TopicPartition::new("in", 1))
        );
        assert!(matches!(trial.verdict(&[], later), Verdict::Passed(_)));
        assert_eq!(trial.verdict(&[], now), Verdict::Pending);
    }
}
