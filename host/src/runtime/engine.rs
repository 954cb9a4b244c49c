//! The process-wide wasmtime `Engine` and `Linker`.
//!
//! Compiling is expensive and instantiating is cheap, so one engine compiles
//! each module once and every partition task instantiates it from a shared
//! `InstancePre` into its own `Store` (as wasmtime's tokio example does).

use super::host_functions::{self, HostState};
use super::limits::{self, Limits};
use super::poll_oneoff;
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::{Engine, ExternType, Linker, Store};

/// The engine, the linker with every host import, and the list of imports
/// the host provides (to explain an unknown import precisely).
#[derive(Clone)]
pub struct PluginEngine {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<HostState>>,
    /// `(module, name)` → type of every import the host provides.
    pub(crate) provided: Arc<BTreeMap<(String, String), ExternType>>,
    /// What every instance may use.
    pub(crate) limits: Limits,
}

impl PluginEngine {
    /// Builds the engine and linker with the default [`Limits`].
    pub fn new() -> wasmtime::Result<Self> {
        Self::with_limits(Limits::default())
    }

    /// Builds the engine and linker; every instance gets `limits`. Starts
    /// the engine's epoch ticker (see `runtime::limits`).
    pub fn with_limits(limits: Limits) -> wasmtime::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        config.epoch_interruption(true);
        config.max_wasm_stack(limits.stack);
        config.consume_fuel(limits.fuel.is_some());
        let engine = Engine::new(&config)?;
        limits::start_ticker(&engine);
        let mut linker = Linker::new(&engine);
        host_functions::add_to_linker(&mut linker)?;
        poll_oneoff::add_to_linker(&mut linker)?;
        // Enumerate the definitions once, with a throwaway store.
        let mut store = Store::new(
            &engine,
            HostState::new(Box::new(NullSink), Arc::from(Vec::new()), &limits),
        );
        let defs: Vec<_> = linker
            .iter(&mut store)
            .map(|(m, n, e)| (m.to_string(), n.to_string(), e))
            .collect();
        let provided = defs
            .into_iter()
            .map(|(m, n, e)| ((m, n), e.ty(&store)))
            .collect();
        Ok(PluginEngine {
            engine,
            linker: Arc::new(linker),
            provided: Arc::new(provided),
            limits,
        })
    }

    /// The limits every instance gets.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// A sink that drops everything; for probing instances.
pub(crate) struct NullSink;

impl host_functions::OutputSink for NullSink {
    fn emit(
        &mut self,
        _records: weir_plugin_sdk::abi::RecordIter<'_>,
        _topics: &[String],
    ) -> Result<(), host_functions::SinkError> {
        Ok(())
    }
}
