//! A plugin's stderr. WASI would otherwise drop it, and it must never reach
//! the daemon's own stderr unmasked; yet when a step traps, what the plugin
//! printed last (a Rust panic message, the end of a Python traceback) is
//! what its author needs. So the host keeps a short tail of it in memory
//! and the trap's failure text ends with it, masked like every other text
//! a plugin produces.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Bytes of stderr kept: the end of a panic or traceback, not a log.
const KEEP: usize = 4 * 1024;

/// Longest text [`StderrTail::last_words`] returns.
const MAX_WORDS: usize = 1000;

/// The last [`KEEP`] bytes a plugin wrote to stderr during one call.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<u8>>>);

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut tail = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        tail.extend(bytes);
        let excess = tail.len().saturating_sub(KEEP);
        tail.drain(..excess);
    }

    /// The end of what was written, its non-empty lines joined with ` | `,
    /// at most [`MAX_WORDS`] bytes (cut at the front); `None` if nothing.
    pub fn last_words(&self) -> Option<String> {
        let bytes: Vec<u8> = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        let text = String::from_utf8_lossy(&bytes);
        let joined = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" | ");
        if joined.is_empty() {
            return None;
        }
        let mut start = joined.len().saturating_sub(MAX_WORDS);
        while !joined.is_char_boundary(start) {
            start += 1;
        }
        Some(joined[start..].to_owned())
    }
}

impl AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    // A stream of our own rather than the default adapter around
    // `async_stream`: that adapter logs every write's bytes at debug
    // level, which would put unmasked secrets into the daemon's log.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always room: old bytes make way for new ones.
        Ok(KEEP)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tail_is_kept_and_lines_are_joined() {
        let tail = StderrTail::default();
        assert_eq!(tail.last_words(), None);
        tail.push(b"\n\n");
        assert_eq!(tail.last_words(), None);
        tail.push(b"thread panicked at src/lib.rs:1:1:\nboom\n\nnote: run with RUST_BACKTRACE=1\n");
        assert_eq!(
            tail.last_words().unwrap(),
            "thread panicked at src/lib.rs:1:1: | boom | note: run with RUST_BACKTRACE=1"
        );
        tail.push(&vec![b'x'; 10 * KEEP]);
        tail.push("é\nlast".as_bytes());
        let words = tail.last_words().unwrap();
        assert!(words.len() <= MAX_WORDS, "{}", words.len());
        assert!(words.ends_with("x | é | last") || words.ends_with("é | last"));
        assert!(!words.contains("boom"));
    }
}
