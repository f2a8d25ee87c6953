//! Short constructors for what a step decides.
//!
//! The generated [`Outcome`] variants hold records with several optional
//! fields; these constructors cover the common shapes so that step code
//! reads as the decision it makes.

use serde::Serialize;

use crate::{Document, Failure, Outcome, Retry, Suspension};

impl Outcome {
    /// Go on to the next step with `document`.
    pub fn complete(document: Document) -> Self {
        Outcome::Complete(document)
    }

    /// Go on with `value` as a JSON document; fails the step with code
    /// `invalid-output` if `value` cannot be written as JSON.
    pub fn complete_json<T: Serialize + ?Sized>(value: &T) -> Self {
        match Document::from_json(value) {
            Ok(doc) => Outcome::Complete(doc),
            Err(e) => Outcome::fail("invalid-output", format!("output is not JSON: {e}")),
        }
    }

    /// Fail the execution with an error code and text. For document or
    /// technical status, build a [`Failure`] and use [`Outcome::failure`].
    pub fn fail(code: impl Into<String>, text: impl Into<String>) -> Self {
        Outcome::Fail(Failure::new(code, text))
    }

    /// Fail the execution with a fully built [`Failure`].
    pub fn failure(failure: Failure) -> Self {
        Outcome::Fail(failure)
    }

    /// Wait for the callback registered under `correlation_id` (from
    /// [`crate::callbacks::register`]), for at most `timeout_ms` or the
    /// host's default. `state` comes back to [`crate::Step::resume`].
    pub fn suspend(
        correlation_id: impl Into<String>,
        state: impl Into<Vec<u8>>,
        timeout_ms: Option<u64>,
    ) -> Self {
        Outcome::Suspend(Suspension {
            correlation_id: correlation_id.into(),
            state: state.into(),
            timeout_ms,
        })
    }

    /// Be resumed with `timer` after `delay_ms`, with `state`; the timer
    /// survives daemon restarts.
    pub fn retry_after(delay_ms: u64, state: impl Into<Vec<u8>>) -> Self {
        Outcome::RetryAfter(Retry {
            delay_ms,
            state: state.into(),
        })
    }

    /// Only from resume with a callback: refuse this callback (its sender
    /// gets 400 and `reason`) and keep waiting for a valid one.
    pub fn reject_callback(reason: impl Into<String>) -> Self {
        Outcome::RejectCallback(reason.into())
    }
}

impl From<Failure> for Outcome {
    fn from(failure: Failure) -> Self {
        Outcome::Fail(failure)
    }
}

impl Failure {
    /// A failure with an error code and text and no statuses.
    pub fn new(code: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            error_code: Some(code.into()),
            error_text: text.into(),
            document_status: None,
            technical_status: None,
        }
    }

    /// Set the business status of the document, if the partner gave one.
    pub fn with_document_status(mut self, status: impl Into<String>) -> Self {
        self.document_status = Some(status.into());
        self
    }

    /// Set a technical status, e.g. a partner status this step does not
    /// recognise.
    pub fn with_technical_status(mut self, status: impl Into<String>) -> Self {
        self.technical_status = Some(status.into());
        self
    }
}

impl From<serde_json::Error> for Failure {
    /// A JSON error the step did not handle itself: code `invalid-json`.
    fn from(e: serde_json::Error) -> Self {
        Failure::new("invalid-json", e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn constructors() {
        assert_eq!(
            Outcome::suspend("c-1", b"st".to_vec(), Some(5)),
            Outcome::Suspend(Suspension {
                correlation_id: "c-1".into(),
                state: b"st".to_vec(),
                timeout_ms: Some(5),
            })
        );
        assert_eq!(
            Outcome::retry_after(10, Vec::new()),
            Outcome::RetryAfter(Retry {
                delay_ms: 10,
                state: vec![],
            })
        );
        assert_eq!(
            Outcome::reject_callback("no"),
            Outcome::RejectCallback("no".into())
        );
        assert_eq!(
            Outcome::complete_json(&json!([1])),
            Outcome::Complete(Document::new("application/json", "[1]"))
        );
    }

    #[test]
    fn failures() {
        let f = Failure::new("partner-error", "502")
            .with_document_status("Failed")
            .with_technical_status("Weird");
        assert_eq!(f.error_code.as_deref(), Some("partner-error"));
        assert_eq!(f.document_status.as_deref(), Some("Failed"));
        assert_eq!(f.technical_status.as_deref(), Some("Weird"));
        assert_eq!(Outcome::from(f.clone()), Outcome::failure(f));
        assert_eq!(
            Outcome::fail("a", "b"),
            Outcome::Fail(Failure::new("a", "b"))
        );
    }

    #[test]
    fn unserializable_output_fails() {
        let mut map = std::collections::HashMap::new();
        map.insert((1, 2), 3);
        match Outcome::complete_json(&map) {
            Outcome::Fail(f) => assert_eq!(f.error_code.as_deref(), Some("invalid-output")),
            other => panic!("{other:?}"),
        }
    }
}
