//! The `weir` binary: parse the command line, load the config, set up
//! tracing, and call the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;
use weir::Config;
use weir::runtime::{PluginEngine, PluginModule};
use weir_plugin_sdk::abi;

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Kafka in, WebAssembly plugins, Kafka out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the job described by a config file.
    Run {
        /// The config file.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        /// Start from this savepoint (a name under the checkpoint
        /// directory's `savepoints/`, or a path with a `/`): its offsets
        /// and states win over the start position and the checkpoints.
        #[arg(long, value_name = "NAME|PATH")]
        from_savepoint: Option<weir::checkpoint::savepoint::SavepointRef>,
        /// When the job stops cleanly (SIGTERM, SIGINT, the end of a
        /// bounded input), write savepoint NAME after the final checkpoint.
        #[arg(long, visible_alias = "stop-with-savepoint", value_name = "NAME")]
        savepoint_on_stop: Option<String>,
    },
    /// Take a savepoint of the running job from its next complete
    /// checkpoint, the job going on (with `--stop`: stop it cleanly and
    /// leave the savepoint from the final checkpoint). Asks its admin
    /// endpoint (`metrics.listen`) and waits until the savepoint is
    /// written.
    Savepoint {
        /// The savepoint's name (letters, digits, `-`, `_`, `.`).
        name: String,
        /// Stop the job cleanly and leave the savepoint at the stop (the
        /// way to upgrade through a savepoint).
        #[arg(long)]
        stop: bool,
        /// The running job's config file.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        /// How long to wait for the savepoint (default: 30 s and the job's
        /// `pipeline.stop_timeout` with `--stop`, two checkpoint intervals
        /// without).
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Inspect the checkpoints of a job: list them, show one, verify them.
    Checkpoints {
        #[command(subcommand)]
        action: CheckpointsAction,
        /// The job's config file (its `[checkpoint] directory`).
        #[arg(long, short, default_value = "config.toml", global = true)]
        config: PathBuf,
    },
    /// Switch the running job to the module its config file names now, at
    /// a checkpoint boundary, keeping offsets and state (asks its admin
    /// endpoint, `metrics.listen`; a module that cannot start is rolled
    /// back).
    Reload {
        /// The running job's config file.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Check that a module is a valid Weir plugin and describe it.
    CheckPlugin {
        /// The `.wasm` or `.wat` file.
        file: PathBuf,
        /// Also run it on sample records: two batches, a snapshot and a
        /// restore, whose output must match the live instance's.
        #[arg(long)]
        smoke: bool,
        /// A plugin config entry for the smoke run's `weir_init`, as
        /// KEY=VALUE (repeatable). VALUE is read as a TOML value, exactly
        /// as in `[pipeline.config]`: `n=3` arrives as `3`, `word="a b"` as
        /// `a b` (a TOML string loses its quotes), `rule={on=true}` as
        /// `rule.on` = `true`; text that is not a TOML value (`word=a b`)
        /// arrives as it is.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_entry)]
        config: Vec<Vec<(String, String)>>,
        /// The smoke run's sink topics, in order (repeatable; the count is
        /// what `weir.sink_topics()` returns).
        #[arg(long = "sink-topic", value_name = "TOPIC", default_value = "out")]
        sink_topics: Vec<String>,
    },
    /// Create a plugin folder (source, build script, README) that builds
    /// and passes `check-plugin --smoke` as created.
    NewPlugin {
        /// The plugin's language.
        #[arg(long)]
        lang: weir::scaffold::Language,
        /// The plugin's name: lowercase letters, digits, `-`, `_`.
        name: String,
        /// The plugins directory to create `<NAME>/` in.
        #[arg(long, default_value = "plugins")]
        dir: PathBuf,
        /// Weir's `plugin-sdk` folder (Rust plugins depend on it by path);
        /// defaults to the one this binary was built from.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CheckpointsAction {
    /// Every checkpoint: completion time, partitions, state bytes (full
    /// and delta); and the exactly-once state files.
    List,
    /// One checkpoint per partition: next offset, state file, size, full
    /// or delta (and the checkpoint the delta applies to).
    Show {
        /// The checkpoint id (`chk-<id>`).
        id: u64,
    },
    /// Read every file a checkpoint needs and check every checksum and
    /// delta link; exits non-zero if any is unusable.
    Verify {
        /// Only this checkpoint (default: all, and the exactly-once state
        /// files).
        id: Option<u64>,
    },
}

/// Logs go to stderr, filtered by `WEIR_LOG`; `WEIR_LOG_FORMAT=json` makes
/// them one JSON object a line, with the current span and the span list
/// (plugin, topic, partition) as fields, for log collectors.
fn init_tracing() {
    let filter = EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,librdkafka=warn,rdkafka=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let format = std::env::var("WEIR_LOG_FORMAT").unwrap_or_default();
    match format.as_str() {
        "json" => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
        _ => {
            logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            if !format.is_empty() && format != "text" {
                tracing::warn!(
                    "WEIR_LOG_FORMAT={format:?} is neither `text` nor `json`; logging text"
                );
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run {
            config,
            from_savepoint,
            savepoint_on_stop,
        } => run(
            config,
            weir::pipeline::SavepointOptions {
                from: from_savepoint,
                on_stop: savepoint_on_stop,
            },
        ),
        Command::Savepoint {
            name,
            stop,
            config,
            timeout,
        } => savepoint(&name, stop, &config, timeout),
        Command::Reload { config } => reload(&config),
        Command::Checkpoints { action, config } => checkpoints(action, &config),
        Command::CheckPlugin {
            file,
            smoke,
            config,
            sink_topics,
        } => check_plugin(
            file,
            smoke.then(|| (config.into_iter().flatten().collect(), sink_topics)),
        ),
        Command::NewPlugin {
            lang,
            name,
            dir,
            sdk,
        } => new_plugin(lang, &name, &dir, sdk.as_deref()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf, options: weir::pipeline::SavepointOptions) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    if let Some(name) = &options.on_stop {
        weir::checkpoint::savepoint::check_name(name).map_err(anyhow::Error::msg)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let summary = runtime.block_on(run_until_stopped(config, options))?;
    let secs = summary.elapsed.as_secs_f64().max(1e-6);
    println!(
        "processed {} records, emitted {} records in {:.2}s ({:.0} records/s)",
        summary.records_in,
        summary.records_out,
        secs,
        summary.records_in as f64 / secs
    );
    for (tp, offset) in &summary.positions {
        println!("  {tp}: next offset {offset}");
    }
    for t in &summary.tasks {
        let took = t
            .finished_after
            .map(|d| format!(", reached its end after {:.3}s", d.as_secs_f64()))
            .unwrap_or_default();
        println!(
            "  {}/{}: {} records in, {} faults handled ({} skipped, {} dead-lettered){took}",
            t.topic, t.partition, t.records_in, t.faults, t.skipped, t.dead_lettered
        );
    }
    if let Some((name, at)) = &summary.savepoint {
        println!("savepoint {name} written: {}", at.display());
    }
    if let Some(out) = summary.embedded_output {
        print_demo_output(&out, summary.checkpoints, summary.restarts)?;
    }
    Ok(())
}

fn checkpoints(action: CheckpointsAction, config: &std::path::Path) -> anyhow::Result<()> {
    use weir::checkpoint::inspect;
    let config = Config::load(config)?;
    anyhow::ensure!(
        !weir::checkpoint::folder::is_url(&config.checkpoint.directory),
        "`weir checkpoints` reads a local checkpoint directory; {} is an object store (not supported by this command yet)",
        config.checkpoint.directory.display()
    );
    let dir = config.checkpoint_dir();
    anyhow::ensure!(
        dir.is_dir(),
        "no checkpoint directory at {} ([checkpoint] directory in {})",
        dir.display(),
        config
            .path
            .as_deref()
            .unwrap_or(std::path::Path::new("?"))
            .display()
    );
    match action {
        CheckpointsAction::List => print!("{}", inspect::list(&dir)?),
        CheckpointsAction::Show { id } => print!("{}", inspect::show(&dir, id)?),
        CheckpointsAction::Verify { id } => {
            let (report, sound) = inspect::verify(&dir, id)?;
            print!("{report}");
            anyhow::ensure!(sound, "some checkpoint state is unusable (see above)");
        }
    }
    Ok(())
}

/// Runs the job. The first SIGTERM or SIGINT asks it to stop cleanly
/// (final checkpoint, commits, flush); a second signal, or
/// `pipeline.stop_timeout` passing first, ends the process at once with a
/// non-zero status: whatever the stop did not finish is replayed on the
/// next start, as after a crash.
async fn run_until_stopped(
    config: Config,
    options: weir::pipeline::SavepointOptions,
) -> anyhow::Result<weir::JobSummary> {
    use tokio::signal::unix::{SignalKind, signal};
    let stop_timeout = config.pipeline.stop_timeout;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut next_signal = async move || -> (&'static str, i32) {
        tokio::select! {
            _ = term.recv() => ("SIGTERM", libc::SIGTERM),
            _ = int.recv() => ("SIGINT", libc::SIGINT),
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let path = config.path.clone().unwrap_or_default();
    let load = move || Config::load(&path);
    let job = weir::pipeline::hot_reload::run_reloading(load, options, async {
        let _ = stop_rx.await;
    });
    tokio::pin!(job);
    tokio::select! {
        summary = &mut job => return Ok(summary?),
        (name, _) = next_signal() => {
            tracing::info!(
                "{name}: stopping: finishing in-flight batches, final checkpoint and commit, within {}",
                humantime::format_duration(stop_timeout)
            );
            let _ = stop_tx.send(());
        }
    }
    tokio::select! {
        summary = &mut job => Ok(summary?),
        (name, number) = next_signal() => {
            eprintln!("error: second signal ({name}): stopping at once; work since the last checkpoint is replayed on the next start");
            std::process::exit(128 + number);
        }
        _ = tokio::time::sleep(stop_timeout) => {
            eprintln!(
                "error: the job did not stop within pipeline.stop_timeout ({}): its final checkpoint, commits or flush did not finish; work since the last complete checkpoint is replayed on the next start",
                humantime::format_duration(stop_timeout)
            );
            std::process::exit(1);
        }
    }
}

/// `weir savepoint NAME [--stop]`: asks the running job's admin endpoint
/// for a savepoint (and to stop, with `--stop`), then waits for the
/// savepoint's metadata to appear.
fn savepoint(
    name: &str,
    stop: bool,
    path: &std::path::Path,
    timeout: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    use weir::checkpoint::savepoint::{SavepointRef, Savepoints, check_name};
    check_name(name).map_err(anyhow::Error::msg)?;
    let config = Config::load(path)?;
    let (call, wait) = if stop {
        ("stop-with-savepoint", config.pipeline.stop_timeout)
    } else {
        ("savepoint", 2 * config.checkpoint.interval)
    };
    let text = admin_call(
        &config,
        path,
        &format!("{call}?name={name}"),
        &format!(
            "stop the job with SIGTERM after starting it with `weir run --savepoint-on-stop {name}`"
        ),
    )?;
    println!("{text}");
    let which = SavepointRef::Named(name.to_string());
    let savepoints = Savepoints::new(&config.checkpoint_location()?);
    let wait = timeout.unwrap_or(wait + std::time::Duration::from_secs(30));
    let deadline = std::time::Instant::now() + wait;
    while !savepoints.exists(&which)? {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "savepoint {name} was not written within {} (see the job's log)",
            humantime::format_duration(wait)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let written = savepoints.read(&which)?;
    println!(
        "savepoint {name} written: {} ({} partitions, module {})",
        written.at.display(),
        written.partitions.len(),
        &written.metadata.module_sha256[..12]
    );
    Ok(())
}

/// `weir reload`: asks the running job to switch modules.
fn reload(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let text = admin_call(
        &config,
        path,
        "reload",
        "stop the job (SIGTERM) and start it again",
    )?;
    println!("{text}");
    Ok(())
}

/// `POST /<call>` to the running job's admin endpoint: its answer, or an
/// error naming what to do instead (`otherwise`) when there is no endpoint.
fn admin_call(
    config: &Config,
    path: &std::path::Path,
    call: &str,
    otherwise: &str,
) -> anyhow::Result<String> {
    let mut addr = config.metrics.listen.with_context(|| {
        format!(
            "{}: metrics.listen is not set, so the running job has no admin endpoint; set it, or {otherwise}",
            path.display()
        )
    })?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/{call}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let answer = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(&url)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await?;
        Ok::<_, reqwest::Error>((response.status(), response.text().await?))
    });
    let (status, text) =
        answer.with_context(|| format!("asking the running job at {url} (is it running?)"))?;
    anyhow::ensure!(
        status.is_success(),
        "the job refused ({status}): {}",
        text.trim()
    );
    Ok(text.trim().to_string())
}

/// The embedded demo's last value per key, next to how many records of the
/// sample input carry that key. For a counting plugin they must be equal,
/// failure drill or not: the state survived the restart exactly.
fn print_demo_output(
    out: &weir::kafka::embedded::OutputSummary,
    checkpoints: u64,
    restarts: u64,
) -> anyhow::Result<()> {
    println!(
        "output topic `{}` holds {} records; last value per key (records of that key in the input):",
        out.topic, out.records
    );
    let mut wrong = Vec::new();
    let mut counted = true;
    for (k, v) in &out.last_by_key {
        let expected = out.expected.get(k).copied().unwrap_or(0);
        println!("  {k:>12} -> {v} ({expected})");
        match v.trim().parse::<u64>() {
            Ok(n) if n != expected => wrong.push(format!("{k}: {n}, input has {expected}")),
            Ok(_) => {}
            Err(_) => counted = false,
        }
    }
    if !counted {
        return Ok(());
    }
    anyhow::ensure!(
        wrong.is_empty() && out.last_by_key.len() == out.expected.len(),
        "the final counts differ from the input: {}",
        wrong.join("; ")
    );
    println!(
        "every final count equals the input's; {checkpoints} checkpoints completed, {restarts} failed checkpoint(s) replayed from the last complete one"
    );
    Ok(())
}

/// `KEY=VALUE` of `--set`, as the config entries `[pipeline.config]`
/// would give for `KEY = VALUE` (several for an inline table).
fn parse_entry(s: &str) -> Result<Vec<(String, String)>, String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    let key = key.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let table = toml::Table::from_iter([(key.to_string(), value)]);
    Ok(weir::config::plugin_config_entries(&table))
}

fn new_plugin(
    lang: weir::scaffold::Language,
    name: &str,
    dir: &std::path::Path,
    sdk: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let created = weir::scaffold::create(lang, name, dir, sdk)?;
    println!("created {}:", created.dir.display());
    for f in &created.files {
        println!("  {}", f.display());
    }
    println!("next:");
    println!(
        "  {}          # builds {}",
        created.dir.join("build.sh").display(),
        created.module.display()
    );
    println!("  weir check-plugin --smoke {}", created.module.display());
    Ok(())
}

/// `(config entries, sink topics)` for a smoke run.
type Smoke = (Vec<(String, String)>, Vec<String>);

fn check_plugin(file: PathBuf, smoke: Option<Smoke>) -> anyhow::Result<()> {
    let engine = PluginEngine::new().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let module = PluginModule::load(&engine, &file)?;
    let size = std::fs::metadata(&file)
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    let r = module.report(size);
    println!(
        "{}: a valid Weir plugin (ABI version {})",
        r.path.display(),
        weir::runtime::plugin_module::abi_version_name(r.abi_version)
    );
    println!("  size:    {} bytes", r.size);
    println!("  sha256:  {}", r.sha256);
    println!("  memory:  {}", r.memory);
    println!(
        "  init:    {}",
        if r.has_init { "yes (weir_init)" } else { "no" }
    );
    println!("  exports:");
    for e in &r.exports {
        println!("    {e}");
    }
    println!("  imports:");
    if r.imports.is_empty() {
        println!("    (none)");
    }
    for i in &r.imports {
        println!("    {i}");
    }
    for w in &r.warnings {
        println!("  warning: {w}");
    }
    if let Some((config, topics)) = smoke {
        let report = weir::runtime::smoke::smoke_run(&module, &config, &topics)
            .with_context(|| format!("{}: smoke run failed", file.display()))?;
        println!("  smoke run: passed");
        for (i, (input, output)) in report.input.iter().zip(&report.output).enumerate() {
            println!(
                "    batch {}: {} records in, {} out",
                i + 1,
                input.len(),
                output.len()
            );
            for r in input {
                println!("      in  {}", render_record(r, &["(source)".into()]));
            }
            for o in output {
                println!("      out {}", render_record(o, &topics));
            }
        }
        println!(
            "    snapshot: {} bytes of memory, {} globals; restored, and batch 2 gave the same output",
            report.memory_bytes, report.globals
        );
    }
    Ok(())
}

/// One output record of a smoke run, on one line.
fn render_record(r: &weir::runtime::smoke::SampleRecord, topics: &[String]) -> String {
    let text = |b: &Option<Vec<u8>>| match b {
        Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
        None => "null".into(),
    };
    let topic = topics
        .get(r.topic as usize)
        .map(String::as_str)
        .unwrap_or("?");
    let partition = match r.partition {
        abi::ANY_PARTITION => "by key".to_string(),
        p => p.to_string(),
    };
    let timestamp = match r.timestamp {
        abi::NO_TIMESTAMP => "none".to_string(),
        t => t.to_string(),
    };
    let mut line = format!(
        "topic={topic} partition={partition} timestamp={timestamp} key={} value={}",
        text(&r.key),
        text(&r.value)
    );
    for (n, v) in &r.headers {
        line.push_str(&format!(" [{}={}]", String::from_utf8_lossy(n), text(v)));
    }
    line
}
