//! Which lines of an issue description GitLab takes as quick actions, and what it leaves of the
//! text.
//!
//! Source: `lib/gitlab/quick_actions/extractor.rb` (gitlabhq/gitlabhq), `perform_regex`:
//! - the text loses its `\r`s;
//! - only *top-level paragraphs* are searched (`Banzai::Pipeline::QuickActionPipeline`,
//!   `lib/banzai/filter/quick_action_filter.rb`: `<p>` children of the document whose text has a
//!   line starting with `/`), so lines inside fenced or indented code, block quotes (`>` and
//!   GitLab's `>>>` blocks, with their lazy continuation lines), list items, headings and HTML
//!   blocks are never commands;
//! - in such a paragraph (plus the blank line after it), a command is a line that starts with `/`
//!   in column 0 (no leading whitespace), then a known command name in any case, then either the
//!   end of the line or a space and the argument (the rest of the line); the line (with its
//!   newline and the blank lines after it) is removed; inline code `` `…` `` is skipped;
//! - names are matched case-insensitively and reported in lower case; unknown names stay as text;
//! - the result is right-stripped.
//!
//! The Markdown block structure is a reduced CommonMark (what matters for "is this line in a
//! top-level paragraph"); GitLab's substitutions (`/shrug`, `/tableflip`) are not modelled and
//! stay as text.

/// Every quick action name GitLab defines (issue, merge request, epic, commit and work item
/// actions, EE included: `QuickActions::InterpretService.command_definitions`, which the
/// extractor uses whatever the target's type), minus the no-op `/cc` and the substitutions.
pub(crate) const COMMAND_NAMES: &[&str] = &[
    "add_child",
    "add_contacts",
    "add_email",
    "approve",
    "assign",
    "assign_reviewer",
    "award",
    "blocked_by",
    "blocks",
    "board_move",
    "checkin_reminder",
    "clear_health_status",
    "clear_weight",
    "clone",
    "close",
    "confidential",
    "convert_to_ticket",
    "copy_metadata",
    "create_merge_request",
    "done",
    "draft",
    "due",
    "duplicate",
    "epic",
    "estimate",
    "estimate_time",
    "health_status",
    "iteration",
    "label",
    "labels",
    "lock",
    "merge",
    "milestone",
    "move",
    "page",
    "promote",
    "promote_to",
    "promote_to_incident",
    "publish",
    "react",
    "ready",
    "reassign",
    "reassign_reviewer",
    "rebase",
    "relabel",
    "relate",
    "remove_child",
    "remove_contacts",
    "remove_due_date",
    "remove_email",
    "remove_epic",
    "remove_estimate",
    "remove_iteration",
    "remove_label",
    "remove_milestone",
    "remove_parent",
    "remove_reviewer",
    "remove_time_estimate",
    "remove_time_spent",
    "remove_zoom",
    "reopen",
    "request_review",
    "reviewer",
    "set_parent",
    "severity",
    "spend",
    "spend_time",
    "spent",
    "status",
    "submit_review",
    "subscribe",
    "target_branch",
    "timeline",
    "title",
    "todo",
    "type",
    "unapprove",
    "unassign",
    "unassign_reviewer",
    "unlabel",
    "unlink",
    "unlock",
    "unrelate",
    "unsubscribe",
    "weight",
    "zoom",
];

/// A command as the extractor reports it: the lower-cased name and the argument, if not blank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Command {
    pub name: String,
    pub arg: Option<String>,
}

/// The description without its commands, and the commands in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Extracted {
    pub content: String,
    pub commands: Vec<Command>,
}

/// `Extractor#extract_commands`.
pub(crate) fn extract(content: &str) -> Extracted {
    let content = content.replace('\r', "");
    let mut lines: Vec<String> = split_keep_newlines(&content);
    let mut commands = Vec::new();
    for (start, end) in top_level_paragraphs(&lines) {
        let mut end = end;
        if lines.get(end + 1).is_some_and(|l| l == "\n") {
            end += 1;
        }
        let paragraph: String = lines[start..=end].concat();
        let (text, found) = strip_commands(&paragraph);
        commands.extend(found);
        for line in &mut lines[start..=end] {
            line.clear();
        }
        lines[start] = text;
    }
    Extracted {
        content: lines.concat().trim_end().to_owned(),
        commands,
    }
}

/// Ruby's `String#lines`: each line keeps its `\n`.
fn split_keep_newlines(text: &str) -> Vec<String> {
    text.split_inclusive('\n').map(str::to_owned).collect()
}

/// Removes the commands of one paragraph (the regex of `commands_regex`, applied with `gsub`).
fn strip_commands(paragraph: &str) -> (String, Vec<Command>) {
    let chars: Vec<char> = paragraph.chars().collect();
    let mut out = String::new();
    let mut commands = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        // Inline code `.+?` (the dot matches newlines): skipped whole.
        if chars[i] == '`'
            && i + 2 <= chars.len()
            && let Some(len) = chars[i + 2..].iter().position(|c| *c == '`')
        {
            let end = i + 2 + len + 1;
            out.extend(&chars[i..end]);
            i = end;
            continue;
        }
        let at_line_start = i == 0 || chars[i - 1] == '\n';
        if at_line_start
            && chars[i] == '/'
            && let Some((command, end)) = command_at(&chars, i)
        {
            commands.push(command);
            i = end;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    (out, commands)
}

/// `^/(?<cmd>names)(?:[ ](?<arg>[^\n]*))?(?:\s*\n|$)` at `start`; returns the command and where
/// the match ends.
fn command_at(chars: &[char], start: usize) -> Option<(Command, usize)> {
    let name_end = start
        + 1
        + chars[start + 1..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
            .count();
    let name: String = chars[start + 1..name_end].iter().collect::<String>();
    let name = name.to_ascii_lowercase();
    if !COMMAND_NAMES.contains(&name.as_str()) {
        return None;
    }
    let line_end = chars[name_end..]
        .iter()
        .position(|c| *c == '\n')
        .map_or(chars.len(), |p| name_end + p);
    let (arg, after_arg) = if chars.get(name_end) == Some(&' ') {
        let arg: String = chars[name_end + 1..line_end].iter().collect();
        (Some(arg), line_end)
    } else {
        (None, name_end)
    };
    // `\s*\n` (greedy, backing off to the last newline of the whitespace run) or `$`.
    let ws_end = after_arg
        + chars[after_arg..]
            .iter()
            .take_while(|c| c.is_whitespace())
            .count();
    let end = match chars[after_arg..ws_end].iter().rposition(|c| *c == '\n') {
        Some(p) => after_arg + p + 1,
        None if after_arg == chars.len() => after_arg,
        None => return None,
    };
    let arg = arg.map(|a| a.trim().to_owned()).filter(|a| !a.is_empty());
    Some((Command { name, arg }, end))
}

/// Leading spaces (a tab counts as four).
fn indent(line: &str) -> usize {
    let mut n = 0;
    for c in line.chars() {
        match c {
            ' ' => n += 1,
            '\t' => n += 4 - n % 4,
            _ => break,
        }
    }
    n
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// A fence opener: ``` or ~~~ (three or more) after at most three spaces.
fn fence(line: &str) -> Option<(char, usize)> {
    if indent(line) > 3 {
        return None;
    }
    let t = line.trim_start();
    let c = t.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = t.chars().take_while(|x| *x == c).count();
    (n >= 3 && !(c == '`' && t[n..].contains('`'))).then_some((c, n))
}

fn is_atx_heading(line: &str) -> bool {
    let t = line.trim_start();
    let hashes = t.chars().take_while(|c| *c == '#').count();
    indent(line) <= 3
        && (1..=6).contains(&hashes)
        && t[hashes..].chars().next().is_none_or(char::is_whitespace)
}

fn is_thematic_break(line: &str) -> bool {
    let t: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    indent(line) <= 3 && t.len() >= 3 && ['-', '*', '_'].iter().any(|m| t.chars().all(|c| c == *m))
}

fn is_setext_underline(line: &str) -> bool {
    let t = line.trim();
    indent(line) <= 3
        && !t.is_empty()
        && (t.chars().all(|c| c == '=') || t.chars().all(|c| c == '-'))
}

/// A list item marker; returns the content's indentation and whether the item can interrupt a
/// paragraph (a bullet with content, or an ordered item starting at 1).
fn list_item(line: &str) -> Option<(usize, bool)> {
    let lead = indent(line);
    if lead > 3 {
        return None;
    }
    let t = line.trim_start();
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    let marker_len = if matches!(t.chars().next(), Some('-' | '+' | '*')) {
        1
    } else if (1..=9).contains(&digits) && matches!(t[digits..].chars().next(), Some('.' | ')')) {
        digits + 1
    } else {
        return None;
    };
    let rest = &t[marker_len..];
    if !(rest.is_empty() || rest == "\n" || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let has_content = !is_blank(rest);
    let interrupts = has_content && (digits == 0 || t[..digits].parse::<u32>() == Ok(1));
    let spaces = rest.chars().take_while(|c| *c == ' ').count().clamp(1, 4);
    Some((lead + marker_len + spaces, interrupts))
}

fn is_block_quote(line: &str) -> bool {
    indent(line) <= 3 && line.trim_start().starts_with('>')
}

fn is_quote_fence(line: &str) -> bool {
    line.starts_with(">>>")
}

fn is_html_start(line: &str) -> bool {
    let t = line.trim_start();
    indent(line) <= 3
        && t.starts_with('<')
        && t[1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '/' | '!' | '?'))
}

/// What the previous lines left open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Nothing,
    Paragraph { start: usize },
    Fence { marker: char, len: usize },
    QuoteFence,
    IndentedCode,
    Html,
    BlockQuote,
    ListItem { content: usize, after_blank: bool },
}

/// The line ranges (inclusive) of top-level paragraphs with a line that starts with `/`.
fn top_level_paragraphs(lines: &[String]) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut open = Open::Nothing;
    let close_paragraph = |start: usize, end: usize, found: &mut Vec<(usize, usize)>| {
        if lines[start..=end]
            .iter()
            .any(|l| l.trim_start().starts_with('/'))
        {
            found.push((start, end));
        }
    };
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].as_str();
        match open {
            Open::Fence { marker, len } => {
                if fence(line).is_some_and(|(m, n)| {
                    m == marker && n >= len && {
                        let t = line.trim();
                        t.chars().all(|c| c == marker)
                    }
                }) {
                    open = Open::Nothing;
                }
                i += 1;
                continue;
            }
            Open::QuoteFence => {
                if line.trim_end() == ">>>" {
                    open = Open::Nothing;
                }
                i += 1;
                continue;
            }
            Open::Html => {
                if is_blank(line) {
                    open = Open::Nothing;
                }
                i += 1;
                continue;
            }
            Open::IndentedCode => {
                if is_blank(line) || indent(line) >= 4 {
                    i += 1;
                    continue;
                }
            }
            Open::BlockQuote => {
                if is_blank(line) {
                    open = Open::Nothing;
                    i += 1;
                    continue;
                }
                if is_block_quote(line) || !starts_block(line) {
                    // A `>` line, or a lazy continuation of the quoted paragraph.
                    i += 1;
                    continue;
                }
            }
            Open::ListItem {
                content,
                after_blank,
            } => {
                if is_blank(line) {
                    open = Open::ListItem {
                        content,
                        after_blank: true,
                    };
                    i += 1;
                    continue;
                }
                if indent(line) >= content {
                    open = Open::ListItem {
                        content,
                        after_blank: false,
                    };
                    i += 1;
                    continue;
                }
                if !after_blank && !starts_block(line) {
                    // A lazy continuation of the item's paragraph.
                    i += 1;
                    continue;
                }
            }
            Open::Paragraph { start } => {
                if is_blank(line) {
                    close_paragraph(start, i - 1, &mut found);
                    open = Open::Nothing;
                    i += 1;
                    continue;
                }
                if is_setext_underline(line) {
                    // The paragraph was a heading.
                    open = Open::Nothing;
                    i += 1;
                    continue;
                }
                if !interrupts_paragraph(line) {
                    i += 1;
                    continue;
                }
                close_paragraph(start, i - 1, &mut found);
            }
            Open::Nothing => {}
        }
        // Nothing (more) is open: what does this line start?
        open = if is_blank(line) {
            Open::Nothing
        } else if let Some((marker, len)) = fence(line) {
            Open::Fence { marker, len }
        } else if is_quote_fence(line) {
            Open::QuoteFence
        } else if is_block_quote(line) {
            Open::BlockQuote
        } else if is_atx_heading(line) || is_thematic_break(line) {
            Open::Nothing
        } else if let Some((content, _)) = list_item(line) {
            Open::ListItem {
                content,
                after_blank: false,
            }
        } else if indent(line) >= 4 {
            Open::IndentedCode
        } else if is_html_start(line) {
            Open::Html
        } else {
            Open::Paragraph { start: i }
        };
        i += 1;
    }
    if let Open::Paragraph { start } = open {
        close_paragraph(start, lines.len() - 1, &mut found);
    }
    found
}

/// Whether a line opens a block of its own (so it cannot be a lazy continuation line).
fn starts_block(line: &str) -> bool {
    fence(line).is_some()
        || is_block_quote(line)
        || is_atx_heading(line)
        || is_thematic_break(line)
        || list_item(line).is_some()
        || is_html_start(line)
}

/// Whether a line ends the paragraph above it (CommonMark: an indented line or an ordered item
/// not starting at 1 cannot).
fn interrupts_paragraph(line: &str) -> bool {
    fence(line).is_some()
        || is_block_quote(line)
        || is_atx_heading(line)
        || is_thematic_break(line)
        || list_item(line).is_some_and(|(_, interrupts)| interrupts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        extract(text).commands.into_iter().map(|c| c.name).collect()
    }

    #[test]
    fn commands_are_taken_out() {
        let got = extract("Hello\n/close\n/LABEL ~a ~\"b c\"\n\nWorld\r\n/title  New title \n");
        assert_eq!(
            got.commands,
            [
                Command {
                    name: "close".into(),
                    arg: None
                },
                Command {
                    name: "label".into(),
                    arg: Some("~a ~\"b c\"".into())
                },
                Command {
                    name: "title".into(),
                    arg: Some("New title".into())
                },
            ],
            "case-insensitive names, arguments trimmed"
        );
        assert_eq!(
            got.content, "Hello\nWorld",
            "lines removed, blank line eaten"
        );
    }

    #[test]
    fn only_column_zero_in_top_level_paragraphs() {
        for (text, why) in [
            ("  /close", "leading whitespace"),
            ("- /close", "a list item"),
            ("- item\n/close", "a lazy list continuation"),
            ("> /close", "a block quote"),
            ("> quote\n/close", "a lazy quote continuation"),
            (">>>\n/close\n>>>", "a GitLab multi-line quote"),
            ("```\n/close\n```", "a fenced code block"),
            ("    /close", "an indented code block"),
            ("# /close", "a heading"),
            ("<div>\n/close\n</div>", "an HTML block"),
            ("`\n/close\n`", "inline code spanning lines"),
            ("/closed", "not a known name"),
            ("/close.", "not followed by space or end of line"),
            ("/foo bar", "unknown command"),
        ] {
            let got = extract(text);
            assert!(got.commands.is_empty(), "{why}: {:?}", got.commands);
            assert_eq!(got.content, text.trim_end(), "{why}: text kept");
        }
        assert_eq!(
            names("```\n/close\n```\n\n/reopen"),
            ["reopen"],
            "after the block"
        );
        assert_eq!(names("text\n/close\nmore"), ["close"], "inside a paragraph");
        assert_eq!(
            names("Heading\n===\n/close"),
            ["close"],
            "after a setext heading"
        );
    }

    #[test]
    fn tail_and_stripping() {
        let got = extract("https://acme.example/browse/OPS-1\n\n/severity high\n/assign me");
        assert_eq!(got.content, "https://acme.example/browse/OPS-1");
        assert_eq!(names("/due 2025-03-01"), ["due"]);
        assert_eq!(
            extract("a `/close` b\n/close\t\nc").content,
            "a `/close` b\nc",
            "whitespace after the name"
        );
    }
}
