//! Validates an answer of the API against the OpenAPI description it
//! serves, with a JSON Schema validator (shared by the tests that drive
//! the API).

use serde_json::{Value, json};

/// Validates what `method path_template` answered against the document.
pub fn check(doc: &Value, method: &str, template: &str, status: u16, body: &Value) {
    let operation = &doc["paths"][template][method.to_lowercase()];
    assert!(
        operation.is_object(),
        "{method} {template} is not documented"
    );
    let response = &operation["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {template} answered {status}, which is not documented: {body}"
    );
    let schema = &response["content"]["application/json"]["schema"];
    // The schema with the document's components at its root, so that its
    // `#/components/schemas/…` references resolve.
    let wrapper = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    let validator = jsonschema::validator_for(&wrapper).unwrap_or_else(|e| {
        panic!("{method} {template} {status}: the schema does not compile: {e}")
    });
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {status}: {errors:#?}\n{body:#}"
    );
}
