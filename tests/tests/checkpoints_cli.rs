//! `weir checkpoints list|show|verify` on the checkpoints of real jobs:
//! an at-least-once job's numbered checkpoints and an exactly-once job's
//! state files; a flipped byte makes `verify` fail and name the file.

use std::process::Command;
use std::time::Duration;
use weir_e2e::{Broker, keyed_input, repo_root, spawn_weir, topic, wait_for, weir_log};

const PARTITIONS: i32 = 2;

/// Runs a bounded job to its end; returns its directory and config path.
fn run_job(broker: &Broker, semantics: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let (src, dst) = (topic("ckcli-in"), topic("ckcli-out"));
    broker.create_topic(&src, PARTITIONS).unwrap();
    broker.create_topic(&dst, PARTITIONS).unwrap();
    broker
        .produce(&src, &keyed_input(4_000, 32, PARTITIONS))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{dst}-group"
[kafka.consumer_options]
"auto.offset.reset" = "earliest"
[source]
topics = ["{src}"]
bounded = true
[sink]
topics = ["{dst}"]
semantics = "{semantics}"
transactional_id_prefix = "{dst}"
[pipeline]
plugins_dir = "{plugins}"
plugin = "running_count.wasm"
parallelism = 2
batch_size = 64
[checkpoint]
enabled = true
interval = "50ms"
directory = "ck"
[status]
interval = "0s"
"#,
        bootstrap = broker.bootstrap(),
        plugins = repo_root().join("plugins").display(),
    );
    let config = dir.path().join("job.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = spawn_weir(&config, dir.path(), "warn");
    let status = wait_for(&mut child, Duration::from_secs(120)).unwrap();
    assert!(status.success(), "{}", weir_log(dir.path()));
    (dir, config)
}

/// `weir checkpoints <args> --config <config>`: exit success and stdout.
fn checkpoints(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(weir_e2e::weir_binary())
        .arg("checkpoints")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn list_show_and_verify_at_least_once_checkpoints_and_catch_a_flipped_byte() {
    let broker = Broker::shared();
    let (dir, config) = run_job(broker, "at-least-once");
    let (ok, list) = checkpoints(&config, &["list"]);
    assert!(ok, "{list}");
    let last = list
        .lines()
        .rfind(|l| l.starts_with("chk-") && l.contains("partitions"))
        .unwrap_or_else(|| panic!("no checkpoint listed:\n{list}"));
    assert!(last.contains(&format!("{PARTITIONS} partitions")), "{last}");
    let id: u64 = last[4..14].parse().unwrap();
    let (ok, show) = checkpoints(&config, &["show", &id.to_string()]);
    assert!(ok, "{show}");
    // The final checkpoint holds every partition at its end offset.
    assert_eq!(
        show.matches("next offset").count(),
        PARTITIONS as usize,
        "{show}"
    );
    let (ok, verify) = checkpoints(&config, &["verify"]);
    assert!(ok, "{verify}");
    assert!(verify.contains(&format!("chk-{id:010}  ok")), "{verify}");
    println!("list:\n{list}show:\n{show}verify:\n{verify}");

    // Flip one byte of a state file of the last checkpoint.
    let chk = dir.path().join("ck").join(format!("chk-{id:010}"));
    let file = std::fs::read_dir(&chk)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e != "json"))
        .unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    let (ok, verify) = checkpoints(&config, &["verify", &id.to_string()]);
    assert!(!ok, "verify passed a corrupt checkpoint:\n{verify}");
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        verify.contains("FAILED") && verify.contains(&name),
        "{verify}"
    );
    println!("after flipping a byte of {name}:\n{verify}");
}

#[test]
fn list_and_verify_exactly_once_state_files() {
    let broker = Broker::shared();
    let (_dir, config) = run_job(broker, "exactly-once");
    let (ok, list) = checkpoints(&config, &["list"]);
    assert!(ok, "{list}");
    assert_eq!(list.matches("eos/").count(), PARTITIONS as usize, "{list}");
    let (ok, verify) = checkpoints(&config, &["verify"]);
    assert!(ok, "{verify}");
    assert!(
        verify
            .lines()
            .filter(|l| l.starts_with("eos/"))
            .all(|l| l.ends_with("ok")),
        "{verify}"
    );
    println!("list:\n{list}verify:\n{verify}");
}
