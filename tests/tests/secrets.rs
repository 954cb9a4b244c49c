//! Secrets stay out of `config.toml` and out of what Weir prints: a SASL
//! password from an environment variable, and one from a file, against a
//! listener that refuses SASL. The job fails within its connect timeout,
//! and neither password appears in anything it wrote.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir_e2e::{Broker, repo_root, topic};

const FROM_ENV: &str = "env-secret-7c1f0e";
const FROM_FILE: &str = "file-secret-9b24d3";

#[test]
fn passwords_from_the_environment_and_a_file_never_appear_in_output() {
    let broker = Broker::shared();
    let src = topic("secrets");
    broker.create_topic(&src, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{FROM_FILE}\n")).unwrap();
    for (password, what) in [
        ("\"${WEIR_TEST_KAFKA_PASSWORD}\"".to_string(), "environment"),
        (format!("{{ file = \"{}\" }}", file.display()), "file"),
    ] {
        let text = format!(
            r#"[kafka]
bootstrap_servers = "{bootstrap}"
connect_timeout = "5s"
[kafka.options]
"security.protocol" = "sasl_plaintext"
"sasl.mechanism" = "PLAIN"
"sasl.username" = "weir"
"sasl.password" = {password}
[source]
topics = ["{src}"]
[sink]
topics = ["{src}"]
[pipeline]
plugins_dir = "{plugins}"
plugin = "running_count.wasm"
[status]
interval = "1s"
"#,
            bootstrap = broker.bootstrap(),
            plugins = repo_root().join("plugins").display(),
        );
        let config = dir.path().join("job.toml");
        std::fs::write(&config, text).unwrap();
        let started = Instant::now();
        let out = Command::new(weir_e2e::weir_binary())
            .args(["run", "--config", config.to_str().unwrap()])
            .env("WEIR_LOG", "debug")
            .env("WEIR_TEST_KAFKA_PASSWORD", FROM_ENV)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let took = started.elapsed();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "{what}: a SASL job ran against a plaintext listener"
        );
        assert!(
            !printed.contains(FROM_ENV) && !printed.contains(FROM_FILE),
            "{what}: the password was printed:\n{printed}"
        );
        assert!(
            took < Duration::from_secs(60),
            "{what}: failed only after {took:?}"
        );
        let reason = printed
            .lines()
            .rfind(|l| l.starts_with("error:"))
            .unwrap_or("");
        println!(
            "password from the {what}: failed after {:.1} s, {} log bytes without it: {reason}",
            took.as_secs_f64(),
            printed.len()
        );
    }
}
