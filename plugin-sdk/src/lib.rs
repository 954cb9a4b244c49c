//! The Weir plugin SDK for Rust.
//!
//! A plugin is a type that implements [`Plugin`], exported with
//! [`export_plugin!`]. The macro owns the ABI (version 1.1): it exports
//! `memory`'s companions (`weir_abi_version`, `weir_input_buffer`,
//! `weir_process`, `weir_init`, `weir_tick`), decodes each input batch in
//! place, and hands your code one record at a time with an [`Output`] to
//! emit into. Outputs are encoded into one buffer and handed to the host in
//! a single `weir.emit` call per batch. Time comes through
//! [`Plugin::on_tick`].
//!
//! ```
//! use weir_plugin_sdk::prelude::*;
//!
//! #[derive(Default)]
//! struct Upper;
//!
//! impl Plugin for Upper {
//!     fn process(&mut self, record: Record<'_>, out: &mut Output) -> Result<(), Error> {
//!         let value = record.value.map(|v| v.to_ascii_uppercase());
//!         out.emit(record.key, value.as_deref());
//!         Ok(())
//!     }
//! }
//!
//! export_plugin!(Upper);
//! ```
//!
//! State is ordinary Rust data inside the plugin value (a `HashMap` field,
//! say). It lives in the module's linear memory, which the host snapshots
//! with every checkpoint; the SDK keeps nothing anywhere else.
//!
//! Layout:
//! - [`abi`]: the ABI definition, shared byte for byte with the host.
//! - [`config`]: the plugin's own config table, as given in `config.toml`.
//! - [`log`]: log macros that go to the host's log under the plugin's span.
//! - [`output`]: the buffer records are emitted into.
//! - [`rt`]: the glue the macro expands to (not for direct use).
//! - [`serde_state`] (feature `serde`): portable state from serde, for
//!   `export_plugin!(P, serde_state(field, ...) = VERSION)`.

pub mod abi;
pub mod config;
pub mod log;
pub mod output;
#[doc(hidden)]
pub mod rt;
#[cfg(feature = "serde")]
pub mod serde_state;

pub use abi::{Header, RecordRef as Record};
pub use config::Config;
pub use output::{OutRecord, Output};

/// An error a plugin returns from [`Plugin::init`] or [`Plugin::process`].
/// The host logs the message and applies the pipeline's fault policy.
#[derive(Debug, Clone)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error::new(e.to_string())
    }
}

/// What [`Plugin::on_tick`] is told: the partition's event-time watermark
/// and the host's wall clock, both in ms since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Records stamped at or below it have all arrived (later ones are
    /// late). [`abi::WATERMARK_NONE`] before the partition has seen a
    /// timestamp; [`abi::WATERMARK_END`] once a bounded input has ended.
    pub watermark: i64,
    /// The host's wall clock (not deterministic under replay).
    pub processing_time: i64,
}

impl Tick {
    /// Whether the input has ended: every window should close now.
    pub fn is_end(&self) -> bool {
        self.watermark == abi::WATERMARK_END
    }

    /// Whether an event-time window ending at `end` (exclusive, ms) is
    /// complete: the watermark has reached `end - 1`.
    pub fn closes(&self, end: i64) -> bool {
        self.watermark != abi::WATERMARK_NONE && self.watermark >= end.saturating_sub(1)
    }
}

/// The number of sink topics configured: an output record's `topic` must be
/// below it. Valid in every call, also after a restore.
pub fn sink_topics() -> usize {
    rt::host_sink_topics()
}

/// The logic of a plugin. One value of the type lives per partition task, in
/// the plugin's linear memory; the host snapshots it with every checkpoint.
pub trait Plugin: Default + 'static {
    /// Called once on a fresh start (never on restore) with the plugin's
    /// config table from `config.toml`.
    fn init(&mut self, config: &Config) -> Result<(), Error> {
        let _ = config;
        Ok(())
    }

    /// Called for every input record, in partition order. Emit zero, one or
    /// many records through `out`.
    fn process(&mut self, record: Record<'_>, out: &mut Output) -> Result<(), Error>;

    /// Called between batches when the partition's watermark advances, at
    /// least every `pipeline.tick_interval` while it is idle, and once with
    /// [`abi::WATERMARK_END`] when a bounded input ends. Emit what the time
    /// completes (closed windows, timeouts). Does nothing by default.
    fn on_tick(&mut self, time: Tick, out: &mut Output) -> Result<(), Error> {
        let _ = (time, out);
        Ok(())
    }
}

/// A plugin that changes record values and nothing else, keeping each
/// value's length (an ASCII case map, a fixed-width mask or cipher): every
/// output record is its input record with the value mapped, sent to sink
/// topic 0 with the partition chosen by key. Export it with
/// `export_plugin!(MyMap, value_map)`.
///
/// The SDK then edits the input batch where it lies and hands it back to
/// the host whole, in one `weir.emit`: no output record is written, so a
/// record costs the map and the decode of its header. A map that changes a
/// length, drops or adds records, or reads keys is a [`Plugin`].
pub trait ValueMap: Default + 'static {
    /// As [`Plugin::init`].
    fn init(&mut self, config: &Config) -> Result<(), Error> {
        let _ = config;
        Ok(())
    }

    /// Changes `value` in place (null values are passed on untouched).
    fn map(&mut self, value: &mut [u8]);
}

/// A plugin's state in a form of its own (ABI 1.1 portable state,
/// docs/ABI.md section 3b), so that a later build of the plugin can take the
/// state over even when its memory layout changed. Export it with
/// `export_plugin!(MyPlugin, portable_state)`.
///
/// The host uses it only when the module changed: it restores the old
/// module's memory image, calls the old module's [`export_state`], and
/// gives the bytes to the new module's [`import_state`] on a fresh value
/// (after [`Plugin::init`] with the current config). Within one module,
/// checkpoints stay memory images.
///
/// [`export_state`]: PortableState::export_state
/// [`import_state`]: PortableState::import_state
pub trait PortableState: Plugin {
    /// The version of the format [`export_state`](Self::export_state)
    /// writes. Raise it when the format changes, and keep reading the old
    /// versions in [`import_state`](Self::import_state).
    const STATE_VERSION: u32;

    /// Appends the state to `out` (empty when called).
    fn export_state(&self, out: &mut Vec<u8>) -> Result<(), Error>;

    /// Rebuilds the state from `bytes`, written in format `version` by
    /// this or an earlier build. Refuse a version you cannot read with an
    /// error that names it: the job then stops, and its checkpoint is
    /// left as it was.
    fn import_state(&mut self, version: u32, bytes: &[u8]) -> Result<(), Error>;
}

/// The usual imports for writing a plugin.
pub mod prelude {
    pub use crate::{
        Config, Error, Header, OutRecord, Output, Plugin, PortableState, Record, Tick, ValueMap,
        export_plugin, sink_topics,
    };
}

/// Exports a [`Plugin`] type through the Weir ABI. Use it once per crate,
/// in a `cdylib` built for `wasm32-unknown-unknown` (or `wasm32-wasip1`).
///
/// The type must implement [`Plugin`] (and so `Default`); if it does not,
/// the compiler points at the type named here. With `, portable_state` it
/// must also implement [`PortableState`], and the module exports
/// `weir_state_export` and `weir_state_import`.
///
/// With `, value_map` the type implements [`ValueMap`] instead, and the
/// module maps its input batches in place. It declares ABI 1.0: it has no
/// time (no `weir_tick`) and no portable state.
///
/// With the `serde` feature, `, serde_state(field, ...) = VERSION`
/// implements [`PortableState`] from serde: the named fields (each
/// `Serialize` and `Deserialize`) are the state, in format `VERSION`, and
/// the fields not named (config read in `init`) keep what `init` gave
/// them. One line for the common case:
///
/// ```text
/// export_plugin!(TumblingWindow, serde_state(windows, watermark, late) = 1);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty, serde_state($($field:ident),+ $(,)?) = $version:expr) => {
        impl $crate::PortableState for $plugin {
            const STATE_VERSION: u32 = $version;

            fn export_state(&self, out: &mut Vec<u8>) -> Result<(), $crate::Error> {
                $crate::serde_state::export(&($(&self.$field,)+), out)
            }

            fn import_state(&mut self, version: u32, bytes: &[u8]) -> Result<(), $crate::Error> {
                let ($($field,)+) = $crate::serde_state::import(version, $version, bytes)?;
                $(self.$field = $field;)+
                Ok(())
            }
        }
        $crate::export_plugin!($plugin, portable_state);
    };
    ($plugin:ty, value_map) => {
        const _: () = {
            fn __weir_assert_value_map<P: $crate::ValueMap>() {}
            fn __weir_check() {
                __weir_assert_value_map::<$plugin>();
            }
        };
        $crate::export_plugin!(@common $crate::abi::ABI_VERSION);

        #[unsafe(no_mangle)]
        pub extern "C" fn weir_init(ptr: i32, len: i32) -> i32 {
            $crate::rt::init_value_map::<$plugin>(ptr, len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn weir_process(ptr: i32, len: i32) -> i32 {
            $crate::rt::process_value_map::<$plugin>(ptr, len)
        }
    };
    (@common $version:expr) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn weir_abi_version() -> i32 {
            $version
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn weir_input_buffer(size: i32) -> i32 {
            $crate::rt::input_buffer(size)
        }
    };
    ($plugin:ty, portable_state) => {
        $crate::export_plugin!($plugin);

        #[unsafe(no_mangle)]
        pub extern "C" fn weir_state_export() -> i32 {
            $crate::rt::state_export::<$plugin>()
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn weir_state_import(ptr: i32, len: i32, version: i32) -> i32 {
            $crate::rt::state_import::<$plugin>(ptr, len, version)
        }
    };
    ($plugin:ty) => {
        const _: () = {
            fn __weir_assert_plugin<P: $crate::Plugin>() {}
            fn __weir_check() {
                __weir_assert_plugin::<$plugin>();
            }
        };

        $crate::export_plugin!(@common $crate::abi::ABI_VERSION_1_1);

        #[unsafe(no_mangle)]
        pub extern "C" fn weir_init(ptr: i32, len: i32) -> i32 {
            $crate::rt::init::<$plugin>(ptr, len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn weir_process(ptr: i32, len: i32) -> i32 {
            $crate::rt::process::<$plugin>(ptr, len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn weir_tick(watermark: i64, processing_time: i64) -> i32 {
            $crate::rt::tick::<$plugin>(watermark, processing_time)
        }
    };
}
