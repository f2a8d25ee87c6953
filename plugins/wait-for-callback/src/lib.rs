//! `wait-for-callback`: hand the document to a partner and wait, durably,
//! for the partner to call back with the result.
//!
//! This is the suspend/resume round trip in its plainest form: register a
//! callback, tell the partner its URL, suspend, and finish with whatever
//! JSON the partner posts back.

use serde::Deserialize;
use serde::de::IgnoredAny;
use stephost_guest::{
    Context, Document, Failure, Outcome, PluginInfo, ResumeEvent, Step, callbacks, http,
};

/// How much of a partner's error body goes into the failure text: enough
/// to diagnose, not enough to flood the status log.
const MAX_BODY_CHARS: usize = 512;

const CONFIG_SCHEMA: &str = r#"{
  "type": "object",
  "required": ["url"],
  "properties": {
    "url": { "type": "string", "description": "Where to POST the input document" },
    "timeout_ms": { "type": "integer", "minimum": 0, "description": "How long to wait for the callback; the daemon's default when absent" }
  }
}"#;

#[derive(Deserialize)]
struct Config {
    url: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

struct WaitForCallback;

impl Step for WaitForCallback {
    fn describe() -> PluginInfo {
        PluginInfo::new("wait-for-callback", env!("CARGO_PKG_VERSION"))
            .with_description(
                "Posts its input to a partner with X-Callback-Url and completes with the JSON the partner calls back with.",
            )
            .with_config_schema(CONFIG_SCHEMA)
    }

    fn run(ctx: Context, input: Document) -> Outcome {
        start(&ctx, input).unwrap_or_else(Outcome::from)
    }

    fn resume(_ctx: Context, _input: Document, _state: Vec<u8>, event: ResumeEvent) -> Outcome {
        match event {
            ResumeEvent::Callback(callback) => {
                // Validated but passed on byte for byte: re-serializing
                // would reorder the partner's keys.
                match callback.json::<IgnoredAny>() {
                    Ok(_) => Outcome::complete(Document::new("application/json", callback.body)),
                    Err(e) => Outcome::reject_callback(format!("callback body must be JSON: {e}")),
                }
            }
            ResumeEvent::Timeout => Outcome::fail(
                "callback-timeout",
                "the partner did not call back before the timeout",
            ),
            ResumeEvent::Timer => Outcome::fail(
                "unexpected-timer",
                "wait-for-callback never sets a timer, but was resumed by one",
            ),
        }
    }
}

fn start(ctx: &Context, input: Document) -> Result<Outcome, Failure> {
    let config: Config = ctx.config()?;
    // Registered before the partner hears of it, so a partner that calls
    // back at once still finds the callback.
    let ticket = callbacks::register(false)?;
    let response = request(&config.url, &ticket.url, ctx.step_run_id(), input).send()?;
    check_answer(&response)?;
    Ok(Outcome::suspend(
        ticket.correlation_id,
        Vec::new(),
        config.timeout_ms,
    ))
}

/// The request that hands the input to the partner: where to call back,
/// and the step-run id, stable across retries, for the partner to spot a
/// repeat.
fn request(url: &str, callback_url: &str, step_run_id: &str, input: Document) -> http::Request {
    http::Request::post(url)
        .header("X-Callback-Url", callback_url)
        .header("X-Step-Run-Id", step_run_id)
        .document(input)
}

/// Only a 2xx means the partner took the document and will call back;
/// anything else fails the step rather than wait for a callback that will
/// never come.
fn check_answer(response: &http::Response) -> Result<(), Failure> {
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

stephost_guest::export_step!(WaitForCallback);

#[cfg(test)]
mod tests {
    use stephost_guest::StepContext;

    use super::*;

    fn ctx(config: &str) -> Context {
        Context::new(StepContext {
            execution_id: "ex-1".into(),
            workflow: "wf".into(),
            step: "ask".into(),
            attempt: 1,
            step_run_id: "run-1".into(),
            config: config.into(),
            metadata: "{}".into(),
        })
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
        WaitForCallback::resume(ctx(""), Document::text("in"), Vec::new(), event)
    }

    fn callback(body: &str) -> ResumeEvent {
        ResumeEvent::Callback(stephost_guest::Callback {
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

    /// `url` is required: without it the step fails with `invalid-config`
    /// before anything is sent.
    #[test]
    fn url_is_required() {
        for config in ["", "{}", r#"{"timeout_ms": 5}"#] {
            let f = ctx(config).config::<Config>().err().unwrap();
            assert_eq!(f.error_code.as_deref(), Some("invalid-config"), "{config}");
            assert!(f.error_text.contains("url"), "{}", f.error_text);
        }
        let config: Config = ctx(r#"{"url": "https://p.example", "timeout_ms": 5000}"#)
            .config()
            .unwrap();
        assert_eq!(config.url, "https://p.example");
        assert_eq!(config.timeout_ms, Some(5000));
        let config: Config = ctx(r#"{"url": "https://p.example"}"#).config().unwrap();
        assert_eq!(config.timeout_ms, None, "absent: the daemon's default");
    }

    /// The input is POSTed with `X-Callback-Url` and `X-Step-Run-Id`, as
    /// the body with its own content type.
    #[test]
    fn the_request_posts_the_input_with_callback_url_and_step_run_id() {
        let input = Document::new("application/xml", "<order/>");
        let raw = request(
            "https://p.example/in",
            "https://host/cb/1?s=x",
            "run-1",
            input,
        )
        .into_raw();
        assert_eq!(raw.method, "POST");
        assert_eq!(raw.url, "https://p.example/in");
        assert_eq!(raw.body, b"<order/>");
        assert_eq!(
            raw.headers,
            vec![
                ("X-Callback-Url".into(), "https://host/cb/1?s=x".into()),
                ("X-Step-Run-Id".into(), "run-1".into()),
                ("Content-Type".into(), "application/xml".into()),
            ]
        );
    }

    /// Any 2xx answer means "will call back": the step suspends.
    #[test]
    fn any_2xx_answer_is_accepted() {
        for status in [200, 201, 202, 204, 299] {
            assert!(check_answer(&response(status, "")).is_ok(), "{status}");
        }
    }

    /// Anything else fails with `partner-error`, naming the status and the
    /// start of the body.
    #[test]
    fn other_answers_are_partner_errors_with_status_and_body() {
        for status in [100, 301, 400, 404, 500, 503] {
            let f = check_answer(&response(status, "down")).unwrap_err();
            assert_eq!(f.error_code.as_deref(), Some("partner-error"));
            assert_eq!(
                f.error_text,
                format!("partner answered HTTP {status}: down")
            );
        }
        let long = "x".repeat(MAX_BODY_CHARS + 10);
        let f = check_answer(&response(500, &long)).unwrap_err();
        assert_eq!(
            f.error_text,
            format!("partner answered HTTP 500: {}…", &long[..MAX_BODY_CHARS])
        );
    }

    /// "The JSON body of the callback is the output": byte for byte, so the
    /// partner's key order and spacing survive, typed as JSON whatever the
    /// partner's content type said.
    #[test]
    fn a_json_callback_completes_with_its_body_byte_for_byte() {
        for body in [r#"{"z": 1,  "a": [true]}"#, "[1,2]", r#""done""#, "null"] {
            assert_eq!(
                resume(callback(body)),
                Outcome::Complete(Document::new("application/json", body)),
                "{body}"
            );
        }
    }

    /// "A non-JSON callback is rejected with 400 and the step keeps
    /// waiting": the outcome is a rejection, not a failure.
    #[test]
    fn a_callback_that_is_not_json_is_rejected() {
        for body in ["", "not json", "{\"a\":"] {
            match resume(callback(body)) {
                Outcome::RejectCallback(reason) => {
                    assert!(
                        reason.starts_with("callback body must be JSON: "),
                        "{reason}"
                    );
                }
                other => panic!("{body:?}: expected a rejection, got {other:?}"),
            }
        }
    }

    /// No callback in time: `callback-timeout`.
    #[test]
    fn timeout_fails_with_callback_timeout() {
        let f = failure(resume(ResumeEvent::Timeout));
        assert_eq!(f.error_code.as_deref(), Some("callback-timeout"));
    }

    /// The step never sets a timer, so a timer event is a bug worth
    /// failing loudly on, not a callback to wait for.
    #[test]
    fn a_timer_fails_with_unexpected_timer() {
        let f = failure(resume(ResumeEvent::Timer));
        assert_eq!(f.error_code.as_deref(), Some("unexpected-timer"));
    }
}
