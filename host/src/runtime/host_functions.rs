//! The imports a plugin may use: `weir.emit`, `weir.log`,
//! `weir.sink_topics` (ABI 1.1), and WASI preview 1 with no files, no
//! network, no environment and no arguments, whose monotonic clock
//! continues across snapshots (see `runtime::clock`).
//!
//! Every pointer and length the guest passes is checked against its memory;
//! a bad one traps the call with a [`PluginFault`] of kind `BadPointer`,
//! never a host panic. An emitted batch is validated whole before any of it
//! reaches the sink, so a malformed batch emits nothing.

use super::clock::InstanceClock;
use super::error::{FaultKind, PluginFault};
use super::guest_output::{GuestOutput, GuestStream};
use super::limits::{InstanceLimiter, Limits};
use bytesize::ByteSize;
use tracing::Level;
use wasmtime::{Caller, Extern, Linker, Memory};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use weir_plugin_sdk::abi::{self, RecordIter};

/// Where a plugin's emitted records go: the Kafka producer in a pipeline, a
/// vector in tests. Called once per `weir.emit`, with a validated batch.
pub trait OutputSink: Send {
    /// Takes the records. They borrow guest memory: copy what you keep.
    fn emit(&mut self, records: RecordIter<'_>, sink_topics: &[String]) -> Result<(), SinkError>;
}

/// The sink could not take the records (e.g. the producer refused them).
/// Fails the batch; it is not the plugin's fault.
#[derive(Debug, Clone, thiserror::Error)]
#[error("output sink: {0}")]
pub struct SinkError(pub String);

/// Per-instance host state, the `T` of `Store<T>`.
pub struct HostState {
    /// WASI preview 1 context: closed stdin, stdout/stderr to the log.
    pub(crate) wasi: WasiP1Ctx,
    /// The WASI context's monotonic clock.
    pub(crate) clock: InstanceClock,
    /// What `poll_oneoff` advanced the clock by during the current call
    /// instead of sleeping (see `runtime::poll_oneoff`).
    pub(crate) slept_ns: u64,
    /// Receives emitted records.
    pub(crate) sink: Box<dyn OutputSink>,
    /// Configured sink topics; a record's `topic` indexes this.
    pub(crate) sink_topics: std::sync::Arc<[String]>,
    /// The guest's exported memory, cached after instantiation.
    pub(crate) memory: Option<Memory>,
    /// The last error-level line the plugin logged: the reason shown when it
    /// returns a non-zero status.
    pub(crate) last_error: Option<String>,
    /// Records emitted during the current call.
    pub(crate) emitted: u64,
    /// Bytes (keys, values, headers) emitted during the current call.
    pub(crate) emitted_bytes: u64,
    /// The instance's limits.
    pub(crate) limits: Limits,
    /// Refuses memory growth past `limits.memory`.
    pub(crate) limiter: InstanceLimiter,
    /// Set when a host function traps on purpose, with the typed reason.
    pub(crate) fault: Option<PluginFault>,
    /// Set when the sink failed during the current call.
    pub(crate) sink_error: Option<SinkError>,
}

impl HostState {
    /// Fresh state for one instance.
    pub fn new(
        sink: Box<dyn OutputSink>,
        sink_topics: std::sync::Arc<[String]>,
        limits: &Limits,
    ) -> Self {
        let clock = InstanceClock::new();
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestOutput::new(GuestStream::Stdout))
            .stderr(GuestOutput::new(GuestStream::Stderr))
            .monotonic_clock(clock.clone())
            .build_p1();
        HostState {
            wasi,
            clock,
            slept_ns: 0,
            sink,
            sink_topics,
            memory: None,
            last_error: None,
            emitted: 0,
            emitted_bytes: 0,
            limits: *limits,
            limiter: InstanceLimiter::new(limits),
            fault: None,
            sink_error: None,
        }
    }
}

/// Adds every import to the linker (the engine then replaces WASI's
/// `poll_oneoff` with `runtime::poll_oneoff`'s).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p1::add_to_linker_sync(linker, |s: &mut HostState| &mut s.wasi)?;
    linker.func_wrap(abi::IMPORT_MODULE, abi::IMPORT_EMIT, emit)?;
    linker.func_wrap(abi::IMPORT_MODULE, abi::IMPORT_LOG, log)?;
    linker.func_wrap(abi::IMPORT_MODULE, abi::IMPORT_SINK_TOPICS, sink_topics)?;
    Ok(())
}

/// Borrows `[ptr, ptr+len)` of guest memory, or records a typed fault.
fn guest_slice<'m>(
    memory: &'m [u8],
    what: &str,
    ptr: i32,
    len: i32,
) -> Result<&'m [u8], PluginFault> {
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    if ptr < 0 || len < 0 || p.checked_add(l).is_none_or(|end| end > memory.len()) {
        return Err(PluginFault::bad_pointer(
            what,
            ptr as i64,
            len as i64,
            memory.len(),
        ));
    }
    Ok(&memory[p..p + l])
}

pub(crate) fn trap(state: &mut HostState, fault: PluginFault) -> wasmtime::Error {
    let err = wasmtime::Error::msg(fault.to_string());
    state.fault = Some(fault);
    err
}

fn memory_of(caller: &mut Caller<'_, HostState>) -> Option<Memory> {
    if let Some(m) = caller.data().memory {
        return Some(m);
    }
    match caller.get_export(abi::EXPORT_MEMORY) {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

/// `weir.emit(ptr, len) -> status`
fn emit(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) -> wasmtime::Result<i32> {
    let Some(memory) = memory_of(&mut caller) else {
        return Err(wasmtime::Error::msg("plugin exports no memory"));
    };
    let (mem, state) = memory.data_and_store_mut(&mut caller);
    let batch = match guest_slice(mem, "weir.emit", ptr, len) {
        Ok(b) => b,
        Err(f) => return Err(trap(state, f)),
    };
    // First pass: validate everything, so a bad batch emits nothing.
    let Ok(records) = abi::records(batch) else {
        return Ok(abi::EMIT_MALFORMED);
    };
    let topics = state.sink_topics.len() as u32;
    let limits = state.limits;
    let mut count = 0u64;
    let mut bytes = 0u64;
    for r in records.clone() {
        let Ok(r) = r else {
            return Ok(abi::EMIT_MALFORMED);
        };
        if r.topic >= topics {
            return Ok(abi::EMIT_BAD_TOPIC);
        }
        if r.headers().any(|h| std::str::from_utf8(h.name).is_err()) {
            return Ok(abi::EMIT_MALFORMED);
        }
        let size = (r.key.map_or(0, <[u8]>::len)
            + r.value.map_or(0, <[u8]>::len)
            + r.headers()
                .map(|h| h.name.len() + h.value.map_or(0, <[u8]>::len))
                .sum::<usize>()) as u64;
        if size > limits.max_record_bytes {
            let message = format!(
                "emitted a record of {} (key, value and headers); limits.max_record_bytes is {}",
                ByteSize(size),
                ByteSize(limits.max_record_bytes)
            );
            return Err(trap(state, output_limit(message)));
        }
        count += 1;
        bytes += size;
        if state.emitted + count > limits.max_output_records {
            let message = format!(
                "emitted more than {} records for one input batch (limits.max_output_records)",
                limits.max_output_records
            );
            return Err(trap(state, output_limit(message)));
        }
    }
    if state.emitted_bytes + bytes > limits.max_output_bytes {
        let message = format!(
            "emitted more than {} for one input batch (limits.max_output_bytes)",
            ByteSize(limits.max_output_bytes)
        );
        return Err(trap(state, output_limit(message)));
    }
    let topics = state.sink_topics.clone();
    if let Err(e) = state.sink.emit(records, &topics) {
        state.sink_error = Some(e.clone());
        return Err(wasmtime::Error::msg(e.to_string()));
    }
    state.emitted += count;
    state.emitted_bytes += bytes;
    Ok(abi::EMIT_OK)
}

fn output_limit(message: String) -> PluginFault {
    PluginFault {
        kind: FaultKind::OutputLimit,
        message,
    }
}

/// `weir.sink_topics() -> count` (ABI 1.1)
fn sink_topics(caller: Caller<'_, HostState>) -> i32 {
    caller.data().sink_topics.len() as i32
}

/// `weir.log(level, ptr, len)`
fn log(mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32) -> wasmtime::Result<()> {
    let Some(memory) = memory_of(&mut caller) else {
        return Err(wasmtime::Error::msg("plugin exports no memory"));
    };
    let (mem, state) = memory.data_and_store_mut(&mut caller);
    let line = match guest_slice(mem, "weir.log", ptr, len) {
        Ok(b) => String::from_utf8_lossy(b),
        Err(f) => return Err(trap(state, f)),
    };
    let level = match level {
        abi::LOG_ERROR => Level::ERROR,
        abi::LOG_WARN => Level::WARN,
        abi::LOG_INFO => Level::INFO,
        abi::LOG_DEBUG => Level::DEBUG,
        _ => Level::TRACE,
    };
    match level {
        Level::ERROR => {
            tracing::error!(target: "weir::plugin", "{line}");
            state.last_error = Some(line.into_owned());
        }
        Level::WARN => tracing::warn!(target: "weir::plugin", "{line}"),
        Level::INFO => tracing::info!(target: "weir::plugin", "{line}"),
        Level::DEBUG => tracing::debug!(target: "weir::plugin", "{line}"),
        _ => tracing::trace!(target: "weir::plugin", "{line}"),
    }
    Ok(())
}
