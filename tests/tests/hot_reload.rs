//! Hot reload through the real binary on Apache Kafka, exactly-once: a
//! running job switches from `running_count.wasm` to
//! `running_count_v2.wasm` (`weir reload`) at a checkpoint boundary, every
//! partition's state taken over; a reload to a module that cannot take the
//! state over (`uppercase.wasm`) is rolled back, and the job goes on with
//! v2; a module that starts but fails its first batch (after emitting
//! it) is rolled back too, its output aborted; at 32 partitions the switch
//! comes from `reload_on_change` seeing the config file change. Judged with `read_committed`: every key's counts exactly 1..n. The
//! pause of each switch (from the request to the new module running) is
//! printed from the log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use weir_e2e::model::expected_counts;
use weir_e2e::{Broker, Input, counts_by_key, keyed_input, repo_root, topic, weir_binary};

const KEYS: usize = 40;
const ROUND: usize = 3_000;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Job {
    dir: tempfile::TempDir,
    src: String,
    dst: String,
    partitions: i32,
    port: u16,
    input: Vec<Input>,
}

impl Job {
    fn new(broker: &Broker, partitions: i32) -> Job {
        let (src, dst) = (topic("reload-in"), topic("reload-out"));
        broker.create_topic(&src, partitions).unwrap();
        broker.create_topic(&dst, partitions).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Job {
            dir: tempfile::tempdir().unwrap(),
            src,
            dst,
            partitions,
            port,
            input: Vec::new(),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("job.toml")
    }

    /// Points the config at `plugin` of the repository's plugins (what a
    /// reload reads).
    fn configure(&self, broker: &Broker, plugin: &str) {
        self.configure_in(broker, &repo_root().join("plugins"), plugin)
    }

    /// Points the config at `plugin` in `plugins`.
    fn configure_in(&self, broker: &Broker, plugins: &Path, plugin: &str) {
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
semantics = "exactly-once"
transactional_id_prefix = "{dst}"
[pipeline]
plugins_dir = "{plugins}"
plugin = "{plugin}"
parallelism = 2
batch_size = 256
reload_on_change = {watch}
reload_trial = "30s"
[checkpoint]
enabled = true
interval = "500ms"
directory = "ck"
[status]
interval = "0s"
[metrics]
listen = "127.0.0.1:{port}"
"#,
            bootstrap = broker.bootstrap(),
            src = self.src,
            dst = self.dst,
            plugins = plugins.display(),
            port = self.port,
            watch = self.partitions == 32,
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    fn produce_round(&mut self, broker: &Broker) {
        let round = keyed_input(ROUND, KEYS, self.partitions);
        broker.produce(&self.src, &round).unwrap();
        self.input.extend(round);
    }

    fn log(&self) -> String {
        weir_e2e::weir_log(self.dir.path())
    }

    /// Waits until the committed output holds every input record once.
    fn wait_for_all(&self, broker: &Broker, job: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            assert!(
                job.try_wait().unwrap().is_none(),
                "the job ended:\n{}",
                self.log()
            );
            let out = broker.read_committed(&self.dst, self.partitions);
            if out.is_ok_and(|o| o.iter().map(Vec::len).sum::<usize>() >= self.input.len()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "output incomplete:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the log has `n` lines containing `what`.
    fn wait_for_log(&self, what: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.log().matches(what).count() < n {
            assert!(Instant::now() < deadline, "no {what:?} in:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn check_counts(&self, broker: &Broker) {
        let got = counts_by_key(&broker.read_committed(&self.dst, self.partitions).unwrap());
        assert_eq!(
            got,
            expected_counts(&self.input),
            "counts against the model"
        );
    }
}

fn weir_reload(config: &Path) -> String {
    let out = Command::new(weir_binary())
        .args(["reload", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "weir reload: {text}");
    text
}

/// The stop, start and pause (ms) of each "module switched" line.
fn pauses(log: &str) -> Vec<String> {
    let field = |line: &str, name: &str| {
        line.split(&format!("{name}="))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("?")
            .to_string()
    };
    log.lines()
        .filter(|l| l.contains("module switched"))
        .map(|l| {
            format!(
                "stop {} + start {} = pause {}",
                field(l, "stop_ms"),
                field(l, "start_ms"),
                field(l, "pause_ms")
            )
        })
        .collect()
}

/// A module that takes any state over (ABI 1.1) and starts, then emits
/// its first batch as it came and traps.
const EMITS_THEN_TRAPS: &str = r#"
(module
  (import "weir" "emit" (func $emit (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "weir_abi_version") (result i32) (i32.const 65537))
  (func (export "weir_input_buffer") (param $size i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.shr_u (i32.add (local.get $size) (i32.const 131071)) (i32.const 16)))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size))) (i32.const -1))
          (then (unreachable)))))
    (i32.const 65536))
  (func (export "weir_state_import") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "weir_process") (param $ptr i32) (param $len i32) (result i32)
    (drop (call $emit (local.get $ptr) (local.get $len)))
    unreachable)
)
"#;

fn spawn(job: &Job) -> Child {
    weir_e2e::spawn_weir(&job.config_path(), job.dir.path(), "info")
}

fn stop(job: &Job, mut child: Child) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = weir_e2e::wait_for(&mut child, Duration::from_secs(60)).unwrap();
    assert!(
        status.success(),
        "the job did not stop cleanly:\n{}",
        job.log()
    );
}

#[test]
fn a_running_job_switches_to_v2_and_a_refused_module_is_rolled_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let broker = Broker::shared();
    let mut job = Job::new(broker, 4);
    job.configure(broker, "running_count.wasm");
    job.produce_round(broker);
    let mut child = spawn(&job);
    job.wait_for_all(broker, &mut child);

    job.configure(broker, "running_count_v2.wasm");
    println!("{}", weir_reload(&job.config_path()).trim());
    job.wait_for_log("module switched", 1);
    assert_eq!(
        job.log()
            .matches("state taken over from another plugin module")
            .count(),
        4,
        "{}",
        job.log()
    );
    job.produce_round(broker);
    job.wait_for_all(broker, &mut child);

    // uppercase cannot import the counts: rolled back to v2, which goes on.
    job.configure(broker, "uppercase.wasm");
    let addr = format!("127.0.0.1:{}", job.port).parse().unwrap();
    let (status, body) = weir_e2e::http(addr, "POST", "/reload").unwrap();
    assert_eq!(status, 202, "{body}");
    job.wait_for_log("rolled back", 1);
    assert!(
        job.log().contains("does not export weir_state_import"),
        "{}",
        job.log()
    );
    job.produce_round(broker);
    job.wait_for_all(broker, &mut child);

    // A module that starts, takes the counts over, emits its first batch
    // and traps: rolled back to v2 during its trial; what it emitted is
    // aborted, v2 counts the round from the switch.
    let trial = job.dir.path().join("trial");
    std::fs::create_dir_all(&trial).unwrap();
    std::fs::write(trial.join("emits_then_traps.wat"), EMITS_THEN_TRAPS).unwrap();
    job.configure_in(broker, &trial, "emits_then_traps.wat");
    weir_reload(&job.config_path());
    job.wait_for_log("module switched", 2);
    job.produce_round(broker);
    job.wait_for_log("rolled back", 2);
    assert!(
        job.log().contains("failed during its trial"),
        "{}",
        job.log()
    );
    job.wait_for_all(broker, &mut child);
    stop(&job, child);
    job.check_counts(broker);
    println!(
        "4 partitions: switch v1 -> v2 (ms): {:?}",
        pauses(&job.log())
    );
}

#[test]
fn thirty_two_partitions_switch_with_their_state() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let broker = Broker::shared();
    let mut job = Job::new(broker, 32);
    job.configure(broker, "running_count.wasm");
    job.produce_round(broker);
    let mut child = spawn(&job);
    job.wait_for_all(broker, &mut child);
    // No call: `reload_on_change` sees the config file change.
    job.configure(broker, "running_count_v2.wasm");
    job.wait_for_log("a watched file changed: reloading", 1);
    job.wait_for_log("module switched", 1);
    job.produce_round(broker);
    job.wait_for_all(broker, &mut child);
    stop(&job, child);
    job.check_counts(broker);
    println!(
        "32 partitions: switch v1 -> v2 (ms): {:?}",
        pauses(&job.log())
    );
}
