//! Plugin upgrades that keep their state (ABI 1.1 portable state), through
//! the real binary on Apache Kafka, as a user does one: stop the job, point
//! `pipeline.plugin` at the new module, start it again.
//!
//! `running_count.wasm` (v1) keeps a count per key; `running_count_v2.wasm`
//! keeps a count and a last-seen timestamp per key, a memory layout v1's
//! image does not fit. v1 exports its state in format 1, v2 reads formats
//! 1 and 2 and writes 2. Every count must go on from where the previous
//! module left it: the output of all runs together is the model (every
//! count 1..n of every key exactly once). A module that cannot take the
//! state over is refused at start with the reason, and the state it was
//! refused is left as it was for the module that can.

use std::path::Path;
use std::time::Duration;
use weir_e2e::{Broker, Input, counts_by_key, keyed_input, repo_root, topic, wait_for};

const PARTITIONS: i32 = 4;
const KEYS: usize = 40;
const ROUND: usize = 3_000;

/// One test at a time: each starts the binary several times.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Job {
    dir: tempfile::TempDir,
    src: String,
    dst: String,
    semantics: &'static str,
    /// Every record written to the input so far.
    input: Vec<Input>,
}

impl Job {
    fn new(broker: &Broker, semantics: &'static str) -> Job {
        let (src, dst) = (topic("upgrade-in"), topic("upgrade-out"));
        broker.create_topic(&src, PARTITIONS).unwrap();
        broker.create_topic(&dst, PARTITIONS).unwrap();
        Job {
            dir: tempfile::tempdir().unwrap(),
            src,
            dst,
            semantics,
            input: Vec::new(),
        }
    }

    /// Writes `n` more records over the same keys.
    fn produce_round(&mut self, broker: &Broker) {
        let round = keyed_input(ROUND, KEYS, PARTITIONS);
        broker.produce(&self.src, &round).unwrap();
        self.input.extend(round);
    }

    /// Runs `plugin` over the input to its end; returns the exit code and
    /// the log.
    fn run(&self, broker: &Broker, plugin: &str) -> (Option<i32>, String) {
        let text = format!(
            r#"[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{dst}-group"
[kafka.consumer_options]
"auto.offset.reset" = "earliest"
[source]
topics = ["{src}"]
bounded = true
[sink]
topics = ["{dst}"]
semantics = "{semantics}"
transactional_id_prefix = "{dst}"
[pipeline]
plugins_dir = "{plugins}"
plugin = "{plugin}"
parallelism = 2
batch_size = 256
[checkpoint]
enabled = true
interval = "500ms"
directory = "ck"
[status]
interval = "0s"
"#,
            bootstrap = broker.bootstrap(),
            src = self.src,
            dst = self.dst,
            semantics = self.semantics,
            plugins = repo_root().join("plugins").display(),
        );
        let config = self.dir.path().join("job.toml");
        std::fs::write(&config, text).unwrap();
        let mut child = weir_e2e::spawn_weir(&config, self.dir.path(), "info");
        let status = wait_for(&mut child, Duration::from_secs(120)).unwrap();
        (status.code(), weir_e2e::weir_log(self.dir.path()))
    }

    fn run_ok(&self, broker: &Broker, plugin: &str) -> String {
        let (code, log) = self.run(broker, plugin);
        assert_eq!(code, Some(0), "{plugin} failed:\n{log}");
        log
    }

    /// The output against the model: every key's counts are exactly 1..n,
    /// n its records in the input.
    fn check_counts(&self, broker: &Broker) {
        let output = match self.semantics {
            "exactly-once" => broker.read_committed(&self.dst, PARTITIONS),
            _ => broker.read_all(&self.dst, PARTITIONS),
        }
        .unwrap();
        let counts = counts_by_key(&output);
        let mut expected = std::collections::BTreeMap::<String, u64>::new();
        for r in &self.input {
            *expected.entry(r.key.clone()).or_default() += 1;
        }
        assert_eq!(counts.len(), expected.len(), "keys in the output");
        for (key, n) in expected {
            let want: Vec<u64> = (1..=n).collect();
            assert_eq!(counts[&key], want, "counts of {key}");
        }
    }

    fn archived_modules(&self) -> usize {
        modules_in(&self.dir.path().join("ck"))
    }
}

/// The log's error line.
fn refusal(log: &str) -> &str {
    log.lines().rfind(|l| l.contains("rror")).unwrap_or("")
}

fn modules_in(ck: &Path) -> usize {
    std::fs::read_dir(ck.join("modules")).map_or(0, |d| d.count())
}

#[test]
fn exactly_once_counts_go_on_in_v2_and_a_way_back_to_v1_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let broker = Broker::shared();
    let mut job = Job::new(broker, "exactly-once");
    job.produce_round(broker);
    let log = job.run_ok(broker, "running_count.wasm");
    assert!(!log.contains("taken over"), "{log}");

    job.produce_round(broker);
    let log = job.run_ok(broker, "running_count_v2.wasm");
    let taken = log
        .matches("state taken over from another plugin module")
        .count();
    assert_eq!(
        taken, PARTITIONS as usize,
        "one take-over per partition:\n{log}"
    );
    assert!(log.contains("format_version=1"), "{log}");
    assert_eq!(job.archived_modules(), 2);

    // v2's state is format 2, which v1 cannot read: refused, nothing lost.
    job.produce_round(broker);
    let (code, log) = job.run(broker, "running_count.wasm");
    assert_eq!(code, Some(1), "v1 ran on v2's state:\n{log}");
    assert!(
        log.contains("weir_state_import of format version 2")
            && log.contains("running-count reads state format 1, not 2"),
        "the refusal does not say why:\n{log}"
    );
    println!("{}", refusal(&log));
    job.run_ok(broker, "running_count_v2.wasm");
    job.check_counts(broker);
}

#[test]
fn at_least_once_a_module_without_portable_state_is_refused_and_the_state_kept() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let broker = Broker::shared();
    let mut job = Job::new(broker, "at-least-once");
    job.produce_round(broker);
    job.run_ok(broker, "running_count.wasm");

    job.produce_round(broker);
    // uppercase.wasm has no weir_state_import: it cannot take the counts.
    let (code, log) = job.run(broker, "uppercase.wasm");
    assert_eq!(code, Some(1), "uppercase ran on the counts' state:\n{log}");
    assert!(
        log.contains("does not export weir_state_import")
            && log.contains("checkpoint.allow_module_change"),
        "the refusal does not say why:\n{log}"
    );
    println!("{}", refusal(&log));
    let log = job.run_ok(broker, "running_count_v2.wasm");
    assert!(log.contains("state taken over"), "{log}");
    job.check_counts(broker);
}
