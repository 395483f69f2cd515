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
    let full = strip_controls(&full);
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

/// The browse link on its own first line, then the Jira description, made inert: no line of
/// it can run as a GitLab quick action, and no control character reaches GitLab.
pub fn description(snap: &IssueSnapshot, browse_url: &str) -> String {
    let body = snap
        .description
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or("_No description in Jira._");
    let text = format!("{browse_url}\n\n{}\n", inert(&strip_controls(body)));
    truncate(&text, MAX_DESCRIPTION_CHARS)
}

/// `text` without C0 control characters other than tab and newline. PostgreSQL refuses NUL in
/// text columns, so GitLab would reject the whole write; a carriage return is deleted by
/// GitLab's quick-action extractor (`content.delete!("\r")` in
/// `lib/gitlab/quick_actions/extractor.rb`), which can join what follows it to the line after.
fn strip_controls(text: &str) -> String {
    text.replace("\r\n", "\n")
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t') || !c.is_ascii())
        .collect()
}

/// Makes every line of `markdown` that GitLab could read as a quick action (`/close`, `/move …`,
/// `/title …`: a line beginning with `/`, `^\/(?<cmd>…)` in
/// `lib/gitlab/quick_actions/extractor.rb`, run on create and update by
/// `IssuableBaseService#handle_quick_actions`) into visible text that runs nothing.
///
/// Outside fenced code the slash is backslash-escaped, which Markdown renders as a plain `/`.
/// Inside fenced code a backslash would show, and GitLab's extractor only skips a fence it
/// recognises (exactly three backticks), so such a line is prefixed with a zero-width space.
/// Lines indented by spaces or inside list items never match `^\/` and are left alone.
fn inert(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len() + 16);
    let mut fence = None;
    for line in markdown.split('\n') {
        fence = after_line(fence, line);
        if line.starts_with('/') {
            out.push_str(if fence.is_some() { "\u{200B}" } else { "\\" });
        }
        out.push_str(line);
        out.push('\n');
    }
    out.pop();
    out
}

/// The line that ends a description cut to fit a size limit.
pub const TRUNCATED_NOTE: &str =
    "_The description was truncated to fit GitLab's request size limit; the full text is in Jira._";

/// The browse link line of a description made by [`description`], and the Jira text after it.
fn split_description(description: &str) -> (&str, &str) {
    match description.split_once('\n') {
        Some((link, rest)) => (link, rest.trim_matches('\n')),
        None => (description, ""),
    }
}

/// The characters of Jira text in `obj`'s description: what [`truncated`] may keep.
pub fn body_chars(obj: &NewObject) -> usize {
    split_description(&obj.description).1.chars().count()
}

/// `obj` with the Jira text of its description cut to at most `keep` characters (back to the
/// end of a line, where the cut has one): the browse link stays on the first line, a code fence
/// the cut leaves open is closed, and [`TRUNCATED_NOTE`] is the last line. For a request a
/// reverse proxy refuses as too large (413).
pub fn truncated(obj: &NewObject, keep: usize) -> NewObject {
    let (link, body) = split_description(&obj.description);
    let mut kept: String = body.chars().take(keep).collect();
    if kept.chars().count() < body.chars().count()
        && let Some(end) = kept.rfind('\n')
    {
        kept.truncate(end);
    }
    let kept = kept.trim_end();
    let mut text = format!("{link}\n\n");
    if !kept.is_empty() {
        text.push_str(kept);
        text.push('\n');
        if let Some((c, n)) = open_fence(kept) {
            text.extend(std::iter::repeat_n(c, n));
            text.push('\n');
        }
        text.push('\n');
    }
    text.push_str(TRUNCATED_NOTE);
    text.push('\n');
    NewObject {
        description: text,
        ..obj.clone()
    }
}

/// The code fence `markdown` leaves open at its end, if any: its character and length.
fn open_fence(markdown: &str) -> Option<(char, usize)> {
    markdown.split('\n').fold(None, after_line)
}

/// The fence open after `line`, given the one open before it (CommonMark: a fence of three or
/// more backticks or tildes, indented at most three spaces, closed by a fence of the same
/// character at least as long with nothing after it).
fn after_line(open: Option<(char, usize)>, line: &str) -> Option<(char, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let marker = (indent <= 3)
        .then(|| fence_marker(&line[indent..]))
        .flatten();
    match (open, marker) {
        (None, Some((c, n, _))) => Some((c, n)),
        (Some((c, n)), Some((mc, mn, rest))) if mc == c && mn >= n && rest.trim().is_empty() => {
            None
        }
        (open, _) => open,
    }
}

/// A CommonMark code fence at the start of `line`: its character, its length and the rest.
fn fence_marker(line: &str) -> Option<(char, usize, &str)> {
    let c = line.chars().next().filter(|c| matches!(c, '`' | '~'))?;
    let n = line.chars().take_while(|x| *x == c).count();
    (n >= 3).then(|| (c, n, &line[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JiraKey;
    use chrono::Utc;

    fn snap(summary: &str, description: Option<&str>) -> IssueSnapshot {
        IssueSnapshot {
            id: None,
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
            fields: Default::default(),
            transitions: None,
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
        assert_eq!(
            title("{key}: {summary}", &snap("a\u{0}b\u{7}", None)),
            "OPS-7: ab",
            "control characters are dropped (PostgreSQL refuses NUL)"
        );
    }

    /// No line of a Jira description can run as a quick action: outside code the slash is
    /// escaped (it still reads `/close`), inside a fence a zero-width space leads the line;
    /// control characters are gone, tab and newline stay.
    #[test]
    fn descriptions_are_inert() {
        let jira = "intro\n/close\r\n/title pwned\n  /assign me\n- /label ~x\n````\n/move a/b\n```\n/due\n````\n/confidential\u{0}\tx";
        let d = description(&snap("x", Some(jira)), "https://j/browse/OPS-7");
        let expected = "https://j/browse/OPS-7\n\nintro\n\\/close\n\\/title pwned\n  /assign me\n- /label ~x\n````\n\u{200B}/move a/b\n```\n\u{200B}/due\n````\n\\/confidential\tx\n";
        assert_eq!(d, expected);
        assert!(
            !d.lines().any(|l| l.starts_with('/')),
            "no line starts with a slash: {d}"
        );
    }

    /// A description cut to fit keeps the link on its first line and whole lines of the text,
    /// closes a code fence it cut open, and ends with the note; nothing left to cut keeps the
    /// link and the note.
    #[test]
    fn truncated_keeps_the_link_and_ends_with_the_note() {
        let rule = crate::config::RuleConfig {
            name: "r".into(),
            jql: "x".into(),
            destination: crate::config::Destination {
                target: crate::domain::Target::Incident,
                project: "p".into(),
                project_id: None,
                alert: None,
            },
            labels: vec![],
            since: None,
            cron: "0 * * * * *".into(),
            title: "{key}".into(),
            severity_label: None,
            severity: Default::default(),
            on_leave: crate::config::OnLeave::Label,
            on_delete: crate::config::OnDelete::Close,
            history: Default::default(),
            timeline_events: false,
        };
        let text = "one\ntwo\n```\n/code\nmore code\n```\nafter";
        let obj = new_object(&rule, &snap("x", Some(text)), "https://j/browse/OPS-7");
        assert_eq!(
            body_chars(&obj),
            text.chars().count() + 1,
            "with the zero-width space"
        );
        let cut = truncated(&obj, 18);
        assert_eq!(
            cut.description,
            format!("https://j/browse/OPS-7\n\none\ntwo\n```\n```\n\n{TRUNCATED_NOTE}\n")
        );
        let all = truncated(&obj, 0);
        assert_eq!(
            all.description,
            format!("https://j/browse/OPS-7\n\n{TRUNCATED_NOTE}\n")
        );
        assert_eq!(cut.title, obj.title);
    }

    /// A null description still yields the browse link on its own line.
    #[test]
    fn null_description() {
        let d = description(&snap("x", None), "https://j/browse/OPS-7");
        assert!(d.lines().next() == Some("https://j/browse/OPS-7"), "{d}");
        assert!(d.contains("No description"), "{d}");
    }
}
