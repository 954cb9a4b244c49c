//! Plugin call cost per record: host → guest → `weir.emit` → host.
//!
//! For batch sizes 1, 64 and 1024 of 100-byte records with 8-byte keys (64
//! distinct), every loop does the same host-side work (encode the batch,
//! hand every record to a sink that reads it):
//!
//! - `native` decodes the encoded batch in Rust and passes it on;
//! - `native_uppercase` and `native_running_count` do the two SDK plugins'
//!   work in Rust, as fast as it goes there: upper-case each value in
//!   place (the output layout is the input's), or count per key in a
//!   hashbrown map and write the counts into an output batch;
//! - `mirror` calls the WAT identity plugin;
//! - `wat_uppercase`, `wat_running_count`: the same two jobs written by
//!   hand in WAT, no SDK;
//! - `rust_uppercase`, `rust_running_count`: the Rust SDK plugins;
//! - `go_uppercase`, `go_running_count`: the Go SDK and Go's runtime.
//!
//! The summary prints ns/record, the overhead over `native`, and each
//! plugin's overhead over its job's native twin. Run:
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

/// The plugins called: bench name, file, and the native loop doing the
/// same job (its twin).
const PLUGINS: [(&str, &str, &str); 7] = [
    ("mirror", "mirror.wat", "native"),
    (
        "wat_uppercase",
        "wat-uppercase/wat_uppercase.wat",
        "native_uppercase",
    ),
    (
        "wat_running_count",
        "wat-running-count/wat_running_count.wat",
        "native_running_count",
    ),
    ("rust_uppercase", "uppercase.wasm", "native_uppercase"),
    (
        "rust_running_count",
        "running_count.wasm",
        "native_running_count",
    ),
    ("go_uppercase", "go_uppercase.wasm", "native_uppercase"),
    (
        "go_running_count",
        "go_running_count.wasm",
        "native_running_count",
    ),
];

/// Upper-cases every value of the encoded batch `buf` where it lies;
/// `values` is scratch for their places.
fn upper_in_place(buf: &mut [u8], values: &mut Vec<(usize, usize)>) {
    values.clear();
    let base = buf.as_ptr() as usize;
    for r in abi::records(buf).unwrap() {
        if let Some(v) = r.unwrap().value {
            values.push((v.as_ptr() as usize - base, v.len()));
        }
    }
    for &(at, len) in values.iter() {
        buf[at..at + len].make_ascii_uppercase();
    }
}

/// The running count in Rust: a hashbrown map from key to count, the
/// counts written as decimal into an output batch.
struct NativeCounter {
    counts: hashbrown::HashMap<Vec<u8>, u64>,
    out: Vec<u8>,
}

impl NativeCounter {
    fn new(keys: &[[u8; 8]]) -> NativeCounter {
        let size = abi::BATCH_HEADER_LEN
            + keys
                .iter()
                .map(|k| abi::record_size(Some(k), Some(&[0; 20]), 0))
                .sum::<usize>();
        NativeCounter {
            counts: hashbrown::HashMap::new(),
            out: vec![0; size],
        }
    }

    fn count(&mut self, input: &[u8]) -> &[u8] {
        let mut w = abi::BatchWriter::new(&mut self.out).unwrap();
        let mut digits = itoa::Buffer::new();
        for r in abi::records(input).unwrap() {
            let r = r.unwrap();
            let key = r.key.unwrap_or_default();
            let n = match self.counts.get_mut(key) {
                Some(n) => n,
                None => self.counts.entry(key.to_vec()).or_default(),
            };
            *n += 1;
            let value = digits.format(*n).as_bytes();
            w.push(
                0,
                r.timestamp,
                abi::ANY_PARTITION,
                0,
                r.key,
                Some(value),
                r.headers(),
            )
            .unwrap();
        }
        let len = w.finish();
        &self.out[..len]
    }
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

        let mut values = Vec::with_capacity(n);
        group.bench_with_input(BenchmarkId::new("native_uppercase", n), &n, |b, _| {
            b.iter(|| {
                let len = encode(&keys, &mut buf);
                upper_in_place(&mut buf[..len], &mut values);
                sink.emit(abi::records(&buf[..len]).unwrap(), &[]).unwrap();
                black_box(sink.0)
            })
        });

        let mut counter = NativeCounter::new(&keys);
        group.bench_with_input(BenchmarkId::new("native_running_count", n), &n, |b, _| {
            b.iter(|| {
                let len = encode(&keys, &mut buf);
                let out = counter.count(&buf[..len]);
                sink.emit(abi::records(out).unwrap(), &[]).unwrap();
                black_box(sink.0)
            })
        });

        for (name, file, _) in PLUGINS {
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
        let Some(native) = ns_per_record("native", n) else {
            continue;
        };
        let mut line = format!("  batch {n:>4}: native {native:>7.1}");
        for name in ["native_uppercase", "native_running_count"]
            .into_iter()
            .chain(PLUGINS.map(|(name, _, _)| name))
        {
            if let Some(t) = ns_per_record(name, n) {
                line += &format!(
                    "  {name} {t:>7.1} (+{:.1} ns, x{:.2})",
                    t - native,
                    t / native
                );
            }
        }
        println!("{line}");
    }
    println!("\nover the job's native twin, ns/record:");
    for n in SIZES {
        let mut line = format!("  batch {n:>4}:");
        for (name, _, twin) in PLUGINS {
            if let (Some(t), Some(base)) = (ns_per_record(name, n), ns_per_record(twin, n)) {
                line += &format!("  {name} +{:.1}", t - base);
            }
        }
        println!("{line}");
    }
}

/// The mean of bench `name` at batch `n`, per record.
fn ns_per_record(name: &str, n: usize) -> Option<f64> {
    support::mean_ns("plugin_call", &format!("{name}/{n}")).map(|t| t / n as f64)
}
