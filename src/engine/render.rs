//! What a Jira issue becomes in GitLab: the title, the description (with the browse link on a
//! line of its own, which is also how an interrupted create is found again) and the labels.

use crate::config::RuleConfig;
use crate::domain::{IssueSnapshot, NewObject};

/// GitLab rejects longer titles.
pub const MAX_TITLE_CHARS: usize = 255;

/// GitLab's description limit is 1,048,576 characters; keep well under it.
const MAX_DESCRIPTION_CHARS: usize = 1_000_000;

/// Builds the object to create for `snap` under `rule`.
pub fn new_object(rule: &RuleConfig, snap: &IssueSnapshot, browse_url: &str) -> NewObject {
    let severity = rule.severity_of(snap.priority.as_deref());
    let mut labels = rule.labels.clone();
    if let Some(tpl) = &rule.severity_label {
        labels.push(tpl.replace("{severity}", severity.as_str()));
    }
    NewObject {
        jira_key: snap.key.clone(),
        title: title(&rule.title, snap),
        description: description(snap, browse_url),
        labels,
        severity,
        created_at: snap.created,
        start_time: snap.created,
    }
}

/// A stable hash (FNV-1a 64, hex) of what the object shows: its title and description. Stored
/// with the mapping, it tells whether a Jira edit needs a GitLab update.
pub fn content_hash(obj: &NewObject) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in obj
        .title
        .bytes()
        .chain(std::iter::once(0))
        .chain(obj.description.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The title from the rule's template, on one line, cut to 255 characters.
pub fn title(template: &str, snap: &IssueSnapshot) -> String {
    let summary = if snap.summary.trim().is_empty() {
        "(no summary in Jira)"
    } else {
        snap.summary.trim()
    };
    let full = template
        .replace("{key}", snap.key.as_str())
        .replace("{summary}", summary);
    let one_line: String = full.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate(&one_line, MAX_TITLE_CHARS)
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max_chars - 1).collect();
    out.push('…');
    out
}

/// The browse link on its own first line, then the Jira description.
pub fn description(snap: &IssueSnapshot, browse_url: &str) -> String {
    let body = snap
        .description
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or("_No description in Jira._");
    let text = format!("{browse_url}\n\n{body}\n");
    truncate(&text, MAX_DESCRIPTION_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JiraKey;
    use chrono::Utc;

    fn snap(summary: &str, description: Option<&str>) -> IssueSnapshot {
        IssueSnapshot {
            key: JiraKey::parse("OPS-7").unwrap(),
            summary: summary.into(),
            description: description.map(Into::into),
            created: Utc::now(),
            updated: Utc::now(),
            resolved_at: None,
            status: "Open".into(),
            priority: None,
            labels: vec![],
            issue_type: None,
        }
    }

    /// A 300-character summary becomes a 255-character title ending in an ellipsis.
    #[test]
    fn long_title_is_cut_to_255() {
        let t = title("[{key}] {summary}", &snap(&"é".repeat(300), None));
        assert_eq!(t.chars().count(), 255);
        assert!(t.starts_with("[OPS-7] éé") && t.ends_with('…'), "{t}");
    }

    /// Newlines in a summary do not reach the one-line title; an empty one is named.
    #[test]
    fn title_is_one_line() {
        assert_eq!(
            title("{key}: {summary}", &snap("a\nb  c", None)),
            "OPS-7: a b c"
        );
        assert_eq!(
            title("{key}: {summary}", &snap("  ", None)),
            "OPS-7: (no summary in Jira)"
        );
    }

    /// A null description still yields the browse link on its own line.
    #[test]
    fn null_description() {
        let d = description(&snap("x", None), "https://j/browse/OPS-7");
        assert!(d.lines().next() == Some("https://j/browse/OPS-7"), "{d}");
        assert!(d.contains("No description"), "{d}");
    }
}
