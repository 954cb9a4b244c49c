//! The plugin's own config table, as the host passes it to `weir_init`.
//!
//! Nested tables arrive with dotted keys (`rule.min`), every value as text
//! (TOML strings without quotes, other scalars as TOML writes them, arrays as
//! TOML arrays). [`Config::parse`] turns a value into any `FromStr` type.

use crate::Error;
use crate::abi;
use std::str::FromStr;

/// Key/value pairs of the plugin's config table.
#[derive(Debug, Clone, Default)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// Decodes a config block (see [`abi::encode_config`]).
    pub fn decode(buf: &[u8]) -> Result<Self, Error> {
        let iter = abi::decode_config(buf).map_err(|e| Error::new(format!("config block: {e}")))?;
        let entries = iter
            .map(|h| {
                let key = String::from_utf8_lossy(h.name).into_owned();
                let value = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                (key, value)
            })
            .collect();
        Ok(Config { entries })
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` parsed as `T`; `Ok(None)` when unset.
    pub fn parse<T: FromStr>(&self, key: &str) -> Result<Option<T>, Error>
    where
        T::Err: core::fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|e| Error::new(format!("config `{key}` = {v:?}: {e}"))),
        }
    }

    /// The value of `key`, or an error naming the missing key.
    pub fn require(&self, key: &str) -> Result<&str, Error> {
        self.get(key)
            .ok_or_else(|| Error::new(format!("config `{key}` is required")))
    }

    /// All entries, in the order the host sent them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}
