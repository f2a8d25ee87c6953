//! `link-async-http`: the HTTP itinerary step of an integration platform
//! that sends a document to a partner and either takes the answer at once
//! (sync flow) or leaves the flow until the partner calls back (async flow).
//!
//! The callback speaks the `X-Link-*` header protocol: the partner echoes
//! the correlation id it was given and says `Ok` (the flow goes on) or
//! `Failed` (the rest of the flow is skipped, with the document status and
//! error the partner names). A callback that does not speak the protocol is
//! refused, so the partner learns at once what is wrong and the execution
//! keeps waiting for a correct one.

mod config;

use stephost_guest::{
    Callback, Context, Document, Failure, Outcome, PluginInfo, ResumeEvent, Step, Ticket,
    callbacks, http,
};

use crate::config::{CONFIG_SCHEMA, Config};

/// Sent to the partner and expected back on the callback: ties the two
/// together.
const CORRELATION_ID: &str = "X-Link-Correlation-Id";
/// Sent to the partner: where to call back.
const CALLBACK_URL: &str = "X-Link-Callback-Url";
/// Expected on the callback: `Ok` or `Failed`.
const STATUS: &str = "X-Link-Status";
/// Optional on a `Failed` callback: the status the document gets.
const DOCUMENT_STATUS: &str = "X-Link-Document-Status";
/// Optional on a `Failed` callback: the error code.
const ERROR_CODE: &str = "X-Link-Error-Code";
/// Optional on a `Failed` callback: the error text for the status log.
const ERROR_TEXT: &str = "X-Link-Error-Text";

/// The two values of `X-Link-Status`, spelled exactly as the protocol
/// spells them; anything else is refused rather than guessed at.
const STATUS_OK: &str = "Ok";
const STATUS_FAILED: &str = "Failed";

/// The document status of a failure that names none, and of one that names
/// a status this step does not recognise.
const FAILED: &str = "Failed";

/// How much of a partner's error body goes into the failure text: enough
/// to diagnose, not enough to flood the status log.
const MAX_BODY_CHARS: usize = 512;

struct LinkAsyncHttp;

impl Step for LinkAsyncHttp {
    fn describe() -> PluginInfo {
        PluginInfo::new("link-async-http", env!("CARGO_PKG_VERSION"))
            .with_description(
                "Sends the document over HTTP; in the async flow waits for an X-Link-Status callback (Ok continues, Failed skips the rest).",
            )
            .with_config_schema(CONFIG_SCHEMA)
    }

    fn run(ctx: Context, input: Document) -> Outcome {
        start(&ctx, input).unwrap_or_else(Outcome::from)
    }

    fn resume(ctx: Context, input: Document, _state: Vec<u8>, event: ResumeEvent) -> Outcome {
        let config = match Config::load(&ctx) {
            Ok(config) => config,
            Err(failure) => return Outcome::failure(failure),
        };
        match event {
            ResumeEvent::Callback(callback) => on_callback(&config, input, &callback),
            ResumeEvent::Timeout => Outcome::fail(
                "callback-timeout",
                "the partner did not call back before the timeout",
            ),
            ResumeEvent::Timer => Outcome::fail(
                "unexpected-timer",
                "link-async-http never sets a timer, but was resumed by one",
            ),
        }
    }
}

fn start(ctx: &Context, input: Document) -> Result<Outcome, Failure> {
    let config = Config::load(ctx)?;
    if !config.async_flow {
        let response = request(&config, input, None).send()?;
        check_success(&response)?;
        return Ok(Outcome::complete(response.into_document()));
    }
    // Registered before the partner hears of it, so a partner that calls
    // back before answering still finds the callback.
    let ticket = callbacks::register(config.require_token)?;
    let response = request(&config, input, Some(&ticket)).send()?;
    check_success(&response)?;
    Ok(Outcome::suspend(
        ticket.correlation_id,
        Vec::new(),
        config.timeout_ms,
    ))
}

/// The request to the partner: the configured method and headers, then,
/// in the async flow, the step's correlation id and callback URL, and the
/// document as the body (its content type unless one is configured).
fn request(config: &Config, input: Document, ticket: Option<&Ticket>) -> http::Request {
    let request = config.headers.iter().fold(
        http::Request::new(&config.method, &config.url),
        |req, (name, value)| req.header(name, value),
    );
    let request = match ticket {
        Some(ticket) => request
            .header(CORRELATION_ID, &ticket.correlation_id)
            .header(CALLBACK_URL, &ticket.url),
        None => request,
    };
    request.document(input)
}

fn check_success(response: &http::Response) -> Result<(), Failure> {
    if response.is_success() {
        return Ok(());
    }
    Err(Failure::new(
        "partner-error",
        format!(
            "partner answered HTTP {}: {}",
            response.status,
            response.text_truncated(MAX_BODY_CHARS)
        ),
    ))
}

fn on_callback(config: &Config, input: Document, callback: &Callback) -> Outcome {
    match callback.header(CORRELATION_ID).map(str::trim) {
        None => {
            return Outcome::reject_callback(format!("missing header {CORRELATION_ID}"));
        }
        Some(id) if id != callback.correlation_id => {
            return Outcome::reject_callback(format!(
                "header {CORRELATION_ID} is {id:?}, but this callback belongs to {:?}",
                callback.correlation_id
            ));
        }
        Some(_) => {}
    }
    match callback.header(STATUS).map(str::trim) {
        Some(STATUS_OK) if config.use_async_response_body => {
            Outcome::complete(callback_document(callback))
        }
        Some(STATUS_OK) => Outcome::complete(input),
        Some(STATUS_FAILED) => Outcome::failure(partner_failure(config, callback)),
        Some(other) => Outcome::reject_callback(format!(
            "header {STATUS} is {other:?}; expected {STATUS_OK:?} or {STATUS_FAILED:?}"
        )),
        None => Outcome::reject_callback(format!(
            "missing header {STATUS} ({STATUS_OK:?} or {STATUS_FAILED:?})"
        )),
    }
}

/// The callback's body as the next document, typed as the partner typed it.
fn callback_document(callback: &Callback) -> Document {
    let content_type = callback
        .header("content-type")
        .unwrap_or("application/octet-stream");
    Document::new(content_type, callback.body.clone())
}

/// A `Failed` callback as a failure: the partner's document status if it
/// is a recognised one, otherwise `Failed` with the partner's value kept as
/// technical status, so that nothing the partner said is lost.
fn partner_failure(config: &Config, callback: &Callback) -> Failure {
    let present = |name: &str| {
        callback
            .header(name)
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    let code = present(ERROR_CODE).unwrap_or("partner-failed");
    let text = present(ERROR_TEXT).unwrap_or("the partner reported the document as Failed");
    let failure = Failure::new(code, text);
    match present(DOCUMENT_STATUS) {
        Some(status) if config.document_statuses.iter().any(|s| s == status) => {
            failure.with_document_status(status)
        }
        Some(status) => failure
            .with_document_status(FAILED)
            .with_technical_status(status),
        None => failure.with_document_status(FAILED),
    }
}

stephost_guest::export_step!(LinkAsyncHttp);

#[cfg(test)]
mod tests {
    use stephost_guest::StepContext;

    use super::*;

    fn ctx(config: &str) -> Context {
        Context::new(StepContext {
            execution_id: "ex-1".into(),
            workflow: "wf".into(),
            step: "validate".into(),
            attempt: 1,
            step_run_id: "run-1".into(),
            config: config.into(),
            metadata: "{}".into(),
        })
    }

    fn config(text: &str) -> Config {
        Config::load(&ctx(text)).unwrap()
    }

    fn input() -> Document {
        Document::new("application/json", r#"{"order": 7}"#)
    }

    /// `resume` makes no host calls (the config is read from the context),
    /// so the callback protocol runs natively as it is.
    fn on(config: &str, headers: &[(&str, &str)], body: &str) -> Outcome {
        let callback = Callback {
            correlation_id: "corr-1".into(),
            method: "POST".into(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.as_bytes().to_vec(),
        };
        LinkAsyncHttp::resume(
            ctx(config),
            input(),
            Vec::new(),
            ResumeEvent::Callback(callback),
        )
    }

    const ASYNC: &str = r#"{"url": "https://p.example", "async": true}"#;

    fn failure(outcome: Outcome) -> Failure {
        match outcome {
            Outcome::Fail(f) => f,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    fn rejection(outcome: Outcome) -> String {
        match outcome {
            Outcome::RejectCallback(reason) => reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    /// Sync flow: the configured method and headers and the document, and
    /// no `X-Link-*` headers, since nobody will call back.
    #[test]
    fn the_sync_request_carries_no_link_headers() {
        let config = config(
            r#"{"url": "https://p.example/x", "method": "put", "headers": {"Authorization": "Bearer t"}}"#,
        );
        let raw = request(&config, input(), None).into_raw();
        assert_eq!(raw.method, "PUT");
        assert_eq!(raw.url, "https://p.example/x");
        assert_eq!(raw.body, br#"{"order": 7}"#);
        assert_eq!(
            raw.headers,
            vec![
                ("Authorization".into(), "Bearer t".into()),
                ("Content-Type".into(), "application/json".into()),
            ]
        );
    }

    /// Async flow: `X-Link-Correlation-Id` and `X-Link-Callback-Url` from
    /// the registered callback; a configured `Content-Type` "wins over the
    /// document's own".
    #[test]
    fn the_async_request_carries_correlation_id_and_callback_url() {
        let config = config(
            r#"{"url": "https://p.example", "async": true, "headers": {"Content-Type": "application/vnd.p+json"}}"#,
        );
        let ticket = Ticket {
            correlation_id: "corr-1".into(),
            url: "https://host/v1/callbacks/corr-1?s=x".into(),
        };
        let raw = request(&config, input(), Some(&ticket)).into_raw();
        assert_eq!(raw.method, "POST");
        assert_eq!(
            raw.headers,
            vec![
                ("Content-Type".into(), "application/vnd.p+json".into()),
                ("X-Link-Correlation-Id".into(), "corr-1".into()),
                (
                    "X-Link-Callback-Url".into(),
                    "https://host/v1/callbacks/corr-1?s=x".into()
                ),
            ]
        );
    }

    /// "An answer outside 200–299 fails the step", with `partner-error`
    /// naming the status and the start of the body.
    #[test]
    fn an_answer_outside_2xx_is_a_partner_error() {
        let answer = |status: u16, body: &str| http::Response {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        };
        for status in [200, 202, 204, 299] {
            assert!(check_success(&answer(status, "")).is_ok(), "{status}");
        }
        for status in [199, 300, 404, 500] {
            let f = check_success(&answer(status, "bad")).unwrap_err();
            assert_eq!(f.error_code.as_deref(), Some("partner-error"));
            assert_eq!(f.error_text, format!("partner answered HTTP {status}: bad"));
        }
        let long = "z".repeat(MAX_BODY_CHARS + 1);
        let f = check_success(&answer(500, &long)).unwrap_err();
        assert!(
            f.error_text
                .ends_with(&format!("{}…", &long[..MAX_BODY_CHARS]))
        );
    }

    /// `Ok` continues with the callback's body, typed by its
    /// `Content-Type` (header names in any case, values trimmed).
    #[test]
    fn ok_continues_with_the_callback_body() {
        let out = on(
            ASYNC,
            &[
                ("x-link-correlation-id", " corr-1 "),
                ("X-LINK-STATUS", "Ok "),
                ("content-type", "application/xml"),
            ],
            "<ok/>",
        );
        assert_eq!(
            out,
            Outcome::Complete(Document::new("application/xml", "<ok/>"))
        );
        // Untyped: passed on as bytes, not guessed at.
        let out = on(
            ASYNC,
            &[("X-Link-Correlation-Id", "corr-1"), ("X-Link-Status", "Ok")],
            "{}",
        );
        assert_eq!(
            out,
            Outcome::Complete(Document::new("application/octet-stream", "{}"))
        );
    }

    /// With `use_async_response_body = false` only the status matters:
    /// "the document then goes on unchanged".
    #[test]
    fn ok_without_use_async_response_body_continues_with_the_input() {
        let out = on(
            r#"{"url": "u", "async": true, "use_async_response_body": false}"#,
            &[("X-Link-Correlation-Id", "corr-1"), ("X-Link-Status", "Ok")],
            "ignored",
        );
        assert_eq!(out, Outcome::Complete(input()));
    }

    /// `Failed` fails the step with the partner's code, text and a
    /// recognised document status.
    #[test]
    fn failed_carries_the_partner_s_code_text_and_document_status() {
        let f = failure(on(
            ASYNC,
            &[
                ("X-Link-Correlation-Id", "corr-1"),
                ("X-Link-Status", "Failed"),
                ("X-Link-Error-Code", "E42"),
                ("X-Link-Error-Text", "amount too high"),
                ("X-Link-Document-Status", "Ignored"),
            ],
            "",
        ));
        assert_eq!(f.error_code.as_deref(), Some("E42"));
        assert_eq!(f.error_text, "amount too high");
        assert_eq!(f.document_status.as_deref(), Some("Ignored"));
        assert_eq!(f.technical_status, None);
    }

    /// Without the optional headers (or with blank ones): code
    /// `partner-failed`, the default text, document status `Failed`.
    #[test]
    fn failed_without_details_uses_the_documented_defaults() {
        let f = failure(on(
            ASYNC,
            &[
                ("X-Link-Correlation-Id", "corr-1"),
                ("X-Link-Status", "Failed"),
                ("X-Link-Error-Code", "  "),
            ],
            "",
        ));
        assert_eq!(f.error_code.as_deref(), Some("partner-failed"));
        assert_eq!(f.error_text, "the partner reported the document as Failed");
        assert_eq!(f.document_status.as_deref(), Some("Failed"));
        assert_eq!(f.technical_status, None);
    }

    /// "A value not in `document_statuses` becomes the technical status,
    /// and the document status is `Failed`"; statuses compare exactly, and
    /// a configured list replaces the built-in one.
    #[test]
    fn an_unknown_document_status_becomes_the_technical_status() {
        let failed = |config: &str, status: &str| {
            failure(on(
                config,
                &[
                    ("X-Link-Correlation-Id", "corr-1"),
                    ("X-Link-Status", "Failed"),
                    ("X-Link-Document-Status", status),
                ],
                "",
            ))
        };
        let f = failed(ASYNC, "Parked");
        assert_eq!(f.document_status.as_deref(), Some("Failed"));
        assert_eq!(f.technical_status.as_deref(), Some("Parked"));
        let f = failed(ASYNC, "ignored");
        assert_eq!(f.document_status.as_deref(), Some("Failed"));
        assert_eq!(f.technical_status.as_deref(), Some("ignored"));

        let custom = r#"{"url": "u", "async": true, "document_statuses": ["Parked"]}"#;
        let f = failed(custom, "Parked");
        assert_eq!(f.document_status.as_deref(), Some("Parked"));
        assert_eq!(f.technical_status, None);
        let f = failed(custom, "Ignored");
        assert_eq!(f.document_status.as_deref(), Some("Failed"));
        assert_eq!(f.technical_status.as_deref(), Some("Ignored"));
    }

    /// A missing or different `X-Link-Correlation-Id` is refused (400
    /// `callback-rejected`) and the step keeps waiting; the reason says
    /// which.
    #[test]
    fn a_missing_or_wrong_correlation_id_is_rejected() {
        let reason = rejection(on(ASYNC, &[("X-Link-Status", "Ok")], ""));
        assert_eq!(reason, "missing header X-Link-Correlation-Id");
        let reason = rejection(on(
            ASYNC,
            &[("X-Link-Correlation-Id", "corr-2"), ("X-Link-Status", "Ok")],
            "",
        ));
        assert_eq!(
            reason,
            r#"header X-Link-Correlation-Id is "corr-2", but this callback belongs to "corr-1""#
        );
    }

    /// `X-Link-Status` must be exactly `Ok` or `Failed`: another spelling
    /// is refused rather than guessed at, and so is a missing one.
    #[test]
    fn a_status_other_than_exactly_ok_or_failed_is_rejected() {
        for status in ["ok", "OK", "failed", "Success", ""] {
            let reason = rejection(on(
                ASYNC,
                &[
                    ("X-Link-Correlation-Id", "corr-1"),
                    ("X-Link-Status", status),
                ],
                "",
            ));
            assert_eq!(
                reason,
                format!(r#"header X-Link-Status is {status:?}; expected "Ok" or "Failed""#)
            );
        }
        let reason = rejection(on(ASYNC, &[("X-Link-Correlation-Id", "corr-1")], ""));
        assert_eq!(reason, r#"missing header X-Link-Status ("Ok" or "Failed")"#);
    }

    /// No valid callback within `timeout_ms`: `callback-timeout`.
    #[test]
    fn timeout_fails_with_callback_timeout() {
        let out = LinkAsyncHttp::resume(ctx(ASYNC), input(), Vec::new(), ResumeEvent::Timeout);
        assert_eq!(failure(out).error_code.as_deref(), Some("callback-timeout"));
    }
}
