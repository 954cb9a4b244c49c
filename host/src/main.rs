//! The `weir` binary: parse the command line, load the config, set up
//! tracing, and call the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;
use weir::Config;
use weir::runtime::{PluginEngine, PluginModule};

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
    },
    /// Check that a module is a valid Weir plugin and describe it.
    CheckPlugin {
        /// The `.wasm` or `.wat` file.
        file: PathBuf,
    },
    /// The end-to-end benchmark: a native consume → produce loop, then Weir
    /// with the identity and running-count plugins, then exactly-once.
    Bench(weir::bench::BenchOptions),
}

fn init_tracing() {
    let filter = EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,librdkafka=warn,rdkafka=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::CheckPlugin { file } => check_plugin(file),
        Command::Bench(opts) => bench(opts),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let summary = runtime.block_on(weir::run(config, shutdown))?;
    let secs = summary.elapsed.as_secs_f64().max(1e-6);
    println!(
        "processed {} records, emitted {} records in {:.2}s ({:.0} records/s)",
        summary.records_in,
        summary.records_out,
        secs,
        summary.records_in as f64 / secs
    );
    for (topic, partition, offset) in &summary.positions {
        println!("  {topic}/{partition}: next offset {offset}");
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
    if let Some(out) = summary.embedded_output {
        println!(
            "output topic `{}` holds {} records; last value per key:",
            out.topic, out.records
        );
        for (k, v) in out.last_by_key {
            println!("  {k:>12} -> {v}");
        }
    }
    Ok(())
}

fn bench(opts: weir::bench::BenchOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(weir::bench::run(opts))?;
    Ok(())
}

fn check_plugin(file: PathBuf) -> anyhow::Result<()> {
    let engine = PluginEngine::new().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let module = PluginModule::load(&engine, &file)?;
    let size = std::fs::metadata(&file)
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    let r = module.report(size);
    println!(
        "{}: a valid Weir plugin (ABI version {})",
        r.path.display(),
        r.abi_version
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
    Ok(())
}
