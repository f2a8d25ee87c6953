//! Callbacks: how a partner gets back to a suspended step.
//!
//! Register first, hand the ticket's URL to the partner, then return
//! [`crate::Outcome::suspend`] with the ticket's correlation id; the host
//! keeps a callback that arrives in between and delivers it on suspend.

use serde::de::DeserializeOwned;

use crate::bindings::stephost::plugin::callbacks as wit;
use crate::{Callback, Failure};

pub use wit::Ticket;

/// Register a callback for this step. With `require_token`, the caller
/// needs an API token with permission `callbacks:send` in addition to the
/// secret embedded in the ticket's URL. A refusal comes back as the
/// `callback-error` failure a step reports as it is.
pub fn register(require_token: bool) -> Result<Ticket, Failure> {
    wit::register(wit::CallbackOptions { require_token }).map_err(|e| {
        Failure::new(
            "callback-error",
            format!("could not register a callback: {e}"),
        )
    })
}

impl Callback {
    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::header(&self.headers, name)
    }

    /// The body parsed as JSON into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as text, if it is valid UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_helpers() {
        let cb = Callback {
            correlation_id: "c".into(),
            method: "POST".into(),
            headers: vec![
                ("x-link-status".into(), "Ok".into()),
                ("X-Link-Status".into(), "Failed".into()),
            ],
            body: br#"{"n":1}"#.to_vec(),
        };
        assert_eq!(cb.header("X-Link-Status"), Some("Ok"));
        assert_eq!(cb.header("x-other"), None);
        assert_eq!(cb.json::<serde_json::Value>().unwrap()["n"], 1);
        assert_eq!(cb.text(), Some(r#"{"n":1}"#));
    }
}
