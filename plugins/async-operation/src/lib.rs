//! `async-operation`: call an asynchronous operation and wait, durably, for
//! the outputs it delivers to a callback URL.
//!
//! This is the operation-definition side of "Response handling for
//! asynchronous operations" (`seeds/async-operation-callbacks.txt`): such an
//! operation does not answer with its outputs but with `202 Accepted`, and
//! later posts the outputs to a callback URL that the caller passed along
//! with the request, wherever the operation's OpenAPI definition says the
//! callback URL parameter goes. The callback URL embeds its own correlation
//! id, so the outputs find their way back to the right execution without
//! the operation having to echo anything.

mod request;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use stephost_guest::{
    Callback, Context, Document, Failure, Outcome, PluginInfo, ResumeEvent, Step, callbacks, http,
};

/// How much of an operation's answer goes into a failure text: enough to
/// diagnose, not enough to flood the status log.
const MAX_BODY_CHARS: usize = 512;

const CONFIG_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["url"],
  "additionalProperties": false,
  "properties": {
    "url": { "type": "string", "description": "The operation's URL" },
    "method": { "type": "string", "default": "POST", "description": "HTTP method of the operation" },
    "headers": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Extra request headers" },
    "callback": {
      "type": "object",
      "additionalProperties": false,
      "description": "Where the operation's definition takes the callback URL",
      "properties": {
        "in": { "enum": ["query", "header", "body"], "default": "query" },
        "name": { "type": "string", "default": "callbackUrl" }
      }
    },
    "timeout_ms": { "type": "integer", "minimum": 1, "description": "How long to wait for the outputs; the daemon's default when absent" }
  }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    callback: CallbackParameter,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// The callback URL parameter as an OpenAPI definition places it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackParameter {
    #[serde(rename = "in", default)]
    location: Location,
    #[serde(default = "default_callback_name")]
    name: String,
}

/// A query parameter is the default: the seed calls it the operation's
/// "callback URL parameter", and in the query it leaves the input document
/// that forms the request body untouched.
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Location {
    #[default]
    Query,
    Header,
    Body,
}

impl Default for CallbackParameter {
    fn default() -> Self {
        Self {
            location: Location::default(),
            name: default_callback_name(),
        }
    }
}

fn default_method() -> String {
    "POST".to_owned()
}

fn default_callback_name() -> String {
    "callbackUrl".to_owned()
}

impl Config {
    /// What serde cannot check: a callback parameter that would be lost or
    /// clash with a configured header.
    fn check(&self, step: &str) -> Result<(), Failure> {
        let invalid =
            |text: String| Failure::new("invalid-config", format!("step `{step}`: {text}"));
        if self.callback.name.trim().is_empty() {
            return Err(invalid("callback.name must not be empty".to_owned()));
        }
        let clashes = matches!(self.callback.location, Location::Header)
            && self
                .headers
                .keys()
                .any(|h| h.eq_ignore_ascii_case(&self.callback.name));
        if clashes {
            return Err(invalid(format!(
                "header {:?} is where the callback URL goes; remove it from headers",
                self.callback.name
            )));
        }
        Ok(())
    }
}

struct AsyncOperation;

impl Step for AsyncOperation {
    fn describe() -> PluginInfo {
        PluginInfo::new("async-operation", env!("CARGO_PKG_VERSION"))
            .with_description(
                "Calls an asynchronous operation that answers 202 Accepted and completes with the outputs it posts to the callback URL.",
            )
            .with_config_schema(CONFIG_SCHEMA)
    }

    fn run(ctx: Context, input: Document) -> Outcome {
        start(&ctx, input).unwrap_or_else(Outcome::from)
    }

    fn resume(_ctx: Context, _input: Document, _state: Vec<u8>, event: ResumeEvent) -> Outcome {
        match event {
            ResumeEvent::Callback(callback) => outputs(&callback),
            ResumeEvent::Timeout => Outcome::fail(
                "callback-timeout",
                "the operation did not deliver its outputs before the timeout",
            ),
            ResumeEvent::Timer => Outcome::fail(
                "unexpected-timer",
                "async-operation never sets a timer, but was resumed by one",
            ),
        }
    }
}

fn start(ctx: &Context, input: Document) -> Result<Outcome, Failure> {
    let config: Config = ctx.config()?;
    config.check(ctx.step())?;
    // Registered before the operation hears of it, so outputs posted before
    // the 202 even arrives still find the callback.
    let ticket = callbacks::register(false)?;
    let response = request::request(&config, input, &ticket.url)?
        .send()
        .map_err(no_answer)?;
    check_accepted(&response)?;
    stephost_guest::log::debug("the operation accepted the request; waiting for its outputs");
    Ok(Outcome::suspend(
        ticket.correlation_id,
        Vec::new(),
        config.timeout_ms,
    ))
}

/// An asynchronous operation accepts with 202 and nothing else: even a 200
/// means the outputs will never reach the callback URL.
fn check_accepted(response: &http::Response) -> Result<(), Failure> {
    if response.status == 202 {
        Ok(())
    } else {
        Err(rejected(response))
    }
}

fn rejected(response: &http::Response) -> Failure {
    let body = response.text_truncated(MAX_BODY_CHARS);
    Failure::new(
        "operation-rejected",
        format!(
            "the operation answered HTTP {} instead of 202 Accepted: {}",
            response.status,
            if body.is_empty() {
                "(empty body)"
            } else {
                &body
            }
        ),
    )
    .with_technical_status(response.status.to_string())
}

fn no_answer(e: http::HttpError) -> Failure {
    let code = match e {
        http::HttpError::Timeout => "timeout",
        _ => "http-error",
    };
    Failure::new(
        code,
        format!("calling the operation failed: {}", e.message()),
    )
}

/// The callback carries the operation's outputs and nothing else: a JSON
/// object of outputs by name (an empty body: an operation without outputs).
/// The seed defines no failure channel, so anything else is a malformed
/// callback, refused so that the operation can send a correct one.
fn outputs(callback: &Callback) -> Outcome {
    if callback.body.iter().all(u8::is_ascii_whitespace) {
        return Outcome::complete(Document::new("application/json", "{}"));
    }
    match callback.json::<BTreeMap<String, IgnoredAny>>() {
        // Passed on byte for byte: re-serializing would reorder the keys.
        Ok(_) => Outcome::complete(Document::new("application/json", callback.body.clone())),
        Err(e) => Outcome::reject_callback(format!(
            "the callback body must be the operation's outputs as a JSON object: {e}"
        )),
    }
}

stephost_guest::export_step!(AsyncOperation);

#[cfg(test)]
mod tests {
    use stephost_guest::StepContext;

    use super::*;

    fn ctx(config: &str) -> Context {
        Context::new(StepContext {
            execution_id: "ex-1".into(),
            workflow: "wf".into(),
            step: "check".into(),
            attempt: 1,
            step_run_id: "run-1".into(),
            config: config.into(),
            metadata: "{}".into(),
        })
    }

    /// The config as `start` reads and checks it, before anything is sent.
    fn load(config: &str) -> Result<Config, Failure> {
        let ctx = ctx(config);
        let config: Config = ctx.config()?;
        config.check(ctx.step())?;
        Ok(config)
    }

    fn invalid_config(config: &str) -> String {
        match load(config) {
            Ok(_) => panic!("{config} was accepted"),
            Err(f) => {
                assert_eq!(f.error_code.as_deref(), Some("invalid-config"), "{config}");
                f.error_text
            }
        }
    }

    fn response(status: u16, body: &str) -> http::Response {
        http::Response {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// `resume` makes no host calls, so it runs natively as it is.
    fn resume(event: ResumeEvent) -> Outcome {
        AsyncOperation::resume(ctx(""), Document::text("in"), Vec::new(), event)
    }

    fn callback(body: &str) -> ResumeEvent {
        ResumeEvent::Callback(Callback {
            correlation_id: "c-1".into(),
            method: "POST".into(),
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
        })
    }

    fn failure(outcome: Outcome) -> Failure {
        match outcome {
            Outcome::Fail(f) => f,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    /// The README's defaults: POST, no extra headers, query parameter
    /// `callbackUrl`, the daemon's timeout.
    #[test]
    fn defaults_are_the_documented_ones() {
        let config = load(r#"{"url": "https://op.example"}"#).unwrap();
        assert_eq!(config.method, "POST");
        assert!(config.headers.is_empty());
        assert!(matches!(config.callback.location, Location::Query));
        assert_eq!(config.callback.name, "callbackUrl");
        assert_eq!(config.timeout_ms, None);
        // A callback table that sets only one of its keys keeps the other's
        // default.
        let config = load(r#"{"url": "u", "callback": {"in": "body"}}"#).unwrap();
        assert_eq!(config.callback.name, "callbackUrl");
        let config = load(r#"{"url": "u", "callback": {"name": "cb"}}"#).unwrap();
        assert!(matches!(config.callback.location, Location::Query));
    }

    /// "Unknown keys are an error (`invalid-config`), so a misspelt
    /// `timeout_ms` never silently falls back to the default", in the
    /// callback table too; and `url` is required.
    #[test]
    fn unknown_keys_and_a_missing_url_are_invalid_config() {
        let text = invalid_config(r#"{"url": "u", "timeout": 5}"#);
        assert!(text.contains("unknown field `timeout`"), "{text}");
        let text = invalid_config(r#"{"url": "u", "callback": {"in": "query", "key": "cb"}}"#);
        assert!(text.contains("unknown field `key`"), "{text}");
        let text = invalid_config("{}");
        assert!(text.contains("missing field `url`"), "{text}");
    }

    /// `callback.in` is one of `query`, `header`, `body`, in lower case.
    #[test]
    fn callback_in_must_be_query_header_or_body() {
        for location in ["query", "header", "body"] {
            load(&format!(
                r#"{{"url": "u", "callback": {{"in": "{location}"}}}}"#
            ))
            .unwrap();
        }
        for location in ["path", "cookie", "Query", ""] {
            invalid_config(&format!(
                r#"{{"url": "u", "callback": {{"in": "{location}"}}}}"#
            ));
        }
    }

    /// A blank `callback.name` would send the URL under no name at all.
    #[test]
    fn a_blank_callback_name_is_invalid_config() {
        for name in ["", "  "] {
            let text = invalid_config(&format!(
                r#"{{"url": "u", "callback": {{"name": "{name}"}}}}"#
            ));
            assert_eq!(text, "step `check`: callback.name must not be empty");
        }
    }

    /// With `in = "header"`, the callback header "must not also appear in
    /// `headers`" (in any case); with the URL elsewhere the same header is
    /// just a header.
    #[test]
    fn the_callback_header_must_not_also_be_configured() {
        let text = invalid_config(
            r#"{"url": "u", "headers": {"x-callback": "v"},
                "callback": {"in": "header", "name": "X-Callback"}}"#,
        );
        assert_eq!(
            text,
            "step `check`: header \"X-Callback\" is where the callback URL goes; remove it from headers"
        );
        load(
            r#"{"url": "u", "headers": {"X-Callback": "v"},
                "callback": {"in": "query", "name": "X-Callback"}}"#,
        )
        .unwrap();
    }

    /// The operation must answer exactly `202 Accepted`.
    #[test]
    fn only_202_is_accepted() {
        assert!(check_accepted(&response(202, "")).is_ok());
    }

    /// Anything else, "even `200`", fails with `operation-rejected`, the
    /// text naming status and body, `technical_status` the status.
    #[test]
    fn any_other_answer_is_operation_rejected_with_technical_status() {
        for status in [200, 201, 204, 302, 400, 500] {
            let f = check_accepted(&response(status, "nope")).unwrap_err();
            assert_eq!(f.error_code.as_deref(), Some("operation-rejected"));
            assert_eq!(
                f.error_text,
                format!("the operation answered HTTP {status} instead of 202 Accepted: nope")
            );
            assert_eq!(f.technical_status, Some(status.to_string()));
        }
        let f = check_accepted(&response(200, "")).unwrap_err();
        assert!(f.error_text.ends_with(": (empty body)"), "{}", f.error_text);
        let long = "y".repeat(MAX_BODY_CHARS * 2);
        let f = check_accepted(&response(500, &long)).unwrap_err();
        assert!(
            f.error_text
                .ends_with(&format!(": {}…", &long[..MAX_BODY_CHARS])),
            "{}",
            f.error_text
        );
    }

    /// No answer: `timeout` if the request timed out, otherwise
    /// `http-error` (refused, reset, bad URL).
    #[test]
    fn no_answer_is_timeout_or_http_error() {
        let f = no_answer(http::HttpError::Timeout);
        assert_eq!(f.error_code.as_deref(), Some("timeout"));
        for e in [
            http::HttpError::Connection("refused".into()),
            http::HttpError::InvalidRequest("bad URL".into()),
        ] {
            let message = e.message();
            let f = no_answer(e);
            assert_eq!(f.error_code.as_deref(), Some("http-error"));
            assert_eq!(
                f.error_text,
                format!("calling the operation failed: {message}")
            );
        }
    }

    /// A callback with a JSON object completes the step with it "byte for
    /// byte": key order and spacing are the operation's.
    #[test]
    fn a_json_object_callback_completes_byte_for_byte() {
        let body = r#"{"z": 1,  "a": {"nested": [true]}}"#;
        assert_eq!(
            resume(callback(body)),
            Outcome::Complete(Document::new("application/json", body))
        );
    }

    /// An empty body is an operation without outputs: completed with `{}`.
    #[test]
    fn an_empty_callback_completes_with_an_empty_object() {
        for body in ["", " \r\n\t"] {
            assert_eq!(
                resume(callback(body)),
                Outcome::Complete(Document::new("application/json", "{}")),
                "{body:?}"
            );
        }
    }

    /// Anything else (array, string, not JSON) is refused, so the step
    /// keeps waiting and the operation can post correct outputs.
    #[test]
    fn a_callback_that_is_not_a_json_object_is_rejected() {
        for body in ["[1, 2]", r#""done""#, "3", "null", "not json"] {
            match resume(callback(body)) {
                Outcome::RejectCallback(reason) => assert!(
                    reason.starts_with(
                        "the callback body must be the operation's outputs as a JSON object: "
                    ),
                    "{reason}"
                ),
                other => panic!("{body}: expected a rejection, got {other:?}"),
            }
        }
    }

    /// No outputs within `timeout_ms`: `callback-timeout`; a timer, which
    /// the step never sets: `unexpected-timer`.
    #[test]
    fn timeout_and_timer_fail_with_their_codes() {
        let f = failure(resume(ResumeEvent::Timeout));
        assert_eq!(f.error_code.as_deref(), Some("callback-timeout"));
        let f = failure(resume(ResumeEvent::Timer));
        assert_eq!(f.error_code.as_deref(), Some("unexpected-timer"));
    }
}
