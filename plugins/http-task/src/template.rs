//! The body template: text with `{{ reference }}` placeholders filled from
//! the workflow's metadata and the step's input document.
//!
//! A reference is a dotted path into one JSON object: the step's metadata
//! (`workflow`, `execution_id`, `step`, `attempt`, `step_run_id`, `steps`)
//! plus `input`. Path segments name object keys, or index arrays when they
//! are numbers: `{{steps.tag.items.0.sku}}`. A string is inserted as it is,
//! anything else as compact JSON; `{{ path | json }}` always inserts JSON,
//! so that a string lands quoted and escaped inside a JSON body.
//!
//! A reference that leads nowhere is an error, not an empty string: a
//! typo must not send the partner a quietly wrong request.

use serde_json::Value;

const OPEN: &str = "{{";
const CLOSE: &str = "}}";
const JSON_FILTER: &str = "json";

/// Where references are looked up: `input` is the step's input document,
/// every other first segment is a key of the metadata object.
pub struct Scope<'a> {
    /// The step's metadata object.
    pub metadata: &'a Value,
    /// The input document as JSON: parsed when it is JSON, a string when
    /// it is text, `None` when it is neither.
    pub input: Option<Value>,
}

/// Fills every placeholder of `template`; the error names the placeholder
/// and what is wrong with it.
pub fn render(template: &str, scope: &Scope<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after_open = &rest[start + OPEN.len()..];
        let end = after_open.find(CLOSE).ok_or_else(|| {
            format!(
                "`{{{{` at byte {} is never closed",
                template.len() - rest.len() + start
            )
        })?;
        let placeholder = &after_open[..end];
        out.push_str(
            &fill(placeholder, scope).map_err(|why| format!("`{{{{{placeholder}}}}}`: {why}"))?,
        );
        rest = &after_open[end + CLOSE.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The text one placeholder (what is between the braces) stands for.
fn fill(placeholder: &str, scope: &Scope<'_>) -> Result<String, String> {
    let (path, filter) = match placeholder.split_once('|') {
        Some((path, filter)) => (path.trim(), Some(filter.trim())),
        None => (placeholder.trim(), None),
    };
    let value = resolve(path, scope)?;
    match (filter, value) {
        (None, Value::String(text)) => Ok(text),
        (None, other) | (Some(JSON_FILTER), other) => Ok(other.to_string()),
        (Some(unknown), _) => Err(format!(
            "unknown filter {unknown:?} (the only filter is {JSON_FILTER:?})"
        )),
    }
}

fn resolve(path: &str, scope: &Scope<'_>) -> Result<Value, String> {
    if path.is_empty() {
        return Err("empty reference".to_owned());
    }
    let mut segments = path.split('.');
    let root = segments.next().unwrap_or_default();
    let mut current = if root == "input" {
        scope
            .input
            .as_ref()
            .ok_or("the input document is neither JSON nor text")?
    } else {
        scope
            .metadata
            .get(root)
            .ok_or_else(|| format!("no {root:?} in the workflow metadata"))?
    };
    let mut walked = root.to_owned();
    for segment in segments {
        current =
            step_into(current, segment).ok_or_else(|| format!("{walked} has no {segment:?}"))?;
        walked = format!("{walked}.{segment}");
    }
    Ok(current.clone())
}

fn step_into<'v>(value: &'v Value, segment: &str) -> Option<&'v Value> {
    match value {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn scope(metadata: &Value) -> Scope<'_> {
        Scope {
            metadata,
            input: Some(json!({"order": 7, "lines": [{"sku": "A-1"}], "note": "say \"hi\""})),
        }
    }

    #[test]
    fn fills_metadata_input_and_step_outputs() {
        let meta = json!({"workflow": "wf", "attempt": 2, "steps": {"tag": {"ok": true}}});
        let out = render(
            "{{workflow}}/{{ attempt }}/{{steps.tag}}/{{steps.tag.ok}}/{{input.order}}/{{input.lines.0.sku}}",
            &scope(&meta),
        )
        .unwrap();
        assert_eq!(out, r#"wf/2/{"ok":true}/true/7/A-1"#);
    }

    #[test]
    fn json_filter_quotes_and_escapes_strings() {
        let meta = json!({});
        let out = render(r#"{"note": {{input.note | json}}}"#, &scope(&meta)).unwrap();
        assert_eq!(out, r#"{"note": "say \"hi\""}"#);
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap()["note"],
            "say \"hi\""
        );
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        let meta = json!({});
        assert_eq!(
            render(r#"{"a":{"b":1}}"#, &scope(&meta)).unwrap(),
            r#"{"a":{"b":1}}"#
        );
        assert_eq!(render("", &scope(&meta)).unwrap(), "");
    }

    #[test]
    fn bad_references_are_errors_that_name_them() {
        let meta = json!({"steps": {"tag": {}}});
        let s = scope(&meta);
        let err = render("x {{steps.tag.missing}}", &s).unwrap_err();
        assert!(
            err.contains("{{steps.tag.missing}}") && err.contains("\"missing\""),
            "{err}"
        );
        assert!(render("{{nope}}", &s).unwrap_err().contains("\"nope\""));
        assert!(render("{{ }}", &s).unwrap_err().contains("empty"));
        assert!(render("{{input | yaml}}", &s).unwrap_err().contains("yaml"));
        assert!(
            render("a {{input", &s)
                .unwrap_err()
                .contains("never closed")
        );
        let binary = Scope {
            metadata: &meta,
            input: None,
        };
        assert!(
            render("{{input}}", &binary)
                .unwrap_err()
                .contains("neither JSON nor text")
        );
    }
}
