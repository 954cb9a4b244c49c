//! The Weir plugin SDK for Rust.
//!
//! A plugin is a type that implements [`Plugin`], exported with
//! [`export_plugin!`]. The macro owns the ABI: it exports `memory`'s
//! companions (`weir_abi_version`, `weir_input_buffer`, `weir_process`,
//! `weir_init`), decodes each input batch in place, and hands your code one
//! record at a time with an [`Output`] to emit into. Outputs are encoded into
//! one buffer and handed to the host in a single `weir.emit` call per batch.
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

pub mod abi;
pub mod config;
pub mod log;
pub mod output;
#[doc(hidden)]
pub mod rt;

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
}

/// The usual imports for writing a plugin.
pub mod prelude {
    pub use crate::{Config, Error, Header, OutRecord, Output, Plugin, Record, export_plugin};
}

/// Exports a [`Plugin`] type through the Weir ABI. Use it once per crate,
/// in a `cdylib` built for `wasm32-unknown-unknown` (or `wasm32-wasip1`).
///
/// The type must implement [`Plugin`] (and so `Default`); if it does not,
/// the compiler points at the type named here.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            fn __weir_assert_plugin<P: $crate::Plugin>() {}
            fn __weir_check() {
                __weir_assert_plugin::<$plugin>();
            }
        };

        #[unsafe(no_mangle)]
        pub extern "C" fn weir_abi_version() -> i32 {
            $crate::abi::ABI_VERSION
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn weir_input_buffer(size: i32) -> i32 {
            $crate::rt::input_buffer(size)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn weir_init(ptr: i32, len: i32) -> i32 {
            $crate::rt::init::<$plugin>(ptr, len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn weir_process(ptr: i32, len: i32) -> i32 {
            $crate::rt::process::<$plugin>(ptr, len)
        }
    };
}
