//! Builds the example plugins (the `plugins/` wasm32 workspace) so that
//! `cargo run` and `cargo test` never need a manual step, and copies each
//! module to `plugins/<name>.wasm`, where `config.toml` names them.
//!
//! Set `WEIR_SKIP_PLUGIN_BUILD=1` to skip (e.g. when the wasm32 target is not
//! installed and only the host is wanted).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let plugins = root.join("plugins");
    let sdk = root.join("plugin-sdk");
    println!("cargo:rerun-if-env-changed=WEIR_SKIP_PLUGIN_BUILD");
    for dir in [&plugins, &sdk.join("src"), &sdk.join("Cargo.toml")] {
        rerun_if_changed(dir);
    }
    if std::env::var_os("WEIR_SKIP_PLUGIN_BUILD").is_some() {
        return;
    }
    ensure_wasm_target();
    let target_dir = root.join("target").join("plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .arg("--target")
        .arg("wasm32-unknown-unknown")
        .arg("--target-dir")
        .arg(&target_dir);
    // Do not leak the host build's settings into the wasm build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE")
            || key == "RUSTFLAGS"
            || key == "RUSTC_WRAPPER"
            || key == "RUSTC_WORKSPACE_WRAPPER"
            || key == "TARGET"
            || key == "HOST"
            || key == "OUT_DIR"
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().expect("run cargo for the plugins");
    if !status.success() {
        panic!(
            "building the example plugins failed (is the wasm32-unknown-unknown target installed? `rustup target add wasm32-unknown-unknown`)"
        );
    }
    let out = target_dir.join("wasm32-unknown-unknown").join("release");
    for entry in std::fs::read_dir(&out).expect("plugin output dir") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let dest = plugins.join(path.file_name().unwrap());
            copy_if_changed(&path, &dest);
        }
    }
}

fn copy_if_changed(from: &Path, to: &Path) {
    let new = std::fs::read(from).unwrap();
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        std::fs::write(to, new).unwrap();
    }
}

fn rerun_if_changed(path: &Path) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            let p = entry.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name == "target"
                || name.ends_with(".wasm")
                || name.starts_with('.') && name != ".cargo"
            {
                continue;
            }
            rerun_if_changed(&p);
        }
    } else {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// On a fresh machine the wasm32 target may be missing: add it with rustup
/// (when rustup manages this toolchain) so that `cargo run` just works.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let installed = sysroot.as_ref().is_some_and(|s| {
        Path::new(s)
            .join("lib/rustlib/wasm32-unknown-unknown/lib")
            .is_dir()
    });
    if installed {
        return;
    }
    println!(
        "cargo:warning=installing the wasm32-unknown-unknown target with rustup (needed to build the example plugins)"
    );
    let ok = Command::new("rustup")
        .args(["target", "add", "wasm32-unknown-unknown"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!(
            "cargo:warning=could not run `rustup target add wasm32-unknown-unknown`; install the target by hand"
        );
    }
}
