//! Weir beside Java clients: keyed output lands on the partition the Java
//! producer's partitioner picks for the key (checked against Kafka's own
//! `Utils.murmur2` in a JVM), and zstd-compressed input is read and
//! zstd-compressed output written (checked in the broker's log files with
//! Kafka's `DumpLogSegments`).

use rdkafka::producer::{BaseRecord, Producer};
use std::collections::BTreeMap;
use std::time::Duration;
use weir_e2e::{Broker, keyed_input, repo_root, spawn_weir, topic, wait_for, weir_log};

/// Runs running-count, bounded, from `src` to `dst` with `producer_options`.
fn run(broker: &Broker, src: &str, dst: &str, producer_options: &str) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{dst}-group"
[kafka.consumer_options]
"auto.offset.reset" = "earliest"
[kafka.producer_options]
{producer_options}
[source]
topics = ["{src}"]
bounded = true
[sink]
topics = ["{dst}"]
[pipeline]
plugins_dir = "{plugins}"
plugin = "running_count.wasm"
parallelism = 2
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
}

#[test]
fn keyed_output_lands_where_the_java_producer_puts_the_key() {
    let broker = Broker::shared();
    let (src, dst) = (topic("java-keys-in"), topic("java-keys-out"));
    broker.create_topic(&src, 4).unwrap();
    // Another partition count than the input's: no key can keep its
    // partition by accident.
    broker.create_topic(&dst, 7).unwrap();
    broker.produce(&src, &keyed_input(2_000, 200, 4)).unwrap();
    run(broker, &src, &dst, "");
    let out = broker.read_committed(&dst, 7).unwrap();
    let mut placed: BTreeMap<String, i32> = BTreeMap::new();
    for (p, records) in out.iter().enumerate() {
        for o in records {
            let key = o.key.clone().unwrap();
            let before = placed.insert(key.clone(), p as i32);
            assert!(
                before.is_none_or(|b| b == p as i32),
                "key {key} on two partitions"
            );
        }
    }
    assert_eq!(placed.len(), 200);
    let keys: Vec<String> = placed.keys().cloned().collect();
    let java = weir_e2e::broker::java_partitions(&keys, 7).unwrap();
    for (key, want) in keys.iter().zip(&java) {
        assert_eq!(placed[key], *want, "key {key}: Weir's partition vs Java's");
    }
    println!("200 keys over 7 partitions: every one where Java's murmur2 partitioner puts it");
}

#[test]
fn zstd_input_is_read_and_zstd_output_written() {
    let broker = Broker::shared();
    let (src, dst) = (topic("zstd-in"), topic("zstd-out"));
    broker.create_topic(&src, 2).unwrap();
    broker.create_topic(&dst, 2).unwrap();
    let input = keyed_input(3_000, 50, 2);
    let producer: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("compression.type", "zstd")
            .create()
            .unwrap();
    for r in &input {
        producer
            .send(
                BaseRecord::<str, str, ()>::to(&src)
                    .partition(r.partition)
                    .key(&r.key)
                    .payload(&r.value),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    run(broker, &src, &dst, r#""compression.type" = "zstd""#);

    let out = broker.read_committed(&dst, 2).unwrap();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for o in out.iter().flatten() {
        let c: u64 = o.value.as_deref().unwrap().parse().unwrap();
        let last = counts.entry(o.key.clone().unwrap()).or_default();
        assert_eq!(c, *last + 1, "counts of a key in order");
        *last = c;
    }
    assert_eq!(counts.values().sum::<u64>(), 3_000);
    for (topic, what) in [(&src, "input"), (&dst, "output")] {
        for p in 0..2 {
            let codecs = broker.batch_codecs(topic, p).unwrap();
            assert!(!codecs.is_empty(), "{what} {p}: no batches read");
            assert!(
                codecs.iter().all(|c| c == "zstd"),
                "{what} partition {p}: {codecs:?}"
            );
        }
    }
    println!("3,000 zstd records in, 3,000 running counts out, every batch zstd on both sides");
}
