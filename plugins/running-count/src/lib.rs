//! `running-count`: stateful. For every record it emits the record's key
//! and the number of records seen with that key so far (as decimal text).
//! The counts live in a `HashMap` in the plugin's linear memory, which the
//! host snapshots with every checkpoint.

use std::collections::HashMap;
use weir_plugin_sdk::prelude::*;

#[derive(Default)]
pub struct RunningCount {
    counts: HashMap<Vec<u8>, u64>,
}

impl Plugin for RunningCount {
    fn process(&mut self, record: Record<'_>, out: &mut Output) -> Result<(), Error> {
        let key = record.key.unwrap_or_default();
        let count = match self.counts.get_mut(key) {
            Some(c) => {
                *c += 1;
                *c
            }
            None => {
                self.counts.insert(key.to_vec(), 1);
                1
            }
        };
        let mut digits = [0u8; 20];
        out.emit(record.key, Some(format_u64(count, &mut digits)));
        Ok(())
    }
}

/// Formats without allocating.
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

export_plugin!(RunningCount);
