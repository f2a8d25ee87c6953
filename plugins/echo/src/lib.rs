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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use stephost_guest::StepContext;

    use super::*;

    /// `run` makes no host calls, so the whole step runs natively.
    fn run(config: &str, input: Document) -> Outcome {
        Echo::run(
            Context::new(StepContext {
                execution_id: "ex-1".into(),
                workflow: "wf".into(),
                step: "say".into(),
                attempt: 1,
                step_run_id: "run-1".into(),
                config: config.into(),
                metadata: "{}".into(),
            }),
            input,
        )
    }

    fn completed_json(outcome: Outcome) -> Value {
        match outcome {
            Outcome::Complete(doc) => {
                assert_eq!(doc.content_type, "application/json");
                doc.json().unwrap()
            }
            other => panic!("expected completion, got {other:?}"),
        }
    }

    /// "Without config its output is its input, unchanged": not re-encoded,
    /// so even bytes that are not JSON keep their content type.
    #[test]
    fn without_config_the_input_goes_on_unchanged() {
        let input = Document::new("application/octet-stream", vec![0xff, 0x00, b'{']);
        for config in ["", "  ", "{}", "null", " { } "] {
            assert_eq!(
                run(config, input.clone()),
                Outcome::Complete(input.clone()),
                "config {config:?}"
            );
        }
        // Key order and spacing survive too.
        let json = Document::new("application/json", r#"{"b": 1,  "a": 2}"#);
        assert_eq!(run("{}", json.clone()), Outcome::Complete(json));
    }

    /// With a config: `{"input": <input>, "config": <config>}`.
    #[test]
    fn with_config_the_output_holds_input_and_config() {
        let out = run(
            r#"{"greeting": "hi", "n": [1, 2]}"#,
            Document::from_value(&json!({"order": 7})),
        );
        assert_eq!(
            completed_json(out),
            json!({"input": {"order": 7}, "config": {"greeting": "hi", "n": [1, 2]}})
        );
    }

    /// Only `{}` and `null` mean "no config": any other JSON value is a
    /// config and is echoed, even a falsy-looking one.
    #[test]
    fn any_other_json_value_counts_as_config() {
        for (config, expected) in [
            ("false", json!(false)),
            ("0", json!(0)),
            ("[]", json!([])),
            (r#""""#, json!("")),
        ] {
            let out = run(config, Document::from_value(&json!(1)));
            assert_eq!(
                completed_json(out),
                json!({"input": 1, "config": expected}),
                "config {config}"
            );
        }
    }

    /// An input that is not JSON is echoed as a string (invalid UTF-8
    /// replaced), so the output is always JSON.
    #[test]
    fn input_that_is_not_json_is_echoed_as_a_string() {
        let out = run(r#"{"k": 1}"#, Document::text("plain words"));
        assert_eq!(
            completed_json(out),
            json!({"input": "plain words", "config": {"k": 1}})
        );
        let out = run(
            r#"{"k": 1}"#,
            Document::new("application/octet-stream", vec![b'a', 0xff]),
        );
        assert_eq!(completed_json(out)["input"], "a\u{fffd}");
    }

    /// A config that is not JSON fails the step with `invalid-config`,
    /// naming the step.
    #[test]
    fn malformed_config_is_invalid_config() {
        match run("{nope", Document::text("x")) {
            Outcome::Fail(f) => {
                assert_eq!(f.error_code.as_deref(), Some("invalid-config"));
                assert!(f.error_text.starts_with("step `say`:"), "{}", f.error_text);
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
