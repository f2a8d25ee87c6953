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
    let response = http::Request::post(&config.url)
        .header("X-Callback-Url", &ticket.url)
        .header("X-Step-Run-Id", ctx.step_run_id())
        .document(input)
        .send()?;
    if !response.is_success() {
        return Err(Failure::new(
            "partner-error",
            format!(
                "partner answered HTTP {}: {}",
                response.status,
                response.text_truncated(MAX_BODY_CHARS)
            ),
        ));
    }
    Ok(Outcome::suspend(
        ticket.correlation_id,
        Vec::new(),
        config.timeout_ms,
    ))
}

stephost_guest::export_step!(WaitForCallback);
