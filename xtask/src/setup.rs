//! The prerequisites of the example plugins and the tests. Each one is
//! checked by running it (a compiler compiles, a tool answers), never by
//! guessing from package names. What is missing is installed with
//! `rustup`, `apt-get` (Debian's packages, when this runs as root or with
//! password-less sudo) and `npm ci`; otherwise the task fails naming what
//! is missing and the command that installs it.

use crate::plugins::{self, C_FLAGS};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::{Command, Stdio};

/// How to get the C toolchain for the C plugins.
pub const INSTALL_C: &str = "install Debian's clang, lld, wasi-libc and the wasm32 compiler-rt builtins (`apt-get install -y clang lld wasi-libc libclang-rt-dev-wasm32`, or `cargo xtask setup` as root), or point WEIR_CLANG at a clang that has them (e.g. wasi-sdk's)";
/// How to get Node.js for the AssemblyScript plugins.
pub const INSTALL_NODE: &str =
    "install it (Debian: `apt-get install -y nodejs npm`, or `cargo xtask setup` as root)";

/// The wasm32 targets: the Rust plugins, and WASI modules in the tests.
const TARGETS: &[&str] = &["wasm32-unknown-unknown", "wasm32-wasip1"];

/// One prerequisite: what it is for, whether it works, and the Debian
/// packages that provide it.
struct Prerequisite {
    what: &'static str,
    works: fn() -> bool,
    packages: &'static [&'static str],
    /// Missing it is reported, but does not fail the setup.
    optional: bool,
}

const PREREQUISITES: &[Prerequisite] = &[
    Prerequisite {
        what: "clang with the wasm32-wasi target, wasm-ld and wasi-libc (the C plugins)",
        works: c_toolchain_works,
        packages: &["clang", "lld", "wasi-libc", "libclang-rt-dev-wasm32"],
        optional: false,
    },
    Prerequisite {
        what: "Node.js and npm (the AssemblyScript plugins)",
        works: || plugins::version_of(&plugins::node()).is_some() && runs("npm"),
        packages: &["nodejs", "npm"],
        optional: false,
    },
    Prerequisite {
        what: "a JDK 17+ and Maven (Apache Kafka for the tests)",
        works: || runs_with("java", "-version") && runs_with("mvn", "-v"),
        packages: &["openjdk-17-jre-headless", "maven"],
        optional: false,
    },
    Prerequisite {
        what: "gdb (a test whose hang guard fires prints the stacks)",
        works: || runs("gdb"),
        packages: &["gdb"],
        optional: true,
    },
];

/// Checks every prerequisite and installs what is missing.
pub fn run(root: &Path) -> Result<()> {
    crate::step("checking prerequisites");
    wasm_targets()?;
    let missing: Vec<&Prerequisite> = PREREQUISITES.iter().filter(|p| !(p.works)()).collect();
    if !missing.is_empty() {
        let packages: Vec<&str> = missing.iter().flat_map(|p| p.packages).copied().collect();
        if let Err(e) = apt_install(&packages) {
            let required: Vec<&str> = missing
                .iter()
                .filter(|p| !p.optional)
                .map(|p| p.what)
                .collect();
            if !required.is_empty() {
                bail!(
                    "missing: {}. {e:#}. Install them with `apt-get install -y {}` and run again",
                    required.join("; "),
                    packages.join(" ")
                );
            }
            eprintln!("xtask: skipped (optional): {e:#}");
        }
        for p in &missing {
            if !(p.works)() && !p.optional {
                bail!(
                    "still missing after installing {}: {}",
                    p.packages.join(" "),
                    p.what
                );
            }
        }
    }
    assemblyscript_compiler(root)?;
    go_toolchain()?;
    promtool(root)?;
    moto_server(root)
}

/// Where `moto_server` is installed (the S3-compatible server of the
/// object-store tests): a Python virtual environment under `target/`.
pub const MOTO_SERVER: &str = "target/tools/moto/bin/moto_server";

/// The version of moto the tests run against.
const MOTO: &str = "moto[server]==5.2.6";

/// `moto_server` from PyPI, in its own virtual environment (never the
/// system's Python).
fn moto_server(root: &Path) -> Result<()> {
    let tool = root.join(MOTO_SERVER);
    if tool.is_file() {
        return Ok(());
    }
    crate::step(&format!(
        "moto_server: python3 -m venv target/tools/moto; pip install \"{MOTO}\""
    ));
    let venv = root.join("target/tools/moto");
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        bail!(
            "python3 -m venv {} failed (Debian: apt-get install python3-venv)",
            venv.display()
        );
    }
    let installed = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", MOTO])
        .status()
        .is_ok_and(|s| s.success());
    if !installed || !tool.is_file() {
        bail!("pip install \"{MOTO}\" failed; moto_server is needed by the object-store tests");
    }
    Ok(())
}

/// Go 1.24 or later (the Go plugins: `//go:wasmexport` reactors). Not
/// installed here: Debian 12's `golang` is 1.19, too old.
fn go_toolchain() -> Result<()> {
    let go = plugins::go();
    let version = Command::new(&go)
        .arg("version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let minor = version
        .split_whitespace()
        .find_map(|w| w.strip_prefix("go1."))
        .and_then(|v| v.split(['.', 'r', 'b']).next()?.parse::<u32>().ok());
    match minor {
        Some(m) if m >= 24 => Ok(()),
        _ => bail!(
            "the Go plugins need Go 1.24 or later (`{go} version` said {:?}): install it from https://go.dev/dl/ (Debian 12's golang package is 1.19), or point WEIR_GO at one",
            version.trim()
        ),
    }
}

/// Where `promtool` is unpacked (the metrics test validates the exposition
/// with it).
pub const PROMTOOL: &str = "target/tools/prometheus/usr/bin/promtool";

/// Prometheus's `promtool`, from Debian's `prometheus` package: downloaded
/// and unpacked under `target/`, never installed (the package would start
/// a Prometheus server).
fn promtool(root: &Path) -> Result<()> {
    let tool = root.join(PROMTOOL);
    if Command::new(&tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Ok(());
    }
    crate::step("promtool: apt-get download prometheus, unpacked under target/tools/");
    let dir = root.join("target/tools");
    std::fs::create_dir_all(&dir)?;
    let download = || {
        Command::new("apt-get")
            .args(["download", "prometheus"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success())
    };
    // A fresh machine may have no package lists yet.
    let update = || {
        Command::new("apt-get")
            .args(["update", "-qq"])
            .status()
            .is_ok_and(|s| s.success())
    };
    let fetched = download() || (update() && download());
    if !fetched {
        bail!("apt-get download prometheus failed; promtool is needed by the metrics test");
    }
    let deb = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("prometheus_"))
        })
        .context("the downloaded prometheus package")?;
    let unpacked = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(dir.join("prometheus"))
        .status()
        .context("dpkg-deb -x")?;
    if !unpacked.success() {
        bail!("dpkg-deb -x {} failed", deb.display());
    }
    std::fs::remove_file(&deb)?;
    Ok(())
}

/// Adds the wasm32 targets through rustup when they are missing.
fn wasm_targets() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let Ok(installed) = installed else {
        // No rustup: the toolchain is managed otherwise; the plugin build
        // will say if the target is missing.
        return Ok(());
    };
    let list = String::from_utf8_lossy(&installed.stdout);
    let missing: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| !list.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    crate::step(&format!("rustup target add {}", missing.join(" ")));
    let ok = Command::new("rustup")
        .args(["target", "add"])
        .args(&missing)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!(
            "`rustup target add {}` failed; the Rust example plugins need it",
            missing.join(" ")
        );
    }
    Ok(())
}

/// Installs Debian packages as root (or with password-less sudo).
fn apt_install(packages: &[&str]) -> Result<()> {
    if !runs_with("apt-get", "--version") {
        bail!("apt-get is not available here");
    }
    let sudo: &[&str] = if is_root() {
        &[]
    } else if Command::new("sudo")
        .args(["-n", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        &["sudo", "-n"]
    } else {
        bail!("not root, and sudo asks for a password");
    };
    crate::step(&format!("apt-get install {}", packages.join(" ")));
    let apt = |args: &[&str]| -> Result<()> {
        let mut cmd = match sudo.split_first() {
            Some((s, rest)) => {
                let mut c = Command::new(s);
                c.args(rest).arg("apt-get");
                c
            }
            None => Command::new("apt-get"),
        };
        let status = cmd
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(args)
            .status()
            .context("run apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(packages);
    apt(&install)
}

/// `npm ci` in the AssemblyScript SDK when its pinned compiler is missing.
fn assemblyscript_compiler(root: &Path) -> Result<()> {
    if root.join(plugins::ASC).is_file() {
        return Ok(());
    }
    crate::step("npm ci in plugin-sdk/assemblyscript (the pinned AssemblyScript compiler)");
    let ok = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(root.join("plugin-sdk/assemblyscript"))
        .status()
        .is_ok_and(|s| s.success());
    if !ok || !root.join(plugins::ASC).is_file() {
        bail!("`npm ci` in plugin-sdk/assemblyscript failed; {INSTALL_NODE}");
    }
    Ok(())
}

/// Compiles and links an empty reactor module with the C plugins' flags.
fn c_toolchain_works() -> bool {
    let dir = std::env::temp_dir().join(format!("weir-xtask-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        return false;
    }
    let src = dir.join("probe.c");
    let ok = std::fs::write(
        &src,
        "#include <stdint.h>\nint32_t probe(void) { return 1; }\n",
    )
    .is_ok()
        && Command::new(plugins::clang())
            .args(C_FLAGS)
            .arg("-o")
            .arg(dir.join("probe.wasm"))
            .arg(&src)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let _ = std::fs::remove_dir_all(&dir);
    ok
}

fn runs(tool: &str) -> bool {
    runs_with(tool, "--version")
}

fn runs_with(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
