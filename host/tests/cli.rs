//! The `weir` binary's answers to bad input: each names the file, the field
//! or the reason, and exits non-zero. `check-plugin` accepts every example
//! plugin and rejects non-plugins precisely.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env("WEIR_LOG", "error")
        .output()
        .expect("run weir")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A valid job config using `plugin` from `plugins_dir`.
fn config(bootstrap: &str, plugins_dir: &Path, plugin: &str) -> String {
    format!(
        r#"[kafka]
bootstrap_servers = "{bootstrap}"
connect_timeout = "2s"

[source]
topics = ["in"]

[sink]
topics = ["out"]

[pipeline]
plugins_dir = "{}"
plugin = "{plugin}"
"#,
        plugins_dir.display()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_plugin_accepts_every_example() {
    for name in [
        "uppercase.wasm",
        "filter.wasm",
        "running_count.wasm",
        "mirror.wat",
    ] {
        let path = repo().join("plugins").join(name);
        let o = weir(&["check-plugin", path.to_str().unwrap()]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(out.contains("a valid Weir plugin (ABI version 1."), "{out}");
        assert!(
            out.contains("weir_process: func (i32, i32) -> (i32)"),
            "{out}"
        );
    }
}

#[test]
fn check_plugin_smoke_runs_every_example() {
    // (module, extra arguments, what an output line must end with)
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "uppercase.wasm",
            &[],
            r#"out: key="alpha" value="HELLO, WEIR""#,
        ),
        (
            "mirror.wat",
            &[],
            r#"out: key="beta" value="{\"n\": 42}" [trace-id="t-1"] [flag=null]"#,
        ),
        ("running_count.wasm", &[], r#"out: key="alpha" value="3""#),
        ("c_running_count.wasm", &[], r#"out: key="alpha" value="3""#),
        (
            "as_running_count.wasm",
            &[],
            r#"out: key="alpha" value="3""#,
        ),
        (
            "filter.wasm",
            &["--set", "contains=weir"],
            r#"out: key="alpha" value="hello, weir""#,
        ),
    ];
    for (name, extra, want) in cases {
        let path = repo().join("plugins").join(name);
        let mut args = vec!["check-plugin", "--smoke", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = weir(&args);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{name}: {}{out}", stderr(&o));
        assert!(out.contains("smoke run: passed"), "{name}: {out}");
        assert!(
            out.contains("batch 2 gave the same output"),
            "{name}: {out}"
        );
        let want = want.trim_start_matches("out: ");
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with("out topic=out ") && l.ends_with(want)),
            "{name}: wanted an output line ending `{want}` in\n{out}"
        );
    }
}

#[test]
fn check_plugin_smoke_reports_a_faulting_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "traps.wat",
        r#"(module (memory (export "memory") 1)
             (func (export "weir_abi_version") (result i32) i32.const 1)
             (func (export "weir_input_buffer") (param i32) (result i32) i32.const 1024)
             (func (export "weir_process") (param i32 i32) (result i32) unreachable))"#,
    );
    let o = weir(&["check-plugin", "--smoke", path.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("smoke run failed"), "{err}");
    assert!(err.contains("processing sample batch 1"), "{err}");
    assert!(err.contains("trap"), "{err}");
    // Without --smoke the same module is a valid plugin.
    let o = weir(&["check-plugin", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn check_plugin_warns_about_a_wasi_command_module() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "command.wat",
        r#"(module (memory (export "memory") 1)
             (func (export "_start"))
             (func (export "weir_abi_version") (result i32) i32.const 1)
             (func (export "weir_input_buffer") (param i32) (result i32) i32.const 1024)
             (func (export "weir_process") (param i32 i32) (result i32) i32.const 0))"#,
    );
    let o = weir(&["check-plugin", path.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("warning: exports `_start`"), "{out}");
    assert!(out.contains("-mexec-model=reactor"), "{out}");
}

/// Each non-plugin, and the words its rejection must contain.
const BAD_PLUGINS: &[(&str, &str, &str)] = &[
    (
        "garbage.wasm",
        "this is not wasm",
        "does not start with the `\\0asm` magic bytes",
    ),
    (
        "broken.wat",
        "(module (func",
        "not a valid WebAssembly module",
    ),
    (
        "no_memory.wat",
        "(module)",
        "does not export its linear memory as `memory`",
    ),
    (
        "no_process.wat",
        r#"(module (memory (export "memory") 1)
             (func (export "weir_abi_version") (result i32) i32.const 1)
             (func (export "weir_input_buffer") (param i32) (result i32) i32.const 0))"#,
        "missing export `weir_process` (i32, i32) -> (i32)",
    ),
    (
        "bad_sig.wat",
        r#"(module (memory (export "memory") 1)
             (func (export "weir_abi_version") (result i32) i32.const 1)
             (func (export "weir_input_buffer") (param i32) (result i32) i32.const 0)
             (func (export "weir_process") (param i32) (result i32) i32.const 0))"#,
        "export `weir_process` has signature (i32) -> (i32), the ABI requires (i32, i32) -> (i32)",
    ),
    (
        "abi_v2.wat",
        r#"(module (memory (export "memory") 1)
             (func (export "weir_abi_version") (result i32) i32.const 2)
             (func (export "weir_input_buffer") (param i32) (result i32) i32.const 0)
             (func (export "weir_process") (param i32 i32) (result i32) i32.const 0))"#,
        "weir_abi_version() returned 2, but this host supports ABI versions 1 (1.0) and 65537 (1.1)",
    ),
    (
        "unknown_import.wat",
        r#"(module (import "env" "now" (func (result i64)))
             (memory (export "memory") 1)
             (func (export "weir_abi_version") (result i32) i32.const 1)
             (func (export "weir_input_buffer") (param i32) (result i32) i32.const 0)
             (func (export "weir_process") (param i32 i32) (result i32) i32.const 0))"#,
        "imports `env.now` (func () -> (i64)), which the host does not provide",
    ),
    (
        "assemblyscript_abort.wat",
        r#"(module (import "env" "abort" (func (param i32 i32 i32 i32)))
             (memory (export "memory") 1)
             (func (export "weir_abi_version") (result i32) i32.const 1)
             (func (export "weir_input_buffer") (param i32) (result i32) i32.const 0)
             (func (export "weir_process") (param i32 i32) (result i32) i32.const 0))"#,
        "Hint: AssemblyScript: compile with `--use abort=weirAbort`",
    ),
    (
        "wrong_import_type.wat",
        r#"(module (import "weir" "emit" (func (param i32) (result i32)))
             (memory (export "memory") 1)
             (func (export "weir_abi_version") (result i32) i32.const 1)
             (func (export "weir_input_buffer") (param i32) (result i32) i32.const 0)
             (func (export "weir_process") (param i32 i32) (result i32) i32.const 0))"#,
        "imports `weir.emit` as func (i32) -> (i32), but the host provides func (i32, i32) -> (i32)",
    ),
    (
        "table.wat",
        r#"(module (memory (export "memory") 1) (table (export "t") 1 funcref)
             (func (export "weir_abi_version") (result i32) i32.const 1)
             (func (export "weir_input_buffer") (param i32) (result i32) i32.const 0)
             (func (export "weir_process") (param i32 i32) (result i32) i32.const 0))"#,
        "exports table `t`",
    ),
    (
        "trap_version.wat",
        r#"(module (memory (export "memory") 1)
             (func (export "weir_abi_version") (result i32) unreachable)
             (func (export "weir_input_buffer") (param i32) (result i32) i32.const 0)
             (func (export "weir_process") (param i32 i32) (result i32) i32.const 0))"#,
        "weir_abi_version() failed: trap",
    ),
];

#[test]
fn check_plugin_rejects_non_plugins_precisely() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, want) in BAD_PLUGINS {
        let path = write(dir.path(), name, text);
        let o = weir(&["check-plugin", path.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(path.to_str().unwrap()),
            "{name} not named: {err}"
        );
        assert!(err.contains(want), "{name}: expected {want:?} in {err}");
    }
    let missing = dir.path().join("missing.wasm");
    let o = weir(&["check-plugin", missing.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("missing.wasm: cannot read: No such file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn run_rejects_a_bad_plugin_before_touching_kafka() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "bad.wasm", "nope");
    let cfg = write(
        dir.path(),
        "job.toml",
        &config("127.0.0.1:1", dir.path(), "bad.wasm"),
    );
    let o = weir(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bad.wasm: not a valid WebAssembly module"),
        "{}",
        stderr(&o)
    );
    let cfg = write(
        dir.path(),
        "job2.toml",
        &config("127.0.0.1:1", dir.path(), "absent.wasm"),
    );
    let o = weir(&["run", "--config", cfg.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("absent.wasm: cannot read"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn config_errors_name_file_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = repo().join("plugins");
    let good = config("127.0.0.1:1", &plugins, "uppercase.wasm");
    let cases = [
        (
            "typo.toml",
            good.replace("plugin = ", "paralelism = 2\nplugin = "),
            vec!["typo.toml", "unknown field `paralelism`", "line 13"],
        ),
        (
            "type.toml",
            good.replace("topics = [\"out\"]", "topics = 7"),
            vec!["type.toml", "line 9", "invalid type: integer `7`"],
        ),
        (
            "missing.toml",
            good.replace("[sink]\ntopics = [\"out\"]\n", ""),
            vec!["missing.toml", "missing field `sink`"],
        ),
        (
            "zero.toml",
            good.replace("plugin = ", "parallelism = 0\nplugin = "),
            vec!["zero.toml", "`pipeline.parallelism`: must be at least 1"],
        ),
        (
            "mode.toml",
            good.replace(
                "topics = [\"in\"]",
                "topics = [\"in\"]\nstart = { mode = \"newest\" }",
            ),
            vec!["mode.toml", "unknown variant `newest`", "line 7"],
        ),
    ];
    for (name, text, wants) in cases {
        let path = write(dir.path(), name, &text);
        let o = weir(&["run", "--config", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        let err = stderr(&o);
        for want in wants {
            assert!(err.contains(want), "{name}: expected {want:?} in {err}");
        }
    }
    let o = weir(&["run", "--config", "/nonexistent/weir.toml"]);
    assert!(stderr(&o).contains("cannot read config file /nonexistent/weir.toml"));
}

#[test]
fn unreachable_broker_fails_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = write(
        dir.path(),
        "job.toml",
        &config(
            &format!("127.0.0.1:{port}"),
            &repo().join("plugins"),
            "uppercase.wasm",
        ),
    );
    let started = Instant::now();
    let o = weir(&["run", "--config", cfg.to_str().unwrap()]);
    let err = stderr(&o);
    println!("unreachable broker reported after {:?}", started.elapsed());
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot reach Kafka at 127.0.0.1:{port} within 2s")),
        "{err}"
    );
}
