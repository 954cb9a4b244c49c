//! Values that can stay out of `config.toml`: the librdkafka option maps
//! and `kafka.bootstrap_servers` accept
//!
//! - `"${NAME}"` anywhere in a string: the environment variable `NAME`
//!   (`$${` writes a literal `${`);
//! - `{ file = "/run/secrets/kafka" }`: the contents of a file (an
//!   absolute path), without its trailing newline.
//!
//! Both are resolved while the file is parsed, so a missing variable or an
//! unreadable file is a parse error with the field's line and column.
//! Errors name the variable or the file, never the value.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Replaces every `${NAME}` in `text` with the environment variable.
fn expand(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(literal) = after.strip_prefix("${") {
            out.push_str("${");
            rest = literal;
        } else if let Some(reference) = after.strip_prefix('{') {
            let end = reference
                .find('}')
                .ok_or_else(|| "`${` without its closing `}`".to_string())?;
            let name = &reference[..end];
            let valid = name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if name.is_empty() || !valid {
                return Err(format!("`${{{name}}}` is not an environment variable name"));
            }
            let value =
                env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &reference[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads a secret file: absolute path, trailing newline dropped.
fn read_file(path: PathBuf) -> Result<String, String> {
    if !path.is_absolute() {
        return Err(format!(
            "secret file {}: give an absolute path",
            path.display()
        ));
    }
    let mut text = std::fs::read_to_string(&path)
        .map_err(|e| format!("secret file {}: {e}", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// A string resolved as the module docs say.
struct Resolved(String);

impl<'de> serde::Deserialize<'de> for Resolved {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Resolved;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string (it may hold ${NAME}) or { file = \"/absolute/path\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Resolved, E> {
                expand(v, |name| std::env::var(name).ok())
                    .map(Resolved)
                    .map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Resolved, A::Error> {
                let mut file = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "file" => file = Some(map.next_value::<PathBuf>()?),
                        other => {
                            return Err(de::Error::unknown_field(other, &["file"]));
                        }
                    }
                }
                let file = file.ok_or_else(|| de::Error::missing_field("file"))?;
                read_file(file).map(Resolved).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `deserialize_with` for a string field.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    <Resolved as serde::Deserialize>::deserialize(d).map(|r| r.0)
}

/// `deserialize_with` for a map of librdkafka options.
pub fn map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: BTreeMap<String, Resolved> = serde::Deserialize::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// Whether librdkafka option `key` holds a secret (its value is never
/// printed).
pub fn is_secret(key: &str) -> bool {
    [
        "password",
        "secret",
        "ssl.key.pem",
        "sasl.oauthbearer.config",
        "sasl.jaas",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// A map of options for `Debug`, secret values replaced.
pub fn redacted(map: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    map.iter()
        .map(|(k, v)| {
            let shown = if is_secret(k) {
                "<redacted>"
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PASSWORD" => Some("s3cr\"t".into()),
            "HOST_1" => Some("broker".into()),
            _ => None,
        }
    }

    #[test]
    fn references_expand_and_escapes_stay() {
        assert_eq!(expand("${PASSWORD}", env).unwrap(), "s3cr\"t");
        assert_eq!(expand("${HOST_1}:9092", env).unwrap(), "broker:9092");
        assert_eq!(expand("a$b $${PASSWORD}", env).unwrap(), "a$b ${PASSWORD}");
        assert_eq!(expand("no reference", env).unwrap(), "no reference");
    }

    #[test]
    fn a_missing_or_malformed_reference_names_it_not_a_value() {
        assert_eq!(
            expand("x${NOPE}", env).unwrap_err(),
            "environment variable NOPE is not set"
        );
        assert!(expand("${PASSWORD", env).unwrap_err().contains("closing"));
        assert!(
            expand("${1A}", env)
                .unwrap_err()
                .contains("not an environment variable name")
        );
    }

    #[test]
    fn files_are_read_without_the_trailing_newline_and_must_be_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "hunter2\n").unwrap();
        assert_eq!(read_file(path.clone()).unwrap(), "hunter2");
        assert!(
            read_file(PathBuf::from("relative"))
                .unwrap_err()
                .contains("absolute")
        );
        let missing = read_file(dir.path().join("none")).unwrap_err();
        assert!(missing.contains("none"), "{missing}");
    }

    #[test]
    fn secret_values_are_redacted() {
        let map = BTreeMap::from([
            ("sasl.password".to_string(), "hunter2".to_string()),
            ("sasl.username".to_string(), "weir".to_string()),
        ]);
        let shown = format!("{:?}", redacted(&map));
        assert!(
            !shown.contains("hunter2") && shown.contains("weir"),
            "{shown}"
        );
    }
}
