//! `uppercase`: a stateless map. Every record's value is upper-cased
//! (ASCII); key, headers and timestamp pass through.

use weir_plugin_sdk::prelude::*;

#[derive(Default)]
pub struct Uppercase {
    /// Reused for every record, so a batch allocates nothing once warm.
    scratch: Vec<u8>,
}

impl Plugin for Uppercase {
    fn process(&mut self, record: Record<'_>, out: &mut Output) -> Result<(), Error> {
        let headers: Vec<Header<'_>> = record.headers().collect();
        let value = record.value.map(|v| {
            self.scratch.clear();
            self.scratch.extend(v.iter().map(u8::to_ascii_uppercase));
            &self.scratch[..]
        });
        out.emit_record(OutRecord {
            key: record.key,
            value,
            headers: &headers,
            timestamp: record.timestamp,
            ..OutRecord::default()
        });
        Ok(())
    }
}

export_plugin!(Uppercase);
