//! Reproduces finding 1 of `abi_boundary` (see fuzz/README.md) without the
//! fuzzer: a plugin that calls `weir.emit` from inside `weir_input_buffer`.
//!
//! ```sh
//! cd fuzz && cargo +nightly run --example repro_input_buffer_emit
//! ```
//!
//! Prints what the host reports in three cases; the expected outcome is
//! stated next to each.

use std::path::Path;
use std::sync::{Arc, Mutex};
use weir::runtime::{OutputSink, PluginEngine, PluginInstance, PluginModule, SinkError};
use weir_plugin_sdk::abi::{self, RecordIter};

/// `weir_input_buffer` first emits a one-record batch (stored at 1024 by a
/// data segment), then returns 65536. `weir_process` returns 0, or traps
/// (`unreachable`) when the batch is longer than 64 bytes.
const WAT: &str = r#"(module
  (import "weir" "emit" (func $emit (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; count=1, reserved, then one record: offset 0, timestamp -1,
  ;; partition -1, topic 0, key null, value "x", no headers (49 bytes).
  (data (i32.const 1024)
    "\01\00\00\00\00\00\00\00"
    "\00\00\00\00\00\00\00\00" "\ff\ff\ff\ff\ff\ff\ff\ff"
    "\ff\ff\ff\ff" "\00\00\00\00" "\ff\ff\ff\ff" "\01\00\00\00"
    "\00\00\00\00" "\00\00\00\00" "x")
  (func (export "weir_abi_version") (result i32) (i32.const 1))
  (func (export "weir_input_buffer") (param i32) (result i32)
    (drop (call $emit (i32.const 1024) (i32.const 57)))
    (i32.const 65536))
  (func (export "weir_process") (param i32 i32) (result i32)
    (if (i32.gt_u (local.get 1) (i32.const 64)) (then (unreachable)))
    (i32.const 0)))"#;

struct Sink {
    records: Arc<Mutex<u64>>,
    /// Refuse this many emit calls, then accept.
    fail: u32,
}

impl OutputSink for Sink {
    fn emit(&mut self, records: RecordIter<'_>, _: &[String]) -> Result<(), SinkError> {
        if self.fail > 0 {
            self.fail -= 1;
            return Err(SinkError("the producer is down".into()));
        }
        *self.records.lock().unwrap() += records.count() as u64;
        Ok(())
    }
}

fn batch_of(value: &'static [u8]) -> (usize, impl FnOnce(&mut [u8]) -> usize) {
    let size = abi::BATCH_HEADER_LEN + abi::record_size(None, Some(value), 0);
    (size, move |buf: &mut [u8]| {
        let mut w = abi::BatchWriter::new(buf).unwrap();
        w.push(0, -1, 0, 0, None, Some(value), []).unwrap();
        w.finish()
    })
}

fn main() {
    let engine = PluginEngine::new().unwrap();
    let module = PluginModule::from_bytes(
        &engine,
        Path::new("emit_in_input_buffer.wat"),
        WAT.as_bytes(),
    )
    .unwrap();
    let topics: Arc<[String]> = vec!["out".to_string()].into();

    // 1. The count: the sink takes 1 record during the call, process says 0
    //    (and limits.max_output_* do not see that record either).
    let got = Arc::new(Mutex::new(0));
    let sink = Sink {
        records: got.clone(),
        fail: 0,
    };
    let mut inst = PluginInstance::new(&module, Box::new(sink), topics.clone()).unwrap();
    let (size, fill) = batch_of(b"in");
    let r = inst.process(size, fill);
    println!(
        "1. process -> {r:?}; the sink accepted {} record(s) during the call (expected Ok(1))",
        got.lock().unwrap()
    );

    // 2. A sink failure during weir_input_buffer: reported as a plugin trap.
    let sink = Sink {
        records: Arc::new(Mutex::new(0)),
        fail: 1,
    };
    let mut inst = PluginInstance::new(&module, Box::new(sink), topics.clone()).unwrap();
    let (size, fill) = batch_of(b"in");
    let r = inst.process(size, fill);
    println!("2. process -> {r:?} (expected Err(Sink(..)))");

    // 3. The stale sink error of 2 is still stored: the next call's trap
    //    (the plugin's own `unreachable`) is reported as that sink error.
    let (size, fill) = batch_of(b"a value long enough to make weir_process trap");
    let r = inst.process(size, fill);
    println!("3. process -> {r:?} (expected Err(Fault(trap: unreachable)))");
}
