//! `running-count-v2`: the running count of [`running-count`] with a
//! changed state layout, to show a plugin upgrade that keeps its state.
//! Per key it keeps the count and the timestamp of the key's latest record
//! (`last_seen`), and it emits what v1 emits: the key and its count. Its
//! memory image is nothing like v1's, so a v1 checkpoint cannot be restored
//! into it as it is; it takes v1's state over through portable state
//! (ABI 1.1, docs/ABI.md section 3b): v1 exports format 1, this reads
//! formats 1 and 2 and writes 2.
//!
//! [`running-count`]: ../running_count/index.html

use std::collections::BTreeMap;
use weir_plugin_sdk::prelude::*;

/// What v2 keeps per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub count: u64,
    /// The timestamp of the key's latest record (ms), or -1 for a key
    /// carried over from format 1, which did not keep it.
    pub last_seen: i64,
}

#[derive(Default)]
pub struct RunningCountV2 {
    keys: BTreeMap<Vec<u8>, Seen>,
}

impl Plugin for RunningCountV2 {
    fn process(&mut self, record: Record<'_>, out: &mut Output) -> Result<(), Error> {
        let key = record.key.unwrap_or_default();
        let seen = match self.keys.get_mut(key) {
            Some(s) => s,
            None => self.keys.entry(key.to_vec()).or_insert(Seen {
                count: 0,
                last_seen: -1,
            }),
        };
        seen.count += 1;
        seen.last_seen = seen.last_seen.max(record.timestamp);
        let count = seen.count.to_string();
        out.emit(record.key, Some(count.as_bytes()));
        Ok(())
    }
}

/// Format 2: `u32` entry count, then per key `u32` length, the key, its
/// `u64` count and its `i64` last-seen timestamp, little-endian. Format 1
/// (v1's) is the same without the timestamp.
impl PortableState for RunningCountV2 {
    const STATE_VERSION: u32 = 2;

    fn export_state(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        out.extend_from_slice(&(self.keys.len() as u32).to_le_bytes());
        for (key, seen) in &self.keys {
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&seen.count.to_le_bytes());
            out.extend_from_slice(&seen.last_seen.to_le_bytes());
        }
        Ok(())
    }

    fn import_state(&mut self, version: u32, bytes: &[u8]) -> Result<(), Error> {
        if version != 1 && version != 2 {
            return Err(Error::new(format!(
                "running-count-v2 reads state formats 1 and 2, not {version}"
            )));
        }
        let mut r = bytes;
        let n = take_u32(&mut r)?;
        for _ in 0..n {
            let len = take_u32(&mut r)? as usize;
            let key = take(&mut r, len)?.to_vec();
            let count = u64::from_le_bytes(take8(&mut r)?);
            let last_seen = match version {
                1 => -1,
                _ => i64::from_le_bytes(take8(&mut r)?),
            };
            self.keys.insert(key, Seen { count, last_seen });
        }
        if !r.is_empty() {
            return Err(Error::new(format!(
                "{} bytes after the last key of format {version}",
                r.len()
            )));
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

fn take8(r: &mut &[u8]) -> Result<[u8; 8], Error> {
    Ok(take(r, 8)?.try_into().unwrap_or_default())
}

fn take_u32(r: &mut &[u8]) -> Result<u32, Error> {
    Ok(u32::from_le_bytes(take(r, 4)?.try_into().unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_bytes(entries: &[(&[u8], u64)]) -> Vec<u8> {
        let mut out = (entries.len() as u32).to_le_bytes().to_vec();
        for (k, c) in entries {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    #[test]
    fn reads_format_1_and_round_trips_format_2() {
        let mut v2 = RunningCountV2::default();
        v2.import_state(1, &v1_bytes(&[(b"a", 3), (b"", 7)])).unwrap();
        assert_eq!(v2.keys[&b"a"[..]], Seen { count: 3, last_seen: -1 });
        assert_eq!(v2.keys[&b""[..]].count, 7);
        v2.keys.get_mut(&b"a"[..]).unwrap().last_seen = 1_700_000_000_000;
        let mut out = Vec::new();
        v2.export_state(&mut out).unwrap();
        let mut again = RunningCountV2::default();
        again.import_state(2, &out).unwrap();
        assert_eq!(again.keys, v2.keys);
    }

    #[test]
    fn refuses_unknown_formats_and_short_state() {
        let mut v2 = RunningCountV2::default();
        let e = v2.import_state(3, &[]).unwrap_err();
        assert!(e.message().contains("not 3"), "{e}");
        let mut short = v1_bytes(&[(b"abc", 1)]);
        short.pop();
        assert!(v2.import_state(1, &short).is_err());
        assert!(v2.import_state(2, &v1_bytes(&[(b"abc", 1)])).is_err());
    }
}

export_plugin!(RunningCountV2, portable_state);
