//! `echo`: the smallest useful step, for trying out workflows and the
//! daemon's plumbing.
//!
//! With no config (empty, `{}` or `null`) it hands its input on unchanged;
//! with a config it completes with `{"input": ..., "config": ...}`, so a
//! test can see exactly what the step received.

use serde_json::{Value, json};
use stephost_guest::{Context, Document, Outcome, PluginInfo, Step};

struct Echo;

impl Step for Echo {
    fn describe() -> PluginInfo {
        PluginInfo::new("echo", env!("CARGO_PKG_VERSION")).with_description(
            "Completes at once with its input, or with its input and config when configured.",
        )
    }

    fn run(ctx: Context, input: Document) -> Outcome {
        let config: Value = match ctx.config() {
            Ok(config) => config,
            Err(failure) => return failure.into(),
        };
        if is_unset(&config) {
            return Outcome::complete(input);
        }
        let input = input
            .json::<Value>()
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&input.body).into_owned()));
        Outcome::complete(Document::from_value(&json!({
            "input": input,
            "config": config,
        })))
    }
}

fn is_unset(config: &Value) -> bool {
    match config {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

stephost_guest::export_step!(Echo);
