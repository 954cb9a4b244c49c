//! Weir's project tasks, run as `cargo xtask <task>` (the alias is in
//! `.cargo/config.toml`). The host crate builds nothing but itself; what
//! the examples, the tests and CI need is built or installed here, on
//! request:
//!
//! - `setup`: the prerequisites of the example plugins and the tests
//!   (wasm32 targets, clang/lld/wasi-libc, Node.js and the pinned
//!   AssemblyScript compiler, a JDK and Maven for Apache Kafka), installed
//!   when this runs as root, otherwise named with the command that installs
//!   them ([`setup`]).
//! - `plugins`: the example plugins in Rust, C and AssemblyScript, written
//!   to `plugins/<name>.wasm` ([`plugins`]).
//! - `bindings [--check]`: the ABI constants in the C header and the
//!   AssemblyScript helper, generated from `plugin-sdk/src/abi.rs`
//!   ([`bindings`]); `--check` fails if the committed files differ.
//! - `peers [ARGS]`: Weir beside Kafka Streams, Flink and Bytewax on one
//!   Kafka broker ([`peers`]; BENCHMARKS.md).
//! - `test [ARGS]`: all of the above (bindings checked), then
//!   `cargo test --workspace --no-fail-fast ARGS`. This is the README's
//!   test command and what CI runs.

mod bindings;
mod peers;
mod plugins;
mod setup;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Weir's project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install (as root) or name (otherwise) what the plugins and tests need.
    Setup,
    /// Build the example plugins into plugins/<name>.wasm.
    Plugins,
    /// Regenerate the C and AssemblyScript ABI constants from abi.rs.
    Bindings {
        /// Fail instead of writing when the committed files differ.
        #[arg(long)]
        check: bool,
    },
    /// Build the peers (Maven, a Python venv) and Weir, run weir-peers.
    Peers {
        /// Debug builds (a smoke run: the figures mean nothing).
        #[arg(long)]
        dev: bool,
        /// Passed on to `weir-peers` (`--help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, check the bindings, build the plugins, run every test.
    Test {
        /// Passed on to `cargo test --workspace`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli.task) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    let root = root();
    match task {
        Task::Setup => setup::run(&root),
        Task::Plugins => plugins::build_all(&root),
        Task::Bindings { check } => bindings::run(&root, check),
        Task::Peers { dev, args } => peers::run(&root, dev, &args),
        Task::Test { args } => {
            setup::run(&root)?;
            bindings::run(&root, true)?;
            plugins::build_all(&root)?;
            step("cargo test --workspace --no-fail-fast");
            // Every test binary runs even after one fails, so that one
            // failure does not hide the others.
            let status = Command::new(cargo())
                .args(["test", "--workspace", "--no-fail-fast"])
                .args(&args)
                .current_dir(&root)
                .status()
                .context("run cargo test")?;
            if !status.success() {
                bail!("cargo test --workspace failed ({status})");
            }
            Ok(())
        }
    }
}

/// The repository root (this crate's parent folder).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository root")
        .to_path_buf()
}

/// The cargo that runs this task.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Announces a step.
fn step(what: &str) {
    eprintln!("xtask: {what}");
}
