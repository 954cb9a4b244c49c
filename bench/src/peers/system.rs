//! The systems compared and the command that runs each on one job. Every
//! system reads the input from the earliest offset, runs until killed, and
//! writes per input record one output record with the input's key:
//! the value unchanged (identity) or the key's running count in decimal.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// A system under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    /// `weir-native-peer`: the job on librdkafka alone, the floor.
    Native,
    /// `target/release/weir` with `mirror.wat` or `running_count.wasm`.
    Weir,
    /// Kafka Streams 4.1 (`bench/peers/kstreams`).
    Kstreams,
    /// Flink 2.x with flink-connector-kafka in a MiniCluster (`bench/peers/flink`).
    Flink,
    /// Bytewax (`bench/peers/bytewax`).
    Bytewax,
}

/// The job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Job {
    /// Every record written unchanged.
    Identity,
    /// Running count per key.
    Count,
}

/// The delivery guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Guarantee {
    AtLeastOnce,
    ExactlyOnce,
}

/// One run's parameters.
pub struct RunSpec {
    /// The repository root (where `target/` and `bench/peers/` are).
    pub root: PathBuf,
    pub bootstrap: String,
    pub input: String,
    pub output: String,
    pub job: Job,
    pub guarantee: Guarantee,
    pub parallelism: usize,
    /// Extra `[kafka.options]` lines for Weir (`KEY=VALUE`).
    pub weir_options: Vec<String>,
    /// The `weir` binary.
    pub weir_binary: PathBuf,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Native => "native",
            System::Weir => "weir",
            System::Kstreams => "kstreams",
            System::Flink => "flink",
            System::Bytewax => "bytewax",
        }
    }

    /// The command for `spec`, or `None` if the system does not offer its
    /// guarantee. Fails if the system is not built.
    pub fn command(self, spec: &RunSpec) -> Result<Option<Command>> {
        let peers = spec.root.join("bench/peers");
        let java = |dir: &str, jar: &str, class: &str, heap: &str| -> Result<Command> {
            let target = peers.join(dir).join("target");
            let jar = target.join(jar);
            if !jar.exists() {
                bail!("{} is not built: run `cargo xtask peers`", jar.display());
            }
            let mut c = Command::new("java");
            c.arg(heap)
                .arg("-cp")
                .arg(format!("{}:{}/libs/*", jar.display(), target.display()))
                .arg(class);
            Ok(c)
        };
        let common = |c: &mut Command| {
            c.args(["--bootstrap", &spec.bootstrap])
                .args(["--input", &spec.input])
                .args(["--output", &spec.output])
                .args(["--job", spec.job.name()])
                .args(["--guarantee", spec.guarantee.name()])
                .args(["--parallelism", &spec.parallelism.to_string()]);
        };
        Ok(Some(match self {
            System::Native => {
                let binary = spec.weir_binary.with_file_name("weir-native-peer");
                if !binary.exists() {
                    bail!("{} is not built: run `cargo xtask peers`", binary.display());
                }
                let mut c = Command::new(binary);
                common(&mut c);
                c.args(["--group", &format!("{}-group", spec.output)]);
                c
            }
            System::Weir => weir_command(spec)?,
            System::Kstreams => {
                let mut c = java(
                    "kstreams",
                    "kstreams-peer.jar",
                    "weir.peers.KStreamsPeer",
                    "-Xmx512m",
                )?;
                common(&mut c);
                c.args(["--app-id", &format!("{}-app", spec.output)]);
                c
            }
            System::Flink => {
                let mut c = java(
                    "flink",
                    "flink-peer.jar",
                    "weir.peers.FlinkPeer",
                    "-Xmx768m",
                )?;
                common(&mut c);
                c.args(["--group", &format!("{}-group", spec.output)]);
                c
            }
            System::Bytewax => {
                if spec.guarantee == Guarantee::ExactlyOnce {
                    return Ok(None);
                }
                let dir = peers.join("bytewax");
                if !dir.join(".venv/bin/python").exists() {
                    bail!(
                        "{}/.venv is missing: run `cargo xtask peers`",
                        dir.display()
                    );
                }
                // run.sh sets up a recovery directory (1 s snapshots) and
                // execs `python -m bytewax.run`: one process, N worker threads.
                let mut c = Command::new("bash");
                c.arg(dir.join("run.sh"))
                    .arg(spec.parallelism.to_string())
                    .env("PEER_BOOTSTRAP", &spec.bootstrap)
                    .env("PEER_INPUT", &spec.input)
                    .env("PEER_OUTPUT", &spec.output)
                    .env("PEER_JOB", spec.job.name());
                c
            }
        }))
    }
}

/// `weir run` on a config written for `spec` (in a temp directory that
/// lives as long as the process needs it: the checkpoints go there).
fn weir_command(spec: &RunSpec) -> Result<Command> {
    let weir = &spec.weir_binary;
    if !weir.exists() {
        bail!("{} is not built: run `cargo xtask peers`", weir.display());
    }
    let dir = tempfile::Builder::new()
        .prefix("weir-peers-")
        .tempdir()?
        .keep();
    let (plugin, semantics) = (
        match spec.job {
            Job::Identity => "mirror.wat",
            Job::Count => "running_count.wasm",
        },
        spec.guarantee.name(),
    );
    let text = format!(
        r#"[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{output}-group"
{options}
[kafka.consumer_options]
"auto.offset.reset" = "earliest"
[source]
topics = ["{input}"]
[sink]
topics = ["{output}"]
semantics = "{semantics}"
transactional_id_prefix = "{output}"
[pipeline]
plugins_dir = "{plugins}"
plugin = "{plugin}"
parallelism = {parallelism}
batch_size = 1024
[checkpoint]
enabled = true
interval = "1s"
directory = "{checkpoints}"
[status]
interval = "0s"
"#,
        bootstrap = spec.bootstrap,
        output = spec.output,
        input = spec.input,
        plugins = spec.root.join("plugins").display(),
        parallelism = spec.parallelism,
        checkpoints = dir.join("ck").display(),
        options = weir_options(&spec.weir_options)?,
    );
    let config = dir.join("job.toml");
    std::fs::write(&config, text).context("write the Weir job config")?;
    let mut c = Command::new(weir);
    c.arg("run")
        .arg("--config")
        .arg(config)
        .env("WEIR_LOG", "warn");
    Ok(c)
}

/// `[kafka.options]` from `KEY=VALUE` pairs.
fn weir_options(pairs: &[String]) -> Result<String> {
    let mut text = String::from("[kafka.options]\n");
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--weir-option {pair}: expected KEY=VALUE");
        };
        text.push_str(&format!("{k:?} = {v:?}\n"));
    }
    Ok(text)
}

impl Job {
    pub fn name(self) -> &'static str {
        match self {
            Job::Identity => "identity",
            Job::Count => "count",
        }
    }
}

impl Guarantee {
    pub fn name(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::ExactlyOnce => "exactly-once",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "alo",
            Guarantee::ExactlyOnce => "eos",
        }
    }
}
