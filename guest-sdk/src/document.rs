//! Building and reading [`Document`]s.
//!
//! A document is bytes plus a content type, so that steps can pass on
//! anything; most steps speak JSON, which is what these helpers make short.

use serde::{Serialize, de::DeserializeOwned};

use crate::Document;

/// The content type of JSON documents this crate builds.
pub(crate) const JSON: &str = "application/json";

/// The content type of text documents this crate builds.
pub(crate) const TEXT: &str = "text/plain; charset=utf-8";

impl Document {
    /// A document with any content type.
    pub fn new(content_type: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            content_type: content_type.into(),
            body: body.into(),
        }
    }

    /// A JSON document (`application/json`) holding `value`.
    ///
    /// Serializing fails only for values JSON cannot represent, such as a
    /// map with non-string keys.
    pub fn from_json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::new(JSON, serde_json::to_vec(value)?))
    }

    /// A JSON document holding an already built JSON value; unlike
    /// [`Document::from_json`] this cannot fail.
    pub fn from_value(value: &serde_json::Value) -> Self {
        // A `Value` always has string keys, so it always serializes.
        Self::new(JSON, value.to_string())
    }

    /// A UTF-8 text document (`text/plain; charset=utf-8`).
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(TEXT, text.into())
    }

    /// The content type without parameters, lower case: `application/json`
    /// for `Application/JSON; charset=utf-8`.
    pub fn media_type(&self) -> String {
        media_type(&self.content_type)
    }

    /// Whether the content type says JSON: `application/json` or any
    /// `+json` type such as `application/problem+json`.
    pub fn is_json(&self) -> bool {
        is_json_type(&self.content_type)
    }

    /// The body parsed as JSON into `T`, whatever the content type says.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The body as text, if it is valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
}

impl From<serde_json::Value> for Document {
    fn from(value: serde_json::Value) -> Self {
        Self::from_value(&value)
    }
}

pub(crate) fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

pub(crate) fn is_json_type(content_type: &str) -> bool {
    let media = media_type(content_type);
    media == JSON || (media.starts_with("application/") && media.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn json_round_trip() {
        let doc = Document::from_json(&json!({"a": [1, 2]})).unwrap();
        assert_eq!(doc.content_type, "application/json");
        assert!(doc.is_json());
        assert_eq!(doc.json::<Value>().unwrap(), json!({"a": [1, 2]}));
        assert_eq!(Document::from(json!(null)).body, b"null");
    }

    #[test]
    fn unserializable_json_is_an_error() {
        let mut map = std::collections::HashMap::new();
        map.insert((1, 2), 3);
        assert!(Document::from_json(&map).is_err());
    }

    #[test]
    fn text_documents() {
        let doc = Document::text("héllo");
        assert!(!doc.is_json());
        assert_eq!(doc.media_type(), "text/plain");
        assert_eq!(doc.as_text(), Some("héllo"));
        assert_eq!(
            Document::new("application/octet-stream", vec![0xff]).as_text(),
            None
        );
    }

    #[test]
    fn json_content_types() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
        ] {
            assert!(is_json_type(yes), "{yes}");
        }
        for no in ["", "text/json-ish", "text/plain", "application/jsonl"] {
            assert!(!is_json_type(no), "{no}");
        }
    }
}
