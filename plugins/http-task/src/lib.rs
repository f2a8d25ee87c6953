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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use stephost_guest::StepContext;

    use super::*;

    fn ctx(config: &str) -> Context {
        Context::new(StepContext {
            execution_id: "ex-1".into(),
            workflow: "orders".into(),
            step: "notify".into(),
            attempt: 2,
            step_run_id: "run-1".into(),
            config: config.into(),
            metadata: r#"{"workflow": "orders", "attempt": 2, "steps": {"approve": {"ok": true}}}"#
                .into(),
        })
    }

    fn config(text: &str) -> Config {
        Config::load(&ctx(text)).unwrap()
    }

    fn response(status: u16, content_type: Option<&str>, body: &str) -> http::Response {
        http::Response {
            status,
            headers: content_type
                .map(|t| vec![("Content-Type".to_owned(), t.to_owned())])
                .unwrap_or_default(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn code(failure: &Failure) -> &str {
        failure.error_code.as_deref().unwrap_or_default()
    }

    /// Every request carries `X-Http-Task-Guid`, the step-run id, after
    /// the configured headers; at most 30 s; TLS as configured. Without a
    /// `body`, no body at all. (No `secret_key`: signing is a host call.)
    #[test]
    fn every_request_carries_the_guid_and_the_30_s_limit() {
        let config = config(
            r#"{"url": "https://erp.example/hook", "method": "delete",
                "headers": {"Authorization": "Bearer t"}, "validate_tls": false}"#,
        );
        let raw = build_request(&ctx(""), &config, &Document::text("in"))
            .unwrap()
            .into_raw();
        assert_eq!(raw.method, "DELETE");
        assert_eq!(raw.url, "https://erp.example/hook");
        assert_eq!(
            raw.headers,
            vec![
                ("Authorization".into(), "Bearer t".into()),
                ("X-Http-Task-Guid".into(), "run-1".into()),
            ]
        );
        assert_eq!(raw.timeout_ms, Some(30_000));
        assert!(!raw.validate_tls);
        assert!(raw.body.is_empty());
    }

    /// The body is the rendered template, and no content type is added
    /// for it ("none is added for you").
    #[test]
    fn the_body_is_the_rendered_template() {
        let config = config(
            r#"{"url": "u", "body": "{\"wf\": \"{{workflow}}\", \"try\": {{attempt}}, \"ok\": {{steps.approve.ok}}, \"c\": {{input.customer | json}}}"}"#,
        );
        let input = Document::from_value(&json!({"customer": "Ada \"A\""}));
        let raw = build_request(&ctx(""), &config, &input).unwrap().into_raw();
        assert_eq!(
            String::from_utf8(raw.body).unwrap(),
            r#"{"wf": "orders", "try": 2, "ok": true, "c": "Ada \"A\""}"#
        );
        assert_eq!(http::header(&raw.headers, "content-type"), None);
    }

    /// A placeholder that leads nowhere is `template-error`, named after
    /// the task.
    #[test]
    fn a_bad_placeholder_is_a_named_template_error() {
        let config = config(r#"{"url": "u", "name": "Notify ERP", "body": "{{steps.nope}}"}"#);
        let f = build_request(&ctx(""), &config, &Document::text("in")).unwrap_err();
        assert_eq!(code(&f), "template-error");
        assert!(
            f.error_text.starts_with("HTTP task `Notify ERP`: body: "),
            "{}",
            f.error_text
        );
    }

    /// The template sees a JSON input as JSON and any other text input as a
    /// string; binary input is not there for it at all.
    #[test]
    fn the_template_sees_json_input_as_json_and_text_as_a_string() {
        assert_eq!(
            input_value(&Document::from_value(&json!({"a": 1}))),
            Some(json!({"a": 1}))
        );
        assert_eq!(
            input_value(&Document::text(r#"{"a": 1}"#)),
            Some(json!(r#"{"a": 1}"#))
        );
        assert_eq!(
            input_value(&Document::new("application/octet-stream", vec![0xff])),
            None
        );
    }

    /// A 2xx answer's body is the output: JSON whenever it parses as JSON,
    /// whatever the partner called it; otherwise as the partner typed it.
    #[test]
    fn a_2xx_body_is_the_output_as_json_when_it_is_json() {
        assert_eq!(
            judge(Ok(response(200, Some("text/plain"), r#"{"id": 7}"#))),
            Sent::Done(Document::new("application/json", r#"{"id": 7}"#))
        );
        assert_eq!(
            judge(Ok(response(201, Some("application/problem+json"), "{}"))),
            Sent::Done(Document::new("application/problem+json", "{}"))
        );
        assert_eq!(
            judge(Ok(response(202, Some("text/csv"), "a,b"))),
            Sent::Done(Document::new("text/csv", "a,b"))
        );
        assert_eq!(
            judge(Ok(response(204, None, ""))),
            Sent::Done(Document::new("application/octet-stream", ""))
        );
    }

    /// An answer outside 200–299 is `partner-error` naming the status and
    /// the start of the body, and may be retried.
    #[test]
    fn an_answer_outside_2xx_is_a_retryable_partner_error() {
        for status in [199, 301, 404, 500] {
            let Sent::Retryable(f) = judge(Ok(response(status, None, "nope"))) else {
                panic!("{status} is not retryable");
            };
            assert_eq!(code(&f), "partner-error");
            assert_eq!(
                f.error_text,
                format!("partner answered HTTP {status}: nope")
            );
        }
    }

    /// No answer (refused, 30 s timeout) is `http-error` and retried; a
    /// request the daemon refuses outright (bad URL, denied host) is never
    /// retried, and a denied one keeps `egress-denied`.
    #[test]
    fn only_refusals_by_the_daemon_are_never_retried() {
        for e in [
            http::HttpError::Timeout,
            http::HttpError::Connection("refused".into()),
        ] {
            let Sent::Retryable(f) = judge(Err(e)) else {
                panic!("no answer must be retryable");
            };
            assert_eq!(code(&f), "http-error");
        }
        let Sent::Final(f) = judge(Err(http::HttpError::Denied("internal".into()))) else {
            panic!("a denied request must not be retried");
        };
        assert_eq!(code(&f), "egress-denied");
        let Sent::Final(f) = judge(Err(http::HttpError::InvalidRequest("bad URL".into()))) else {
            panic!("an invalid request must not be retried");
        };
        assert_eq!(code(&f), "http-error");
    }

    /// Without `retry_on_failure` the step fails at once; with it, the
    /// request is repeated until the attempts run out, after growing
    /// delays.
    #[test]
    fn retries_follow_the_policy_until_the_attempts_run_out() {
        assert_eq!(retry_delay(&config(r#"{"url": "u"}"#), 1), None);
        let policy =
            config(r#"{"url": "u", "retry_on_failure": {"attempts": 3, "backoff_ms": 100}}"#);
        assert_eq!(retry_delay(&policy, 1), Some(100));
        assert_eq!(retry_delay(&policy, 2), Some(200));
        assert_eq!(retry_delay(&policy, 3), None, "3 requests in all");
        let once = config(r#"{"url": "u", "retry_on_failure": {"attempts": 1}}"#);
        assert_eq!(retry_delay(&once, 1), None, "the first request counts");
    }

    /// The final failure names the task and, with retries, says
    /// `attempt N of M`; its code is the last answer's.
    #[test]
    fn the_final_failure_names_the_task_and_the_attempt() {
        let last = || Failure::new("partner-error", "partner answered HTTP 503: busy");
        let f = final_failure(&config(r#"{"url": "u"}"#), &ctx(""), 1, last());
        assert_eq!(code(&f), "partner-error");
        assert_eq!(
            f.error_text,
            "HTTP task `notify`: partner answered HTTP 503: busy"
        );
        let policy = config(r#"{"url": "u", "name": "Notify ERP", "retry_on_failure": true}"#);
        let f = final_failure(&policy, &ctx(""), 3, last());
        assert_eq!(
            f.error_text,
            "HTTP task `Notify ERP`: attempt 3 of 3: partner answered HTTP 503: busy"
        );
    }

    /// http-task only waits for retry timers: anything else is
    /// `unexpected-resume`, and retry state it cannot read is
    /// `invalid-state` (both decided before any request).
    #[test]
    fn resume_needs_a_timer_and_readable_state() {
        let resume = |state: &[u8], event| {
            HttpTask::resume(
                ctx(r#"{"url": "u"}"#),
                Document::text("in"),
                state.to_vec(),
                event,
            )
        };
        let Outcome::Fail(f) = resume(br#"{"tries": 1}"#, ResumeEvent::Timeout) else {
            panic!("a timeout must fail the step");
        };
        assert_eq!(code(&f), "unexpected-resume");
        assert_eq!(
            f.error_text,
            "http-task only waits for retry timers, but was resumed by a timeout"
        );
        let Outcome::Fail(f) = resume(b"garbage", ResumeEvent::Timer) else {
            panic!("unreadable state must fail the step");
        };
        assert_eq!(code(&f), "invalid-state");
    }

    /// The retry state is stored durably while the timer runs, so its
    /// format is pinned: a daemon upgraded mid-series must still read it
    /// and number the next request from it.
    #[test]
    fn the_retry_state_keeps_the_count_of_requests() {
        let state = serde_json::to_vec(&RetryState { tries: 4 }).unwrap();
        assert_eq!(state, br#"{"tries":4}"#);
        assert_eq!(
            serde_json::from_slice::<RetryState>(&state).unwrap().tries,
            4
        );
    }
}
