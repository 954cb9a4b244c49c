//! End to end against Apache Kafka: keyed input over 4 partitions,
//! the real host (in process), output read back and compared exactly.

use std::collections::BTreeMap;
use weir_e2e::{Broker, Input, job_config, keyed_input, run_job, topic, values_by_key};

const PARTITIONS: i32 = 4;

/// Creates source and sink topics and writes `input`.
fn setup(broker: &Broker, input: &[Input]) -> (String, String) {
    let (src, dst) = (topic("in"), topic("out"));
    broker.create_topic(&src, PARTITIONS).unwrap();
    broker.create_topic(&dst, PARTITIONS).unwrap();
    broker.produce(&src, input).unwrap();
    (src, dst)
}

/// Input values per key, in order.
fn input_by_key(input: &[Input]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in input {
        m.entry(r.key.clone()).or_default().push(r.value.clone());
    }
    m
}

#[tokio::test(flavor = "multi_thread")]
async fn uppercase_output_equals_expected_transform() {
    let broker = Broker::shared();
    let input = keyed_input(20_000, 50, PARTITIONS);
    let (src, dst) = setup(broker, &input);
    let summary = run_job(&job_config(
        &broker.bootstrap(),
        &src,
        &dst,
        "uppercase.wasm",
        2,
        "",
    ))
    .await
    .unwrap();
    assert_eq!(summary.records_in, 20_000);
    assert_eq!(summary.records_out, 20_000);
    let out = broker.read_all(&dst, PARTITIONS).unwrap();
    let expected: BTreeMap<String, Vec<String>> = input_by_key(&input)
        .into_iter()
        .map(|(k, vs)| (k, vs.into_iter().map(|v| v.to_ascii_uppercase()).collect()))
        .collect();
    assert_eq!(values_by_key(&out), expected);
}

/// Running counts, checked against the model for every record, at each
/// parallelism; each partition is run by exactly one worker.
#[tokio::test(flavor = "multi_thread")]
async fn running_count_at_parallelism_1_2_8() {
    let broker = Broker::shared();
    let input = keyed_input(12_000, 40, PARTITIONS);
    for parallelism in [1usize, 2, 8] {
        let (src, dst) = setup(broker, &input);
        let summary = run_job(&job_config(
            &broker.bootstrap(),
            &src,
            &dst,
            "running_count.wasm",
            parallelism,
            "",
        ))
        .await
        .unwrap();
        assert_eq!(summary.records_out, input.len() as u64);

        // Exactly one worker per partition, by Flink's rule.
        let mut seen: Vec<i32> = summary.assignments.iter().map(|a| a.0.partition).collect();
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3]);
        for (tp, w) in &summary.assignments {
            assert_eq!(
                *w,
                weir::pipeline::assignment::worker_for(&tp.topic, tp.partition, parallelism)
            );
        }
        let busy: std::collections::BTreeSet<usize> =
            summary.assignments.iter().map(|a| a.1).collect();
        assert_eq!(busy.len(), parallelism.min(4), "parallelism {parallelism}");

        // Per key: 1, 2, ..., n in order (the fold of the input).
        let out = values_by_key(&broker.read_all(&dst, PARTITIONS).unwrap());
        let expected = input_by_key(&input);
        assert_eq!(out.len(), expected.len());
        for (key, values) in &expected {
            let want: Vec<String> = (1..=values.len()).map(|c| c.to_string()).collect();
            assert_eq!(out[key], want, "key {key} at parallelism {parallelism}");
        }
    }
}

/// The WAT plugin sends each record to the same partition number: the
/// output partition must equal the input partition, record for record.
#[tokio::test(flavor = "multi_thread")]
async fn mirror_keeps_per_partition_order_exactly() {
    let broker = Broker::shared();
    let input = keyed_input(8_000, 13, PARTITIONS);
    let (src, dst) = setup(broker, &input);
    run_job(&job_config(
        &broker.bootstrap(),
        &src,
        &dst,
        "mirror.wat",
        2,
        "",
    ))
    .await
    .unwrap();
    let out = broker.read_all(&dst, PARTITIONS).unwrap();
    for p in 0..PARTITIONS {
        let want: Vec<(String, String)> = input
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect();
        let got: Vec<(String, String)> = out[p as usize]
            .iter()
            .map(|o| (o.key.clone().unwrap(), o.value.clone().unwrap()))
            .collect();
        assert_eq!(got, want, "partition {p}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn filter_uses_its_config_table() {
    let broker = Broker::shared();
    let input = keyed_input(4_000, 10, PARTITIONS);
    let (src, dst) = setup(broker, &input);
    let extra = "[pipeline.config]\ncontains = \"-of-k3\"\n";
    let summary = run_job(&job_config(
        &broker.bootstrap(),
        &src,
        &dst,
        "filter.wasm",
        2,
        extra,
    ))
    .await
    .unwrap();
    let expected: Vec<&Input> = input.iter().filter(|r| r.key == "k3").collect();
    assert_eq!(summary.records_out, expected.len() as u64);
    let out = values_by_key(&broker.read_all(&dst, PARTITIONS).unwrap());
    assert_eq!(out.keys().collect::<Vec<_>>(), vec!["k3"]);
    assert_eq!(
        out["k3"],
        expected.iter().map(|r| r.value.clone()).collect::<Vec<_>>()
    );
}

/// Offsets of the mirrored output per partition (value `value-<i>-...` → i).
fn mirrored_indexes(broker: &Broker, dst: &str) -> Vec<Vec<usize>> {
    broker
        .read_all(dst, PARTITIONS)
        .unwrap()
        .into_iter()
        .map(|part| {
            part.into_iter()
                .map(|o| o.value.unwrap().split('-').nth(1).unwrap().parse().unwrap())
                .collect()
        })
        .collect()
}

/// Input indexes of partition `p` from position `from` on.
fn tail(input: &[Input], p: i32, from: usize) -> Vec<usize> {
    input
        .iter()
        .enumerate()
        .filter(|(_, r)| r.partition == p)
        .skip(from)
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn start_position_earliest_and_group_offsets() {
    let broker = Broker::shared();
    let input = keyed_input(2_000, 8, PARTITIONS);
    let (src, dst) = setup(broker, &input);
    let group = format!("{src}-group");
    // The group has committed offsets for partitions 0 and 1 only.
    broker.commit(&group, &src, &[(0, 100), (1, 7)]).unwrap();

    // group-offsets: committed where present, else auto.offset.reset (earliest).
    let cfg = job_config(&broker.bootstrap(), &src, &dst, "mirror.wat", 2, "");
    run_job(&cfg).await.unwrap();
    let got = mirrored_indexes(broker, &dst);
    assert_eq!(got[0], tail(&input, 0, 100));
    assert_eq!(got[1], tail(&input, 1, 7));
    assert_eq!(got[2], tail(&input, 2, 0));
    assert_eq!(got[3], tail(&input, 3, 0));

    // The job committed its final positions: a rerun reads nothing new.
    let ends: Vec<Option<i64>> = (0..PARTITIONS)
        .map(|p| Some(input.iter().filter(|r| r.partition == p).count() as i64))
        .collect();
    assert_eq!(broker.committed(&group, &src, PARTITIONS).unwrap(), ends);
    let again = run_job(&cfg).await.unwrap();
    assert_eq!(again.records_in, 0);

    // earliest ignores the committed offsets.
    let dst2 = topic("out");
    broker.create_topic(&dst2, PARTITIONS).unwrap();
    let cfg = job_config(&broker.bootstrap(), &src, &dst2, "mirror.wat", 2, "").replace(
        "bounded = true",
        "bounded = true\nstart = { mode = \"earliest\" }",
    );
    let s = run_job(&cfg).await.unwrap();
    assert_eq!(s.records_in, input.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn start_position_specific_and_timestamp() {
    let broker = Broker::shared();
    let base = 1_700_000_000_000i64;
    let mut input = keyed_input(1_000, 8, PARTITIONS);
    let mut seen = [0usize; PARTITIONS as usize];
    for (i, r) in input.iter_mut().enumerate() {
        let nth = &mut seen[r.partition as usize];
        let ahead = if *nth % 10 == 3 { 1_000 } else { 0 };
        *nth += 1;
        r.timestamp = Some(base + i as i64 + ahead);
    }
    let (src, dst) = setup(broker, &input);

    // specific: partition 0 from 20, partition 2 from 5; 1 and 3 fall back
    // to group offsets (none committed → earliest).
    let start = format!(
        "start = {{ mode = \"specific\", offsets = {{ \"{src}\" = {{ \"0\" = 20, \"2\" = 5 }} }} }}"
    );
    let cfg = job_config(&broker.bootstrap(), &src, &dst, "mirror.wat", 1, "")
        .replace("bounded = true", &format!("bounded = true\n{start}"));
    run_job(&cfg).await.unwrap();
    let got = mirrored_indexes(broker, &dst);
    assert_eq!(got[0], tail(&input, 0, 20));
    assert_eq!(got[1], tail(&input, 1, 0));
    assert_eq!(got[2], tail(&input, 2, 5));
    assert_eq!(got[3], tail(&input, 3, 0));

    // timestamp: Kafka's semantics, the first offset whose timestamp is at
    // or after the time; later records with earlier timestamps are read
    // too. Every tenth record of a partition carries a timestamp 1 s ahead,
    // so the first one at or after base + 600 is that partition's fourth.
    let at = base + 600;
    let by_time: Vec<usize> = (0..PARTITIONS)
        .map(|p| {
            input
                .iter()
                .filter(|r| r.partition == p)
                .position(|r| r.timestamp.unwrap() >= at)
                .unwrap()
        })
        .collect();
    // Each partition's expected output holds records stamped before the
    // time: the start is a position, not a filter.
    for (p, &from) in by_time.iter().enumerate() {
        assert!(
            tail(&input, p as i32, from)
                .iter()
                .any(|&i| input[i].timestamp.unwrap() < at),
            "partition {p}: the shifted timestamps must put earlier ones after the start"
        );
    }
    let dst2 = topic("out");
    broker.create_topic(&dst2, PARTITIONS).unwrap();
    let cfg = job_config(&broker.bootstrap(), &src, &dst2, "mirror.wat", 1, "").replace(
        "bounded = true",
        &format!("bounded = true\nstart = {{ mode = \"timestamp\", timestamp_ms = {at} }}"),
    );
    run_job(&cfg).await.unwrap();
    let got = mirrored_indexes(broker, &dst2);
    for p in 0..PARTITIONS {
        let want = tail(&input, p, by_time[p as usize]);
        assert_eq!(got[p as usize], want, "partition {p}");
    }
}

/// `latest` skips what is there; an unbounded job then processes what
/// arrives, until shutdown.
#[tokio::test(flavor = "multi_thread")]
async fn start_position_latest_reads_only_new_records() {
    weir_e2e::init_tracing();
    let broker = Broker::shared();
    let old = keyed_input(500, 8, PARTITIONS);
    let (src, dst) = setup(broker, &old);
    let cfg = job_config(&broker.bootstrap(), &src, &dst, "mirror.wat", 2, "").replace(
        "bounded = true",
        "bounded = false\nstart = { mode = \"latest\" }",
    );
    let config = weir_e2e::parse_config(&cfg).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let job = tokio::spawn(async move {
        weir::run(config, async {
            let _ = stop_rx.await;
        })
        .await
    });
    // Wait until the job has assigned its partitions at the end.
    let group = format!("{src}-group");
    let _ = group;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let new: Vec<Input> = keyed_input(300, 8, PARTITIONS)
        .into_iter()
        .map(|mut r| {
            r.value = r.value.replace("value", "new");
            r
        })
        .collect();
    broker.produce(&src, &new).unwrap();
    // Wait for the output to arrive, then stop the job.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n: usize = broker
            .read_all(&dst, PARTITIONS)
            .unwrap()
            .iter()
            .map(Vec::len)
            .sum();
        if n >= new.len() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    stop_tx.send(()).unwrap();
    let summary = job.await.unwrap().unwrap();
    assert_eq!(summary.records_in, new.len() as u64);
    let out = broker.read_all(&dst, PARTITIONS).unwrap();
    let values: Vec<String> = out
        .iter()
        .flatten()
        .map(|o| o.value.clone().unwrap())
        .collect();
    assert_eq!(values.len(), new.len());
    assert!(
        values.iter().all(|v| v.starts_with("new-")),
        "old records leaked"
    );
}
