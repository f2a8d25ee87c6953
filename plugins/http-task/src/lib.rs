//! `http-task`: the HTTP task of an orchestration product, which tells
//! another application that something happened: one request with a
//! templated body, optionally signed with a shared secret, optionally
//! retried until the partner accepts it.
//!
//! Every request carries `X-Http-Task-Guid`, the step-run id, which stays
//! the same across retries and crash re-runs, so that a partner can tell a
//! retry from a new event. Signing goes through the host, so the secret
//! never enters the sandbox.

mod template;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{Deserializer, Error as _, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stephost_guest::signing::{self, KeyRef};
use stephost_guest::{
    Context, Document, Failure, Outcome, PluginInfo, ResumeEvent, Step, http, log,
};

/// Identifies the step run; the same on every retry of it.
const GUID: &str = "X-Http-Task-Guid";
/// Unix time in seconds at signing, part of what is signed.
const TIMESTAMP: &str = "X-Http-Task-Timestamp";
/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
const SIGNATURE: &str = "X-Http-Task-Signature";

/// The product's limit on one HTTP request.
const REQUEST_TIMEOUT_MS: u32 = 30_000;

/// Methods a workflow author may choose, and those of them that carry a
/// body.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
const METHODS_WITH_BODY: &[&str] = &["POST", "PUT", "PATCH"];

/// How much of a partner's error body goes into the failure text.
const MAX_BODY_CHARS: usize = 512;

const CONFIG_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["url"],
  "additionalProperties": false,
  "properties": {
    "name": { "type": "string", "description": "User-visible name of the task, used in logs and errors; the step name when absent" },
    "url": { "type": "string", "description": "Where the request goes" },
    "method": { "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"], "default": "POST" },
    "headers": { "type": "object", "additionalProperties": { "type": "string" } },
    "body": { "type": "string", "description": "Body template (POST, PUT, PATCH only): {{workflow}}, {{execution_id}}, {{step}}, {{attempt}}, {{step_run_id}}, {{steps.<step>.<path>}}, {{input}}, {{input.<path>}}; add | json to insert JSON" },
    "secret_key": { "type": "string", "description": "Name of a daemon secret granted to http-task; signs every request" },
    "validate_tls": { "type": "boolean", "default": true },
    "retry_on_failure": {
      "description": "true for the defaults, or the policy; off when absent or false",
      "oneOf": [
        { "type": "boolean" },
        { "type": "object", "additionalProperties": false, "properties": {
          "attempts": { "type": "integer", "minimum": 1, "default": 3, "description": "Requests in all, the first included" },
          "backoff_ms": { "type": "integer", "minimum": 0, "default": 1000, "description": "Delay before the first retry" },
          "multiplier": { "type": "number", "minimum": 1, "default": 2, "description": "Each further delay is the previous one times this" }
        } }
      ]
    }
  }
}"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    name: Option<String>,
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    secret_key: Option<String>,
    #[serde(default = "yes")]
    validate_tls: bool,
    #[serde(default, deserialize_with = "retry_policy")]
    retry_on_failure: Option<RetryPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RetryPolicy {
    attempts: u32,
    backoff_ms: u64,
    multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff_ms: 1000,
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `tries`-th failed request.
    fn delay_ms(&self, tries: u32) -> u64 {
        let exponent = i32::try_from(tries.saturating_sub(1)).unwrap_or(i32::MAX);
        // A float-to-int cast saturates, so a huge product stays u64::MAX
        // (and the daemon clips it to its own maximum wait).
        (self.backoff_ms as f64 * self.multiplier.powi(exponent)) as u64
    }
}

/// `retry_on_failure` is a checkbox in the product, so `true` and `false`
/// work as well as a policy object.
fn retry_policy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RetryPolicy>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null | Value::Bool(false) => Ok(None),
        Value::Bool(true) => Ok(Some(RetryPolicy::default())),
        policy => RetryPolicy::deserialize(policy)
            .map(Some)
            .map_err(D::Error::custom),
    }
}

fn default_method() -> String {
    "POST".to_owned()
}

fn yes() -> bool {
    true
}

impl Config {
    fn load(ctx: &Context) -> Result<Self, Failure> {
        let mut config: Config = ctx.config()?;
        config.method = config.method.to_ascii_uppercase();
        config.check().map_err(|why| {
            Failure::new("invalid-config", format!("step `{}`: {why}", ctx.step()))
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if !METHODS.contains(&self.method.as_str()) {
            return Err(format!(
                "method {:?} is not one of {}",
                self.method,
                METHODS.join(", ")
            ));
        }
        if self.body.is_some() && !METHODS_WITH_BODY.contains(&self.method.as_str()) {
            return Err(format!(
                "a body is sent only with {}, not with {}",
                METHODS_WITH_BODY.join(", "),
                self.method
            ));
        }
        if let Some(name) = self.headers.keys().find(|name| {
            [GUID, TIMESTAMP, SIGNATURE]
                .iter()
                .any(|own| name.eq_ignore_ascii_case(own))
        }) {
            return Err(format!(
                "header {name} is set by the step and cannot be configured"
            ));
        }
        if let Some(policy) = &self.retry_on_failure {
            if policy.attempts == 0 {
                return Err("retry_on_failure.attempts must be at least 1".to_owned());
            }
            if !(policy.multiplier.is_finite() && policy.multiplier >= 1.0) {
                return Err("retry_on_failure.multiplier must be a number >= 1".to_owned());
            }
        }
        Ok(())
    }

    /// The task's name for people: the configured one, else the step's.
    fn display_name<'a>(&'a self, ctx: &'a Context) -> &'a str {
        self.name.as_deref().unwrap_or(ctx.step())
    }

    fn attempts(&self) -> u32 {
        self.retry_on_failure.as_ref().map_or(1, |p| p.attempts)
    }
}

/// What survives between a failed request and its retry.
#[derive(Serialize, Deserialize)]
struct RetryState {
    /// Requests made so far in this series. Counted here rather than taken
    /// from the context's attempt, which an admin retry also bumps: an
    /// admin retry starts a fresh series.
    tries: u32,
}

struct HttpTask;

impl Step for HttpTask {
    fn describe() -> PluginInfo {
        PluginInfo::new("http-task", env!("CARGO_PKG_VERSION"))
            .with_description(
                "Sends one templated, optionally signed HTTP request with X-Http-Task-Guid, retrying on non-2xx if asked.",
            )
            .with_config_schema(CONFIG_SCHEMA)
    }

    fn run(ctx: Context, input: Document) -> Outcome {
        attempt(&ctx, &input, 1).unwrap_or_else(Outcome::from)
    }

    fn resume(ctx: Context, input: Document, state: Vec<u8>, event: ResumeEvent) -> Outcome {
        let ResumeEvent::Timer = event else {
            return Outcome::fail(
                "unexpected-resume",
                format!(
                    "http-task only waits for retry timers, but was resumed by a {}",
                    event.kind()
                ),
            );
        };
        match serde_json::from_slice::<RetryState>(&state) {
            Ok(previous) => attempt(&ctx, &input, previous.tries + 1).unwrap_or_else(Outcome::from),
            Err(e) => Outcome::fail("invalid-state", format!("unreadable retry state: {e}")),
        }
    }
}

/// Makes request number `tries` of the series and decides what follows.
fn attempt(ctx: &Context, input: &Document, tries: u32) -> Result<Outcome, Failure> {
    let config = Config::load(ctx)?;
    let mut failure = match build_request(ctx, &config, input)?.send() {
        Ok(response) if response.is_success() => return Ok(Outcome::complete(output(response))),
        Ok(response) => Failure::new(
            "partner-error",
            format!(
                "partner answered HTTP {}: {}",
                response.status,
                response.text_truncated(MAX_BODY_CHARS)
            ),
        ),
        // The request itself is wrong, or the host's policy forbids it:
        // asking again cannot help.
        Err(e @ (http::HttpError::InvalidRequest(_) | http::HttpError::Denied(_))) => {
            return Err(named(&config, ctx, Failure::from(e)));
        }
        Err(e) => Failure::from(e),
    };
    let attempts = config.attempts();
    let name = config.display_name(ctx);
    match &config.retry_on_failure {
        Some(policy) if tries < attempts => {
            let delay = policy.delay_ms(tries);
            log::warn(&format!(
                "HTTP task `{name}`: attempt {tries} of {attempts} failed ({}); retrying in {delay} ms",
                failure.error_text
            ));
            let state = serde_json::to_vec(&RetryState { tries })
                .map_err(|e| Failure::new("invalid-state", e.to_string()))?;
            Ok(Outcome::retry_after(delay, state))
        }
        Some(_) => {
            failure.error_text = format!("attempt {tries} of {attempts}: {}", failure.error_text);
            Err(named(&config, ctx, failure))
        }
        None => Err(named(&config, ctx, failure)),
    }
}

/// Prefixes a failure's text with the task's name, as operators know it.
fn named(config: &Config, ctx: &Context, mut failure: Failure) -> Failure {
    failure.error_text = format!(
        "HTTP task `{}`: {}",
        config.display_name(ctx),
        failure.error_text
    );
    failure
}

fn build_request(
    ctx: &Context,
    config: &Config,
    input: &Document,
) -> Result<http::Request, Failure> {
    let body = match &config.body {
        Some(template) => render_body(ctx, template, input).map_err(|why| {
            named(
                config,
                ctx,
                Failure::new("template-error", format!("body: {why}")),
            )
        })?,
        None => String::new(),
    };
    let mut request = config
        .headers
        .iter()
        .fold(
            http::Request::new(&config.method, &config.url),
            |req, (name, value)| req.header(name, value),
        )
        .header(GUID, ctx.step_run_id())
        .timeout_ms(REQUEST_TIMEOUT_MS)
        .validate_tls(config.validate_tls);
    if let Some(secret) = &config.secret_key {
        let timestamp = unix_seconds();
        let signature = sign(secret, timestamp, body.as_bytes())
            .map_err(|why| named(config, ctx, Failure::new("signing-error", why)))?;
        request = request
            .header(TIMESTAMP, timestamp.to_string())
            .header(SIGNATURE, signature);
    }
    Ok(request.body(body))
}

fn render_body(ctx: &Context, template: &str, input: &Document) -> Result<String, String> {
    let metadata = ctx.metadata();
    let scope = template::Scope {
        metadata: &metadata,
        input: input_value(input),
    };
    template::render(template, &scope)
}

/// The input document as the template sees it: its JSON when it says it is
/// JSON, its text otherwise.
fn input_value(input: &Document) -> Option<Value> {
    if input.is_json() {
        input.json().ok()
    } else {
        input.as_text().map(|text| Value::String(text.to_owned()))
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `<timestamp>.<body>`, keyed by the
/// granted secret `secret`. The timestamp is signed with the body so that
/// a captured request cannot be replayed later with a fresh timestamp.
fn sign(secret: &str, timestamp: u64, body: &[u8]) -> Result<String, String> {
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let mac = signing::hmac_sha256(&KeyRef::secret(secret), &signed)?;
    Ok(format!("sha256={}", signing::hex(&mac)))
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The response as the next document: JSON whenever the body is JSON, even
/// if the partner typed it otherwise; as typed when it is not.
fn output(response: http::Response) -> Document {
    if !response.is_json() && serde_json::from_slice::<IgnoredAny>(&response.body).is_ok() {
        return Document::new("application/json", response.body);
    }
    response.into_document()
}

stephost_guest::export_step!(HttpTask);
