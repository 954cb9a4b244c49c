//! Plugins in every language the project ships examples for: Rust (the
//! SDK), C (`plugin-sdk/c/weir_plugin.h`, clang + wasi-libc),
//! AssemblyScript (`plugin-sdk/assemblyscript/weir.ts`, asc's incremental
//! runtime), hand-written WAT, and Go (`plugin-sdk/go`, Go's own runtime
//! and garbage collector in a WASI reactor). Each language has a stateless uppercase
//! and a stateful running-count plugin, built by `cargo xtask plugins`.
//!
//! - Every module passes `weir check-plugin` (the real binary).
//! - Without Kafka, through the real runtime: the uppercase plugins agree
//!   record for record with the Rust one; the running-count plugins agree
//!   with the model and, snapshotted mid-stream and restored into a fresh
//!   instance, continue exactly as the original instance does.
//! - Against Apache Kafka: the running-count plugin of each language
//!   is run by the real `weir` binary with checkpoints every 50 ms,
//!   killed with SIGKILL at random moments mid-stream, restarted, run to
//!   the end, and judged by the crash test's model (`weir_e2e::model`):
//!   every count continues from the restored checkpoint's value, final
//!   counts equal the model. The AssemblyScript plugin churns its garbage
//!   collector all along, so its runtime's state is part of every snapshot.

use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir::checkpoint::CheckpointStore;
use weir::runtime::snapshot::Snapshot;
use weir::runtime::snapshot_delta::CapturedState;
use weir::runtime::{OutputSink, PluginEngine, PluginInstance, PluginModule, SinkError};
use weir_e2e::{Broker, Input, keyed_input, repo_root, topic};
use weir_plugin_sdk::abi::{self, Header, RecordIter};

const PARTITIONS: i32 = 4;

/// One language's two example plugins, relative to `plugins/`.
struct Lang {
    name: &'static str,
    uppercase: &'static str,
    running_count: &'static str,
}

const LANGS: [Lang; 5] = [
    Lang {
        name: "Rust",
        uppercase: "uppercase.wasm",
        running_count: "running_count.wasm",
    },
    Lang {
        name: "C",
        uppercase: "c_uppercase.wasm",
        running_count: "c_running_count.wasm",
    },
    Lang {
        name: "AssemblyScript",
        uppercase: "as_uppercase.wasm",
        running_count: "as_running_count.wasm",
    },
    Lang {
        name: "WAT",
        uppercase: "wat-uppercase/wat_uppercase.wat",
        running_count: "wat-running-count/wat_running_count.wat",
    },
    Lang {
        name: "Go",
        uppercase: "go_uppercase.wasm",
        running_count: "go_running_count.wasm",
    },
];

fn plugin_path(rel: &str) -> PathBuf {
    repo_root().join("plugins").join(rel)
}

fn file_size(rel: &str) -> u64 {
    std::fs::metadata(plugin_path(rel))
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (built by `cargo xtask plugins`)",
                plugin_path(rel).display()
            )
        })
        .len()
}

// ---------------------------------------------------------------------------
// weir check-plugin

#[test]
fn every_language_module_passes_check_plugin() {
    for lang in &LANGS {
        for rel in [lang.uppercase, lang.running_count] {
            let out = Command::new(weir_e2e::weir_binary())
                .arg("check-plugin")
                .arg(plugin_path(rel))
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stdout.contains("a valid Weir plugin (ABI version 1."),
                "{} {rel}: check-plugin failed:\n{stdout}{stderr}",
                lang.name
            );
            // Only the host's imports, and never an exported table.
            for line in stdout.lines().map(str::trim) {
                assert!(!line.contains(": table"), "{rel} exports a table: {line}");
            }
            println!("{:>14}  {rel:<42} {:>6} bytes", lang.name, file_size(rel));
        }
    }
}

// ---------------------------------------------------------------------------
// Through the runtime, without Kafka

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

impl Collect {
    fn take(&self) -> Vec<Out> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// One input record, owned.
#[derive(Debug, Clone)]
struct Rec {
    offset: i64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn load(engine: &PluginEngine, rel: &str) -> PluginModule {
    PluginModule::load(engine, &plugin_path(rel)).unwrap_or_else(|e| panic!("{e}"))
}

fn instance(module: &PluginModule) -> (PluginInstance, Collect) {
    let sink = Collect::default();
    let topics: Arc<[String]> = vec!["out".to_string(), "other".to_string()].into();
    let mut inst = PluginInstance::new(module, Box::new(sink.clone()), topics).unwrap();
    inst.init(&[]).unwrap();
    (inst, sink)
}

fn headers(r: &Rec) -> Vec<Header<'_>> {
    r.headers
        .iter()
        .map(|(n, v)| Header {
            name: n,
            value: v.as_deref(),
        })
        .collect()
}

/// Feeds one batch; panics with the plugin's fault.
fn process(inst: &mut PluginInstance, recs: &[Rec]) -> u64 {
    let size = abi::BATCH_HEADER_LEN
        + recs
            .iter()
            .map(|r| {
                abi::record_size(
                    r.key.as_deref(),
                    r.value.as_deref(),
                    abi::headers_size(headers(r)),
                )
            })
            .sum::<usize>();
    inst.process(size, |buf| {
        let mut w = abi::BatchWriter::new(buf).unwrap();
        for r in recs {
            w.push(
                r.offset,
                r.timestamp,
                2,
                0,
                r.key.as_deref(),
                r.value.as_deref(),
                headers(r),
            )
            .unwrap();
        }
        w.finish()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Batches that cover the layout's corners: null and empty keys and
/// values, headers (null values too), odd lengths (padding), non-ASCII
/// bytes, and a batch large enough to make every plugin grow its buffers.
fn uppercase_batches() -> Vec<Vec<Rec>> {
    let rec = |offset: i64,
               key: Option<&[u8]>,
               value: Option<&[u8]>,
               headers: &[(&[u8], Option<&[u8]>)]| Rec {
        offset,
        timestamp: if offset % 5 == 0 {
            -1
        } else {
            1_700_000_000_000 + offset
        },
        key: key.map(<[u8]>::to_vec),
        value: value.map(<[u8]>::to_vec),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_vec(), v.map(<[u8]>::to_vec)))
            .collect(),
    };
    let small = vec![
        rec(
            0,
            Some(b"a"),
            Some(b"hello"),
            &[(b"trace", Some(b"abc")), (b"x", None)],
        ),
        rec(1, None, None, &[]),
        rec(2, Some(b""), Some(b""), &[]),
        rec(
            3,
            Some(b"b"),
            Some(b"MiXeD 42 \xc3\xa9t\xc3\xa9 z{}`@"),
            &[],
        ),
        rec(
            4,
            Some(b"key-\x00\xff"),
            Some(b"abcdefg"),
            &[(b"h", Some(b""))],
        ),
        rec(5, None, Some(b"no key"), &[]),
    ];
    let large: Vec<Rec> = (0..300)
        .map(|i| {
            let value: Vec<u8> = (0..(i * 37 % 2000))
                .map(|j| b'a' + (j % 26) as u8)
                .collect();
            let key = format!("key{i}");
            rec(10 + i, Some(key.as_bytes()), Some(&value), &[])
        })
        .collect();
    vec![small.clone(), large, small]
}

fn upper(v: &[u8]) -> Vec<u8> {
    v.to_ascii_uppercase()
}

#[test]
fn uppercase_plugins_agree_with_rust_record_for_record() {
    let engine = PluginEngine::new().unwrap();
    let batches = uppercase_batches();
    // The expected output, written out (and the Rust plugin's, compared below).
    let expected: Vec<Vec<Out>> = batches
        .iter()
        .map(|b| {
            b.iter()
                .map(|r| Out {
                    topic: "out".into(),
                    partition: abi::ANY_PARTITION,
                    timestamp: r.timestamp,
                    key: r.key.clone(),
                    value: r.value.as_deref().map(upper),
                    headers: r.headers.clone(),
                })
                .collect()
        })
        .collect();
    for lang in &LANGS {
        let module = load(&engine, lang.uppercase);
        let (mut inst, sink) = instance(&module);
        for (i, batch) in batches.iter().enumerate() {
            let n = process(&mut inst, batch);
            let got = sink.take();
            assert_eq!(
                n as usize,
                batch.len(),
                "{}: batch {i}: emitted count",
                lang.name
            );
            assert_eq!(got.len(), expected[i].len(), "{}: batch {i}", lang.name);
            for (j, (g, e)) in got.iter().zip(&expected[i]).enumerate() {
                assert_eq!(
                    g, e,
                    "{} ({}): batch {i}, record {j}",
                    lang.name, lang.uppercase
                );
            }
        }
        println!(
            "{:>14}: {} agrees on {} records",
            lang.name,
            lang.uppercase,
            batches.iter().map(Vec::len).sum::<usize>()
        );
    }
}

/// Keyed batches for the running counts: `keys` keys, some null.
fn count_batches(batches: usize, per_batch: usize, keys: usize) -> Vec<Vec<Rec>> {
    let mut offset = 0i64;
    (0..batches)
        .map(|b| {
            (0..per_batch)
                .map(|i| {
                    let k = (b * 7919 + i * 31 + i / 7) % (keys + 1);
                    offset += 1;
                    Rec {
                        offset,
                        timestamp: -1,
                        // Key `keys` stands for the null key (counted as "").
                        key: (k < keys).then(|| format!("key-{k}").into_bytes()),
                        value: Some(b"v".to_vec()),
                        headers: Vec::new(),
                    }
                })
                .collect()
        })
        .collect()
}

/// The model: per record, (key, count), with a null key counted as "".
fn count_model(batches: &[Vec<Rec>]) -> Vec<Vec<(Option<Vec<u8>>, u64)>> {
    let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
    batches
        .iter()
        .map(|b| {
            b.iter()
                .map(|r| {
                    let c = counts.entry(r.key.clone().unwrap_or_default()).or_default();
                    *c += 1;
                    (r.key.clone(), *c)
                })
                .collect()
        })
        .collect()
}

fn counts_of(out: &[Out]) -> Vec<(Option<Vec<u8>>, u64)> {
    out.iter()
        .map(|o| {
            assert_eq!(o.topic, "out");
            assert_eq!(o.partition, abi::ANY_PARTITION);
            assert_eq!(o.timestamp, abi::NO_TIMESTAMP);
            assert!(o.headers.is_empty());
            let v = std::str::from_utf8(o.value.as_deref().unwrap()).unwrap();
            (o.key.clone(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn running_counts_agree_and_continue_after_snapshot_restore() {
    let engine = PluginEngine::new().unwrap();
    // 40 batches of 250 records over 3,000 keys (and the null key): enough
    // for every hash table to grow several times, and for the
    // AssemblyScript collector to run many cycles.
    let batches = count_batches(40, 250, 3_000);
    let model = count_model(&batches);
    let cut = 17;
    for lang in &LANGS {
        let module = load(&engine, lang.running_count);
        let (mut a, sink_a) = instance(&module);
        for (i, batch) in batches[..cut].iter().enumerate() {
            process(&mut a, batch);
            assert_eq!(
                counts_of(&sink_a.take()),
                model[i],
                "{}: batch {i}",
                lang.name
            );
        }
        // Through the encoded form, as a checkpoint stores it.
        let mut bytes = Vec::new();
        a.snapshot().encode(&mut bytes);
        let snap = Snapshot::decode(&bytes).unwrap();
        let (mut b, sink_b) = instance(&module);
        b.restore(&snap, false).unwrap();
        for (i, batch) in batches.iter().enumerate().skip(cut) {
            process(&mut a, batch);
            process(&mut b, batch);
            let (out_a, out_b) = (sink_a.take(), sink_b.take());
            assert_eq!(counts_of(&out_a), model[i], "{}: batch {i}", lang.name);
            assert_eq!(out_b, out_a, "{}: restored instance, batch {i}", lang.name);
        }
        // And the final states are the same bytes.
        let (sa, sb) = (a.snapshot(), b.snapshot());
        assert!(
            weir_e2e::same_state(&sa, &sb),
            "{}: states differ after the same input",
            lang.name
        );
        // What an incremental checkpoint costs this language's runtime:
        // the pages ten more batches write (a garbage collector may write
        // across its heap). A figure, not a judgement.
        a.capture(true);
        for batch in &batches[..10] {
            process(&mut a, batch);
        }
        let delta = match a.capture(false).state {
            CapturedState::Delta(d) => format!("{} KiB", d.data_len() / 1024),
            CapturedState::Full(_) => "no delta (dirty-page tracking unavailable)".into(),
        };
        println!(
            "{:>14}: {} continues after restore; state at the cut: {} KiB memory, {} mutable globals; at the end: {} KiB; 10 more batches of {} records write {delta}",
            lang.name,
            lang.running_count,
            snap.memory.len() / 1024,
            snap.globals.len(),
            sa.memory.len() / 1024,
            batches[0].len()
        );
    }
}

// ---------------------------------------------------------------------------
// The real binary, a real broker, kill -9

/// A job directory with a config for `plugin` from `src` to `dst`.
struct Job {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Job {
    fn new(broker: &Broker, src: &str, dst: &str, plugin: &str) -> Job {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"[kafka]
bootstrap_servers = "{}"
group_id = "{dst}-group"
[kafka.consumer_options]
"auto.offset.reset" = "earliest"

[source]
topics = ["{src}"]
bounded = true

[sink]
topics = ["{dst}"]
semantics = "at-least-once"

[pipeline]
plugins_dir = "{}"
plugin = "{plugin}"
parallelism = 2
batch_size = 32

[checkpoint]
enabled = true
interval = "50ms"
directory = "ck"
retain = 3

[status]
interval = "0s"
"#,
            broker.bootstrap(),
            repo_root().join("plugins").display()
        );
        let config = dir.path().join("job.toml");
        std::fs::write(&config, text).unwrap();
        Job { dir, config }
    }

    fn store(&self) -> CheckpointStore {
        CheckpointStore::open(&self.dir.path().join("ck"), 3).unwrap()
    }

    /// Where the next start resumes: the latest complete checkpoint's
    /// offsets (0 where it has none).
    fn resume_offsets(&self) -> HashMap<i32, i64> {
        let mut m: HashMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
        if let Some(c) = self.store().latest().unwrap() {
            for p in &c.partitions {
                m.insert(p.tp.partition, p.offset);
            }
        }
        m
    }

    fn spawn(&self) -> std::process::Child {
        weir_e2e::spawn_weir(&self.config, self.dir.path(), "warn")
    }

    fn log(&self) -> String {
        weir_e2e::weir_log(self.dir.path())
    }
}

/// Sum of the output topic's end offsets: grows as output lands.
fn output_mark(c: &rdkafka::consumer::BaseConsumer, topic: &str) -> i64 {
    use rdkafka::consumer::Consumer;
    (0..PARTITIONS)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(5))
                .unwrap()
                .1
        })
        .sum()
}

/// Runs the job to completion, killing each of the first `kills` starts
/// with SIGKILL once its output has grown by a random 5-40% of the
/// records it still had to process and a checkpoint holds progress it
/// made (so every kill lands mid-stream, at a different place each time,
/// with progress behind it to restore), or at 85% without such a
/// checkpoint if none came by then. Records where each
/// start resumed. Returns the kills that landed, or the final run's
/// failure.
fn run_with_kills(
    broker: &Broker,
    dst: &str,
    job: &Job,
    total: i64,
    kills: usize,
    restores: &mut Vec<HashMap<i32, i64>>,
    log: &mut Vec<String>,
) -> Result<usize, String> {
    let mut rng = rand::rng();
    let watch: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let mut killed = 0;
    loop {
        let resume = job.resume_offsets();
        let remaining = total - resume.values().sum::<i64>();
        restores.push(resume);
        let baseline = output_mark(&watch, dst);
        let started = Instant::now();
        let mut child = job.spawn();
        if killed < kills {
            let target = baseline + (remaining as f64 * rng.random_range(0.05..0.4)) as i64;
            let give_up = Instant::now() + Duration::from_secs(60);
            let mut mark = baseline;
            while Instant::now() < give_up && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(3));
                mark = output_mark(&watch, dst);
                // Past the target, and a checkpoint holds progress made by
                // this start (a checkpoint being pruned is read as none);
                // or, before it ends without one, near the end anyway.
                let progressed = || {
                    job.store().latest().ok().flatten().is_some_and(|c| {
                        c.partitions.iter().map(|p| p.offset).sum::<i64>() > total - remaining
                    })
                };
                if (mark >= target && progressed()) || mark >= baseline + remaining * 17 / 20 {
                    break;
                }
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed += 1;
                log.push(format!(
                    "start {}: {remaining} records to go, killed after {} ms at about {} new outputs",
                    restores.len(),
                    started.elapsed().as_millis(),
                    mark - baseline
                ));
                continue;
            }
            // It finished (or failed) before the kill: judge that run.
        }
        let status = weir_e2e::wait_for(&mut child, Duration::from_secs(120))
            .map_err(|e| format!("{e}\n{}", job.log()))?;
        if !status.success() {
            return Err(format!("final run failed: {status}\n{}", job.log()));
        }
        log.push(format!(
            "start {}: {remaining} records to go, ran to the end in {} ms",
            restores.len(),
            started.elapsed().as_millis()
        ));
        return Ok(killed);
    }
}

/// What one language's crash run showed.
struct Figures {
    kills: usize,
    starts: usize,
    duplicates: usize,
    restores_checked: usize,
    /// Per partition: bytes of linear memory at the last checkpoint.
    memory: Vec<usize>,
    globals: usize,
    took: Duration,
}

fn crash_run(broker: &Broker, input: &[Input], src: &str, lang: &Lang) -> Result<Figures, String> {
    let t = Instant::now();
    let dst = topic(&format!("lang-{}-out", lang.name.to_lowercase()));
    broker
        .create_topic(&dst, PARTITIONS)
        .map_err(|e| e.to_string())?;
    let job = Job::new(broker, src, &dst, lang.running_count);
    let mut restores = Vec::new();
    // Three kills; at least two must land mid-stream.
    let mut log = Vec::new();
    let kills = run_with_kills(
        broker,
        &dst,
        &job,
        input.len() as i64,
        3,
        &mut restores,
        &mut log,
    )?;
    for line in &log {
        println!("{:>14}: {line}", lang.name);
    }
    if kills < 2 {
        return Err(format!("only {kills} of 3 kills landed mid-stream"));
    }
    let out = broker
        .read_committed(&dst, PARTITIONS)
        .map_err(|e| e.to_string())?;
    let verdict = std::panic::catch_unwind(|| weir_e2e::model::judge(input, &out, &restores))
        .map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "judge panicked".into())
        })?;
    let (memory, globals) = match job.store().latest().unwrap() {
        Some(c) => {
            let mut parts: Vec<_> = c.partitions.iter().collect();
            parts.sort_by_key(|p| p.tp.partition);
            (
                parts.iter().map(|p| p.state.memory.len()).collect(),
                parts.first().map_or(0, |p| p.state.globals.len()),
            )
        }
        None => (Vec::new(), 0),
    };
    Ok(Figures {
        kills,
        starts: restores.len(),
        duplicates: verdict.duplicates,
        restores_checked: verdict.restores_checked,
        memory,
        globals,
        took: t.elapsed(),
    })
}

#[test]
fn every_language_running_count_survives_kill_9_mid_stream() {
    let t = Instant::now();
    let broker = Broker::shared();
    let n = 30_000;
    let input = keyed_input(n, 400, PARTITIONS);
    let src = topic("lang-in");
    broker.create_topic(&src, PARTITIONS).unwrap();
    broker.produce(&src, &input).unwrap();
    println!(
        "wrote {n} records over {PARTITIONS} partitions, 400 keys, in {:?}",
        t.elapsed()
    );
    let mut failures = BTreeMap::new();
    for lang in &LANGS {
        match crash_run(broker, &input, &src, lang) {
            Ok(f) => println!(
                "{:>14}: {} ({} bytes): {} kill -9 in {} starts, {n} records, 0 lost, {} duplicates, {} restore points checked; state at the last checkpoint: {} mutable globals, memory per partition {:?} KiB; {:.1}s",
                lang.name,
                lang.running_count,
                file_size(lang.running_count),
                f.kills,
                f.starts,
                f.duplicates,
                f.restores_checked,
                f.globals,
                f.memory.iter().map(|m| m / 1024).collect::<Vec<_>>(),
                f.took.as_secs_f64()
            ),
            Err(e) => {
                println!("{:>14}: FAILED: {e}", lang.name);
                failures.insert(lang.name, e);
            }
        }
    }
    println!("all languages in {:.1}s", t.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "failed: {failures:#?}");
}
