//! Placeholder until the ADF converter lands.
pub fn adf_to_markdown(doc: &serde_json::Value) -> String {
    doc.to_string()
}
