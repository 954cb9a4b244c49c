//! Live progress: per-partition counters the tasks bump once per batch, and
//! the periodic status line the job logs from them.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters of one partition task, shared with the status reporter.
#[derive(Debug)]
pub struct TaskStats {
    pub topic: String,
    pub partition: i32,
    /// Records handed to the plugin.
    pub records_in: AtomicU64,
    /// Records the plugin emitted.
    pub records_out: AtomicU64,
    /// Next offset to read.
    pub position: AtomicI64,
    /// Batches processed.
    pub batches: AtomicU64,
    /// Plugin faults handled by `skip` / `dead-letter` (each one restarts
    /// the task from its last checkpoint).
    pub faults: AtomicU64,
    /// Batches and ticks that failed, whatever `on_fault` then did with
    /// them (the trial after a reload rolls back on any).
    pub failed: AtomicU64,
    /// Records skipped after they faulted.
    pub skipped: AtomicU64,
    /// Records written to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Linear memory of the plugin instance, after the last batch.
    pub memory_bytes: AtomicU64,
    /// The task waits to restart (after a failure, or rolled back with its
    /// worker's transaction).
    pub waiting: AtomicBool,
    /// When the task was created.
    created: Instant,
    /// Milliseconds from creation to the end of a bounded task;
    /// `u64::MAX` until then.
    finished_ms: AtomicU64,
}

impl TaskStats {
    pub fn new(topic: &str, partition: i32, position: i64) -> Self {
        TaskStats {
            topic: topic.to_string(),
            partition,
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            position: AtomicI64::new(position),
            batches: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            memory_bytes: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            created: Instant::now(),
            finished_ms: AtomicU64::new(u64::MAX),
        }
    }

    /// Records that a bounded task reached its end (the first time counts).
    pub fn finish(&self) {
        let ms = self.created.elapsed().as_millis() as u64;
        let _ =
            self.finished_ms
                .compare_exchange(u64::MAX, ms, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// How long a bounded task took to reach its end, once it has.
    pub fn finished_after(&self) -> Option<Duration> {
        match self.finished_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}

/// The stats of the job's partition tasks, shared by the job driver (which
/// adds and removes them as partitions come and go) and the metrics
/// endpoint.
#[derive(Clone, Default)]
pub struct TaskList(std::sync::Arc<std::sync::RwLock<Vec<std::sync::Arc<TaskStats>>>>);

impl TaskList {
    pub fn new(tasks: Vec<std::sync::Arc<TaskStats>>) -> Self {
        TaskList(std::sync::Arc::new(std::sync::RwLock::new(tasks)))
    }

    /// The tasks as of now.
    pub fn snapshot(&self) -> Vec<std::sync::Arc<TaskStats>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn push(&self, task: std::sync::Arc<TaskStats>) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).push(task);
    }

    /// Removes the task of `topic`/`partition`, if it is there.
    pub fn remove(&self, topic: &str, partition: i32) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|t| !(t.topic == topic && t.partition == partition));
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Turns counter snapshots into rates.
pub struct StatusReporter {
    last: Instant,
    last_in: u64,
    last_out: u64,
}

impl Default for StatusReporter {
    fn default() -> Self {
        StatusReporter {
            last: Instant::now(),
            last_in: 0,
            last_out: 0,
        }
    }
}

impl StatusReporter {
    /// Logs one status line.
    pub fn report(&mut self, tasks: &[std::sync::Arc<TaskStats>]) {
        let now = Instant::now();
        let secs = now.duration_since(self.last).as_secs_f64().max(1e-3);
        let total_in: u64 = tasks
            .iter()
            .map(|t| t.records_in.load(Ordering::Relaxed))
            .sum();
        let total_out: u64 = tasks
            .iter()
            .map(|t| t.records_out.load(Ordering::Relaxed))
            .sum();
        let rate_in = (total_in - self.last_in) as f64 / secs;
        let rate_out = (total_out - self.last_out) as f64 / secs;
        let positions: Vec<String> = tasks
            .iter()
            .map(|t| {
                format!(
                    "{}/{}@{}",
                    t.topic,
                    t.partition,
                    t.position.load(Ordering::Relaxed)
                )
            })
            .collect();
        tracing::info!(
            records_in = total_in,
            records_out = total_out,
            "in {rate_in:.0}/s out {rate_out:.0}/s | {}",
            positions.join(" ")
        );
        self.last = now;
        self.last_in = total_in;
        self.last_out = total_out;
    }
}
