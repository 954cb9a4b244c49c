//! WASI preview 1 `poll_oneoff` that never blocks a worker thread.
//!
//! wasmtime-wasi's `poll_oneoff` sleeps the calling thread for a clock
//! subscription, and a thread asleep in the host is not interrupted by the
//! epoch deadline that bounds every plugin call. Go's runtime sleeps there
//! whenever its goroutines wait on a timer (`time.Sleep`, a scheduler with
//! nothing to run), so a plugin could stall a worker, and every partition
//! on it, for as long as it liked.
//!
//! This replacement sleeps on the plugin's own clock instead: it advances
//! the instance's monotonic clock (see `runtime::clock`) by the time the
//! earliest clock subscription waits for and returns at once, with that
//! subscription's event. What the plugin observes is what a sleep would
//! have shown it, without the wait. A call may sleep this way for at most
//! `limits.batch_timeout` in total; past that it fails with a timeout
//! fault, as a busy loop would. File descriptor subscriptions are ready at
//! once (stdin is at its end, stdout and stderr take writes); others fail
//! with `EBADF`.

use super::error::{FaultKind, PluginFault};
use super::host_functions::{HostState, trap};
use std::time::{SystemTime, UNIX_EPOCH};
use wasmtime::{Caller, Extern, Linker};
use weir_plugin_sdk::abi;

/// WASI errno values used here.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;

/// Subscription and event layout (WASI preview 1, wasm32).
const SUBSCRIPTION_LEN: usize = 48;
const EVENT_LEN: usize = 32;
const TAG_CLOCK: u8 = 0;
const TAG_FD_READ: u8 = 1;
const TAG_FD_WRITE: u8 = 2;
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const SUBSCRIPTION_CLOCK_ABSTIME: u16 = 1;
const EVENTRWFLAGS_FD_READWRITE_HANGUP: u16 = 1;

/// Replaces WASI's `poll_oneoff` in a linker that has it.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap(abi::WASI_MODULE, "poll_oneoff", poll_oneoff)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// One subscription, decoded.
enum Subscription {
    /// Wake after this many ns.
    Clock { userdata: u64, after_ns: u64 },
    /// Readiness of a file descriptor.
    Fd { userdata: u64, tag: u8, fd: u32 },
}

/// `wasi_snapshot_preview1.poll_oneoff(in, out, nsubscriptions, nevents)`.
pub fn poll_oneoff(
    mut caller: Caller<'_, HostState>,
    subs_ptr: i32,
    events_ptr: i32,
    count: i32,
    nevents_ptr: i32,
) -> wasmtime::Result<i32> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Ok(ERRNO_FAULT);
    };
    if count <= 0 {
        return Ok(ERRNO_INVAL);
    }
    let (mem, state) = memory.data_and_store_mut(&mut caller);
    let subs_len = count as usize * SUBSCRIPTION_LEN;
    let Some(raw) = range(mem, subs_ptr, subs_len) else {
        return Ok(ERRNO_FAULT);
    };
    let mut subs = Vec::with_capacity(count as usize);
    for s in raw.chunks_exact(SUBSCRIPTION_LEN) {
        match decode(s, state) {
            Ok(sub) => subs.push(sub),
            Err(errno) => return Ok(errno),
        }
    }
    let mut events = Vec::new();
    for s in &subs {
        if let Subscription::Fd { userdata, tag, fd } = *s {
            events.push(fd_event(userdata, tag, fd));
        }
    }
    if events.is_empty() {
        let wait = subs
            .iter()
            .filter_map(|s| match s {
                Subscription::Clock { after_ns, .. } => Some(*after_ns),
                Subscription::Fd { .. } => None,
            })
            .min()
            .unwrap_or(0);
        state.slept_ns = state.slept_ns.saturating_add(wait);
        let budget = state.limits.batch_timeout.as_nanos() as u64;
        if state.slept_ns > budget {
            let fault = PluginFault {
                kind: FaultKind::Timeout,
                message: format!(
                    "the plugin slept {} ms in this call (poll_oneoff); limits.batch_timeout is {} ms. A plugin call must not wait: the host moves the plugin's clock instead of sleeping, up to that limit",
                    state.slept_ns / 1_000_000,
                    budget / 1_000_000
                ),
            };
            return Err(trap(state, fault));
        }
        state.clock.advance(wait);
        for s in &subs {
            if let Subscription::Clock { userdata, after_ns } = *s
                && after_ns <= wait
            {
                events.push(event(userdata, ERRNO_SUCCESS, TAG_CLOCK, 0));
            }
        }
    }
    let Some(out) = range_mut(mem, events_ptr, events.len() * EVENT_LEN) else {
        return Ok(ERRNO_FAULT);
    };
    for (slot, e) in out.chunks_exact_mut(EVENT_LEN).zip(&events) {
        slot.copy_from_slice(e);
    }
    let Some(n) = range_mut(mem, nevents_ptr, 4) else {
        return Ok(ERRNO_FAULT);
    };
    n.copy_from_slice(&(events.len() as u32).to_le_bytes());
    Ok(ERRNO_SUCCESS)
}

/// Decodes one subscription; an unknown clock or tag is `Err(errno)`.
fn decode(s: &[u8], state: &HostState) -> Result<Subscription, i32> {
    let u64_at = |at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4 bytes"));
    let userdata = u64_at(0);
    match s[8] {
        TAG_CLOCK => {
            let (id, timeout) = (u32_at(16), u64_at(24));
            let flags = u16::from_le_bytes([s[40], s[41]]);
            let after_ns = if flags & SUBSCRIPTION_CLOCK_ABSTIME == 0 {
                timeout
            } else {
                let now = match id {
                    CLOCK_MONOTONIC => state.clock.now_ns(),
                    CLOCK_REALTIME => SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64),
                    _ => return Err(ERRNO_INVAL),
                };
                timeout.saturating_sub(now)
            };
            Ok(Subscription::Clock { userdata, after_ns })
        }
        tag @ (TAG_FD_READ | TAG_FD_WRITE) => Ok(Subscription::Fd {
            userdata,
            tag,
            fd: u32_at(16),
        }),
        _ => Err(ERRNO_INVAL),
    }
}

/// The event of an fd subscription: stdin is at its end, stdout and
/// stderr take writes, any other descriptor does not exist.
fn fd_event(userdata: u64, tag: u8, fd: u32) -> [u8; EVENT_LEN] {
    match (tag, fd) {
        (TAG_FD_READ, 0) => event(
            userdata,
            ERRNO_SUCCESS,
            tag,
            EVENTRWFLAGS_FD_READWRITE_HANGUP,
        ),
        (TAG_FD_WRITE, 1 | 2) => event(userdata, ERRNO_SUCCESS, tag, 0),
        _ => event(userdata, ERRNO_BADF, tag, 0),
    }
}

fn event(userdata: u64, errno: i32, tag: u8, flags: u16) -> [u8; EVENT_LEN] {
    let mut e = [0u8; EVENT_LEN];
    e[0..8].copy_from_slice(&userdata.to_le_bytes());
    e[8..10].copy_from_slice(&(errno as u16).to_le_bytes());
    e[10] = tag;
    e[24..26].copy_from_slice(&flags.to_le_bytes());
    e
}

fn range(mem: &[u8], ptr: i32, len: usize) -> Option<&[u8]> {
    let start = usize::try_from(ptr).ok()?;
    mem.get(start..start.checked_add(len)?)
}

fn range_mut(mem: &mut [u8], ptr: i32, len: usize) -> Option<&mut [u8]> {
    let start = usize::try_from(ptr).ok()?;
    mem.get_mut(start..start.checked_add(len)?)
}
