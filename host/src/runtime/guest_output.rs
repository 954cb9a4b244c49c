//! WASI stdout and stderr of a plugin, re-emitted as `tracing` events.
//!
//! Each write is split into lines; every complete line becomes one event
//! under the current span, which the partition task enters around every
//! plugin call, so the line carries plugin, topic and partition.

use bytes::Bytes;
use std::pin::Pin;
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Longest line kept before it is cut and logged anyway.
const MAX_LINE: usize = 8 * 1024;

/// Which stream this is.
#[derive(Debug, Clone, Copy)]
pub enum GuestStream {
    Stdout,
    Stderr,
}

/// A WASI output stream that writes to the host's log.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    stream: GuestStream,
    /// A partial line waiting for its newline. Plain `Vec` behind a mutex:
    /// WASI may clone the stream; all clones feed one line buffer.
    pending: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl GuestOutput {
    /// A stream for stdout or stderr.
    pub fn new(stream: GuestStream) -> Self {
        GuestOutput {
            stream,
            pending: Default::default(),
        }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend_from_slice(bytes);
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            self.emit(&pending[..nl]);
            pending.drain(..=nl);
        }
        if pending.len() > MAX_LINE {
            self.emit(&pending);
            pending.clear();
        }
    }

    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        match self.stream {
            GuestStream::Stdout => {
                tracing::info!(target: "weir::plugin", stream = "stdout", "{line}")
            }
            GuestStream::Stderr => {
                tracing::warn!(target: "weir::plugin", stream = "stderr", "{line}")
            }
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.write_bytes(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
