//! Portable state (ABI 1.1, docs/ABI.md section 3b): a plugin's state in a
//! form of its own choosing, with a format version, so that another module
//! (a fixed or extended build of the plugin) can take it over when a memory
//! image of the old module would not fit the new one.

use super::{BatchError, PluginInstance, contract_fault};
use crate::runtime::call::arm;
use crate::runtime::error::{FaultKind, PluginFault};
use crate::runtime::snapshot::HostTime;
use weir_plugin_sdk::abi;

/// A plugin's state as its `weir_state_export` wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortableState {
    /// The plugin-chosen version of the format `bytes` are in.
    pub format_version: u32,
    pub bytes: Vec<u8>,
    /// The event time and clock of the instance it came from: they go on
    /// in the instance that imports it.
    pub time: HostTime,
}

impl PluginInstance {
    /// Calls `weir_state_export()` and copies the bytes it describes.
    /// Call on an instance restored from this module's memory image.
    pub fn export_state(&mut self) -> Result<PortableState, BatchError> {
        let Some(export) = self.state_export.clone() else {
            return Err(contract_fault("the module does not export weir_state_export").into());
        };
        self.store.data_mut().last_error = None;
        arm(&mut self.store);
        let at = match export.call(&mut self.store, ()) {
            Ok(at) => at as u32 as usize,
            Err(e) => return Err(self.call_error(e)),
        };
        if at == 0 {
            let reason = self.store.data_mut().last_error.take();
            return Err(PluginFault {
                kind: FaultKind::ErrorStatus(0),
                message: format!(
                    "weir_state_export returned 0 (no state): {}",
                    reason.as_deref().unwrap_or("the plugin logged no reason")
                ),
            }
            .into());
        }
        let mem = self.memory.data(&self.store);
        let descriptor = at
            .checked_add(abi::STATE_DESCRIPTOR_LEN)
            .filter(|end| *end <= mem.len() && at.is_multiple_of(4))
            .map(|end| &mem[at..end])
            .ok_or_else(|| {
                PluginFault::bad_pointer(
                    "weir_state_export descriptor (12 bytes, 4-aligned)",
                    at as i64,
                    abi::STATE_DESCRIPTOR_LEN as i64,
                    mem.len(),
                )
            })?;
        let word = |i: usize| u32::from_le_bytes(descriptor[i..i + 4].try_into().expect("4 bytes"));
        let (format_version, ptr, len) = (word(0), word(4) as usize, word(8) as usize);
        let bytes = ptr
            .checked_add(len)
            .filter(|end| *end <= mem.len())
            .map(|end| mem[ptr..end].to_vec())
            .ok_or_else(|| {
                PluginFault::bad_pointer("weir_state_export", ptr as i64, len as i64, mem.len())
            })?;
        Ok(PortableState {
            format_version,
            bytes,
            time: self.host_time(),
        })
    }

    /// Hands `state` to `weir_state_import` through the input buffer, and
    /// carries its event time and clock on. Call on a fresh instance, after
    /// [`init`](Self::init).
    pub fn import_state(&mut self, state: &PortableState) -> Result<(), BatchError> {
        let Some(import) = self.state_import.clone() else {
            return Err(contract_fault("the module does not export weir_state_import").into());
        };
        let ptr = self.guest_buffer(state.bytes.len())?;
        let len = state.bytes.len();
        self.memory.data_mut(&mut self.store)[ptr..ptr + len].copy_from_slice(&state.bytes);
        self.store.data_mut().last_error = None;
        arm(&mut self.store);
        let args = (ptr as i32, len as i32, state.format_version as i32);
        let status = match import.call(&mut self.store, args) {
            Ok(status) => status,
            Err(e) => return Err(self.call_error(e)),
        };
        self.check_status(status)?;
        self.event_time = state.time.event_time;
        self.store.data().clock.continue_from(state.time.clock_ns);
        Ok(())
    }
}
