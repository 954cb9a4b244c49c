//! Shared support for Weir's end-to-end tests.
//!
//! - [`Broker`] ([`broker`]): Apache Kafka, one broker per test process,
//!   shared by its tests; [`client`]: topic creation, input, reading a
//!   topic back per partition (as written, or `read_committed`, judged two
//!   independent ways), committed offsets.
//! - [`log_view`]: the read_committed rule applied to the raw log.
//! - [`model`]: the running-count judge; [`windows`]: the tumbling-window
//!   model and judge; [`hostile`]: hostile plugins.
//! - [`keyed_input`], [`job_config`]: keyed input with a known partition per
//!   key, and a job config pointing at the broker and the example plugins.

pub mod broker;
pub mod client;
pub mod hostile;
pub mod log_view;
pub mod model;
pub mod pki;
pub mod s3;
pub mod windows;

pub use broker::Broker;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `weir` binary that `cargo test --workspace` builds beside the test
/// executables (`target/<profile>/weir`).
pub fn weir_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("weir");
    assert!(
        bin.exists(),
        "{} is not built: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// Starts `weir run --config CONFIG` with `WEIR_LOG=log_level`, its
/// stderr written to `dir/stderr.log` (read back with [`weir_log`]).
pub fn spawn_weir(config: &Path, dir: &Path, log_level: &str) -> Child {
    spawn_weir_with(config, dir, log_level, &[])
}

/// [`spawn_weir`] with `args` after the config (`--from-savepoint`, ...);
/// stdout (the summary) goes to `dir/stdout.log`.
pub fn spawn_weir_with(config: &Path, dir: &Path, log_level: &str, args: &[&str]) -> Child {
    Command::new(weir_binary())
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("WEIR_LOG", log_level)
        .stdout(std::fs::File::create(dir.join("stdout.log")).expect("stdout.log"))
        .stderr(std::fs::File::create(dir.join("stderr.log")).expect("stderr.log"))
        .spawn()
        .expect("start weir")
}

/// What a [`spawn_weir`] process has logged so far.
pub fn weir_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
}

/// Waits for a child process, killing it after `limit` (a hang guard).
pub fn wait_for(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if Instant::now() > deadline {
            let stacks = thread_stacks(child.id());
            child.kill()?;
            bail!("weir did not finish within {limit:?} (hang guard){stacks}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every thread's stack of a hung process, when gdb is installed (CI
/// installs it): a hang guard that fires then says where it stopped.
///
/// gdb writes to a file, not a pipe: when `pid` is this very process (an
/// in-process job), gdb stops every thread of it, the one that would read
/// a pipe included, and would block on a full pipe forever.
pub fn thread_stacks(pid: u32) -> String {
    let file = match tempfile::NamedTempFile::new() {
        Ok(f) => f,
        Err(e) => return format!("\n(no thread stacks: {e})"),
    };
    let status = file.reopen().and_then(|out| {
        Command::new("gdb")
            .args([
                "-p",
                &pid.to_string(),
                "-batch",
                "-ex",
                "thread apply all bt 30",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(std::process::Stdio::null())
            .status()
    });
    match status {
        Ok(_) => format!(
            "\n--- thread stacks of pid {pid} (gdb) ---\n{}",
            std::fs::read_to_string(file.path()).unwrap_or_default()
        ),
        Err(e) => format!("\n(no thread stacks: gdb: {e})"),
    }
}

/// Tracing output for tests (once per process; `WEIR_LOG` filters).
pub fn init_tracing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// One input record.
#[derive(Debug, Clone)]
pub struct Input {
    pub partition: i32,
    pub key: String,
    pub value: String,
    pub timestamp: Option<i64>,
}

/// One output record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<String>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// `n` records over `keys` keys; key `k<i>` always goes to partition
/// `i % partitions`, so a key's records keep their order in one partition.
pub fn keyed_input(n: usize, keys: usize, partitions: i32) -> Vec<Input> {
    (0..n)
        .map(|i| {
            let k = (i * 7919 + i / 3) % keys;
            Input {
                partition: (k as i32) % partitions,
                key: format!("k{k}"),
                value: format!("value-{i}-of-k{k}"),
                timestamp: None,
            }
        })
        .collect()
}

/// A unique topic name.
pub fn topic(prefix: &str) -> String {
    format!("{prefix}-{}", rand::random::<u32>())
}

/// Config text for a job on `broker` from `source` to `sink` with `plugin`.
/// `extra` is appended to `[pipeline]` unless it opens its own table.
pub fn job_config(
    bootstrap: &str,
    source: &str,
    sink: &str,
    plugin: &str,
    parallelism: usize,
    extra: &str,
) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{source}-group"
connect_timeout = "15s"
[kafka.consumer_options]
"auto.offset.reset" = "earliest"

[source]
topics = ["{source}"]
bounded = true

[sink]
topics = ["{sink}"]

[pipeline]
plugin = "{plugin}"
parallelism = {parallelism}
batch_size = 256

[status]
interval = "0s"
{extra}
"#
    )
}

/// Parses config text with the repository root as base directory.
pub fn parse_config(text: &str) -> Result<weir::Config> {
    Ok(weir::Config::parse(text, &repo_root())?)
}

/// Runs a job to its end (bounded) in this process.
pub async fn run_job(text: &str) -> Result<weir::JobSummary> {
    init_tracing();
    let config = parse_config(text)?;
    let summary = tokio::time::timeout(
        Duration::from_secs(180),
        weir::run(config, std::future::pending()),
    )
    .await
    .context("job did not finish (hang guard)")??;
    Ok(summary)
}

/// Whether two snapshots hold the same plugin state: module, globals,
/// memory and event time. The monotonic clock reading is left out: two
/// instances take their snapshots at different moments.
pub fn same_state(
    a: &weir::runtime::snapshot::Snapshot,
    b: &weir::runtime::snapshot::Snapshot,
) -> bool {
    (a.module_sha256, &a.globals, &a.memory, a.time.event_time)
        == (b.module_sha256, &b.globals, &b.memory, b.time.event_time)
}

/// A running-count output as counts per key, in read order.
pub fn counts_by_key(parts: &[Vec<Output>]) -> std::collections::BTreeMap<String, Vec<u64>> {
    values_by_key(parts)
        .into_iter()
        .map(|(k, v)| {
            let counts = v
                .iter()
                .map(|c| c.parse().expect("a decimal count"))
                .collect();
            (k, counts)
        })
        .collect()
}

/// Groups output values by key, in read order.
pub fn values_by_key(parts: &[Vec<Output>]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut m: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for part in parts {
        for o in part {
            m.entry(o.key.clone().unwrap_or_default())
                .or_default()
                .push(o.value.clone().unwrap_or_default());
        }
    }
    m
}

/// One HTTP/1.0 request without a body to `addr` (the metrics endpoint,
/// the S3 test server): the status code (0 if there is none) and the body.
pub fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}
