//! `running-count`: stateful. For every record it emits the record's key
//! and the number of records seen with that key so far (as decimal text).
//! The counts live in a hash table in the plugin's linear memory, which the
//! host snapshots with every checkpoint.
//!
//! The table is hashbrown's `HashTable`, searched with a key comparison of
//! its own ([`same_key`]): a `HashMap<Vec<u8>, _>` compares keys with
//! `memcmp`, which in a wasm32 module is a byte loop and a call, and was
//! the most expensive part of a record (215 of ~1,450 instructions).

use hashbrown::HashTable;
use weir_plugin_sdk::prelude::*;

#[derive(Default)]
pub struct RunningCount {
    /// `(key, count)`, found by [`hash`] and [`same_key`].
    counts: HashTable<(Vec<u8>, u64)>,
}

impl RunningCount {
    /// Adds `n` to the count of `key`; returns the new count.
    #[inline]
    fn add(&mut self, key: &[u8], n: u64) -> u64 {
        let h = hash(key);
        match self.counts.find_mut(h, |(k, _)| same_key(k, key)) {
            Some((_, c)) => {
                *c += n;
                *c
            }
            None => {
                self.counts
                    .insert_unique(h, (key.to_vec(), n), |(k, _)| hash(k));
                n
            }
        }
    }
}

/// A multiply-rotate hash over 8-byte words (the `FxHash` scheme), the
/// length last. std's default SipHash was about half of this plugin's
/// cost per record in wasm; a wasm32 plugin has no randomness to seed it
/// with anyway, so it gave no protection against chosen colliding keys.
#[inline]
fn hash(key: &[u8]) -> u64 {
    let add = |h: u64, word: u64| (h.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    let mut chunks = key.chunks_exact(8);
    let mut h = 0;
    for c in &mut chunks {
        h = add(h, u64::from_le_bytes(c.try_into().unwrap_or_default()));
    }
    // The tail assembled in a register: copying it into a buffer would be
    // a variable-length `memory.copy`, a call out of the guest.
    let mut tail = 0u64;
    for (i, b) in chunks.remainder().iter().enumerate() {
        tail |= u64::from(*b) << (8 * i);
    }
    // Spread the high bits down: hashbrown takes its control byte from
    // the top 7 bits and its bucket from the low ones.
    add(add(h, tail), key.len() as u64).rotate_left(26)
}

/// Whether two keys are equal: up to 16 bytes with two overlapping word
/// loads each, inline (the common case: keys are short).
#[inline(always)]
fn same_key(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word =
        |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or_default());
    let half =
        |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or_default());
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

impl Plugin for RunningCount {
    fn process(&mut self, record: Record<'_>, out: &mut Output) -> Result<(), Error> {
        let count = self.add(record.key.unwrap_or_default(), 1);
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
            let key = take(&mut r, len)?;
            let count = u64::from_le_bytes(take(&mut r, 8)?.try_into().unwrap_or_default());
            self.add(key, count);
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
    Ok(u32::from_le_bytes(
        take(r, 4)?.try_into().unwrap_or_default(),
    ))
}

export_plugin!(RunningCount, portable_state);

#[cfg(test)]
mod tests {
    use super::{format_u64, same_key};

    #[test]
    fn counts_format_as_decimal_text() {
        let mut buf = [0u8; 20];
        for n in [
            0,
            1,
            9,
            10,
            99,
            1_000,
            4_294_967_295,
            4_294_967_296,
            u64::MAX,
        ] {
            assert_eq!(format_u64(n, &mut buf), n.to_string().as_bytes(), "{n}");
        }
    }

    #[test]
    fn keys_compare_equal_exactly_when_their_bytes_are() {
        let data: Vec<u8> = (0..40).collect();
        for n in 0..=40 {
            let a = &data[..n];
            assert!(same_key(a, a), "{n}");
            for i in 0..n {
                let mut b = a.to_vec();
                b[i] ^= 0x80;
                assert!(!same_key(a, &b), "{n} bytes, byte {i} differs");
            }
            if n > 0 {
                assert!(!same_key(a, &data[..n - 1]), "{n}: lengths differ");
            }
        }
    }
}
