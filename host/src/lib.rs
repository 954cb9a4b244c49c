//! Weir: a Kafka stream host that runs user logic as sandboxed WebAssembly.
//!
//! # Layout
//!
//! - [`config`]: the `config.toml` tree, its defaults and validation.
//! - [`runtime`]: wasmtime: the shared engine, modules checked against the
//!   ABI, one instance per partition task, host imports, WASI output.
//! - [`kafka`]: the consumer (assignment, start positions), the producer
//!   sink, and the embedded mock cluster for the zero-setup demo.
//! - [`checkpoint`]: the store on disk (state files, metadata written
//!   last), the coordinator that makes a checkpoint complete, failpoints.
//! - [`pipeline`]: the job: its start-up, the job driver (one method per
//!   event: a worker ends, a checkpoint is due or completes, a failure,
//!   stop), partition tasks (a loop over batches owning a plugin instance
//!   and its offset), the worker threads that run them, and the status
//!   line. [`run`] is the entry point `main.rs` and the tests call.
//! - [`metrics`]: Prometheus figures and the `/metrics`, `/healthz` and
//!   `/readyz` endpoint.
//! - [`topic_partition`]: a partition of a topic, the shared vocabulary.
//! - [`scaffold`]: `weir new-plugin`, a plugin folder in Rust, C,
//!   AssemblyScript or Go that builds and passes the smoke run as created.
//!
//! The ABI itself is defined once, in `weir_plugin_sdk::abi`, shared with the
//! SDK; `docs/ABI.md` describes it byte by byte.

pub mod checkpoint;
pub mod config;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod runtime;
pub mod scaffold;
pub mod topic_partition;

pub use config::Config;
pub use pipeline::{JobSummary, run};
