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
