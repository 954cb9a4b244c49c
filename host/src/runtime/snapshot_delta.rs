//! Incremental snapshots: what changed in an instance's state since an
//! earlier state (its base), so a checkpoint costs what changed and not
//! the whole memory.
//!
//! A delta holds the memory length, the changed runs of 4 KiB pages (see
//! `runtime::dirty_pages`) and every mutable global. Applying the deltas of
//! a chain in order to its full base gives the state byte for byte
//! ([`Snapshot::apply_delta`]).
//!
//! Encoded form (little-endian), read back as untrusted input like the
//! full form:
//!
//! ```text
//! magic "WEIRDLT2" | module sha256 [32] | base u64 | base crc32 u32
//! | global_count u32 | (tag u8, bits u64) * global_count
//! | event_time i64 | clock_ns u64
//! | memory_len u64 | run_count u32 | (offset u64, len u64) * run_count
//! | the runs' bytes, in order | crc32 of everything before it, u32
//! ```
//!
//! `WEIRDLT1` deltas, written before the host kept time, have no
//! `event_time` and `clock_ns` and are still read (with the default time).
//!
//! `base` names the state the delta applies to (a checkpoint id in the
//! checkpoint store, an offset in the exactly-once state directory) and
//! `base crc32` is the trailing checksum of that state's file, so a chain
//! whose link points at a different or rewritten file is refused.

use super::dirty_pages::OS_PAGE;
use super::snapshot::{self, GlobalValue, HostTime, MAX_MEMORY, PAGE, Snapshot, SnapshotError};
use std::ops::Range;

/// Magic bytes at the start of an encoded delta.
pub const DELTA_MAGIC: &[u8; 8] = b"WEIRDLT2";
/// Magic of the first delta format, without [`HostTime`]; still read.
pub const DELTA_MAGIC_V1: &[u8; 8] = b"WEIRDLT1";

/// What changed since a base state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDelta {
    /// SHA-256 of the module, as in the base.
    pub module_sha256: [u8; 32],
    /// Every mutable global (they are few; no point in diffing them).
    pub globals: Vec<GlobalValue>,
    /// The host's time for the instance, whole.
    pub time: HostTime,
    /// Linear memory length at the time of the delta (never less than the
    /// base's: wasm memory does not shrink).
    pub memory_len: u64,
    /// Changed runs `(offset, len)`: page-aligned, sorted, disjoint, inside
    /// `memory_len`.
    runs: Vec<(u64, u64)>,
    /// The runs' bytes, concatenated in order.
    data: Vec<u8>,
}

/// Where a delta's base is, as written in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaLink {
    /// The base's key: checkpoint id or offset, depending on the store.
    pub base: u64,
    /// The trailing CRC32 of the base's encoded file.
    pub base_crc: u32,
}

/// A decoded state file: full or delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateFile {
    Full(Snapshot),
    Delta(DeltaLink, SnapshotDelta),
}

/// What an instance hands over at a checkpoint.
#[derive(Debug, Clone)]
pub struct Capture {
    /// Which instance (unique in the process): deltas of one instance apply
    /// only to its own earlier captures.
    pub instance: u64,
    /// Capture number within the instance, from 1; a delta with `seq` n
    /// applies to the capture with `seq` n - 1.
    pub seq: u64,
    /// The state, or what changed since the previous capture.
    pub state: CapturedState,
}

/// The state part of a [`Capture`].
#[derive(Debug, Clone)]
pub enum CapturedState {
    Full(Snapshot),
    Delta(SnapshotDelta),
}

impl Capture {
    /// Bytes of memory copied to take it.
    pub fn copied_bytes(&self) -> usize {
        match &self.state {
            CapturedState::Full(s) => s.memory.len(),
            CapturedState::Delta(d) => d.data.len(),
        }
    }
}

impl SnapshotDelta {
    /// Copies `ranges` of `memory` (sorted, disjoint, page-aligned, as
    /// `DirtyTracker::take_dirty` returns them).
    pub fn copy_from(
        module_sha256: [u8; 32],
        (globals, time): (Vec<GlobalValue>, HostTime),
        memory: &[u8],
        ranges: &[Range<usize>],
    ) -> SnapshotDelta {
        let total = ranges.iter().map(|r| r.len()).sum();
        let mut data = super::huge_pages::buffer(total);
        let mut runs = Vec::with_capacity(ranges.len());
        for r in ranges {
            debug_assert!(r.start.is_multiple_of(OS_PAGE) && r.end <= memory.len());
            data.extend_from_slice(&memory[r.clone()]);
            runs.push((r.start as u64, r.len() as u64));
        }
        SnapshotDelta {
            module_sha256,
            globals,
            time,
            memory_len: memory.len() as u64,
            runs,
            data,
        }
    }

    /// The changed runs and their bytes.
    pub fn pages(&self) -> impl Iterator<Item = (Range<usize>, &[u8])> {
        let mut at = 0usize;
        self.runs.iter().map(move |&(offset, len)| {
            let (o, l) = (offset as usize, len as usize);
            let bytes = &self.data[at..at + l];
            at += l;
            (o..o + l, bytes)
        })
    }

    /// Bytes of changed memory it carries.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }

    /// Size of the encoded form.
    pub fn encoded_len(&self) -> usize {
        8 + 32
            + 8
            + 4
            + 4
            + 9 * self.globals.len()
            + HostTime::LEN
            + 8
            + 4
            + 16 * self.runs.len()
            + self.data.len()
            + 4
    }

    /// Appends the encoded form, linked to `link`, to `out`.
    pub fn encode(&self, link: DeltaLink, out: &mut Vec<u8>) {
        let start = out.len();
        out.reserve(self.encoded_len());
        out.extend_from_slice(DELTA_MAGIC);
        out.extend_from_slice(&self.module_sha256);
        out.extend_from_slice(&link.base.to_le_bytes());
        out.extend_from_slice(&link.base_crc.to_le_bytes());
        snapshot::encode_globals(&self.globals, out);
        self.time.encode(out);
        out.extend_from_slice(&self.memory_len.to_le_bytes());
        out.extend_from_slice(&(self.runs.len() as u32).to_le_bytes());
        for &(offset, len) in &self.runs {
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(&self.data);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Decodes and checks an encoded delta: checksum, then every length
    /// against the bytes actually present before anything is allocated.
    pub fn decode(bytes: &[u8]) -> Result<(DeltaLink, SnapshotDelta), SnapshotError> {
        let corrupt = |m: &str| SnapshotError::Corrupt(m.to_string());
        const FIXED: usize = 8 + 32 + 8 + 4 + 4 + 8 + 4 + 4;
        if bytes.len() < FIXED {
            return Err(corrupt("delta too short"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(corrupt("delta checksum mismatch"));
        }
        let v1 = match &body[..8] {
            m if m == DELTA_MAGIC => false,
            m if m == DELTA_MAGIC_V1 => true,
            _ => return Err(corrupt("bad delta magic")),
        };
        let u64_at = |p: usize| u64::from_le_bytes(body[p..p + 8].try_into().expect("8 bytes"));
        let u32_at = |p: usize| u32::from_le_bytes(body[p..p + 4].try_into().expect("4 bytes"));
        let mut module_sha256 = [0u8; 32];
        module_sha256.copy_from_slice(&body[8..40]);
        let link = DeltaLink {
            base: u64_at(40),
            base_crc: u32_at(48),
        };
        let mut pos = 52usize;
        let globals = snapshot::decode_globals(body, &mut pos)?;
        let time = match v1 {
            true => HostTime::default(),
            false => HostTime::decode(body, &mut pos)?,
        };
        if body.len() - pos < 12 {
            return Err(corrupt("delta truncated before the memory length"));
        }
        let memory_len = u64_at(pos);
        let run_count = u32_at(pos + 8) as usize;
        pos += 12;
        if memory_len > MAX_MEMORY || !memory_len.is_multiple_of(PAGE as u64) {
            return Err(SnapshotError::Corrupt(format!(
                "delta memory length {memory_len} is invalid"
            )));
        }
        if run_count > (body.len() - pos) / 16 {
            return Err(corrupt("delta run count exceeds the data"));
        }
        let mut runs = Vec::with_capacity(run_count);
        let mut end_of_last = 0u64;
        let mut total = 0u64;
        for i in 0..run_count {
            let (offset, len) = (u64_at(pos), u64_at(pos + 8));
            pos += 16;
            let end = offset.saturating_add(len);
            if len == 0
                || !offset.is_multiple_of(OS_PAGE as u64)
                || !len.is_multiple_of(OS_PAGE as u64)
                || end > memory_len
                || (i > 0 && offset < end_of_last)
            {
                return Err(SnapshotError::Corrupt(format!(
                    "delta run {i} ({offset}, {len}) is out of order, unaligned or outside memory"
                )));
            }
            end_of_last = end;
            total += len;
            runs.push((offset, len));
        }
        if (body.len() - pos) as u64 != total {
            return Err(corrupt("delta run lengths do not match the data"));
        }
        Ok((
            link,
            SnapshotDelta {
                module_sha256,
                globals,
                time,
                memory_len,
                runs,
                data: body[pos..].to_vec(),
            },
        ))
    }
}

/// A delta applies to a full state; the codec of full states
/// (`runtime::snapshot`) knows nothing of deltas.
impl Snapshot {
    /// Applies a delta taken after this state: memory grows to the delta's
    /// length, changed pages are copied in, globals replaced. The result is
    /// the state the delta was taken at, byte for byte.
    pub fn apply_delta(&mut self, delta: &SnapshotDelta) -> Result<(), SnapshotError> {
        let shape = |m: String| SnapshotError::Shape(m);
        if delta.module_sha256 != self.module_sha256 {
            return Err(shape(format!(
                "delta was taken with module {}, its base with {}",
                snapshot::hex(&delta.module_sha256),
                snapshot::hex(&self.module_sha256)
            )));
        }
        if delta.globals.len() != self.globals.len() {
            return Err(shape(format!(
                "delta has {} globals, its base {}",
                delta.globals.len(),
                self.globals.len()
            )));
        }
        let len =
            usize::try_from(delta.memory_len).map_err(|_| shape("memory too large".into()))?;
        if len < self.memory.len() {
            return Err(shape(format!(
                "delta memory of {len} bytes is smaller than its base's {} (memory never shrinks)",
                self.memory.len()
            )));
        }
        // Grown memory always counts as written, so the delta carries every
        // byte of it: a delta cannot make us allocate what its file does
        // not hold.
        let mut covered = self.memory.len();
        for (range, _) in delta.pages() {
            if range.start <= covered {
                covered = covered.max(range.end);
            }
        }
        if covered < len {
            return Err(shape(format!(
                "delta grows memory from {} to {len} bytes but carries only up to {covered}",
                self.memory.len()
            )));
        }
        self.memory.resize(len, 0);
        for (range, bytes) in delta.pages() {
            // Checked at construction and decoding: runs lie inside memory_len.
            self.memory[range].copy_from_slice(bytes);
        }
        self.globals.clone_from(&delta.globals);
        self.time = delta.time;
        Ok(())
    }
}

impl StateFile {
    /// Decodes a full snapshot or a delta, by its magic.
    pub fn decode(bytes: &[u8]) -> Result<StateFile, SnapshotError> {
        if is_delta(bytes) {
            let (link, d) = SnapshotDelta::decode(bytes)?;
            Ok(StateFile::Delta(link, d))
        } else {
            Snapshot::decode(bytes).map(StateFile::Full)
        }
    }
}

/// Whether encoded state starts like a delta (either version).
fn is_delta(bytes: &[u8]) -> bool {
    bytes.starts_with(DELTA_MAGIC) || bytes.starts_with(DELTA_MAGIC_V1)
}

/// The trailing CRC32 of an encoded state file (either form), which a
/// delta's link records.
pub fn file_crc(bytes: &[u8]) -> u32 {
    match bytes.len().checked_sub(4) {
        Some(at) => u32::from_le_bytes(bytes[at..].try_into().expect("4 bytes")),
        None => 0,
    }
}

/// The link of an encoded delta, read from its header without checking
/// the rest (for retention, which only needs to know what a file needs).
pub fn peek_link(header: &[u8]) -> Option<DeltaLink> {
    if header.len() < 52 || !is_delta(header) {
        return None;
    }
    Some(DeltaLink {
        base: u64::from_le_bytes(header[40..48].try_into().ok()?),
        base_crc: u32::from_le_bytes(header[48..52].try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Snapshot {
        Snapshot {
            module_sha256: [3; 32],
            globals: vec![GlobalValue::I32(1), GlobalValue::F64(2.5f64.to_bits())],
            time: HostTime::default(),
            memory: (0..PAGE * 2).map(|i| (i * 7) as u8).collect(),
        }
    }

    fn delta_of(target: &Snapshot, ranges: &[Range<usize>]) -> SnapshotDelta {
        SnapshotDelta::copy_from(
            target.module_sha256,
            (target.globals.clone(), target.time),
            &target.memory,
            ranges,
        )
    }

    #[test]
    fn base_plus_delta_is_the_target_byte_for_byte() {
        let b = base();
        let mut target = b.clone();
        target.memory.resize(PAGE * 3, 0);
        target.memory[5000] = 0xaa;
        target.memory[PAGE * 2 + 1] = 0xbb;
        target.time = HostTime {
            event_time: 77,
            clock_ns: 1234,
        };
        target.globals[0] = GlobalValue::I32(-9);
        let d = delta_of(&target, &[4096..8192, PAGE * 2..PAGE * 3]);
        let link = DeltaLink {
            base: 7,
            base_crc: 0xdead_beef,
        };
        let mut buf = Vec::new();
        d.encode(link, &mut buf);
        assert_eq!(buf.len(), d.encoded_len());
        let (l2, d2) = SnapshotDelta::decode(&buf).unwrap();
        assert_eq!((l2, &d2), (link, &d));
        assert_eq!(peek_link(&buf), Some(link));
        assert_eq!(file_crc(&buf), crc32fast::hash(&buf[..buf.len() - 4]));
        let mut restored = b;
        restored.apply_delta(&d2).unwrap();
        assert_eq!(restored, target);
        assert!(matches!(StateFile::decode(&buf), Ok(StateFile::Delta(..))));
    }

    #[test]
    fn a_delta_cannot_shrink_memory_or_change_shape() {
        let mut b = base();
        let mut small = b.clone();
        small.memory.truncate(PAGE);
        assert!(b.apply_delta(&delta_of(&small, &[])).is_err());
        let mut other = b.clone();
        other.globals.pop();
        assert!(b.apply_delta(&delta_of(&other, &[])).is_err());
        // Growth the delta does not carry (a tiny file claiming a huge
        // memory) is refused before anything is allocated.
        let mut grown = b.clone();
        grown.memory.resize(PAGE * 4, 0);
        let partial = delta_of(&grown, std::slice::from_ref(&(PAGE * 2..PAGE * 3)));
        assert!(b.clone().apply_delta(&partial).is_err());
        let whole = delta_of(&grown, std::slice::from_ref(&(PAGE * 2..PAGE * 4)));
        b.apply_delta(&whole).unwrap();
        assert_eq!(b, grown);
    }

    #[test]
    fn every_truncation_bit_flip_and_bad_run_is_refused() {
        let b = base();
        let d = delta_of(&b, &[0..4096, 8192..16384]);
        let mut buf = Vec::new();
        d.encode(
            DeltaLink {
                base: 1,
                base_crc: 2,
            },
            &mut buf,
        );
        for cut in 0..buf.len() {
            assert!(SnapshotDelta::decode(&buf[..cut]).is_err(), "cut {cut}");
        }
        for at in (0..buf.len()).step_by(97) {
            let mut bad = buf.clone();
            bad[at] ^= 0x04;
            assert!(SnapshotDelta::decode(&bad).is_err(), "flip at {at}");
        }
        // Well-checksummed but lying headers: overlapping runs, a run past
        // memory, a huge run count.
        let reseal = |mut v: Vec<u8>| {
            let n = v.len() - 4;
            let crc = crc32fast::hash(&v[..n]);
            v[n..].copy_from_slice(&crc.to_le_bytes());
            v
        };
        let runs_at = 52 + 4 + 9 * 2 + HostTime::LEN + 12;
        let mut overlap = buf.clone();
        overlap[runs_at + 16..runs_at + 24].copy_from_slice(&0u64.to_le_bytes());
        assert!(SnapshotDelta::decode(&reseal(overlap)).is_err());
        let mut past = buf.clone();
        past[runs_at + 16..runs_at + 24].copy_from_slice(&(PAGE as u64 * 2).to_le_bytes());
        assert!(SnapshotDelta::decode(&reseal(past)).is_err());
        let mut many = buf.clone();
        many[runs_at - 4..runs_at].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(SnapshotDelta::decode(&reseal(many)).is_err());
    }
}
