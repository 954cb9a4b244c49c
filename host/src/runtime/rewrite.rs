//! Load-time rewrite that makes a module snapshottable.
//!
//! A snapshot must hold every mutable global, including the ones a module
//! does not export (`__stack_pointer`, a language runtime's heap and GC
//! pointers), but wasmtime can only reach exported globals. So, as Wizer
//! does, the host adds an export `__weir_global_<index>` for each mutable
//! global before compiling. Every other section is copied byte for byte.
//!
//! The same pass refuses what a snapshot of memory and globals could not
//! restore: more than one memory, an imported memory, and code that changes
//! a table at run time (`table.set`, `table.grow`, `table.fill`,
//! `table.copy`, `table.init`, `elem.drop`).

use wasm_encoder::{ExportKind, ExportSection, Section};
use wasmparser::{ExternalKind, Operator, Parser, Payload, TypeRef};

/// Prefix of the exports the rewrite adds.
pub const GLOBAL_EXPORT_PREFIX: &str = "__weir_global_";

/// A module ready to compile, and what the snapshot needs to know.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// The module with the added exports.
    pub wasm: Vec<u8>,
    /// Export names of every mutable global, in global-index order.
    pub mutable_globals: Vec<String>,
}

/// Rewrites `wasm` (a binary module). Errors say what cannot be snapshotted.
pub fn rewrite(wasm: &[u8]) -> Result<Rewritten, String> {
    let mut imported_globals = 0u32;
    let mut memories = 0u32;
    let mut mutable: Vec<u32> = Vec::new();
    let mut exported_globals: Vec<(u32, String)> = Vec::new();
    let mut export_range = None;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| e.to_string())? {
            Payload::ImportSection(reader) => {
                for imp in reader.into_imports() {
                    let imp = imp.map_err(|e| e.to_string())?;
                    match imp.ty {
                        TypeRef::Global(g) => {
                            if g.mutable {
                                return Err(format!(
                                    "imports mutable global `{}.{}`, which a snapshot cannot hold",
                                    imp.module, imp.name
                                ));
                            }
                            imported_globals += 1;
                        }
                        TypeRef::Memory(_) => {
                            return Err(format!(
                                "imports its memory (`{}.{}`); a plugin must define and export its own (remove -Wl,--import-memory in C, --importMemory in AssemblyScript)",
                                imp.module, imp.name
                            ));
                        }
                        _ => {}
                    }
                }
            }
            Payload::MemorySection(reader) => memories += reader.count(),
            Payload::GlobalSection(reader) => {
                for (i, g) in reader.into_iter().enumerate() {
                    let g = g.map_err(|e| e.to_string())?;
                    if g.ty.mutable {
                        match g.ty.content_type {
                            wasmparser::ValType::I32
                            | wasmparser::ValType::I64
                            | wasmparser::ValType::F32
                            | wasmparser::ValType::F64 => {}
                            other => {
                                return Err(format!(
                                    "has a mutable global of type {other:?}; snapshots hold only i32, i64, f32 and f64 globals"
                                ));
                            }
                        }
                        mutable.push(imported_globals + i as u32);
                    }
                }
            }
            Payload::ExportSection(reader) => {
                let r = reader.range();
                export_range = Some(r.start as usize..r.end as usize);
                for e in reader {
                    let e = e.map_err(|e| e.to_string())?;
                    if e.kind == ExternalKind::Global {
                        exported_globals.push((e.index, e.name.to_string()));
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut ops = body.get_operators_reader().map_err(|e| e.to_string())?;
                while !ops.eof() {
                    let op = ops.read().map_err(|e| e.to_string())?;
                    let name = match op {
                        Operator::TableSet { .. } => "table.set",
                        Operator::TableGrow { .. } => "table.grow",
                        Operator::TableFill { .. } => "table.fill",
                        Operator::TableCopy { .. } => "table.copy",
                        Operator::TableInit { .. } => "table.init",
                        Operator::ElemDrop { .. } => "elem.drop",
                        _ => continue,
                    };
                    return Err(format!(
                        "changes a table at run time (`{name}`); a snapshot of memory and globals could not restore it: keep tables fixed (call_indirect only; no table.grow/table.set)"
                    ));
                }
            }
            _ => {}
        }
    }
    if memories > 1 {
        return Err(format!(
            "defines {memories} memories; a plugin has exactly one"
        ));
    }
    let Some(export_range) = export_range else {
        if mutable.is_empty() {
            // Nothing to add; the ABI checks will say what is missing.
            return Ok(Rewritten {
                wasm: wasm.to_vec(),
                mutable_globals: Vec::new(),
            });
        }
        return Err("has no export section (it must export `memory` and the ABI functions)".into());
    };

    // Re-encode the export section with the added global exports.
    let mut section = ExportSection::new();
    let reader = wasmparser::ExportSectionReader::new(wasmparser::BinaryReader::new(
        &wasm[export_range.start..export_range.end],
        export_range.start as u64,
    ))
    .map_err(|e| e.to_string())?;
    for e in reader {
        let e = e.map_err(|e| e.to_string())?;
        let kind = match e.kind {
            ExternalKind::Func | ExternalKind::FuncExact => ExportKind::Func,
            ExternalKind::Table => ExportKind::Table,
            ExternalKind::Memory => ExportKind::Memory,
            ExternalKind::Global => ExportKind::Global,
            ExternalKind::Tag => ExportKind::Tag,
        };
        section.export(e.name, kind, e.index);
    }
    let mut names = Vec::with_capacity(mutable.len());
    for &index in &mutable {
        match exported_globals.iter().find(|(i, _)| *i == index) {
            Some((_, name)) => names.push(name.clone()),
            None => {
                let name = format!("{GLOBAL_EXPORT_PREFIX}{index}");
                section.export(&name, ExportKind::Global, index);
                names.push(name);
            }
        }
    }

    // Splice: everything before the export section's header, the new
    // section, everything after it. The header is the id byte and the
    // LEB128 size just before `export_range.start`.
    let header_start = section_header_start(wasm, export_range.start)?;
    let mut out = Vec::with_capacity(wasm.len() + 32 * names.len());
    out.extend_from_slice(&wasm[..header_start]);
    section.append_to(&mut out);
    out.extend_from_slice(&wasm[export_range.end..]);
    Ok(Rewritten {
        wasm: out,
        mutable_globals: names,
    })
}

/// Finds where the section whose contents start at `contents` begins (its
/// id byte), by walking the section headers from the module start.
fn section_header_start(wasm: &[u8], contents: usize) -> Result<usize, String> {
    let mut pos = 8;
    while pos < wasm.len() {
        let start = pos;
        pos += 1;
        let (size, n) = read_leb_u32(&wasm[pos..]).ok_or("bad section size")?;
        pos += n;
        if pos == contents {
            return Ok(start);
        }
        pos += size as usize;
    }
    Err("export section not found".into())
}

fn read_leb_u32(b: &[u8]) -> Option<(u32, usize)> {
    let mut result = 0u32;
    for (i, &byte) in b.iter().enumerate().take(5) {
        result |= ((byte & 0x7f) as u32) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((result, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_hidden_mutable_globals_only() {
        let wasm = wat::parse_str(
            r#"(module
                (memory (export "memory") 1)
                (global $a (mut i32) (i32.const 1))
                (global $b i64 (i64.const 2))
                (global $c (export "visible") (mut i64) (i64.const 3))
                (global $d (mut f64) (f64.const 4))
                (func (export "f") (result i32) (global.get $a)))"#,
        )
        .unwrap();
        let r = rewrite(&wasm).unwrap();
        assert_eq!(
            r.mutable_globals,
            vec!["__weir_global_0", "visible", "__weir_global_3"]
        );
        let exports: Vec<String> = Parser::new(0)
            .parse_all(&r.wasm)
            .filter_map(|p| match p.unwrap() {
                Payload::ExportSection(s) => Some(
                    s.into_iter()
                        .map(|e| e.unwrap().name.to_string())
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .next()
            .unwrap();
        assert_eq!(
            exports,
            vec![
                "memory",
                "visible",
                "f",
                "__weir_global_0",
                "__weir_global_3"
            ]
        );
        wasmparser::validate(&r.wasm).unwrap();
    }

    #[test]
    fn refuses_table_mutation_and_second_memories() {
        let grow = wat::parse_str(
            r#"(module (memory (export "memory") 1) (table 1 funcref)
                (func (export "f") (drop (table.grow 0 (ref.null func) (i32.const 1)))))"#,
        )
        .unwrap();
        assert!(rewrite(&grow).unwrap_err().contains("table.grow"));
        let imported = wat::parse_str(
            r#"(module (import "env" "memory" (memory 1)) (export "memory" (memory 0)))"#,
        )
        .unwrap();
        assert!(
            rewrite(&imported)
                .unwrap_err()
                .contains("imports its memory")
        );
    }
}
