//! The host side of the plugin ABI against a guest that hands it arbitrary
//! pointers and lengths.
//!
//! `abi_boundary.wat` is one plugin, compiled once through the host's real
//! loader (`PluginModule::from_bytes`), whose behaviour is a script in its
//! memory (see the comment at the top of the WAT). Every run instantiates it
//! fresh (`PluginInstance::new`), writes the fuzz input's script into memory
//! and globals with `snapshot`/`restore`, then optionally calls `init` and
//! feeds it up to three batches through `process`, exactly as a partition
//! task does.
//!
//! Checked on every call:
//! - nothing panics or aborts: every outcome is `Ok` or a typed `Err`;
//! - `Ok(n)`: `n` is the number of records the sink accepted during the call;
//! - every batch the sink sees is valid (decodes whole, topic indexes in
//!   range, UTF-8 header names): malformed output never reaches it;
//! - a sink failure surfaces as `BatchError::Sink`, never as a plugin fault,
//!   and a `BatchError::Sink` only after the sink failed;
//! - a `BadPointer` fault names the offending range, and that range really is
//!   outside the memory size it names (or names the misaligned pointer);
//! - `ErrorStatus(s)` has `s != 0`.
//!
//! After a successful run, optionally, the instance's snapshot is encoded,
//! decoded and restored into a second fresh instance, whose snapshot must be
//! identical.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use weir::runtime::instance::BatchError;
use weir::runtime::snapshot::{GlobalValue, Snapshot};
use weir::runtime::{
    FaultKind, Limits, OutputSink, PluginEngine, PluginFault, PluginInstance, PluginModule,
    SinkError,
};
use weir_plugin_sdk::abi::{self, Header, RecordIter};

const WAT: &str = include_str!("abi_boundary.wat");
/// Where the script lives in guest memory (see the WAT).
const SCRIPT_AT: usize = 4096;
const SCRIPT_MAX: usize = 8192 + 4;
/// Mutable globals of the WAT, in index order.
const GLOBALS: usize = 4;

/// The plugin compiled twice: under the default `Limits`, and under tight
/// ones (1 MiB of memory, a few records and bytes of output, fuel) so that
/// every limit can be hit.
static MODULES: OnceLock<[PluginModule; 2]> = OnceLock::new();

fn tight_limits() -> Limits {
    Limits {
        memory: 16 * 65536,
        max_output_records: 6,
        max_output_bytes: 200,
        max_record_bytes: 64,
        fuel: Some(1_000),
        ..Limits::default()
    }
}

fn modules() -> &'static [PluginModule; 2] {
    MODULES.get_or_init(|| {
        let load = |engine: PluginEngine| {
            PluginModule::from_bytes(&engine, Path::new("abi_boundary.wat"), WAT.as_bytes())
                .unwrap_or_else(|e| panic!("the fuzz plugin does not load: {e}"))
        };
        [
            load(PluginEngine::new().expect("engine")),
            load(PluginEngine::with_limits(tight_limits()).expect("engine")),
        ]
    })
}

/// Known host findings (see fuzz/README.md) that the target tolerates when
/// `WEIR_FUZZ_LENIENT=1`, so that a long run can look past them. Finding 1
/// needs a plugin that calls the host from inside `weir_input_buffer`
/// (`ib_mode` bit 2): only such inputs are excused.
fn lenient() -> bool {
    static LENIENT: OnceLock<bool> = OnceLock::new();
    *LENIENT.get_or_init(|| std::env::var_os("WEIR_FUZZ_LENIENT").is_some_and(|v| v == "1"))
}

/// What the sink saw, shared with the fuzz target.
#[derive(Debug, Default)]
struct SinkLog {
    /// `emit` calls so far.
    emits: u32,
    /// Records accepted so far.
    records: u64,
    /// Fail the emit call with this index.
    fail_at: Option<u32>,
    /// The sink has refused a batch (since the flag was last cleared).
    failed: bool,
}

struct Sink(Arc<Mutex<SinkLog>>);

impl OutputSink for Sink {
    fn emit(&mut self, records: RecordIter<'_>, sink_topics: &[String]) -> Result<(), SinkError> {
        let mut log = self.0.lock().unwrap();
        let index = log.emits;
        log.emits += 1;
        let announced = records.remaining();
        let mut count = 0u64;
        for r in records {
            let r = r.expect("the host passed a batch that does not decode to the sink");
            assert!(
                (r.topic as usize) < sink_topics.len(),
                "record for sink topic {} of {} reached the sink",
                r.topic,
                sink_topics.len()
            );
            let mut headers = 0u32;
            for h in r.headers() {
                assert!(
                    std::str::from_utf8(h.name).is_ok(),
                    "non-UTF-8 header name reached the sink"
                );
                headers += 1;
            }
            assert_eq!(headers, r.header_count);
            count += 1;
        }
        assert_eq!(count, announced as u64);
        if log.fail_at == Some(index) {
            log.failed = true;
            return Err(SinkError("fuzz sink refuses this batch".into()));
        }
        log.records += count;
        Ok(())
    }
}

#[derive(Debug, Arbitrary)]
struct InRecord {
    partition: i32,
    topic: u8,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// Run under the tight limits.
    tight: bool,
    /// Number of sink topics, mod 4 (0 is allowed: every emit is refused).
    sink_topics: u8,
    ib_mode: u8,
    ib_arg: i32,
    /// The sink refuses its n-th `emit` call.
    sink_fail_at: Option<u8>,
    /// Call `init` with these entries first.
    init: Option<Vec<(String, String)>>,
    /// Up to three `process` calls.
    batches: Vec<Vec<InRecord>>,
    /// Snapshot, encode, decode and restore at the end.
    snapshot_round_trip: bool,
    /// `status:i32` then ops; see the WAT.
    script: Vec<u8>,
}

/// Checks how one `init`/`process` call ended; true if it succeeded.
fn check(
    what: &str,
    result: Result<u64, BatchError>,
    log: &Arc<Mutex<SinkLog>>,
    records_before: u64,
    memory_now: usize,
    tight: bool,
    calls_from_input_buffer: bool,
) -> bool {
    let excused = calls_from_input_buffer && lenient();
    if debug() {
        match &result {
            Ok(n) => eprintln!("outcome {what}: Ok({n})"),
            Err(BatchError::Sink(e)) => eprintln!("outcome {what}: Sink: {e}"),
            Err(BatchError::Fault(f)) => {
                eprintln!("outcome {what}: {}: {}", f.kind.code(), f.message)
            }
        }
    }
    let mut l = log.lock().unwrap();
    let sink_failed = std::mem::take(&mut l.failed);
    let accepted = l.records - records_before;
    drop(l);
    match result {
        Ok(n) => {
            assert!(
                !sink_failed,
                "{what}: the sink failed but the call returned Ok"
            );
            if what == "process" && n != accepted {
                assert!(
                    excused,
                    "{what}: Ok({n}) but the sink accepted {accepted} records"
                );
                tolerated(
                    "finding 1, record count",
                    &format!("Ok({n}), sink took {accepted}"),
                );
            }
            true
        }
        Err(BatchError::Sink(e)) => {
            assert!(
                sink_failed,
                "{what}: Err(Sink({e})) but the sink never failed"
            );
            false
        }
        Err(BatchError::Fault(f)) => {
            if sink_failed {
                assert!(
                    excused,
                    "{what}: the sink failed, but the call reports a plugin fault: {f}"
                );
                tolerated("finding 1, sink failure as fault", &f.to_string());
            }
            check_fault(what, &f, memory_now, tight);
            false
        }
    }
}

fn check_fault(what: &str, f: &PluginFault, memory_now: usize, tight: bool) {
    match f.kind {
        FaultKind::BadPointer => check_bad_pointer(what, &f.message, memory_now),
        FaultKind::ErrorStatus(s) => assert_ne!(s, abi::STATUS_OK, "{what}: ErrorStatus(0)"),
        // The plugin has no recursion, and under the default limits it
        // cannot reach the memory cap, the output limits or run out of fuel.
        FaultKind::StackOverflow => panic!("{what}: stack overflow reported: {f}"),
        FaultKind::MemoryLimit | FaultKind::OutOfFuel => {
            assert!(tight, "{what}: limit fault under the default limits: {f}")
        }
        FaultKind::OutputLimit => {
            assert!(tight, "{what}: output limit under the default limits: {f}")
        }
        // Timeout: 5 s per call, not expected but not an error of the host.
        FaultKind::Exit(_) | FaultKind::Trap | FaultKind::Timeout => {}
    }
    // Renders.
    let _ = f.to_string();
    let _ = f.kind.code();
}

/// A `BadPointer` message names the range, and the range is really out of
/// bounds of the memory size it names; or it names the misaligned pointer.
fn check_bad_pointer(what: &str, msg: &str, memory_now: usize) {
    if let Some(rest) = msg.strip_prefix("weir_input_buffer returned ") {
        let ptr: i64 = rest
            .split(',')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{what}: misalignment fault without the pointer: {msg}"));
        assert!(
            ptr % 8 != 0,
            "{what}: aligned pointer reported misaligned: {msg}"
        );
        return;
    }
    if let Some(wasi) = msg.strip_prefix("WASI call: ") {
        return check_wasi_bad_pointer(what, wasi, memory_now);
    }
    let parse = || -> Option<(&str, i64, i64, u64)> {
        let (who, rest) = msg.split_once(": range [")?;
        let (ptr, rest) = rest.split_once(", ")?;
        let (ptr2, rest) = rest.split_once('+')?;
        let (len, rest) = rest.split_once(") is outside linear memory of ")?;
        let mem = rest.strip_suffix(" bytes")?;
        if ptr2 != ptr {
            return None;
        }
        Some((who, ptr.parse().ok()?, len.parse().ok()?, mem.parse().ok()?))
    };
    let Some((who, ptr, len, mem)) = parse() else {
        panic!("{what}: BadPointer fault that does not name a range: {msg:?}");
    };
    assert!(
        matches!(who, "weir.emit" | "weir.log" | "weir_input_buffer"),
        "{what}: BadPointer from an unexpected place: {msg}"
    );
    assert!(
        ptr < 0 || len < 0 || (ptr + len) as u64 > mem,
        "{what}: range [{ptr}, {ptr}+{len}) is inside memory of {mem} bytes: {msg}"
    );
    assert!(
        mem % 65536 == 0 && mem >= 2 * 65536,
        "{what}: odd memory size: {msg}"
    );
    assert!(mem as usize <= memory_now, "{what}: memory shrank: {msg}");
}

/// wiggle's `GuestError` as the host renders it: `PtrOutOfBounds` and
/// `PtrNotAligned` name a `Region { start, len }`; `PtrOverflow` names none.
fn check_wasi_bad_pointer(what: &str, msg: &str, memory_now: usize) {
    let region = || -> Option<(u64, u64)> {
        let (_, rest) = msg.split_once("Region { start: ")?;
        let (start, rest) = rest.split_once(", len: ")?;
        let (len, _) = rest.split_once(" }")?;
        Some((start.parse().ok()?, len.parse().ok()?))
    };
    if msg.contains("Pointer out of bounds") {
        let (start, len) = region()
            .unwrap_or_else(|| panic!("{what}: WASI bad pointer without its region: {msg}"));
        assert!(
            start + len > memory_now as u64,
            "{what}: WASI region [{start}, {start}+{len}) is inside memory of {memory_now} bytes: {msg}"
        );
    } else if msg.contains("Pointer not aligned") {
        assert!(
            region().is_some(),
            "{what}: WASI misalignment without its region: {msg}"
        );
    } else if lenient() {
        tolerated("WASI BadPointer without a range", msg);
    } else {
        panic!("{what}: BadPointer fault that does not name a range: {msg:?}");
    }
}

/// Says once per kind that a known finding was tolerated.
fn tolerated(kind: &'static str, detail: &str) {
    static SEEN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap();
    if !seen.contains(&kind) {
        seen.push(kind);
        eprintln!("WEIR_FUZZ_LENIENT: tolerated {kind}: {detail}");
    }
}

/// `WEIR_FUZZ_DEBUG=1` prints every decoded input (to read a crash).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("WEIR_FUZZ_DEBUG").is_some_and(|v| v == "1"))
}

fn run(input: Input) {
    let module = &modules()[usize::from(input.tight)];
    let tight = input.tight;
    let from_ib = input.ib_mode & 4 != 0;
    let topics: Arc<[String]> = (0..input.sink_topics % 4)
        .map(|i| format!("out-{i}"))
        .collect::<Vec<_>>()
        .into();
    let log = Arc::new(Mutex::new(SinkLog {
        fail_at: input.sink_fail_at.map(u32::from),
        ..SinkLog::default()
    }));
    let mut inst = PluginInstance::new(module, Box::new(Sink(log.clone())), topics.clone())
        .unwrap_or_else(|f| panic!("a fresh instance of the fuzz plugin fails: {f}"));

    // Load the script: memory and the two control globals.
    let mut snap = inst.snapshot();
    assert_eq!(
        snap.globals.len(),
        GLOBALS,
        "mutable globals of the fuzz plugin"
    );
    snap.globals[0] = GlobalValue::I32(i32::from(input.ib_mode));
    snap.globals[1] = GlobalValue::I32(input.ib_arg);
    let script = &input.script[..input.script.len().min(SCRIPT_MAX)];
    snap.memory[SCRIPT_AT..SCRIPT_AT + 4].copy_from_slice(&(script.len() as u32).to_le_bytes());
    snap.memory[SCRIPT_AT + 4..SCRIPT_AT + 4 + script.len()].copy_from_slice(script);
    inst.restore(&snap, false)
        .expect("restore into a fresh instance");

    if let Some(entries) = &input.init {
        let before = log.lock().unwrap().records;
        let r = inst.init(entries).map(|()| 0);
        if !check("init", r, &log, before, inst.memory_size(), tight, from_ib) {
            return;
        }
    }

    for batch in input.batches.iter().take(3) {
        let headers: Vec<Vec<Header<'_>>> = batch
            .iter()
            .map(|r| {
                r.headers
                    .iter()
                    .map(|(n, v)| Header {
                        name: n,
                        value: v.as_deref(),
                    })
                    .collect()
            })
            .collect();
        let size = abi::BATCH_HEADER_LEN
            + batch
                .iter()
                .zip(&headers)
                .map(|(r, h)| {
                    abi::record_size(
                        r.key.as_deref(),
                        r.value.as_deref(),
                        abi::headers_size(h.iter().copied()),
                    )
                })
                .sum::<usize>();
        let before = log.lock().unwrap().records;
        let r = inst.process(size, |buf| {
            assert_eq!(buf.len(), size);
            let mut w = abi::BatchWriter::new(buf).expect("sized");
            for (i, (r, h)) in batch.iter().zip(&headers).enumerate() {
                w.push(
                    1000 + i as i64,
                    abi::NO_TIMESTAMP,
                    r.partition,
                    u32::from(r.topic),
                    r.key.as_deref(),
                    r.value.as_deref(),
                    h.iter().copied(),
                )
                .expect("sized");
            }
            w.finish()
        });
        if !check(
            "process",
            r,
            &log,
            before,
            inst.memory_size(),
            tight,
            from_ib,
        ) {
            return;
        }
    }

    if input.snapshot_round_trip {
        let snap = inst.snapshot();
        let mut bytes = Vec::new();
        snap.encode(&mut bytes);
        let back = Snapshot::decode(&bytes).expect("a snapshot the host took decodes");
        assert_eq!(back, snap);
        let sink = Box::new(Sink(Arc::new(Mutex::new(SinkLog::default()))));
        let mut fresh = PluginInstance::new(module, sink, topics).expect("second instance");
        fresh
            .restore(&back, false)
            .expect("a snapshot of the same module restores");
        assert_eq!(fresh.snapshot(), snap, "restore is not exact");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        if debug() {
            eprintln!("{input:#?}");
        }
        run(input);
    }
});
