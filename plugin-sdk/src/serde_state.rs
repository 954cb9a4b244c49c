//! Portable state from serde, for `export_plugin!(P, serde_state(...) = V)`
//! (feature `serde`): the named fields of the plugin, as one CBOR tuple.
//!
//! CBOR describes itself, so a later build reads an older state when what
//! it added has `#[serde(default)]`; a layout change serde cannot bridge
//! needs [`PortableState`](crate::PortableState) written by hand, which
//! is told the version the bytes were written in.

use crate::Error;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Appends `state` to `out` (the fields, as a tuple).
pub fn export<T: Serialize>(state: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    ciborium::into_writer(state, out).map_err(|e| Error::new(format!("serde_state: {e}")))
}

/// The fields from `bytes`, written in format `version` by a build whose
/// format is at most this build's `current`.
pub fn import<T: DeserializeOwned>(version: u32, current: u32, bytes: &[u8]) -> Result<T, Error> {
    if version > current {
        return Err(Error::new(format!(
            "state format version {version} is newer than this build's {current}: it cannot be read"
        )));
    }
    ciborium::from_reader(bytes).map_err(|e| {
        Error::new(format!(
            "state of format version {version} does not read as this build's format {current}: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn fields_round_trip_and_a_newer_format_is_refused() {
        let windows = BTreeMap::from([(60_000i64, BTreeMap::from([(b"k".to_vec(), 3i64)]))]);
        let mut out = Vec::new();
        export(&(&windows, &42i64), &mut out).unwrap();
        let (w, mark): (BTreeMap<i64, BTreeMap<Vec<u8>, i64>>, i64) = import(1, 1, &out).unwrap();
        assert_eq!((w, mark), (windows, 42));
        let err = import::<(i64,)>(2, 1, &out).unwrap_err();
        assert!(err.message().contains("newer than this build's 1"));
        let err = import::<(String, String)>(1, 1, &out).unwrap_err();
        assert!(err.message().contains("format version 1"));
    }

    #[test]
    fn an_added_defaulted_field_reads_an_older_state() {
        #[derive(serde::Serialize)]
        struct V1 {
            count: u64,
        }
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct V2 {
            count: u64,
            #[serde(default)]
            last_seen: i64,
        }
        let mut out = Vec::new();
        export(&(&V1 { count: 7 },), &mut out).unwrap();
        let (v2,): (V2,) = import(1, 2, &out).unwrap();
        assert_eq!(
            v2,
            V2 {
                count: 7,
                last_seen: 0
            }
        );
    }
}
