//! The Rust side of the SDK code probe: one condition per config `case`,
//! each left for the SDK to report (`?`, the default `resume`), so that
//! `tests/tests/sdk_codes.rs` can compare the code with the one the Python
//! and JavaScript SDKs give for it (`probe.py` and `probe.js` next to this
//! crate run the same cases).

use std::collections::BTreeMap;

use serde_json::Value;
use stephost_guest::signing::{KeyRef, hmac_sha256};
use stephost_guest::{Context, Document, Failure, Outcome, Step, http};

struct Probe;

impl Step for Probe {
    fn run(ctx: Context, _input: Document) -> Outcome {
        probe(&ctx).unwrap_or_else(Outcome::from)
    }

    // No `resume`: the SDK's default answers one.
}

fn probe(ctx: &Context) -> Result<Outcome, Failure> {
    let config: Value = ctx.config()?;
    let url = config["url"].as_str().unwrap_or_default();
    match config["case"].as_str().unwrap_or_default() {
        "send" => {
            http::Request::get(url).send()?;
        }
        "parse-response" => {
            let _: Value = http::Request::get(url).send()?.json()?;
        }
        "sign-with-ungranted-secret" => {
            hmac_sha256(&KeyRef::secret("not-granted"), b"data")?;
        }
        // JSON object keys must be strings.
        "unwritable-output" => return Ok(Outcome::complete_json(&BTreeMap::from([((1, 2), 3)]))),
        "resume-without-resume" => return Ok(Outcome::retry_after(1, Vec::new())),
        "uncaught" => panic!("the probe panics on purpose"),
        other => return Ok(Outcome::fail("unknown-case", other)),
    }
    Ok(Outcome::complete(Document::text("no failure")))
}

stephost_guest::export_step!(Probe);
