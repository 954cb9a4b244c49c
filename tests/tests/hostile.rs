//! Hostile plugins against the sandbox: every behaviour in
//! `weir_e2e::hostile` (trap, endless loop, memory bomb, deep recursion,
//! bogus pointers into every import, a huge record, a million records,
//! WASI file access, proc_exit) under every fault policy, run by the real
//! `weir` binary against a real broker.
//!
//! Each run reads 4 partitions of 1,000 records; the record at offset 500
//! of partition 0 is the poison. The judgement: the host survives (it
//! exits by itself, never by a signal), the policy is applied exactly
//! (`fail`: exit 1 naming the fault and the offset; `skip`: exactly that
//! record is missing from the output; `dead-letter`: it is in the
//! dead-letter topic, once, with headers saying why and where from), and
//! the other partitions' output is complete. Figures are printed: time to
//! stop an endless loop, peak RSS under the memory bomb, the other
//! partitions' throughput against a clean run.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir::runtime::{FaultKind, Limits, OutputSink, PluginEngine, PluginInstance, PluginModule};
use weir_e2e::hostile::{ALL, Hostile, PARTIAL};
use weir_e2e::{Broker, Input, Output, job_config, topic};
use weir_plugin_sdk::abi;

const PARTITIONS: i32 = 4;
const PER_PARTITION: usize = 1_000;
const POISON_OFFSET: i64 = 500;

/// Input: `PER_PARTITION` records per partition, values `v-<p>-<i>`; with
/// `poison`, partition 0's record 500 is `poison-0-500`.
fn input(poison: bool) -> Vec<Input> {
    let mut v = Vec::new();
    for p in 0..PARTITIONS {
        for i in 0..PER_PARTITION {
            let bad = poison && p == 0 && i as i64 == POISON_OFFSET;
            v.push(Input {
                partition: p,
                key: format!("k-{p}-{i}"),
                value: if bad {
                    format!("poison-{p}-{i}")
                } else {
                    format!("v-{p}-{i}")
                },
                timestamp: None,
            });
        }
    }
    v
}

/// What one run of the binary showed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    peak_rss_kib: u64,
    out: Vec<Vec<Output>>,
    dlq: Vec<Output>,
}

impl Run {
    /// `(partition, records in, seconds to the end)` from the summary.
    fn partition_times(&self) -> Vec<(i32, f64)> {
        self.stdout
            .lines()
            .filter_map(|l| {
                let (head, rest) = l.trim().split_once(": ")?;
                let p: i32 = head.rsplit('/').next()?.parse().ok()?;
                let secs = rest.split("reached its end after ").nth(1)?;
                Some((p, secs.trim_end_matches('s').parse().ok()?))
            })
            .collect()
    }

    /// The summary's total of `what` (`skipped`, `dead-lettered`).
    fn total(&self, what: &str) -> u64 {
        self.stdout
            .lines()
            .filter_map(|l| {
                let i = l.find(&format!(" {what}"))?;
                l[..i].rsplit(['(', ' ']).next()?.parse::<u64>().ok()
            })
            .sum()
    }
}

/// The peak resident set of a running process (VmHWM), in KiB.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Bench<'b> {
    broker: &'b Broker,
    dir: tempfile::TempDir,
    clean: String,
    poisoned: String,
}

impl<'b> Bench<'b> {
    fn new(broker: &'b Broker) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for h in ALL.iter().chain([&PARTIAL]) {
            std::fs::write(dir.path().join(format!("{}.wat", h.name)), h.wat()).unwrap();
        }
        let (clean, poisoned) = (topic("hostile-clean"), topic("hostile-in"));
        for (t, poison) in [(&clean, false), (&poisoned, true)] {
            broker.create_topic(t, PARTITIONS).unwrap();
            broker.produce(t, &input(poison)).unwrap();
        }
        Bench {
            broker,
            dir,
            clean,
            poisoned,
        }
    }

    /// Runs `plugin` under `policy` over the poisoned (or clean) input,
    /// at-least-once.
    fn run(&self, plugin: &str, policy: &str, poison: bool) -> Run {
        self.run_with(plugin, policy, poison, "at-least-once")
    }

    /// Runs with the given delivery guarantee; the output is read as a
    /// read_committed consumer sees it.
    fn run_with(&self, plugin: &str, policy: &str, poison: bool, semantics: &str) -> Run {
        let (dst, dlq) = (topic("hostile-out"), topic("hostile-dlq"));
        self.broker.create_topic(&dst, PARTITIONS).unwrap();
        self.broker.create_topic(&dlq, 1).unwrap();
        let sink = format!(
            r#"topics = ["{dst}"]
semantics = "{semantics}"
transactional_id_prefix = "{dst}""#
        );
        let source = if poison { &self.poisoned } else { &self.clean };
        let run_dir = tempfile::tempdir_in(self.dir.path()).unwrap();
        let dead_letter = if policy == "dead-letter" {
            format!("dead_letter_topic = \"{dlq}\"")
        } else {
            String::new()
        };
        let pipeline = format!(
            r#"plugins_dir = "{plugins}"
restart_attempts = 2
restart_backoff = "100ms"
on_fault = "{policy}"
{dead_letter}"#,
            plugins = self.dir.path().display(),
        );
        let extra = format!(
            r#"
[limits]
memory = "128 MiB"
batch_timeout = "500ms"
max_output_records = 100000

[checkpoint]
enabled = true
interval = "200ms"
directory = "{checkpoints}"

[kafka.producer_options]
"transaction.timeout.ms" = "30000"

[source.start]
mode = "earliest"
"#,
            checkpoints = run_dir.path().join("checkpoints").display(),
        );
        let text = job_config(
            &self.broker.bootstrap(),
            source,
            &dst,
            &format!("{plugin}.wat"),
            2,
            &extra,
        )
        .replace("batch_size = 256", &format!("batch_size = 256\n{pipeline}"))
        .replace(&format!("topics = [\"{dst}\"]"), &sink)
        .replace(
            &format!("group_id = \"{source}-group\""),
            &format!("group_id = \"{dst}-group\""),
        );
        let config = run_dir.path().join("config.toml");
        std::fs::write(&config, text).unwrap();
        let started = Instant::now();
        let mut child = Command::new(weir_e2e::weir_binary())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("WEIR_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            let mut s = String::new();
            stdout.read_to_string(&mut s).ok();
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            stderr.read_to_string(&mut s).ok();
            s
        });
        let mut peak_rss_kib = 0;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if let Some(kib) = peak_rss(pid) {
                peak_rss_kib = peak_rss_kib.max(kib);
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{plugin}/{policy}: weir hangs"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = started.elapsed();
        let (stdout, stderr) = (out_reader.join().unwrap(), err_reader.join().unwrap());
        let out = self.broker.read_committed(&dst, PARTITIONS).unwrap();
        let dlq = self.broker.read_committed(&dlq, 1).unwrap().remove(0);
        Run {
            code: status.code(),
            stdout,
            stderr,
            elapsed,
            peak_rss_kib,
            out,
            dlq,
        }
    }
}

/// The values of partition `p`'s input, optionally without the poison.
fn expected(p: i32, upto: usize, without_poison: bool) -> BTreeSet<String> {
    (0..upto)
        .filter(|&i| !(without_poison && p == 0 && i as i64 == POISON_OFFSET))
        .map(|i| format!("v-{p}-{i}"))
        .collect()
}

fn values(out: &[Output]) -> BTreeSet<String> {
    out.iter().filter_map(|o| o.value.clone()).collect()
}

/// Checks one run against its policy; returns a line of figures.
fn judge(h: &Hostile, policy: &str, run: &Run, clean: &Run) -> String {
    let ctx = format!(
        "{} under {policy}\n--- stdout\n{}\n--- stderr\n{}",
        h.name, run.stdout, run.stderr
    );
    // The host survived: it ended by itself, with the policy's exit code.
    let want_code = if policy == "fail" { 1 } else { 0 };
    assert_eq!(run.code, Some(want_code), "{ctx}");
    // Other partitions: complete whatever the policy.
    for p in 1..PARTITIONS {
        let got = values(&run.out[p as usize]);
        assert_eq!(
            got,
            expected(p, PER_PARTITION, false),
            "partition {p}: {ctx}"
        );
    }
    let p0 = values(&run.out[0]);
    assert!(
        !p0.iter().any(|v| v.starts_with("poison")),
        "the poison reached the output: {ctx}"
    );
    match policy {
        "fail" => {
            // Everything before the poison was processed, and the reason
            // names the fault kind, the partition and the exact offset.
            assert!(
                expected(0, POISON_OFFSET as usize, false).is_subset(&p0),
                "partition 0 before the poison: {ctx}"
            );
            let reason = run
                .stderr
                .lines()
                .rfind(|l| l.starts_with("error:"))
                .unwrap_or_default();
            assert!(
                reason.contains(&format!("/0, offsets {POISON_OFFSET}..={POISON_OFFSET}")),
                "{ctx}"
            );
            let kind = fault_name(h.kind);
            assert!(reason.contains(kind), "reason should name `{kind}`: {ctx}");
        }
        _ => {
            assert_eq!(p0, expected(0, PER_PARTITION, true), "{ctx}");
            let (skipped, dead) = (run.total("skipped"), run.total("dead-lettered"));
            if policy == "skip" {
                assert_eq!((skipped, dead), (1, 0), "{ctx}");
                assert!(run.dlq.is_empty(), "{ctx}");
            } else {
                assert_eq!((skipped, dead), (0, 1), "{ctx}");
                assert_eq!(run.dlq.len(), 1, "one dead letter: {ctx}");
                let d = &run.dlq[0];
                assert_eq!(d.value.as_deref(), Some("poison-0-500"), "{ctx}");
                assert_eq!(d.key.as_deref(), Some("k-0-500"), "{ctx}");
                let header = |name: &str| {
                    d.headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .and_then(|(_, v)| v.clone())
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                        .unwrap_or_else(|| panic!("header {name} missing: {ctx}"))
                };
                assert_eq!(header("weir.error.kind"), h.kind, "{ctx}");
                assert_eq!(header("weir.source.partition"), "0");
                assert_eq!(header("weir.source.offset"), POISON_OFFSET.to_string());
                assert_eq!(header("weir.plugin"), h.name);
                assert!(header("weir.source.topic").starts_with("hostile-in"));
                assert!(!header("weir.error.message").is_empty());
            }
        }
    }
    // Figures: the other partitions' throughput against the clean run.
    let rate = |r: &Run| -> Vec<String> {
        r.partition_times()
            .iter()
            .filter(|(p, _)| *p != 0)
            .map(|(p, s)| format!("p{p} {:.0}/s", PER_PARTITION as f64 / s.max(1e-3)))
            .collect()
    };
    let detect = run
        .stderr
        .lines()
        .find_map(|l| l.split("stopped after ").nth(1))
        .map(|s| {
            format!(
                ", endless loop stopped after {}",
                s.split(' ').take(2).collect::<Vec<_>>().join(" ")
            )
        })
        .unwrap_or_default();
    format!(
        "{:<16} {:<11} exit {:?} in {:.2}s, peak RSS {} MiB{detect}; other partitions: [{}] (clean run: [{}])",
        h.name,
        policy,
        run.code.unwrap_or(-1),
        run.elapsed.as_secs_f64(),
        run.peak_rss_kib / 1024,
        rate(run).join(", "),
        rate(clean).join(", "),
    )
}

/// `PluginFault::kind_name` for a kind code.
fn fault_name(code: &str) -> &'static str {
    match code {
        "trap" => "trap:",
        "timeout" => "time limit:",
        "memory-limit" => "memory limit:",
        "stack-overflow" => "stack overflow:",
        "output-limit" => "output limit:",
        "bad-pointer" => "bad pointer:",
        "error-status" => "error status",
        "exit" => "exit 7",
        other => panic!("unknown kind {other}"),
    }
}

fn every_hostile_plugin_under(policy: &str) {
    let broker = Broker::shared();
    let bench = Bench::new(broker);
    let clean = bench.run("trap", policy, false);
    assert_eq!(clean.code, Some(0), "clean run failed:\n{}", clean.stderr);
    let mut lines = Vec::new();
    for h in ALL {
        let run = bench.run(h.name, policy, true);
        lines.push(judge(h, policy, &run, &clean));
    }
    println!("on_fault = \"{policy}\":");
    for l in lines {
        println!("  {l}");
    }
}

#[test]
fn every_hostile_plugin_under_fail() {
    every_hostile_plugin_under("fail");
}

#[test]
fn every_hostile_plugin_under_skip() {
    every_hostile_plugin_under("skip");
}

#[test]
fn every_hostile_plugin_under_dead_letter() {
    every_hostile_plugin_under("dead-letter");
}

/// Under exactly-once, the output a faulted batch emitted before the fault
/// never becomes visible, and each other record is there exactly once; the
/// dead letter is written once, inside the transaction. The same plugin
/// at-least-once shows the partial output, so the judge can see it.
#[test]
fn exactly_once_hides_the_output_of_a_faulted_batch() {
    let broker = Broker::shared();
    let bench = Bench::new(broker);
    let partial = |r: &Run| {
        r.out
            .iter()
            .flatten()
            .filter(|o| o.value.as_deref() == Some("partial-output"))
            .count()
    };
    let alo = bench.run_with(PARTIAL.name, "dead-letter", true, "at-least-once");
    assert_eq!(alo.code, Some(0), "{}", alo.stderr);
    assert!(
        partial(&alo) > 0,
        "at-least-once should show the partial output"
    );

    let eos = bench.run_with(PARTIAL.name, "dead-letter", true, "exactly-once");
    assert_eq!(eos.code, Some(0), "{}", eos.stderr);
    assert_eq!(
        partial(&eos),
        0,
        "partial output visible under exactly-once"
    );
    for p in 0..PARTITIONS {
        let got: Vec<String> = eos.out[p as usize]
            .iter()
            .filter_map(|o| o.value.clone())
            .collect();
        let want: Vec<String> = expected(p, PER_PARTITION, true).into_iter().collect();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(
            sorted, want,
            "partition {p}: exactly the input minus the poison"
        );
        assert_eq!(got.len(), want.len(), "partition {p}: duplicates");
    }
    assert_eq!(eos.dlq.len(), 1, "one dead letter");
    assert_eq!(eos.dlq[0].value.as_deref(), Some("poison-0-500"));
    // Partition 0's worker runs another partition too: the fault aborted
    // the worker's one transaction, and both partitions rolled back.
    let rollback = eos
        .stderr
        .lines()
        .find(|l| l.contains("the worker's transaction was aborted"))
        .unwrap_or_else(|| panic!("no rollback logged:\n{}", eos.stderr));
    assert!(
        rollback.matches(&format!("{}/", bench.poisoned)).count() >= 2,
        "the rollback did not take partition 0's neighbour: {rollback}"
    );
    println!(
        "exactly-once: 0 partial records visible (at-least-once showed {}), {} records exactly once, 1 dead letter",
        partial(&alo),
        eos.out.iter().map(Vec::len).sum::<usize>()
    );
}

/// A sink that drops everything.
struct Discard;

impl OutputSink for Discard {
    fn emit(
        &mut self,
        _: abi::RecordIter<'_>,
        _: &[String],
    ) -> Result<(), weir::runtime::SinkError> {
        Ok(())
    }
}

/// One poisoned batch through the runtime alone (no Kafka).
fn fault_of(engine: &PluginEngine, wat: &str) -> weir::runtime::PluginFault {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wat");
    std::fs::write(&path, wat).unwrap();
    let module = PluginModule::load(engine, &path).unwrap();
    let mut inst = PluginInstance::new(&module, Box::new(Discard), vec!["out".into()].into())
        .expect("instantiates");
    let size = abi::BATCH_HEADER_LEN + abi::record_size(None, Some(b"poison"), 0);
    let result = inst.process(size, |buf| {
        let mut w = abi::BatchWriter::new(buf).unwrap();
        w.push(7, 0, 0, 0, None, Some(b"poison"), std::iter::empty())
            .unwrap();
        w.finish()
    });
    match result {
        Err(weir::runtime::instance::BatchError::Fault(f)) => f,
        other => panic!("expected a fault, got {other:?}"),
    }
}

/// Each behaviour is the typed fault it should be, straight from the
/// runtime; and with fuel metering on, an endless loop runs out of fuel.
#[test]
fn each_hostile_behaviour_is_its_typed_fault() {
    let limits = Limits {
        memory: 128 << 20,
        batch_timeout: Duration::from_millis(300),
        max_output_records: 100_000,
        ..Limits::default()
    };
    let engine = PluginEngine::with_limits(limits).unwrap();
    for h in ALL {
        let t = Instant::now();
        let fault = fault_of(&engine, &h.wat());
        println!(
            "{:<16} {:<15} after {:>4} ms: {fault}",
            h.name,
            fault.kind.code(),
            t.elapsed().as_millis()
        );
        assert_eq!(fault.kind.code(), h.kind, "{}: {fault}", h.name);
    }
    let fueled = PluginEngine::with_limits(Limits {
        fuel: Some(10_000_000),
        batch_timeout: Duration::from_secs(60),
        ..limits
    })
    .unwrap();
    let endless = ALL.iter().find(|h| h.name == "endless_loop").unwrap();
    let fault = fault_of(&fueled, &endless.wat());
    assert_eq!(fault.kind, FaultKind::OutOfFuel, "{fault}");
    assert!(fault.message.contains("10000000"), "{fault}");
}

/// `weir_input_buffer` answering with a pointer outside memory, or one that
/// is not 8-byte aligned, is a bad-pointer fault, not a host crash.
#[test]
fn bogus_input_buffer_pointers_are_faults() {
    let engine = PluginEngine::new().unwrap();
    for (ptr, what) in [
        ("-8", "outside"),
        ("2147483000", "outside"),
        ("131064", "outside"),
        ("65540", "aligned"),
    ] {
        let wat = format!(
            r#"(module
  (memory (export "memory") 2)
  (func (export "weir_abi_version") (result i32) (i32.const 1))
  (func (export "weir_input_buffer") (param i32) (result i32) (i32.const {ptr}))
  (func (export "weir_process") (param i32 i32) (result i32) (i32.const 0)))"#
        );
        let fault = fault_of(&engine, &wat);
        assert_eq!(fault.kind, FaultKind::BadPointer, "{ptr}: {fault}");
        assert!(fault.message.contains(what), "{ptr}: {fault}");
    }
}

/// Found by the `abi_boundary` fuzz target: a plugin that emits from
/// inside `weir_input_buffer`. A refused emit there is the sink's error,
/// not a plugin fault, and does not linger into the next call; an accepted
/// one counts towards the batch's output.
#[test]
fn emit_from_input_buffer_is_counted_and_sink_errors_do_not_linger() {
    use std::sync::{Arc, Mutex};
    use weir::runtime::instance::BatchError;
    struct Flaky(Arc<Mutex<u32>>);
    impl OutputSink for Flaky {
        fn emit(
            &mut self,
            _: abi::RecordIter<'_>,
            _: &[String],
        ) -> Result<(), weir::runtime::SinkError> {
            let mut refuse = self.0.lock().unwrap();
            if *refuse > 0 {
                *refuse -= 1;
                return Err(weir::runtime::SinkError("the producer is down".into()));
            }
            Ok(())
        }
    }
    let wat = r#"(module
  (import "weir" "emit" (func $emit (param i32 i32) (result i32)))
  (memory (export "memory") 2)
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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wat");
    std::fs::write(&path, wat).unwrap();
    let engine = PluginEngine::new().unwrap();
    let module = PluginModule::load(&engine, &path).unwrap();
    let refuse = Arc::new(Mutex::new(1));
    let mut inst =
        PluginInstance::new(&module, Box::new(Flaky(refuse)), vec!["out".into()].into()).unwrap();
    let batch = |value: &'static [u8]| {
        let size = abi::BATCH_HEADER_LEN + abi::record_size(None, Some(value), 0);
        (size, move |buf: &mut [u8]| {
            let mut w = abi::BatchWriter::new(buf).unwrap();
            w.push(0, -1, 0, 0, None, Some(value), []).unwrap();
            w.finish()
        })
    };
    let (size, fill) = batch(b"a");
    let first = inst.process(size, fill);
    assert!(matches!(first, Err(BatchError::Sink(_))), "{first:?}");
    let (size, fill) = batch(b"b");
    assert_eq!(
        inst.process(size, fill).unwrap(),
        1,
        "the input-buffer emit counts"
    );
    let (size, fill) = batch(&[b'c'; 40]);
    match inst.process(size, fill) {
        Err(BatchError::Fault(f)) => assert_eq!(f.kind, FaultKind::Trap, "{f}"),
        other => panic!("a trap after an earlier sink error must be a fault: {other:?}"),
    }
}
