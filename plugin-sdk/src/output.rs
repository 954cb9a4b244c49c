//! The buffer a plugin emits records into during one batch.
//!
//! Records are encoded straight into one reusable buffer in the ABI's batch
//! layout; the SDK hands it to the host with one `weir.emit` call at the end
//! of the batch (or earlier when it grows past [`FLUSH_AT`]), so a batch
//! costs one host call, not one per record.

use crate::abi::{self, Header};

/// Flush to the host once this many bytes are buffered.
pub const FLUSH_AT: usize = 256 * 1024;

/// One output record. Build it with struct update syntax:
/// `OutRecord { value: Some(b"x"), ..OutRecord::default() }`.
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
    pub headers: &'a [Header<'a>],
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
        }
    }
}

/// Where a plugin's output records go. Owned by the SDK; reused across
/// batches so that emitting allocates nothing once the buffer has grown.
#[derive(Debug, Default)]
pub struct Output {
    buf: Vec<u8>,
    count: u32,
    /// The first error `weir.emit` returned in this batch, if any.
    pub(crate) emit_error: Option<i32>,
}

impl Output {
    /// Emits a record with this key and value to the first sink topic.
    pub fn emit(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) {
        self.emit_record(OutRecord {
            key,
            value,
            ..OutRecord::default()
        });
    }

    /// Emits a fully specified record.
    pub fn emit_record(&mut self, r: OutRecord<'_>) {
        if self.buf.is_empty() {
            self.buf.resize(abi::BATCH_HEADER_LEN, 0);
        }
        let headers_len = abi::headers_size(r.headers.iter().copied());
        let size = abi::record_size(r.key, r.value, headers_len);
        let start = self.buf.len();
        self.buf.resize(start + size, 0);
        abi::write_record(
            &mut self.buf[start..],
            0,
            r.timestamp,
            r.partition,
            r.topic,
            r.key,
            r.value,
            headers_len,
            r.headers.iter().copied(),
        );
        self.count += 1;
        if self.buf.len() >= FLUSH_AT {
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
        self.buf[4..8].fill(0);
        let rc = crate::rt::host_emit(&self.buf);
        if rc != abi::EMIT_OK && self.emit_error.is_none() {
            self.emit_error = Some(rc);
        }
        self.buf.clear();
        self.count = 0;
    }
}
