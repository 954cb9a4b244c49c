//! `cargo xtask peers [ARGS]`: the peer benchmark (`bench/src/peers/`).
//! Builds what it compares: the release `weir`, `weir-peers` and
//! `weir-native-peer` (the floor), the example plugins, the Kafka Streams
//! and Flink jobs (Maven, into their `target/` folders) and the Bytewax
//! virtualenv (`bench/peers/bytewax/setup.sh`); then runs `weir-peers ARGS`
//! from the repository root.

use super::{cargo, plugins, setup, step};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

/// `dev`: debug builds (CI's smoke run), otherwise release.
pub fn run(root: &Path, dev: bool, args: &[String]) -> Result<()> {
    setup::run(root)?;
    plugins::build_all(root)?;
    let profile = if dev { "debug" } else { "release" };
    step(&format!("cargo build ({profile}) -p weir -p weir-bench"));
    let mut build = Command::new(cargo());
    build.args(["build", "-p", "weir", "-p", "weir-bench"]);
    if !dev {
        build.arg("--release");
    }
    check(build.current_dir(root))?;
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
        Command::new(root.join(format!("target/{profile}/weir-peers")))
            .arg("--weir-binary")
            .arg(format!("target/{profile}/weir"))
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
