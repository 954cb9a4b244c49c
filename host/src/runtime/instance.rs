//! One plugin instance: its own `Store`, linear memory and state. A
//! partition task owns exactly one, so state is scoped to the partition.
//!
//! A batch is one guest call: the host asks the guest for an input buffer
//! of the batch's exact size, encodes the records straight into guest
//! memory (no intermediate copy), and calls `weir_process`. The guest's
//! emitted batches reach the [`OutputSink`] during that call.

use super::call::{self, arm, fault_from};
use super::dirty_pages::DirtyTracker;
use super::error::{FaultKind, PluginFault};
use super::host_functions::{HostState, OutputSink, SinkError};
use super::huge_pages;
use super::plugin_module::PluginModule;
use super::snapshot::{self, GlobalValue, HostTime, Snapshot, SnapshotError};
use super::snapshot_delta::{Capture, CapturedState, SnapshotDelta};
use std::sync::Arc;
use wasmtime::{Global, Memory, Store, TypedFunc, Val};
use weir_plugin_sdk::abi;

mod portable_state;
pub use portable_state::PortableState;

/// Why a batch failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The plugin misbehaved.
    #[error(transparent)]
    Fault(#[from] PluginFault),
    /// The output sink refused records (not the plugin's fault).
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// A live plugin instance.
pub struct PluginInstance {
    store: Store<HostState>,
    memory: Memory,
    abi_version: TypedFunc<(), i32>,
    input_buffer: TypedFunc<i32, i32>,
    process: TypedFunc<(i32, i32), i32>,
    init: Option<TypedFunc<(i32, i32), i32>>,
    tick: Option<TypedFunc<(i64, i64), i32>>,
    state_export: Option<TypedFunc<(), i32>>,
    state_import: Option<TypedFunc<(i32, i32, i32), i32>>,
    /// The highest record timestamp given to the plugin, or
    /// `abi::WATERMARK_NONE`: the event time its watermark derives from,
    /// snapshotted with its state.
    event_time: i64,
    /// Every mutable global, in index order (see `runtime::rewrite`).
    globals: Vec<Global>,
    /// SHA-256 of the module, recorded in snapshots.
    module_sha256: [u8; 32],
    /// Which pages changed since the last [`capture`](Self::capture);
    /// created on the first capture (instances that never checkpoint do
    /// not need a userfaultfd).
    tracker: Option<DirtyTracker>,
    /// Identifies this instance's captures (unique in the process); a new
    /// one after a restore, because earlier captures no longer describe
    /// the memory.
    lineage: u64,
    /// Captures taken in this lineage.
    seq: u64,
}

/// Source of [`PluginInstance`] lineage ids.
fn next_lineage() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl PluginInstance {
    /// Instantiates `module` into a fresh store whose output goes to `sink`.
    pub fn new(
        module: &PluginModule,
        sink: Box<dyn OutputSink>,
        sink_topics: Arc<[String]>,
    ) -> Result<Self, PluginFault> {
        let state = HostState::new(sink, sink_topics, &module.engine.limits);
        let (mut store, instance) = call::start(&module.engine.engine, &module.pre, state)?;
        // Validated at load: these exist with these types.
        let memory = instance
            .get_memory(&mut store, abi::EXPORT_MEMORY)
            .ok_or_else(|| contract_fault("no memory export"))?;
        store.data_mut().memory = Some(memory);
        let typed_err = |name: &str, e: wasmtime::Error| contract_fault(&format!("{name}: {e}"));
        let abi_version = instance
            .get_typed_func(&mut store, abi::EXPORT_ABI_VERSION)
            .map_err(|e| typed_err(abi::EXPORT_ABI_VERSION, e))?;
        let input_buffer = instance
            .get_typed_func(&mut store, abi::EXPORT_INPUT_BUFFER)
            .map_err(|e| typed_err(abi::EXPORT_INPUT_BUFFER, e))?;
        let process = instance
            .get_typed_func(&mut store, abi::EXPORT_PROCESS)
            .map_err(|e| typed_err(abi::EXPORT_PROCESS, e))?;
        let init = if module.has_init {
            Some(
                instance
                    .get_typed_func(&mut store, abi::EXPORT_INIT)
                    .map_err(|e| typed_err(abi::EXPORT_INIT, e))?,
            )
        } else {
            None
        };
        let tick = match module.has_tick {
            true => Some(
                instance
                    .get_typed_func(&mut store, abi::EXPORT_TICK)
                    .map_err(|e| typed_err(abi::EXPORT_TICK, e))?,
            ),
            false => None,
        };
        let state_export = match module.has_state_export {
            true => Some(
                instance
                    .get_typed_func(&mut store, abi::EXPORT_STATE_EXPORT)
                    .map_err(|e| typed_err(abi::EXPORT_STATE_EXPORT, e))?,
            ),
            false => None,
        };
        let state_import = match module.has_state_import {
            true => Some(
                instance
                    .get_typed_func(&mut store, abi::EXPORT_STATE_IMPORT)
                    .map_err(|e| typed_err(abi::EXPORT_STATE_IMPORT, e))?,
            ),
            false => None,
        };
        let mut globals = Vec::with_capacity(module.mutable_globals.len());
        for name in module.mutable_globals.iter() {
            globals.push(
                instance
                    .get_global(&mut store, name)
                    .ok_or_else(|| contract_fault(&format!("global export {name} missing")))?,
            );
        }
        Ok(PluginInstance {
            store,
            memory,
            abi_version,
            input_buffer,
            process,
            init,
            tick,
            state_export,
            state_import,
            event_time: abi::WATERMARK_NONE,
            globals,
            module_sha256: module.sha256,
            tracker: None,
            lineage: next_lineage(),
            seq: 0,
        })
    }

    /// Copies the instance's state: the whole linear memory and every
    /// mutable global. Call only between plugin calls.
    pub fn snapshot(&mut self) -> Snapshot {
        let memory = huge_pages::copy(self.memory.data(&self.store));
        Snapshot {
            module_sha256: self.module_sha256,
            globals: self.global_values(),
            time: self.host_time(),
            memory,
        }
    }

    /// The checkpoint form of [`snapshot`](Self::snapshot): only the pages
    /// written since the previous capture (a delta), when the kernel tracks
    /// writes (see `runtime::dirty_pages`); otherwise, on the first capture
    /// of a lineage, or when `full` is asked, the whole state. This copy is
    /// all a checkpoint pauses the partition for. Call only between plugin
    /// calls.
    pub fn capture(&mut self, full: bool) -> Capture {
        let tracker = self.tracker.get_or_insert_with(DirtyTracker::new);
        let base = self.memory.data_ptr(&self.store);
        let len = self.memory.data_size(&self.store);
        // SAFETY: wasmtime's linear memory is mapped readable and writable
        // for `data_size` bytes from `data_ptr` while the store lives, and
        // no guest code runs: we hold the store exclusively.
        let dirty = unsafe { tracker.take_dirty(base, len) };
        self.seq += 1;
        let state = match dirty {
            Some(ranges) if !full && self.seq > 1 => {
                CapturedState::Delta(SnapshotDelta::copy_from(
                    self.module_sha256,
                    (self.global_values(), self.host_time()),
                    self.memory.data(&self.store),
                    &ranges,
                ))
            }
            _ => CapturedState::Full(self.snapshot()),
        };
        Capture {
            instance: self.lineage,
            seq: self.seq,
            state,
        }
    }

    /// This instance's lineage and the number of its last capture: a delta
    /// from the next capture applies to that one.
    pub fn capture_position(&self) -> (u64, u64) {
        (self.lineage, self.seq)
    }

    /// What the host keeps of the instance's time.
    fn host_time(&self) -> HostTime {
        HostTime {
            event_time: self.event_time,
            clock_ns: self.store.data().clock.now_ns(),
        }
    }

    /// The highest record timestamp given to the plugin (ms since the
    /// epoch), or `abi::WATERMARK_NONE`.
    pub fn event_time(&self) -> i64 {
        self.event_time
    }

    /// Records that the plugin was given records up to `timestamp`.
    pub fn observe_event_time(&mut self, timestamp: i64) {
        self.event_time = self.event_time.max(timestamp);
    }

    /// Whether the plugin exports `weir_tick` (ABI 1.1).
    pub fn has_tick(&self) -> bool {
        self.tick.is_some()
    }

    /// Every mutable global's value.
    fn global_values(&mut self) -> Vec<GlobalValue> {
        self.globals
            .iter()
            .map(|g| match g.get(&mut self.store) {
                Val::I32(v) => GlobalValue::I32(v),
                Val::I64(v) => GlobalValue::I64(v),
                Val::F32(v) => GlobalValue::F32(v),
                Val::F64(v) => GlobalValue::F64(v),
                // The rewrite refuses other mutable global types.
                other => unreachable!("mutable global of type {other:?}"),
            })
            .collect()
    }

    /// Puts a snapshot's state into this (fresh) instance: grows memory to
    /// the snapshot's size, copies the bytes, sets every mutable global.
    pub fn restore(
        &mut self,
        snap: &Snapshot,
        allow_module_change: bool,
    ) -> Result<(), SnapshotError> {
        if snap.module_sha256 != self.module_sha256 && !allow_module_change {
            return Err(SnapshotError::ModuleMismatch {
                expected: snapshot::hex(&snap.module_sha256),
                found: snapshot::hex(&self.module_sha256),
            });
        }
        if snap.globals.len() != self.globals.len() {
            return Err(SnapshotError::Shape(format!(
                "{} mutable globals in the snapshot, {} in the module",
                snap.globals.len(),
                self.globals.len()
            )));
        }
        let current = self.memory.data_size(&self.store);
        if snap.memory.len() < current {
            return Err(SnapshotError::Shape(format!(
                "snapshot memory of {} bytes is smaller than the module's initial {current}",
                snap.memory.len()
            )));
        }
        let grow = ((snap.memory.len() - current) / snapshot::PAGE) as u64;
        if grow > 0 {
            self.memory
                .grow(&mut self.store, grow)
                .map_err(|e| SnapshotError::Shape(format!("cannot grow memory: {e}")))?;
        }
        huge_pages::prepare(self.memory.data_mut(&mut self.store));
        self.memory
            .data_mut(&mut self.store)
            .copy_from_slice(&snap.memory);
        for (g, v) in self.globals.iter().zip(&snap.globals) {
            let val = match *v {
                GlobalValue::I32(v) => Val::I32(v),
                GlobalValue::I64(v) => Val::I64(v),
                GlobalValue::F32(v) => Val::F32(v),
                GlobalValue::F64(v) => Val::F64(v),
            };
            g.set(&mut self.store, val)
                .map_err(|e| SnapshotError::Shape(format!("cannot set global: {e}")))?;
        }
        self.event_time = snap.time.event_time;
        self.store.data().clock.continue_from(snap.time.clock_ns);
        // Earlier captures no longer describe the memory: the next one is
        // full, in a new lineage.
        if let Some(t) = &mut self.tracker {
            t.reset();
        }
        self.lineage = next_lineage();
        self.seq = 0;
        Ok(())
    }

    /// Calls `weir_abi_version()`.
    pub fn abi_version(&mut self) -> Result<i32, PluginFault> {
        arm(&mut self.store);
        self.abi_version
            .call(&mut self.store, ())
            .map_err(|e| fault_from(&mut self.store, e))
    }

    /// Gives the plugin its config (fresh start only). A plugin without
    /// `weir_init` ignores it.
    pub fn init(&mut self, entries: &[(String, String)]) -> Result<(), BatchError> {
        let Some(init) = self.init.clone() else {
            return Ok(());
        };
        let pairs = entries.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let size = abi::config_size(pairs.clone());
        let ptr = self.guest_buffer(size)?;
        let mem = &mut self.memory.data_mut(&mut self.store)[ptr..ptr + size];
        let len = abi::encode_config(pairs, mem).expect("sized above");
        self.call(init, ptr, len)
    }

    /// Processes one batch. `size` is the exact encoded size of the batch;
    /// `fill` encodes it into the slice of guest memory it is given and
    /// returns the length written.
    pub fn process(
        &mut self,
        size: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<u64, BatchError> {
        // Output counts per input batch, from `weir_input_buffer` on (a
        // plugin may emit there too).
        let state = self.store.data_mut();
        state.emitted = 0;
        state.emitted_bytes = 0;
        let ptr = self.guest_buffer(size)?;
        let mem = &mut self.memory.data_mut(&mut self.store)[ptr..ptr + size];
        let len = fill(mem);
        self.call(self.process.clone(), ptr, len)?;
        Ok(self.store.data().emitted)
    }

    /// Calls `weir_tick(watermark, processing_time)` (ABI 1.1) if the
    /// plugin exports it, and returns how many records it emitted.
    pub fn tick(&mut self, watermark: i64, processing_time: i64) -> Result<u64, BatchError> {
        let Some(tick) = self.tick.clone() else {
            return Ok(0);
        };
        let state = self.store.data_mut();
        state.emitted = 0;
        state.emitted_bytes = 0;
        state.last_error = None;
        arm(&mut self.store);
        let status = match tick.call(&mut self.store, (watermark, processing_time)) {
            Ok(status) => status,
            Err(e) => return Err(self.call_error(e)),
        };
        self.check_status(status)?;
        Ok(self.store.data().emitted)
    }

    /// The plugin's linear memory size in bytes.
    pub fn memory_size(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    /// Asks the guest for `size` bytes and checks the answer.
    fn guest_buffer(&mut self, size: usize) -> Result<usize, BatchError> {
        let Ok(size32) = i32::try_from(size) else {
            return Err(PluginFault {
                kind: FaultKind::BadPointer,
                message: format!("batch of {size} bytes exceeds the 2 GiB ABI limit"),
            }
            .into());
        };
        arm(&mut self.store);
        let ptr = match self.input_buffer.call(&mut self.store, size32) {
            Ok(ptr) => ptr,
            Err(e) => return Err(self.call_error(e)),
        };
        let mem_len = self.memory.data_size(&self.store);
        let p = ptr as u32 as usize;
        if ptr < 0 || p + size > mem_len {
            return Err(PluginFault::bad_pointer(
                "weir_input_buffer",
                ptr as i64,
                size as i64,
                mem_len,
            )
            .into());
        }
        if !p.is_multiple_of(abi::RECORD_ALIGN) {
            return Err(PluginFault {
                kind: FaultKind::BadPointer,
                message: format!("weir_input_buffer returned {ptr}, which is not 8-byte aligned"),
            }
            .into());
        }
        Ok(p)
    }

    fn call(
        &mut self,
        func: TypedFunc<(i32, i32), i32>,
        ptr: usize,
        len: usize,
    ) -> Result<(), BatchError> {
        self.store.data_mut().last_error = None;
        arm(&mut self.store);
        let started = std::time::Instant::now();
        let status = match func.call(&mut self.store, (ptr as i32, len as i32)) {
            Ok(status) => status,
            Err(e) => {
                let mut error = self.call_error(e);
                if let BatchError::Fault(fault) = &mut error
                    && fault.kind == FaultKind::Timeout
                {
                    fault.message +=
                        &format!("; stopped after {} ms", started.elapsed().as_millis());
                }
                return Err(error);
            }
        };
        self.check_status(status)
    }

    /// A non-zero status as a fault, with the last error line logged.
    fn check_status(&mut self, status: i32) -> Result<(), BatchError> {
        if status == abi::STATUS_OK {
            return Ok(());
        }
        let message = self
            .store
            .data_mut()
            .last_error
            .take()
            .unwrap_or_else(|| "the plugin logged no reason".into());
        Err(PluginFault {
            kind: FaultKind::ErrorStatus(status),
            message,
        }
        .into())
    }
}

impl PluginInstance {
    /// The error of a failed guest call: the sink's refusal if the call
    /// failed because of it (not the plugin's fault), else the typed fault.
    fn call_error(&mut self, e: wasmtime::Error) -> BatchError {
        match self.store.data_mut().sink_error.take() {
            Some(sink) => {
                self.store.data_mut().fault = None;
                BatchError::Sink(sink)
            }
            None => fault_from(&mut self.store, e).into(),
        }
    }
}

fn contract_fault(message: &str) -> PluginFault {
    PluginFault {
        kind: FaultKind::Trap,
        message: message.to_string(),
    }
}
