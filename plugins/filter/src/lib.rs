//! `filter`: keeps the records that match a rule from its config, drops
//! the rest. Records pass through unchanged.
//!
//! ```toml
//! [pipeline.config]
//! contains = "error"   # keep records whose value contains this text
//! invert = false       # keep the records that do NOT match instead
//! min_length = 0       # and whose value is at least this long
//! ```

use weir_plugin_sdk::prelude::*;

#[derive(Default)]
pub struct Filter {
    contains: Vec<u8>,
    invert: bool,
    min_length: usize,
}

impl Filter {
    fn matches(&self, value: &[u8]) -> bool {
        let hit = self.contains.is_empty()
            || value
                .windows(self.contains.len())
                .any(|w| w == self.contains.as_slice());
        (hit != self.invert) && value.len() >= self.min_length
    }
}

impl Plugin for Filter {
    fn init(&mut self, config: &Config) -> Result<(), Error> {
        self.contains = config.get("contains").unwrap_or("").as_bytes().to_vec();
        self.invert = config.parse("invert")?.unwrap_or(false);
        self.min_length = config.parse("min_length")?.unwrap_or(0);
        weir_plugin_sdk::info!(
            "filter: contains={:?} invert={} min_length={}",
            config.get("contains").unwrap_or(""),
            self.invert,
            self.min_length
        );
        Ok(())
    }

    fn process(&mut self, record: Record<'_>, out: &mut Output) -> Result<(), Error> {
        if self.matches(record.value.unwrap_or_default()) {
            // Key, value, headers and timestamp as they are, one copy.
            out.emit_record(OutRecord::forward(&record));
        }
        Ok(())
    }
}

export_plugin!(Filter);
