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
use weir_e2e::{Broker, Input, job_config, run_job, topic};

const PARTITIONS: i32 = 4;

/// Writes `input` to a new topic and returns the output topic and the
/// config of a bounded tumbling-window job over it, with `extra`
/// `[pipeline]` lines in place of `job_config`'s `batch_size`.
fn window_job(broker: &Broker, input: &[Input], spec: WindowSpec, extra: &str) -> (String, String) {
    let (src, dst) = (topic("win-in"), topic("win-out"));
    broker.create_topic(&src, PARTITIONS).unwrap();
    broker.create_topic(&dst, PARTITIONS).unwrap();
    broker.produce(&src, input).unwrap();
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
        &format!("{}\n{extra}", spec.pipeline_lines()),
    );
    (dst, text)
}

async fn run_windows(batch_size: usize, input_label: &str) {
    let broker = Broker::shared();
    let spec = WindowSpec {
        size_ms: 1_000,
        max_out_of_orderness_ms: 500,
    };
    let input = windowed_input(first_timestamp(), 20_000, 60, PARTITIONS, 400, (97, 1_300));
    let (want, late) = expected_windows(&input, spec);
    assert!(late > 100, "the input has late records ({late})");
    let batch = format!("batch_size = {batch_size}");
    let (dst, text) = window_job(broker, &input, spec, &batch);
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

/// With `idle_timeout`, an unbounded job closes its windows on silence:
/// once the input stops, each partition's watermark follows processing
/// time, and every window is emitted, the last ones included, although
/// the input never ends.
#[tokio::test(flavor = "multi_thread")]
async fn idle_partitions_close_their_windows_on_processing_time() {
    let broker = Broker::shared();
    let spec = WindowSpec {
        size_ms: 1_000,
        max_out_of_orderness_ms: 500,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // 10 s of event time, ending 10 s ago; no late records.
    let input = windowed_input(now - 20_000, 2_000, 20, PARTITIONS, 400, (0, 0));
    let (want, late) = expected_windows(&input, spec);
    assert_eq!(late, 0);
    let (dst, text) = window_job(broker, &input, spec, "idle_timeout = \"1s\"");
    let text = text.replace("bounded = true", "bounded = false");
    weir_e2e::init_tracing();
    let config = weir_e2e::parse_config(&text).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let job = weir::run(config, async {
        let _ = stopped.await;
    });
    let windows: usize = want.values().map(Vec::len).sum();
    let watch = async {
        let started = std::time::Instant::now();
        loop {
            let dst = dst.clone();
            let out = tokio::task::spawn_blocking(move || broker.read_all(&dst, PARTITIONS))
                .await
                .unwrap()
                .unwrap();
            let n: usize = out.iter().map(Vec::len).sum();
            if n >= windows || started.elapsed() > std::time::Duration::from_secs(90) {
                let _ = stop.send(());
                return (out, started.elapsed());
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    };
    let (summary, (out, took)) = tokio::join!(job, watch);
    summary.unwrap();
    let checked = judge_windows(&out, &want);
    println!(
        "idle_timeout 1 s: all {checked} windows of an unbounded job emitted {:.1} s after it started",
        took.as_secs_f64()
    );
}

/// A rebuilt module (the same code with a custom section added: another
/// SHA-256) takes the open windows over through portable state from serde
/// (`export_plugin!(TumblingWindow, serde_state(windows, watermark, late)
/// = 1)`): an unbounded run stops with windows open, the rebuilt module
/// closes them at the end of the input, and every window equals the model.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuilt_module_takes_the_open_windows_over() {
    let broker = Broker::shared();
    let spec = WindowSpec {
        size_ms: 1_000,
        max_out_of_orderness_ms: 500,
    };
    let input = windowed_input(first_timestamp(), 8_000, 40, PARTITIONS, 400, (97, 1_300));
    let (want, _) = expected_windows(&input, spec);
    let dir = tempfile::tempdir().unwrap();
    let (dst, text) = window_job(broker, &input, spec, "batch_size = 256");
    let text = format!(
        "{text}\n[checkpoint]\nenabled = true\ninterval = \"500ms\"\ndirectory = \"{}\"\n",
        dir.path().join("ck").display()
    );
    weir_e2e::init_tracing();
    // Unbounded: once the output stops growing, stop; the last windows
    // are still open, in the final checkpoint.
    let config =
        weir_e2e::parse_config(&text.replace("bounded = true", "bounded = false")).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let job = weir::run(config, async {
        let _ = stopped.await;
    });
    let watch = async {
        let mut last = usize::MAX;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
            let dst = dst.clone();
            let out = tokio::task::spawn_blocking(move || broker.read_all(&dst, PARTITIONS))
                .await
                .unwrap()
                .unwrap();
            let n: usize = out.iter().map(Vec::len).sum();
            if n == last && n > 0 {
                let _ = stop.send(());
                return n;
            }
            last = n;
        }
    };
    let (summary, emitted) = tokio::join!(job, watch);
    assert_eq!(summary.unwrap().records_in, input.len() as u64);
    let windows: usize = want.values().map(Vec::len).sum();
    assert!(
        emitted < windows,
        "no window was open at the stop ({emitted} of {windows})"
    );
    // The rebuilt module, bounded: it closes what it took over.
    let mut module =
        std::fs::read(weir_e2e::repo_root().join("plugins/tumbling_window.wasm")).unwrap();
    module.extend_from_slice(&[0, 17, 9]);
    module.extend_from_slice(b"weir-testrebuilt");
    let rebuilt = dir.path().join("tumbling_window_rebuilt.wasm");
    std::fs::write(&rebuilt, module).unwrap();
    let text = text.replace(
        "plugin = \"tumbling_window.wasm\"",
        &format!("plugin = \"{}\"", rebuilt.display()),
    );
    let summary = run_job(&text).await.unwrap();
    assert_eq!(
        summary.records_in, 0,
        "the checkpoint's offsets are the input's end"
    );
    let out = broker.read_all(&dst, PARTITIONS).unwrap();
    let checked = judge_windows(&out, &want);
    println!(
        "module rebuilt with {} windows open: all {checked} windows equal to the model",
        windows - emitted
    );
}
