//! `http-task`: the HTTP task of an orchestration product, which tells
//! another application that something happened: one request with a
//! templated body, optionally signed with a shared secret, optionally
//! retried until the partner accepts it.
//!
//! Every request carries `X-Http-Task-Guid`, the step-run id, which stays
//! the same across retries and crash re-runs, so that a partner can tell a
//! retry from a new event. Signing goes through the host, so the secret
//! never enters the sandbox.

mod config;
mod template;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stephost_guest::signing::{self, KeyRef};
use stephost_guest::{
    Context, Document, Failure, Outcome, PluginInfo, ResumeEvent, Step, http, log,
};

use crate::config::{CONFIG_SCHEMA, Config};

/// Identifies the step run; the same on every retry of it.
const GUID: &str = "X-Http-Task-Guid";
/// Unix time in seconds at signing, part of what is signed.
const TIMESTAMP: &str = "X-Http-Task-Timestamp";
/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
const SIGNATURE: &str = "X-Http-Task-Signature";

/// The product's limit on one HTTP request.
const REQUEST_TIMEOUT_MS: u32 = 30_000;

/// How much of a partner's error body goes into the failure text.
const MAX_BODY_CHARS: usize = 512;

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
    let failure = match judge(build_request(ctx, &config, input)?.send()) {
        Sent::Done(output) => return Ok(Outcome::complete(output)),
        Sent::Final(failure) => return Err(named(&config, ctx, failure)),
        Sent::Retryable(failure) => failure,
    };
    let Some(delay) = retry_delay(&config, tries) else {
        return Err(final_failure(&config, ctx, tries, failure));
    };
    log::warn(&format!(
        "HTTP task `{}`: attempt {tries} of {} failed ({}); retrying in {delay} ms",
        config.display_name(ctx),
        config.attempts(),
        failure.error_text
    ));
    let state = serde_json::to_vec(&RetryState { tries })
        .map_err(|e| Failure::new("invalid-state", e.to_string()))?;
    Ok(Outcome::retry_after(delay, state))
}

/// What the result of one request means.
#[derive(Debug, PartialEq)]
enum Sent {
    /// A 2xx answer: the step's output.
    Done(Document),
    /// An answer outside 2xx, or none at all: asking again may help.
    Retryable(Failure),
    /// The request itself is wrong, or the host's policy forbids it:
    /// asking again cannot help.
    Final(Failure),
}

fn judge(result: Result<http::Response, http::HttpError>) -> Sent {
    match result {
        Ok(response) if response.is_success() => Sent::Done(output(response)),
        Ok(response) => Sent::Retryable(Failure::new(
            "partner-error",
            format!(
                "partner answered HTTP {}: {}",
                response.status,
                response.text_truncated(MAX_BODY_CHARS)
            ),
        )),
        Err(e @ (http::HttpError::InvalidRequest(_) | http::HttpError::Denied(_))) => {
            Sent::Final(Failure::from(e))
        }
        Err(e) => Sent::Retryable(Failure::from(e)),
    }
}

/// After request number `tries` failed: the wait before the next one, or
/// `None` when there is no retry policy or its attempts are used up.
fn retry_delay(config: &Config, tries: u32) -> Option<u64> {
    match &config.retry_on_failure {
        Some(policy) if tries < config.attempts() => Some(policy.delay_ms(tries)),
        _ => None,
    }
}

/// The failure that ends the series: named, and with a retry policy,
/// saying which attempt of how many it was.
fn final_failure(config: &Config, ctx: &Context, tries: u32, mut failure: Failure) -> Failure {
    if config.retry_on_failure.is_some() {
        failure.error_text = format!(
            "attempt {tries} of {}: {}",
            config.attempts(),
            failure.error_text
        );
    }
    named(config, ctx, failure)
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
