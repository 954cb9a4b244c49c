//! One system on one job, measured from outside: a reader thread consumes
//! the output topic as it is written (`read_committed` under exactly-once)
//! and checks every record against the input; the process tree's CPU time
//! and resident memory come from `/proc`.
//!
//! - start-up: spawn to the first output record (JVM, MiniCluster, plugin
//!   compilation, group and transaction set-up);
//! - steady state: from 10 % to 90 % of the expected output; records/s
//!   and CPU seconds per million records over that span;
//! - peak RSS: the sum of `VmHWM` over the process tree at the end.

use crate::system::{Guarantee, Job, RunSpec};
use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weir_e2e::Input;

/// What correct output is.
pub struct Expected {
    /// Input records (= expected distinct outputs).
    records: u64,
    /// Hashes of the input (key, value) pairs, for identity.
    pairs: HashSet<u64>,
    /// Records per key, for the running count.
    totals: HashMap<Vec<u8>, u64>,
}

impl Expected {
    pub fn new(input: &[Input]) -> Expected {
        let mut totals = HashMap::new();
        for r in input {
            *totals.entry(r.key.as_bytes().to_vec()).or_default() += 1;
        }
        Expected {
            records: input.len() as u64,
            pairs: input
                .iter()
                .map(|r| pair_hash(r.key.as_bytes(), r.value.as_bytes()))
                .collect(),
            totals,
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone)]
pub struct Measured {
    pub startup_s: f64,
    pub startup_cpu_s: f64,
    pub records_per_s: f64,
    pub cpu_per_million: f64,
    pub total_s: f64,
    pub total_cpu_s: f64,
    pub peak_rss_mib: f64,
    /// Output records beyond one per input record.
    pub duplicates: u64,
    /// Running counts that did not follow their key's previous one in read order.
    pub step_backs: u64,
}

impl Measured {
    pub fn line(&self) -> String {
        format!(
            "start-up {:>5.1} s ({:>5.1} CPU s) | {:>8.0} rec/s | {:>6.2} CPU s/M | peak RSS {:>5.0} MiB | all {:>5.1} s, {:>5.1} CPU s | output ok, {} duplicates, {} steps back",
            self.startup_s,
            self.startup_cpu_s,
            self.records_per_s,
            self.cpu_per_million,
            self.peak_rss_mib,
            self.total_s,
            self.total_cpu_s,
            self.duplicates,
            self.step_backs
        )
    }
}

/// Progress the reader publishes.
#[derive(Default)]
struct Progress {
    /// Output records read.
    total: AtomicU64,
    /// Distinct expected outputs read.
    distinct: AtomicU64,
    /// Records that are not an expected output.
    unexpected: AtomicU64,
    step_backs: AtomicU64,
    stop: AtomicBool,
}

/// Runs `command` until its output is complete (or `limit`), then stops it.
pub fn run(
    mut command: Command,
    spec: &RunSpec,
    partitions: i32,
    expected: &Expected,
    limit: Duration,
) -> Result<Measured> {
    let progress = Arc::new(Progress::default());
    let log = tempfile::NamedTempFile::new()?;
    let started = Instant::now();
    let child = command
        .stdin(Stdio::null())
        .stdout(log.reopen()?)
        .stderr(log.reopen()?)
        .spawn()
        .with_context(|| format!("start {command:?}"))?;
    let mut child = Guard(child);
    let pid = child.0.id();
    let result = std::thread::scope(|s| {
        let reader = s.spawn(|| read_output(spec, partitions, expected, &progress));
        let measured = watch(&mut child, pid, started, expected, &progress, limit);
        // A grace second: duplicates written right after completion show.
        if measured.is_ok() {
            std::thread::sleep(Duration::from_secs(1));
        }
        progress.stop.store(true, Ordering::Relaxed);
        let read = reader.join().expect("reader thread");
        measured.and_then(|m| read.map(|()| m))
    });
    child.stop();
    let mut m = result.map_err(|e| {
        let text = std::fs::read_to_string(log.path()).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        e.context(format!("its output ends:\n{}", tail.join("\n")))
    })?;
    let unexpected = progress.unexpected.load(Ordering::Relaxed);
    if unexpected > 0 {
        bail!("{unexpected} output records are not what the job should write");
    }
    m.duplicates = progress.total.load(Ordering::Relaxed) - expected.records;
    m.step_backs = progress.step_backs.load(Ordering::Relaxed);
    if spec.guarantee == Guarantee::ExactlyOnce && m.duplicates > 0 {
        bail!("exactly-once wrote {} records twice", m.duplicates);
    }
    Ok(m)
}

/// One reading of the run.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    cpu: f64,
    distinct: u64,
}

/// Samples the process until the output is complete. Steady state is the
/// span from 10 % to 90 % of the expected output: it leaves out start-up
/// and the first transaction or checkpoint (whose output a system may
/// release in one burst), and the tail.
fn watch(
    child: &mut Guard,
    pid: u32,
    started: Instant,
    expected: &Expected,
    progress: &Progress,
    limit: Duration,
) -> Result<Measured> {
    let (mut first, mut low, mut high) = (None, None, None);
    let n = expected.records;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        if let Some(status) = child.0.try_wait()? {
            bail!("exited with {status} before its output was complete");
        }
        let sample = || Sample {
            at: Instant::now(),
            cpu: tree_cpu_seconds(pid),
            distinct: progress.distinct.load(Ordering::Relaxed),
        };
        let distinct = progress.distinct.load(Ordering::Relaxed);
        if first.is_none() && progress.total.load(Ordering::Relaxed) > 0 {
            first = Some(sample());
        }
        if low.is_none() && distinct * 10 >= n {
            low = Some(sample());
        }
        if high.is_none() && distinct * 10 >= n * 9 {
            high = Some(sample());
        }
        if distinct >= n {
            let end = sample();
            let first = first.expect("output seen");
            let (a, b) = match (low, high) {
                (Some(l), Some(h)) if h.distinct > l.distinct && h.at > l.at => (l, h),
                _ => (first, end),
            };
            let records = (b.distinct - a.distinct).max(1) as f64;
            return Ok(Measured {
                startup_s: (first.at - started).as_secs_f64(),
                startup_cpu_s: first.cpu,
                records_per_s: records / (b.at - a.at).as_secs_f64().max(1e-3),
                cpu_per_million: (b.cpu - a.cpu) / records * 1e6,
                total_s: (end.at - started).as_secs_f64(),
                total_cpu_s: end.cpu,
                peak_rss_mib: tree_peak_rss_kib(pid) as f64 / 1024.0,
                duplicates: 0,
                step_backs: 0,
            });
        }
        if started.elapsed() > limit {
            bail!(
                "output incomplete after {limit:?}: {distinct} of {n} expected records, {} unexpected",
                progress.unexpected.load(Ordering::Relaxed)
            );
        }
    }
}

/// Reads the output topic until told to stop, checking each record.
fn read_output(
    spec: &RunSpec,
    partitions: i32,
    expected: &Expected,
    progress: &Progress,
) -> Result<()> {
    let isolation = match spec.guarantee {
        Guarantee::AtLeastOnce => "read_uncommitted",
        Guarantee::ExactlyOnce => "read_committed",
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &spec.bootstrap)
        .set("group.id", "weir-peers-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&spec.output, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut seen: HashSet<u64> = HashSet::new();
    let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
    while !progress.stop.load(Ordering::Relaxed) {
        let Some(m) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let m = m.context("read the output")?;
        let (key, value) = (m.key().unwrap_or_default(), m.payload().unwrap_or_default());
        progress.total.fetch_add(1, Ordering::Relaxed);
        let valid = match spec.job {
            Job::Identity => expected.pairs.contains(&pair_hash(key, value)),
            Job::Count => {
                let count = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
                match (count, expected.totals.get(key)) {
                    (Some(c), Some(&n)) if (1..=n).contains(&c) => {
                        let before = match last.get_mut(key) {
                            Some(v) => std::mem::replace(v, c),
                            None => {
                                last.insert(key.to_vec(), c);
                                0
                            }
                        };
                        if c != before + 1 {
                            progress
                                .step_backs
                                .fetch_add(u64::from(c <= before), Ordering::Relaxed);
                        }
                        true
                    }
                    _ => false,
                }
            }
        };
        if !valid {
            progress.unexpected.fetch_add(1, Ordering::Relaxed);
        } else if seen.insert(pair_hash(key, value)) {
            progress.distinct.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// A 64-bit hash of a (key, value) pair: the reader keeps hashes, not
/// copies, so that it stays cheap beside the system it measures (a
/// collision among a few million records is vanishingly unlikely).
fn pair_hash(key: &[u8], value: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    value.hash(&mut h);
    h.finish()
}

/// The child, stopped with SIGTERM (then SIGKILL after 5 s) when dropped.
struct Guard(Child);

impl Guard {
    fn stop(&mut self) {
        let pid = self.0.id() as libc::pid_t;
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// `pid` and its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = stat_fields(p).and_then(|f| f.get(1).and_then(|s| s.parse().ok())) {
            parents.push((p, ppid));
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// `/proc/pid/stat` after the command name: state, ppid, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    Some(after.split_whitespace().map(String::from).collect())
}

/// User + system CPU seconds of the process tree.
fn tree_cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf is always safe to call.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    tree(pid)
        .into_iter()
        .filter_map(stat_fields)
        // utime and stime are fields 14 and 15 of stat: 11 and 12 here.
        .map(|f| {
            let n = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
            (n(11) + n(12)) / ticks
        })
        .sum()
}

/// The sum of `VmHWM` (peak resident set) over the process tree, in KiB.
fn tree_peak_rss_kib(pid: u32) -> u64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// All results as one JSON document.
pub fn json(setup: &str, results: &[(crate::System, Job, Guarantee, Option<Measured>)]) -> String {
    let rows: Vec<String> = results
        .iter()
        .map(|(s, j, g, m)| {
            let figures = m.as_ref().map_or("null".to_string(), |m| {
                format!(
                    "{{\"startup_s\":{:.2},\"startup_cpu_s\":{:.2},\"records_per_s\":{:.0},\"cpu_per_million\":{:.3},\"total_s\":{:.2},\"total_cpu_s\":{:.2},\"peak_rss_mib\":{:.1},\"duplicates\":{},\"step_backs\":{}}}",
                    m.startup_s,
                    m.startup_cpu_s,
                    m.records_per_s,
                    m.cpu_per_million,
                    m.total_s,
                    m.total_cpu_s,
                    m.peak_rss_mib,
                    m.duplicates,
                    m.step_backs
                )
            });
            format!(
                "{{\"system\":\"{}\",\"job\":\"{}\",\"guarantee\":\"{}\",\"figures\":{figures}}}",
                s.name(),
                j.name(),
                g.name()
            )
        })
        .collect();
    format!("{{\"setup\":{setup},\"runs\":[{}]}}", rows.join(","))
}
