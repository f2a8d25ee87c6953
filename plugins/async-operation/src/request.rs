//! The operation request, and above all where the callback URL goes in
//! it: the query, a header or the JSON body, as the operation's definition
//! says. Pure, so that placement and encoding are tested natively.


use serde_json::Value;
use stephost_guest::{Document, Failure, http};

use crate::{Config, Location};

/// The operation request: the configured method and headers, the input
/// document as the body, and the callback URL where the definition wants it.
pub(crate) fn request(
    config: &Config,
    input: Document,
    callback_url: &str,
) -> Result<http::Request, Failure> {
    let name = &config.callback.name;
    let (url, body) = match config.callback.location {
        Location::Query => (with_query_parameter(&config.url, name, callback_url), input),
        Location::Header => (config.url.clone(), input),
        Location::Body => (
            config.url.clone(),
            with_body_field(&input, name, callback_url)?,
        ),
    };
    let mut request = http::Request::new(config.method.to_ascii_uppercase(), url);
    for (header, value) in &config.headers {
        request = request.header(header, value);
    }
    if matches!(config.callback.location, Location::Header) {
        request = request.header(name, callback_url);
    }
    Ok(request.document(body))
}

/// `url` with `name=value` added to its query, both percent-encoded: the
/// callback URL has a query of its own that must survive as one value.
fn with_query_parameter(url: &str, name: &str, value: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, format!("#{fragment}")),
        None => (url, String::new()),
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    format!(
        "{base}{separator}{}={}{fragment}",
        percent_encode(name),
        percent_encode(value)
    )
}

/// Everything but RFC 3986's unreserved characters (letters, digits and
/// `-._~`) is encoded.
const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn percent_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, RESERVED).to_string()
}

/// The input document, a JSON object, with the callback URL set under
/// `name` (replacing any stale value there).
fn with_body_field(input: &Document, name: &str, callback_url: &str) -> Result<Document, Failure> {
    let not_an_object = |why: String| {
        Failure::new(
            "invalid-input",
            format!(
                "the callback URL goes in body field {name:?}, so the input must be a JSON object: {why}"
            ),
        )
    };
    let mut value: Value = input.json().map_err(|e| not_an_object(e.to_string()))?;
    let Some(object) = value.as_object_mut() else {
        return Err(not_an_object(format!("got {}", kind(&value))));
    };
    object.insert(name.to_owned(), Value::String(callback_url.to_owned()));
    Ok(Document::from_value(&value))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CALLBACK_URL: &str = "https://host.example/v1/callbacks/c-1?secret=a b&x=1";
    /// `CALLBACK_URL` percent-encoded: its `?`, `&` and `=` must not merge
    /// into the operation's own query.
    const ENCODED: &str =
        "https%3A%2F%2Fhost.example%2Fv1%2Fcallbacks%2Fc-1%3Fsecret%3Da%20b%26x%3D1";

    fn config(value: Value) -> Config {
        serde_json::from_value(value).unwrap()
    }

    fn sent(config: &Config, input: Document) -> http::Request {
        request(config, input, CALLBACK_URL).unwrap()
    }

    /// The default: the callback URL, percent-encoded, as query parameter
    /// `callbackUrl`; the body is the input unchanged, with its type.
    #[test]
    fn by_default_the_callback_url_is_the_query_parameter_callback_url() {
        let input = Document::new("application/xml", "<check/>");
        let raw = sent(&config(json!({"url": "https://op.example/checks"})), input).into_raw();
        assert_eq!(
            raw.url,
            format!("https://op.example/checks?callbackUrl={ENCODED}")
        );
        assert_eq!(raw.method, "POST");
        assert_eq!(raw.body, b"<check/>");
        assert_eq!(
            raw.headers,
            vec![("Content-Type".into(), "application/xml".into())]
        );
    }

    /// "A query it already has is kept": the parameter is appended with `&`,
    /// and a fragment stays at the end where it belongs.
    #[test]
    fn an_existing_query_and_fragment_are_kept() {
        let cases = [
            (
                "https://op.example/c?v=2",
                format!("https://op.example/c?v=2&cb={ENCODED}"),
            ),
            (
                "https://op.example/c#part",
                format!("https://op.example/c?cb={ENCODED}#part"),
            ),
            (
                "https://op.example/c?v=2#p?q",
                format!("https://op.example/c?v=2&cb={ENCODED}#p?q"),
            ),
        ];
        for (url, expected) in cases {
            let config = config(json!({"url": url, "callback": {"name": "cb"}}));
            assert_eq!(sent(&config, Document::text("x")).raw().url, expected);
        }
    }

    /// RFC 3986: only unreserved characters stay as they are; every other
    /// byte, UTF-8 ones included, becomes `%XX` in upper case. The
    /// parameter name is encoded too.
    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(percent_encode("a b/?#&=+%"), "a%20b%2F%3F%23%26%3D%2B%25");
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(
            with_query_parameter("https://op.example", "call back", "v"),
            "https://op.example?call%20back=v"
        );
    }

    /// `in = "header"`: the callback URL goes, as it is, in the header
    /// named by `callback.name`, after the configured headers; URL and
    /// body are left alone.
    #[test]
    fn in_header_the_callback_url_is_sent_in_the_named_header() {
        let config = config(json!({
            "url": "https://op.example/c?v=2",
            "headers": {"X-Client": "stephost"},
            "callback": {"in": "header", "name": "X-Callback"},
        }));
        let raw = sent(&config, Document::text("hello")).into_raw();
        assert_eq!(raw.url, "https://op.example/c?v=2");
        assert_eq!(raw.body, b"hello");
        assert_eq!(
            raw.headers,
            vec![
                ("X-Client".into(), "stephost".into()),
                ("X-Callback".into(), CALLBACK_URL.into()),
                ("Content-Type".into(), "text/plain; charset=utf-8".into()),
            ]
        );
    }

    /// `in = "body"`: the callback URL is set as top-level field
    /// `callback.name` of the input object, replacing a stale value, and
    /// the rest of the object is kept.
    #[test]
    fn in_body_the_callback_url_is_a_top_level_field_of_the_input() {
        let config = config(json!({
            "url": "https://op.example/c",
            "callback": {"in": "body", "name": "replyTo"},
        }));
        let input = Document::from_value(&json!({"replyTo": "stale", "amount": 3}));
        let raw = sent(&config, input).into_raw();
        assert_eq!(raw.url, "https://op.example/c", "the query is left alone");
        let body: Value = serde_json::from_slice(&raw.body).unwrap();
        assert_eq!(body, json!({"replyTo": CALLBACK_URL, "amount": 3}));
        assert_eq!(
            http::header(&raw.headers, "content-type"),
            Some("application/json")
        );
    }

    /// `in = "body"` with an input that is not a JSON object fails with
    /// `invalid-input`, saying which field and what the input was.
    #[test]
    fn in_body_an_input_that_is_not_an_object_is_invalid_input() {
        let config = config(json!({"url": "https://op.example", "callback": {"in": "body"}}));
        let cases = [
            (Document::from_value(&json!([1])), "got an array"),
            (Document::from_value(&json!("s")), "got a string"),
            (Document::from_value(&json!(null)), "got null"),
            (Document::text("not json"), "expected ident"),
        ];
        for (input, why) in cases {
            let f = request(&config, input, CALLBACK_URL).unwrap_err();
            assert_eq!(f.error_code.as_deref(), Some("invalid-input"));
            assert!(
                f.error_text.starts_with(
                    "the callback URL goes in body field \"callbackUrl\", so the input must be a JSON object: "
                ),
                "{}",
                f.error_text
            );
            assert!(f.error_text.contains(why), "{why}: {}", f.error_text);
        }
    }

    /// The method may be configured in any case; it is sent upper case,
    /// with the configured headers.
    #[test]
    fn the_method_is_sent_upper_case_with_the_configured_headers() {
        let config = config(json!({
            "url": "https://op.example",
            "method": "put",
            "headers": {"X-Api-Key": "k", "Content-Type": "application/vnd.op+json"},
        }));
        let raw = sent(&config, Document::from_value(&json!({}))).into_raw();
        assert_eq!(raw.method, "PUT");
        assert_eq!(http::header(&raw.headers, "x-api-key"), Some("k"));
        assert_eq!(
            http::header(&raw.headers, "content-type"),
            Some("application/vnd.op+json"),
            "a configured content type wins over the document's"
        );
    }
}
