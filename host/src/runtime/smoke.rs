//! A smoke run of a plugin without Kafka (`weir check-plugin --smoke`):
//! proves a module does more than load.
//!
//! It instantiates the plugin with the configured limits, gives it its
//! config, processes a batch of sample records (keyed, unkeyed, with
//! headers, a tombstone), snapshots it, processes a second batch, then
//! restores the snapshot into a fresh instance and processes the second
//! batch again. A plugin that exports `weir_tick` (ABI 1.1) is ticked
//! after each batch with the watermark of the timestamps so far (no
//! out-of-orderness), and after the second with the end-of-input
//! watermark; what the ticks emit counts as that batch's output.
//!
//! The sample records are fixed: partition 0 of source topic 0, offsets
//! 0..=3 and 4..=7, timestamps [`SAMPLE_TIME`] + offset ms. The two outputs of the second batch must be identical:
//! a plugin whose state does not survive a snapshot (state outside linear
//! memory and globals, or output that depends on anything but its input
//! and state) is caught here rather than after a failure in production.

use super::host_functions::{OutputSink, SinkError};
use super::instance::{BatchError, PluginInstance};
use super::plugin_module::PluginModule;
use super::snapshot::SnapshotError;
use std::sync::{Arc, Mutex};
use weir_plugin_sdk::abi::{self, Header, RecordIter};

/// The timestamp of the sample record at offset 0 (ms since the epoch:
/// 2023-11-14T22:13:20Z); each next offset is 1 ms later. Ticks get this
/// plus 60 s as their processing time, so every run sees the same.
pub const SAMPLE_TIME: i64 = 1_700_000_000_000;

/// One record, owned: what the smoke run feeds in and collects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRecord {
    /// Index into the sink topics (output) or 0 (input).
    pub topic: u32,
    /// Requested partition (output; -1 = by key) or the source partition.
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// What a passing smoke run saw.
#[derive(Debug)]
pub struct SmokeReport {
    /// The two input batches.
    pub input: [Vec<SampleRecord>; 2],
    /// What the plugin emitted for each batch (the second batch's output is
    /// the same from the live and the restored instance).
    pub output: [Vec<SampleRecord>; 2],
    /// Linear memory at the snapshot, bytes.
    pub memory_bytes: usize,
    /// Mutable globals in the snapshot.
    pub globals: usize,
}

/// Why a smoke run failed.
#[derive(Debug, thiserror::Error)]
pub enum SmokeError {
    #[error("instantiating the plugin: {0}")]
    Instantiate(#[source] super::PluginFault),
    #[error("weir_init with the given config: {0}")]
    Init(#[source] BatchError),
    #[error("processing sample batch {batch}: {error}")]
    Process { batch: usize, error: BatchError },
    #[error("restoring its own snapshot: {0}")]
    Restore(#[source] SnapshotError),
    #[error(
        "after restoring its snapshot the plugin emitted different output for the same batch ({live} records live, {restored} restored; first difference at output record {at}): its state is not all in linear memory and globals, or its output depends on something besides input and state"
    )]
    Diverged {
        live: usize,
        restored: usize,
        at: usize,
    },
}

/// Runs the smoke test described in the module docs. `config` is what the
/// plugin's `weir_init` receives; `sink_topics` names its output topics.
pub fn smoke_run(
    module: &PluginModule,
    config: &[(String, String)],
    sink_topics: &[String],
) -> Result<SmokeReport, SmokeError> {
    let topics: Arc<[String]> = sink_topics.to_vec().into();
    let input = [sample_batch(0), sample_batch(4)];
    let live_sink = Collect::default();
    let mut live = PluginInstance::new(module, Box::new(live_sink.clone()), topics.clone())
        .map_err(SmokeError::Instantiate)?;
    live.init(config).map_err(SmokeError::Init)?;
    feed(&mut live, &input[0], false).map_err(|error| SmokeError::Process { batch: 1, error })?;
    let first = live_sink.take();
    let snapshot = live.snapshot();
    feed(&mut live, &input[1], true).map_err(|error| SmokeError::Process { batch: 2, error })?;
    let second = live_sink.take();

    let restored_sink = Collect::default();
    let mut restored = PluginInstance::new(module, Box::new(restored_sink.clone()), topics)
        .map_err(SmokeError::Instantiate)?;
    restored
        .restore(&snapshot, false)
        .map_err(SmokeError::Restore)?;
    feed(&mut restored, &input[1], true)
        .map_err(|error| SmokeError::Process { batch: 2, error })?;
    let again = restored_sink.take();
    if again != second {
        let at = second
            .iter()
            .zip(&again)
            .position(|(a, b)| a != b)
            .unwrap_or(second.len().min(again.len()));
        return Err(SmokeError::Diverged {
            live: second.len(),
            restored: again.len(),
            at,
        });
    }
    Ok(SmokeReport {
        input,
        output: [first, second],
        memory_bytes: snapshot.memory.len(),
        globals: snapshot.globals.len(),
    })
}

/// Four records starting at `offset`: keyed text, keyed with headers,
/// unkeyed, and a tombstone (null value).
fn sample_batch(offset: i64) -> Vec<SampleRecord> {
    let rec = |i: i64, key: Option<&str>, value: Option<&str>, headers: &[(&str, Option<&str>)]| {
        SampleRecord {
            topic: 0,
            partition: 0,
            offset: offset + i,
            timestamp: SAMPLE_TIME + offset + i,
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
            headers: headers
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
                .collect(),
        }
    };
    vec![
        rec(0, Some("alpha"), Some("hello, weir"), &[]),
        rec(
            1,
            Some("beta"),
            Some("{\"n\": 42}"),
            &[("trace-id", Some("t-1")), ("flag", None)],
        ),
        rec(2, None, Some("no key"), &[]),
        rec(3, Some("alpha"), None, &[]),
    ]
}

/// Processes `records`, then ticks a plugin that exports `weir_tick`:
/// with the watermark of the timestamps so far, and (`last`) with the
/// end-of-input watermark.
fn feed(inst: &mut PluginInstance, records: &[SampleRecord], last: bool) -> Result<(), BatchError> {
    process(inst, records)?;
    if !inst.has_tick() {
        return Ok(());
    }
    for r in records {
        inst.observe_event_time(r.timestamp);
    }
    let now = SAMPLE_TIME + 60_000;
    inst.tick(inst.event_time() - 1, now)?;
    if last {
        inst.observe_event_time(abi::WATERMARK_END);
        inst.tick(abi::WATERMARK_END, now)?;
    }
    Ok(())
}

/// Encodes `records` into the instance's input buffer and processes them.
fn process(inst: &mut PluginInstance, records: &[SampleRecord]) -> Result<u64, BatchError> {
    fn headers(r: &SampleRecord) -> Vec<Header<'_>> {
        r.headers
            .iter()
            .map(|(n, v)| Header {
                name: n,
                value: v.as_deref(),
            })
            .collect()
    }
    let size = abi::BATCH_HEADER_LEN
        + records
            .iter()
            .map(|r| {
                abi::record_size(
                    r.key.as_deref(),
                    r.value.as_deref(),
                    abi::headers_size(headers(r)),
                )
            })
            .sum::<usize>();
    inst.process(size, |buf| {
        let mut w = abi::BatchWriter::new(buf).expect("sized above");
        for r in records {
            w.push(
                r.offset,
                r.timestamp,
                r.partition,
                r.topic,
                r.key.as_deref(),
                r.value.as_deref(),
                headers(r),
            )
            .expect("sized above");
        }
        w.finish()
    })
}

/// Keeps what the plugin emits.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<SampleRecord>>>);

impl Collect {
    fn take(&self) -> Vec<SampleRecord> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl OutputSink for Collect {
    fn emit(&mut self, records: RecordIter<'_>, _topics: &[String]) -> Result<(), SinkError> {
        let mut out = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for r in records {
            let r = r.map_err(|e| SinkError(e.to_string()))?;
            out.push(SampleRecord {
                topic: r.topic,
                partition: r.partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key.map(<[u8]>::to_vec),
                value: r.value.map(<[u8]>::to_vec),
                headers: r
                    .headers()
                    .map(|h| (h.name.to_vec(), h.value.map(<[u8]>::to_vec)))
                    .collect(),
            });
        }
        Ok(())
    }
}
