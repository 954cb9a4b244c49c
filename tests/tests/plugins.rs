//! Each example plugin, run through the real runtime (wasmtime, the ABI
//! codec, the host imports) without Kafka: batches in, emitted records out.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use weir::runtime::instance::BatchError;
use weir::runtime::{FaultKind, OutputSink, PluginEngine, PluginInstance, PluginModule, SinkError};
use weir_e2e::repo_root;
use weir_plugin_sdk::abi::{self, Header, RecordIter};

/// An emitted record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Out {
    topic: String,
    partition: i32,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Out>>>);

impl OutputSink for Collect {
    fn emit(&mut self, records: RecordIter<'_>, topics: &[String]) -> Result<(), SinkError> {
        let mut v = self.0.lock().unwrap();
        for r in records {
            let r = r.map_err(|e| SinkError(e.to_string()))?;
            v.push(Out {
                topic: topics[r.topic as usize].clone(),
                partition: r.partition,
                timestamp: r.timestamp,
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.map(<[u8]>::to_vec),
                headers: r
                    .headers()
                    .map(|h| (h.name.to_vec(), h.value.map(<[u8]>::to_vec)))
                    .collect(),
            });
        }
        Ok(())
    }
}

struct In<'a> {
    offset: i64,
    key: Option<&'a str>,
    value: Option<&'a str>,
    headers: &'a [Header<'a>],
}

fn plugin(name: &str) -> PluginModule {
    let engine = PluginEngine::new().unwrap();
    let path: PathBuf = repo_root().join("plugins").join(name);
    PluginModule::load(&engine, &path).unwrap_or_else(|e| panic!("{e}"))
}

fn instance(module: &PluginModule, config: &[(&str, &str)]) -> (PluginInstance, Collect) {
    let sink = Collect::default();
    let topics: Arc<[String]> = vec!["out".to_string(), "other".to_string()].into();
    let mut inst = PluginInstance::new(module, Box::new(sink.clone()), topics).unwrap();
    let cfg: Vec<(String, String)> = config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    inst.init(&cfg).unwrap();
    (inst, sink)
}

fn process(inst: &mut PluginInstance, records: &[In<'_>]) -> Result<u64, BatchError> {
    let size = abi::BATCH_HEADER_LEN
        + records
            .iter()
            .map(|r| {
                abi::record_size(
                    r.key.map(str::as_bytes),
                    r.value.map(str::as_bytes),
                    abi::headers_size(r.headers.iter().copied()),
                )
            })
            .sum::<usize>();
    inst.process(size, |buf| {
        let mut w = abi::BatchWriter::new(buf).unwrap();
        for r in records {
            w.push(
                r.offset,
                1_000 + r.offset,
                3,
                0,
                r.key.map(str::as_bytes),
                r.value.map(str::as_bytes),
                r.headers.iter().copied(),
            )
            .unwrap();
        }
        w.finish()
    })
}

fn take(sink: &Collect) -> Vec<Out> {
    std::mem::take(&mut *sink.0.lock().unwrap())
}

#[test]
fn uppercase_maps_values_and_keeps_key_headers_timestamp() {
    let m = plugin("uppercase.wasm");
    let (mut inst, sink) = instance(&m, &[]);
    let hs = [Header {
        name: b"trace",
        value: Some(b"abc"),
    }];
    let n = process(
        &mut inst,
        &[
            In {
                offset: 0,
                key: Some("a"),
                value: Some("hello"),
                headers: &hs,
            },
            In {
                offset: 1,
                key: None,
                value: None,
                headers: &[],
            },
            In {
                offset: 2,
                key: Some("b"),
                value: Some("MiXeD 42"),
                headers: &[],
            },
        ],
    )
    .unwrap();
    assert_eq!(n, 3);
    let out = take(&sink);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].value.as_deref(), Some(&b"HELLO"[..]));
    assert_eq!(out[0].key.as_deref(), Some(&b"a"[..]));
    assert_eq!(
        out[0].headers,
        vec![(b"trace".to_vec(), Some(b"abc".to_vec()))]
    );
    assert_eq!(out[0].timestamp, 1_000);
    assert_eq!(out[0].topic, "out");
    assert_eq!(out[0].partition, abi::ANY_PARTITION);
    assert_eq!(out[1].value, None);
    assert_eq!(out[1].key, None);
    assert_eq!(out[2].value.as_deref(), Some(&b"MIXED 42"[..]));
}

#[test]
fn filter_applies_rule_from_config() {
    let m = plugin("filter.wasm");
    let (mut inst, sink) = instance(&m, &[("contains", "err"), ("min_length", "5")]);
    let recs = [
        In {
            offset: 0,
            key: Some("1"),
            value: Some("error: disk"),
            headers: &[],
        },
        In {
            offset: 1,
            key: Some("2"),
            value: Some("all fine"),
            headers: &[],
        },
        In {
            offset: 2,
            key: Some("3"),
            value: Some("err"),
            headers: &[],
        },
        In {
            offset: 3,
            key: Some("4"),
            value: Some("minor err x"),
            headers: &[],
        },
    ];
    process(&mut inst, &recs).unwrap();
    let keys: Vec<_> = take(&sink).into_iter().map(|o| o.key.unwrap()).collect();
    assert_eq!(keys, vec![b"1".to_vec(), b"4".to_vec()]);

    let (mut inv, sink) = instance(&m, &[("contains", "err"), ("invert", "true")]);
    process(&mut inv, &recs).unwrap();
    let keys: Vec<_> = take(&sink).into_iter().map(|o| o.key.unwrap()).collect();
    assert_eq!(keys, vec![b"2".to_vec()]);
}

#[test]
fn filter_rejects_bad_config_with_reason() {
    let m = plugin("filter.wasm");
    let mut inst = PluginInstance::new(
        &m,
        Box::new(Collect::default()),
        vec!["out".to_string()].into(),
    )
    .unwrap();
    let err = inst
        .init(&[("min_length".to_string(), "many".to_string())])
        .unwrap_err();
    match err {
        BatchError::Fault(f) => {
            assert_eq!(f.kind, FaultKind::ErrorStatus(1));
            assert!(f.message.contains("min_length"), "{f}");
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn running_count_keeps_state_across_batches_per_instance() {
    let m = plugin("running_count.wasm");
    let (mut a, sink_a) = instance(&m, &[]);
    let (mut b, sink_b) = instance(&m, &[]);
    for batch in 0..3 {
        let recs: Vec<In<'_>> = (0..100)
            .map(|i| In {
                offset: batch * 100 + i,
                key: Some(if i % 3 == 0 { "x" } else { "y" }),
                value: Some("v"),
                headers: &[],
            })
            .collect();
        process(&mut a, &recs).unwrap();
    }
    process(
        &mut b,
        &[In {
            offset: 0,
            key: Some("x"),
            value: None,
            headers: &[],
        }],
    )
    .unwrap();
    let out = take(&sink_a);
    assert_eq!(out.len(), 300);
    let mut model = std::collections::HashMap::<Vec<u8>, u64>::new();
    for o in &out {
        let c = model.entry(o.key.clone().unwrap()).or_default();
        *c += 1;
        assert_eq!(o.value.as_deref(), Some(c.to_string().as_bytes()));
    }
    assert_eq!(model[&b"x".to_vec()], 102);
    // A second instance has its own state.
    assert_eq!(take(&sink_b)[0].value.as_deref(), Some(&b"1"[..]));
}

#[test]
fn mirror_wat_returns_each_batch_unchanged() {
    let m = plugin("mirror.wat");
    let (mut inst, sink) = instance(&m, &[]);
    let hs = [Header {
        name: b"h",
        value: None,
    }];
    let recs: Vec<In<'_>> = (0..500)
        .map(|i| In {
            offset: i,
            key: Some("k"),
            value: Some("some value"),
            headers: if i % 2 == 0 { &hs } else { &[] },
        })
        .collect();
    process(&mut inst, &recs).unwrap();
    let out = take(&sink);
    assert_eq!(out.len(), 500);
    for (i, o) in out.iter().enumerate() {
        assert_eq!(o.partition, 3);
        assert_eq!(o.timestamp, 1_000 + i as i64);
        assert_eq!(o.headers.len(), if i % 2 == 0 { 1 } else { 0 });
    }
    // A batch larger than its initial memory makes it grow.
    let big = "x".repeat(200_000);
    let recs = [In {
        offset: 0,
        key: None,
        value: Some(&big),
        headers: &[],
    }];
    process(&mut inst, &recs).unwrap();
    assert_eq!(take(&sink)[0].value.as_ref().unwrap().len(), 200_000);
}

#[test]
fn every_example_plugin_passes_the_load_checks() {
    // The Rust SDK declares 1.1 for a Plugin (it always exports
    // weir_tick) and 1.0 for a ValueMap (uppercase: no time, no portable
    // state); the hand-written WAT stays 1.0 and loads unchanged.
    for (name, version) in [
        ("uppercase.wasm", abi::ABI_VERSION),
        ("filter.wasm", abi::ABI_VERSION_1_1),
        ("running_count.wasm", abi::ABI_VERSION_1_1),
        ("tumbling_window.wasm", abi::ABI_VERSION_1_1),
        ("mirror.wat", abi::ABI_VERSION),
    ] {
        let m = plugin(name);
        let r = m.report(0);
        assert_eq!(r.abi_version, version, "{name}");
        assert_eq!(m.has_tick, version == abi::ABI_VERSION_1_1, "{name}");
    }
}

/// `check-plugin --smoke` as docs/ABI.md sections 6 and 7 state it: `--set`
/// values are TOML values (a quoted string loses its quotes, bare text
/// arrives as it is), the sample records are printed with partition and
/// timestamp, and a 1.1 plugin's ticks close its windows, the last at the
/// end-of-input watermark.
#[test]
fn smoke_run_prints_samples_and_reads_set_values_as_toml() {
    let file = weir_e2e::repo_root().join("plugins/tumbling_window.wasm");
    let smoke = |sets: &[&str]| {
        let mut cmd = std::process::Command::new(weir_e2e::weir_binary());
        cmd.args(["check-plugin", "--smoke"]).arg(&file);
        for s in sets {
            cmd.args(["--set", s]);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    for aggregate in ["aggregate=\"count\"", "aggregate=count"] {
        let (ok, text) = smoke(&["size_ms=2", aggregate]);
        assert!(ok, "{text}");
        assert!(text.contains("ABI version 1.1"), "{text}");
        assert!(
            text.contains("in  topic=(source) partition=0 timestamp=1700000000000 key=\"alpha\""),
            "{text}"
        );
        // The first window [..000, ..002) closes after batch 1; the last,
        // [..006, ..008), only at the end of the input.
        assert!(
            text.contains(
                "timestamp=1700000000001 key=\"alpha\" value=\"1700000000000,1700000000002,1\""
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "timestamp=1700000000007 key=\"alpha\" value=\"1700000000006,1700000000008,1\""
            ),
            "{text}"
        );
    }
    // Quotes are TOML's: a number in quotes is a string, and size_ms
    // parses it; a non-number is refused by the plugin with its reason.
    let (ok, text) = smoke(&["size_ms=\"x\""]);
    assert!(!ok && text.contains("size_ms"), "{text}");
}

/// WASI preview 1 links, stdout reaches the host (no trap), and the
/// sandbox offers no files: `path_open` on fd 3 fails with EBADF (8).
#[test]
fn wasi_stdout_works_and_files_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wasi.wat");
    std::fs::write(
        &path,
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "weir" "emit" (func $emit (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "hello from wasi\n")
  (data (i32.const 48) "/etc/passwd")
  (func (export "weir_abi_version") (result i32) (i32.const 1))
  (func (export "weir_input_buffer") (param i32) (result i32) (i32.const 65536))
  (func (export "weir_process") (param $p i32) (param $l i32) (result i32)
    ;; iovec at 0: {ptr 16, len 16}; bytes written at 8
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 16))
    (if (i32.ne (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)) (i32.const 0))
      (then (return (i32.const 10))))
    ;; open a file relative to fd 3 (no preopens exist): must fail
    (if (i32.eqz (call $path_open (i32.const 3) (i32.const 0) (i32.const 48) (i32.const 11)
                   (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 40)))
      (then (return (i32.const 11))))
    (drop (call $emit (local.get $p) (local.get $l)))
    (i32.const 0)))"#,
    )
    .unwrap();
    let engine = PluginEngine::new().unwrap();
    let m = PluginModule::load(&engine, &path).unwrap_or_else(|e| panic!("{e}"));
    let (mut inst, sink) = instance(&m, &[]);
    process(
        &mut inst,
        &[In {
            offset: 0,
            key: Some("k"),
            value: Some("v"),
            headers: &[],
        }],
    )
    .unwrap();
    assert_eq!(take(&sink).len(), 1);
}
