//! Crash tests: the real `weir` binary, killed with SIGKILL at random
//! moments (and at failpoints), restarted each time, the output judged
//! against a model of the running-count plugin.
//!
//! At-least-once judgement, per key: every count 1..n appears; the output
//! is a sequence of runs of consecutive counts; every run after the first
//! starts at `count_before(checkpoint offset) + 1` for the checkpoint the
//! restart restored: state is never reset, never older than the last
//! completed checkpoint, and duplicates come only from records after it.

use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir::checkpoint::CheckpointStore;
use weir_e2e::windows::{
    WindowSpec, expected_windows, first_timestamp, judge_windows, windowed_input,
};
use weir_e2e::{Broker, Input, keyed_input, repo_root, topic};

const PARTITIONS: i32 = 4;

/// Crash tests run one at a time: each keeps both cores busy, and their
/// kill timing is about the job's progress, not about CPU contention.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

struct Job {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Job {
    fn new(broker: &Broker, src: &str, dst: &str, interval_ms: u64) -> Job {
        Job::with_semantics(broker, src, dst, interval_ms, "at-least-once")
    }

    fn with_semantics(
        broker: &Broker,
        src: &str,
        dst: &str,
        interval_ms: u64,
        semantics: &str,
    ) -> Job {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"[kafka]
bootstrap_servers = "{}"
group_id = "{dst}-crash"
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
plugins_dir = "{}"
plugin = "running_count.wasm"
parallelism = 2
batch_size = 128

[checkpoint]
enabled = true
interval = "{interval_ms}ms"
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

    /// The job runs `plugin` instead, with these `[pipeline]` lines and
    /// this `[pipeline.config]` table.
    fn with_plugin(self, plugin: &str, pipeline_lines: &str, table: &str) -> Job {
        let text = std::fs::read_to_string(&self.config).unwrap().replace(
            "plugin = \"running_count.wasm\"",
            &format!("plugin = \"{plugin}\"\n{pipeline_lines}"),
        ) + table;
        std::fs::write(&self.config, text).unwrap();
        self
    }

    /// The next starts run with `n` workers.
    fn set_parallelism(&self, n: usize) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let at = text.find("parallelism = ").unwrap();
        let end = at + text[at..].find('\n').unwrap();
        let text = format!("{}parallelism = {n}{}", &text[..at], &text[end..]);
        std::fs::write(&self.config, text).unwrap();
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

    fn spawn(&self, failpoint: Option<&str>) -> std::process::Child {
        let mut cmd = Command::new(weir_e2e::weir_binary());
        cmd.args(["run", "--config", self.config.to_str().unwrap()])
            .env("WEIR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("stderr.log")).unwrap());
        if let Some(fp) = failpoint {
            cmd.env("WEIR_FAILPOINT", fp);
        }
        cmd.spawn().unwrap()
    }
}

fn setup(broker: &Broker, n: usize) -> (Vec<Input>, String, String) {
    let input = keyed_input(n, 400, PARTITIONS);
    let (src, dst) = (topic("crash-in"), topic("crash-out"));
    broker.create_topic(&src, PARTITIONS).unwrap();
    broker.create_topic(&dst, PARTITIONS).unwrap();
    let t = Instant::now();
    broker.produce(&src, &input).unwrap();
    println!("wrote {n} input records in {:?}", t.elapsed());
    (input, src, dst)
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

/// Runs to completion, killing the first `kills` runs at random moments
/// after each has produced new output (so every kill lands mid-stream).
fn run_with_kills(
    broker: &Broker,
    dst: &str,
    job: &Job,
    kills: usize,
    max_delay_ms: u64,
    records: usize,
    restores: &mut Vec<HashMap<i32, i64>>,
) -> usize {
    let mut rng = rand::rng();
    let mut killed = 0;
    let mut attempts = 0;
    // read_uncommitted: the end offset moves as soon as output is written,
    // committed or not.
    let watch: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    loop {
        restores.push(job.resume_offsets());
        let baseline = output_mark(&watch, dst);
        let mut child = job.spawn(None);
        attempts += 1;
        if killed < kills {
            let give_up = Instant::now() + Duration::from_secs(60);
            while output_mark(&watch, dst) <= baseline && Instant::now() < give_up {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // A random moment, but before this run has written more than
            // its share of the output: a fast run must not finish the job
            // while kills are still due.
            let deadline =
                Instant::now() + Duration::from_millis(rng.random_range(0..max_delay_ms));
            let share = records as i64 / (kills as i64 + 4);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some()
                    || output_mark(&watch, dst) - baseline >= share
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                killed += 1;
                continue;
            }
        }
        let status = wait_for(&mut child, Duration::from_secs(180));
        let log = std::fs::read_to_string(job.dir.path().join("stderr.log")).unwrap_or_default();
        assert!(status.success(), "final run failed: {status}\n{log}");
        println!("{killed} kills in {attempts} starts");
        return killed;
    }
}

fn wait_for(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    weir_e2e::wait_for(child, limit).unwrap()
}

fn checkpoint_figures(dir: &Path) {
    let store = CheckpointStore::open(&dir.join("ck"), 3).unwrap();
    if let Some(c) = store.latest().unwrap() {
        let bytes: usize = c.partitions.iter().map(|p| p.state.encoded_len()).sum();
        println!(
            "latest checkpoint {}: {} partitions, {} bytes of state",
            c.id,
            c.partitions.len(),
            bytes
        );
    }
}

#[test]
fn at_least_once_survives_random_kill_9() {
    let _serial = serial();
    let broker = Broker::shared();
    let (input, src, dst) = setup(broker, 100_000);
    let job = Job::new(broker, &src, &dst, 200);
    let mut restores = Vec::new();
    let kills = run_with_kills(broker, &dst, &job, 12, 150, input.len(), &mut restores);
    assert!(kills >= 10, "only {kills} kills landed mid-stream");
    let out = broker.read_committed(&dst, PARTITIONS).unwrap();
    let v = weir_e2e::model::judge(&input, &out, &restores);
    assert!(
        v.restores_checked > 0,
        "no replay was observed: the kills did not land mid-stream"
    );
    println!(
        "at-least-once: {kills} kill -9, {} records checked, {} duplicates, 0 lost, {} restore points checked",
        v.records, v.duplicates, v.restores_checked
    );
    checkpoint_figures(job.dir.path());
}

#[test]
fn at_least_once_survives_each_failpoint() {
    let _serial = serial();
    let broker = Broker::shared();
    // The process aborts the first time the point is reached after 30,000
    // of the 60,000 records were processed: mid-stream, with checkpoints
    // that carry progress behind it (checkpoints every 20 ms).
    let (input, src, _) = setup(broker, 60_000);
    for point in [
        weir::checkpoint::failpoint::AFTER_STATE_FILES,
        weir::checkpoint::failpoint::AFTER_METADATA,
        weir::checkpoint::failpoint::MID_BATCH,
    ] {
        let dst = topic("crash-out");
        broker.create_topic(&dst, PARTITIONS).unwrap();
        let job = Job::new(broker, &src, &dst, 20);
        let mut restores = vec![job.resume_offsets()];
        let mut child = job.spawn(Some(&format!("{point}@30000")));
        let status = wait_for(&mut child, Duration::from_secs(120));
        assert!(!status.success(), "{point}: the failpoint did not fire");
        let resume = job.resume_offsets();
        // Which checkpoint that is depends on how far each partition got
        // (partitions are served unevenly); the judgement holds for any.
        println!("{point}: crashed after 30,000 records; resuming at {resume:?}");
        restores.push(resume);
        let mut child = job.spawn(None);
        let status = wait_for(&mut child, Duration::from_secs(120));
        assert!(status.success(), "{point}: restart failed");
        let out = broker.read_committed(&dst, PARTITIONS).unwrap();
        let v = weir_e2e::model::judge(&input, &out, &restores);
        println!(
            "failpoint {point}: {} records checked, {} duplicates, 0 lost",
            v.records, v.duplicates
        );
    }
}

/// Exactly-once judgement: per key, the committed output is exactly the
/// model's running counts 1..n, in order: no loss, no duplicate.
fn judge_exactly_once(input: &[Input], out: &[Vec<weir_e2e::Output>]) -> usize {
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for r in input {
        *want.entry(r.key.clone()).or_default() += 1;
    }
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut n = 0;
    for part in out {
        for o in part {
            n += 1;
            seqs.entry(o.key.clone().unwrap())
                .or_default()
                .push(o.value.as_ref().unwrap().parse().unwrap());
        }
    }
    assert_eq!(
        seqs.len(),
        want.len(),
        "keys missing from the committed output"
    );
    for (key, total) in &want {
        let got = &seqs[key];
        let expected: Vec<u64> = (1..=*total).collect();
        if got != &expected {
            let at = got
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(expected.len()));
            panic!(
                "key {key}: committed counts differ from the model: {} committed, {} expected; first difference at index {at}: got {:?}, expected {:?}",
                got.len(),
                expected.len(),
                &got[at.saturating_sub(2)..(at + 3).min(got.len())],
                &expected[at.saturating_sub(2)..(at + 3).min(expected.len())]
            );
        }
    }
    assert_eq!(n, input.len());
    n
}

fn log_figures(broker: &Broker, topic: &str) -> (usize, usize, usize) {
    let mut f = (0, 0, 0);
    for p in 0..PARTITIONS {
        let log = weir_e2e::log_view::read_partition(&broker.bootstrap(), topic, p).unwrap();
        f.0 += log.aborted;
        f.1 += log.open;
        f.2 += log.markers;
    }
    f
}

#[test]
fn exactly_once_survives_random_kill_9() {
    let _serial = serial();
    let broker = Broker::shared();
    let (input, src, dst) = setup(broker, 100_000);
    let job = Job::with_semantics(broker, &src, &dst, 200, "exactly-once");
    let mut restores = Vec::new();
    // Longer: progress under exactly-once needs a commit (200 ms apart).
    let kills = run_with_kills(broker, &dst, &job, 12, 300, input.len(), &mut restores);
    assert!(kills >= 10, "only {kills} kills landed mid-stream");
    let out = broker.read_committed(&dst, PARTITIONS).unwrap();
    let checked = judge_exactly_once(&input, &out);
    let (aborted, open, markers) = log_figures(broker, &dst);
    println!(
        "exactly-once: {kills} kill -9, {checked} records checked, 0 duplicates, 0 lost; log: {aborted} aborted records, {open} in open transactions, {markers} markers"
    );
}

#[test]
fn exactly_once_survives_each_failpoint() {
    let _serial = serial();
    let broker = Broker::shared();
    let (input, src, _) = setup(broker, 60_000);
    for point in [
        weir::checkpoint::failpoint::AFTER_SNAPSHOT_BEFORE_COMMIT,
        weir::checkpoint::failpoint::AFTER_COMMIT,
        weir::checkpoint::failpoint::MID_BATCH,
    ] {
        let dst = topic("eos-out");
        broker.create_topic(&dst, PARTITIONS).unwrap();
        let job = Job::with_semantics(broker, &src, &dst, 100, "exactly-once");
        let mut child = job.spawn(Some(&format!("{point}@30000")));
        let status = wait_for(&mut child, Duration::from_secs(120));
        assert!(!status.success(), "{point}: the failpoint did not fire");
        let mut child = job.spawn(None);
        let status = wait_for(&mut child, Duration::from_secs(120));
        let log = std::fs::read_to_string(job.dir.path().join("stderr.log")).unwrap_or_default();
        assert!(status.success(), "{point}: restart failed\n{log}");
        println!("judging exactly-once failpoint {point}");
        for line in log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        {
            println!("  restart log: {line}");
        }
        let out = broker.read_committed(&dst, PARTITIONS).unwrap();
        let checked = judge_exactly_once(&input, &out);
        let (aborted, open, _) = log_figures(broker, &dst);
        println!(
            "exactly-once failpoint {point}: {checked} records checked, 0 duplicates, 0 lost, {aborted} aborted records in the log, {open} open"
        );
    }
}

/// Time in plugins under kill -9: the tumbling-window plugin (sum per key
/// and 1 s event-time window, out-of-order input, some records late) with
/// windows open across every checkpoint, exactly-once. The committed
/// output must be the model's windows: none lost, none twice, every sum
/// equal, the late records dropped by the same rule (the watermark is
/// restored with the state, so the replay makes the same decisions).
#[test]
fn exactly_once_windows_survive_random_kill_9() {
    let _serial = serial();
    let broker = Broker::shared();
    let spec = WindowSpec {
        size_ms: 1_000,
        max_out_of_orderness_ms: 500,
    };
    let input = windowed_input(first_timestamp(), 60_000, 60, PARTITIONS, 400, (97, 1_300));
    let (want, late) = expected_windows(&input, spec);
    let (src, dst) = (topic("win-crash-in"), topic("win-crash-out"));
    broker.create_topic(&src, PARTITIONS).unwrap();
    broker.create_topic(&dst, PARTITIONS).unwrap();
    broker.produce(&src, &input).unwrap();
    let job = Job::with_semantics(broker, &src, &dst, 200, "exactly-once").with_plugin(
        "tumbling_window.wasm",
        &spec.pipeline_lines(),
        &spec.plugin_table(),
    );
    let windows: usize = want.values().map(Vec::len).sum();
    let mut restores = Vec::new();
    let kills = run_with_kills(broker, &dst, &job, 10, 300, windows, &mut restores);
    assert!(kills >= 8, "only {kills} kills landed mid-stream");
    let out = broker.read_committed(&dst, PARTITIONS).unwrap();
    let checked = judge_windows(&out, &want);
    let (aborted, open, _) = log_figures(broker, &dst);
    println!(
        "exactly-once windows: {kills} kill -9, {} records ({late} late), {checked} windows equal to the model, 0 lost, 0 twice; log: {aborted} aborted records, {open} open",
        input.len()
    );
}

/// A zombie: a second host with the same transactional ids starts while
/// the first still runs. The second fences the first, whose next commit
/// fails, so it exits; none of its uncommitted output becomes visible and
/// the committed output is exactly the model.
#[test]
fn exactly_once_fences_a_zombie() {
    let _serial = serial();
    let broker = Broker::shared();
    // Enough input that the zombie (one record per plugin call) is still
    // mid-stream when the second host has started and fenced it: a zombie
    // that has run out of input sends nothing, so it never hears that it
    // was fenced (harmless, but nothing to test).
    let (input, src, dst) = setup(broker, 200_000);
    let job = Job::with_semantics(broker, &src, &dst, 200, "exactly-once");
    // The first host runs unbounded (it would never stop by itself), and
    // one record per plugin call, so that it is still mid-stream when the
    // second host fences it.
    let text = std::fs::read_to_string(&job.config).unwrap();
    let zombie_config = job.dir.path().join("zombie.toml");
    std::fs::write(
        &zombie_config,
        text.replace("bounded = true", "bounded = false")
            .replace("batch_size = 128", "batch_size = 1"),
    )
    .unwrap();
    let mut zombie = Command::new(weir_e2e::weir_binary())
        .args(["run", "--config", zombie_config.to_str().unwrap()])
        .env("WEIR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(job.dir.path().join("zombie.log")).unwrap())
        .spawn()
        .unwrap();
    // Let it commit some transactions.
    let watch: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    let t = Instant::now();
    while output_mark(&watch, &dst) < 5_000 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        zombie.try_wait().unwrap().is_none(),
        "the first host ended early"
    );

    // The second host, same transactional ids: its init_transactions
    // fences the first, whose next transactional request (a commit every
    // 200 ms, and it is mid-stream) Kafka answers with PRODUCER_FENCED.
    let second_start = Instant::now();
    let mut second = job.spawn(None);
    let zombie_status = weir_e2e::wait_for(&mut zombie, Duration::from_secs(60));
    let zombie_lag = second_start.elapsed();
    let zombie_log = std::fs::read_to_string(job.dir.path().join("zombie.log")).unwrap_or_default();
    let zombie_status = match zombie_status {
        Ok(s) => s,
        Err(e) => panic!("{e}; the zombie's log:\n{zombie_log}"),
    };
    let status = wait_for(&mut second, Duration::from_secs(180));
    let log = std::fs::read_to_string(job.dir.path().join("stderr.log")).unwrap_or_default();
    assert!(status.success(), "second host failed\n{log}");
    assert!(!zombie_status.success(), "the zombie was not fenced");
    assert!(
        zombie_log.contains("fenced"),
        "the zombie did not stop for being fenced:\n{zombie_log}"
    );
    let reason = zombie_log
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or("");
    println!(
        "zombie stopped {:.1} s after the second host started: {reason}",
        zombie_lag.as_secs_f64()
    );
    // A liveness bound, not a speed figure: a fenced host must not keep
    // running (and holding its partitions' output open) for long.
    assert!(
        zombie_lag < Duration::from_secs(10),
        "the fenced host ran on for {zombie_lag:?} after the new host started"
    );
    let out = broker.read_committed(&dst, PARTITIONS).unwrap();
    let checked = judge_exactly_once(&input, &out);
    let (aborted, open, _) = log_figures(broker, &dst);
    println!(
        "zombie: fenced ({zombie_status}); {checked} records checked, 0 duplicates, 0 lost; {aborted} aborted records, {open} open"
    );
}

/// Exactly-once across changes of `parallelism`: every start has another
/// number of workers (so other transactional ids and another split of the
/// partitions), each killed mid-stream; the committed output is exactly
/// the model.
#[test]
fn exactly_once_survives_parallelism_changes_and_kills() {
    let _serial = serial();
    let broker = Broker::shared();
    let (input, src, dst) = setup(broker, 60_000);
    let job = Job::with_semantics(broker, &src, &dst, 200, "exactly-once");
    let watch: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    let mut rng = rand::rng();
    let mut kills = 0;
    for workers in [3, 1, 4, 2] {
        job.set_parallelism(workers);
        let baseline = output_mark(&watch, &dst);
        let mut child = job.spawn(None);
        // Output of this run (more than the abort markers a start writes),
        // then a random moment before it has written a sixth of the job.
        let give_up = Instant::now() + Duration::from_secs(60);
        while output_mark(&watch, &dst) < baseline + 100 && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(5));
        }
        let deadline = Instant::now() + Duration::from_millis(rng.random_range(0..200));
        while Instant::now() < deadline
            && output_mark(&watch, &dst) - baseline < input.len() as i64 / 6
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
        }
        println!(
            "parallelism {workers}: killed after {} new output records",
            output_mark(&watch, &dst) - baseline
        );
    }
    assert!(kills >= 3, "only {kills} kills landed mid-stream");
    job.set_parallelism(3);
    let mut child = job.spawn(None);
    let status = wait_for(&mut child, Duration::from_secs(180));
    let log = std::fs::read_to_string(job.dir.path().join("stderr.log")).unwrap_or_default();
    assert!(status.success(), "final run failed: {status}\n{log}");
    let out = broker.read_committed(&dst, PARTITIONS).unwrap();
    let checked = judge_exactly_once(&input, &out);
    let (aborted, open, _) = log_figures(broker, &dst);
    println!(
        "exactly-once over parallelism 3, 1, 4, 2, 3: {kills} kill -9, {checked} records checked, 0 duplicates, 0 lost; {aborted} aborted records, {open} open"
    );
}

/// A run with fewer workers than the run before fences the transactional
/// ids it no longer uses: a zombie of the larger run holding such an id
/// (here a producer of the test's own, with an open transaction) can no
/// longer commit, and its output never becomes visible.
#[test]
fn exactly_once_fences_the_ids_of_a_larger_previous_run() {
    use rdkafka::producer::{BaseRecord, Producer};
    let _serial = serial();
    let broker = Broker::shared();
    let (input, src, dst) = setup(broker, 20_000);
    let job = Job::with_semantics(broker, &src, &dst, 200, "exactly-once");
    job.set_parallelism(3);
    let mut child = job.spawn(None);
    assert!(wait_for(&mut child, Duration::from_secs(120)).success());
    let recorded = job.dir.path().join("ck").join("eos").join("workers");
    assert_eq!(std::fs::read_to_string(&recorded).unwrap().trim(), "3");

    // The zombie: worker 2 of the three, its id `<prefix>-2`, in the
    // middle of a transaction.
    let zombie: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("transactional.id", format!("{dst}-2"))
            .create()
            .unwrap();
    zombie.init_transactions(Duration::from_secs(30)).unwrap();
    zombie.begin_transaction().unwrap();
    zombie
        .send(
            BaseRecord::<str, str, ()>::to(&dst)
                .key("zombie")
                .payload("1")
                .partition(0),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    zombie.flush(Duration::from_secs(10)).unwrap();

    job.set_parallelism(2);
    let mut child = job.spawn(None);
    let status = wait_for(&mut child, Duration::from_secs(120));
    let log = std::fs::read_to_string(job.dir.path().join("stderr.log")).unwrap_or_default();
    assert!(status.success(), "second run failed: {status}\n{log}");
    assert_eq!(std::fs::read_to_string(&recorded).unwrap().trim(), "2");

    let commit = zombie.commit_transaction(Duration::from_secs(30));
    assert!(commit.is_err(), "the zombie of worker 2 could still commit");
    println!(
        "the zombie's commit after the smaller run started: {}",
        commit.unwrap_err()
    );
    let out = broker.read_committed(&dst, PARTITIONS).unwrap();
    assert!(
        out.iter()
            .flatten()
            .all(|o| o.key.as_deref() != Some("zombie")),
        "the zombie's output is visible"
    );
    let checked = judge_exactly_once(&input, &out);
    println!("fenced worker 2's id of the larger run; {checked} records checked, exactly once");
}
