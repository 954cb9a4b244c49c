//! A plugin module: read, compiled once, checked against the ABI, ready to
//! instantiate many times through its `InstancePre`.
//!
//! Every way a file can fail to be a plugin has its own message naming the
//! file and saying what to change: that is also what `weir check-plugin`
//! prints.

use super::call;
use super::engine::{NullSink, PluginEngine};
use super::error::PluginError;
use super::host_functions::HostState;
use super::rewrite;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::{ExternType, FuncType, InstancePre, Module};
use weir_plugin_sdk::abi;

/// A compiled, validated plugin.
#[derive(Clone)]
pub struct PluginModule {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// A short name for logs: the file stem.
    pub name: Arc<str>,
    /// SHA-256 of the file's bytes: snapshots record it.
    pub sha256: [u8; 32],
    /// Whether the optional `weir_init` export exists.
    pub has_init: bool,
    /// Whether the optional `weir_tick` export (ABI 1.1) exists.
    pub has_tick: bool,
    /// Whether the optional `weir_state_export` / `weir_state_import`
    /// exports (ABI 1.1, portable state) exist.
    pub has_state_export: bool,
    pub has_state_import: bool,
    /// The module file's bytes, as read: kept beside checkpoints so that a
    /// later module can take its state over (see `checkpoint::module_archive`).
    pub bytes: Arc<[u8]>,
    /// What `weir_abi_version()` returned: `abi::ABI_VERSION` (1.0) or
    /// `abi::ABI_VERSION_1_1`.
    pub abi_version: i32,
    /// Export names of every mutable global (added by the rewrite when the
    /// module did not export them): what a snapshot captures.
    pub mutable_globals: Arc<[String]>,
    pub(crate) module: Module,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) engine: PluginEngine,
}

/// What `weir check-plugin` shows about a valid module.
#[derive(Debug, Clone)]
pub struct PluginReport {
    pub path: PathBuf,
    pub size: usize,
    pub sha256: String,
    pub abi_version: i32,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    pub memory: String,
    pub has_init: bool,
    /// Mutable globals a snapshot captures (exported or not).
    pub mutable_globals: usize,
    /// Things that load but are probably mistakes, with the fix.
    pub warnings: Vec<String>,
}

fn render_func(ft: &FuncType) -> String {
    let params: Vec<String> = ft.params().map(|p| p.to_string()).collect();
    let results: Vec<String> = ft.results().map(|p| p.to_string()).collect();
    format!("({}) -> ({})", params.join(", "), results.join(", "))
}

fn render_extern(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => format!("func {}", render_func(f)),
        ExternType::Memory(m) => format!(
            "memory min {} pages, max {}",
            m.minimum(),
            m.maximum().map_or("none".into(), |m| format!("{m} pages"))
        ),
        ExternType::Global(g) => format!("global {} {:?}", g.content(), g.mutability()),
        ExternType::Table(t) => format!("table {} min {}", t.element(), t.minimum()),
        ExternType::Tag(_) => "tag".into(),
    }
}

/// The exports the ABI requires or allows, with their signatures.
const EXPECTED_EXPORTS: [(&str, &str, bool); 7] = [
    (abi::EXPORT_ABI_VERSION, "() -> (i32)", true),
    (abi::EXPORT_INPUT_BUFFER, "(i32) -> (i32)", true),
    (abi::EXPORT_PROCESS, "(i32, i32) -> (i32)", true),
    (abi::EXPORT_INIT, "(i32, i32) -> (i32)", false),
    (abi::EXPORT_TICK, "(i64, i64) -> (i32)", false),
    (abi::EXPORT_STATE_EXPORT, "() -> (i32)", false),
    (abi::EXPORT_STATE_IMPORT, "(i32, i32, i32) -> (i32)", false),
];

/// Human form of a `weir_abi_version()` value.
pub fn abi_version_name(version: i32) -> String {
    match version {
        abi::ABI_VERSION => "1.0".into(),
        v if v > 0xffff => format!("{}.{}", v >> 16, v & 0xffff),
        v => v.to_string(),
    }
}

impl PluginModule {
    /// Reads, compiles and validates the module at `path` (binary `.wasm`
    /// or `.wat` text), and checks its ABI version by instantiating it once.
    pub fn load(engine: &PluginEngine, path: &Path) -> Result<Self, PluginError> {
        let bytes = std::fs::read(path).map_err(|cause| PluginError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::from_bytes(engine, path, &bytes)
    }

    /// As [`load`](Self::load), from bytes already read.
    pub fn from_bytes(
        engine: &PluginEngine,
        path: &Path,
        bytes: &[u8],
    ) -> Result<Self, PluginError> {
        let path = path.to_path_buf();
        let contract = |reason: String| PluginError::Contract {
            path: path.clone(),
            reason,
        };
        let is_binary = bytes.starts_with(b"\0asm");
        let is_text = path.extension().is_some_and(|e| e == "wat");
        if !is_binary && !is_text {
            return Err(PluginError::Invalid {
                path,
                reason: format!(
                    "not a WebAssembly binary: it does not start with the `\\0asm` magic bytes (first bytes: {:02x?}); build for wasm32, or name WAT text `.wat`",
                    &bytes[..bytes.len().min(4)]
                ),
            });
        }
        let binary = wat::parse_bytes(bytes).map_err(|e| PluginError::Invalid {
            path: path.clone(),
            reason: format!("{e:#}"),
        })?;
        wasmparser::validate(&binary).map_err(|e| PluginError::Invalid {
            path: path.clone(),
            reason: format!("{e:#}"),
        })?;
        let rewritten = rewrite::rewrite(&binary).map_err(&contract)?;
        let module =
            Module::new(&engine.engine, &rewritten.wasm).map_err(|e| PluginError::Invalid {
                path: path.clone(),
                reason: format!("{e:#}"),
            })?;
        if let Some(reason) = changeable_table(&module) {
            return Err(contract(reason));
        }

        // Exports.
        match module.get_export(abi::EXPORT_MEMORY) {
            Some(ExternType::Memory(m)) if m.is_64() => {
                return Err(contract(
                    "exports a 64-bit memory; the ABI uses 32-bit pointers (build for wasm32)"
                        .into(),
                ));
            }
            Some(ExternType::Memory(_)) => {}
            Some(other) => {
                return Err(contract(format!(
                    "export `memory` is a {}, expected a memory",
                    render_extern(&other)
                )));
            }
            None => {
                return Err(contract(
                    "does not export its linear memory as `memory` (the host writes input batches there)".into(),
                ));
            }
        }
        let (mut has_init, mut has_tick) = (false, false);
        let (mut has_state_export, mut has_state_import) = (false, false);
        for (name, want, required) in EXPECTED_EXPORTS {
            match module.get_export(name) {
                Some(ExternType::Func(f)) => {
                    let got = render_func(&f);
                    if got != want {
                        return Err(contract(format!(
                            "export `{name}` has signature {got}, the ABI requires {want}"
                        )));
                    }
                    has_init |= name == abi::EXPORT_INIT;
                    has_tick |= name == abi::EXPORT_TICK;
                    has_state_export |= name == abi::EXPORT_STATE_EXPORT;
                    has_state_import |= name == abi::EXPORT_STATE_IMPORT;
                }
                Some(other) => {
                    return Err(contract(format!(
                        "export `{name}` is a {}, the ABI requires a function {want}",
                        render_extern(&other)
                    )));
                }
                None if required => {
                    return Err(contract(format!(
                        "missing export `{name}` {want} (see docs/ABI.md; Rust: weir_plugin_sdk::export_plugin! defines it; C: WEIR_EXPORT(\"{name}\") from plugin-sdk/c/weir_plugin.h, or WEIR_DEFINE_ABI_VERSION() / WEIR_DEFINE_INPUT_BUFFER() for the standard ones; AssemblyScript: re-export it from plugin-sdk/assemblyscript/weir.ts in the entry file)"
                    )));
                }
                None => {}
            }
        }

        // Imports: only what the host provides, with the same types.
        for import in module.imports() {
            let key = (import.module().to_string(), import.name().to_string());
            let ty = import.ty();
            match engine.provided.get(&key) {
                None => {
                    return Err(contract(
                        format!(
                            "imports `{}.{}` ({}), which the host does not provide; a plugin may import only {m}.{}, {m}.{}, {m}.{} and WASI preview 1 ({}.*)",
                            key.0,
                            key.1,
                            render_extern(&ty),
                            abi::IMPORT_EMIT,
                            abi::IMPORT_LOG,
                            abi::IMPORT_SINK_TOPICS,
                            abi::WASI_MODULE,
                            m = abi::IMPORT_MODULE,
                        ) + &import_hint(&key.0, &key.1),
                    ));
                }
                Some(provided) => {
                    let (want, got) = (render_extern(provided), render_extern(&ty));
                    if want != got {
                        return Err(contract(format!(
                            "imports `{}.{}` as {got}, but the host provides {want}; declare it as plugin-sdk/c/weir_plugin.h and plugin-sdk/assemblyscript/weir.ts do",
                            key.0, key.1
                        )));
                    }
                }
            }
        }

        let pre = engine
            .linker
            .instantiate_pre(&module)
            .map_err(|e| contract(format!("cannot be linked: {e:#}")))?;
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        let name: Arc<str> = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into())
            .into();
        let mut plugin = PluginModule {
            path: path.clone(),
            name,
            sha256,
            has_init,
            has_tick,
            has_state_export,
            has_state_import,
            bytes: bytes.into(),
            abi_version: 0,
            mutable_globals: rewritten.mutable_globals.into(),
            module,
            pre,
            engine: engine.clone(),
        };

        let found = plugin.probe_version()?;
        if found != abi::ABI_VERSION && found != abi::ABI_VERSION_1_1 {
            return Err(PluginError::AbiVersion { path, found });
        }
        if found == abi::ABI_VERSION
            && let Some(name) = uses_abi_1_1(&plugin.module)
        {
            return Err(contract(format!(
                "uses `{name}`, which ABI 1.1 added, but weir_abi_version() returns 1 (ABI 1.0); return {} (0x00010001) to declare 1.1 (see docs/ABI.md, section 10)",
                abi::ABI_VERSION_1_1
            )));
        }
        plugin.abi_version = found;
        Ok(plugin)
    }

    /// Calls `weir_abi_version()` on a throwaway instance (started like
    /// any other: instantiation, then `_initialize`).
    fn probe_version(&self) -> Result<i32, PluginError> {
        let start = |stage, fault| PluginError::Start {
            path: self.path.clone(),
            stage,
            fault,
        };
        let state = HostState::new(
            Box::new(NullSink),
            Arc::from(Vec::new()),
            &self.engine.limits,
        );
        let (mut store, instance) = call::start(&self.engine.engine, &self.pre, state)
            .map_err(|fault| start("instantiation", fault))?;
        let version = instance
            .get_typed_func::<(), i32>(&mut store, abi::EXPORT_ABI_VERSION)
            .map_err(|e| PluginError::Contract {
                path: self.path.clone(),
                reason: format!("{}: {e}", abi::EXPORT_ABI_VERSION),
            })?;
        call::arm(&mut store);
        version
            .call(&mut store, ())
            .map_err(|e| start("weir_abi_version()", call::fault_from(&mut store, e)))
    }

    /// A description of the module for `weir check-plugin`.
    pub fn report(&self, size: usize) -> PluginReport {
        let mut sha = String::new();
        for b in self.sha256 {
            let _ = write!(sha, "{b:02x}");
        }
        let exports = self
            .module
            .exports()
            .filter(|e| !e.name().starts_with(rewrite::GLOBAL_EXPORT_PREFIX))
            .map(|e| format!("{}: {}", e.name(), render_extern(&e.ty())))
            .collect();
        let imports = self
            .module
            .imports()
            .map(|i| format!("{}.{}: {}", i.module(), i.name(), render_extern(&i.ty())))
            .collect();
        let memory = match self.module.get_export(abi::EXPORT_MEMORY) {
            Some(ty) => render_extern(&ty),
            None => "none".into(),
        };
        PluginReport {
            path: self.path.clone(),
            size,
            sha256: sha,
            abi_version: self.abi_version,
            exports,
            imports,
            memory,
            has_init: self.has_init,
            mutable_globals: self.mutable_globals.len(),
            warnings: toolchain_warnings(&self.module),
        }
    }
}

/// The first ABI 1.1 export or import the module uses, if any: a module
/// that uses one must declare 1.1.
fn uses_abi_1_1(module: &Module) -> Option<&'static str> {
    for name in [
        abi::EXPORT_TICK,
        abi::EXPORT_STATE_EXPORT,
        abi::EXPORT_STATE_IMPORT,
    ] {
        if module.get_export(name).is_some() {
            return Some(name);
        }
    }
    module
        .imports()
        .any(|i| i.module() == abi::IMPORT_MODULE && i.name() == abi::IMPORT_SINK_TOPICS)
        .then_some("weir.sink_topics")
}

/// Modules that load and run but were probably built the wrong way.
fn toolchain_warnings(module: &Module) -> Vec<String> {
    let mut warnings = Vec::new();
    if module.get_export("_start").is_some() && module.get_export("_initialize").is_none() {
        warnings.push(
            "exports `_start`: it was built as a WASI command, whose C runtime (constructors, malloc, stdio) is set up only inside `_start`, which a plugin host never calls, and torn down when it returns. Build a reactor instead: clang -mexec-model=reactor (it exports `_initialize`, which Weir calls once per instance); for Rust use a cdylib; remove main()".into(),
        );
    }
    warnings
}

/// The ABI (and the snapshots it promises) needs tables that cannot change
/// while the plugin runs: an exported or imported table could be changed
/// from outside, and `table.grow`/`table.set` would change state a snapshot
/// of memory and globals does not hold. Returns why the module is refused.
fn changeable_table(module: &Module) -> Option<String> {
    for e in module.exports() {
        if let ExternType::Table(_) = e.ty() {
            return Some(format!(
                "exports table `{}`; plugins must not export tables (drop the export: remove -Wl,--export-table in C, --exportTable in AssemblyScript)",
                e.name()
            ));
        }
    }
    None
}

/// How the usual toolchains come to import something the host does not
/// provide, and what to do about it.
fn import_hint(module: &str, name: &str) -> String {
    let hint = match (module, name) {
        ("env", "abort") => {
            "AssemblyScript: compile with `--use abort=weirAbort` (plugin-sdk/assemblyscript/weir.ts)"
        }
        ("env", "seed") => "AssemblyScript: `env.seed` comes from Math.random; remove it",
        ("env", "trace") => {
            "AssemblyScript: `env.trace` comes from trace(); use log() from weir.ts"
        }
        ("env", n) if n.starts_with("Date") || n.starts_with("console") => {
            "AssemblyScript: Date and console need a JavaScript host; use log() from weir.ts"
        }
        ("env", _) => {
            "C: an undefined function became an import; drop -Wl,--allow-undefined and define it or link its library"
        }
        _ => return String::new(),
    };
    format!(". Hint: {hint}")
}
