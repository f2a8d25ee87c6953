//! Outbound HTTP, the plugin's only way to reach the network.
//!
//! The host import takes one complete request record; this builder fills
//! it field by field with the defaults a step usually wants (TLS checked,
//! JSON content type when sending JSON), and the response gets the lookups
//! every partner integration needs.

use serde::{Serialize, de::DeserializeOwned};

use crate::bindings::stephost::plugin::http as wit;
use crate::document::{JSON, is_json_type};
use crate::{Document, Failure};

pub use wit::{HttpError, Response};

/// An outbound request under construction; [`Request::send`] sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a request does nothing until it is sent"]
pub struct Request {
    raw: wit::Request,
}

impl Request {
    /// A request with any method. TLS certificates are checked and there is
    /// no timeout of its own (the host still clips it to the call's time).
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            raw: wit::Request {
                method: method.into(),
                url: url.into(),
                headers: Vec::new(),
                body: Vec::new(),
                timeout_ms: None,
                validate_tls: true,
            },
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new("PUT", url)
    }

    /// A `PATCH` request.
    pub fn patch(url: impl Into<String>) -> Self {
        Self::new("PATCH", url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new("DELETE", url)
    }

    /// Add a header; a name may repeat.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.raw.headers.push((name.into(), value.into()));
        self
    }

    /// Send `value` as JSON, with `Content-Type: application/json` unless a
    /// content type is already set. Fails with
    /// [`HttpError::InvalidRequest`] if `value` cannot be written as JSON.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, HttpError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| HttpError::InvalidRequest(format!("body is not JSON: {e}")))?;
        Ok(self.default_content_type(JSON).body(body))
    }

    /// Send `document`'s body, with its content type unless a content type
    /// is already set.
    pub fn document(self, document: Document) -> Self {
        let Document { content_type, body } = document;
        let with_type = if content_type.is_empty() {
            self
        } else {
            self.default_content_type(&content_type)
        };
        with_type.body(body)
    }

    /// Set the raw body; an empty body sends none.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.raw.body = body.into();
        self
    }

    /// Give up after `ms` milliseconds (the host may clip it further).
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.raw.timeout_ms = Some(ms);
        self
    }

    /// Check the server's TLS certificate (the default); turn off only
    /// for partners with self-signed certificates.
    pub fn validate_tls(mut self, validate: bool) -> Self {
        self.raw.validate_tls = validate;
        self
    }

    /// Send the request and wait for the complete response, whatever its
    /// status.
    pub fn send(self) -> Result<Response, HttpError> {
        wit::send(&self.raw)
    }

    /// The request record as it would be sent.
    pub fn raw(&self) -> &wit::Request {
        &self.raw
    }

    /// Unwrap into the request record, e.g. to send it with [`send_raw`].
    pub fn into_raw(self) -> wit::Request {
        self.raw
    }

    fn default_content_type(self, content_type: &str) -> Self {
        if header(&self.raw.headers, "content-type").is_some() {
            self
        } else {
            self.header("Content-Type", content_type)
        }
    }
}

/// Send a request record built by hand.
pub fn send_raw(request: &wit::Request) -> Result<Response, HttpError> {
    wit::send(request)
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Whether the response's content type says JSON.
    pub fn is_json(&self) -> bool {
        self.header("content-type").is_some_and(is_json_type)
    }

    /// The body parsed as JSON into `T`, whatever the content type says.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as text for a message: invalid UTF-8 replaced, cut to at
    /// most `max_chars` characters with `…` appended when cut.
    pub fn text_truncated(&self, max_chars: usize) -> String {
        truncate(&String::from_utf8_lossy(&self.body), max_chars)
    }

    /// The response as a document: its body with its content type
    /// (`application/octet-stream` if it gave none).
    pub fn into_document(self) -> Document {
        let content_type = self
            .header("content-type")
            .unwrap_or("application/octet-stream")
            .to_owned();
        Document::new(content_type, self.body)
    }
}

impl HttpError {
    /// A short machine-readable name of the kind of error, e.g. `timeout`.
    pub fn kind(&self) -> &'static str {
        match self {
            HttpError::InvalidRequest(_) => "invalid-request",
            HttpError::Denied(_) => "denied",
            HttpError::Timeout => "timeout",
            HttpError::Connection(_) => "connection",
            HttpError::BodyTooLarge(_) => "body-too-large",
        }
    }

    /// A human-readable explanation. (The generated `Display` prints the
    /// Rust debug form, which is not meant for people.)
    pub fn message(&self) -> String {
        match self {
            HttpError::InvalidRequest(why) => format!("invalid request: {why}"),
            HttpError::Denied(why) => format!("denied by host policy: {why}"),
            HttpError::Timeout => "no complete response within the timeout".to_owned(),
            HttpError::Connection(why) => format!("connection failed: {why}"),
            HttpError::BodyTooLarge(limit) => {
                format!("response body exceeds the host's limit of {limit} bytes")
            }
        }
    }
}

impl From<HttpError> for Failure {
    /// An HTTP error the step did not handle itself. The host's refusals
    /// keep their own codes, so an operator sees `egress-denied` or
    /// `body-too-large` rather than a generic `http-error`; the Python and
    /// JavaScript SDKs report the same codes (`docs/errors.md`).
    fn from(e: HttpError) -> Self {
        let text = e.message();
        match e {
            HttpError::Denied(_) => Failure::new("egress-denied", text),
            HttpError::BodyTooLarge(_) => Failure::new("body-too-large", text),
            HttpError::InvalidRequest(_) | HttpError::Timeout | HttpError::Connection(_) => {
                Failure::new("http-error", text)
            }
        }
    }
}

/// The first value of header `name` in `headers`, compared
/// case-insensitively, since partners and proxies do not agree on case.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `text` cut to at most `max_chars` characters, with `…` appended when
/// cut, so that a partner's body fits in an error text.
pub fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn builder_defaults_and_json() {
        let req = Request::post("http://p/x")
            .header("X-A", "1")
            .json(&json!({"k": 1}))
            .unwrap()
            .timeout_ms(500)
            .into_raw();
        assert_eq!(req.method, "POST");
        assert_eq!(req.url, "http://p/x");
        assert!(req.validate_tls);
        assert_eq!(req.timeout_ms, Some(500));
        assert_eq!(req.body, br#"{"k":1}"#);
        assert_eq!(
            req.headers,
            vec![
                ("X-A".into(), "1".into()),
                ("Content-Type".into(), "application/json".into())
            ]
        );
    }

    #[test]
    fn explicit_content_type_wins() {
        let req = Request::put("http://p")
            .header("content-type", "application/vnd.x+json")
            .json(&1)
            .unwrap()
            .validate_tls(false)
            .into_raw();
        assert_eq!(req.headers.len(), 1);
        assert!(!req.validate_tls);
    }

    #[test]
    fn document_body_carries_its_type() {
        let req = Request::post("http://p")
            .document(Document::text("hi"))
            .into_raw();
        assert_eq!(
            header(&req.headers, "Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(req.body, b"hi");
        let untyped = Request::post("http://p")
            .document(Document::new("", "x"))
            .into_raw();
        assert!(untyped.headers.is_empty());
    }

    #[test]
    fn unserializable_json_is_invalid_request() {
        let mut map = std::collections::HashMap::new();
        map.insert((1, 2), 3);
        let err = Request::post("http://p").json(&map).unwrap_err();
        assert_eq!(err.kind(), "invalid-request");
    }

    #[test]
    fn response_helpers() {
        let resp = Response {
            status: 202,
            headers: vec![("content-type".into(), "application/json".into())],
            body: br#"{"ok":true}"#.to_vec(),
        };
        assert!(resp.is_success());
        assert!(resp.is_json());
        assert_eq!(resp.header("Content-Type"), Some("application/json"));
        assert_eq!(resp.header("x-missing"), None);
        assert_eq!(resp.json::<serde_json::Value>().unwrap()["ok"], true);
        assert_eq!(resp.text_truncated(4), "{\"ok…");
        let doc = resp.into_document();
        assert_eq!(doc.content_type, "application/json");
        for status in [199, 300, 404, 500] {
            let r = Response {
                status,
                headers: vec![],
                body: vec![],
            };
            assert!(!r.is_success(), "{status}");
        }
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(HttpError::Timeout.kind(), "timeout");
        let f = Failure::from(HttpError::Connection("refused".into()));
        assert_eq!(f.error_code.as_deref(), Some("http-error"));
        assert_eq!(f.error_text, "connection failed: refused");
        let code = |e| Failure::from(e).error_code.unwrap();
        assert_eq!(code(HttpError::Denied("internal".into())), "egress-denied");
        assert_eq!(code(HttpError::BodyTooLarge(10)), "body-too-large");
        assert_eq!(code(HttpError::Timeout), "http-error");
        assert_eq!(code(HttpError::InvalidRequest("url".into())), "http-error");
        assert!(HttpError::BodyTooLarge(10).message().contains("10 bytes"));
    }
}
