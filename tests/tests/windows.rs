//! Time in plugins (ABI 1.1): `plugins/tumbling-window` run by the host
//! against Apache Kafka, its output judged window by window against the
//! model in `weir_e2e::windows`: out-of-order input within the configured
//! out-of-orderness all counts, records later than that are dropped by the
//! same rule as the model's whatever the batches, and the last windows
//! close at the end of the bounded input.
//! (The kill -9 run under exactly-once is in `crash.rs`.)

use weir_e2e::windows::{
    WindowSpec, expected_windows, first_timestamp, judge_windows, windowed_input,
};
use weir_e2e::{Broker, job_config, run_job, topic};

const PARTITIONS: i32 = 4;

async fn run_windows(batch_size: usize, input_label: &str) {
    let broker = Broker::shared();
    let spec = WindowSpec {
        size_ms: 1_000,
        max_out_of_orderness_ms: 500,
    };
    let input = windowed_input(first_timestamp(), 20_000, 60, PARTITIONS, 400, (97, 1_300));
    let (want, late) = expected_windows(&input, spec);
    assert!(late > 100, "the input has late records ({late})");
    let (src, dst) = (topic("win-in"), topic("win-out"));
    broker.create_topic(&src, PARTITIONS).unwrap();
    broker.create_topic(&dst, PARTITIONS).unwrap();
    broker.produce(&src, &input).unwrap();
    let text = job_config(
        &broker.bootstrap(),
        &src,
        &dst,
        "tumbling_window.wasm",
        2,
        &spec.plugin_table(),
    )
    .replace(
        "batch_size = 256",
        &format!("batch_size = {batch_size}\n{}", spec.pipeline_lines()),
    );
    let summary = run_job(&text).await.unwrap();
    assert_eq!(summary.records_in, input.len() as u64);
    let out = broker.read_all(&dst, PARTITIONS).unwrap();
    let windows = judge_windows(&out, &want);
    println!(
        "{input_label}: {} records, {late} late, {windows} windows equal to the model",
        input.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn windows_match_the_model_with_out_of_order_and_late_records() {
    run_windows(256, "batches of 256").await;
}

/// The same input in batches of 7: the late records meet different batch
/// boundaries, and the output must not change.
#[tokio::test(flavor = "multi_thread")]
async fn window_output_does_not_depend_on_batch_boundaries() {
    run_windows(7, "batches of 7").await;
}
