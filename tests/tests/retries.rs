//! Producer retries against Apache Kafka keep each key's order and write
//! nothing twice. The broker's JVM is frozen (SIGSTOP) twice for longer
//! than the producer's request timeout while a running-count job writes:
//! produce requests time out in flight and are sent again, and when the
//! broker thaws it sees the first attempts and the retries. Weir's producer
//! is idempotent by default, so Kafka drops the retried batches it already
//! has and rejects out-of-order ones, and the output is exactly the model:
//! per key 1..n, once each, in order.
//!
//! This file holds one test on purpose: freezing the broker would stall
//! every other test sharing it.

use std::time::{Duration, Instant};
use weir_e2e::{Broker, keyed_input, model, repo_root, spawn_weir, topic, wait_for, weir_log};

const PARTITIONS: i32 = 4;

/// Freezes the broker's JVM for `d`.
fn freeze(broker: &Broker, d: Duration) {
    let pid = broker.pid() as libc::pid_t;
    // SAFETY: signals to a child process of this test (the broker's JVM).
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(d);
    unsafe { libc::kill(pid, libc::SIGCONT) };
}

#[test]
fn retried_produce_requests_keep_key_order_and_write_nothing_twice() {
    let broker = Broker::shared();
    let (src, dst) = (topic("retries-in"), topic("retries-out"));
    broker.create_topic(&src, PARTITIONS).unwrap();
    broker.create_topic(&dst, PARTITIONS).unwrap();
    let input = keyed_input(300_000, 400, PARTITIONS);
    broker.produce(&src, &input).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{dst}-group"
[kafka.consumer_options]
"auto.offset.reset" = "earliest"
[kafka.producer_options]
# Shorter than a freeze: in-flight produce requests time out on the
# client (librdkafka caps them by socket.timeout.ms) and are retried.
"socket.timeout.ms" = "1000"
"linger.ms" = "5"
[source]
topics = ["{src}"]
bounded = true
[sink]
topics = ["{dst}"]
[pipeline]
plugins_dir = "{plugins}"
plugin = "running_count.wasm"
parallelism = 2
batch_size = 256
[checkpoint]
enabled = true
interval = "500ms"
directory = "ck"
[status]
interval = "0s"
"#,
        bootstrap = broker.bootstrap(),
        plugins = repo_root().join("plugins").display(),
    );
    let config = dir.path().join("job.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = spawn_weir(&config, dir.path(), "info");
    // Freeze once output flows, twice, with a thaw between.
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker
        .end_offsets(&dst, PARTITIONS)
        .unwrap()
        .iter()
        .sum::<i64>()
        < 20_000
    {
        assert!(
            Instant::now() < deadline,
            "no output:\n{}",
            weir_log(dir.path())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let written_before = broker
        .end_offsets(&dst, PARTITIONS)
        .unwrap()
        .iter()
        .sum::<i64>();
    freeze(broker, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(700));
    freeze(broker, Duration::from_secs(3));
    let status = wait_for(&mut child, Duration::from_secs(180)).unwrap();
    let log = weir_log(dir.path());
    assert!(status.success(), "the job failed:\n{log}");

    let timeouts = log.matches("Timed out").count();
    let restarts = log.matches("partition task restarted").count();
    let out = broker.read_all(&dst, PARTITIONS).unwrap();
    let got = weir_e2e::counts_by_key(&out);
    let written: usize = out.iter().map(Vec::len).sum();
    println!(
        "{} input records, {written_before} written before the first freeze, {written} read back; librdkafka request timeouts logged: {timeouts}; task restarts: {restarts}",
        input.len()
    );
    assert!(
        timeouts > 0,
        "no produce request timed out: the freezes tested nothing\n{log}"
    );
    assert_eq!(restarts, 0, "retriable timeouts restarted a task:\n{log}");
    let want = model::expected_counts(&input);
    for (key, counts) in &want {
        assert_eq!(
            got.get(key),
            Some(counts),
            "key {key}: not 1..{} once each in order",
            counts.len()
        );
    }
    assert_eq!(written, input.len(), "records written twice");
}
