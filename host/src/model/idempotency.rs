//! The record of a start made with an `Idempotency-Key`: a client that
//! retries `POST /v1/executions` after a timeout gets the execution its
//! first request made, never a second one. Written in the start's own
//! change (so the key and the execution exist together or not at all) and
//! removed with the execution.

use serde::{Deserialize, Serialize};

/// One idempotent start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotentStart {
    /// The client's key, scoped by the token that sent it
    /// ([`IdempotentStart::scoped`]): two clients may pick the same key.
    pub key: String,
    /// The execution the first request started.
    pub execution_id: String,
    /// SHA-256 of the first request's body, hex: the same key with another
    /// body is refused, not answered with an execution it did not ask for.
    pub request_sha256: String,
    /// The first answer's status (201, or 202 with a result callback).
    pub status: u16,
    /// The first answer's state.
    pub state: String,
    /// When the first request was taken.
    pub created_ms: u64,
}

impl IdempotentStart {
    /// The stored key of a client's `key` sent with the token `token_id`
    /// (`-` where the API takes requests without tokens).
    pub fn scoped(token_id: Option<&str>, key: &str) -> String {
        format!("{}/{key}", token_id.unwrap_or("-"))
    }
}

/// What a start made with an `Idempotency-Key` brings to its record; the
/// rest comes from the execution it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartKey {
    /// The client's key, scoped by its token ([`IdempotentStart::scoped`]).
    pub key: String,
    /// SHA-256 of the request body, hex.
    pub request_sha256: String,
    /// The status the first answer has.
    pub status: u16,
}
