//! The WebAssembly runtime: everything that touches wasmtime.
//!
//! - [`engine`]: one `Engine` and `Linker` per process, shared by all tasks.
//! - [`plugin_module`]: a module compiled once, checked against the ABI, with
//!   its `InstancePre`.
//! - [`host_functions`]: the `weir.*` imports and WASI preview 1.
//! - [`instance`]: one plugin instance (its own `Store`, memory and state)
//!   per partition task; the per-batch call. [`call`]: what every guest
//!   call shares (budget, typed faults, start-up), for instances and the
//!   load-time version probe.
//! - [`limits`]: memory cap, per-call deadline, stack, output and fuel
//!   limits of every instance, and the epoch ticker.
//! - [`smoke`]: `check-plugin --smoke`, sample batches with a snapshot and
//!   restore, without Kafka.
//! - [`huge_pages`]: transparent huge pages for whole-memory copies.
//! - [`guest_output`]: WASI stdout/stderr into the host's log.
//! - [`clock`]: each instance's WASI monotonic clock, continuous across
//!   snapshots; [`poll_oneoff`]: WASI sleeps that move that clock instead
//!   of blocking the worker.
//! - [`error`]: load errors and typed plugin faults.
//! - [`snapshot`]: an instance's whole state, encoded; [`snapshot_delta`]:
//!   what changed since an earlier state; [`dirty_pages`]: which pages the
//!   kernel saw written, so a checkpoint copies only those.

pub(crate) mod call;
pub mod clock;
pub mod dirty_pages;
pub mod engine;
pub mod error;
pub mod guest_output;
pub mod host_functions;
pub mod huge_pages;
pub mod instance;
pub mod limits;
pub mod plugin_module;
pub mod poll_oneoff;
pub mod rewrite;
pub mod smoke;
pub mod snapshot;
pub mod snapshot_delta;

pub use engine::PluginEngine;
pub use error::{FaultKind, PluginError, PluginFault};
pub use host_functions::{HostState, OutputSink, SinkError};
pub use instance::PluginInstance;
pub use limits::Limits;
pub use plugin_module::{PluginModule, PluginReport};
