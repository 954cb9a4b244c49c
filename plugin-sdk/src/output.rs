//! The buffer a plugin emits records into during one batch.
//!
//! Records are encoded straight into one reusable buffer in the ABI's batch
//! layout; the SDK hands it to the host with one `weir.emit` call at the end
//! of the batch (or earlier when it grows past [`FLUSH_AT`]), so a batch
//! costs one host call, not one per record.
//!
//! Emitting is on every plugin's per-record path, so it is written for
//! speed: one capacity check per record, the 40-byte record header built in
//! registers and stored at once, no allocation once the buffer has grown.
//! The buffer stays initialised between batches (the SDK tracks its own
//! length), so a record is not zero-filled before it is written, and short
//! fields are copied with plain loads and stores: under Cranelift both
//! `memory.fill` and `memory.copy` (what `resize` and `copy_from_slice`
//! compile to with bulk memory) are calls out of the guest, dearer than
//! copying a key. Two shortcuts avoid
//! work a plugin would otherwise do per record:
//! - [`OutRecord::forward`] carries an input record's headers on as their
//!   encoded block ([`HeaderBlock`]): one copy, no decoding, no `Vec`;
//! - [`Output::emit_edited`] copies the value into the output buffer and
//!   lets the plugin edit it there, so a map that keeps the value's length
//!   needs no buffer of its own;
//! - [`Output::emit_filled`] lets the plugin write the value into the
//!   output buffer itself: a map reads its input and writes its result in
//!   one pass, with no copy at all.

use crate::abi::{self, Header, HeaderBlock, RecordRef};

/// Flush to the host once this many bytes are buffered.
pub const FLUSH_AT: usize = 256 * 1024;

/// One output record. Build it with struct update syntax:
/// `OutRecord { value: Some(b"x"), ..OutRecord::default() }`, or from an
/// input record: `OutRecord { value, ..OutRecord::forward(&record) }`.
#[derive(Debug, Clone, Copy)]
pub struct OutRecord<'a> {
    /// Index into the pipeline's configured sink topics (0 = the first).
    pub topic: u32,
    /// Target partition, or `abi::ANY_PARTITION` to let the host's
    /// partitioner choose by key.
    pub partition: i32,
    /// Milliseconds since the epoch, or `abi::NO_TIMESTAMP`.
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// Headers to write, after those of `header_block`.
    pub headers: &'a [Header<'a>],
    /// Headers already encoded (an input record's
    /// [`header_block`](RecordRef::header_block)), written first, as they
    /// are: the cheap way to pass a record's headers on.
    pub header_block: HeaderBlock<'a>,
}

impl Default for OutRecord<'_> {
    fn default() -> Self {
        OutRecord {
            topic: 0,
            partition: abi::ANY_PARTITION,
            timestamp: abi::NO_TIMESTAMP,
            key: None,
            value: None,
            headers: &[],
            header_block: HeaderBlock::default(),
        }
    }
}

impl<'a> OutRecord<'a> {
    /// The input record passed on: its key, value, headers and timestamp,
    /// to the first sink topic, partitioned by key. Change what differs
    /// with struct update syntax: `OutRecord { value, ..OutRecord::forward(&record) }`.
    #[inline]
    pub fn forward(record: &RecordRef<'a>) -> Self {
        OutRecord {
            key: record.key,
            value: record.value,
            timestamp: record.timestamp,
            header_block: record.header_block(),
            ..OutRecord::default()
        }
    }
}

/// Where a plugin's output records go. Owned by the SDK; reused across
/// batches so that emitting allocates nothing once the buffer has grown.
#[derive(Debug, Default)]
pub struct Output {
    /// Always initialised; `len` bytes of it are this batch's.
    buf: Vec<u8>,
    len: usize,
    count: u32,
    /// The first error `weir.emit` returned in this batch, if any.
    pub(crate) emit_error: Option<i32>,
}

impl Output {
    /// Emits a record with this key and value to the first sink topic.
    #[inline]
    pub fn emit(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.emit_record(OutRecord {
            key,
            value,
            ..OutRecord::default()
        });
    }

    /// Emits a fully specified record.
    #[inline]
    pub fn emit_record(&mut self, r: OutRecord<'_>) {
        let value = r.value;
        self.write(&r, value.map(<[u8]>::len), |v| {
            copy_bytes(v, value.unwrap_or_default())
        });
    }

    /// Emits `r` with its value copied into the output buffer and then
    /// changed there, in place, by `edit`: a map that keeps the value's
    /// length (upper-casing, masking, fixing a field) then needs no buffer
    /// of its own and costs one copy. A null value stays null and `edit` is
    /// not called.
    ///
    /// ```
    /// # use weir_plugin_sdk::prelude::*;
    /// # fn f(record: Record<'_>, out: &mut Output) {
    /// out.emit_edited(OutRecord::forward(&record), |v| v.make_ascii_uppercase());
    /// # }
    /// ```
    #[inline]
    pub fn emit_edited(&mut self, r: OutRecord<'_>, edit: impl FnOnce(&mut [u8])) {
        let value = r.value;
        self.write(&r, value.map(<[u8]>::len), |v| {
            copy_bytes(v, value.unwrap_or_default());
            edit(v)
        });
    }

    /// Emits `r` with a value of `len` bytes that `fill` writes straight
    /// into the output buffer (`r.value` is not used): a map that reads
    /// its input and writes its result once, with no copy before it (the
    /// `uppercase` example upper-cases from the input value into the
    /// output this way). `fill` must write every byte: the slice holds
    /// whatever an earlier batch left there.
    ///
    /// ```
    /// # use weir_plugin_sdk::prelude::*;
    /// # fn f(record: Record<'_>, out: &mut Output) {
    /// let value = record.value.unwrap_or_default();
    /// out.emit_filled(OutRecord::forward(&record), value.len(), |dst| {
    ///     for (d, s) in dst.iter_mut().zip(value) {
    ///         *d = s.to_ascii_uppercase();
    ///     }
    /// });
    /// # }
    /// ```
    #[inline]
    pub fn emit_filled(&mut self, r: OutRecord<'_>, len: usize, fill: impl FnOnce(&mut [u8])) {
        self.write(&r, Some(len), fill);
    }

    /// Appends one record whose value has `value_len` bytes (`None`: null),
    /// written by `fill` (not called for a null value).
    #[inline(always)]
    fn write(&mut self, r: &OutRecord<'_>, value_len: Option<usize>, fill: impl FnOnce(&mut [u8])) {
        let key = r.key.unwrap_or_default();
        let value_size = value_len.unwrap_or(0);
        let block = r.header_block.raw;
        let headers_len = block.len() + abi::headers_size(r.headers.iter().copied());
        let header_count = r.header_block.count + r.headers.len() as u32;
        let used = abi::RECORD_HEADER_LEN + key.len() + value_size + headers_len;
        let size = abi::align(used);
        if self.len == 0 {
            // The batch header, filled in by `flush`.
            self.len = abi::BATCH_HEADER_LEN;
        }
        let start = self.len;
        // One capacity check; growing (rare) is the only fill.
        if self.buf.len() < start + size {
            let grown = (start + size).max(self.buf.len() * 2).max(4096);
            self.buf.resize(grown, 0);
        }
        let out = &mut self.buf[start..start + size];
        // The padding (under 8 bytes) lies in the record's last word.
        out[size - 8..].copy_from_slice(&[0; 8]);
        let (head, body) = out.split_at_mut(abi::RECORD_HEADER_LEN);
        let len_of = |present: bool, len: usize| {
            if present { len as i32 } else { abi::NULL_LEN }
        };
        let mut fields = [0u8; abi::RECORD_HEADER_LEN];
        // offset (0..8) is ignored on output and stays 0.
        fields[8..16].copy_from_slice(&r.timestamp.to_le_bytes());
        fields[16..20].copy_from_slice(&r.partition.to_le_bytes());
        fields[20..24].copy_from_slice(&r.topic.to_le_bytes());
        fields[24..28].copy_from_slice(&len_of(r.key.is_some(), key.len()).to_le_bytes());
        fields[28..32].copy_from_slice(&len_of(value_len.is_some(), value_size).to_le_bytes());
        fields[32..36].copy_from_slice(&(headers_len as u32).to_le_bytes());
        fields[36..40].copy_from_slice(&header_count.to_le_bytes());
        head.copy_from_slice(&fields);
        let (k, body) = body.split_at_mut(key.len());
        copy_bytes(k, key);
        let (v, body) = body.split_at_mut(value_size);
        if value_len.is_some() {
            fill(v);
        }
        let (b, body) = body.split_at_mut(block.len());
        copy_bytes(b, block);
        if !r.headers.is_empty() {
            write_headers(body, r.headers);
        }
        self.len = start + size;
        self.count += 1;
        if self.len >= FLUSH_AT {
            self.flush();
        }
    }

    /// Records buffered and not yet handed to the host.
    pub fn pending(&self) -> u32 {
        self.count
    }

    /// Hands buffered records to the host now.
    pub fn flush(&mut self) {
        if self.count == 0 {
            return;
        }
        self.buf[0..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf[4..8].copy_from_slice(&[0; 4]);
        let rc = crate::rt::host_emit(&self.buf[..self.len]);
        if rc != abi::EMIT_OK && self.emit_error.is_none() {
            self.emit_error = Some(rc);
        }
        self.len = 0;
        self.count = 0;
    }
}

/// Copies `src` into `dst` (of the same length). Up to 32 bytes with
/// overlapping word loads and stores, inline; longer with `memory.copy`,
/// whose call out of the guest then pays for itself.
#[inline(always)]
fn copy_bytes(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    assert_eq!(dst.len(), n);
    let word = |at: usize| u64::from_le_bytes(src[at..at + 8].try_into().unwrap());
    let mut put = |at: usize, w: u64| dst[at..at + 8].copy_from_slice(&w.to_le_bytes());
    match n {
        0 => {}
        1..=3 => {
            let (a, b, c) = (src[0], src[n / 2], src[n - 1]);
            dst[0] = a;
            dst[n / 2] = b;
            dst[n - 1] = c;
        }
        4..=7 => {
            let a = u32::from_le_bytes(src[..4].try_into().unwrap());
            let b = u32::from_le_bytes(src[n - 4..].try_into().unwrap());
            dst[..4].copy_from_slice(&a.to_le_bytes());
            dst[n - 4..].copy_from_slice(&b.to_le_bytes());
        }
        8..=16 => {
            let (a, b) = (word(0), word(n - 8));
            put(0, a);
            put(n - 8, b);
        }
        17..=32 => {
            let (a, b, c, d) = (word(0), word(8), word(n - 16), word(n - 8));
            put(0, a);
            put(8, b);
            put(n - 16, c);
            put(n - 8, d);
        }
        _ => dst.copy_from_slice(src),
    }
}

/// Encodes `headers` at the start of `out` (the rest is padding, zero).
#[inline(never)]
fn write_headers(out: &mut [u8], headers: &[Header<'_>]) {
    let mut at = 0;
    for h in headers {
        let value_len = h.value.map_or(abi::NULL_LEN, |v| v.len() as i32);
        out[at..at + 4].copy_from_slice(&(h.name.len() as u32).to_le_bytes());
        out[at + 4..at + 8].copy_from_slice(&value_len.to_le_bytes());
        at += 8;
        out[at..at + h.name.len()].copy_from_slice(h.name);
        at += h.name.len();
        if let Some(v) = h.value {
            out[at..at + v.len()].copy_from_slice(v);
            at += v.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The buffered batch, decoded (without handing it to a host).
    fn decoded(out: &mut Output) -> Vec<(RecordRef<'_>, Vec<Header<'_>>)> {
        out.buf[0..4].copy_from_slice(&out.count.to_le_bytes());
        abi::records(&out.buf[..out.len])
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (r, r.headers().collect())
            })
            .collect()
    }

    #[test]
    fn records_encode_as_the_abi_says() {
        let mut input = [0u8; 256];
        let mut w = abi::BatchWriter::new(&mut input).unwrap();
        let hs = [
            Header {
                name: b"trace",
                value: Some(b"ab"),
            },
            Header {
                name: b"x",
                value: None,
            },
        ];
        w.push(9, 1234, 2, 0, Some(b"key"), Some(b"hello"), hs)
            .unwrap();
        let len = w.finish();
        let rec = abi::records(&input[..len])
            .unwrap()
            .next()
            .unwrap()
            .unwrap();

        let extra = [Header {
            name: b"added",
            value: Some(b"1"),
        }];
        let mut out = Output::default();
        out.emit_edited(OutRecord::forward(&rec), |v| v.make_ascii_uppercase());
        out.emit_record(OutRecord {
            topic: 1,
            partition: 3,
            headers: &extra,
            ..OutRecord::forward(&rec)
        });
        out.emit(None, Some(b"v"));
        out.emit_edited(OutRecord::default(), |_| panic!("null value edited"));
        out.emit_filled(OutRecord::forward(&rec), 3, |v| v.copy_from_slice(b"abc"));
        let got = decoded(&mut out);
        assert_eq!(got.len(), 5);

        let (r, h) = &got[0];
        assert_eq!((r.key, r.value), (Some(&b"key"[..]), Some(&b"HELLO"[..])));
        assert_eq!((r.timestamp, r.partition, r.topic), (1234, -1, 0));
        assert_eq!(h, &hs.to_vec());

        let (r, h) = &got[1];
        assert_eq!((r.value, r.partition, r.topic), (Some(&b"hello"[..]), 3, 1));
        assert_eq!(h, &[hs[0], hs[1], extra[0]].to_vec());

        let (r, h) = &got[2];
        assert_eq!((r.key, r.value, r.timestamp), (None, Some(&b"v"[..]), -1));
        assert!(h.is_empty());

        let (r, _) = &got[3];
        assert_eq!((r.key, r.value), (None, None));

        let (r, h) = &got[4];
        assert_eq!((r.key, r.value), (Some(&b"key"[..]), Some(&b"abc"[..])));
        assert_eq!(h, &hs.to_vec());
        // Every record is padded with zeros to 8 bytes.
        assert_eq!(out.len % abi::RECORD_ALIGN, 0);
    }

    #[test]
    fn reused_buffer_short_copies_and_padding() {
        let mut out = Output::default();
        // Leave garbage behind, as a previous batch would.
        out.emit(Some(&[0xff; 300]), Some(&[0xff; 300]));
        let garbage = out.len;
        assert!(out.buf[..garbage].iter().filter(|&&b| b == 0xff).count() >= 600);
        out.len = 0;
        out.count = 0;
        let data: Vec<u8> = (1..=70).collect();
        for n in 0..=70 {
            out.emit(Some(&data[..n]), Some(&data[70 - n..]));
        }
        let len = out.len;
        let got = decoded(&mut out);
        assert_eq!(got.len(), 71);
        for (n, (r, _)) in got.iter().enumerate() {
            assert_eq!(r.key, Some(&data[..n]));
            assert_eq!(r.value, Some(&data[70 - n..]));
        }
        // Every byte a record does not use is zero.
        let mut at = abi::BATCH_HEADER_LEN;
        for n in 0..=70 {
            let used = abi::RECORD_HEADER_LEN + 2 * n;
            let size = abi::align(used);
            assert!(
                out.buf[at + used..at + size].iter().all(|&b| b == 0),
                "record {n}"
            );
            at += size;
        }
        assert_eq!(at, len);
    }
}
