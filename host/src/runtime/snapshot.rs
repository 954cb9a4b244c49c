//! Snapshots of a plugin instance: its whole linear memory and every
//! mutable global, taken between calls (no guest frame on the stack).
//!
//! Restore is a fresh instance of the same module, memory grown to the
//! snapshot's size, bytes copied, globals set. A snapshot records the
//! SHA-256 of the module it came from; restoring into another module is
//! refused unless explicitly allowed.
//!
//! Encoded form (little-endian), read back as untrusted input:
//!
//! ```text
//! magic "WEIRSNP2" | module sha256 [32] | global_count u32
//! | (tag u8, bits u64) * global_count | event_time i64 | clock_ns u64
//! | memory_len u64 | memory bytes | crc32 of everything before it, u32
//! ```
//!
//! `event_time` and `clock_ns` are the instance's [`HostTime`]. Version 1
//! files (`WEIRSNP1`, written before the host kept time) have no such
//! fields and read back with the default: no event time, clock at zero.
//!
//! That is the full form. A checkpoint may instead hold a delta against an
//! earlier state (see [`super::snapshot_delta`]); restoring applies the
//! deltas of a chain to its full base in order ([`Snapshot::apply_delta`]).

/// Magic bytes at the start of an encoded snapshot.
pub const MAGIC: &[u8; 8] = b"WEIRSNP2";
/// Magic of the first format, without [`HostTime`]; still read.
pub const MAGIC_V1: &[u8; 8] = b"WEIRSNP1";
/// Linear memory page size.
pub const PAGE: usize = 65536;
/// Largest memory a snapshot may claim (the wasm32 limit).
pub const MAX_MEMORY: u64 = 4 << 30;

/// A mutable global's value, bit-exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalValue {
    I32(i32),
    I64(i64),
    /// f32 as raw bits, so NaN payloads survive.
    F32(u32),
    /// f64 as raw bits.
    F64(u64),
}

/// What the host keeps of an instance's time, outside its memory and
/// globals, and snapshots with them: so a restored plugin sees the same
/// watermark and a monotonic clock that never goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTime {
    /// The highest record timestamp the instance was given (ms since the
    /// epoch), or `abi::WATERMARK_NONE` if none yet.
    pub event_time: i64,
    /// The instance's WASI monotonic clock at the snapshot, in ns.
    pub clock_ns: u64,
}

impl Default for HostTime {
    fn default() -> Self {
        HostTime {
            event_time: weir_plugin_sdk::abi::WATERMARK_NONE,
            clock_ns: 0,
        }
    }
}

impl HostTime {
    /// Encoded size.
    pub(crate) const LEN: usize = 16;

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.event_time.to_le_bytes());
        out.extend_from_slice(&self.clock_ns.to_le_bytes());
    }

    /// Reads what [`encode`](Self::encode) wrote at `*pos`, advancing it.
    pub(crate) fn decode(body: &[u8], pos: &mut usize) -> Result<HostTime, SnapshotError> {
        let Some(bytes) = body.get(*pos..*pos + Self::LEN) else {
            return Err(SnapshotError::Corrupt("truncated in the host time".into()));
        };
        *pos += Self::LEN;
        Ok(HostTime {
            event_time: i64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            clock_ns: u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes")),
        })
    }
}

/// An instance's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// SHA-256 of the module file the state belongs to.
    pub module_sha256: [u8; 32],
    /// Mutable globals, in the module's global-index order.
    pub globals: Vec<GlobalValue>,
    /// The host's time for the instance.
    pub time: HostTime,
    /// The whole linear memory.
    pub memory: Vec<u8>,
}

/// A snapshot cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes are not a valid snapshot (truncated, bad checksum, sizes
    /// that do not add up).
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
    /// The snapshot came from a different module.
    #[error(
        "snapshot was taken with module sha256 {expected}, but the plugin is now {found}; set checkpoint.allow_module_change = true to restore it anyway"
    )]
    ModuleMismatch { expected: String, found: String },
    /// The snapshot does not fit the module (globals, memory limits).
    #[error("snapshot does not fit the module: {0}")]
    Shape(String),
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Snapshot {
    /// Size of the encoded form.
    pub fn encoded_len(&self) -> usize {
        8 + 32 + 4 + 9 * self.globals.len() + HostTime::LEN + 8 + self.memory.len() + 4
    }

    /// Appends the encoded form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.reserve(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.module_sha256);
        encode_globals(&self.globals, out);
        self.time.encode(out);
        out.extend_from_slice(&(self.memory.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.memory);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Decodes and checks an encoded snapshot.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let corrupt = |m: &str| SnapshotError::Corrupt(m.to_string());
        if bytes.len() < 8 + 32 + 4 + 8 + 4 {
            return Err(corrupt("too short"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(corrupt("checksum mismatch"));
        }
        let v1 = match &body[..8] {
            m if m == MAGIC => false,
            m if m == MAGIC_V1 => true,
            _ => return Err(corrupt("bad magic")),
        };
        let mut module_sha256 = [0u8; 32];
        module_sha256.copy_from_slice(&body[8..40]);
        let mut pos = 40usize;
        let globals = decode_globals(body, &mut pos)?;
        let time = match v1 {
            true => HostTime::default(),
            false => HostTime::decode(body, &mut pos)?,
        };
        if body.len() - pos < 8 {
            return Err(corrupt("truncated before memory length"));
        }
        let mem_len = u64::from_le_bytes(body[pos..pos + 8].try_into().expect("8 bytes"));
        pos += 8;
        if mem_len > MAX_MEMORY || mem_len % PAGE as u64 != 0 {
            return Err(SnapshotError::Corrupt(format!(
                "memory length {mem_len} is invalid"
            )));
        }
        if (body.len() - pos) as u64 != mem_len {
            return Err(corrupt("memory length does not match the data"));
        }
        Ok(Snapshot {
            module_sha256,
            globals,
            time,
            memory: body[pos..].to_vec(),
        })
    }
}

/// Appends `count u32 | (tag u8, bits u64) * count`.
pub(crate) fn encode_globals(globals: &[GlobalValue], out: &mut Vec<u8>) {
    out.extend_from_slice(&(globals.len() as u32).to_le_bytes());
    for g in globals {
        let (tag, bits) = match *g {
            GlobalValue::I32(v) => (0u8, v as u32 as u64),
            GlobalValue::I64(v) => (1, v as u64),
            GlobalValue::F32(v) => (2, v as u64),
            GlobalValue::F64(v) => (3, v),
        };
        out.push(tag);
        out.extend_from_slice(&bits.to_le_bytes());
    }
}

/// Reads what [`encode_globals`] wrote, at `*pos` of `body`, advancing
/// `pos`. Never allocates more than the data can hold.
pub(crate) fn decode_globals(
    body: &[u8],
    pos: &mut usize,
) -> Result<Vec<GlobalValue>, SnapshotError> {
    let corrupt = |m: &str| SnapshotError::Corrupt(m.to_string());
    if body.len().saturating_sub(*pos) < 4 {
        return Err(corrupt("truncated before the global count"));
    }
    let count = u32::from_le_bytes(body[*pos..*pos + 4].try_into().expect("4 bytes")) as usize;
    *pos += 4;
    if count > (body.len() - *pos) / 9 {
        return Err(corrupt("global count exceeds the data"));
    }
    let mut globals = Vec::with_capacity(count);
    for _ in 0..count {
        let p = *pos;
        let tag = body[p];
        let bits = u64::from_le_bytes(body[p + 1..p + 9].try_into().expect("8 bytes"));
        *pos += 9;
        if matches!(tag, 0 | 2) && bits >> 32 != 0 {
            return Err(SnapshotError::Corrupt(format!(
                "32-bit global {} has bits above 32 set",
                globals.len()
            )));
        }
        globals.push(match tag {
            0 => GlobalValue::I32(bits as u32 as i32),
            1 => GlobalValue::I64(bits as i64),
            2 => GlobalValue::F32(bits as u32),
            3 => GlobalValue::F64(bits),
            t => return Err(SnapshotError::Corrupt(format!("unknown global tag {t}"))),
        });
    }
    Ok(globals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            module_sha256: [7; 32],
            globals: vec![
                GlobalValue::I32(-5),
                GlobalValue::I64(i64::MIN),
                GlobalValue::F32(f32::NAN.to_bits() | 1),
                GlobalValue::F64(1.5f64.to_bits()),
            ],
            time: HostTime {
                event_time: 1_700_000_000_123,
                clock_ns: 42_000_000_007,
            },
            memory: (0..PAGE * 2).map(|i| (i * 31) as u8).collect(),
        }
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let s = sample();
        let mut buf = Vec::new();
        s.encode(&mut buf);
        assert_eq!(buf.len(), s.encoded_len());
        assert_eq!(Snapshot::decode(&buf).unwrap(), s);
    }

    /// Found by the `snapshot_decode` fuzz target: a 32-bit global with
    /// high bits set decoded silently (and re-encoded differently).
    #[test]
    fn a_32_bit_global_with_high_bits_is_corrupt() {
        let snap = Snapshot {
            module_sha256: [1; 32],
            globals: vec![GlobalValue::I32(1)],
            time: HostTime::default(),
            memory: Vec::new(),
        };
        let mut bytes = Vec::new();
        snap.encode(&mut bytes);
        let body = bytes.len() - 4;
        let at = bytes[..body]
            .windows(9)
            .position(|w| w == [0, 1, 0, 0, 0, 0, 0, 0, 0])
            .expect("the global's tag and bits");
        bytes[at + 5] = 0x6f;
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
        match Snapshot::decode(&bytes) {
            Err(SnapshotError::Corrupt(m)) => assert!(m.contains("bits above 32"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    /// Snapshots written before the host kept time still restore.
    #[test]
    fn a_version_1_snapshot_reads_with_default_time() {
        let s = sample();
        let mut v1 = Vec::new();
        v1.extend_from_slice(MAGIC_V1);
        v1.extend_from_slice(&s.module_sha256);
        encode_globals(&s.globals, &mut v1);
        v1.extend_from_slice(&(s.memory.len() as u64).to_le_bytes());
        v1.extend_from_slice(&s.memory);
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let read = Snapshot::decode(&v1).unwrap();
        assert_eq!(read.time, HostTime::default());
        assert_eq!((read.globals, read.memory), (s.globals, s.memory));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_detected() {
        let mut buf = Vec::new();
        sample().encode(&mut buf);
        for cut in [0, 1, 10, 44, 60, buf.len() / 2, buf.len() - 1] {
            assert!(Snapshot::decode(&buf[..cut]).is_err(), "cut {cut}");
        }
        for at in [0, 9, 41, 50, 100, buf.len() - 100, buf.len() - 2] {
            let mut bad = buf.clone();
            bad[at] ^= 0x10;
            assert!(Snapshot::decode(&bad).is_err(), "flip at {at}");
        }
    }
}
