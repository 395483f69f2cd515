//! Placeholder until the wiki converter lands.
pub fn wiki_to_markdown(text: &str) -> String {
    text.to_owned()
}
