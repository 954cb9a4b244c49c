//! Logging to the host's log. Lines appear under the plugin's tracing span
//! (plugin, topic, partition), at the level given.

/// Sends one log line to the host at `level` (one of `crate::abi::LOG_*`).
pub fn write(level: i32, message: &str) {
    crate::rt::host_log(level, message.as_bytes());
}

/// Logs at error level: `error!("bad record at {}", offset)`.
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::write($crate::abi::LOG_ERROR, &::std::format!($($t)*)) } }
/// Logs at warn level.
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::write($crate::abi::LOG_WARN, &::std::format!($($t)*)) } }
/// Logs at info level.
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::write($crate::abi::LOG_INFO, &::std::format!($($t)*)) } }
/// Logs at debug level.
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log::write($crate::abi::LOG_DEBUG, &::std::format!($($t)*)) } }
