//! The Weir plugin ABI, version 1: the one definition that the host and the
//! SDK share. `docs/ABI.md` explains the same contract to humans, byte by byte.
//!
//! Everything here is plain data and pure functions over byte slices, so the
//! host (native) and plugins (wasm32) compile the very same code: a record
//! batch encoded by one side is decoded by the other with no room for drift.
//!
//! # Layout of a record batch (all integers little-endian)
//!
//! ```text
//! batch  := count:u32  reserved:u32  record*count
//! record := header(40 bytes) key value headers padding-to-8
//! header := offset:i64 timestamp:i64 partition:i32 topic:u32
//!           key_len:i32 value_len:i32 headers_len:u32 header_count:u32
//! headers:= (name_len:u32 value_len:i32 name value)*header_count
//! ```
//!
//! `key_len` / `value_len` of `-1` mean null. Every record starts 8-aligned
//! relative to the batch start, so a C plugin may cast it to a struct.

/// ABI version 1.0: what a plugin's `weir_abi_version()` export returns
/// when it uses none of the 1.1 exports and imports.
pub const ABI_VERSION: i32 = 1;
/// ABI version 1.1 (65537, `0x0001_0001`: major in the high half, minor in the low
/// half; `1` stays the spelling of 1.0). It adds, and changes nothing of
/// 1.0: the optional export [`EXPORT_TICK`] and the import
/// [`IMPORT_SINK_TOPICS`]. A module that exports a 1.1 export must return
/// this from `weir_abi_version()`, so that a 1.0 host refuses it by name
/// instead of never calling it.
pub const ABI_VERSION_1_1: i32 = 65537;

/// Export: `memory`, the plugin's linear memory.
pub const EXPORT_MEMORY: &str = "memory";
/// Export: `weir_abi_version() -> i32`, returns [`ABI_VERSION`] (1.0) or
/// [`ABI_VERSION_1_1`].
pub const EXPORT_ABI_VERSION: &str = "weir_abi_version";
/// Export: `weir_input_buffer(size: i32) -> i32`, a pointer to at least
/// `size` writable bytes, 8-aligned, owned by the plugin, that stays valid
/// until the next call into the plugin. The host writes input batches and
/// the config there.
pub const EXPORT_INPUT_BUFFER: &str = "weir_input_buffer";
/// Export: `weir_process(ptr: i32, len: i32) -> i32`, process the batch at
/// `[ptr, ptr+len)`; returns [`STATUS_OK`] or a plugin-defined error code.
pub const EXPORT_PROCESS: &str = "weir_process";
/// Optional export: `weir_init(ptr: i32, len: i32) -> i32`, receives the
/// plugin's config (a [config](encode_config) block) on a fresh start only.
pub const EXPORT_INIT: &str = "weir_init";
/// Optional export (ABI 1.1): `weir_tick(watermark: i64, processing_time:
/// i64) -> i32`, called between batches when the partition's event-time
/// watermark advances and at least every `pipeline.tick_interval` while the
/// partition is idle. `watermark` is in ms since the epoch, or
/// [`WATERMARK_NONE`] before any record with a timestamp, or
/// [`WATERMARK_END`] once a bounded input has ended; `processing_time` is
/// the host's wall clock in ms since the epoch. It may emit like
/// `weir_process` and returns [`STATUS_OK`] or a plugin-defined error code.
pub const EXPORT_TICK: &str = "weir_tick";
/// Optional export (ABI 1.1): `weir_state_export() -> i32`, the plugin's
/// state in a portable form of its own: returns the address of a
/// [`STATE_DESCRIPTOR_LEN`]-byte descriptor (`format_version: u32, ptr:
/// u32, len: u32`, little-endian, 4-aligned) of bytes it owns, or 0 if it
/// cannot. Called on an instance restored from a memory image of this
/// module, when a different module is to take its state over.
pub const EXPORT_STATE_EXPORT: &str = "weir_state_export";
/// Optional export (ABI 1.1): `weir_state_import(ptr: i32, len: i32,
/// format_version: i32) -> i32`, rebuilds the state from bytes some module's
/// `weir_state_export` wrote in `format_version`; called on a fresh instance
/// after `weir_init`. Returns [`STATUS_OK`] or a plugin-defined error code.
pub const EXPORT_STATE_IMPORT: &str = "weir_state_import";
/// Size of the descriptor `weir_state_export` returns the address of.
pub const STATE_DESCRIPTOR_LEN: usize = 12;
/// `weir_tick` watermark before the partition has seen a record with a
/// timestamp (`i64::MIN`).
pub const WATERMARK_NONE: i64 = -9223372036854775808;
/// `weir_tick` watermark at the end of a bounded input: every window closes (`i64::MAX`).
pub const WATERMARK_END: i64 = 9223372036854775807;

/// Module name of the host imports.
pub const IMPORT_MODULE: &str = "weir";
/// Import: `weir.emit(ptr: i32, len: i32) -> i32`, hands the host a batch of
/// output records (same layout as input; `offset` ignored). The host copies
/// it before returning, so the plugin may reuse the buffer at once.
pub const IMPORT_EMIT: &str = "emit";
/// Import: `weir.log(level: i32, ptr: i32, len: i32)`, a UTF-8 log line.
pub const IMPORT_LOG: &str = "log";
/// Import (ABI 1.1): `weir.sink_topics() -> i32`, the number of configured
/// sink topics: an output record's `topic` must be below it.
pub const IMPORT_SINK_TOPICS: &str = "sink_topics";
/// Module name of the WASI preview 1 imports the host also offers.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// `weir_process`/`weir_init` status: success. Any other value is a plugin
/// error and fails the batch.
pub const STATUS_OK: i32 = 0;
/// `weir.emit` result: accepted.
pub const EMIT_OK: i32 = 0;
/// `weir.emit` result: a record names an output topic index that is not
/// configured. Nothing of that batch was emitted.
pub const EMIT_BAD_TOPIC: i32 = -1;
/// `weir.emit` result: the batch is malformed (lengths do not add up).
pub const EMIT_MALFORMED: i32 = -2;
/// `weir.emit` result: reserved for output limits. This host never returns
/// it: a call that emits past `limits.max_output_records`,
/// `limits.max_output_bytes` or `limits.max_record_bytes` traps instead.
pub const EMIT_LIMIT: i32 = -3;

/// Log levels for `weir.log`.
pub const LOG_ERROR: i32 = 1;
pub const LOG_WARN: i32 = 2;
pub const LOG_INFO: i32 = 3;
pub const LOG_DEBUG: i32 = 4;
pub const LOG_TRACE: i32 = 5;

/// Size of the batch header (count + reserved).
pub const BATCH_HEADER_LEN: usize = 8;
/// Size of the fixed part of every record.
pub const RECORD_HEADER_LEN: usize = 40;
/// Records start on this alignment (relative to the batch start).
pub const RECORD_ALIGN: usize = 8;
/// A length of -1 encodes a null key, value or header value.
pub const NULL_LEN: i32 = -1;
/// Output `partition` of -1: the host's partitioner chooses (key hash).
pub const ANY_PARTITION: i32 = -1;
/// Timestamp of -1: none (the producer stamps output with the current time).
pub const NO_TIMESTAMP: i64 = -1;

/// Why a batch could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer ends before the structure it announces.
    Truncated,
    /// A length field is negative (other than -1 for null) or overflows.
    BadLength,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("batch truncated"),
            DecodeError::BadLength => f.write_str("invalid length field"),
        }
    }
}

/// One header of a record, borrowed from the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// One record, borrowed from a batch buffer: no copies while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Input: the record's offset in its partition. Output: ignored.
    pub offset: i64,
    /// Milliseconds since the epoch, or [`NO_TIMESTAMP`].
    pub timestamp: i64,
    /// Input: the source partition. Output: target partition or [`ANY_PARTITION`].
    pub partition: i32,
    /// Index into the configured source (input) or sink (output) topics.
    pub topic: u32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The raw header block; iterate it with [`RecordRef::headers`].
    pub headers_raw: &'a [u8],
    pub header_count: u32,
}

impl<'a> RecordRef<'a> {
    /// Iterates this record's headers.
    #[inline]
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            buf: self.headers_raw,
            remaining: self.header_count,
        }
    }

    /// This record's headers as they are encoded: an output record can
    /// carry them on with one copy, no decoding.
    #[inline]
    pub fn header_block(&self) -> HeaderBlock<'a> {
        HeaderBlock {
            raw: self.headers_raw,
            count: self.header_count,
        }
    }
}

/// A header block as it is encoded: `count` header entries packed in
/// `raw`, `headers_len` bytes in all. Writing it into a record is one copy.
/// A block whose `raw` does not hold exactly `count` entries makes an
/// invalid record (`weir.emit` refuses the batch with [`EMIT_MALFORMED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeaderBlock<'a> {
    /// The encoded entries.
    pub raw: &'a [u8],
    /// How many entries `raw` holds.
    pub count: u32,
}

impl<'a> HeaderBlock<'a> {
    /// Iterates the headers of the block (stops early at a malformed entry).
    #[inline]
    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter {
            buf: self.raw,
            remaining: self.count,
        }
    }
}

/// Iterator over a header block (also used for the config block).
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    buf: &'a [u8],
    remaining: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Header<'a>;
    fn next(&mut self) -> Option<Header<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // The block was validated when the record was decoded.
        let (h, rest) = split_header(self.buf).ok()?;
        self.buf = rest;
        Some(h)
    }
}

#[inline]
fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
#[inline]
fn read_i32(b: &[u8], at: usize) -> i32 {
    read_u32(b, at) as i32
}

/// Length of an optional field as stored (-1 for null).
#[inline]
fn opt_len(x: Option<&[u8]>) -> usize {
    x.map_or(0, <[u8]>::len)
}

/// Rounds `n` up to [`RECORD_ALIGN`].
#[inline]
pub const fn align(n: usize) -> usize {
    (n + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

fn split_header(buf: &[u8]) -> Result<(Header<'_>, &[u8]), DecodeError> {
    if buf.len() < 8 {
        return Err(DecodeError::Truncated);
    }
    let name_len = read_u32(buf, 0) as usize;
    let value_len = read_i32(buf, 4);
    let rest = &buf[8..];
    if name_len > rest.len() {
        return Err(DecodeError::Truncated);
    }
    let (name, rest) = rest.split_at(name_len);
    let (value, rest) = split_opt(rest, value_len)?;
    Ok((Header { name, value }, rest))
}

fn split_opt(buf: &[u8], len: i32) -> Result<(Option<&[u8]>, &[u8]), DecodeError> {
    if len == NULL_LEN {
        return Ok((None, buf));
    }
    if len < 0 {
        return Err(DecodeError::BadLength);
    }
    let len = len as usize;
    if len > buf.len() {
        return Err(DecodeError::Truncated);
    }
    let (v, rest) = buf.split_at(len);
    Ok((Some(v), rest))
}

/// Encoded size of a header block.
pub fn headers_size<'h>(headers: impl IntoIterator<Item = Header<'h>>) -> usize {
    headers
        .into_iter()
        .map(|h| 8 + h.name.len() + opt_len(h.value))
        .sum()
}

/// Encoded size of one record (including its padding).
pub fn record_size(key: Option<&[u8]>, value: Option<&[u8]>, headers_len: usize) -> usize {
    align(RECORD_HEADER_LEN + opt_len(key) + opt_len(value) + headers_len)
}

/// Reads a batch's record count, checking the header is present.
pub fn batch_count(buf: &[u8]) -> Result<u32, DecodeError> {
    if buf.len() < BATCH_HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    Ok(read_u32(buf, 0))
}

/// Iterates the records of a batch, validating every length as it goes.
/// A malformed batch yields one `Err` and then stops.
pub fn records(buf: &[u8]) -> Result<RecordIter<'_>, DecodeError> {
    let count = batch_count(buf)?;
    Ok(RecordIter {
        buf,
        pos: BATCH_HEADER_LEN,
        remaining: count,
    })
}

/// Iterator over the records of a batch, see [`records`].
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    buf: &'a [u8],
    pos: usize,
    remaining: u32,
}

impl<'a> RecordIter<'a> {
    /// Records not yet yielded.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    fn decode_next(&mut self) -> Result<RecordRef<'a>, DecodeError> {
        let buf = self.buf;
        let start = self.pos;
        // One length check for the whole 40-byte header; its fields are
        // then read at constant offsets of a fixed-size array (one load
        // each, no further checks: this is every record's path).
        let Some((h, body)) = buf
            .get(start..)
            .and_then(<[u8]>::split_first_chunk::<RECORD_HEADER_LEN>)
        else {
            return Err(DecodeError::Truncated);
        };
        let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let i64_at = |at: usize| {
            i64::from_le_bytes([
                h[at],
                h[at + 1],
                h[at + 2],
                h[at + 3],
                h[at + 4],
                h[at + 5],
                h[at + 6],
                h[at + 7],
            ])
        };
        let offset = i64_at(0);
        let timestamp = i64_at(8);
        let partition = u32_at(16) as i32;
        let topic = u32_at(20);
        let key_len = u32_at(24) as i32;
        let value_len = u32_at(28) as i32;
        let headers_len = u32_at(32) as usize;
        let header_count = u32_at(36);
        let (key, body) = split_opt(body, key_len)?;
        let (value, body) = split_opt(body, value_len)?;
        if headers_len > body.len() {
            return Err(DecodeError::Truncated);
        }
        let headers_raw = &body[..headers_len];
        // Validate the header block once so that iteration cannot fail.
        let mut rest = headers_raw;
        for _ in 0..header_count {
            rest = split_header(rest)?.1;
        }
        if !rest.is_empty() {
            return Err(DecodeError::BadLength);
        }
        let used = RECORD_HEADER_LEN + opt_len(key) + opt_len(value) + headers_len;
        // The last record's padding may be omitted.
        self.pos = (start + align(used)).min(buf.len());
        Ok(RecordRef {
            offset,
            timestamp,
            partition,
            topic,
            key,
            value,
            headers_raw,
            header_count,
        })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordRef<'a>, DecodeError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        match self.decode_next() {
            Ok(r) => {
                self.remaining -= 1;
                Some(Ok(r))
            }
            Err(e) => {
                self.remaining = 0;
                Some(Err(e))
            }
        }
    }
}

/// Maps the batch `buf` where it lies, for a plugin whose output record is
/// its input record with only the value changed and its length kept: every
/// record's partition becomes `partition` and its topic `topic` (output
/// meanings, section 4), and `map` changes each non-null value in place.
/// `buf` is then a valid output batch to emit whole. Validates as
/// [`records`] does; on a malformed record it stops there with the error,
/// the records before it already mapped.
pub fn map_values_in_place(
    buf: &mut [u8],
    partition: i32,
    topic: u32,
    mut map: impl FnMut(&mut [u8]),
) -> Result<(), DecodeError> {
    let count = batch_count(buf)?;
    let mut pos = BATCH_HEADER_LEN;
    for _ in 0..count {
        let (value, next) = {
            let mut one = RecordIter {
                buf,
                pos,
                remaining: 1,
            };
            let value = one.decode_next()?.value.map(|v| {
                let at = v.as_ptr() as usize - buf.as_ptr() as usize;
                at..at + v.len()
            });
            (value, one.pos)
        };
        buf[pos + 16..pos + 20].copy_from_slice(&partition.to_le_bytes());
        buf[pos + 20..pos + 24].copy_from_slice(&topic.to_le_bytes());
        if let Some(range) = value {
            map(&mut buf[range]);
        }
        pos = next;
    }
    Ok(())
}

/// Writes batch headers and records into a caller-provided buffer, with no
/// allocation: the host sizes the guest's input buffer first
/// ([`record_size`]), then encodes straight into guest memory.
pub struct BatchWriter<'b> {
    buf: &'b mut [u8],
    pos: usize,
    count: u32,
}

/// The buffer given to a [`BatchWriter`] is too small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferFull;

impl<'b> BatchWriter<'b> {
    /// Starts a batch at the beginning of `buf`.
    pub fn new(buf: &'b mut [u8]) -> Result<Self, BufferFull> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BufferFull);
        }
        buf[..BATCH_HEADER_LEN].fill(0);
        Ok(BatchWriter {
            buf,
            pos: BATCH_HEADER_LEN,
            count: 0,
        })
    }

    /// Appends one record.
    #[allow(clippy::too_many_arguments)]
    pub fn push<'h>(
        &mut self,
        offset: i64,
        timestamp: i64,
        partition: i32,
        topic: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = Header<'h>> + Clone,
    ) -> Result<(), BufferFull> {
        let headers_len = headers_size(headers.clone());
        let size = record_size(key, value, headers_len);
        if self.buf.len() - self.pos < size {
            return Err(BufferFull);
        }
        write_record(
            &mut self.buf[self.pos..self.pos + size],
            offset,
            timestamp,
            partition,
            topic,
            key,
            value,
            headers_len,
            headers,
        );
        self.pos += size;
        self.count += 1;
        Ok(())
    }

    /// Records written so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Finishes the batch and returns its encoded length.
    pub fn finish(self) -> usize {
        self.buf[0..4].copy_from_slice(&self.count.to_le_bytes());
        self.pos
    }
}

/// Writes one record into `out`, which must be exactly
/// [`record_size`]`(key, value, headers_len)` bytes; padding is zeroed.
#[allow(clippy::too_many_arguments)]
pub fn write_record<'h>(
    out: &mut [u8],
    offset: i64,
    timestamp: i64,
    partition: i32,
    topic: u32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers_len: usize,
    headers: impl IntoIterator<Item = Header<'h>> + Clone,
) {
    let header_count = headers.clone().into_iter().count() as u32;
    out[0..8].copy_from_slice(&offset.to_le_bytes());
    out[8..16].copy_from_slice(&timestamp.to_le_bytes());
    out[16..20].copy_from_slice(&partition.to_le_bytes());
    out[20..24].copy_from_slice(&topic.to_le_bytes());
    let len_of = |x: Option<&[u8]>| x.map_or(NULL_LEN, |x| x.len() as i32);
    out[24..28].copy_from_slice(&len_of(key).to_le_bytes());
    out[28..32].copy_from_slice(&len_of(value).to_le_bytes());
    out[32..36].copy_from_slice(&(headers_len as u32).to_le_bytes());
    out[36..40].copy_from_slice(&header_count.to_le_bytes());
    let mut at = RECORD_HEADER_LEN;
    for part in [key, value].into_iter().flatten() {
        out[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    for h in headers {
        out[at..at + 4].copy_from_slice(&(h.name.len() as u32).to_le_bytes());
        out[at + 4..at + 8].copy_from_slice(&len_of(h.value).to_le_bytes());
        at += 8;
        out[at..at + h.name.len()].copy_from_slice(h.name);
        at += h.name.len();
        if let Some(v) = h.value {
            out[at..at + v.len()].copy_from_slice(v);
            at += v.len();
        }
    }
    out[at..].fill(0);
}

/// Size of a config block holding these entries.
pub fn config_size<'e>(entries: impl IntoIterator<Item = (&'e str, &'e str)>) -> usize {
    4 + entries
        .into_iter()
        .map(|(k, v)| 8 + k.len() + v.len())
        .sum::<usize>()
}

/// Encodes the plugin config block: `count:u32` then entries in the header
/// layout (`name_len:u32 value_len:i32 name value`). Keys of nested tables are
/// dotted (`a.b`); values are strings (TOML scalars rendered as text).
pub fn encode_config<'e>(
    entries: impl IntoIterator<Item = (&'e str, &'e str)> + Clone,
    out: &mut [u8],
) -> Result<usize, BufferFull> {
    let size = config_size(entries.clone());
    if out.len() < size {
        return Err(BufferFull);
    }
    let mut count = 0u32;
    let mut at = 4;
    for (k, v) in entries {
        out[at..at + 4].copy_from_slice(&(k.len() as u32).to_le_bytes());
        out[at + 4..at + 8].copy_from_slice(&(v.len() as u32).to_le_bytes());
        at += 8;
        out[at..at + k.len()].copy_from_slice(k.as_bytes());
        at += k.len();
        out[at..at + v.len()].copy_from_slice(v.as_bytes());
        at += v.len();
        count += 1;
    }
    out[0..4].copy_from_slice(&count.to_le_bytes());
    Ok(at)
}

/// Decodes a config block into (key, value) pairs, borrowed.
pub fn decode_config(buf: &[u8]) -> Result<HeaderIter<'_>, DecodeError> {
    if buf.len() < 4 {
        return Err(DecodeError::Truncated);
    }
    let count = read_u32(buf, 0);
    let mut rest = &buf[4..];
    for _ in 0..count {
        rest = split_header(rest)?.1;
    }
    Ok(HeaderIter {
        buf: &buf[4..],
        remaining: count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_records() {
        let mut buf = [0u8; 512];
        let mut w = BatchWriter::new(&mut buf).unwrap();
        let hs = [Header {
            name: b"h1",
            value: Some(b"v"),
        }];
        w.push(7, 1000, 3, 0, Some(b"k"), Some(b"hello"), hs)
            .unwrap();
        w.push(8, NO_TIMESTAMP, 3, 1, None, None, []).unwrap();
        let len = w.finish();
        let recs: Vec<_> = records(&buf[..len]).unwrap().map(Result::unwrap).collect();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].offset, 7);
        assert_eq!(recs[0].key, Some(&b"k"[..]));
        assert_eq!(recs[0].value, Some(&b"hello"[..]));
        assert_eq!(recs[0].headers().collect::<Vec<_>>(), hs.to_vec());
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[1].value, None);
        assert_eq!(recs[1].topic, 1);
        assert_eq!(len % RECORD_ALIGN, 0);
    }

    #[test]
    fn values_mapped_in_place_make_an_output_batch() {
        let mut buf = [0u8; 512];
        let mut w = BatchWriter::new(&mut buf).unwrap();
        let hs = [Header {
            name: b"h",
            value: Some(b"v"),
        }];
        w.push(7, 1000, 3, 0, Some(b"k"), Some(b"hello"), hs)
            .unwrap();
        w.push(8, NO_TIMESTAMP, 2, 1, None, None, []).unwrap();
        w.push(9, 5, 1, 0, Some(b"k2"), Some(b"abc"), []).unwrap();
        let len = w.finish();
        map_values_in_place(&mut buf[..len], ANY_PARTITION, 0, |v| {
            v.make_ascii_uppercase()
        })
        .unwrap();
        let recs: Vec<_> = records(&buf[..len]).unwrap().map(Result::unwrap).collect();
        let values: Vec<_> = recs.iter().map(|r| r.value).collect();
        assert_eq!(values, [Some(&b"HELLO"[..]), None, Some(&b"ABC"[..])]);
        assert!(
            recs.iter()
                .all(|r| r.partition == ANY_PARTITION && r.topic == 0)
        );
        assert_eq!(recs[0].key, Some(&b"k"[..]));
        assert_eq!(recs[0].timestamp, 1000);
        assert_eq!(recs[0].headers().collect::<Vec<_>>(), hs.to_vec());
        // A malformed batch is an error, not a panic.
        buf[8 + 28..8 + 32].copy_from_slice(&500i32.to_le_bytes());
        assert_eq!(
            map_values_in_place(&mut buf[..len], ANY_PARTITION, 0, |_| ()),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn malformed_batches_are_errors_not_panics() {
        let mut buf = [0u8; 128];
        let mut w = BatchWriter::new(&mut buf).unwrap();
        w.push(1, 1, 0, 0, Some(b"key"), Some(b"value"), [])
            .unwrap();
        let len = w.finish();
        for cut in 0..len {
            let r: Result<Vec<_>, _> = records(&buf[..cut]).and_then(|it| it.collect());
            if cut < BATCH_HEADER_LEN + RECORD_HEADER_LEN + 8 {
                assert!(r.is_err(), "cut at {cut} decoded");
            }
        }
        // A count far beyond the data.
        let mut bad = buf;
        bad[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let r: Result<Vec<_>, _> = records(&bad[..len]).unwrap().collect();
        assert!(r.is_err());
        // A negative length other than -1.
        let mut bad = buf;
        bad[8 + 24..8 + 28].copy_from_slice(&(-5i32).to_le_bytes());
        let r: Result<Vec<_>, _> = records(&bad[..len]).unwrap().collect();
        assert_eq!(r, Err(DecodeError::BadLength));
    }

    #[test]
    fn config_round_trip() {
        let entries = [("field", "value"), ("rule.min", "3")];
        let mut buf = [0u8; 64];
        let n = encode_config(entries, &mut buf).unwrap();
        assert_eq!(n, config_size(entries));
        let got: Vec<_> = decode_config(&buf[..n])
            .unwrap()
            .map(|h| (h.name, h.value.unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                (&b"field"[..], &b"value"[..]),
                (&b"rule.min"[..], &b"3"[..])
            ]
        );
    }
}
