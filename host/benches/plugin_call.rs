//! Plugin call cost per record: host → guest → `weir.emit` → host.
//!
//! For batch sizes 1, 64 and 1024 of 100-byte records with 8-byte keys (64
//! distinct), four loops do the same host-side work (encode the batch, hand
//! every record to a sink that reads it): `native` decodes the encoded
//! batch in Rust and passes it on, `mirror` calls the WAT identity plugin,
//! and two Rust SDK plugins: `rust_uppercase` maps each value,
//! `rust_running_count` counts per key in a `HashMap` and emits the count,
//! and the same two in Go (`go_uppercase`, `go_running_count`, the Go SDK
//! and Go's runtime).
//! The summary prints ns/record and the overhead over native. Run:
//! `cargo bench -p weir --bench plugin_call`.

mod support;

use criterion::{BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;
use weir::runtime::{OutputSink, PluginEngine, PluginInstance, PluginModule, SinkError};
use weir_plugin_sdk::abi::{self, RecordIter};

const SIZES: [usize; 3] = [1, 64, 1024];
const VALUE: [u8; 100] = [b'x'; 100];

/// Touches every record the way the Kafka sink does (key, value, topic).
#[derive(Default)]
struct Reader(u64);

impl OutputSink for Reader {
    fn emit(&mut self, records: RecordIter<'_>, _topics: &[String]) -> Result<(), SinkError> {
        for r in records {
            let r = r.map_err(|e| SinkError(e.to_string()))?;
            self.0 += r.value.map_or(0, <[u8]>::len) as u64 + r.topic as u64;
        }
        Ok(())
    }
}

/// Keys of the batch: 8 bytes each.
fn keys(n: usize) -> Vec<[u8; 8]> {
    (0..n as u64).map(|i| (i % 64).to_le_bytes()).collect()
}

fn batch_size(keys: &[[u8; 8]]) -> usize {
    abi::BATCH_HEADER_LEN
        + keys
            .iter()
            .map(|k| abi::record_size(Some(k), Some(&VALUE), 0))
            .sum::<usize>()
}

fn encode(keys: &[[u8; 8]], buf: &mut [u8]) -> usize {
    let mut w = abi::BatchWriter::new(buf).expect("sized");
    for (i, k) in keys.iter().enumerate() {
        w.push(i as i64, 0, 0, 0, Some(k), Some(&VALUE), std::iter::empty())
            .expect("sized");
    }
    w.finish()
}

fn plugin(engine: &PluginEngine, file: &str) -> PluginModule {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(file);
    PluginModule::load(engine, &path).unwrap_or_else(|e| panic!("{e}"))
}

fn bench(c: &mut Criterion) {
    let engine = PluginEngine::new().unwrap();
    let mut group = c.benchmark_group("plugin_call");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for n in SIZES {
        let keys = keys(n);
        let size = batch_size(&keys);
        group.throughput(Throughput::Elements(n as u64));

        let mut buf = vec![0u8; size];
        let mut sink = Reader::default();
        group.bench_with_input(BenchmarkId::new("native", n), &n, |b, _| {
            b.iter(|| {
                let len = encode(&keys, &mut buf);
                sink.emit(abi::records(&buf[..len]).unwrap(), &[]).unwrap();
                black_box(sink.0)
            })
        });

        for (name, file) in [
            ("mirror", "mirror.wat"),
            ("rust_uppercase", "uppercase.wasm"),
            ("rust_running_count", "running_count.wasm"),
            ("go_uppercase", "go_uppercase.wasm"),
            ("go_running_count", "go_running_count.wasm"),
        ] {
            let module = plugin(&engine, file);
            let mut inst =
                PluginInstance::new(&module, Box::<Reader>::default(), vec!["out".into()].into())
                    .unwrap();
            inst.init(&[]).unwrap();
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| black_box(inst.process(size, |buf| encode(&keys, buf)).unwrap()))
            });
        }
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    println!("\nplugin call cost, ns/record (same run), overhead over native:");
    for n in SIZES {
        let Some(native) = support::mean_ns("plugin_call", &format!("native/{n}")) else {
            continue;
        };
        let per = |t: f64| t / n as f64;
        let mut line = format!("  batch {n:>4}: native {:>7.1}", per(native));
        for name in [
            "mirror",
            "rust_uppercase",
            "rust_running_count",
            "go_uppercase",
            "go_running_count",
        ] {
            if let Some(t) = support::mean_ns("plugin_call", &format!("{name}/{n}")) {
                line += &format!(
                    "  {name} {:>7.1} (+{:.1} ns, x{:.2})",
                    per(t),
                    per(t - native),
                    t / native
                );
            }
        }
        println!("{line}");
    }
}
