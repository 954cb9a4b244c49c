//! `running-count`: stateful. For every record it emits the record's key
//! and the number of records seen with that key so far (as decimal text).
//! The counts live in a `HashMap` in the plugin's linear memory, which the
//! host snapshots with every checkpoint.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use weir_plugin_sdk::prelude::*;

#[derive(Default)]
pub struct RunningCount {
    counts: HashMap<Vec<u8>, u64, BuildHasherDefault<KeyHasher>>,
}

/// A multiply-rotate hasher over 8-byte words (the `FxHash` scheme), for
/// the count table. std's default SipHash was about half of this plugin's
/// cost per record in wasm; a wasm32 plugin has no randomness to seed it
/// with anyway, so it gave no protection against chosen colliding keys.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        // The tail assembled in a register: copying it into a buffer would
        // be a variable-length `memory.copy`, a call out of the guest under
        // Cranelift.
        let mut tail = 0u64;
        for (i, b) in chunks.remainder().iter().enumerate() {
            tail |= u64::from(*b) << (8 * i);
        }
        self.add(tail);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // Spread the high bits down: hashbrown takes its control byte from
        // the top 7 bits and its bucket from the low ones.
        self.0.rotate_left(26)
    }
}

impl KeyHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Plugin for RunningCount {
    fn process(&mut self, record: Record<'_>, out: &mut Output) -> Result<(), Error> {
        let key = record.key.unwrap_or_default();
        let count = match self.counts.get_mut(key) {
            Some(c) => {
                *c += 1;
                *c
            }
            None => {
                self.counts.insert(key.to_vec(), 1);
                1
            }
        };
        let mut digits = [0u8; 20];
        out.emit(record.key, Some(format_u64(count, &mut digits)));
        Ok(())
    }
}

/// Formats without allocating.
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Portable state, format 1: `u32` entry count, then per key `u32` length,
/// the key's bytes and its `u64` count, all little-endian, in no order.
/// `running-count-v2` reads it (docs/ABI.md, section 3b).
impl PortableState for RunningCount {
    const STATE_VERSION: u32 = 1;

    fn export_state(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        out.extend_from_slice(&(self.counts.len() as u32).to_le_bytes());
        for (key, count) in &self.counts {
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&count.to_le_bytes());
        }
        Ok(())
    }

    fn import_state(&mut self, version: u32, bytes: &[u8]) -> Result<(), Error> {
        if version != 1 {
            return Err(Error::new(format!(
                "running-count reads state format 1, not {version} (a newer build wrote it)"
            )));
        }
        let mut r = bytes;
        let n = take_u32(&mut r)?;
        for _ in 0..n {
            let len = take_u32(&mut r)? as usize;
            let key = take(&mut r, len)?.to_vec();
            let count = u64::from_le_bytes(take(&mut r, 8)?.try_into().unwrap_or_default());
            self.counts.insert(key, count);
        }
        Ok(())
    }
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Result<&'a [u8], Error> {
    if r.len() < n {
        return Err(Error::new("state ends early"));
    }
    let (head, rest) = r.split_at(n);
    *r = rest;
    Ok(head)
}

fn take_u32(r: &mut &[u8]) -> Result<u32, Error> {
    Ok(u32::from_le_bytes(take(r, 4)?.try_into().unwrap_or_default()))
}

export_plugin!(RunningCount, portable_state);
