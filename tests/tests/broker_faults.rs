//! Broker faults injected with librdkafka's mock cluster while a real job
//! runs in this process: brokers down and up, produce errors, offset-commit
//! errors, transaction-coordinator errors, leader moves, added latency.
//!
//! Each test starts `MockCluster::new(3)`, writes keyed input, runs the
//! running-count plugin over it with checkpoints on (a bounded job), and a
//! separate thread injects the faults on a timer. The output is judged
//! against a model of the running counts.
//!
//! What the mock cluster can and cannot show (measured, see `mock_facts`):
//! it writes no transaction markers and does not filter aborted records
//! (a read_committed consumer reads everything, and the log-level
//! read_committed view sees every transactional record as still open), and
//! TxnOffsetCommit does not store offsets in the group. So:
//!
//! - at-least-once is judged on the whole sink topic: every count 1..n of
//!   every key is present (nothing lost), no count exceeds n (the state
//!   never counted a record twice), and duplicates are counted.
//! - exactly-once is judged by what the job committed: the job ends with
//!   every partition at its end offset with the state for that offset
//!   recorded by its last committed transaction; per key,
//!   the output read in log order (one idempotent transactional producer
//!   per input partition keeps it in order) is reduced to the one history
//!   that never steps back, dropping what a restart replaced (records of
//!   aborted transactions, visible only because the mock writes no
//!   markers); that history must be exactly 1..n, and output may go back
//!   only in partitions whose task rolled back (log evidence). This proves
//!   that state and offsets stayed together through every rollback (a
//!   record counted twice or skipped in state shows as a wrong count); it
//!   cannot tell a committed duplicate from an aborted record (that needs
//!   markers: the crash tests on Apache Kafka judge it).
//!
//! Retriable faults must not restart a task (and, under exactly-once,
//! must not abort a transaction); abortable and fatal ones must restart
//! it. Figures and the host's log lines are printed (`--nocapture`).

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir::config::DeliveryGuarantee;
use weir_e2e::{Input, keyed_input, repo_root};

const PARTITIONS: i32 = 4;

/// The pace of a run. On the mock cluster the job would read 40,000
/// records in about 0.15 s, too fast for a fault to land mid-run, so the
/// input is written in small batches, the job fetches one batch per
/// partition per request (`max.partition.fetch.bytes = 1`), and every
/// broker answers after [`BASE_RTT`]: about 2 s of processing.
const INPUT_BATCH: &str = "50";
const BASE_RTT: Duration = Duration::from_millis(10);
/// A job that runs longer than this is reported as hung.
const HANG_GUARD_S: u64 = 60;

/// One test at a time: each keeps both cores busy, the log capture is
/// process-wide, and fault timing is about the job's progress.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------- logs

/// Every log line of the running test (the subscriber is process-wide;
/// tests are serialised).
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| {
            // librdkafka logs at debug only for the `debug` contexts a
            // test turns on.
            tracing_subscriber::EnvFilter::new("info,librdkafka=debug,rdkafka=warn")
        });
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
    LOG.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// The log lines captured since [`init_logging`].
fn log_lines() -> Vec<String> {
    String::from_utf8_lossy(&LOG.lock().unwrap_or_else(|p| p.into_inner()))
        .lines()
        .map(str::to_string)
        .collect()
}

/// Lines containing `needle`.
fn log_count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

/// Prints the lines that show what the host and librdkafka did about the
/// faults (shown with `--nocapture`, or when a test fails). Connection
/// noise from a broker that is down is counted, not printed.
fn print_evidence(lines: &[String]) {
    if std::env::var_os("FAULTS_FULL_LOG").is_some() {
        for l in lines {
            eprintln!("    | {l}");
        }
        return;
    }
    const NOISE: [&str; 4] = [
        "Connection refused",
        "consumer error",
        "Disconnected",
        "identical error(s) suppressed",
    ];
    const KEYS: [&str; 12] = [
        "WARN",
        "ERROR",
        "restart",
        "abort",
        "retr",
        "fenced",
        "fatal",
        "failed",
        "job finished",
        "checkpoint failed",
        "TXNERR",
        "committed after",
    ];
    let noise = lines
        .iter()
        .filter(|l| NOISE.iter().any(|n| l.contains(n)))
        .count();
    let mut shown = 0;
    for l in lines {
        if NOISE.iter().any(|n| l.contains(n)) || !KEYS.iter().any(|k| l.contains(k)) {
            continue;
        }
        if shown < 40 {
            eprintln!("    | {}", l.get(..400).unwrap_or(l));
        }
        shown += 1;
    }
    if shown > 40 {
        eprintln!("    | ... {} more", shown - 40);
    }
    if noise > 0 {
        eprintln!("    | (+ {noise} connection-refused / disconnected / consumer-error lines)");
    }
}

// ------------------------------------------------------------- cluster

/// librdkafka's mock cluster, shared with the fault thread.
struct Cluster(MockCluster<'static, DefaultProducerContext>);

// SAFETY: as for `weir::kafka::embedded::EmbeddedCluster`: the mock API is
// thread-safe (every `rd_kafka_mock_*` call either takes the cluster lock
// or posts an op to the cluster's own thread), and the handle is dropped
// once, by its owner, after the fault thread has been joined.
unsafe impl Send for Cluster {}
unsafe impl Sync for Cluster {}

impl Cluster {
    fn start() -> Arc<Cluster> {
        Arc::new(Cluster(MockCluster::new(3).expect("mock cluster")))
    }

    fn bootstrap(&self) -> String {
        self.0.bootstrap_servers()
    }

    fn create_topic(&self, topic: &str, partitions: i32) {
        self.0
            .create_topic(topic, partitions, 3)
            .unwrap_or_else(|e| panic!("create {topic}: {e}"));
    }

    fn produce(&self, topic: &str, input: &[Input]) {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("linger.ms", "5")
            .set("batch.num.messages", INPUT_BATCH)
            .create()
            .unwrap();
        for r in input {
            let mut rec = BaseRecord::<[u8], [u8]>::to(topic)
                .partition(r.partition)
                .key(r.key.as_bytes())
                .payload(r.value.as_bytes());
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        rec = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    }

    /// Puts the cluster back to normal: brokers up, no latency, no queued
    /// request errors.
    fn heal(&self) {
        for b in 1..=3 {
            let _ = self.0.broker_up(b);
            let _ = self.0.broker_round_trip_time(b, Duration::ZERO);
        }
        for key in ALL_KEYS {
            self.0.clear_request_errors(key);
        }
    }
}

const ALL_KEYS: [RDKafkaApiKey; 9] = [
    RDKafkaApiKey::Produce,
    RDKafkaApiKey::Fetch,
    RDKafkaApiKey::OffsetCommit,
    RDKafkaApiKey::InitProducerId,
    RDKafkaApiKey::AddPartitionsToTxn,
    RDKafkaApiKey::AddOffsetsToTxn,
    RDKafkaApiKey::TxnOffsetCommit,
    RDKafkaApiKey::EndTxn,
    RDKafkaApiKey::FindCoordinator,
];

// -------------------------------------------------------------- faults

/// One fault.
#[derive(Debug, Clone)]
enum Fault {
    Down(i32),
    Up(i32),
    Latency(i32, Duration),
    Leader(String, i32, i32),
    Errors(RDKafkaApiKey, Vec<RDKafkaRespErr>),
}

impl Fault {
    fn apply(&self, c: &Cluster) {
        let r = match self {
            Fault::Down(b) => c.0.broker_down(*b),
            Fault::Up(b) => c.0.broker_up(*b),
            Fault::Latency(b, d) => c.0.broker_round_trip_time(*b, *d),
            Fault::Leader(t, p, b) => c.0.partition_leader(t, *p, Some(*b)),
            Fault::Errors(k, errs) => {
                c.0.request_errors(*k, errs);
                Ok(())
            }
        };
        r.unwrap_or_else(|e| panic!("inject {self:?}: {e}"));
    }

    fn describe(&self) -> String {
        match self {
            Fault::Errors(k, errs) => {
                let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
                for e in errs {
                    *kinds.entry(format!("{e:?}")).or_default() += 1;
                }
                let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}x{n}")).collect();
                format!("{k:?} errors [{}]", list.join(", "))
            }
            other => format!("{other:?}"),
        }
    }
}

/// Faults at times after the job has written its first output.
type Schedule = Vec<(Duration, Fault)>;

/// Output records the sink must hold before the schedule's clock starts:
/// the job is then past its start-up and in the middle of its run.
const GATE: i64 = 500;

/// The fault thread: waits until the job has written [`GATE`] outputs,
/// then applies the schedule until it is done or the job ended, and
/// reports what it injected and when (after the gate).
fn inject(
    cluster: Arc<Cluster>,
    sink: String,
    schedule: Schedule,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Duration, String)>> {
    std::thread::Builder::new()
        .name("fault-injector".into())
        .spawn(move || {
            let watcher: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", cluster.bootstrap())
                .create()
                .unwrap();
            let mut injected = Vec::new();
            loop {
                if done.load(Ordering::Relaxed) {
                    return injected;
                }
                let written: i64 = (0..PARTITIONS)
                    .map(|p| {
                        watcher
                            .fetch_watermarks(&sink, p, Duration::from_secs(1))
                            .map_or(0, |w| w.1)
                    })
                    .sum();
                if written >= GATE {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let start = Instant::now();
            for (at, fault) in schedule {
                while start.elapsed() < at {
                    if done.load(Ordering::Relaxed) {
                        return injected;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                fault.apply(&cluster);
                injected.push((start.elapsed(), fault.describe()));
            }
            injected
        })
        .unwrap()
}

// ----------------------------------------------------------------- job

/// A job over the mock cluster.
struct Job {
    cluster: Arc<Cluster>,
    input: Vec<Input>,
    src: String,
    dst: String,
    semantics: DeliveryGuarantee,
    dir: tempfile::TempDir,
    /// Appended to the `[kafka]` tables (e.g. `[kafka.producer_options]`).
    extra: String,
    restart_attempts: u32,
}

impl Job {
    /// Topics (source and sink) with 4 partitions and replication 3, and `records` keyed input records.
    fn new(semantics: DeliveryGuarantee, records: usize, keys: usize) -> Job {
        let cluster = Cluster::start();
        let (src, dst) = ("in".to_string(), "out".to_string());
        cluster.create_topic(&src, PARTITIONS);
        cluster.create_topic(&dst, PARTITIONS);
        let input = keyed_input(records, keys, PARTITIONS);
        cluster.produce(&src, &input);
        Job {
            cluster,
            input,
            src,
            dst,
            semantics,
            dir: tempfile::tempdir().unwrap(),
            extra: String::new(),
            restart_attempts: 6,
        }
    }

    fn config_text(&self) -> String {
        let semantics = match self.semantics {
            DeliveryGuarantee::None => "none",
            DeliveryGuarantee::AtLeastOnce => "at-least-once",
            DeliveryGuarantee::ExactlyOnce => "exactly-once",
        };
        format!(
            r#"[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "faults"
connect_timeout = "20s"
[kafka.consumer_options]
"auto.offset.reset" = "earliest"
"max.partition.fetch.bytes" = "1"
{extra}
[source]
topics = ["{src}"]
bounded = true

[sink]
topics = ["{dst}"]
semantics = "{semantics}"

[pipeline]
plugins_dir = "{plugins}"
plugin = "running_count.wasm"
parallelism = 2
batch_size = 256
restart_attempts = {restart_attempts}
restart_backoff = "100ms"

[checkpoint]
enabled = true
interval = "300ms"
directory = "{ck}"
retain = 3

[status]
interval = "0s"
"#,
            bootstrap = self.cluster.bootstrap(),
            extra = self.extra,
            restart_attempts = self.restart_attempts,
            src = self.src,
            dst = self.dst,
            plugins = repo_root().join("plugins").display(),
            ck = self.dir.path().join("ck").display(),
        )
    }

    /// Runs the job to its end while `schedule` is injected; heals the
    /// cluster afterwards.
    fn run(&self, before: &[Fault], schedule: Schedule) -> Run {
        init_logging();
        let config = weir::Config::parse(&self.config_text(), &repo_root()).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        for b in 1..=3 {
            self.cluster.0.broker_round_trip_time(b, BASE_RTT).unwrap();
        }
        for f in before {
            f.apply(&self.cluster);
            eprintln!("    before start: {}", f.describe());
        }
        let injector = inject(
            self.cluster.clone(),
            self.dst.clone(),
            schedule.clone(),
            done.clone(),
        );
        let started = Instant::now();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let result = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(HANG_GUARD_S),
                weir::run(config, std::future::pending()),
            )
            .await
        });
        let elapsed = started.elapsed();
        // Where a hung job stands, before anything is healed or dropped.
        let stacks = if result.is_err() {
            weir_e2e::thread_stacks(std::process::id())
        } else {
            String::new()
        };
        done.store(true, Ordering::Relaxed);
        let injected = injector.join().unwrap();
        self.cluster.heal();
        drop(rt);
        let lines = log_lines();
        let result = match result {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "job did not finish within {HANG_GUARD_S} s (hang guard){stacks}"
            )),
        };
        eprintln!(
            "  job: {} in {:.2}s; faults injected {}/{}:",
            match &result {
                Ok(_) => "finished".to_string(),
                Err(e) => format!("FAILED: {e}"),
            },
            elapsed.as_secs_f64(),
            injected.len(),
            schedule.len()
        );
        for (at, f) in &injected {
            eprintln!("    {:>6.2}s  {f}", at.as_secs_f64());
        }
        Run {
            result,
            elapsed,
            injected: injected.len(),
            scheduled: schedule.len(),
            lines,
        }
    }

    /// The model: each key's number of input records.
    fn model(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for r in &self.input {
            *m.entry(r.key.clone()).or_default() += 1;
        }
        m
    }

    /// Input end offset per partition.
    fn ends(&self) -> Vec<i64> {
        (0..PARTITIONS)
            .map(|p| self.input.iter().filter(|r| r.partition == p).count() as i64)
            .collect()
    }

    /// Every record of `topic`, per partition in offset order, as
    /// (key, value); read with `isolation` (`read_uncommitted` or
    /// `read_committed`).
    fn read(&self, topic: &str, partitions: i32, isolation: &str) -> Vec<Vec<(String, String)>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.cluster.bootstrap())
            .set("group.id", "faults-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        let mut highs = Vec::new();
        for p in 0..partitions {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            highs.push(high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = vec![Vec::new(); partitions as usize];
        let mut at: Vec<i64> = vec![0; partitions as usize];
        let deadline = Instant::now() + Duration::from_secs(60);
        while (0..partitions as usize).any(|p| at[p] < highs[p]) {
            assert!(Instant::now() < deadline, "reading {topic} timed out");
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let p = m.partition() as usize;
                    at[p] = m.offset() + 1;
                    out[p].push((
                        String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                        String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    ));
                }
                Some(Err(e)) => panic!("read {topic}: {e}"),
                None => {}
            }
        }
        out
    }
}

/// How a run went.
struct Run {
    result: Result<weir::JobSummary, String>,
    elapsed: Duration,
    injected: usize,
    scheduled: usize,
    lines: Vec<String>,
}

impl Run {
    fn summary(&self) -> &weir::JobSummary {
        match &self.result {
            Ok(s) => s,
            Err(e) => {
                print_evidence(&self.lines);
                if e.contains("hang guard") {
                    // Where it stalled: the newest lines, noise left out.
                    let quiet: Vec<&String> = self
                        .lines
                        .iter()
                        .filter(|l| {
                            !l.contains("Connection refused") && !l.contains("Disconnected")
                        })
                        .collect();
                    eprintln!("    last lines before the hang guard:");
                    for l in &quiet[quiet.len().saturating_sub(40)..] {
                        eprintln!("    | {l}");
                    }
                }
                panic!("the job failed: {e}");
            }
        }
    }

    fn restarts(&self) -> usize {
        log_count(&self.lines, "partition task restarted")
    }

    /// Transactional calls the host gave up on because librdkafka did not
    /// return after their timeout.
    fn stuck_calls(&self) -> usize {
        log_count(&self.lines, "transactional call stuck in librdkafka")
    }
}

// ----------------------------------------------------------- judgement

/// Output counts per key, in log order.
fn counts_by_key(parts: &[Vec<(String, String)>]) -> BTreeMap<String, Vec<u64>> {
    let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for part in parts {
        for (k, v) in part {
            m.entry(k.clone())
                .or_default()
                .push(v.parse().unwrap_or_else(|_| panic!("count {v:?}")));
        }
    }
    m
}

/// The at-least-once verdict.
#[derive(Debug, Default)]
struct AloVerdict {
    outputs: usize,
    lost: usize,
    over: usize,
    duplicates: usize,
    step_backs: usize,
}

fn judge_at_least_once(job: &Job) -> AloVerdict {
    let out = counts_by_key(&job.read(&job.dst, PARTITIONS, "read_uncommitted"));
    let model = job.model();
    let mut v = AloVerdict::default();
    for (key, &n) in &model {
        let seen = out.get(key).cloned().unwrap_or_default();
        v.outputs += seen.len();
        let mut present = vec![0u32; n as usize + 1];
        for w in seen.windows(2) {
            if w[1] <= w[0] {
                v.step_backs += 1;
            }
        }
        for &c in &seen {
            if c == 0 || c > n {
                v.over += 1;
            } else {
                present[c as usize] += 1;
            }
        }
        v.lost += (1..=n as usize).filter(|&c| present[c] == 0).count();
        v.duplicates += (1..=n as usize)
            .map(|c| present[c].saturating_sub(1) as usize)
            .sum::<usize>();
    }
    assert_eq!(out.len(), model.len(), "keys in the output");
    v
}

/// The exactly-once verdict.
#[derive(Debug, Default)]
struct EosVerdict {
    outputs: usize,
    /// Records the one never-stepping-back history replaced (records of
    /// aborted transactions; the mock shows them).
    replaced: usize,
    /// Keys whose history is not exactly 1..n.
    bad_keys: usize,
    /// Records replaced in partitions whose task never restarted: output
    /// that went back without a rollback (a duplicate, not an abort).
    unexplained: usize,
}

/// Input partitions whose task restarted, from the host's log.
fn restarted_partitions(lines: &[String]) -> std::collections::BTreeSet<i32> {
    lines
        .iter()
        .filter(|l| l.contains("partition task restarted"))
        .filter_map(|l| {
            let at = l.find("partition=")? + "partition=".len();
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

fn judge_exactly_once(job: &Job, run: &Run) -> EosVerdict {
    let summary = run.summary();
    let restarted = restarted_partitions(&run.lines);
    let partition_of: HashMap<&str, i32> = job
        .input
        .iter()
        .map(|r| (r.key.as_str(), r.partition))
        .collect();
    // Every partition ended at its end offset, and the state its last
    // committed transaction recorded is the state for that offset. (The
    // mock cluster accepts transactional offset commits but does not
    // store them, so the group's committed offsets cannot say it here;
    // the crash tests on Apache Kafka read them.)
    let ends = job.ends();
    for (tp, o) in &summary.positions {
        assert_eq!(*o, ends[tp.partition as usize], "{tp} final position");
    }
    for p in 0..PARTITIONS {
        let dir = weir::checkpoint::transactional::PartitionStateDir::open(
            &weir::checkpoint::folder::StoreLocation::Local(job.dir.path().join("ck")),
            &job.src,
            p,
        )
        .unwrap();
        assert_eq!(
            dir.offsets().unwrap().last().copied(),
            Some(ends[p as usize]),
            "{}/{p}: the last committed state",
            job.src
        );
    }

    let out = counts_by_key(&job.read(&job.dst, PARTITIONS, "read_uncommitted"));
    let model = job.model();
    let mut v = EosVerdict::default();
    for (key, &n) in &model {
        let seen = out.get(key).cloned().unwrap_or_default();
        v.outputs += seen.len();
        let mut history: Vec<u64> = Vec::with_capacity(n as usize);
        let mut replaced = 0;
        for &c in &seen {
            while history.last().is_some_and(|&l| l >= c) {
                history.pop();
                replaced += 1;
            }
            history.push(c);
        }
        v.replaced += replaced;
        if !restarted.contains(&partition_of[key.as_str()]) {
            v.unexplained += replaced;
        }
        let want: Vec<u64> = (1..=n).collect();
        if history != want {
            v.bad_keys += 1;
            eprintln!(
                "  key {key}: history of {} counts, want 1..{n}; last {:?}",
                history.len(),
                history.last()
            );
        }
    }
    v
}

// --------------------------------------------------------------- tests

use DeliveryGuarantee::{AtLeastOnce, ExactlyOnce};
use Fault::*;
use RDKafkaApiKey as Api;
use RDKafkaRespErr::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What the host did, from its log.
fn host_actions(run: &Run) -> String {
    let l = &run.lines;
    format!(
        "restarts {}, task failures {}, transactions aborted by the host {}, producers replaced {}, commit retries by the host {}, transactional-call retries by the host {}",
        run.restarts(),
        log_count(l, "partition task failed"),
        log_count(l, "aborting the transaction"),
        log_count(l, "replacing the transactional producer"),
        log_count(l, "offset commit failed with a retriable error"),
        log_count(l, "failed with a retriable error; retrying")
            - log_count(l, "offset commit failed"),
    )
}

fn print_faults(run: &Run) {
    if run.injected < run.scheduled {
        eprintln!(
            "  NOTE: only {}/{} faults landed before the job ended",
            run.injected, run.scheduled
        );
    }
}

/// Prints the at-least-once figures and asserts nothing was lost and the
/// state never counted a record twice.
fn check_at_least_once(name: &str, job: &Job, run: &Run) -> AloVerdict {
    let summary = run.summary();
    let v = judge_at_least_once(job);
    eprintln!(
        "  {name} (at-least-once): {} input records, {} outputs read, lost {}, counts above the model {}, duplicates {}, steps back in log order (replays, or reordering by producer retries) {}; checkpoints {}, records processed {}; {}; elapsed {:.2}s",
        job.input.len(),
        v.outputs,
        v.lost,
        v.over,
        v.duplicates,
        v.step_backs,
        summary.checkpoints,
        summary.records_in,
        host_actions(run),
        run.elapsed.as_secs_f64()
    );
    print_faults(run);
    print_evidence(&run.lines);
    assert_eq!(v.lost, 0, "lost outputs");
    assert_eq!(
        v.over, 0,
        "counts above the model (state counted a record twice)"
    );
    v
}

/// Prints the exactly-once figures and asserts the committed history.
fn check_exactly_once(name: &str, job: &Job, run: &Run) -> EosVerdict {
    let summary = run.summary();
    let v = judge_exactly_once(job, run);
    eprintln!(
        "  {name} (exactly-once): {} input records, {} outputs read, replaced by a restart (aborted, visible on the mock) {}, replaced without a restart {}, keys with a wrong history {}; checkpoints committed by every worker {}, records processed {}; {}; elapsed {:.2}s",
        job.input.len(),
        v.outputs,
        v.replaced,
        v.unexplained,
        v.bad_keys,
        summary.checkpoints,
        summary.records_in,
        host_actions(run),
        run.elapsed.as_secs_f64()
    );
    print_faults(run);
    print_evidence(&run.lines);
    assert_eq!(v.bad_keys, 0, "keys whose committed history is not 1..n");
    assert_eq!(
        v.unexplained, 0,
        "output went back in a partition whose task never rolled back"
    );
    v
}

#[test]
fn baseline_without_faults() {
    let _serial = serial();
    for semantics in [AtLeastOnce, ExactlyOnce] {
        let job = Job::new(semantics, 30_000, 64);
        let run = job.run(&[], Vec::new());
        if semantics == ExactlyOnce {
            assert_eq!(check_exactly_once("baseline", &job, &run).replaced, 0);
        } else {
            assert_eq!(check_at_least_once("baseline", &job, &run).duplicates, 0);
        }
        assert_eq!(run.restarts(), 0);
    }
}

/// Brokers down and up, leaders moving and added latency are retriable
/// conditions: librdkafka waits and retries, no task restarts.
fn broker_down_leader_moves_and_latency(semantics: DeliveryGuarantee) {
    let job = Job::new(semantics, 40_000, 64);
    let schedule = vec![
        (ms(0), Latency(2, ms(40))),
        (ms(100), Leader("in".into(), 0, 2)),
        (ms(100), Leader("out".into(), 1, 3)),
        (ms(200), Down(1)),
        (ms(1700), Up(1)),
        (ms(1800), Leader("in".into(), 2, 1)),
        (ms(1800), Leader("out".into(), 3, 1)),
        (ms(1900), Down(3)),
        (ms(2900), Up(3)),
        (ms(3000), Latency(2, ms(0))),
    ];
    let run = job.run(&[], schedule);
    let name = "broker down/up, leader moves, latency";
    if semantics == ExactlyOnce {
        let v = check_exactly_once(name, &job, &run);
        // librdkafka's send_offsets_to_transaction sometimes never returns
        // after the group coordinator was down (librdkafka #5456, #5511);
        // the host then replaces the producer, which aborts the
        // transaction and restarts the worker's tasks. The output must
        // still be exactly the model's.
        if run.stuck_calls() > 0 {
            eprintln!(
                "  librdkafka's send_offsets_to_transaction hung {} time(s); producer replaced, {} transaction(s) aborted, {} restart(s)",
                run.stuck_calls(),
                v.replaced,
                run.restarts()
            );
            return;
        }
        assert_eq!(v.replaced, 0, "no transaction may be aborted");
    } else {
        check_at_least_once(name, &job, &run);
    }
    assert_eq!(run.restarts(), 0, "retriable faults must not restart tasks");
}

#[test]
fn at_least_once_survives_broker_down_leader_moves_and_latency() {
    let _serial = serial();
    broker_down_leader_moves_and_latency(AtLeastOnce);
}

#[test]
fn exactly_once_survives_broker_down_leader_moves_and_latency() {
    let _serial = serial();
    broker_down_leader_moves_and_latency(ExactlyOnce);
}

#[test]
fn at_least_once_retries_retriable_produce_errors() {
    let _serial = serial();
    let job = Job::new(AtLeastOnce, 40_000, 64);
    let retriable = [
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR__TRANSPORT,
    ];
    let schedule = vec![
        (ms(0), Errors(Api::Produce, retriable.repeat(3))),
        (ms(600), Errors(Api::Produce, retriable.repeat(3))),
    ];
    let run = job.run(&[], schedule);
    check_at_least_once("retriable produce errors", &job, &run);
    assert_eq!(run.restarts(), 0, "retriable errors must not restart tasks");
}

/// A produce error librdkafka does not retry (TOPIC_AUTHORIZATION_FAILED)
/// fails the deliveries of one request. Nothing may be lost: the
/// checkpoint in flight must not complete, and the job must go on from
/// the last completed one.
#[test]
fn at_least_once_permanent_produce_error_restarts_from_checkpoint() {
    let _serial = serial();
    let job = Job::new(AtLeastOnce, 40_000, 64);
    let schedule = vec![(
        ms(300),
        Errors(
            Api::Produce,
            vec![RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
        ),
    )];
    let run = job.run(&[], schedule);
    check_at_least_once("permanent produce error", &job, &run);
    assert!(
        run.restarts() >= 1,
        "the failed output must be produced again"
    );
}

/// Offset commits happen after a checkpoint is complete. librdkafka
/// retries most coordinator errors itself and hands some back
/// (COORDINATOR_LOAD_IN_PROGRESS); the host retries those.
#[test]
fn at_least_once_retries_offset_commit_errors() {
    let _serial = serial();
    let mut job = Job::new(AtLeastOnce, 40_000, 64);
    job.extra = "\"debug\" = \"cgrp\"\n".into();
    let retriable = vec![
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
    ];
    let schedule = vec![
        (ms(0), Errors(Api::OffsetCommit, retriable.clone())),
        (ms(700), Errors(Api::OffsetCommit, retriable)),
    ];
    let run = job.run(&[], schedule);
    check_at_least_once("offset-commit errors", &job, &run);
    eprintln!(
        "  OffsetCommit requests that failed and were retried inside librdkafka (its cgrp debug log): {}; errors handed back to the host and retried by it: {}",
        log_count(
            &run.lines,
            "querying for coordinator: OffsetCommitRequest failed"
        ),
        log_count(&run.lines, "offset commit failed with a retriable error"),
    );
    assert_eq!(run.restarts(), 0, "commit errors must not restart tasks");
}

/// Coordinator errors on every transactional request: retriable, so
/// librdkafka (or the host, for what librdkafka hands back) retries them;
/// no transaction is aborted and no task restarts.
#[test]
fn exactly_once_retries_retriable_coordinator_errors() {
    let _serial = serial();
    let mut job = Job::new(ExactlyOnce, 40_000, 64);
    job.extra = "[kafka.producer_options]\n\"debug\" = \"eos\"\n".into();
    let coord = vec![
        RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
    ];
    let before = [Errors(Api::InitProducerId, coord.clone())];
    let schedule = vec![
        (ms(0), Errors(Api::EndTxn, coord.clone())),
        (ms(300), Errors(Api::AddPartitionsToTxn, coord.clone())),
        (ms(600), Errors(Api::AddOffsetsToTxn, coord.clone())),
        (ms(600), Errors(Api::TxnOffsetCommit, coord.clone())),
        (ms(900), Errors(Api::EndTxn, coord.repeat(2))),
        (
            ms(1200),
            Errors(
                Api::Produce,
                vec![
                    RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                    RD_KAFKA_RESP_ERR__TRANSPORT,
                ],
            ),
        ),
    ];
    let run = job.run(&before, schedule);
    let v = check_exactly_once("retriable coordinator errors", &job, &run);
    // librdkafka's `eos` debug lines for the error answers it retried.
    let count = |needles: &[&str]| {
        run.lines
            .iter()
            .filter(|l| l.contains("librdkafka") && needles.iter().all(|n| l.contains(n)))
            .count()
    };
    eprintln!(
        "  retried inside librdkafka (its eos debug log): InitProducerId {}, AddPartitionsToTxn {}, AddOffsetsToTxn {}, EndTxn {}; TxnOffsetCommit retries are not logged (500 ms each)",
        count(&["Failed to acquire transactional PID", "retrying"]),
        count(&["AddPartitionsToTxn response: partition", "Broker:"]),
        count(&["Failed to add offsets to transaction", "retriable"]),
        run.lines
            .iter()
            .filter(|l| l.contains("EndTxn returned") && !l.contains("NO_ERROR"))
            .count(),
    );
    assert_eq!(run.restarts(), 0, "retriable errors must not restart tasks");
    assert_eq!(v.replaced, 0, "no transaction may be aborted");
}

/// Abortable errors: a produce error librdkafka does not retry inside a
/// transaction, and EndTxn answering UNKNOWN_PRODUCER_ID. The host aborts
/// the transaction and the task restarts from its last committed offset
/// with the state recorded for it.
#[test]
fn exactly_once_abortable_errors_roll_back() {
    let _serial = serial();
    let job = Job::new(ExactlyOnce, 40_000, 64);
    let schedule = vec![
        (
            ms(200),
            Errors(
                Api::Produce,
                vec![RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
            ),
        ),
        (
            ms(1000),
            Errors(Api::EndTxn, vec![RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID]),
        ),
    ];
    let run = job.run(&[], schedule);
    check_exactly_once("abortable errors", &job, &run);
    mock_facts(&job);
    assert!(run.restarts() >= 1, "an abortable error rolls back");
}

/// A fatal producer error (TRANSACTIONAL_ID_AUTHORIZATION_FAILED on
/// EndTxn): the producer is unusable; the task restarts with a new
/// producer (same transactional id) from its last committed offset.
#[test]
fn exactly_once_fatal_error_restarts_the_task_with_a_new_producer() {
    let _serial = serial();
    let job = Job::new(ExactlyOnce, 40_000, 64);
    let schedule = vec![(
        ms(300),
        Errors(
            Api::EndTxn,
            vec![RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED],
        ),
    )];
    let run = job.run(&[], schedule);
    check_exactly_once("fatal error", &job, &run);
    assert!(run.restarts() >= 1, "a fatal error restarts the task");
    assert!(log_count(&run.lines, "replacing the transactional producer") >= 1);
}

/// Fencing (INVALID_PRODUCER_EPOCH, which librdkafka reports as
/// PRODUCER_FENCED) means a newer producer owns the transactional id: this
/// task is a zombie. It must not replace its producer (that would fence
/// the live one); the job stops and says so, having committed nothing
/// after the fence.
#[test]
fn exactly_once_fenced_producer_stops_the_job() {
    let _serial = serial();
    let mut job = Job::new(ExactlyOnce, 40_000, 64);
    job.restart_attempts = 2;
    let schedule = vec![(
        ms(300),
        Errors(Api::EndTxn, vec![RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH]),
    )];
    let run = job.run(&[], schedule);
    print_evidence(&run.lines);
    let err = run.result.as_ref().expect_err("a fenced job must fail");
    eprintln!(
        "  fenced: the job failed as it must: {err}; {}",
        host_actions(&run)
    );
    assert!(err.contains("fenced"), "{err}");
    assert_eq!(
        log_count(&run.lines, "replacing the transactional producer"),
        0,
        "a fenced producer must not be replaced"
    );
}

/// What librdkafka's mock cluster does with transactions, measured on the
/// output of a run with aborted transactions: a read_committed consumer
/// reads exactly what a read_uncommitted one reads, and the log holds no
/// control batch, so Weir's log-level view sees every transactional
/// record as belonging to a still-open transaction.
fn mock_facts(job: &Job) {
    let raw: usize = job
        .read(&job.dst, PARTITIONS, "read_uncommitted")
        .iter()
        .map(Vec::len)
        .sum();
    let committed: usize = job
        .read(&job.dst, PARTITIONS, "read_committed")
        .iter()
        .map(Vec::len)
        .sum();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", job.cluster.bootstrap())
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(&job.dst), Duration::from_secs(10))
        .unwrap();
    let brokers: HashMap<i32, String> = md
        .brokers()
        .iter()
        .map(|b| (b.id(), format!("{}:{}", b.host(), b.port())))
        .collect();
    let (mut visible, mut open, mut markers) = (0, 0, 0);
    for p in md.topics()[0].partitions() {
        let log =
            weir_e2e::log_view::read_partition(&brokers[&p.leader()], &job.dst, p.id()).unwrap();
        visible += log.visible.len();
        open += log.open;
        markers += log.markers;
    }
    eprintln!(
        "  mock cluster: read_uncommitted {raw} records, read_committed {committed}; log view: {visible} visible, {open} in open transactions, {markers} markers"
    );
    assert_eq!(raw, committed, "the mock filters nothing");
    assert_eq!(markers, 0, "the mock writes no markers");
}
