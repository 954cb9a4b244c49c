//! Apache Kafka for the tests: one single-node KRaft broker (broker and
//! controller in one JVM) per test process, shared by every test in it.
//!
//! - The jars come from Maven Central through `tests/kafka/pom.xml`
//!   (`mvn dependency:copy-dependencies`), cached under
//!   `target/kafka/libs-<hash of the pom>/`, so a second run fetches
//!   nothing and a changed pom fetches anew.
//! - The broker runs on free loopback ports in a fresh log directory, with
//!   the settings one node needs for transactions and with short consumer
//!   group session timeouts (see [`server_properties`]).
//! - It never outlives the test process. A `static` is never dropped, so
//!   the JVM is started by a small `sh` watchdog whose stdin is a pipe held
//!   by this process: when the process ends in any way (success, panic,
//!   SIGKILL of the runner), the kernel closes the pipe, the watchdog's
//!   `cat` sees end of file, kills the JVM and removes the log directory.
//!
//! Tests use unique topic and group names ([`crate::topic`]), so they can
//! share the broker and run concurrently.

use crate::pki::Pki;
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The pom that pins the Kafka version.
fn pom() -> PathBuf {
    crate::repo_root().join("tests/kafka/pom.xml")
}

/// How long the broker may take to answer after the JVM starts.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Kills the JVM when this process is gone (stdin at end of file), then
/// removes the broker's directory. `$1` is that directory, the rest is
/// the JVM's command line.
const WATCHDOG: &str = r#"
dir=$1; shift
"$@" >"$dir/broker.out" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$dir/broker.pid.tmp" && mv "$dir/broker.pid.tmp" "$dir/broker.pid"
cat >/dev/null
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rm -rf "$dir"
"#;

/// The user of the SASL_SSL listener (SCRAM-SHA-256 and PLAIN).
pub const SASL_USER: &str = "weir";
/// Its password.
pub const SASL_PASSWORD: &str = "weir-test-password-5e1d";

/// The broker's listeners, all on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
struct Ports {
    /// PLAINTEXT, for the tests' own clients and most jobs.
    plaintext: u16,
    /// The KRaft controller.
    controller: u16,
    /// SASL_SSL with SCRAM-SHA-256, PLAIN and (unsecured) OAUTHBEARER.
    sasl_ssl: u16,
    /// SSL with client certificates required (mutual TLS).
    mtls: u16,
}

impl Ports {
    fn pick() -> Result<Ports> {
        Ok(Ports {
            plaintext: free_port()?,
            controller: free_port()?,
            sasl_ssl: free_port()?,
            mtls: free_port()?,
        })
    }
}

/// A running Apache Kafka broker.
pub struct Broker {
    /// Its listeners.
    ports: Ports,
    /// The CA and certificates of its TLS listeners.
    pki: Pki,
    /// The broker's directory: configuration, log4j output, data.
    dir: PathBuf,
    /// The JVM's pid (for the post-suite check and diagnostics).
    pid: u32,
    /// The write end of the watchdog's stdin: closed only when this
    /// process ends, which is what stops the broker.
    _watchdog: ChildStdin,
}

impl Broker {
    /// The broker shared by every test of this test binary, started on
    /// first use.
    pub fn shared() -> &'static Broker {
        static SHARED: OnceLock<Broker> = OnceLock::new();
        SHARED.get_or_init(|| {
            let started = Instant::now();
            let broker = Broker::start().unwrap_or_else(|e| panic!("Apache Kafka: {e:#}"));
            eprintln!(
                "Apache Kafka {} up at {} in {:.1} s (pid {})",
                kafka_version(),
                broker.bootstrap(),
                started.elapsed().as_secs_f64(),
                broker.pid
            );
            broker
        })
    }

    /// Starts a broker of its own (most tests want [`Broker::shared`]).
    pub fn start() -> Result<Broker> {
        let libs = kafka_libs()?;
        let mut last = None;
        // A port picked free can be taken before the JVM binds it.
        for _ in 0..3 {
            match Broker::start_once(&libs) {
                Ok(b) => return Ok(b),
                Err(e) => {
                    eprintln!("Apache Kafka did not start, retrying: {e:#}");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("three attempts"))
    }

    fn start_once(libs: &Path) -> Result<Broker> {
        let dir = tempfile::Builder::new()
            .prefix("weir-kafka-")
            .tempdir()?
            .keep();
        let ports = Ports::pick()?;
        let pki = Pki::generate(&dir.join("tls"))?;
        std::fs::write(
            dir.join("server.properties"),
            server_properties(ports, &dir.join("data"), &pki),
        )?;
        std::fs::write(
            dir.join("log4j2.xml"),
            log4j_config(&dir.join("broker.log")),
        )?;
        let classpath = format!("{}/*", libs.display());
        let log4j = format!("-Dlog4j2.configurationFile={}/log4j2.xml", dir.display());
        let format = Command::new("java")
            .args([
                "-cp",
                &classpath,
                &log4j,
                "kafka.tools.StorageTool",
                "format",
            ])
            .args(["-t", "d2VpcnRlc3RzLWNsdXN0ZQ", "--standalone", "-c"])
            .arg(dir.join("server.properties"))
            .arg("--add-scram")
            .arg(format!(
                "SCRAM-SHA-256=[name={SASL_USER},password={SASL_PASSWORD}]"
            ))
            .output()
            .context("run java (Kafka's StorageTool); is a JDK 17+ installed?")?;
        if !format.status.success() {
            bail!(
                "formatting the KRaft log directory failed: {}{}",
                String::from_utf8_lossy(&format.stdout),
                String::from_utf8_lossy(&format.stderr)
            );
        }
        let mut watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "weir-kafka-watchdog"])
            .arg(&dir)
            .arg("java")
            .args(jvm_options())
            .args(["-cp", &classpath, &log4j, "kafka.Kafka"])
            .arg(dir.join("server.properties"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start the broker's watchdog (sh)")?;
        let stdin = watchdog.stdin.take().expect("piped stdin");
        // The watchdog is reaped by nobody on purpose: it must outlive any
        // handle, and ends with this process.
        std::mem::forget(watchdog);
        let pid = wait_for_pid(&dir)?;
        let broker = Broker {
            ports,
            pki,
            dir,
            pid,
            _watchdog: stdin,
        };
        // On failure the broker is dropped here, which closes the
        // watchdog's stdin: the JVM is killed and its directory removed.
        broker.wait_until_ready()?;
        Ok(broker)
    }

    /// Waits until the broker creates a topic: metadata, the controller and
    /// the quorum all answer.
    fn wait_until_ready(&self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        for attempt in 0.. {
            let ready = format!("weir-harness-ready-{attempt}");
            if !self.alive() {
                bail!("the broker exited during start-up:\n{}", self.log_tail(40));
            }
            // A topic created and an offset committed: the controller, the
            // quorum and the group coordinator all answer.
            if std::net::TcpStream::connect(("127.0.0.1", self.ports.plaintext)).is_ok()
                && self.create_topic(&ready, 1).is_ok()
                && self.commit(&ready, &ready, &[(0, 0)]).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the broker did not answer within {START_TIMEOUT:?}:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        unreachable!()
    }

    /// Whether the JVM still runs.
    pub fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// The JVM's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The JVM's resident memory in KiB (Linux), for reports.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// `host:port` of the PLAINTEXT listener.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.ports.plaintext)
    }

    /// `host:port` of the SASL_SSL listener: SCRAM-SHA-256 and PLAIN for
    /// [`SASL_USER`], and OAUTHBEARER with unsecured tokens; its
    /// certificate is signed by [`Pki::ca`].
    pub fn bootstrap_sasl_ssl(&self) -> String {
        format!("127.0.0.1:{}", self.ports.sasl_ssl)
    }

    /// `host:port` of the SSL listener that requires a client certificate
    /// signed by [`Pki::ca`].
    pub fn bootstrap_mtls(&self) -> String {
        format!("127.0.0.1:{}", self.ports.mtls)
    }

    /// The CA and certificates of the TLS listeners.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The last `n` lines of the broker's log (for a failed test).
    /// The compression codec of every record batch of `topic`'s partition
    /// `partition`, as Kafka's own `DumpLogSegments` reads them from the
    /// broker's log files (`none`, `gzip`, `zstd`, ...).
    pub fn batch_codecs(&self, topic: &str, partition: i32) -> Result<Vec<String>> {
        let dir = self.dir.join("data").join(format!("{topic}-{partition}"));
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("{}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        segments.sort();
        let mut codecs = Vec::new();
        for segment in segments {
            let out = Command::new("java")
                .arg("-cp")
                .arg(format!("{}/*", kafka_libs()?.display()))
                .args(["kafka.tools.DumpLogSegments", "--files"])
                .arg(&segment)
                .output()
                .context("run Kafka's DumpLogSegments")?;
            let text = String::from_utf8_lossy(&out.stdout);
            codecs.extend(
                text.split("compresscodec: ")
                    .skip(1)
                    .filter_map(|rest| rest.split_whitespace().next())
                    .map(|c| c.to_lowercase()),
            );
        }
        Ok(codecs)
    }

    pub fn log_tail(&self, n: usize) -> String {
        let mut text = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
        text.push_str(&std::fs::read_to_string(self.dir.join("broker.out")).unwrap_or_default());
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// The pinned Kafka version, as the pom says.
pub fn kafka_version() -> String {
    let pom = std::fs::read_to_string(pom()).unwrap_or_default();
    pom.split("<kafka.version>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or("?")
        .to_string()
}

/// The broker's jars, fetched once into `target/kafka/`.
pub fn kafka_libs() -> Result<PathBuf> {
    let pom_text = std::fs::read(pom()).context("read tests/kafka/pom.xml")?;
    let hash = pom_text.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let cache = crate::repo_root().join("target/kafka");
    let libs = cache.join(format!("libs-{hash:016x}"));
    if libs.join(".complete").exists() {
        return Ok(libs);
    }
    std::fs::create_dir_all(&cache)?;
    // Fetch into a private folder and rename: test binaries may race here.
    let tmp = tempfile::Builder::new()
        .prefix("fetch-")
        .tempdir_in(&cache)?;
    eprintln!(
        "fetching Apache Kafka {} from Maven Central",
        kafka_version()
    );
    let out = Command::new("mvn")
        .args(["-q", "-B", "-f"])
        .arg(pom())
        .arg("dependency:copy-dependencies")
        .arg(format!("-DoutputDirectory={}", tmp.path().display()))
        .output()
        .context("run mvn (Maven) to fetch Apache Kafka; .ci/run installs it")?;
    if !out.status.success() {
        bail!(
            "mvn dependency:copy-dependencies failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::File::create(tmp.path().join(".complete"))?.flush()?;
    match std::fs::rename(tmp.path(), &libs) {
        Ok(()) => {}
        // Another test binary finished first: use its copy.
        Err(_) if libs.join(".complete").exists() => {}
        Err(e) => return Err(e).context(format!("rename into {}", libs.display())),
    }
    Ok(libs)
}

/// JVM options: a small heap and one GC thread on a 2-core machine.
fn jvm_options() -> Vec<String> {
    [
        "-Xms256m",
        "-Xmx768m",
        "-XX:+UseSerialGC",
        "-Djava.awt.headless=true",
    ]
    .map(String::from)
    .to_vec()
}

/// A free loopback port (free when asked; the broker binds it later).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits for the watchdog to write the JVM's pid.
fn wait_for_pid(dir: &Path) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = std::fs::read_to_string(dir.join("broker.pid")) {
            return s.trim().parse().context("broker.pid");
        }
        if Instant::now() > deadline {
            bail!("the watchdog did not start the JVM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One node that is broker and controller, with what transactions need on
/// one node (replication factors and min.isr of 1), few partitions for the
/// internal topics (fast first use), no automatic topic creation (a missing
/// topic is an error, as on most production clusters), and consumer group
/// timeouts short enough that a killed member's partitions move within
/// seconds (KIP-848's session timeout is the broker's).
///
/// Beside PLAINTEXT it has the two secured listeners users meet on managed
/// clusters: SASL_SSL (SCRAM-SHA-256 with the user made at format time,
/// PLAIN, and OAUTHBEARER validated by Kafka's unsecured-token handler) and
/// SSL with client certificates required. SCRAM-SHA-512 is left off on
/// purpose (the "wrong mechanism" test asks for it).
fn server_properties(ports: Ports, data: &Path, pki: &Pki) -> String {
    let Ports {
        plaintext: port,
        controller,
        sasl_ssl,
        mtls,
    } = ports;
    format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},SASL_SSL://127.0.0.1:{sasl_ssl},SSL://127.0.0.1:{mtls}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},SASL_SSL://127.0.0.1:{sasl_ssl},SSL://127.0.0.1:{mtls}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
listener.name.ssl.ssl.client.auth=required
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-256,PLAIN,OAUTHBEARER
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{SASL_USER}=\"{SASL_PASSWORD}\";
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"{SASL_USER}\";
log.dirs={data}
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.consumer.min.session.timeout.ms=1000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=100
group.consumer.heartbeat.interval.ms=500
group.min.session.timeout.ms=1000
",
        data = data.display(),
        keystore = pki.broker_keystore.display(),
        ca = pki.ca.display(),
    )
}

/// log4j2: INFO and above to a file in the broker's directory.
fn log4j_config(file: &Path) -> String {
    format!(
        r#"<Configuration status="warn">
  <Appenders>
    <File name="file" fileName="{}">
      <PatternLayout pattern="%d %p %c{{1}}: %m%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Root level="info"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"#,
        file.display()
    )
}

/// The partition the Java producer's default partitioner picks for each
/// key among `partitions`: `toPositive(murmur2(key)) % partitions`,
/// computed by Kafka's own `Utils` in a JVM.
pub fn java_partitions(keys: &[String], partitions: i32) -> Result<Vec<i32>> {
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("JavaPartitions.java");
    std::fs::write(
        &source,
        r#"import org.apache.kafka.common.utils.Utils;
import java.nio.charset.StandardCharsets;
public class JavaPartitions {
    public static void main(String[] args) {
        int n = Integer.parseInt(args[0]);
        for (int i = 1; i < args.length; i++) {
            byte[] key = args[i].getBytes(StandardCharsets.UTF_8);
            System.out.println(Utils.toPositive(Utils.murmur2(key)) % n);
        }
    }
}
"#,
    )?;
    let out = Command::new("java")
        .arg("-cp")
        .arg(format!("{}/*", kafka_libs()?.display()))
        .arg(&source)
        .arg(partitions.to_string())
        .args(keys)
        .output()
        .context("run java")?;
    if !out.status.success() {
        bail!("java: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().context("a partition number"))
        .collect()
}
