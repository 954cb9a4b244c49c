//! `/metrics`, `/healthz` and `/readyz` over HTTP, on the job's runtime,
//! and the admin calls: `POST /savepoint?name=NAME` (what `weir savepoint`
//! sends: savepoint NAME from the next complete checkpoint, the job going
//! on), `POST /stop-with-savepoint?name=NAME` (`weir savepoint --stop`: the
//! job stops cleanly and leaves savepoint NAME) and `POST /reload`.
//!
//! A scrape copies the tasks' counters into the registry and reads each
//! partition's end offset from the broker (ListOffsets, with the
//! consumer's isolation level: the last stable offset under
//! read_committed), off the reactor. Under exactly-once the consumer
//! commits nothing itself, so librdkafka's own lag statistic would be
//! stale; this lag is the partition's end minus the next offset Weir
//! will process.

use super::JobMetrics;
use crate::kafka::consumer::SourceConsumer;
use crate::pipeline::status::TaskList;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use rdkafka::consumer::Consumer;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What the endpoints read.
pub struct Health {
    pub metrics: Arc<JobMetrics>,
    /// The partition tasks as they come and go.
    pub tasks: TaskList,
    pub consumer: Arc<SourceConsumer>,
    /// The checkpoint interval, with checkpoints on.
    pub checkpoint_interval: Option<Duration>,
    /// `/readyz` fails when the last checkpoint is older than this many
    /// intervals.
    pub ready_intervals: u32,
    /// Bound of one end-offset request.
    pub timeout: Duration,
    /// Where admin calls go (the job driver).
    pub admin: tokio::sync::mpsc::UnboundedSender<AdminRequest>,
}

/// An admin call, answered by the job driver.
#[derive(Debug)]
pub enum AdminRequest {
    /// Write savepoint `name` from the next complete checkpoint; the job
    /// goes on. The answer: where the savepoint will be, or why not.
    Savepoint {
        name: String,
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
    /// Stop cleanly and write savepoint `name` after the final
    /// checkpoint. The answer: where the savepoint will be, or why not.
    StopWithSavepoint {
        name: String,
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
    /// Switch to the configured module (read again from the config file)
    /// at a checkpoint boundary: the job stops cleanly and starts again,
    /// its state taken over; a new module that cannot start is rolled
    /// back. The answer: that the switch began, or why not.
    Reload {
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
}

/// The query of `POST /savepoint` and `POST /stop-with-savepoint`.
#[derive(Debug, serde::Deserialize)]
struct SavepointQuery {
    name: String,
}

/// Serves until the task is dropped or aborted.
pub async fn serve(listener: tokio::net::TcpListener, health: Arc<Health>) {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(readyz))
        .route("/savepoint", axum::routing::post(savepoint))
        .route(
            "/stop-with-savepoint",
            axum::routing::post(stop_with_savepoint),
        )
        .route("/reload", axum::routing::post(reload))
        .with_state(health);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "metrics endpoint stopped");
    }
}

async fn metrics(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match tokio::task::spawn_blocking(move || health.render()).await {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("rendering metrics failed: {e}\n"),
        ),
    }
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn reload(State(health): State<Arc<Health>>) -> impl IntoResponse {
    admin_call(&health, |reply| AdminRequest::Reload { reply }).await
}

async fn savepoint(
    State(health): State<Arc<Health>>,
    axum::extract::Query(query): axum::extract::Query<SavepointQuery>,
) -> impl IntoResponse {
    let name = query.name;
    admin_call(&health, |reply| AdminRequest::Savepoint { name, reply }).await
}

async fn stop_with_savepoint(
    State(health): State<Arc<Health>>,
    axum::extract::Query(query): axum::extract::Query<SavepointQuery>,
) -> impl IntoResponse {
    let name = query.name;
    admin_call(&health, |reply| AdminRequest::StopWithSavepoint {
        name,
        reply,
    })
    .await
}

/// The answer the driver sends to an admin request.
type Reply = tokio::sync::oneshot::Sender<Result<String, String>>;

/// Sends the admin request `request` makes of its reply channel to the
/// driver and turns the answer into a response: 202 when it is under way,
/// 409 with the reason when refused.
async fn admin_call(
    health: &Health,
    request: impl FnOnce(Reply) -> AdminRequest,
) -> (StatusCode, String) {
    let ending = || {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the job is ending\n".to_string(),
        )
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if health.admin.send(request(reply)).is_err() {
        return ending();
    }
    match answer.await {
        Ok(Ok(what)) => (StatusCode::ACCEPTED, format!("{what}\n")),
        Ok(Err(why)) => (StatusCode::CONFLICT, format!("{why}\n")),
        Err(_) => ending(),
    }
}

/// Raises `counter` to `value` (counters only go up; the tasks' atomics
/// are the truth).
fn raise(counter: &prometheus::IntCounter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

impl Health {
    /// The exposition text, with per-partition figures brought up to date.
    /// Blocking: reads end offsets from the broker.
    fn render(&self) -> String {
        let m = &self.metrics;
        let mut broker_ok = true;
        for t in &self.tasks.snapshot() {
            let labels = [t.topic.as_str(), &t.partition.to_string()];
            raise(
                &m.records_in.with_label_values(&labels),
                t.records_in.load(Ordering::Relaxed),
            );
            raise(
                &m.records_out.with_label_values(&labels),
                t.records_out.load(Ordering::Relaxed),
            );
            raise(
                &m.dead_letters.with_label_values(&labels),
                t.dead_lettered.load(Ordering::Relaxed),
            );
            raise(
                &m.skipped.with_label_values(&labels),
                t.skipped.load(Ordering::Relaxed),
            );
            m.plugin_memory
                .with_label_values(&labels)
                .set(t.memory_bytes.load(Ordering::Relaxed) as i64);
            // One unreachable broker must not hold a scrape for a timeout
            // per partition: after the first failure the lag keeps its
            // last value.
            if broker_ok {
                match self
                    .consumer
                    .fetch_watermarks(&t.topic, t.partition, self.timeout)
                {
                    Ok((_, end)) => {
                        let next = t.position.load(Ordering::Relaxed);
                        m.consumer_lag
                            .with_label_values(&labels)
                            .set((end - next).max(0));
                    }
                    Err(e) => {
                        broker_ok = false;
                        tracing::warn!(topic = %t.topic, partition = t.partition, error = %e, "metrics: end offset not read; lag not updated");
                    }
                }
            }
        }
        m.checkpoint_age.set(m.checkpoint_age().as_secs_f64());
        prometheus::TextEncoder::new()
            .encode_to_string(&m.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }

    /// Ready: every partition task runs (none waits for a restart), and
    /// the last checkpoint is recent enough.
    fn readiness(&self) -> Result<(), String> {
        let waiting: Vec<String> = self
            .tasks
            .snapshot()
            .iter()
            .filter(|t| t.waiting.load(Ordering::Relaxed))
            .map(|t| format!("{}/{}", t.topic, t.partition))
            .collect();
        if !waiting.is_empty() {
            return Err(format!(
                "partition tasks waiting to restart: {}",
                waiting.join(", ")
            ));
        }
        if let Some(interval) = self.checkpoint_interval {
            let age = self.metrics.checkpoint_age();
            let limit = interval * self.ready_intervals;
            if age > limit {
                return Err(format!(
                    "the last checkpoint completed {:.1} s ago (limit {:.1} s: {} intervals)",
                    age.as_secs_f64(),
                    limit.as_secs_f64(),
                    self.ready_intervals
                ));
            }
        }
        Ok(())
    }
}
