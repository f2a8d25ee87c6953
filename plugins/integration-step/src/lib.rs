//! `integration-step`: send the document to a partner service and let the
//! partner answer at once or, for longer work, later through a response URL.
//!
//! This reproduces the "Integration Step" of `seeds/integration-step.txt`:
//! a POST (or PUT) of the document as JSON with the configured
//! `Authorization` and headers plus `X-Response-URL`. A 2xx within 5 seconds
//! is success; a `202` within 5 seconds means "I will POST to the response
//! URL when done", and that POST may carry `X-Status-Code` to convey
//! another outcome than 200. Anything else is an error that fails the step,
//! leaving it to an admin to retry or skip it.

mod config;

use serde::de::IgnoredAny;
use stephost_guest::{
    Callback, Context, Document, Failure, Outcome, PluginInfo, ResumeEvent, Step, callbacks, http,
};

use crate::config::{CONFIG_SCHEMA, Config, masked};

/// The seed gives the partner 5 seconds to answer, whatever it answers.
const ANSWER_WITHIN_MS: u32 = 5_000;

/// How much of a partner's body goes into a failure text: enough to
/// diagnose, not enough to flood the status log.
const MAX_BODY_CHARS: usize = 512;

struct IntegrationStep;

impl Step for IntegrationStep {
    fn describe() -> PluginInfo {
        PluginInfo::new("integration-step", env!("CARGO_PKG_VERSION"))
            .with_description(
                "POSTs or PUTs the document as JSON with an API key and X-Response-URL; completes on a 2xx within 5 s, or on a 202 waits for a POST to the response URL.",
            )
            .with_config_schema(CONFIG_SCHEMA)
    }

    fn run(ctx: Context, input: Document) -> Outcome {
        start(&ctx, input).unwrap_or_else(Outcome::from)
    }

    fn resume(ctx: Context, input: Document, _state: Vec<u8>, event: ResumeEvent) -> Outcome {
        match event {
            ResumeEvent::Callback(callback) => settle(&ctx, input, &callback),
            ResumeEvent::Timeout => Outcome::fail(
                "callback-timeout",
                "the partner answered 202 but never POSTed to the response URL",
            ),
            ResumeEvent::Timer => Outcome::fail(
                "unexpected-timer",
                "integration-step never sets a timer, but was resumed by one",
            ),
        }
    }
}

fn start(ctx: &Context, input: Document) -> Result<Outcome, Failure> {
    let config: Config = ctx.config()?;
    config.check(ctx.step())?;
    let api_key = config.api_key()?;
    let body = json_body(&input)?;
    // Registered before the partner hears of it, so a partner that POSTs
    // to the response URL before its 202 arrives is still heard.
    let ticket = callbacks::register(false)?;
    let response = request(&config, api_key, &ticket.url, body)
        .send()
        .map_err(no_answer)?;
    match answer(response, input) {
        Answer::Later => Ok(Outcome::suspend(
            ticket.correlation_id,
            Vec::new(),
            config.timeout_ms,
        )),
        Answer::Done(output) => Ok(Outcome::complete(output)),
        Answer::Error(status, body) => Err(partner_error(
            status,
            "answered",
            &body,
            config.key_to_mask().as_deref(),
        )),
    }
}

/// The request of the seed: the method and headers, the API key verbatim
/// as `Authorization`, the response URL, the JSON body, and the 5 seconds
/// the partner has to answer.
fn request(
    config: &Config,
    api_key: Option<String>,
    response_url: &str,
    body: Document,
) -> http::Request {
    let mut request = http::Request::new(config.method.as_str(), &config.url);
    for (name, value) in &config.headers {
        request = request.header(name, value);
    }
    if let Some(key) = api_key {
        request = request.header("Authorization", key);
    }
    request
        .header("X-Response-URL", response_url)
        .document(body)
        .timeout_ms(ANSWER_WITHIN_MS)
}

/// What the partner's answer within 5 seconds decides.
#[derive(Debug, PartialEq)]
enum Answer {
    /// `202`: it will POST to the response URL when done.
    Later,
    /// Any other 2xx: done, with this output.
    Done(Document),
    /// Anything else: an error, with the partner's status and body.
    Error(u16, Vec<u8>),
}

fn answer(response: http::Response, input: Document) -> Answer {
    match response.status {
        202 => Answer::Later,
        200..=299 => Answer::Done(output_or(response.into_document(), input)),
        status => Answer::Error(status, response.body),
    }
}

/// The seed sends "the document data in the request body in JSON format".
fn json_body(input: &Document) -> Result<Document, Failure> {
    match input.json::<IgnoredAny>() {
        Ok(_) => Ok(Document::new("application/json", input.body.clone())),
        Err(e) => Err(Failure::new(
            "invalid-input",
            format!("integration-step sends its input as JSON, but it is not JSON: {e}"),
        )),
    }
}

fn no_answer(e: http::HttpError) -> Failure {
    match e {
        http::HttpError::Timeout => Failure::new(
            "timeout",
            format!("the partner did not answer within {ANSWER_WITHIN_MS} ms"),
        ),
        other => Failure::new(
            "http-error",
            format!("could not reach the partner: {}", other.message()),
        ),
    }
}

/// The POST to the response URL: its `X-Status-Code` (200 when absent)
/// decides, like the status of an immediate answer would have.
fn settle(ctx: &Context, input: Document, callback: &Callback) -> Outcome {
    let status = match status_code(callback) {
        Ok(status) => status,
        Err(reason) => return Outcome::reject_callback(reason),
    };
    if (200..300).contains(&status) {
        return Outcome::complete(output_or(callback_document(callback), input));
    }
    let config: Config = match ctx.config() {
        Ok(config) => config,
        Err(failure) => return failure.into(),
    };
    partner_error(
        status,
        "reported on the response URL",
        &callback.body,
        config.key_to_mask().as_deref(),
    )
    .into()
}

/// A malformed `X-Status-Code` is the partner's mistake in this one
/// request: refusing it (400) lets the partner send a correct one.
fn status_code(callback: &Callback) -> Result<u16, String> {
    let Some(value) = callback.header("x-status-code") else {
        return Ok(200);
    };
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|s| (100..600).contains(s))
        .ok_or_else(|| {
            format!("X-Status-Code must be an HTTP status code (100-599), got {value:?}")
        })
}

fn callback_document(callback: &Callback) -> Document {
    let content_type = match callback.header("content-type") {
        Some(content_type) => content_type,
        None if callback.json::<IgnoredAny>().is_ok() => "application/json",
        None => "application/octet-stream",
    };
    Document::new(content_type, callback.body.clone())
}

/// A partner that succeeds with an empty body (a bare 200 or 204) has
/// nothing to add: the workflow goes on with the document it sent.
fn output_or(output: Document, input: Document) -> Document {
    if output.body.iter().all(u8::is_ascii_whitespace) {
        input
    } else {
        output
    }
}

/// The failure for an error status, with the partner's body: masked
/// before it is cut, so that no part of the key survives at the cut.
fn partner_error(status: u16, how: &str, body: &[u8], key: Option<&str>) -> Failure {
    let body = masked(String::from_utf8_lossy(body).into_owned(), key);
    let body = if body.is_empty() {
        "(empty body)".to_owned()
    } else {
        http::truncate(&body, MAX_BODY_CHARS)
    };
    Failure::new(
        "partner-error",
        format!("the partner {how} HTTP {status}: {body}"),
    )
    .with_technical_status(status.to_string())
}

stephost_guest::export_step!(IntegrationStep);
