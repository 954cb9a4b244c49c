//! Checkpoint cost of plugin state: what the partition task pauses for
//! (`PluginInstance::capture`: find the written pages, copy them) and what
//! a restore costs, against a plain memcpy of the same memory in the same
//! run.
//!
//! For 64 MiB and 256 MiB of plugin memory and 0%, 1% and 100% of its
//! 4 KiB pages written since the previous checkpoint, `pause` times one
//! capture; `pause_fixed` writes the same number of pages (1% of 64 MiB)
//! at both sizes. `restore` times a fresh instance restored from a full
//! snapshot. `memcpy` copies the same number of bytes between two
//! buffers that are already mapped. The summary prints the ratios that
//! issue 6 asks for. Run: `cargo bench -p weir --bench snapshot`.

mod support;

use criterion::{BenchmarkId, Criterion};
use std::hint::black_box;
use std::time::{Duration, Instant};
use weir::runtime::snapshot::Snapshot;
use weir::runtime::snapshot_delta::CapturedState;
use weir::runtime::{OutputSink, PluginEngine, PluginInstance, PluginModule, SinkError};
use weir_plugin_sdk::abi::RecordIter;

const MIB: usize = 1 << 20;
const SIZES_MIB: [usize; 2] = [64, 256];
/// Percent of pages written between two captures.
const CHANGED: [usize; 3] = [0, 1, 100];
/// Pages written for `pause_fixed`: 1% of 64 MiB, the same count at every
/// memory size, to show what total size alone costs.
const FIXED_PAGES: usize = 64 * MIB / 4096 / 100;

/// A plugin the host can ask to write pages: the input is `(count u32,
/// stride u32)`, and it writes one byte into `count` 4 KiB pages, page
/// `(i * stride) mod pages` for i in 0..count (distinct pages when the
/// stride is odd and the page count a power of two).
const POKE_WAT: &str = r#"
(module
  (memory (export "memory") 2)
  (global $calls (mut i64) (i64.const 0))
  (func (export "weir_abi_version") (result i32) (i32.const 1))
  (func (export "weir_input_buffer") (param i32) (result i32) (i32.const 8))
  (func (export "weir_process") (param $ptr i32) (param $len i32) (result i32)
    (local $count i32) (local $stride i32) (local $pages i32) (local $i i32)
    (local.set $count (i32.load (local.get $ptr)))
    (local.set $stride (i32.load offset=4 (local.get $ptr)))
    (local.set $pages (i32.mul (memory.size) (i32.const 16)))
    (global.set $calls (i64.add (global.get $calls) (i64.const 1)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (i32.store8
          (i32.add
            (i32.shl
              (i32.rem_u (i32.mul (local.get $i) (local.get $stride)) (local.get $pages))
              (i32.const 12))
            (i32.const 100))
          (local.get $i))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0)))
"#;

struct Discard;

impl OutputSink for Discard {
    fn emit(&mut self, _: RecordIter<'_>, _: &[String]) -> Result<(), SinkError> {
        Ok(())
    }
}

fn module(engine: &PluginEngine) -> PluginModule {
    let dir = std::env::temp_dir().join(format!("weir-snapshot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("poke.wat");
    std::fs::write(&path, POKE_WAT).unwrap();
    PluginModule::load(engine, &path).unwrap_or_else(|e| panic!("{e}"))
}

fn instance(m: &PluginModule) -> PluginInstance {
    PluginInstance::new(m, Box::new(Discard), vec!["out".into()].into()).unwrap()
}

/// A full snapshot of `mib` MiB of non-zero memory for the poke module.
fn state(m: &PluginModule, mib: usize) -> Snapshot {
    let mut s = instance(m).snapshot();
    s.memory = (0..mib * MIB).map(|i| (i / 4096) as u8 | 1).collect();
    s
}

/// Has the plugin write one byte into `pages` distinct pages.
fn poke(inst: &mut PluginInstance, pages: usize, round: usize) {
    if pages == 0 {
        return;
    }
    let stride = (2 * round + 1) as u32 * 40_503;
    inst.process(8, |buf| {
        buf[..4].copy_from_slice(&(pages as u32).to_le_bytes());
        buf[4..8].copy_from_slice(&stride.to_le_bytes());
        8
    })
    .unwrap();
}

fn bench(c: &mut Criterion) {
    let engine = PluginEngine::new().unwrap();
    let m = module(&engine);
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for mib in SIZES_MIB {
        let bytes = mib * MIB;
        let src = vec![1u8; bytes];
        let mut dst = vec![2u8; bytes];
        group.bench_with_input(BenchmarkId::new("memcpy", mib), &mib, |b, _| {
            b.iter(|| {
                dst.copy_from_slice(&src);
                black_box(dst[bytes / 2])
            })
        });
        drop((src, dst));

        let snap = state(&m, mib);
        let mut live = instance(&m);
        live.restore(&snap, false).unwrap();
        let first = live.capture(false);
        assert!(matches!(first.state, CapturedState::Full(_)));
        drop(first);
        let pages = bytes / 4096;
        let cases = CHANGED
            .map(|pct| (format!("pause_{pct}pct"), pages * pct / 100))
            .into_iter()
            .chain([("pause_fixed".to_string(), FIXED_PAGES)]);
        for (name, n) in cases {
            let mut round = 0;
            group.bench_with_input(BenchmarkId::new(name, mib), &mib, |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        round += 1;
                        poke(&mut live, n, round);
                        let t = Instant::now();
                        let capture = live.capture(false);
                        total += t.elapsed();
                        black_box(capture.copied_bytes());
                    }
                    total
                })
            });
        }
        drop(live);

        group.bench_with_input(BenchmarkId::new("restore", mib), &mib, |b, _| {
            b.iter(|| {
                let mut fresh = instance(&m);
                fresh.restore(&snap, false).unwrap();
                black_box(fresh.memory_size())
            })
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    let ms = |ns: f64| ns / 1e6;
    println!("\nsnapshot cost, ms (same run):");
    for mib in SIZES_MIB {
        let get = |name: &str| support::mean_ns("snapshot", &format!("{name}/{mib}"));
        let mut line = format!("  {mib:>3} MiB:");
        for name in [
            "memcpy",
            "pause_0pct",
            "pause_1pct",
            "pause_100pct",
            "pause_fixed",
            "restore",
        ] {
            if let Some(t) = get(name) {
                line += &format!("  {name} {:.3}", ms(t));
            }
        }
        println!("{line}");
    }
    let ratio = |what: &str, a: &str, b: &str, target: &str| {
        if let (Some(a), Some(b)) = (
            support::mean_ns("snapshot", a),
            support::mean_ns("snapshot", b),
        ) {
            println!("  {what}: {:.4} (target {target})", a / b);
        }
    };
    println!("ratios:");
    ratio(
        "pause(256 MiB, 1%) / memcpy(256 MiB)",
        "pause_1pct/256",
        "memcpy/256",
        "<= 0.05",
    );
    ratio(
        "pause(256 MiB, 1%) / pause(64 MiB, 1%)",
        "pause_1pct/256",
        "pause_1pct/64",
        "<= 1.5",
    );
    ratio(
        &format!("pause(256 MiB, {FIXED_PAGES} pages) / pause(64 MiB, {FIXED_PAGES} pages)"),
        "pause_fixed/256",
        "pause_fixed/64",
        "same pages changed: total size alone",
    );
    ratio(
        "restore(64 MiB) / memcpy(64 MiB)",
        "restore/64",
        "memcpy/64",
        "<= 2",
    );
}
