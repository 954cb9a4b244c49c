//! Snapshots through the real runtime: restore is exact and repeatable,
//! hidden globals travel with the state, a different module is refused.

use std::sync::{Arc, Mutex};
use weir::runtime::snapshot::{Snapshot, SnapshotError};
use weir::runtime::{OutputSink, PluginEngine, PluginInstance, PluginModule, SinkError};
use weir_e2e::repo_root;
use weir_plugin_sdk::abi::{self, RecordIter};

/// An emitted (key, value).
type Kv = (Vec<u8>, Vec<u8>);

#[derive(Clone, Default)]
struct Values(Arc<Mutex<Vec<Kv>>>);

impl OutputSink for Values {
    fn emit(&mut self, records: RecordIter<'_>, _: &[String]) -> Result<(), SinkError> {
        let mut v = self.0.lock().unwrap();
        for r in records {
            let r = r.map_err(|e| SinkError(e.to_string()))?;
            v.push((
                r.key.unwrap_or_default().to_vec(),
                r.value.unwrap_or_default().to_vec(),
            ));
        }
        Ok(())
    }
}

impl Values {
    fn take(&self) -> Vec<Kv> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn new_instance(m: &PluginModule) -> (PluginInstance, Values) {
    let sink = Values::default();
    let inst =
        PluginInstance::new(m, Box::new(sink.clone()), vec!["out".to_string()].into()).unwrap();
    (inst, sink)
}

/// Keys `k0..k{keys}` round-robin, offsets from `first`.
fn batch(inst: &mut PluginInstance, first: i64, n: i64, keys: i64) {
    let keys_s: Vec<String> = (0..n).map(|i| format!("k{}", (first + i) % keys)).collect();
    let size = abi::BATCH_HEADER_LEN
        + keys_s
            .iter()
            .map(|k| abi::record_size(Some(k.as_bytes()), Some(b"v"), 0))
            .sum::<usize>();
    inst.process(size, |buf| {
        let mut w = abi::BatchWriter::new(buf).unwrap();
        for (i, k) in keys_s.iter().enumerate() {
            w.push(
                first + i as i64,
                0,
                0,
                0,
                Some(k.as_bytes()),
                Some(b"v"),
                [],
            )
            .unwrap();
        }
        w.finish()
    })
    .unwrap();
}

fn load(name: &str) -> PluginModule {
    let engine = PluginEngine::new().unwrap();
    PluginModule::load(&engine, &repo_root().join("plugins").join(name)).unwrap()
}

#[test]
fn restoring_the_same_snapshot_twice_is_byte_identical() {
    let m = load("running_count.wasm");
    let (mut live, live_out) = new_instance(&m);
    for b in 0..20 {
        batch(&mut live, b * 500, 500, 97);
    }
    live_out.take();
    let snap = live.snapshot();
    let mut encoded = Vec::new();
    snap.encode(&mut encoded);
    println!(
        "running-count snapshot: {} bytes of memory, {} globals, {} bytes encoded",
        snap.memory.len(),
        snap.globals.len(),
        encoded.len()
    );
    let decoded = Snapshot::decode(&encoded).unwrap();
    assert_eq!(decoded, snap);

    // The live instance continues...
    batch(&mut live, 10_000, 1_000, 97);
    let want = live_out.take();
    // ...and two restored copies continue identically, from identical state.
    for _ in 0..2 {
        let (mut copy, out) = new_instance(&m);
        copy.restore(&decoded, false).unwrap();
        let again = copy.snapshot();
        assert!(
            weir_e2e::same_state(&again, &snap),
            "restored state differs"
        );
        assert!(
            again.time.clock_ns >= snap.time.clock_ns,
            "the clock went back"
        );
        batch(&mut copy, 10_000, 1_000, 97);
        assert_eq!(out.take(), want);
    }
    // The counts really continued (k0 had 10000/97 ≈ 104 records before).
    let k0 = want.iter().find(|(k, _)| k == b"k0").unwrap();
    let n: u64 = String::from_utf8_lossy(&k0.1).parse().unwrap();
    assert!(n > 100, "count restarted: {n}");
}

/// A WAT plugin whose only state is a mutable global it does not export.
const HIDDEN_COUNTER: &str = r#"(module
  (import "weir" "emit" (func $emit (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $count (mut i64) (i64.const 0))
  (func (export "weir_abi_version") (result i32) (i32.const 1))
  (func (export "weir_input_buffer") (param i32) (result i32) (i32.const 65536))
  ;; Emits one record whose value is the 8-byte running total of records.
  (func (export "weir_process") (param $p i32) (param $l i32) (result i32)
    (global.set $count (i64.add (global.get $count) (i64.extend_i32_u (i32.load (local.get $p)))))
    ;; batch header at 0: count=1; record header at 8 (40 bytes); value at 48
    (i32.store (i32.const 0) (i32.const 1))
    (i32.store (i32.const 4) (i32.const 0))
    (i64.store (i32.const 8) (i64.const 0))
    (i64.store (i32.const 16) (i64.const -1))
    (i32.store (i32.const 24) (i32.const -1))
    (i32.store (i32.const 28) (i32.const 0))
    (i32.store (i32.const 32) (i32.const -1))
    (i32.store (i32.const 36) (i32.const 8))
    (i32.store (i32.const 40) (i32.const 0))
    (i32.store (i32.const 44) (i32.const 0))
    (i64.store (i32.const 48) (global.get $count))
    (call $emit (i32.const 0) (i32.const 56)))
)"#;

#[test]
fn a_non_exported_global_survives_restore() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hidden.wat");
    std::fs::write(&path, HIDDEN_COUNTER).unwrap();
    let engine = PluginEngine::new().unwrap();
    let m = PluginModule::load(&engine, &path).unwrap();
    assert_eq!(m.mutable_globals.len(), 1);
    let (mut a, out_a) = new_instance(&m);
    batch(&mut a, 0, 40, 3);
    batch(&mut a, 40, 2, 3);
    let total = |v: &[u8]| i64::from_le_bytes(v.try_into().unwrap());
    assert_eq!(total(&out_a.take().last().unwrap().1), 42);
    let snap = a.snapshot();
    let (mut b, out_b) = new_instance(&m);
    b.restore(&snap, false).unwrap();
    batch(&mut b, 42, 8, 3);
    assert_eq!(total(&out_b.take()[0].1), 50);
    // Without the restore the count would start over.
    let (mut c, out_c) = new_instance(&m);
    batch(&mut c, 42, 8, 3);
    assert_eq!(total(&out_c.take()[0].1), 8);
}

#[test]
fn restoring_into_a_different_module_is_refused_unless_allowed() {
    let counts = load("running_count.wasm");
    let upper = load("uppercase.wasm");
    let (mut a, _) = new_instance(&counts);
    batch(&mut a, 0, 10, 2);
    let snap = a.snapshot();
    let (mut b, _) = new_instance(&upper);
    match b.restore(&snap, false) {
        Err(SnapshotError::ModuleMismatch { .. }) => {}
        other => panic!("expected a module mismatch, got {other:?}"),
    }
    let msg = b.restore(&snap, false).unwrap_err().to_string();
    assert!(msg.contains("allow_module_change"), "{msg}");
}
