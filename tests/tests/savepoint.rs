//! Savepoints through the real binary on Apache Kafka: taken from a
//! running job that goes on (`weir savepoint`, through its admin
//! endpoint), stopping it (`weir savepoint --stop`) or at a clean stop
//! (`weir run --savepoint-on-stop`), and started from
//! (`weir run --from-savepoint NAME|PATH`) by the next module version.
//!
//! `running_count.wasm` (v1) counts per key; `running_count_v2.wasm`
//! keeps a count and a last-seen timestamp per key and takes v1's state
//! over through portable state. The model is exact: a savepoint's offsets
//! and states win over everything after it, so a run from a savepoint
//! recounts, from the savepoint's counts, exactly what came after it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use weir_e2e::{
    Broker, Input, counts_by_key, keyed_input, repo_root, topic, wait_for, weir_binary,
};

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
    /// The input, round by round.
    rounds: Vec<Vec<Input>>,
}

impl Job {
    fn new(broker: &Broker, semantics: &'static str) -> Job {
        let (src, dst) = (topic("savepoint-in"), topic("savepoint-out"));
        broker.create_topic(&src, PARTITIONS).unwrap();
        broker.create_topic(&dst, PARTITIONS).unwrap();
        Job {
            dir: tempfile::tempdir().unwrap(),
            src,
            dst,
            semantics,
            rounds: Vec::new(),
        }
    }

    fn produce_round(&mut self, broker: &Broker) {
        let round = keyed_input(ROUND, KEYS, PARTITIONS);
        broker.produce(&self.src, &round).unwrap();
        self.rounds.push(round);
    }

    /// Writes the job's config (checkpoints in `checkpoints`, the admin
    /// endpoint at `listen` if given); returns its path.
    fn config(&self, broker: &Broker, plugin: &str, bounded: bool, listen: Option<u16>) -> PathBuf {
        let metrics = listen
            .map(|p| format!("[metrics]\nlisten = \"127.0.0.1:{p}\"\n"))
            .unwrap_or_default();
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
plugin = "{plugin}"
parallelism = 2
batch_size = 256
[checkpoint]
enabled = true
interval = "500ms"
directory = "ck"
[status]
interval = "0s"
{metrics}"#,
            bootstrap = broker.bootstrap(),
            src = self.src,
            dst = self.dst,
            semantics = self.semantics,
            plugins = repo_root().join("plugins").display(),
        );
        let path = self.dir.path().join("job.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `weir run` with `args` added, to its end; the exit code and log.
    fn run(&self, config: &Path, args: &[&str]) -> (Option<i32>, String) {
        let mut child = self.spawn(config, args);
        let status = wait_for(&mut child, Duration::from_secs(120)).unwrap();
        (status.code(), weir_e2e::weir_log(self.dir.path()))
    }

    fn run_ok(&self, config: &Path, args: &[&str]) -> String {
        let (code, log) = self.run(config, args);
        assert_eq!(code, Some(0), "weir run {args:?} failed:\n{log}");
        log
    }

    fn spawn(&self, config: &Path, args: &[&str]) -> std::process::Child {
        weir_e2e::spawn_weir_with(config, self.dir.path(), "info", args)
    }

    fn output(&self, broker: &Broker) -> BTreeMap<String, Vec<u64>> {
        let output = match self.semantics {
            "exactly-once" => broker.read_committed(&self.dst, PARTITIONS),
            _ => broker.read_all(&self.dst, PARTITIONS),
        }
        .unwrap();
        counts_by_key(&output)
    }

    /// Per key, its records in `rounds`.
    fn per_key(&self, rounds: std::ops::Range<usize>) -> BTreeMap<String, u64> {
        let mut n = BTreeMap::new();
        for r in &self.rounds[rounds] {
            for i in r {
                *n.entry(i.key.clone()).or_default() += 1;
            }
        }
        n
    }

    /// The model: each segment `(counted, upto)` is a run that counted the
    /// rounds `counted..upto` starting from the counts of rounds
    /// `0..counted` (its savepoint's or checkpoint's): per key the counts
    /// `before+1 ..= before+n`, the segments one after the other.
    fn check(&self, broker: &Broker, segments: &[(usize, usize)]) {
        let got = self.output(broker);
        let keys = self.per_key(0..self.rounds.len());
        assert_eq!(got.len(), keys.len(), "keys in the output");
        for key in keys.keys() {
            let mut want = Vec::new();
            for &(counted, upto) in segments {
                let before = self.per_key(0..counted).get(key).copied().unwrap_or(0);
                let n = self.per_key(counted..upto).get(key).copied().unwrap_or(0);
                want.extend(before + 1..=before + n);
            }
            assert_eq!(got[key], want, "counts of {key}");
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `weir savepoint NAME --config CONFIG` with `args`: its exit code and
/// output.
fn savepoint_command(config: &Path, name: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(weir_binary())
        .args(["savepoint", name, "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Waits until the committed output holds `n` records (a read that fails
/// while transactions are open is tried again).
fn wait_for_output(job: &Job, broker: &Broker, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let committed = |broker: &Broker| match job.semantics {
        "exactly-once" => broker.read_committed(&job.dst, PARTITIONS),
        _ => broker.read_all(&job.dst, PARTITIONS),
    };
    while !committed(broker).is_ok_and(|o| o.iter().map(Vec::len).sum::<usize>() >= n) {
        assert!(
            Instant::now() < deadline,
            "{}",
            weir_e2e::weir_log(job.dir.path())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn exactly_once_savepoints_of_a_running_job_and_at_its_stop_and_v2_goes_on_from_them() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let broker = Broker::shared();
    let mut job = Job::new(broker, "exactly-once");
    job.produce_round(broker);
    let port = free_port();
    let config = job.config(broker, "running_count.wasm", false, Some(port));
    let mut running = job.spawn(&config, &[]);
    wait_for_output(&job, broker, ROUND);
    // Round 1 counted and committed: a savepoint, the job going on.
    let (code, text) = savepoint_command(&config, "r1", &[]);
    assert_eq!(code, Some(0), "weir savepoint failed: {text}");
    assert!(text.contains("savepoint r1 written"), "{text}");
    println!("{}", text.trim());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        running.try_wait().unwrap().is_none(),
        "the job ended after a savepoint without --stop:\n{}",
        weir_e2e::weir_log(job.dir.path())
    );
    // It goes on over round 2, then stops with a savepoint.
    job.produce_round(broker);
    wait_for_output(&job, broker, 2 * ROUND);
    let (code, text) = savepoint_command(&config, "before-v2", &["--stop"]);
    assert_eq!(code, Some(0), "weir savepoint --stop failed: {text}");
    assert!(text.contains("savepoint before-v2 written"), "{text}");
    let status = wait_for(&mut running, Duration::from_secs(60)).unwrap();
    let log = weir_e2e::weir_log(job.dir.path());
    assert!(status.success(), "the job did not stop cleanly:\n{log}");
    // A second savepoint of that name is refused at once.
    let (code, log) = job.run(&config, &["--savepoint-on-stop", "before-v2"]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("never overwritten"), "{log}");

    // v2 from the savepoint at the stop, over round 3: the counts go on.
    job.produce_round(broker);
    let config = job.config(broker, "running_count_v2.wasm", true, None);
    let log = job.run_ok(&config, &["--from-savepoint", "before-v2"]);
    assert_eq!(
        log.matches("state taken over from another plugin module")
            .count(),
        PARTITIONS as usize,
        "{log}"
    );
    job.check(broker, &[(0, 2), (2, 3)]);

    // From the running job's savepoint: its offsets and counts win over
    // the committed ones, so rounds 2 and 3 are counted from round 1's.
    job.run_ok(&config, &["--from-savepoint", "r1"]);
    job.check(broker, &[(0, 2), (2, 3), (1, 3)]);
}

#[test]
fn at_least_once_a_savepoint_at_stop_is_self_contained_and_outlives_the_checkpoints() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let broker = Broker::shared();
    let mut job = Job::new(broker, "at-least-once");
    job.produce_round(broker);
    let config = job.config(broker, "running_count.wasm", true, None);
    job.run_ok(&config, &["--savepoint-on-stop", "r1"]);
    let stdout = std::fs::read_to_string(job.dir.path().join("stdout.log")).unwrap();
    assert!(stdout.contains("savepoint r1 written"), "{stdout}");

    // v1 goes on over round 2; its checkpoints move past the savepoint.
    // Round 2 counted, a savepoint of the running job, then SIGTERM.
    job.produce_round(broker);
    let running_config = job.config(broker, "running_count.wasm", false, Some(free_port()));
    let mut running = job.spawn(&running_config, &[]);
    wait_for_output(&job, broker, 2 * ROUND);
    let (code, text) = savepoint_command(&running_config, "r2", &[]);
    assert_eq!(code, Some(0), "weir savepoint failed: {text}");
    assert!(unsafe { libc::kill(running.id() as i32, libc::SIGTERM) } == 0);
    let status = wait_for(&mut running, Duration::from_secs(60)).unwrap();
    assert!(status.success(), "{}", weir_e2e::weir_log(job.dir.path()));
    let config = job.config(broker, "running_count.wasm", true, None);
    let list = Command::new(weir_binary())
        .args(["checkpoints", "list", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        list.contains("savepoint r1")
            && list.contains("4 partitions")
            && list.contains("at-least-once"),
        "{list}"
    );

    // The savepoint copied elsewhere, the checkpoint directory gone: v2
    // starts from the copy (its module is inside it) over round 3.
    job.produce_round(broker);
    let copy = job.dir.path().join("copied-savepoint");
    copy_dir(&job.dir.path().join("ck/savepoints/r1"), &copy);
    let copy_r2 = job.dir.path().join("copied-r2");
    copy_dir(&job.dir.path().join("ck/savepoints/r2"), &copy_r2);
    std::fs::remove_dir_all(job.dir.path().join("ck")).unwrap();
    let config = job.config(broker, "running_count_v2.wasm", true, None);
    let log = job.run_ok(&config, &["--from-savepoint", copy.to_str().unwrap()]);
    assert!(log.contains("state taken over"), "{log}");
    job.check(broker, &[(0, 1), (1, 2), (1, 3)]);
    // The running job's savepoint, copied before the directory went:
    // round 3 again, from round 2's counts.
    let log = job.run_ok(&config, &["--from-savepoint", copy_r2.to_str().unwrap()]);
    assert!(log.contains("state taken over"), "{log}");
    job.check(broker, &[(0, 1), (1, 2), (1, 3), (2, 3)]);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
