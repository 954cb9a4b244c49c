//! `weir::runtime::snapshot_delta::StateFile::decode` on untrusted bytes (a
//! checkpoint's state file, full or delta): never panics, never allocates
//! from a claimed length, and a decoded delta re-encodes to the very same
//! bytes and applies to a base of its shape without panicking.
//!
//! As in `snapshot_decode`, each input is decoded as is and with a correct
//! CRC appended, so that the parser behind the checksum is fuzzed too; the
//! second form also gets the delta magic, so most inputs reach it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::runtime::snapshot::Snapshot;
use weir::runtime::snapshot_delta::{DELTA_MAGIC, SnapshotDelta, StateFile};

fn decode_and_round_trip(bytes: &[u8]) {
    let Ok(StateFile::Delta(link, delta)) = StateFile::decode(bytes) else {
        return;
    };
    assert_eq!(
        delta.encoded_len(),
        bytes.len(),
        "encoded_len of a decoded delta"
    );
    let mut out = Vec::new();
    delta.encode(link, &mut out);
    assert_eq!(out, bytes, "re-encoding a decoded delta changes its bytes");
    let (link2, again) = SnapshotDelta::decode(&out).expect("a re-encoded delta decodes");
    assert_eq!((link2, &again), (link, &delta));
    // Applied to an empty base of the same shape (accepted only when its
    // runs cover all the memory it grows to), its runs land where they say;
    // a larger base is refused (memory never shrinks).
    let mut base = Snapshot {
        module_sha256: delta.module_sha256,
        globals: delta.globals.clone(),
        time: Default::default(),
        memory: Vec::new(),
    };
    if base.apply_delta(&delta).is_ok() {
        assert_eq!(base.memory.len() as u64, delta.memory_len);
        assert!(base.memory.len() <= delta.data_len(), "grew past its data");
        for (range, bytes) in delta.pages() {
            assert_eq!(&base.memory[range], bytes);
        }
        // Bounded by the input: the memory is no larger than the data.
        base.memory.resize(base.memory.len() + 65536, 0);
        assert!(base.apply_delta(&delta).is_err(), "memory never shrinks");
    }
}

fuzz_target!(|data: &[u8]| {
    decode_and_round_trip(data);

    let mut fixed = DELTA_MAGIC.to_vec();
    fixed.extend_from_slice(data);
    let crc = crc32fast::hash(&fixed);
    fixed.extend_from_slice(&crc.to_le_bytes());
    decode_and_round_trip(&fixed);
});
