//! The glue [`export_plugin!`](crate::export_plugin) expands to. Plugins do
//! not call this directly.
//!
//! A wasm32 module is single-threaded and the host never re-enters a plugin,
//! so the plugin value, the input buffer and the output buffer live in
//! `static` cells in linear memory, exactly where the host's snapshot sees
//! them.

use crate::abi;
use crate::{Config, Error, Output, Plugin, PortableState, Tick, ValueMap};
use core::cell::UnsafeCell;

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "weir")]
unsafe extern "C" {
    #[link_name = "emit"]
    fn weir_emit(ptr: *const u8, len: usize) -> i32;
    #[link_name = "log"]
    fn weir_log(level: i32, ptr: *const u8, len: usize);
    #[link_name = "sink_topics"]
    fn weir_sink_topics() -> i32;
}

/// Calls `weir.sink_topics`.
pub fn host_sink_topics() -> usize {
    #[cfg(target_arch = "wasm32")]
    {
        unsafe { weir_sink_topics() }.max(0) as usize
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        unreachable!("weir plugins run inside the weir host (wasm32)")
    }
}

/// Calls `weir.emit`.
pub fn host_emit(batch: &[u8]) -> i32 {
    #[cfg(target_arch = "wasm32")]
    {
        unsafe { weir_emit(batch.as_ptr(), batch.len()) }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = batch;
        unreachable!("weir plugins run inside the weir host (wasm32)")
    }
}

/// Calls `weir.log`.
pub fn host_log(level: i32, line: &[u8]) {
    #[cfg(target_arch = "wasm32")]
    unsafe {
        weir_log(level, line.as_ptr(), line.len())
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (level, line);
    }
}

/// A cell for the plugin's globals. Sound because wasm32 plugins are
/// single-threaded and the host calls one export at a time.
struct Global<T>(UnsafeCell<Option<T>>);
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    const fn new() -> Self {
        Global(UnsafeCell::new(None))
    }
    #[allow(clippy::mut_from_ref)]
    fn get_or(&self, f: impl FnOnce() -> T) -> &mut T {
        // SAFETY: see the type's doc; no reference outlives one export call.
        unsafe { (*self.0.get()).get_or_insert_with(f) }
    }
}

/// The input buffer, as u64 words so that it is 8-aligned.
static INPUT: Global<Vec<u64>> = Global::new();
/// The output buffer.
static OUTPUT: Global<Output> = Global::new();
/// The plugin value, type-erased: one plugin type per module.
static PLUGIN: Global<Box<dyn core::any::Any>> = Global::new();

/// `weir_input_buffer`: a pointer to at least `size` bytes.
pub fn input_buffer(size: i32) -> i32 {
    let words = (size.max(0) as usize).div_ceil(8);
    let buf = INPUT.get_or(Vec::new);
    if buf.len() < words {
        buf.resize(words, 0);
    }
    buf.as_mut_ptr() as usize as i32
}

fn plugin<P: Default + 'static>() -> &'static mut P {
    PLUGIN
        .get_or(|| Box::new(P::default()))
        .downcast_mut::<P>()
        .expect("one plugin type per module")
}

/// # Safety (upheld by the host): `[ptr, ptr+len)` lies in the input buffer.
unsafe fn slice<'a>(ptr: i32, len: i32) -> &'a [u8] {
    if len <= 0 {
        return &[];
    }
    unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, len as usize) }
}

/// `weir_init`.
pub fn init<P: Plugin>(ptr: i32, len: i32) -> i32 {
    let buf = unsafe { slice(ptr, len) };
    init_status(Config::decode(buf).and_then(|config| plugin::<P>().init(&config)))
}

/// `weir_init` of a [`ValueMap`].
pub fn init_value_map<P: ValueMap>(ptr: i32, len: i32) -> i32 {
    let buf = unsafe { slice(ptr, len) };
    init_status(Config::decode(buf).and_then(|config| plugin::<P>().init(&config)))
}

fn init_status(result: Result<(), Error>) -> i32 {
    match result {
        Ok(()) => abi::STATUS_OK,
        Err(e) => {
            host_log(abi::LOG_ERROR, format!("init failed: {e}").as_bytes());
            1
        }
    }
}

/// `weir_process`.
pub fn process<P: Plugin>(ptr: i32, len: i32) -> i32 {
    let buf = unsafe { slice(ptr, len) };
    let plugin = plugin::<P>();
    let out = OUTPUT.get_or(Output::default);
    out.emit_error = None;
    let records = match abi::records(buf) {
        Ok(r) => r,
        Err(e) => {
            host_log(abi::LOG_ERROR, format!("input batch: {e}").as_bytes());
            return 2;
        }
    };
    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                host_log(abi::LOG_ERROR, format!("input batch: {e}").as_bytes());
                return 2;
            }
        };
        if let Err(e) = plugin.process(record, out) {
            out.flush();
            host_log(
                abi::LOG_ERROR,
                format!("record at offset {}: {e}", record.offset).as_bytes(),
            );
            return 1;
        }
    }
    finish(out)
}

/// `weir_process` of a [`ValueMap`]: maps the input batch where it lies
/// and emits it whole.
pub fn process_value_map<P: ValueMap>(ptr: i32, len: i32) -> i32 {
    if len <= 0 {
        return abi::STATUS_OK;
    }
    // SAFETY (upheld by the host): `[ptr, ptr+len)` lies in the input
    // buffer, which this module owns and nothing else borrows during the call.
    let buf = unsafe { core::slice::from_raw_parts_mut(ptr as usize as *mut u8, len as usize) };
    let map = plugin::<P>();
    if let Err(e) = abi::map_values_in_place(buf, abi::ANY_PARTITION, 0, |v| map.map(v)) {
        host_log(abi::LOG_ERROR, format!("input batch: {e}").as_bytes());
        return 2;
    }
    match host_emit(buf) {
        abi::EMIT_OK => abi::STATUS_OK,
        rc => {
            host_log(
                abi::LOG_ERROR,
                format!("weir.emit returned {rc}").as_bytes(),
            );
            3
        }
    }
}

/// Sends what is buffered; status 3 if `weir.emit` refused any of it.
fn finish(out: &mut Output) -> i32 {
    out.flush();
    match out.emit_error {
        None => abi::STATUS_OK,
        Some(rc) => {
            host_log(
                abi::LOG_ERROR,
                format!("weir.emit returned {rc}").as_bytes(),
            );
            3
        }
    }
}

/// `weir_tick`.
pub fn tick<P: Plugin>(watermark: i64, processing_time: i64) -> i32 {
    let plugin = plugin::<P>();
    let out = OUTPUT.get_or(Output::default);
    out.emit_error = None;
    let time = Tick {
        watermark,
        processing_time,
    };
    if let Err(e) = plugin.on_tick(time, out) {
        out.flush();
        host_log(abi::LOG_ERROR, format!("tick: {e}").as_bytes());
        return 1;
    }
    finish(out)
}

/// What `weir_state_export` hands the host: the bytes, and the descriptor
/// `(format_version, ptr, len)` pointing at them.
struct ExportedState {
    bytes: Vec<u8>,
    descriptor: [u32; 3],
}

static EXPORTED: Global<ExportedState> = Global::new();

/// `weir_state_export`: the address of the descriptor, 0 on failure.
pub fn state_export<P: PortableState>() -> i32 {
    let exported = EXPORTED.get_or(|| ExportedState {
        bytes: Vec::new(),
        descriptor: [0; 3],
    });
    exported.bytes.clear();
    if let Err(e) = plugin::<P>().export_state(&mut exported.bytes) {
        host_log(abi::LOG_ERROR, format!("export_state: {e}").as_bytes());
        return 0;
    }
    exported.descriptor = [
        P::STATE_VERSION,
        exported.bytes.as_ptr() as usize as u32,
        exported.bytes.len() as u32,
    ];
    exported.descriptor.as_ptr() as usize as i32
}

/// `weir_state_import`.
pub fn state_import<P: PortableState>(ptr: i32, len: i32, version: i32) -> i32 {
    let bytes = unsafe { slice(ptr, len) };
    match plugin::<P>().import_state(version as u32, bytes) {
        Ok(()) => abi::STATUS_OK,
        Err(e) => {
            host_log(
                abi::LOG_ERROR,
                format!("import_state (format version {version}): {e}").as_bytes(),
            );
            1
        }
    }
}
