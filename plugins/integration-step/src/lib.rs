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

#[cfg(test)]
mod tests {
    use stephost_guest::StepContext;

    use super::*;

    /// No `api_key_secret`: reading one is a host call, so these configs
    /// keep `resume` free of host calls and it runs natively as it is.
    const CONFIG: &str = r#"{"url": "https://hr.example/api/hires"}"#;

    fn ctx(config: &str) -> Context {
        Context::new(StepContext {
            execution_id: "ex-1".into(),
            workflow: "wf".into(),
            step: "send-to-hr".into(),
            attempt: 1,
            step_run_id: "run-1".into(),
            config: config.into(),
            metadata: "{}".into(),
        })
    }

    fn input() -> Document {
        Document::new("application/json", r#"{"hire": "ada"}"#)
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

    fn on_callback(headers: &[(&str, &str)], body: &str) -> Outcome {
        let callback = Callback {
            correlation_id: "c-1".into(),
            method: "POST".into(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        };
        IntegrationStep::resume(
            ctx(CONFIG),
            input(),
            Vec::new(),
            ResumeEvent::Callback(callback),
        )
    }

    fn failure(outcome: Outcome) -> Failure {
        match outcome {
            Outcome::Fail(f) => f,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    /// What is sent: `method` to `url`, the configured headers, the key
    /// verbatim as `Authorization`, `X-Response-URL`, JSON, and the fixed
    /// 5 seconds to answer.
    #[test]
    fn the_request_is_the_seed_s() {
        let config: Config = ctx(
            r#"{"url": "https://hr.example/h", "method": "PUT", "headers": {"X-Source": "form"}}"#,
        )
        .config()
        .unwrap();
        let raw = request(
            &config,
            Some("Bearer abc123".into()),
            "https://host/v1/callbacks/c-1?s=x",
            Document::new("application/json", "{}"),
        )
        .into_raw();
        assert_eq!(raw.method, "PUT");
        assert_eq!(raw.url, "https://hr.example/h");
        assert_eq!(raw.timeout_ms, Some(5_000));
        assert_eq!(raw.body, b"{}");
        assert_eq!(
            raw.headers,
            vec![
                ("X-Source".into(), "form".into()),
                ("Authorization".into(), "Bearer abc123".into()),
                (
                    "X-Response-URL".into(),
                    "https://host/v1/callbacks/c-1?s=x".into()
                ),
                ("Content-Type".into(), "application/json".into()),
            ]
        );
        // Without a key, no Authorization header at all.
        let raw = request(&config, None, "u", Document::new("application/json", "{}")).into_raw();
        assert_eq!(http::header(&raw.headers, "authorization"), None);
    }

    /// "The document data in the request body in JSON format": a JSON
    /// input is sent byte for byte as `application/json` whatever its own
    /// type said; one that is not JSON fails with `invalid-input`.
    #[test]
    fn the_body_must_be_json() {
        let body = json_body(&Document::new("text/plain", r#"{"a": 1}"#)).unwrap();
        assert_eq!(body, Document::new("application/json", r#"{"a": 1}"#));
        let f = json_body(&Document::text("not json")).unwrap_err();
        assert_eq!(f.error_code.as_deref(), Some("invalid-input"));
        assert!(
            f.error_text
                .starts_with("integration-step sends its input as JSON, but it is not JSON: "),
            "{}",
            f.error_text
        );
    }

    /// `202` within 5 s: wait for the POST to the response URL.
    #[test]
    fn a_202_answer_waits() {
        assert_eq!(
            answer(
                response(202, Some("application/json"), r#"{"ok":1}"#),
                input()
            ),
            Answer::Later
        );
    }

    /// Any other 2xx completes with the response body as output, with its
    /// content type; an empty body (e.g. `204`) hands the input on.
    #[test]
    fn another_2xx_answer_completes_with_its_body_or_the_input() {
        assert_eq!(
            answer(response(200, Some("application/xml"), "<ok/>"), input()),
            Answer::Done(Document::new("application/xml", "<ok/>"))
        );
        assert_eq!(
            answer(response(201, None, "id=7"), input()),
            Answer::Done(Document::new("application/octet-stream", "id=7"))
        );
        for (status, body) in [(204, ""), (200, " \n"), (299, "")] {
            assert_eq!(
                answer(response(status, Some("text/plain"), body), input()),
                Answer::Done(input()),
                "{status} {body:?}"
            );
        }
    }

    /// "Anything else (4xx, 5xx, 3xx)" is an error, with the partner's
    /// status and body.
    #[test]
    fn any_other_answer_is_an_error() {
        for status in [100, 301, 400, 401, 500, 503] {
            assert_eq!(
                answer(response(status, None, "no"), input()),
                Answer::Error(status, b"no".to_vec())
            );
        }
    }

    /// `partner-error`: the text names how, the status and the body;
    /// `technical_status` is the status; an empty body says so.
    #[test]
    fn partner_error_names_status_and_body() {
        let f = partner_error(500, "answered", b"boom", None);
        assert_eq!(f.error_code.as_deref(), Some("partner-error"));
        assert_eq!(f.error_text, "the partner answered HTTP 500: boom");
        assert_eq!(f.technical_status.as_deref(), Some("500"));
        let f = partner_error(422, "reported on the response URL", b"", None);
        assert_eq!(
            f.error_text,
            "the partner reported on the response URL HTTP 422: (empty body)"
        );
    }

    /// "If the partner echoes it in an error body, the step blanks it out",
    /// before the body is cut, so that no start of the key survives at the
    /// cut either.
    #[test]
    fn the_key_is_masked_before_the_body_is_cut() {
        let body = format!("{}Bearer abc123 and more", "a".repeat(MAX_BODY_CHARS - 2));
        let f = partner_error(401, "answered", body.as_bytes(), Some("Bearer abc123"));
        assert_eq!(
            f.error_text,
            format!(
                "the partner answered HTTP 401: {}**…",
                "a".repeat(MAX_BODY_CHARS - 2)
            )
        );
        assert!(!f.error_text.contains('B'), "{}", f.error_text);
    }

    /// No answer within 5 s: `timeout`; no answer at all: `http-error`.
    #[test]
    fn no_answer_is_timeout_or_http_error() {
        let f = no_answer(http::HttpError::Timeout);
        assert_eq!(f.error_code.as_deref(), Some("timeout"));
        assert_eq!(f.error_text, "the partner did not answer within 5000 ms");
        let f = no_answer(http::HttpError::Connection("refused".into()));
        assert_eq!(f.error_code.as_deref(), Some("http-error"));
        assert_eq!(
            f.error_text,
            "could not reach the partner: connection failed: refused"
        );
    }

    /// `X-Status-Code`: 200 when absent, any status 100–599 (trimmed);
    /// anything else is refused with the value it got.
    #[test]
    fn x_status_code_is_an_http_status_or_refused() {
        let cb = |headers: Vec<(String, String)>| Callback {
            correlation_id: "c-1".into(),
            method: "POST".into(),
            headers,
            body: Vec::new(),
        };
        assert_eq!(status_code(&cb(vec![])), Ok(200));
        for (value, status) in [("100", 100), (" 204 ", 204), ("599", 599)] {
            let headers = vec![("x-status-code".into(), value.into())];
            assert_eq!(status_code(&cb(headers)), Ok(status), "{value}");
        }
        for value in ["ok", "700", "99", "600", "", "2xx", "-200"] {
            let headers = vec![("X-Status-Code".into(), value.into())];
            assert_eq!(
                status_code(&cb(headers)),
                Err(format!(
                    "X-Status-Code must be an HTTP status code (100-599), got {value:?}"
                ))
            );
        }
    }

    /// Absent or 2xx `X-Status-Code`: completed with the callback body,
    /// with its `Content-Type`, or `application/json` if it is JSON.
    #[test]
    fn a_successful_callback_completes_with_its_body() {
        assert_eq!(
            on_callback(&[("Content-Type", "text/csv")], "a,b"),
            Outcome::Complete(Document::new("text/csv", "a,b"))
        );
        assert_eq!(
            on_callback(&[("X-Status-Code", "201")], r#"{"id": 7}"#),
            Outcome::Complete(Document::new("application/json", r#"{"id": 7}"#))
        );
        assert_eq!(
            on_callback(&[], "plain"),
            Outcome::Complete(Document::new("application/octet-stream", "plain"))
        );
        // X-Status-Code 202 on the callback is a 2xx like any other.
        assert_eq!(
            on_callback(&[("X-Status-Code", "202")], "[]"),
            Outcome::Complete(Document::new("application/json", "[]"))
        );
    }

    /// "An empty body hands the input document on unchanged".
    #[test]
    fn a_successful_callback_without_a_body_hands_the_input_on() {
        assert_eq!(on_callback(&[], ""), Outcome::Complete(input()));
        assert_eq!(
            on_callback(&[("X-Status-Code", "204")], "\n"),
            Outcome::Complete(input())
        );
    }

    /// Any other status fails with `partner-error`, text with the status
    /// and body, `technical_status` the status.
    #[test]
    fn a_callback_with_an_error_status_is_a_partner_error() {
        for status in ["500", "404", "302", "100"] {
            let f = failure(on_callback(&[("X-Status-Code", status)], "rejected"));
            assert_eq!(f.error_code.as_deref(), Some("partner-error"));
            assert_eq!(
                f.error_text,
                format!("the partner reported on the response URL HTTP {status}: rejected")
            );
            assert_eq!(f.technical_status.as_deref(), Some(status));
        }
    }

    /// A malformed `X-Status-Code` is refused (400 `callback-rejected`):
    /// the step keeps waiting for a correct one.
    #[test]
    fn a_callback_with_a_malformed_status_is_rejected() {
        for value in ["ok", "700"] {
            assert_eq!(
                on_callback(&[("X-Status-Code", value)], "{}"),
                Outcome::RejectCallback(format!(
                    "X-Status-Code must be an HTTP status code (100-599), got {value:?}"
                ))
            );
        }
    }

    /// No POST to the response URL within `timeout_ms`: `callback-timeout`.
    #[test]
    fn timeout_fails_with_callback_timeout() {
        let out = IntegrationStep::resume(ctx(CONFIG), input(), Vec::new(), ResumeEvent::Timeout);
        assert_eq!(failure(out).error_code.as_deref(), Some("callback-timeout"));
    }
}
