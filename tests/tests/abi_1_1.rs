//! ABI 1.1 through the real runtime, without Kafka: `weir_tick` is called
//! with the watermark it is given, `weir.sink_topics` answers, the event
//! time and the WASI monotonic clock travel with a snapshot (a restored
//! instance's clock never goes back), and the version rules hold: a module
//! that uses a 1.1 name must declare 1.1, and unknown versions are refused.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir::runtime::{
    OutputSink, PluginEngine, PluginError, PluginInstance, PluginModule, SinkError,
};
use weir_plugin_sdk::abi::{self, RecordIter};

/// WAT that writes, at address 0, a batch of one record (offset 0, no
/// timestamp, any partition, topic 0, null key, no headers) whose 24-byte
/// value the caller writes at 48..72; `weir.emit(0, 72)` sends it.
const RECORD_HEADER: &str = r#"
    (i32.store (i32.const 0) (i32.const 1))
    (i32.store (i32.const 4) (i32.const 0))
    (i64.store (i32.const 8) (i64.const 0))
    (i64.store (i32.const 16) (i64.const -1))
    (i32.store (i32.const 24) (i32.const -1))
    (i32.store (i32.const 28) (i32.const 0))
    (i32.store (i32.const 32) (i32.const -1))
    (i32.store (i32.const 36) (i32.const 24))
    (i64.store (i32.const 40) (i64.const 0))"#;

/// A 1.1 module whose `weir_tick` emits one record whose value is three
/// i64: the watermark it was given, its WASI monotonic clock, and
/// `weir.sink_topics()`.
const TICKER: &str = r#"
(module
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock (param i32 i64 i32) (result i32)))
  (import "weir" "emit" (func $emit (param i32 i32) (result i32)))
  (import "weir" "sink_topics" (func $sinks (result i32)))
  (memory (export "memory") 1)
  (func (export "weir_abi_version") (result i32) (i32.const VERSION))
  (func (export "weir_input_buffer") (param i32) (result i32) (i32.const 1024))
  (func (export "weir_process") (param i32 i32) (result i32) (i32.const 0))
  (func (export "weir_tick") (param $wm i64) (param $pt i64) (result i32)
    RECORD_HEADER
    (i64.store (i32.const 48) (local.get $wm))
    (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 56)))
    (i64.store (i32.const 64) (i64.extend_i32_s (call $sinks)))
    (drop (call $emit (i32.const 0) (i32.const 72)))
    (i32.const 0))
)
"#;

#[derive(Clone, Default)]
struct Ticks(Arc<Mutex<Vec<[i64; 3]>>>);

impl OutputSink for Ticks {
    fn emit(&mut self, records: RecordIter<'_>, _: &[String]) -> Result<(), SinkError> {
        for r in records {
            let v = r.unwrap().value.unwrap();
            let word = |i: usize| i64::from_le_bytes(v[i * 8..i * 8 + 8].try_into().unwrap());
            self.0.lock().unwrap().push([word(0), word(1), word(2)]);
        }
        Ok(())
    }
}

impl Ticks {
    fn last(&self) -> [i64; 3] {
        *self.0.lock().unwrap().last().expect("the tick emitted")
    }
}

fn load(text: &str) -> Result<PluginModule, PluginError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ticker.wat");
    std::fs::write(&path, text.replace("RECORD_HEADER", RECORD_HEADER)).unwrap();
    PluginModule::load(&PluginEngine::new().unwrap(), &path)
}

fn instance(m: &PluginModule) -> (PluginInstance, Ticks) {
    let ticks = Ticks::default();
    let topics: Arc<[String]> = vec!["a".to_string(), "b".to_string()].into();
    let inst = PluginInstance::new(m, Box::new(ticks.clone()), topics).unwrap();
    (inst, ticks)
}

#[test]
fn tick_sink_topics_event_time_and_clock_survive_a_restore() {
    let m = load(&TICKER.replace("VERSION", &abi::ABI_VERSION_1_1.to_string())).unwrap();
    assert!(m.has_tick);
    assert_eq!(m.abi_version, abi::ABI_VERSION_1_1);
    let (mut a, ticks_a) = instance(&m);
    assert_eq!(a.event_time(), abi::WATERMARK_NONE);
    a.observe_event_time(5_000);
    a.observe_event_time(4_000);
    assert_eq!(a.event_time(), 5_000);
    assert_eq!(a.tick(4_999, 0).unwrap(), 1);
    let [wm, clock_a, sinks] = ticks_a.last();
    assert_eq!((wm, sinks), (4_999, 2));
    std::thread::sleep(Duration::from_millis(50));
    let snap = a.snapshot();
    assert_eq!(snap.time.event_time, 5_000);
    assert!(snap.time.clock_ns as i64 >= clock_a + 50_000_000);

    let (mut b, ticks_b) = instance(&m);
    b.restore(&snap, false).unwrap();
    assert_eq!(b.event_time(), 5_000);
    b.tick(abi::WATERMARK_END, 0).unwrap();
    let [wm, clock_b, _] = ticks_b.last();
    assert_eq!(wm, abi::WATERMARK_END);
    assert!(
        clock_b as u64 >= snap.time.clock_ns,
        "the restored clock went back: {clock_b} < {}",
        snap.time.clock_ns
    );
    // A fresh instance's clock starts near zero: the restore is what kept
    // it going.
    let (mut c, ticks_c) = instance(&m);
    c.tick(0, 0).unwrap();
    assert!((ticks_c.last()[1] as u64) < snap.time.clock_ns);
}

#[test]
fn a_1_1_name_needs_a_1_1_declaration_and_unknown_versions_are_refused() {
    let refused = |text: &str| match load(text) {
        Ok(_) => panic!("the module loaded"),
        Err(e) => e,
    };
    let err = refused(&TICKER.replace("VERSION", "1")).to_string();
    assert!(
        err.contains("weir_tick") && err.contains("ABI 1.1") && err.contains("65537"),
        "{err}"
    );
    // Only the import: named too.
    let import_only = TICKER
        .replace("VERSION", "1")
        .replace("(export \"weir_tick\")", "");
    let err = refused(&import_only).to_string();
    assert!(err.contains("weir.sink_topics"), "{err}");
    let err = refused(&TICKER.replace("VERSION", "65538"));
    assert!(
        matches!(err, PluginError::AbiVersion { found: 65538, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("1 (1.0) and 65537 (1.1)"), "{err}");
}

/// A 1.1 module whose `weir_tick(ns, _)` sleeps `ns` on the monotonic
/// clock through `poll_oneoff` and emits (errno, clock before, clock
/// after) as three i64.
const SLEEPER: &str = r#"
(module
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "weir" "emit" (func $emit (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "weir_abi_version") (result i32) (i32.const 65537))
  (func (export "weir_input_buffer") (param i32) (result i32) (i32.const 1024))
  (func (export "weir_process") (param i32 i32) (result i32) (i32.const 0))
  (func (export "weir_tick") (param $ns i64) (param $pt i64) (result i32)
    RECORD_HEADER
    (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 56)))
    ;; subscription at 200: userdata 7, clock, monotonic, relative $ns
    (memory.fill (i32.const 200) (i32.const 0) (i32.const 48))
    (i64.store (i32.const 200) (i64.const 7))
    (i32.store (i32.const 216) (i32.const 1))
    (i64.store (i32.const 224) (local.get $ns))
    (i64.store (i32.const 48)
      (i64.extend_i32_s (call $poll (i32.const 200) (i32.const 300) (i32.const 1) (i32.const 400))))
    (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 64)))
    (drop (call $emit (i32.const 0) (i32.const 72)))
    (i32.const 0))
)
"#;

#[test]
fn a_sleep_moves_the_plugin_clock_and_a_long_one_is_a_timeout() {
    let m = load(SLEEPER).unwrap();
    let (mut a, ticks) = instance(&m);
    a.tick(250_000_000, 0).unwrap();
    let [errno, before, after] = ticks.last();
    assert_eq!(errno, 0);
    assert!(
        after - before >= 250_000_000,
        "the clock moved {} ns",
        after - before
    );
    // An hour is past limits.batch_timeout (5 s): a timeout fault, at once.
    let err = a.tick(3_600_000_000_000, 0).unwrap_err().to_string();
    assert!(
        err.contains("slept") && err.contains("batch_timeout"),
        "{err}"
    );
}
