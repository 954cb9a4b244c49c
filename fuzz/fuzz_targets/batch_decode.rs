//! The ABI batch and config codecs (`weir_plugin_sdk::abi`).
//!
//! 1. The raw input is decoded as a record batch and as a config block:
//!    every record and every header is visited. Decoding untrusted bytes
//!    must never panic, and a record that decodes must yield exactly
//!    `header_count` headers whose sizes add up to `headers_len`.
//! 2. The same input, read as structured data, is encoded with
//!    `BatchWriter` (and `encode_config`) and decoded again: the decoder
//!    must give back exactly what was written, with and without the last
//!    record's padding, and a buffer one byte too small must be refused
//!    with `BufferFull`, not a panic.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use weir_plugin_sdk::abi::{self, BATCH_HEADER_LEN, Header, RecordRef};

#[derive(Debug, Arbitrary)]
struct Rec {
    offset: i64,
    timestamp: i64,
    partition: i32,
    topic: u32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Rec {
    fn headers(&self) -> Vec<Header<'_>> {
        self.headers
            .iter()
            .map(|(n, v)| Header {
                name: n,
                value: v.as_deref(),
            })
            .collect()
    }

    fn size(&self) -> usize {
        let hl = abi::headers_size(self.headers());
        abi::record_size(self.key.as_deref(), self.value.as_deref(), hl)
    }

    fn assert_matches(&self, r: &RecordRef<'_>) {
        assert_eq!(r.offset, self.offset);
        assert_eq!(r.timestamp, self.timestamp);
        assert_eq!(r.partition, self.partition);
        assert_eq!(r.topic, self.topic);
        assert_eq!(r.key, self.key.as_deref());
        assert_eq!(r.value, self.value.as_deref());
        assert_eq!(r.header_count as usize, self.headers.len());
        assert_eq!(r.headers_raw.len(), abi::headers_size(self.headers()));
        let got: Vec<Header<'_>> = r.headers().collect();
        assert_eq!(got, self.headers());
    }
}

/// Decodes untrusted bytes every way the host and the SDK do.
fn decode_untrusted(data: &[u8]) {
    if let Ok(count) = abi::batch_count(data) {
        let it = abi::records(data).expect("batch_count succeeded");
        assert_eq!(it.remaining(), count);
        let mut seen = 0u64;
        let mut failed = false;
        for r in it {
            assert!(!failed, "the iterator yields nothing after an error");
            match r {
                Ok(r) => {
                    seen += 1;
                    // The header block was validated: iteration yields
                    // exactly header_count headers that use it up.
                    let mut n = 0u32;
                    let mut bytes = 0usize;
                    for h in r.headers() {
                        n += 1;
                        bytes += 8 + h.name.len() + h.value.map_or(0, <[u8]>::len);
                    }
                    assert_eq!(n, r.header_count);
                    assert_eq!(bytes, r.headers_raw.len());
                    // Lengths stay inside the buffer.
                    let used = r.key.map_or(0, <[u8]>::len)
                        + r.value.map_or(0, <[u8]>::len)
                        + r.headers_raw.len();
                    assert!(used <= data.len());
                }
                Err(_) => failed = true,
            }
        }
        assert!(seen <= count as u64);
    } else {
        assert!(data.len() < BATCH_HEADER_LEN);
        assert!(abi::records(data).is_err());
    }

    if let Ok(it) = abi::decode_config(data) {
        let count = u32::from_le_bytes(data[..4].try_into().unwrap());
        let mut n = 0u32;
        for h in it {
            n += 1;
            assert!(h.name.len() <= data.len());
        }
        assert_eq!(n, count);
    }
}

fn round_trip_batch(recs: &[Rec]) {
    let size = BATCH_HEADER_LEN + recs.iter().map(Rec::size).sum::<usize>();
    let mut buf = vec![0xAAu8; size];
    let mut w = abi::BatchWriter::new(&mut buf).expect("header fits");
    for r in recs {
        w.push(
            r.offset,
            r.timestamp,
            r.partition,
            r.topic,
            r.key.as_deref(),
            r.value.as_deref(),
            r.headers(),
        )
        .expect("sized exactly");
    }
    assert_eq!(w.count() as usize, recs.len());
    let len = w.finish();
    assert_eq!(len, size);
    assert_eq!(len % abi::RECORD_ALIGN, 0);

    let check = |bytes: &[u8]| {
        assert_eq!(abi::batch_count(bytes), Ok(recs.len() as u32));
        let decoded: Vec<RecordRef<'_>> = abi::records(bytes)
            .expect("header present")
            .collect::<Result<_, _>>()
            .expect("a batch BatchWriter wrote decodes");
        assert_eq!(decoded.len(), recs.len());
        for (want, got) in recs.iter().zip(&decoded) {
            want.assert_matches(got);
        }
    };
    check(&buf[..len]);

    // The last record's padding may be omitted (emitted batches).
    if let Some(last) = recs.last() {
        let unpadded = abi::RECORD_HEADER_LEN
            + last.key.as_ref().map_or(0, Vec::len)
            + last.value.as_ref().map_or(0, Vec::len)
            + abi::headers_size(last.headers());
        let pad = last.size() - unpadded;
        assert!(pad < abi::RECORD_ALIGN);
        assert!(
            buf[len - pad..len].iter().all(|&b| b == 0),
            "padding is zeroed"
        );
        check(&buf[..len - pad]);

        // One byte short: some push must report BufferFull.
        let mut short = vec![0u8; size - 1];
        let mut w = abi::BatchWriter::new(&mut short).expect("header fits");
        let mut full = false;
        for r in recs {
            if w.push(
                r.offset,
                r.timestamp,
                r.partition,
                r.topic,
                r.key.as_deref(),
                r.value.as_deref(),
                r.headers(),
            )
            .is_err()
            {
                full = true;
                break;
            }
        }
        assert!(full, "a buffer one byte too small was accepted");
    } else {
        assert_eq!(len, BATCH_HEADER_LEN);
    }
}

fn round_trip_config(entries: &[(String, String)]) {
    let pairs = || entries.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let size = abi::config_size(pairs());
    let mut buf = vec![0u8; size];
    let n = abi::encode_config(pairs(), &mut buf).expect("sized exactly");
    assert_eq!(n, size);
    let got: Vec<(&[u8], &[u8])> = abi::decode_config(&buf)
        .expect("encoded config decodes")
        .map(|h| (h.name, h.value.expect("config values are never null")))
        .collect();
    let want: Vec<(&[u8], &[u8])> = entries
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    assert_eq!(got, want);
    if size > 0 {
        assert!(abi::encode_config(pairs(), &mut buf[..size - 1]).is_err());
    }
}

fuzz_target!(|data: &[u8]| {
    decode_untrusted(data);

    let mut u = Unstructured::new(data);
    if let Ok(recs) = Vec::<Rec>::arbitrary(&mut u) {
        round_trip_batch(&recs);
    }
    if let Ok(entries) = Vec::<(String, String)>::arbitrary(&mut u) {
        round_trip_config(&entries);
    }
});
