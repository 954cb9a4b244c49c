//! Partition discovery: partitions added to the input topic while a
//! `weir` process runs are found within `source.partition_discovery_interval`
//! and read from their first offset, exactly once.
//!
//! Judged with keys written only to the new partitions: under exactly-once
//! every key's committed counts must be 1, 2, ..., n, for the keys of the
//! partitions the job started with and for those of the new ones.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// The text of `/metrics` at `addr`.
fn get_metrics(addr: std::net::SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: weir\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}
use weir_e2e::model::expected_counts;
use weir_e2e::{Broker, Input, counts_by_key, keyed_input, repo_root, topic};

#[test]
fn partitions_added_while_running_are_read_from_their_first_offset_exactly_once() {
    weir_e2e::init_tracing();
    let broker = Broker::shared();
    let (src, dst) = (topic("discovery-in"), topic("discovery-out"));
    broker.create_topic(&src, 2).unwrap();
    broker.create_topic(&dst, 4).unwrap();
    let before = keyed_input(3000, 20, 2);
    broker.produce(&src, &before).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let metrics: std::net::SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = format!(
        r#"[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{dst}-group"
[kafka.consumer_options]
"auto.offset.reset" = "earliest"
[source]
topics = ["{src}"]
partition_discovery_interval = "1s"
[sink]
topics = ["{dst}"]
semantics = "exactly-once"
transactional_id_prefix = "{dst}"
[pipeline]
plugins_dir = "{plugins}"
plugin = "running_count.wasm"
parallelism = 2
[checkpoint]
enabled = true
interval = "500ms"
directory = "ck"
[status]
interval = "0s"
[metrics]
listen = "{metrics}"
"#,
        bootstrap = broker.bootstrap(),
        plugins = repo_root().join("plugins").display(),
    );
    let config = dir.path().join("job.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = weir_e2e::spawn_weir(&config, dir.path(), "info");

    // The topic grows to 4 partitions while the job runs; the new keys go
    // only to the new partitions.
    std::thread::sleep(Duration::from_secs(2));
    broker.add_partitions(&src, 4).unwrap();
    let after: Vec<Input> = (0..2000)
        .map(|i| {
            let k = i % 10;
            Input {
                partition: 2 + (k % 2),
                key: format!("new-k{k}"),
                value: format!("new-{i}"),
                timestamp: None,
            }
        })
        .collect();
    broker.produce(&src, &after).unwrap();

    let mut all = before.clone();
    all.extend(after.iter().cloned());
    let want = expected_counts(&all);
    let started = Instant::now();
    let got = loop {
        let got = counts_by_key(&broker.read_committed(&dst, 4).unwrap());
        if got == want || started.elapsed() > Duration::from_secs(90) {
            break got;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "weir ended early:\n{}",
            weir_e2e::weir_log(dir.path())
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // The metrics endpoint counts the partitions that joined.
    let scraped = get_metrics(metrics);
    child.kill().unwrap();
    child.wait().unwrap();
    let log = weir_e2e::weir_log(dir.path());
    let wrong: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| (k, v.len(), got.get(k).map(Vec::len)))
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "keys whose committed counts differ from the model (key, want n, got n): {wrong:?}\n{log}"
    );
    assert_eq!(got.len(), want.len(), "unexpected keys in the output");
    for p in [2, 3] {
        let labels = format!("weir_records_in_total{{partition=\"{p}\",topic=\"{src}\"");
        assert!(
            scraped.lines().any(|l| l.starts_with(&labels)),
            "no records-in counter for new partition {p}:\n{scraped}"
        );
    }
    assert!(
        scraped.contains("weir_assigned_partitions{plugin=\"running_count.wasm\"} 4"),
        "four assigned partitions:\n{scraped}"
    );
    for p in [2, 3] {
        assert!(
            log.contains("new partition found") && log.contains(&format!("{src}/{p}")),
            "the log names new partition {p}:\n{log}"
        );
    }
}
