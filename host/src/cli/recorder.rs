//! `stephost run`'s hooks on plugins' outbound requests: every request is
//! kept for the report the command prints, and with `--dry-run` none is
//! sent. The daemon itself never carries any of this.

use std::sync::Mutex;

use crate::capabilities::{HttpHooks, RecordedRequest};

/// Keeps every request; sends them unless it is a dry run.
#[derive(Debug, Default)]
pub struct Recorder {
    dry_run: bool,
    requests: Mutex<Vec<RecordedRequest>>,
}

impl Recorder {
    /// A recorder that sends requests unless `dry_run`.
    pub fn new(dry_run: bool) -> Self {
        Self {
            dry_run,
            requests: Mutex::default(),
        }
    }

    /// The requests so far, in the order they were made.
    pub fn take(&self) -> Vec<RecordedRequest> {
        std::mem::take(&mut *self.requests.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl HttpHooks for Recorder {
    fn sends(&self) -> bool {
        !self.dry_run
    }

    fn observe(&self, _execution_id: &str, request: &RecordedRequest) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request.clone());
    }
}
