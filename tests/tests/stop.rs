//! A clean stop through the real binary: SIGTERM mid-stream, then a
//! restart to the end of the input. The input comes in two parts: the
//! first before the job starts, the rest only after the stop, so the
//! signal always comes before the end of the input, however fast the
//! first run goes.
//!
//! - at-least-once: the stop takes a final checkpoint and commits, so the
//!   restart replays nothing: every running count of every key appears
//!   exactly once in the output (no other checkpoint runs: the interval
//!   is an hour).
//! - exactly-once: the stop commits the open transactions, so right after
//!   it no transaction is open in the output's log, and the read_committed
//!   output after the restart holds every count exactly once.

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};
use weir_e2e::{Broker, Output, keyed_input, repo_root, topic, wait_for};

const PARTITIONS: i32 = 4;
const RECORDS: usize = 80_000;
/// Records written before the first run; the rest come after its stop.
const BEFORE_STOP: usize = 60_000;

/// One test at a time: each keeps both cores busy.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Job {
    dir: tempfile::TempDir,
    src: String,
    dst: String,
}

impl Job {
    fn new(broker: &Broker) -> Job {
        let (src, dst) = (topic("stop-in"), topic("stop-out"));
        broker.create_topic(&src, PARTITIONS).unwrap();
        broker.create_topic(&dst, PARTITIONS).unwrap();
        broker
            .produce(&src, &keyed_input(RECORDS, 64, PARTITIONS)[..BEFORE_STOP])
            .unwrap();
        Job {
            dir: tempfile::tempdir().unwrap(),
            src,
            dst,
        }
    }

    /// Writes the config and starts `weir run` on it.
    fn spawn(&self, broker: &Broker, semantics: &str, bounded: bool) -> Child {
        // One record per plugin call keeps the first run mid-stream when
        // the signal comes. Exactly-once output reaches the log with its
        // commits, so those come often enough to see the job is running.
        let interval = match semantics {
            "exactly-once" => "300ms",
            _ => "1h",
        };
        let text = format!(
            r#"[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{dst}-group"
[kafka.consumer_options]
"auto.offset.reset" = "earliest"
[source]
topics = ["{src}"]
bounded = {bounded}
[sink]
topics = ["{dst}"]
semantics = "{semantics}"
transactional_id_prefix = "{dst}"
[pipeline]
plugins_dir = "{plugins}"
plugin = "running_count.wasm"
parallelism = 2
batch_size = 1
stop_timeout = "8s"
[checkpoint]
enabled = true
interval = "{interval}"
directory = "ck"
[status]
interval = "0s"
"#,
            bootstrap = broker.bootstrap(),
            src = self.src,
            dst = self.dst,
            plugins = repo_root().join("plugins").display(),
        );
        let config = self.dir.path().join("job.toml");
        std::fs::write(&config, text).unwrap();
        weir_e2e::spawn_weir(&config, self.dir.path(), "info")
    }

    fn log(&self) -> String {
        weir_e2e::weir_log(self.dir.path())
    }

    /// Runs unbounded until some output exists, sends SIGTERM, and waits
    /// for a clean exit. Returns the output records written by then.
    fn run_and_stop(&self, broker: &Broker, semantics: &str) -> i64 {
        let mut child = self.spawn(broker, semantics, false);
        let started = Instant::now();
        while written(broker, &self.dst) < 500 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no output after 60 s:\n{}",
                self.log()
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "weir ended early:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let signalled = Instant::now();
        let status = wait_for(&mut child, Duration::from_secs(30)).unwrap();
        let log = self.log();
        assert!(
            status.success(),
            "the stop was not clean ({status}):\n{log}"
        );
        assert!(log.contains("SIGTERM: stopping"), "no stop logged:\n{log}");
        let written = written(broker, &self.dst);
        println!(
            "{semantics}: stopped {:.1} s after SIGTERM with {written} output records \
             ({BEFORE_STOP} input records there)",
            signalled.elapsed().as_secs_f64()
        );
        written
    }

    /// Writes the rest of the input and runs to its end.
    fn finish(&self, broker: &Broker, semantics: &str) {
        broker
            .produce(
                &self.src,
                &keyed_input(RECORDS, 64, PARTITIONS)[BEFORE_STOP..],
            )
            .unwrap();
        let mut child = self.spawn(broker, semantics, true);
        let status = wait_for(&mut child, Duration::from_secs(180)).unwrap();
        assert!(status.success(), "the restart failed:\n{}", self.log());
    }
}

/// Records in the output topic (its end offsets; markers included).
fn written(broker: &Broker, topic: &str) -> i64 {
    broker.end_offsets(topic, PARTITIONS).unwrap().iter().sum()
}

/// Every key's counts must be exactly 1..=n, each once, n the key's
/// number of input records.
fn assert_each_count_once(out: &[Vec<Output>]) {
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for r in keyed_input(RECORDS, 64, PARTITIONS) {
        *want.entry(r.key).or_default() += 1;
    }
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for o in out.iter().flatten() {
        let count = o.value.as_deref().unwrap().trim().parse().unwrap();
        got.entry(o.key.clone().unwrap()).or_default().push(count);
    }
    for (key, n) in want {
        let counts = got.remove(&key).unwrap_or_default();
        let expected: Vec<u64> = (1..=n).collect();
        assert_eq!(counts, expected, "key {key}: counts replayed or lost");
    }
}

#[test]
fn sigterm_at_least_once_replays_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let broker = Broker::shared();
    let job = Job::new(broker);
    job.run_and_stop(broker, "at-least-once");
    job.finish(broker, "at-least-once");
    assert_each_count_once(&broker.read_all(&job.dst, PARTITIONS).unwrap());
}

#[test]
fn sigterm_exactly_once_leaves_no_transaction_open() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let broker = Broker::shared();
    let job = Job::new(broker);
    job.run_and_stop(broker, "exactly-once");
    for p in 0..PARTITIONS {
        let log = weir_e2e::log_view::read_partition(&broker.bootstrap(), &job.dst, p).unwrap();
        assert_eq!(log.open, 0, "partition {p}: a transaction was left open");
    }
    job.finish(broker, "exactly-once");
    assert_each_count_once(&broker.read_committed(&job.dst, PARTITIONS).unwrap());
}

/// A job whose plugin is stuck in a call that only its time limit (20 s)
/// ends: the first record of partition 0 sends `endless_loop` into a loop.
/// Returns the job's directory (config, plugin, log) and the child.
fn spawn_stuck(broker: &Broker) -> (tempfile::TempDir, Child) {
    let job = weir_e2e::hostile::poisoned_job(broker, "endless_loop", 100, 2, &[0]).unwrap();
    let (dir, src, dst) = (job.dir, job.src, job.dst);
    let text = format!(
        r#"[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{dst}-group"
[kafka.consumer_options]
"auto.offset.reset" = "earliest"
[source]
topics = ["{src}"]
[sink]
topics = ["{dst}"]
[pipeline]
plugins_dir = "{plugins}"
plugin = "endless_loop.wat"
parallelism = 1
stop_timeout = "1s"
on_fault = "skip"
[limits]
batch_timeout = "20s"
[checkpoint]
enabled = true
interval = "200ms"
directory = "ck"
[status]
interval = "0s"
"#,
        bootstrap = broker.bootstrap(),
        plugins = dir.path().display(),
    );
    let config = dir.path().join("job.toml");
    std::fs::write(&config, text).unwrap();
    let child = weir_e2e::spawn_weir(&config, dir.path(), "info");
    // Running once its partitions are assigned; the first batch of
    // partition 0 then loops.
    let started = Instant::now();
    while !weir_e2e::weir_log(dir.path()).contains("partition assigned") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    (dir, child)
}

/// A stop that cannot finish: the process exits non-zero once
/// `stop_timeout` (1 s) has passed, saying what did not finish; and a
/// second signal ends it at once, with 128 + the signal's number.
#[test]
fn a_stuck_stop_ends_at_its_timeout_and_a_second_signal_at_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let broker = Broker::shared();

    let (dir, mut child) = spawn_stuck(broker);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let signalled = Instant::now();
    let status = wait_for(&mut child, Duration::from_secs(30)).unwrap();
    let took = signalled.elapsed();
    let log = weir_e2e::weir_log(dir.path());
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("did not stop within pipeline.stop_timeout"),
        "{log}"
    );
    // A liveness bound, not a speed figure: it must not wait for the
    // plugin's 20 s call.
    assert!(
        took < Duration::from_secs(10),
        "exited {took:?} after SIGTERM"
    );
    println!(
        "stop timeout: exit 1 {:.1} s after SIGTERM (stop_timeout 1 s)",
        took.as_secs_f64()
    );

    let (dir, mut child) = spawn_stuck(broker);
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(200));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let signalled = Instant::now();
    let status = wait_for(&mut child, Duration::from_secs(30)).unwrap();
    let took = signalled.elapsed();
    let log = weir_e2e::weir_log(dir.path());
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{log}");
    assert!(log.contains("second signal"), "{log}");
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after the second signal"
    );
    println!(
        "second signal: exit {:?} {:.2} s after it",
        status.code(),
        took.as_secs_f64()
    );
}
