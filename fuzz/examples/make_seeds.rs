//! Writes the binary seed inputs under `fuzz/seeds/`, built with the real
//! encoders (`abi::BatchWriter`, `abi::encode_config`, `Snapshot::encode`).
//!
//! ```sh
//! cd fuzz && cargo +nightly run --example make_seeds
//! ```
//!
//! The text seeds of `config_parse` and the `abi_boundary` seeds (picked
//! from a fuzzing corpus) are checked in as they are.

use std::path::{Path, PathBuf};
use weir::runtime::snapshot::{GlobalValue, PAGE, Snapshot};
use weir_plugin_sdk::abi::{self, Header};

fn seeds(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let path = seeds(target).join(name);
    std::fs::write(&path, bytes).unwrap();
    println!("{} ({} bytes)", path.display(), bytes.len());
}

fn batch_seeds() {
    // docs/ABI.md section 5: one record, key "k", value "hi".
    let mut buf = vec![0u8; 56];
    let mut w = abi::BatchWriter::new(&mut buf).unwrap();
    w.push(5, 1000, 2, 0, Some(b"k"), Some(b"hi"), []).unwrap();
    let n = w.finish();
    assert_eq!(n, 56);
    write("batch_decode", "worked_example.bin", &buf[..n]);
    // The same, last record's padding omitted (as an emitted batch may be).
    write("batch_decode", "unpadded.bin", &buf[..51]);

    // Two records, headers (docs/ABI.md: trace = "ab", x = null), nulls.
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
    let mut buf = vec![0u8; 256];
    let mut w = abi::BatchWriter::new(&mut buf).unwrap();
    w.push(7, abi::NO_TIMESTAMP, 0, 1, None, Some(b"value"), hs)
        .unwrap();
    w.push(8, 1_700_000_000_000, -1, 0, Some(b""), None, [])
        .unwrap();
    let n = w.finish();
    write("batch_decode", "headers_and_nulls.bin", &buf[..n]);

    // docs/ABI.md section 6: min=3, rule.on=true, word=a.
    let entries = [("min", "3"), ("rule.on", "true"), ("word", "a")];
    let mut buf = vec![0u8; abi::config_size(entries)];
    let n = abi::encode_config(entries, &mut buf).unwrap();
    assert_eq!(n, 48);
    write("batch_decode", "config_block.bin", &buf);
}

fn snapshot_seeds() {
    let one_page = Snapshot {
        module_sha256: [0xab; 32],
        globals: vec![
            GlobalValue::I32(-5),
            GlobalValue::I64(i64::MIN),
            GlobalValue::F32(f32::NAN.to_bits() | 1),
            GlobalValue::F64(1.5f64.to_bits()),
        ],
        time: Default::default(),
        memory: (0..PAGE).map(|i| (i % 251) as u8).collect(),
    };
    let no_memory = Snapshot {
        module_sha256: [7; 32],
        globals: vec![GlobalValue::I32(1), GlobalValue::I64(2)],
        time: Default::default(),
        memory: Vec::new(),
    };
    let empty = Snapshot {
        module_sha256: [0; 32],
        globals: Vec::new(),
        time: Default::default(),
        memory: Vec::new(),
    };
    for (name, snap) in [
        ("one_page", &one_page),
        ("globals_no_memory", &no_memory),
        ("empty", &empty),
    ] {
        let mut bytes = Vec::new();
        snap.encode(&mut bytes);
        assert_eq!(Snapshot::decode(&bytes).unwrap(), *snap);
        // As stored on disk (checksum included) ...
        write("snapshot_decode", &format!("{name}.snap"), &bytes);
        // ... and without its checksum: the target appends a correct one,
        // so mutations of this form get past the CRC.
        write(
            "snapshot_decode",
            &format!("{name}.body"),
            &bytes[..bytes.len() - 4],
        );
    }
}

fn main() {
    batch_seeds();
    snapshot_seeds();
}
