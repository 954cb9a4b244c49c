//! The ABI constants of the C header (`plugin-sdk/c/weir_plugin.h`), the
//! AssemblyScript helper (`plugin-sdk/assemblyscript/weir.ts`) and the Go
//! SDK (`plugin-sdk/go/abi_gen.go`), generated from the `pub const` items
//! of `plugin-sdk/src/abi.rs`, the one definition of the ABI. The C and
//! AssemblyScript files keep their generated block between `BEGIN GENERATED
//! FROM plugin-sdk/src/abi.rs` and `END GENERATED` lines, the rest being
//! hand-written; the Go file is generated whole.

use anyhow::{Context, Result, bail, ensure};
use std::path::Path;

/// Regenerates both files, or (`check`) fails naming the ones that differ.
pub fn run(root: &Path, check: bool) -> Result<()> {
    let sdk = root.join("plugin-sdk");
    let src = std::fs::read_to_string(sdk.join("src/abi.rs")).context("read abi.rs")?;
    let consts = abi_consts(&src)?;
    ensure!(
        consts.iter().any(|c| c.name == "ABI_VERSION"),
        "plugin-sdk/src/abi.rs: no ABI_VERSION found"
    );
    let targets = [
        (sdk.join("c/weir_plugin.h"), render_c(&consts), true),
        (
            sdk.join("assemblyscript/weir.ts"),
            render_assemblyscript(&consts)?,
            true,
        ),
        (sdk.join("go/abi_gen.go"), render_go(&consts)?, false),
    ];
    let mut stale = Vec::new();
    for (path, block, marked) in &targets {
        let text = match marked {
            true => {
                std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
            }
            false => std::fs::read_to_string(path).unwrap_or_default(),
        };
        let new = match marked {
            true => with_generated(path, &text, block)?,
            false => block.clone(),
        };
        if new == text {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
        } else {
            std::fs::write(path, new).with_context(|| format!("write {}", path.display()))?;
            crate::step(&format!(
                "regenerated the ABI constants in {}",
                path.display()
            ));
        }
    }
    if !stale.is_empty() {
        bail!(
            "the ABI constants in {} are out of date with plugin-sdk/src/abi.rs: run `cargo xtask bindings`",
            stale.join(", ")
        );
    }
    Ok(())
}

/// One `pub const` of `abi.rs`.
struct AbiConst {
    name: String,
    ty: String,
    value: String,
    doc: Vec<String>,
}

/// Reads the `pub const NAME: TYPE = VALUE;` items of `abi.rs`, with their
/// doc comments. Only literal values are expected; anything else is an
/// error, so that the generated bindings are never silently incomplete.
fn abi_consts(src: &str) -> Result<Vec<AbiConst>> {
    let mut out = Vec::new();
    let mut doc: Vec<String> = Vec::new();
    for line in src.lines() {
        let t = line.trim();
        if let Some(d) = t.strip_prefix("///") {
            doc.push(d.trim().to_string());
            continue;
        }
        if let Some(rest) = t
            .strip_prefix("pub const ")
            .filter(|r| !r.starts_with("fn "))
        {
            let (name, rest) = rest
                .split_once(':')
                .with_context(|| format!("abi.rs: `{t}` is not `pub const NAME: TYPE`"))?;
            let (ty, value) = rest
                .split_once('=')
                .with_context(|| format!("abi.rs: `{t}` has no value"))?;
            let value = value.trim().trim_end_matches(';').trim().to_string();
            let literal = (value.starts_with('"') && value.ends_with('"'))
                || value
                    .trim_start_matches('-')
                    .chars()
                    .all(|c| c.is_ascii_digit());
            ensure!(
                literal,
                "plugin-sdk/src/abi.rs: `{}` = `{value}` is not a literal; teach xtask/src/bindings.rs to render it for C and AssemblyScript",
                name.trim()
            );
            out.push(AbiConst {
                name: name.trim().to_string(),
                ty: ty.trim().to_string(),
                value,
                doc: std::mem::take(&mut doc),
            });
            continue;
        }
        // Doc comments belong to the item right after them.
        if !t.starts_with("#[") {
            doc.clear();
        }
    }
    Ok(out)
}

/// A rustdoc comment as plain text: "[`X`]" and "[text](link)" lose their
/// brackets and links; any other "[" (such as "[ptr, ptr+len)") stays.
fn plain_doc(doc: &[String]) -> String {
    let text = doc.join(" ");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let link = after.find(']').filter(|&c| {
            let inner = &after[..c];
            !inner.is_empty()
                && !inner.contains('[')
                && !inner.contains(' ')
                && ((inner.starts_with('`') && inner.ends_with('`'))
                    || after[c + 1..].starts_with('('))
        });
        match link {
            Some(c) => {
                out.push_str(&after[..c]);
                rest = &after[c + 1..];
                if rest.starts_with('(')
                    && let Some(end) = rest.find(')')
                {
                    rest = &rest[end + 1..];
                }
            }
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("*/", "* /")
}

fn render_c(consts: &[AbiConst]) -> String {
    let mut s = String::new();
    for c in consts {
        if !c.doc.is_empty() {
            s.push_str(&format!("/* {} */\n", plain_doc(&c.doc)));
        }
        let value = match c.ty.as_str() {
            "&str" => c.value.clone(),
            // INT64_C(-9223372036854775808) negates a literal too large for
            // int64_t; C spells the minimum this way.
            "i64" if c.value == i64::MIN.to_string() => {
                format!("(-INT64_C({}) - 1)", i64::MAX)
            }
            "i64" => format!("INT64_C({})", c.value),
            _ if c.value.starts_with('-') => format!("({})", c.value),
            "u32" | "usize" => format!("{}u", c.value),
            _ => c.value.clone(),
        };
        s.push_str(&format!("#define WEIR_{} {value}\n", c.name));
    }
    s
}

fn render_assemblyscript(consts: &[AbiConst]) -> Result<String> {
    let mut s = String::new();
    for c in consts {
        if !c.doc.is_empty() {
            s.push_str(&format!("/** {} */\n", plain_doc(&c.doc)));
        }
        let ty = match c.ty.as_str() {
            "&str" => "string",
            "i32" => "i32",
            "i64" => "i64",
            "u32" => "u32",
            "usize" => "usize",
            other => bail!(
                "plugin-sdk/src/abi.rs: `{}` has type {other}; teach xtask/src/bindings.rs to render it for AssemblyScript",
                c.name
            ),
        };
        s.push_str(&format!("export const {}: {ty} = {};\n", c.name, c.value));
    }
    Ok(s)
}

/// The whole of `plugin-sdk/go/abi_gen.go`.
fn render_go(consts: &[AbiConst]) -> Result<String> {
    let mut s = String::from(
        "// Code generated by cargo xtask bindings from plugin-sdk/src/abi.rs; DO NOT EDIT.\n\npackage weir\n",
    );
    for c in consts {
        s.push('\n');
        if !c.doc.is_empty() {
            s.push_str(&format!("// {}\n", plain_doc(&c.doc)));
        }
        let ty = match c.ty.as_str() {
            "&str" => "string",
            "i32" => "int32",
            "i64" => "int64",
            "u32" => "uint32",
            "usize" => "int",
            other => bail!(
                "plugin-sdk/src/abi.rs: `{}` has type {other}; teach xtask/src/bindings.rs to render it for Go",
                c.name
            ),
        };
        s.push_str(&format!("const {} {ty} = {}\n", go_name(&c.name), c.value));
    }
    Ok(s)
}

/// `EMIT_BAD_TOPIC` → `EmitBadTopic`; an `_` stays only between two
/// digits (`ABI_VERSION_1_1` → `AbiVersion1_1`).
fn go_name(name: &str) -> String {
    let parts: Vec<&str> = name.split('_').collect();
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        let digits = |p: &str| p.chars().all(|c| c.is_ascii_digit());
        if i > 0 && digits(part) && digits(parts[i - 1]) {
            out.push('_');
        }
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first);
            out.extend(chars.map(|c| c.to_ascii_lowercase()));
        }
    }
    out
}

/// `text` with the lines between its BEGIN/END GENERATED markers replaced
/// by `block`.
fn with_generated(path: &Path, text: &str, block: &str) -> Result<String> {
    let begin = text
        .find("BEGIN GENERATED FROM plugin-sdk/src/abi.rs")
        .and_then(|b| text[b..].find('\n').map(|n| b + n + 1))
        .with_context(|| format!("{}: no BEGIN GENERATED marker", path.display()))?;
    let end = text[begin..]
        .find("END GENERATED")
        .map(|e| begin + e)
        .and_then(|e| text[..e].rfind('\n').map(|n| n + 1))
        .with_context(|| format!("{}: no END GENERATED marker", path.display()))?;
    Ok(format!("{}{}{}", &text[..begin], block, &text[end..]))
}
