//! Builds the example plugins and writes each module to
//! `plugins/<name>.wasm`, where `config.toml`, the tests and the benchmarks
//! name them:
//!
//! - Rust: the `plugins/` wasm32 workspace (`cargo build --release --target
//!   wasm32-unknown-unknown`); `plugins/running-count` → `running_count.wasm`.
//! - C: every `plugins/c-<name>/` folder, its `*.c` files compiled with
//!   clang for `wasm32-wasi` against wasi-libc as a reactor, with
//!   `plugin-sdk/c/` on the include path → `c_<name>.wasm`.
//! - AssemblyScript: every `plugins/as-<name>/index.ts`, compiled with the
//!   `asc` pinned in `plugin-sdk/assemblyscript/package-lock.json`
//!   (`cargo xtask setup` runs `npm ci` there) → `as_<name>.wasm`.
//! - Go: every `plugins/go-<name>/` module, built by `go build
//!   -buildmode=c-shared` for `GOOS=wasip1 GOARCH=wasm` against the SDK in
//!   `plugin-sdk/go` (a `replace` in its go.mod; no network) →
//!   `go_<name>.wasm`.
//! - WAT (`plugins/*.wat`, `plugins/wat-<name>/*.wat`) needs no build: the
//!   host loads text modules directly.
//!
//! C, AssemblyScript and Go modules are rebuilt only when their inputs
//! (sources, the header, helper or SDK, the command line, the compiler's
//! version) change. `WEIR_CLANG` names the clang to use (default `clang`),
//! `WEIR_NODE` the Node.js (default `node`), `WEIR_GO` the Go (default
//! `go`, 1.24 or later). A missing toolchain is an error that says
//! what to install.

use anyhow::{Context, Result, bail};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// How the C plugins are compiled (after `clang`, before the sources).
pub const C_FLAGS: &[&str] = &[
    "--target=wasm32-wasi",
    "-mexec-model=reactor",
    "-O2",
    "-Wall",
    "-Wextra",
    "-Wl,--strip-all",
];

/// How the AssemblyScript plugins are compiled (after the entry file).
const AS_FLAGS: &[&str] = &[
    "-O3",
    "--runtime",
    "incremental",
    "--use",
    "abort=weirAbort",
];

/// How the Go plugins are built (after `go build`, before `-o`).
pub const GO_FLAGS: &[&str] = &["-buildmode=c-shared", "-trimpath", "-ldflags=-s -w"];

/// Where `npm ci` puts the pinned compiler.
pub const ASC: &str = "plugin-sdk/assemblyscript/node_modules/assemblyscript/bin/asc.js";

/// Builds every example plugin.
pub fn build_all(root: &Path) -> Result<()> {
    let plugins = root.join("plugins");
    let work = root.join("target").join("plugins");
    crate::step("building the Rust example plugins");
    build_rust(root, &plugins)?;
    crate::step("building the C example plugins");
    build_c(root, &plugins, &work)?;
    crate::step("building the AssemblyScript example plugins");
    build_assemblyscript(root, &plugins, &work)?;
    crate::step("building the Go example plugins");
    build_go(root, &plugins, &work)
}

fn build_rust(root: &Path, plugins: &Path) -> Result<()> {
    let target_dir = root.join("target").join("plugins");
    let mut cmd = Command::new(crate::cargo());
    cmd.args(["build", "--release", "--manifest-path"])
        .arg(plugins.join("Cargo.toml"))
        .args(["--target", "wasm32-unknown-unknown", "--target-dir"])
        .arg(&target_dir);
    // Nothing of this task's own build leaks into the wasm build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE")
            || ["RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"].contains(&key.as_str())
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().context("run cargo for the plugins")?;
    if !status.success() {
        bail!(
            "building the Rust example plugins failed (is the wasm32-unknown-unknown target installed? `rustup target add wasm32-unknown-unknown`, or `cargo xtask setup`)"
        );
    }
    let out = target_dir.join("wasm32-unknown-unknown").join("release");
    for entry in std::fs::read_dir(&out).context("plugin output dir")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            copy_if_changed(&path, &plugins.join(path.file_name().expect("file")))?;
        }
    }
    Ok(())
}

/// Plugin folders `plugins/<prefix><name>/`, sorted, as (folder, module
/// name `<prefix with _><name with _>`).
fn plugin_folders(plugins: &Path, prefix: &str) -> Vec<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = std::fs::read_dir(plugins)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .filter_map(|p| {
                    let name = p.file_name()?.to_str()?.to_string();
                    name.starts_with(prefix)
                        .then(|| (p.clone(), name.replace('-', "_")))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The clang to use.
pub fn clang() -> String {
    std::env::var("WEIR_CLANG").unwrap_or_else(|_| "clang".into())
}

/// The Node.js to use.
pub fn node() -> String {
    std::env::var("WEIR_NODE").unwrap_or_else(|_| "node".into())
}

/// A tool's `--version` output, if it runs.
pub fn version_of(tool: &str) -> Option<String> {
    let o = Command::new(tool).arg("--version").output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn build_c(root: &Path, plugins: &Path, work: &Path) -> Result<()> {
    let folders = plugin_folders(plugins, "c-");
    if folders.is_empty() {
        return Ok(());
    }
    let clang = clang();
    let Some(version) = version_of(&clang) else {
        bail!(
            "building the C example plugins needs clang (`{clang}` did not run): {}",
            crate::setup::INSTALL_C
        );
    };
    let include = root.join("plugin-sdk").join("c");
    for (folder, name) in folders {
        let sources = files_in(&folder, "c");
        if sources.is_empty() {
            continue;
        }
        let dest = plugins.join(format!("{name}.wasm"));
        let mut inputs = sources.clone();
        inputs.extend(files_in(&include, "h"));
        let stamp = stamp_of(&[&version, &C_FLAGS.join(" ")], &inputs);
        if up_to_date(work, &name, stamp, &dest) {
            continue;
        }
        let tmp = temp_output(work, &name)?;
        let out = Command::new(&clang)
            .args(C_FLAGS)
            .arg("-I")
            .arg(&include)
            .arg("-o")
            .arg(&tmp)
            .args(&sources)
            .current_dir(root)
            .output()
            .with_context(|| format!("run {clang}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            bail!(
                "building the C plugin {} failed{}:\n{stderr}",
                folder.display(),
                c_hint(&stderr)
            );
        }
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            eprintln!("{name}: {line}");
        }
        finish(work, &name, stamp, &tmp, &dest)?;
    }
    Ok(())
}

/// What to install, judging by clang's complaint.
fn c_hint(stderr: &str) -> String {
    let missing = if stderr.contains("wasm-ld")
        && [
            "doesn't exist",
            "No such file",
            "not found",
            "invalid linker",
        ]
        .iter()
        .any(|m| stderr.contains(m))
    {
        Some("the wasm linker wasm-ld (Debian package lld)")
    } else if stderr.contains("libclang_rt.builtins-wasm32") {
        Some("the wasm32 compiler-rt builtins (Debian package libclang-rt-dev-wasm32)")
    } else if (stderr.contains("file not found") && stderr.contains("#include <"))
        || stderr.contains("crt1-reactor.o")
        || stderr.contains("-lc")
    {
        Some("the C library for wasm32-wasi (Debian package wasi-libc)")
    } else if stderr.contains("unknown target") || stderr.contains("No available targets") {
        Some("a clang built with the WebAssembly target")
    } else {
        None
    };
    match missing {
        Some(what) => format!(" (missing {what}? {})", crate::setup::INSTALL_C),
        None => String::new(),
    }
}

fn build_assemblyscript(root: &Path, plugins: &Path, work: &Path) -> Result<()> {
    let folders: Vec<(PathBuf, String)> = plugin_folders(plugins, "as-")
        .into_iter()
        .filter(|(f, _)| f.join("index.ts").is_file())
        .collect();
    if folders.is_empty() {
        return Ok(());
    }
    let helper_dir = root.join("plugin-sdk").join("assemblyscript");
    let node = node();
    let Some(node_version) = version_of(&node) else {
        bail!(
            "building the AssemblyScript example plugins needs Node.js 20 or later (`{node}` did not run): {}",
            crate::setup::INSTALL_NODE
        );
    };
    let asc = root.join(ASC);
    if !asc.is_file() {
        bail!(
            "building the AssemblyScript example plugins needs the pinned compiler: run `npm ci` in plugin-sdk/assemblyscript (or `cargo xtask setup`)"
        );
    }
    let compiler_version =
        std::fs::read_to_string(helper_dir.join("node_modules/assemblyscript/package.json"))
            .unwrap_or_default();
    let helper = files_in(&helper_dir, "ts");
    for (folder, name) in folders {
        let dest = plugins.join(format!("{name}.wasm"));
        let mut inputs = files_in(&folder, "ts");
        inputs.extend(helper.iter().cloned());
        let stamp = stamp_of(
            &[&node_version, &compiler_version, &AS_FLAGS.join(" ")],
            &inputs,
        );
        if up_to_date(work, &name, stamp, &dest) {
            continue;
        }
        let tmp = temp_output(work, &name)?;
        let entry = folder.strip_prefix(root)?.join("index.ts");
        let out = Command::new(&node)
            .arg(&asc)
            .arg(&entry)
            .args(AS_FLAGS)
            .arg("-o")
            .arg(&tmp)
            .current_dir(root)
            .output()
            .with_context(|| format!("run {node}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() || !tmp.is_file() {
            let _ = std::fs::remove_file(&tmp);
            bail!(
                "building the AssemblyScript plugin {} failed:\n{text}",
                folder.display()
            );
        }
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            eprintln!("{name}: {line}");
        }
        finish(work, &name, stamp, &tmp, &dest)?;
    }
    Ok(())
}

/// The Go to use.
pub fn go() -> String {
    std::env::var("WEIR_GO").unwrap_or_else(|_| "go".into())
}

fn build_go(root: &Path, plugins: &Path, work: &Path) -> Result<()> {
    let folders: Vec<(PathBuf, String)> = plugin_folders(plugins, "go-")
        .into_iter()
        .filter(|(f, _)| f.join("go.mod").is_file())
        .collect();
    if folders.is_empty() {
        return Ok(());
    }
    let go = go();
    let version = Command::new(&go)
        .arg("version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let Some(version) = version else {
        bail!(
            "building the Go example plugins needs Go 1.24 or later (`{go}` did not run): install it from https://go.dev/dl/ or your distribution, or set WEIR_GO"
        );
    };
    let mut sdk = files_in(&root.join("plugin-sdk").join("go"), "go");
    sdk.push(root.join("plugin-sdk").join("go").join("go.mod"));
    for (folder, name) in folders {
        let dest = plugins.join(format!("{name}.wasm"));
        let mut inputs = files_in(&folder, "go");
        inputs.push(folder.join("go.mod"));
        inputs.extend(sdk.iter().cloned());
        let stamp = stamp_of(&[&version, &GO_FLAGS.join(" ")], &inputs);
        if up_to_date(work, &name, stamp, &dest) {
            continue;
        }
        let tmp = temp_output(work, &name)?;
        let out = Command::new(&go)
            .arg("build")
            .args(GO_FLAGS)
            .arg("-o")
            .arg(&tmp)
            .arg(".")
            .current_dir(&folder)
            .env("GOOS", "wasip1")
            .env("GOARCH", "wasm")
            .env("GOPROXY", "off")
            .output()
            .with_context(|| format!("run {go}"))?;
        if !out.status.success() || !tmp.is_file() {
            let _ = std::fs::remove_file(&tmp);
            bail!(
                "building the Go plugin {} failed ({version}; -buildmode=c-shared for wasip1 needs Go 1.24 or later):\n{}{}",
                folder.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        finish(work, &name, stamp, &tmp, &dest)?;
    }
    Ok(())
}

/// Files directly in `dir` with extension `ext`, sorted.
fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A fingerprint of a build: its settings and its inputs' bytes.
fn stamp_of(settings: &[&str], inputs: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    settings.hash(&mut h);
    for p in inputs {
        p.hash(&mut h);
        std::fs::read(p).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

fn stamp_path(work: &Path, name: &str) -> PathBuf {
    work.join("stamps").join(format!("{name}.stamp"))
}

/// The module exists and was built from exactly these inputs.
fn up_to_date(work: &Path, name: &str, stamp: u64, dest: &Path) -> bool {
    dest.is_file()
        && std::fs::read_to_string(stamp_path(work, name))
            .is_ok_and(|s| s.trim() == format!("{stamp:016x} {}", digest(dest)))
}

/// A cheap digest of a file, so that a module replaced by hand is rebuilt.
fn digest(path: &Path) -> String {
    let mut h = DefaultHasher::new();
    std::fs::read(path).unwrap_or_default().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A per-process output path.
fn temp_output(work: &Path, name: &str) -> Result<PathBuf> {
    let dir = work.join("lang");
    std::fs::create_dir_all(&dir)?;
    Ok(dir.join(format!("{name}.{}.wasm", std::process::id())))
}

fn finish(work: &Path, name: &str, stamp: u64, tmp: &Path, dest: &Path) -> Result<()> {
    copy_if_changed(tmp, dest)?;
    let _ = std::fs::remove_file(tmp);
    std::fs::create_dir_all(work.join("stamps"))?;
    std::fs::write(
        stamp_path(work, name),
        format!("{stamp:016x} {}\n", digest(dest)),
    )?;
    Ok(())
}

fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let new = std::fs::read(from).with_context(|| format!("read {}", from.display()))?;
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        // Write then rename: a running test may be reading the old module.
        let tmp = to.with_extension(format!("wasm.{}.tmp", std::process::id()));
        std::fs::write(&tmp, new)?;
        std::fs::rename(&tmp, to)?;
    }
    Ok(())
}
