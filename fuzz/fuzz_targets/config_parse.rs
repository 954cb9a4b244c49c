//! `weir::config::Config::parse` (TOML + serde + validation) on arbitrary
//! text: never panics. When the text parses, validating again must agree,
//! and the derived values (paths, plugin config entries) must be computable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use weir::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::parse(text, Path::new("/tmp")) {
        Ok(c) => c,
        Err(e) => {
            // The error message (line/column/field) renders without panicking.
            let _ = e.to_string();
            return;
        }
    };
    // parse() validated already: validating the same value again must pass.
    config
        .validate()
        .expect("a config that parse() accepted fails validate()");
    let _ = config.plugin_path();
    let _ = config.checkpoint_dir();
    let _ = config.is_embedded();
    let _ = config.plugin_config_entries();
    let _ = format!("{config:?}");
});
