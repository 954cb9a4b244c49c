//! Run-time recovery: a failed partition task restarts from its last
//! checkpoint with bounded, backed-off retries while the other partitions
//! keep running; after the retries the process exits non-zero and says why.

use std::collections::BTreeSet;
use std::process::Command;
use weir_e2e::{Broker, keyed_input, topic};

const PARTITIONS: i32 = 4;

/// Mirrors its input, but traps on any record whose value starts "boom".
const POISON: &str = r#"(module
  (import "weir" "emit" (func $emit (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "weir_abi_version") (result i32) (i32.const 1))
  (func (export "weir_input_buffer") (param $size i32) (result i32)
    (local $need i32)
    (local.set $need (i32.shr_u (i32.add (local.get $size) (i32.const 131071)) (i32.const 16)))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then (drop (memory.grow (i32.sub (local.get $need) (memory.size))))))
    (i32.const 65536))
  (func $len (param $x i32) (result i32)
    (select (local.get $x) (i32.const 0) (i32.gt_s (local.get $x) (i32.const 0))))
  (func (export "weir_process") (param $p i32) (param $l i32) (result i32)
    (local $n i32) (local $r i32) (local $k i32) (local $v i32) (local $size i32)
    (local.set $n (i32.load (local.get $p)))
    (local.set $r (i32.add (local.get $p) (i32.const 8)))
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $n)))
      (local.set $k (call $len (i32.load offset=24 (local.get $r))))
      (local.set $v (call $len (i32.load offset=28 (local.get $r))))
      ;; "boom" as a little-endian u32
      (if (i32.ge_s (local.get $v) (i32.const 4))
        (then (if (i32.eq (i32.load (i32.add (i32.add (local.get $r) (i32.const 40)) (local.get $k)))
                          (i32.const 0x6d6f6f62))
          (then unreachable))))
      (local.set $size (i32.add (i32.add (i32.const 40) (local.get $k))
                                (i32.add (local.get $v) (i32.load offset=32 (local.get $r)))))
      (local.set $r (i32.add (local.get $r) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $next)))
    (drop (call $emit (local.get $p) (local.get $l)))
    (i32.const 0)))"#;

#[test]
fn a_poisoned_partition_restarts_then_fails_while_others_finish() {
    let broker = Broker::shared();
    let mut input = keyed_input(8_000, 32, PARTITIONS);
    let poison_at = input.iter().position(|r| r.partition == 2).unwrap() + 2_000;
    let poison_at = (poison_at..input.len())
        .find(|&i| input[i].partition == 2)
        .unwrap();
    input[poison_at].value = format!("boom-{}", input[poison_at].value);
    let (src, dst) = (topic("rec-in"), topic("rec-out"));
    broker.create_topic(&src, PARTITIONS).unwrap();
    broker.create_topic(&dst, PARTITIONS).unwrap();
    broker.produce(&src, &input).unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("poison.wat"), POISON).unwrap();
    let config = format!(
        r#"[kafka]
bootstrap_servers = "{}"
group_id = "{src}-g"
[kafka.consumer_options]
"auto.offset.reset" = "earliest"
[source]
topics = ["{src}"]
bounded = true
[sink]
topics = ["{dst}"]
[pipeline]
plugins_dir = "{}"
plugin = "poison.wat"
parallelism = 2
batch_size = 64
restart_attempts = 2
restart_backoff = "50ms"
[checkpoint]
enabled = true
interval = "100ms"
directory = "ck"
[status]
interval = "0s"
"#,
        broker.bootstrap(),
        dir.path().display()
    );
    std::fs::write(dir.path().join("job.toml"), config).unwrap();
    let weir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("weir");
    let log_path = dir.path().join("stderr.log");
    let mut child = Command::new(weir)
        .args([
            "run",
            "--config",
            dir.path().join("job.toml").to_str().unwrap(),
        ])
        .env("WEIR_LOG", "info,librdkafka=warn,rdkafka=warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let status =
        weir_e2e::wait_for(&mut child, std::time::Duration::from_secs(60)).unwrap_or_else(|e| {
            panic!(
                "{e}\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
        });
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{log}");
    let restarts = log.matches("partition task restarted").count();
    let retries = log.matches("restarting from its last checkpoint").count();
    // One restart replays the faulted batch a record per call to pin the
    // record; then the two bounded attempts.
    assert_eq!(
        (retries, restarts),
        (2, 3),
        "expected 1 + 2 bounded restarts:\n{log}"
    );
    let reason = log
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_default();
    let poison_offset = input[..poison_at]
        .iter()
        .filter(|r| r.partition == 2)
        .count();
    assert!(
        reason.contains(&format!("/2, offsets {poison_offset}..={poison_offset}:")),
        "{reason}"
    );
    assert!(reason.contains("trap"), "{reason}");
    assert!(reason.contains("unreachable"), "{reason}");
    println!("exit 1 after {restarts} restarts: {reason}");

    // The other partitions finished: all their records are in the output.
    let got = broker.read_committed(&dst, PARTITIONS).unwrap();
    for p in [0, 1, 3] {
        let values: BTreeSet<&str> = got[p as usize]
            .iter()
            .map(|o| o.value.as_deref().unwrap())
            .collect();
        let missing = input
            .iter()
            .filter(|r| r.partition == p && !values.contains(r.value.as_str()))
            .count();
        assert_eq!(
            missing, 0,
            "partition {p} did not finish while partition 2 failed"
        );
    }
    // Partition 2 stopped at the poison record: its output holds only
    // records before it (the failing batch emitted nothing).
    let before: BTreeSet<&str> = input[..poison_at]
        .iter()
        .filter(|r| r.partition == 2)
        .map(|r| r.value.as_str())
        .collect();
    let values: BTreeSet<&str> = got[2].iter().map(|o| o.value.as_deref().unwrap()).collect();
    assert!(
        values.is_subset(&before),
        "partition 2 output beyond the poison record"
    );
    assert!(
        !values.is_empty(),
        "partition 2 produced nothing before the poison"
    );
}
