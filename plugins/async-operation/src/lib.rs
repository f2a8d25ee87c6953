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
