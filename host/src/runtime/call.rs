//! What every call into a guest shares: its budget (epoch deadline, fuel,
//! a clean memory-refusal record), turning a failed call into a typed
//! [`PluginFault`], and starting an instance (instantiation, then WASI's
//! `_initialize`). Used by live instances (`runtime::instance`) and by the
//! load-time probe that asks a module its ABI version
//! (`runtime::plugin_module`).

use super::error::{FaultKind, PluginFault};
use super::host_functions::HostState;
use bytesize::ByteSize;
use wasmtime::{Instance, InstancePre, Store};

/// A fresh store for `state`, with the engine's limits in force, and the
/// module instantiated in it; WASI reactors (wasm32-wasip1 libraries)
/// initialise their runtime in `_initialize`, which runs here.
pub(crate) fn start(
    engine: &wasmtime::Engine,
    pre: &InstancePre<HostState>,
    state: HostState,
) -> Result<(Store<HostState>, Instance), PluginFault> {
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store.epoch_deadline_trap();
    arm(&mut store);
    let instance = pre
        .instantiate(&mut store)
        .map_err(|e| fault_from(&mut store, e))?;
    if let Ok(initialize) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
        arm(&mut store);
        initialize
            .call(&mut store, ())
            .map_err(|e| fault_from(&mut store, e))?;
    }
    Ok((store, instance))
}

/// Gives the next guest call its budget: a fresh epoch deadline, fresh
/// fuel, and no memory refusal on record.
pub(crate) fn arm(store: &mut Store<HostState>) {
    let limits = store.data().limits;
    store.set_epoch_deadline(limits.deadline_ticks());
    if let Some(fuel) = limits.fuel {
        store
            .set_fuel(fuel)
            .expect("fuel metering is on when limits.fuel is set");
    }
    store.data_mut().limiter.refused = None;
    store.data_mut().slept_ns = 0;
}

/// Turns a wasmtime error from a guest call into a typed fault: a fault a
/// host function recorded, a WASI exit, a limit that was hit, or a trap.
pub(crate) fn fault_from(store: &mut Store<HostState>, e: wasmtime::Error) -> PluginFault {
    if let Some(f) = store.data_mut().fault.take() {
        return f;
    }
    if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return PluginFault {
            kind: FaultKind::Exit(exit.0),
            message: format!("the plugin called proc_exit({})", exit.0),
        };
    }
    // WASI traps on a pointer outside memory, as its spec says.
    if let Some(guest) = e.downcast_ref::<wiggle::GuestError>() {
        let mut inner = guest;
        while let wiggle::GuestError::InFunc { err, .. } = inner {
            inner = err;
        }
        if let wiggle::GuestError::PtrOverflow
        | wiggle::GuestError::PtrOutOfBounds(_)
        | wiggle::GuestError::PtrNotAligned(..) = inner
        {
            return PluginFault {
                kind: FaultKind::BadPointer,
                message: format!("WASI call: {guest}"),
            };
        }
    }
    let limits = store.data().limits;
    // A refused memory.grow usually ends in the allocator's abort: the
    // refusal is the real reason.
    if let Some(desired) = store.data_mut().limiter.refused.take() {
        return PluginFault {
            kind: FaultKind::MemoryLimit,
            message: format!(
                "the plugin tried to grow its memory to {}; limits.memory is {}",
                ByteSize(desired as u64),
                ByteSize(limits.memory as u64)
            ),
        };
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            return PluginFault {
                kind: FaultKind::Timeout,
                message: format!(
                    "the call ran longer than limits.batch_timeout ({})",
                    humantime::format_duration(limits.batch_timeout)
                ),
            };
        }
        Some(wasmtime::Trap::StackOverflow) => {
            return PluginFault {
                kind: FaultKind::StackOverflow,
                message: format!(
                    "wasm stack exhausted; limits.stack is {}",
                    ByteSize(limits.stack as u64)
                ),
            };
        }
        Some(wasmtime::Trap::OutOfFuel) => {
            return PluginFault {
                kind: FaultKind::OutOfFuel,
                message: format!(
                    "the call used all its fuel; limits.fuel is {}",
                    limits.fuel.unwrap_or(0)
                ),
            };
        }
        _ => {}
    }
    // One line: the trap itself (wasmtime's message puts the wasm
    // backtrace first, over several lines), then where, if known.
    let message = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => {
            let at = e.downcast_ref::<wasmtime::WasmBacktrace>().and_then(|bt| {
                bt.frames().first().map(|f| {
                    f.func_name()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("wasm function {}", f.func_index()))
                })
            });
            match at {
                Some(at) => format!("{trap} (in {at})"),
                None => trap.to_string(),
            }
        }
        None => format!("{e:#}")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    };
    PluginFault {
        kind: FaultKind::Trap,
        message,
    }
}
