//! Offsets with checkpoints off: librdkafka's auto-commit is honoured, and
//! the group's committed offset never runs ahead of processed and
//! delivered records, even when the process is killed.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir_e2e::{Broker, keyed_input, repo_root, topic};

const PARTITIONS: i32 = 4;

#[test]
fn auto_commit_never_runs_ahead_of_delivered_output() {
    let broker = Broker::shared();
    let input = keyed_input(100_000, 64, PARTITIONS);
    let (src, dst) = (topic("ac-in"), topic("ac-out"));
    broker.create_topic(&src, PARTITIONS).unwrap();
    broker.create_topic(&dst, PARTITIONS).unwrap();
    broker.produce(&src, &input).unwrap();
    let group = format!("{src}-group");
    let dir = tempfile::tempdir().unwrap();
    let config = |bounded: bool| {
        format!(
            r#"[kafka]
bootstrap_servers = "{}"
group_id = "{group}"
[kafka.consumer_options]
"auto.offset.reset" = "earliest"
"enable.auto.commit" = "true"
"auto.commit.interval.ms" = "50"
[source]
topics = ["{src}"]
bounded = {bounded}
[sink]
topics = ["{dst}"]
[pipeline]
plugins_dir = "{}"
plugin = "mirror.wat"
batch_size = 4
[status]
interval = "0s"
"#,
            broker.bootstrap(),
            repo_root().join("plugins").display()
        )
    };
    let path = dir.path().join("job.toml");
    std::fs::write(&path, config(false)).unwrap();
    let weir = weir_e2e::weir_binary();
    let mut child = Command::new(&weir)
        .args(["run", "--config", path.to_str().unwrap()])
        .env("WEIR_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // (Four records per plugin call: with an idempotent producer the whole
    // input otherwise went through between two samples, before any kill.)
    // Sample: committed first, then what the output log holds. mirror.wat
    // writes each record to the same partition number, so a committed
    // offset c on input partition p needs >= c records in output p.
    let mut samples = 0;
    let mut killed = false;
    let mut ahead = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let committed = broker.committed(&group, &src, PARTITIONS).unwrap();
        let done: i64 = committed.iter().map(|c| c.unwrap_or(0)).sum();
        // Kill mid-stream as soon as something is committed: Kafka serves
        // the whole input in a few seconds.
        if !killed && done > 0 && done < input.len() as i64 && child.try_wait().unwrap().is_none() {
            killed = true;
            child.kill().unwrap();
            child.wait().unwrap();
            println!("killed with {done} offsets committed");
            std::fs::write(&path, config(true)).unwrap();
            child = Command::new(&weir)
                .args(["run", "--config", path.to_str().unwrap()])
                .env("WEIR_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
        }
        // The sink is written without transactions, so its end offsets
        // count the delivered records.
        let delivered = broker.end_offsets(&dst, PARTITIONS).unwrap();
        samples += 1;
        for p in 0..PARTITIONS as usize {
            if let Some(c) = committed[p]
                && c > delivered[p]
            {
                ahead.push((p, c, delivered[p]));
            }
        }
        if done >= input.len() as i64 || Instant::now() > deadline {
            println!("{samples} samples; committed {committed:?}; delivered {delivered:?}");
            break;
        }
    }
    if !killed {
        // The unbounded first run would outlive a failed test.
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        ahead.is_empty(),
        "committed offsets ran ahead of delivered output: {ahead:?}"
    );
    assert!(samples >= 3, "too few samples ({samples}) to judge");
    assert!(killed, "the job finished before it could be killed");
    let status = child.wait().unwrap();
    assert!(status.success());

    // Nothing lost across the kill: every input value is in the output.
    let out = broker.read_committed(&dst, PARTITIONS).unwrap();
    let got: BTreeSet<String> = out
        .iter()
        .flatten()
        .map(|o| o.value.clone().unwrap())
        .collect();
    let missing = input.iter().filter(|r| !got.contains(&r.value)).count();
    assert_eq!(missing, 0, "{missing} input records lost");
    let total: usize = out.iter().map(Vec::len).sum();
    println!(
        "auto-commit: {} records, {} duplicates after kill -9, 0 lost, 0 samples ahead",
        input.len(),
        total - input.len()
    );
}
