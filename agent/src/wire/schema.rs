//! The message contract: JSON Schemas in `schemas/`, checked against what the agent and
//! workers really publish.

use std::path::PathBuf;

/// Validates `v` against `schemas/{name}`; panics listing every violation.
pub fn check(name: &str, v: &serde_json::Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas")
        .join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("schema {}: {e}", path.display()));
    let schema: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("schema {name}: {e}"));
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:?}\nin {v}");
}

/// Validates an incident event against the schema of the version it says it is:
/// `event.v2.json`, or `event.v3.json` for an event that names its clip (clips are on by
/// default, and a camera without them sends version 2).
#[allow(dead_code)] // the integration tests' (this file is also their `common::schema`)
pub fn check_event(v: &serde_json::Value) {
    match v["version"].as_u64() {
        Some(2) => check("event.v2.json", v),
        Some(3) => check("event.v3.json", v),
        other => panic!("incident event of version {other:?}, not 2 or 3: {v}"),
    }
}
