//! The input document's JSON Schema (draft 2020-12), generated from the types in
//! [`super::document`] by `schemars`: what `stepguard policy schema` prints and
//! `policies/schema/input.json` holds. A unit test fails when the two differ.

use super::PolicyInput;

/// Where the committed schema lives, relative to the repository root.
pub const SCHEMA_PATH: &str = "policies/schema/input.json";

/// The schema as pretty-printed JSON with a final newline (the committed file's exact text).
pub fn schema_text() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator()
        .into_root_schema_for::<PolicyInput<'static>>();
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
