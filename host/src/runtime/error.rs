//! Errors of the runtime: [`PluginError`] when a module cannot be loaded,
//! [`PluginFault`] when a running plugin misbehaves.

use std::path::PathBuf;

/// A plugin module could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read (missing, unreadable).
    #[error("plugin {path}: cannot read: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The bytes are not a valid WebAssembly module (or WAT text).
    #[error("plugin {path}: not a valid WebAssembly module: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// The module does not follow the Weir ABI (missing or mistyped export,
    /// unknown import).
    #[error("plugin {path}: {reason}")]
    Contract { path: PathBuf, reason: String },
    /// The module speaks an ABI version this host does not know.
    #[error(
        "plugin {path}: weir_abi_version() returned {found}, but this host supports ABI versions 1 (1.0) and 65537 (1.1); rebuild the plugin against a matching SDK"
    )]
    AbiVersion { path: PathBuf, found: i32 },
    /// Instantiating or initialising the module failed.
    #[error("plugin {path}: {stage} failed: {fault}")]
    Start {
        path: PathBuf,
        stage: &'static str,
        fault: PluginFault,
    },
}

/// What went wrong inside a plugin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// The guest trapped (unreachable, out-of-bounds access, division by
    /// zero, ...).
    Trap,
    /// The call ran past `limits.batch_timeout` (epoch deadline).
    Timeout,
    /// The guest tried to grow its memory past `limits.memory`.
    MemoryLimit,
    /// The guest's stack went past `limits.stack` (deep recursion).
    StackOverflow,
    /// The call used up `limits.fuel`.
    OutOfFuel,
    /// The guest emitted more than `limits.max_output_records`,
    /// `limits.max_output_bytes` or `limits.max_record_bytes` allow.
    OutputLimit,
    /// The guest handed the host a pointer/length outside its memory.
    BadPointer,
    /// `weir_process` or `weir_init` returned a non-zero status.
    ErrorStatus(i32),
    /// The guest called WASI `proc_exit`.
    Exit(i32),
}

impl FaultKind {
    /// A stable kebab-case name: the `weir.error.kind` header of a
    /// dead-lettered record, and the key of fault counters.
    pub fn code(&self) -> &'static str {
        match self {
            FaultKind::Trap => "trap",
            FaultKind::Timeout => "timeout",
            FaultKind::MemoryLimit => "memory-limit",
            FaultKind::StackOverflow => "stack-overflow",
            FaultKind::OutOfFuel => "out-of-fuel",
            FaultKind::OutputLimit => "output-limit",
            FaultKind::BadPointer => "bad-pointer",
            FaultKind::ErrorStatus(_) => "error-status",
            FaultKind::Exit(_) => "exit",
        }
    }
}

/// A plugin misbehaved. Carries the message the guest or wasmtime gave; the
/// partition task adds plugin, topic, partition and offsets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", self.kind_name())]
pub struct PluginFault {
    /// The kind, for policies and counters.
    pub kind: FaultKind,
    /// A human-readable reason (trap message, the limit that was hit, the
    /// guest's last error line).
    pub message: String,
}

impl PluginFault {
    /// A short name of the kind, for logs.
    pub fn kind_name(&self) -> String {
        match &self.kind {
            FaultKind::Trap => "trap".into(),
            FaultKind::Timeout => "time limit".into(),
            FaultKind::MemoryLimit => "memory limit".into(),
            FaultKind::StackOverflow => "stack overflow".into(),
            FaultKind::OutOfFuel => "fuel limit".into(),
            FaultKind::OutputLimit => "output limit".into(),
            FaultKind::BadPointer => "bad pointer".into(),
            FaultKind::ErrorStatus(code) => format!("error status {code}"),
            FaultKind::Exit(code) => format!("exit {code}"),
        }
    }

    pub(crate) fn bad_pointer(what: &str, ptr: i64, len: i64, memory: usize) -> Self {
        PluginFault {
            kind: FaultKind::BadPointer,
            message: format!(
                "{what}: range [{ptr}, {ptr}+{len}) is outside linear memory of {memory} bytes"
            ),
        }
    }
}
