//! `{{name}}`: a stephost step plugin.
//!
//! The sample step greets: it completes with its JSON object input plus a
//! `greeting` field built from the config's `greeting` (default `Hello`)
//! and the input's `name` (default `world`). Replace `run` with your step;
//! to wait for a partner, register a callback, send the partner its URL,
//! return `Outcome::suspend`, and implement `resume` (see
//! `docs/writing-plugins.md` in the stephost repository).

use serde_json::Value;
use stephost_guest::{Context, Document, Failure, Outcome, Step};

struct Plugin;

impl Step for Plugin {
    fn run(ctx: Context, input: Document) -> Outcome {
        greet(&ctx, &input).unwrap_or_else(Outcome::from)
    }
}

fn greet(ctx: &Context, input: &Document) -> Result<Outcome, Failure> {
    let config: Value = ctx.config()?;
    let greeting = config["greeting"].as_str().unwrap_or("Hello");
    let Ok(Value::Object(mut doc)) = input.json::<Value>() else {
        return Err(Failure::new(
            "invalid-document",
            "the input must be a JSON object",
        ));
    };
    let name = doc.get("name").and_then(Value::as_str).unwrap_or("world");
    let text = format!("{greeting}, {name}!");
    doc.insert("greeting".into(), Value::String(text));
    Ok(Outcome::complete_json(&doc))
}

stephost_guest::export_step!(Plugin);
