//! The shipped demo through the real binary: `weir run` on `config.toml`
//! (embedded cluster, WAT plugin, checkpoints, the failure drill) ends with
//! every count exact, and with `WEIR_LOG_FORMAT=json` every log line is a
//! JSON object whose task lines carry the span's plugin, topic and
//! partition.

use std::path::Path;
use std::process::Command;

#[test]
fn demo_recovers_exactly_and_logs_json_with_span_fields() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--config"])
        .arg(&config)
        .env("WEIR_LOG", "info")
        .env("WEIR_LOG_FORMAT", "json")
        .output()
        .expect("run weir");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("every final count equals the input's"),
        "no verdict on the counts:\n{stdout}"
    );
    let mut task_lines = 0;
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
        if v["span"]["name"] == "task" {
            for field in ["plugin", "topic", "partition"] {
                assert!(
                    !v["span"][field].is_null(),
                    "task span without {field}: {line}"
                );
            }
            task_lines += 1;
        }
    }
    // The failure drill restarts tasks: their lines are logged in the span.
    assert!(
        task_lines > 0,
        "no line logged inside a task span:\n{stderr}"
    );
}
