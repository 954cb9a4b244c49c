//! `uppercase`: a stateless map. Every record's value is upper-cased
//! (ASCII); key, headers and timestamp pass through.
//!
//! A [`ValueMap`]: the SDK upper-cases each value where it lies in the
//! input batch and hands the batch back whole, so a record costs one SIMD
//! pass over its value and no output write.

use weir_plugin_sdk::prelude::*;

#[derive(Default)]
pub struct Uppercase;

impl ValueMap for Uppercase {
    fn map(&mut self, value: &mut [u8]) {
        upper_in_place(value);
    }
}

/// ASCII upper-casing in place, 16 bytes
/// per step with wasm SIMD (every wasmtime host runs it); a value of 16
/// bytes or more ends with one step over its last 16, overlapping the step
/// before, instead of a byte loop (a byte costs ~15 instructions without
/// SIMD).
#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
fn upper_in_place(v: &mut [u8]) {
    use core::arch::wasm32::*;
    let n = v.len();
    if n < 16 {
        v.make_ascii_uppercase();
        return;
    }
    let (a, letters, case) = (u8x16_splat(b'a'), u8x16_splat(26), u8x16_splat(0x20));
    let mut step = |at: usize| {
        // SAFETY: at + 16 <= n, the slice's length; v128 loads and stores
        // need no alignment. The overlapping last step reads bytes already
        // upper-cased, which it leaves as they are.
        unsafe {
            let p = v.as_mut_ptr().add(at);
            let x = v128_load(p.cast());
            let lower = u8x16_lt(u8x16_sub(x, a), letters);
            v128_store(p.cast(), v128_xor(x, v128_and(lower, case)));
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
fn upper_in_place(v: &mut [u8]) {
    v.make_ascii_uppercase();
}

export_plugin!(Uppercase, value_map);
