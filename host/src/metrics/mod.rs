//! What a running job tells an operator: Prometheus metrics and health.
//!
//! - [`JobMetrics`]: the registry and the metrics the job updates as it
//!   runs (plugin call durations, faults, restarts, checkpoints,
//!   transactions). Per-partition counters live in the tasks' own
//!   [`TaskStats`](crate::pipeline::status::TaskStats) atomics and are
//!   copied into the registry when it is scraped, so the hot path pays one
//!   relaxed atomic add per batch and nothing per record.
//! - [`server`]: `/metrics`, `/healthz` and `/readyz` over HTTP.

pub mod server;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds of the plugin call duration buckets, in seconds: 10 µs to
/// 5 s (the default `limits.batch_timeout`).
const CALL_BUCKETS: &[f64] = &[
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// The job's metrics.
pub struct JobMetrics {
    pub registry: Registry,
    pub records_in: IntCounterVec,
    pub records_out: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
    pub plugin_memory: IntGaugeVec,
    pub dead_letters: IntCounterVec,
    pub skipped: IntCounterVec,
    pub assigned_partitions: IntGauge,
    /// One observation per plugin call (a batch, or one record while a
    /// fault is being pinned).
    pub plugin_call: Histogram,
    pub plugin_faults: IntCounterVec,
    pub task_restarts: IntCounterVec,
    pub checkpoints_completed: IntCounter,
    pub checkpoints_failed: IntCounter,
    pub checkpoint_duration: prometheus::Gauge,
    pub checkpoint_size: IntGauge,
    pub checkpoint_age: prometheus::Gauge,
    pub transactions_committed: IntCounter,
    pub transactions_aborted: IntCounter,
    /// When the last checkpoint completed (the job's start before it).
    last_checkpoint: Mutex<Instant>,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let m = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let m = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Gauge {
    let m = prometheus::Gauge::new(name, help).expect("valid metric");
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

impl JobMetrics {
    /// The metrics of a job running `plugin` (a constant label on each).
    pub fn new(plugin: &str) -> Self {
        let labels = std::collections::HashMap::from([("plugin".to_string(), plugin.to_string())]);
        let r = Registry::new_custom(Some("weir".into()), Some(labels)).expect("valid registry");
        let tp = &["topic", "partition"];
        let plugin_call = Histogram::with_opts(
            HistogramOpts::new(
                "plugin_call_duration_seconds",
                "Time of one plugin call (a batch of records), host to guest and back.",
            )
            .buckets(CALL_BUCKETS.to_vec()),
        )
        .expect("valid histogram");
        r.register(Box::new(plugin_call.clone()))
            .expect("unique metric");
        let assigned_partitions = IntGauge::new(
            "assigned_partitions",
            "Partitions this process runs a task for.",
        )
        .expect("valid metric");
        r.register(Box::new(assigned_partitions.clone()))
            .expect("unique metric");
        let checkpoint_size = IntGauge::new(
            "last_checkpoint_size_bytes",
            "Bytes of state the last completed checkpoint wrote.",
        )
        .expect("valid metric");
        r.register(Box::new(checkpoint_size.clone()))
            .expect("unique metric");
        JobMetrics {
            records_in: counter_vec(&r, "records_in_total", "Records handed to the plugin.", tp),
            records_out: counter_vec(&r, "records_out_total", "Records the plugin emitted.", tp),
            consumer_lag: gauge_vec(
                &r,
                "consumer_lag_records",
                "The partition's end (last stable offset under read_committed) minus the next offset Weir processes, read from the broker at scrape time.",
                tp,
            ),
            plugin_memory: gauge_vec(
                &r,
                "plugin_memory_bytes",
                "Linear memory of the partition's plugin instance.",
                tp,
            ),
            dead_letters: counter_vec(
                &r,
                "dead_letters_total",
                "Records written to the dead-letter topic.",
                tp,
            ),
            skipped: counter_vec(
                &r,
                "skipped_records_total",
                "Records skipped because they faulted the plugin.",
                tp,
            ),
            assigned_partitions,
            plugin_call,
            plugin_faults: counter_vec(
                &r,
                "plugin_faults_total",
                "Plugin faults, by kind.",
                &["kind"],
            ),
            task_restarts: counter_vec(
                &r,
                "task_restarts_total",
                "Restarts of a partition task from its last checkpoint (or, under exactly-once, last commit).",
                tp,
            ),
            checkpoints_completed: counter(
                &r,
                "checkpoints_completed_total",
                "Checkpoints completed (exactly-once: worker transactions committed with progress).",
            ),
            checkpoints_failed: counter(&r, "checkpoints_failed_total", "Checkpoints that failed."),
            checkpoint_duration: gauge(
                &r,
                "last_checkpoint_duration_seconds",
                "Time the last completed checkpoint took, from its request to durable.",
            ),
            checkpoint_size,
            checkpoint_age: gauge(
                &r,
                "last_checkpoint_age_seconds",
                "Seconds since the last checkpoint completed (since the job started, before the first).",
            ),
            transactions_committed: counter(
                &r,
                "transactions_committed_total",
                "Exactly-once transactions committed.",
            ),
            transactions_aborted: counter(
                &r,
                "transactions_aborted_total",
                "Exactly-once transactions aborted (every task of the worker rolled back).",
            ),
            registry: r,
            last_checkpoint: Mutex::new(Instant::now()),
        }
    }

    /// Records a completed checkpoint.
    pub fn checkpoint_completed(&self, took: Duration, bytes: u64) {
        self.checkpoints_completed.inc();
        self.checkpoint_duration.set(took.as_secs_f64());
        self.checkpoint_size.set(bytes as i64);
        *self
            .last_checkpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// The job's workers start: the checkpoint age counts from here until
    /// the first checkpoint completes.
    pub fn job_started(&self) {
        *self
            .last_checkpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Time since the last completed checkpoint (or the job's start).
    pub fn checkpoint_age(&self) -> Duration {
        self.last_checkpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// Counts a plugin fault of kind `kind` (`FaultKind::code`).
    pub fn fault(&self, kind: &str) {
        self.plugin_faults.with_label_values(&[kind]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions_and_carry_the_plugin() {
        let m = JobMetrics::new("count.wasm");
        m.records_in.with_label_values(&["in", "0"]).inc_by(3);
        m.fault("trap");
        m.plugin_call.observe(0.002);
        m.checkpoint_completed(Duration::from_millis(40), 1234);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&m.registry.gather())
            .unwrap();
        assert!(
            text.contains(
                r#"weir_records_in_total{partition="0",topic="in",plugin="count.wasm"} 3"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"weir_plugin_faults_total{kind="trap",plugin="count.wasm"} 1"#));
        assert!(text.contains(
            "weir_plugin_call_duration_seconds_bucket{plugin=\"count.wasm\",le=\"0.0025\"} 1"
        ));
        assert!(text.contains("weir_last_checkpoint_size_bytes{plugin=\"count.wasm\"} 1234"));
        assert!(text.contains("# TYPE weir_checkpoints_completed_total counter"));
    }
}
