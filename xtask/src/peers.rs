//! `cargo xtask peers [ARGS]`: the peer benchmark (`bench/src/peers/`).
//! Builds what it compares: the release `weir` and `weir-peers`, the
//! example plugins, the Kafka Streams and Flink jobs (Maven, into their
//! `target/` folders) and the Bytewax virtualenv (`bench/peers/bytewax/
//! setup.sh`); then runs `weir-peers ARGS` from the repository root.

use super::{cargo, plugins, setup, step};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    setup::run(root)?;
    plugins::build_all(root)?;
    step("cargo build --release -p weir -p weir-bench");
    check(
        Command::new(cargo())
            .args(["build", "--release", "-p", "weir", "-p", "weir-bench"])
            .current_dir(root),
    )?;
    for peer in ["kstreams", "flink"] {
        let pom = format!("bench/peers/{peer}/pom.xml");
        step(&format!("mvn package {pom}"));
        check(
            Command::new("mvn")
                .args([
                    "-q",
                    "-B",
                    "-f",
                    &pom,
                    "package",
                    "dependency:copy-dependencies",
                ])
                .args(["-DoutputDirectory=target/libs", "-DincludeScope=runtime"])
                .current_dir(root),
        )?;
    }
    step("bench/peers/bytewax/setup.sh");
    check(
        Command::new("bash")
            .arg("bench/peers/bytewax/setup.sh")
            .current_dir(root),
    )?;
    step("weir-peers");
    check(
        Command::new(root.join("target/release/weir-peers"))
            .args(args)
            .current_dir(root),
    )
}

fn check(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}
