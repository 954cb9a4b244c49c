//! `uppercase`: a stateless map. Every record's value is upper-cased
//! (ASCII); key, headers and timestamp pass through.
//!
//! The value is upper-cased from the input straight into the output buffer
//! ([`Output::emit_filled`]): one pass over its bytes, no copy before it,
//! and the headers go on as their encoded block ([`OutRecord::forward`]),
//! so a record costs no allocation.

use weir_plugin_sdk::prelude::*;

#[derive(Default)]
pub struct Uppercase;

impl Plugin for Uppercase {
    fn process(&mut self, record: Record<'_>, out: &mut Output) -> Result<(), Error> {
        let forward = OutRecord::forward(&record);
        match record.value {
            Some(value) => out.emit_filled(forward, value.len(), |dst| upper_into(dst, value)),
            None => out.emit_record(forward),
        }
        Ok(())
    }
}

/// ASCII upper-casing of `src` into `dst` (of the same length), 16 bytes
/// per step with wasm SIMD (every wasmtime host runs it); a value of 16
/// bytes or more ends with one step over its last 16, overlapping the step
/// before, instead of a byte loop (a byte costs ~15 instructions without
/// SIMD).
#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
fn upper_into(dst: &mut [u8], src: &[u8]) {
    use core::arch::wasm32::*;
    let n = src.len();
    assert_eq!(dst.len(), n);
    if n < 16 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_ascii_uppercase();
        }
        return;
    }
    let (a, letters, case) = (u8x16_splat(b'a'), u8x16_splat(26), u8x16_splat(0x20));
    let mut step = |at: usize| {
        // SAFETY: at + 16 <= n, the length of both slices; v128 loads and
        // stores need no alignment.
        unsafe {
            let x = v128_load(src.as_ptr().add(at).cast());
            let lower = u8x16_lt(u8x16_sub(x, a), letters);
            v128_store(
                dst.as_mut_ptr().add(at).cast(),
                v128_xor(x, v128_and(lower, case)),
            );
        }
    };
    let mut at = 0;
    while at + 16 <= n {
        step(at);
        at += 16;
    }
    if at < n {
        step(n - 16);
    }
}

/// Natively (the unit tests): the plain loop.
#[cfg(not(target_arch = "wasm32"))]
fn upper_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_ascii_uppercase();
    }
}

export_plugin!(Uppercase);
