//! Metrics and health through the real binary: a job with `[metrics]
//! listen` set is scraped over HTTP, the exposition is parsed with a
//! Prometheus text parser, and the values that are known are asserted
//! exactly: records in per partition and out after a known input, lag 0
//! once it is consumed, the assigned partitions, and about one completed
//! checkpoint per interval; `promtool check metrics` passes the text.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use weir_e2e::{Broker, keyed_input, repo_root, spawn_weir, topic, wait_for, weir_log};

const PARTITIONS: i32 = 4;
const RECORDS: usize = 8_000;
const INTERVAL_MS: u64 = 300;

/// `GET path`: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    weir_e2e::http(addr, "GET", path)
}

/// Waits until `/healthz` answers (the job runs), failing if weir exits
/// or a minute passes.
fn wait_healthy(addr: SocketAddr, child: &mut std::process::Child, dir: &std::path::Path) {
    let t = Instant::now();
    while get(addr, "/healthz").map(|(s, _)| s).ok() != Some(200) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "weir exited:\n{}",
            weir_log(dir)
        );
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "/healthz never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Samples by name, as `(labels, value)`.
type Samples = HashMap<String, Vec<(HashMap<String, String>, f64)>>;

/// `promtool check metrics` on an exposition: Prometheus's own linter
/// (names, units, help, types). `cargo xtask setup` unpacks it.
fn promtool_check(body: &str) {
    let tool = repo_root().join("target/tools/prometheus/usr/bin/promtool");
    let mut child = std::process::Command::new(&tool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask setup`", tool.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scrape_text(addr: SocketAddr) -> String {
    let (status, body) = get(addr, "/metrics").unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn scrape(addr: SocketAddr) -> Samples {
    let body = scrape_text(addr);
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{body}"));
    let mut out = Samples::new();
    for s in scrape.samples {
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => continue,
        };
        let labels = s
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.entry(s.metric).or_default().push((labels, value));
    }
    out
}

/// The value of `name` for partition `p` (or the only value, `p = None`).
fn value(m: &Samples, name: &str, p: Option<i32>) -> f64 {
    let samples = m
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in the scrape"));
    samples
        .iter()
        .find(|(l, _)| p.is_none_or(|p| l.get("partition") == Some(&p.to_string())))
        .unwrap_or_else(|| panic!("{name} has no sample for partition {p:?}: {samples:?}"))
        .1
}

fn total(m: &Samples, name: &str) -> f64 {
    m.get(name).map_or(0.0, |v| v.iter().map(|(_, x)| x).sum())
}

#[test]
fn a_running_job_exposes_exact_counts_lag_and_checkpoints() {
    let broker = Broker::shared();
    let (src, dst) = (topic("metrics-in"), topic("metrics-out"));
    broker.create_topic(&src, PARTITIONS).unwrap();
    broker.create_topic(&dst, PARTITIONS).unwrap();
    let input = keyed_input(RECORDS, 64, PARTITIONS);
    broker.produce(&src, &input).unwrap();
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
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
plugin = "running_count.wasm"
parallelism = 2
[checkpoint]
enabled = true
interval = "{INTERVAL_MS}ms"
directory = "ck"
[status]
interval = "0s"
[metrics]
listen = "{addr}"
# A loaded CI machine may run a 300 ms checkpoint late.
ready_checkpoint_intervals = 10
"#,
        bootstrap = broker.bootstrap(),
        plugins = repo_root().join("plugins").display(),
    );
    let config = dir.path().join("job.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = spawn_weir(&config, dir.path(), "info");

    // Health first: the endpoint answers once the job runs.
    let t = Instant::now();
    wait_healthy(addr, &mut child, dir.path());
    // Then everything consumed.
    let m = loop {
        let m = scrape(addr);
        if total(&m, "weir_records_in_total") as usize == RECORDS {
            break m;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "the input was not consumed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for p in 0..PARTITIONS {
        let want = input.iter().filter(|r| r.partition == p).count() as f64;
        assert_eq!(
            value(&m, "weir_records_in_total", Some(p)),
            want,
            "records in, partition {p}"
        );
        assert_eq!(
            value(&m, "weir_consumer_lag_records", Some(p)),
            0.0,
            "lag, partition {p}"
        );
        assert!(value(&m, "weir_plugin_memory_bytes", Some(p)) >= 65536.0);
    }
    assert_eq!(
        total(&m, "weir_records_out_total") as usize,
        RECORDS,
        "one count per record"
    );
    assert_eq!(
        value(&m, "weir_assigned_partitions", None),
        PARTITIONS as f64
    );
    assert!(
        value(&m, "weir_plugin_call_duration_seconds", None) > 0.0,
        "no plugin call timed"
    );
    assert_eq!(total(&m, "weir_plugin_faults_total"), 0.0);
    assert_eq!(value(&m, "weir_checkpoints_failed_total", None), 0.0);
    for (_, labels_and_values) in m.iter() {
        for (labels, _) in labels_and_values {
            assert_eq!(
                labels.get("plugin").map(String::as_str),
                Some("running_count.wasm")
            );
        }
    }

    // About one checkpoint per interval, idle or not.
    let (c0, t0) = (
        value(&scrape(addr), "weir_checkpoints_completed_total", None),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(3));
    let m = scrape(addr);
    let (c1, secs) = (
        value(&m, "weir_checkpoints_completed_total", None),
        t0.elapsed().as_secs_f64(),
    );
    let expected = secs * 1000.0 / INTERVAL_MS as f64;
    assert!(
        (c1 - c0) >= expected * 0.5 && (c1 - c0) <= expected + 1.0,
        "{} checkpoints in {secs:.1} s at {INTERVAL_MS} ms intervals",
        c1 - c0
    );
    let age = value(&m, "weir_last_checkpoint_age_seconds", None);
    assert!(
        age < 10.0 * INTERVAL_MS as f64 / 1000.0,
        "last checkpoint {age} s old"
    );
    let (status, body) = get(addr, "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");
    promtool_check(&scrape_text(addr));
    println!(
        "scraped: {RECORDS} records in and out, lag 0 on {PARTITIONS} partitions, {} checkpoints in {secs:.1} s ({expected:.1} expected), last {age:.3} s ago, last took {:.4} s and wrote {} bytes",
        c1 - c0,
        value(&m, "weir_last_checkpoint_duration_seconds", None),
        value(&m, "weir_last_checkpoint_size_bytes", None),
    );

    // SAFETY: kill(2) on the child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_for(&mut child, Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status}\n{}", weir_log(dir.path()));
}

/// A port that is taken fails the job at once, naming the field.
#[test]
fn a_taken_port_is_a_clear_error() {
    let broker = Broker::shared();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = topic("metrics-port");
    broker.create_topic(&src, 1).unwrap();
    let text = format!(
        "[kafka]\nbootstrap_servers = \"{}\"\n[source]\ntopics = [\"{src}\"]\n[sink]\ntopics = [\"{src}\"]\n[pipeline]\nplugins_dir = \"{}\"\nplugin = \"running_count.wasm\"\n[metrics]\nlisten = \"{addr}\"\n",
        broker.bootstrap(),
        repo_root().join("plugins").display()
    );
    let config = dir.path().join("job.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = spawn_weir(&config, dir.path(), "warn");
    let status = wait_for(&mut child, Duration::from_secs(30)).unwrap();
    let log = weir_log(dir.path());
    assert!(!status.success());
    assert!(
        log.contains("metrics.listen") && log.contains(&addr.to_string()),
        "{log}"
    );
}

/// `/readyz` fails while a partition task waits to restart, naming it; the
/// fault that made it wait is counted by kind.
#[test]
fn readyz_fails_while_a_partition_waits_to_restart() {
    let broker = Broker::shared();
    let job = weir_e2e::hostile::poisoned_job(broker, "trap", 200, 2, &[100]).unwrap();
    let (dir, src, dst) = (job.dir, job.src, job.dst);
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
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
plugin = "trap.wat"
parallelism = 1
restart_attempts = 3
restart_backoff = "60s"
[checkpoint]
enabled = true
interval = "200ms"
directory = "ck"
[status]
interval = "0s"
[metrics]
listen = "{addr}"
"#,
        bootstrap = broker.bootstrap(),
        plugins = dir.path().display(),
    );
    let config = dir.path().join("job.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = spawn_weir(&config, dir.path(), "info");
    let t = Instant::now();
    let traps = || {
        scrape(addr)["weir_plugin_faults_total"]
            .iter()
            .find(|(l, _)| l.get("kind").map(String::as_str) == Some("trap"))
            .map(|(_, v)| *v)
    };
    // The task also waits, for no time, while it replays a faulted batch
    // one record per call to find the record; the 60 s wait comes once the
    // record is found and its fault counted.
    loop {
        // (Not ready for another reason first, e.g. no checkpoint yet.)
        if let Ok((503, body)) = get(addr, "/readyz")
            && body.contains("waiting to restart")
            && traps().is_some()
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "weir exited:\n{}",
            weir_log(dir.path())
        );
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "/readyz never failed with the fault counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, why) = get(addr, "/readyz").unwrap();
    assert_eq!(code, 503, "ready again within the 60 s backoff: {why}");
    assert!(why.contains(&format!("{src}/0")), "{why}");
    assert_eq!(
        traps(),
        Some(1.0),
        "the poison record's fault, counted once"
    );
    println!(
        "/readyz while partition 0 waits 60 s to restart: 503 {}",
        why.trim()
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Before anything is consumed the lag is the whole backlog, exactly: the
/// job's only worker is stuck in its first plugin call (the first record
/// sends `endless_loop` into a loop its 20 s time limit would end), so no
/// partition's position moves while the broker holds 60 records in each.
#[test]
fn lag_is_the_exact_backlog_before_anything_is_consumed() {
    let broker = Broker::shared();
    let job = weir_e2e::hostile::poisoned_job(broker, "endless_loop", 120, 2, &[0, 1]).unwrap();
    let (dir, src, dst) = (job.dir, job.src, job.dst);
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
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
[limits]
batch_timeout = "20s"
[status]
interval = "0s"
[metrics]
listen = "{addr}"
"#,
        bootstrap = broker.bootstrap(),
        plugins = dir.path().display(),
    );
    let config = dir.path().join("job.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = spawn_weir(&config, dir.path(), "info");
    wait_healthy(addr, &mut child, dir.path());
    let m = scrape(addr);
    for p in 0..2 {
        assert_eq!(
            value(&m, "weir_consumer_lag_records", Some(p)),
            60.0,
            "partition {p}"
        );
        assert_eq!(
            value(&m, "weir_records_in_total", Some(p)),
            0.0,
            "partition {p}"
        );
    }
    println!("lag before consuming: 60 and 60 records, exactly the backlog");
    child.kill().unwrap();
    child.wait().unwrap();
}
