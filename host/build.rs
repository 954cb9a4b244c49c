//! Builds the example plugins so that `cargo run` and `cargo test` never
//! need a manual step, and writes each module to `plugins/<name>.wasm`,
//! where `config.toml` and the tests name them:
//!
//! - Rust: the `plugins/` wasm32 workspace (`cargo build --target
//!   wasm32-unknown-unknown`); `plugins/running-count` → `running_count.wasm`.
//! - C: every `plugins/c-<name>/` folder, its `*.c` files compiled with
//!   clang for `wasm32-wasi` against wasi-libc as a reactor, with
//!   `plugin-sdk/c/` on the include path → `c_<name>.wasm`.
//! - AssemblyScript: every `plugins/as-<name>/index.ts`, compiled with the
//!   `asc` pinned in `plugin-sdk/assemblyscript/package-lock.json` (run
//!   `npm ci` there; this script does it when `node_modules` is missing)
//!   → `as_<name>.wasm`.
//! - WAT (`plugins/*.wat`, `plugins/wat-<name>/*.wat`) needs no build: the
//!   host loads text modules directly.
//!
//! It also keeps the C header (`plugin-sdk/c/weir_plugin.h`) and the
//! AssemblyScript helper (`plugin-sdk/assemblyscript/weir.ts`) derived from
//! `plugin-sdk/src/abi.rs`: their block of ABI constants is generated from
//! that file's `pub const` items, so no language's copy can drift.
//!
//! C and AssemblyScript modules are rebuilt only when their inputs (sources,
//! the header or helper, the command line, the compiler's version) change.
//! A missing toolchain fails the build with how to install it.
//!
//! Set `WEIR_SKIP_PLUGIN_BUILD=1` to skip all of this (e.g. when the wasm32
//! target or a toolchain is not installed and only the host is wanted).
//! `WEIR_CLANG` names the clang to use (default `clang`), `WEIR_NODE` the
//! Node.js (default `node`).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// How the C plugins are compiled (after `clang`, before the sources).
const C_FLAGS: &[&str] = &[
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

/// Where `npm ci` puts the pinned compiler.
const ASC: &str = "plugin-sdk/assemblyscript/node_modules/assemblyscript/bin/asc.js";

const INSTALL_C: &str = "install Debian's clang, lld, wasi-libc and the wasm32 compiler-rt builtins: `apt-get install -y clang lld wasi-libc libclang-rt-dev-wasm32` (or point WEIR_CLANG at a clang that has them, e.g. wasi-sdk's), or set WEIR_SKIP_PLUGIN_BUILD=1 to build only the host";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let plugins = root.join("plugins");
    let sdk = root.join("plugin-sdk");
    println!("cargo:rerun-if-env-changed=WEIR_SKIP_PLUGIN_BUILD");
    println!("cargo:rerun-if-env-changed=WEIR_CLANG");
    println!("cargo:rerun-if-env-changed=WEIR_NODE");
    for dir in [
        &plugins,
        &sdk.join("src"),
        &sdk.join("Cargo.toml"),
        &sdk.join("c"),
        &sdk.join("assemblyscript"),
    ] {
        rerun_if_changed(dir);
    }
    // A C or AssemblyScript plugin folder as a whole, so that a file added
    // to it is seen too (its outputs are written elsewhere).
    for prefix in ["c-", "as-"] {
        for (folder, _) in plugin_folders(&plugins, prefix) {
            println!("cargo:rerun-if-changed={}", folder.display());
        }
    }
    if std::env::var_os("WEIR_SKIP_PLUGIN_BUILD").is_some() {
        return;
    }
    generate_abi_bindings(&sdk);
    build_rust_plugins(&root, &plugins);
    let work = root.join("target").join("plugins");
    build_c_plugins(&root, &plugins, &work);
    build_assemblyscript_plugins(&root, &plugins, &work);
}

fn build_rust_plugins(root: &Path, plugins: &Path) {
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

fn build_c_plugins(root: &Path, plugins: &Path, work: &Path) {
    let folders = plugin_folders(plugins, "c-");
    if folders.is_empty() {
        return;
    }
    let clang = std::env::var("WEIR_CLANG").unwrap_or_else(|_| "clang".into());
    let version = match Command::new(&clang).arg("--version").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => panic!(
            "building the C example plugins needs clang (`{clang}` did not run): {INSTALL_C}"
        ),
    };
    let include = root.join("plugin-sdk").join("c");
    for (folder, name) in folders {
        let mut sources: Vec<PathBuf> = std::fs::read_dir(&folder)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "c"))
            .collect();
        sources.sort();
        if sources.is_empty() {
            continue;
        }
        let dest = plugins.join(format!("{name}.wasm"));
        let mut inputs = sources.clone();
        inputs.extend(files_in(&include, "h"));
        let args: Vec<String> = C_FLAGS.iter().map(|s| s.to_string()).collect();
        let stamp = stamp_of(&[&version, &args.join(" ")], &inputs);
        if up_to_date(work, &name, stamp, &dest) {
            continue;
        }
        let tmp = temp_output(work, &name);
        let out = Command::new(&clang)
            .args(C_FLAGS)
            .arg("-I")
            .arg(&include)
            .arg("-o")
            .arg(&tmp)
            .args(&sources)
            .current_dir(root)
            .output()
            .unwrap_or_else(|e| panic!("run {clang}: {e}; {INSTALL_C}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            panic!(
                "building the C plugin {} failed{}:\n{stderr}",
                folder.display(),
                c_hint(&stderr)
            );
        }
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            println!("cargo:warning={name}: {line}");
        }
        finish(work, &name, stamp, &tmp, &dest);
    }
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
        Some(what) => format!(" (missing {what}? {INSTALL_C})"),
        None => String::new(),
    }
}

fn build_assemblyscript_plugins(root: &Path, plugins: &Path, work: &Path) {
    let folders: Vec<(PathBuf, String)> = plugin_folders(plugins, "as-")
        .into_iter()
        .filter(|(f, _)| f.join("index.ts").is_file())
        .collect();
    if folders.is_empty() {
        return;
    }
    let helper_dir = root.join("plugin-sdk").join("assemblyscript");
    let node = std::env::var("WEIR_NODE").unwrap_or_else(|_| "node".into());
    let node_version = match Command::new(&node).arg("--version").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => panic!(
            "building the AssemblyScript example plugins needs Node.js 20 or later (`{node}` did not run): install it (Debian: `apt-get install -y nodejs npm`), or set WEIR_SKIP_PLUGIN_BUILD=1 to build only the host"
        ),
    };
    let asc = root.join(ASC);
    if !asc.is_file() {
        println!(
            "cargo:warning=installing the pinned AssemblyScript compiler: npm ci in plugin-sdk/assemblyscript"
        );
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&helper_dir)
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok || !asc.is_file() {
            panic!(
                "building the AssemblyScript example plugins needs the assemblyscript package: run `npm ci` in plugin-sdk/assemblyscript (needs npm and Node.js {node_version} or later), or set WEIR_SKIP_PLUGIN_BUILD=1 to build only the host"
            );
        }
    }
    let compiler_version =
        std::fs::read_to_string(helper_dir.join("node_modules/assemblyscript/package.json"))
            .unwrap_or_default();
    let helper = files_in(&helper_dir, "ts");
    for (folder, name) in folders {
        let dest = plugins.join(format!("{name}.wasm"));
        let mut inputs = files_in(&folder, "ts");
        inputs.extend(helper.iter().cloned());
        let args: Vec<String> = AS_FLAGS.iter().map(|s| s.to_string()).collect();
        let stamp = stamp_of(
            &[&node_version, &compiler_version, &args.join(" ")],
            &inputs,
        );
        if up_to_date(work, &name, stamp, &dest) {
            continue;
        }
        let tmp = temp_output(work, &name);
        let entry = folder.strip_prefix(root).unwrap().join("index.ts");
        let out = Command::new(&node)
            .arg(&asc)
            .arg(&entry)
            .args(AS_FLAGS)
            .arg("-o")
            .arg(&tmp)
            .current_dir(root)
            .output()
            .unwrap_or_else(|e| panic!("run {node}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() || !tmp.is_file() {
            let _ = std::fs::remove_file(&tmp);
            panic!(
                "building the AssemblyScript plugin {} failed:\n{text}",
                folder.display()
            );
        }
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            println!("cargo:warning={name}: {line}");
        }
        finish(work, &name, stamp, &tmp, &dest);
    }
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

/// A per-process output path (builds of several target dirs may run at once).
fn temp_output(work: &Path, name: &str) -> PathBuf {
    let dir = work.join("lang");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.{}.wasm", std::process::id()))
}

fn finish(work: &Path, name: &str, stamp: u64, tmp: &Path, dest: &Path) {
    copy_if_changed(tmp, dest);
    let _ = std::fs::remove_file(tmp);
    let stamps = work.join("stamps");
    std::fs::create_dir_all(&stamps).unwrap();
    std::fs::write(
        stamp_path(work, name),
        format!("{stamp:016x} {}\n", digest(dest)),
    )
    .unwrap();
}

fn copy_if_changed(from: &Path, to: &Path) {
    let new = std::fs::read(from).unwrap();
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        // Write then rename: another build may be reading the old module.
        let tmp = to.with_extension(format!("wasm.{}.tmp", std::process::id()));
        std::fs::write(&tmp, new).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
}

fn rerun_if_changed(path: &Path) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            let p = entry.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name == "target"
                || name == "node_modules"
                || name.ends_with(".wasm")
                || name.ends_with(".tmp")
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

/// One `pub const` of `abi.rs`.
struct AbiConst {
    name: String,
    ty: String,
    value: String,
    doc: Vec<String>,
}

/// Reads the `pub const NAME: TYPE = VALUE;` items of `abi.rs`, with their
/// doc comments. Only literal values are expected; anything else fails the
/// build so that the generated bindings are never silently incomplete.
fn abi_consts(src: &str) -> Vec<AbiConst> {
    let mut out = Vec::new();
    let mut doc: Vec<String> = Vec::new();
    for line in src.lines() {
        let t = line.trim();
        if let Some(d) = t.strip_prefix("///") {
            doc.push(d.trim().to_string());
            continue;
        }
        if let Some(rest) = t
            .strip_prefix("pub const ")
            .filter(|r| !r.starts_with("fn "))
        {
            let (name, rest) = rest.split_once(':').expect("pub const NAME: TYPE");
            let (ty, value) = rest.split_once('=').expect("pub const NAME: TYPE = VALUE");
            let value = value.trim().trim_end_matches(';').trim().to_string();
            let literal = (value.starts_with('"') && value.ends_with('"'))
                || value
                    .trim_start_matches('-')
                    .chars()
                    .all(|c| c.is_ascii_digit());
            assert!(
                literal,
                "plugin-sdk/src/abi.rs: `{}` = `{value}` is not a literal; teach host/build.rs to render it for C and AssemblyScript",
                name.trim()
            );
            out.push(AbiConst {
                name: name.trim().to_string(),
                ty: ty.trim().to_string(),
                value,
                doc: std::mem::take(&mut doc),
            });
            continue;
        }
        // Doc comments belong to the item right after them.
        if !t.starts_with("#[") {
            doc.clear();
        }
    }
    out
}

/// A rustdoc comment as plain text: "[`X`]" and "[text](link)" lose their
/// brackets and links; any other "[" (such as "[ptr, ptr+len)") stays.
fn plain_doc(doc: &[String]) -> String {
    let text = doc.join(" ");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let link = after.find(']').filter(|&c| {
            let inner = &after[..c];
            !inner.is_empty()
                && !inner.contains('[')
                && !inner.contains(' ')
                && ((inner.starts_with('`') && inner.ends_with('`'))
                    || after[c + 1..].starts_with('('))
        });
        match link {
            Some(c) => {
                out.push_str(&after[..c]);
                rest = &after[c + 1..];
                if rest.starts_with('(')
                    && let Some(end) = rest.find(')')
                {
                    rest = &rest[end + 1..];
                }
            }
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("*/", "* /")
}

fn render_c(consts: &[AbiConst]) -> String {
    let mut s = String::new();
    for c in consts {
        if !c.doc.is_empty() {
            s.push_str(&format!("/* {} */\n", plain_doc(&c.doc)));
        }
        let value = match c.ty.as_str() {
            "&str" => c.value.clone(),
            "i64" => format!("INT64_C({})", c.value),
            _ if c.value.starts_with('-') => format!("({})", c.value),
            "u32" | "usize" => format!("{}u", c.value),
            _ => c.value.clone(),
        };
        s.push_str(&format!("#define WEIR_{} {value}\n", c.name));
    }
    s
}

fn render_assemblyscript(consts: &[AbiConst]) -> String {
    let mut s = String::new();
    for c in consts {
        if !c.doc.is_empty() {
            s.push_str(&format!("/** {} */\n", plain_doc(&c.doc)));
        }
        let ty = match c.ty.as_str() {
            "&str" => "string",
            "i32" => "i32",
            "i64" => "i64",
            "u32" => "u32",
            "usize" => "usize",
            other => panic!(
                "plugin-sdk/src/abi.rs: `{}` has type {other}; teach host/build.rs to render it for AssemblyScript",
                c.name
            ),
        };
        s.push_str(&format!("export const {}: {ty} = {};\n", c.name, c.value));
    }
    s
}

/// Replaces the text between the BEGIN/END GENERATED marker lines of
/// `path` with `block`; writes only when it changed.
fn replace_generated(path: &Path, block: &str) {
    let Ok(text) = std::fs::read_to_string(path) else {
        panic!("{} is missing", path.display());
    };
    let begin = text
        .find("BEGIN GENERATED FROM plugin-sdk/src/abi.rs")
        .and_then(|b| text[b..].find('\n').map(|n| b + n + 1))
        .unwrap_or_else(|| panic!("{}: no BEGIN GENERATED marker", path.display()));
    let end = text[begin..]
        .find("END GENERATED")
        .map(|e| begin + e)
        .and_then(|e| text[..e].rfind('\n').map(|n| n + 1))
        .unwrap_or_else(|| panic!("{}: no END GENERATED marker", path.display()));
    let new = format!("{}{}{}", &text[..begin], block, &text[end..]);
    if new != text {
        std::fs::write(path, new).unwrap();
        println!(
            "cargo:warning=regenerated the ABI constants in {} from plugin-sdk/src/abi.rs",
            path.display()
        );
    }
}

fn generate_abi_bindings(sdk: &Path) {
    let src = std::fs::read_to_string(sdk.join("src").join("abi.rs")).expect("read abi.rs");
    let consts = abi_consts(&src);
    assert!(
        consts.iter().any(|c| c.name == "ABI_VERSION"),
        "plugin-sdk/src/abi.rs: no ABI_VERSION found"
    );
    replace_generated(&sdk.join("c").join("weir_plugin.h"), &render_c(&consts));
    replace_generated(
        &sdk.join("assemblyscript").join("weir.ts"),
        &render_assemblyscript(&consts),
    );
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
