//! What one plugin instance may use, and how the host holds it to that.
//!
//! - Memory: a [`ResourceLimiter`] per store refuses growth past the cap;
//!   the refusal is remembered so the trap that usually follows (an
//!   allocator aborting) is reported as a memory-limit fault, not a bare
//!   `unreachable`.
//! - Time: epoch interruption. One ticker thread per engine (one engine
//!   per process) bumps the epoch every [`EPOCH_TICK`]; each plugin call
//!   gets a deadline of `batch_timeout` in ticks. Cheaper than fuel, and it
//!   catches an endless loop whatever instructions it runs.
//! - Stack: wasmtime's `max_wasm_stack`, engine-wide.
//! - Output: records and bytes per input batch, and bytes per record,
//!   checked in `weir.emit` before anything reaches the producer.
//! - Fuel: optional, for deterministic budgets; it slows every call, so it
//!   is off unless configured.

use std::time::Duration;
use wasmtime::{Engine, ResourceLimiter};

/// The epoch ticker's period: the resolution of the per-batch deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits of every plugin instance of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of linear memory.
    pub memory: usize,
    /// Wall-clock budget of one plugin call.
    pub batch_timeout: Duration,
    /// Most bytes of wasm stack.
    pub stack: usize,
    /// Most records emitted while processing one input batch.
    pub max_output_records: u64,
    /// Most bytes (keys, values, headers) emitted per input batch.
    pub max_output_bytes: u64,
    /// Most bytes (key, value, headers) of one emitted record.
    pub max_record_bytes: u64,
    /// Fuel per plugin call; `None` turns fuel metering off.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 512 << 20,
            batch_timeout: Duration::from_secs(5),
            stack: 1 << 20,
            max_output_records: 500_000,
            max_output_bytes: 256 << 20,
            max_record_bytes: 1 << 20,
            fuel: None,
        }
    }
}

impl Limits {
    /// The epoch deadline of one call, in ticks (rounded up, at least 1).
    pub fn deadline_ticks(&self) -> u64 {
        let tick = EPOCH_TICK.as_nanos();
        (self.batch_timeout.as_nanos().div_ceil(tick) as u64).max(1)
    }
}

/// Starts the engine's epoch ticker. It holds only a weak reference, so it
/// ends when the engine is dropped.
pub(crate) fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("weir-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn the epoch ticker thread");
}

/// The memory limiter of one store.
#[derive(Debug)]
pub struct InstanceLimiter {
    memory_cap: usize,
    /// The size a refused `memory.grow` asked for, if one was refused since
    /// the last call began.
    pub(crate) refused: Option<usize>,
}

impl InstanceLimiter {
    /// A limiter for `limits`.
    pub fn new(limits: &Limits) -> Self {
        InstanceLimiter {
            memory_cap: limits.memory,
            refused: None,
        }
    }
}

/// Tables are fixed at load (see `runtime::rewrite`); this bounds what a
/// module may declare.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl ResourceLimiter for InstanceLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_to_whole_ticks() {
        let mut l = Limits::default();
        assert_eq!(l.deadline_ticks(), 500);
        l.batch_timeout = Duration::from_millis(15);
        assert_eq!(l.deadline_ticks(), 2);
        l.batch_timeout = Duration::ZERO;
        assert_eq!(l.deadline_ticks(), 1);
    }
}
