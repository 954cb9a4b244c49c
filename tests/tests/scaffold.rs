//! `weir new-plugin` in each language: the folder it creates builds with
//! its own `build.sh` and passes `weir check-plugin --smoke` as created,
//! and the module forwards every record unchanged.
//!
//! The Go folder's go.mod replaces the SDK module with this repository's
//! `plugin-sdk/go`, so its build needs no network either.
//!
//! The AssemblyScript folder gets the project's pinned compiler (a symlink
//! to `plugin-sdk/assemblyscript/node_modules`, the same version its
//! package.json names) instead of an `npm install` from the registry, so
//! the test needs no network.

use anyhow::{Context, Result, ensure};
use std::path::Path;
use std::process::Command;
use weir::runtime::smoke::smoke_run;
use weir::runtime::{PluginEngine, PluginModule};
use weir_e2e::{repo_root, weir_binary};

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// Scaffolds `name` in `lang`, builds it, smoke-runs it; returns the module.
fn scaffold_and_build(plugins: &Path, lang: &str, name: &str) -> Result<std::path::PathBuf> {
    let created = run(Command::new(weir_binary())
        .args(["new-plugin", "--lang", lang, name, "--dir"])
        .arg(plugins))?;
    let dir = plugins.join(name);
    ensure!(
        created.contains(&dir.display().to_string()),
        "new-plugin did not name {}: {created}",
        dir.display()
    );
    for f in ["build.sh", "README.md"] {
        ensure!(dir.join(f).is_file(), "{name}: no {f}");
    }
    if lang == "assemblyscript" {
        let pinned = repo_root().join("plugin-sdk/assemblyscript/node_modules");
        ensure!(
            pinned.join("assemblyscript").is_dir(),
            "run `npm ci` in plugin-sdk/assemblyscript first"
        );
        std::os::unix::fs::symlink(&pinned, dir.join("node_modules"))?;
    }
    let mut build = Command::new("sh");
    build.arg(dir.join("build.sh"));
    // The scaffold's cargo build is a user's build, not part of this one.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME") || key == "RUSTFLAGS" {
            build.env_remove(key);
        }
    }
    let built = run(&mut build)?;
    let module = plugins.join(format!("{}.wasm", name.replace('-', "_")));
    ensure!(
        module.is_file(),
        "{name}: build.sh did not write {}: {built}",
        module.display()
    );
    let smoke = run(Command::new(weir_binary())
        .args(["check-plugin", "--smoke"])
        .arg(&module)
        .env("WEIR_LOG", "warn"))?;
    ensure!(
        smoke.contains("a valid Weir plugin (ABI version 1.")
            && smoke.contains("smoke run: passed"),
        "{name}: {smoke}"
    );
    ensure!(!smoke.contains("warning:"), "{name}: {smoke}");
    Ok(module)
}

fn check_pass_through(module: &Path) -> Result<()> {
    let engine = PluginEngine::new().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let module = PluginModule::load(&engine, module)?;
    let report = smoke_run(&module, &[], &["out".to_string()])?;
    for (input, output) in report.input.iter().zip(&report.output) {
        ensure!(input.len() == output.len(), "{input:?} -> {output:?}");
        for (i, o) in input.iter().zip(output) {
            ensure!(
                o.topic == 0
                    && o.partition == -1
                    && o.key == i.key
                    && o.value == i.value
                    && o.headers == i.headers
                    && o.timestamp == i.timestamp,
                "not forwarded unchanged: {i:?} -> {o:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn new_plugin_builds_and_passes_the_smoke_run_in_every_language() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let plugins = tmp.path().join("plugins");
    for (lang, name) in [
        ("rust", "my-rust-plugin"),
        ("c", "my-c-plugin"),
        ("assemblyscript", "my-as-plugin"),
        ("go", "my-go-plugin"),
    ] {
        let module = scaffold_and_build(&plugins, lang, name).with_context(|| lang.to_string())?;
        check_pass_through(&module).with_context(|| lang.to_string())?;
        let size = std::fs::metadata(&module)?.len();
        println!("{lang}: {} bytes, smoke run passed", size);
    }
    // It never overwrites.
    let again = Command::new(weir_binary())
        .args(["new-plugin", "--lang", "c", "my-c-plugin", "--dir"])
        .arg(&plugins)
        .output()?;
    ensure!(!again.status.success());
    ensure!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    Ok(())
}
