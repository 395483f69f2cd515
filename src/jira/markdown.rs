//! Writing GitLab Flavored Markdown: escaping plain text, code spans and fences, link
//! destinations, an inline writer that keeps emphasis delimiters balanced, and block helpers
//! (list-item indentation, quotes, tables, final tidying).
//!
//! This module owns how Markdown is *written*; it knows nothing about Jira's formats, which
//! [`super::adf`] and [`super::wiki`] parse.
//!
//! # Escaping policy
//!
//! Jira text is data, so nothing in it may become formatting, HTML or a GitLab reference. The
//! escaping is conservative where GitLab would act on a character and silent elsewhere, so that
//! ordinary prose (`.`, `-`, `(`, `!` mid-sentence) stays as typed:
//!
//! - always backslash-escaped: `` ` `` `*` `[` `]` `|` `~` `$` (emphasis, code, links, tables,
//!   strikethrough, label references `~x`, math and snippet references `$1`);
//! - `_` only where it could open or close emphasis, i.e. not between two letters or digits, so
//!   `snake_case_name` is left alone;
//! - at the start of a line: `#` `>` `-` `+` `=` and `1.`/`1)` list markers (headings, quotes,
//!   lists, setext underlines, rules); leading spaces are dropped so text never becomes an
//!   indented code block;
//! - GitLab references: `@name` (a mention would notify a GitLab user), `#1`, `!1`, `%name`,
//!   `&1`, `{+`/`{-`; GitLab does not resolve a reference whose sigil is backslash-escaped;
//! - `<` becomes `&lt;` (GitLab sanitises raw HTML, but `<script>` should read as text, not
//!   vanish), and `&` is escaped only where it would start an entity such as `&amp;`;
//! - `\` is doubled only before punctuation or at a line end, so `C:\Users` stays readable;
//! - bare `http(s)://` URLs become `<…>` autolinks, so their `_` and `*` need no escaping.

use std::borrow::Cow;

/// Deepest nesting either converter follows. Deeper input is rendered as plain text, so that
/// corrupt or hostile input cannot exhaust the stack; real Jira documents nest a handful of
/// levels.
pub(crate) const MAX_DEPTH: usize = 64;

/// Where inline content ends up, which decides how a hard line break is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InlineMode {
    /// A paragraph or list item: a break is a backslash at the end of the line.
    Block,
    /// A heading must stay on one line: a break becomes a space.
    Heading,
    /// A GFM table cell must stay on one line: a break becomes `<br>`, and `|` in code is escaped.
    TableCell,
}

/// The formatting that applies to one run of inline text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Marks {
    /// Link target; the link wraps all other marks.
    pub(crate) link: Option<String>,
    pub(crate) strong: bool,
    pub(crate) em: bool,
    pub(crate) strike: bool,
    /// A code span; it cannot contain other formatting, so it is innermost.
    pub(crate) code: bool,
}

/// A mark that wraps text, in the order marks are nested (outermost first).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Wrap {
    Link(String),
    Strong,
    Em,
    Strike,
}

impl Marks {
    /// The wrapping marks, outermost first.
    fn wraps(&self) -> Vec<Wrap> {
        let mut v = Vec::new();
        if let Some(href) = &self.link {
            v.push(Wrap::Link(href.clone()));
        }
        if self.strong {
            v.push(Wrap::Strong);
        }
        if self.em {
            v.push(Wrap::Em);
        }
        if self.strike {
            v.push(Wrap::Strike);
        }
        v
    }
}

/// A mark the writer has opened, with the text that closes it.
struct OpenWrap {
    wrap: Wrap,
    closer: String,
}

/// Builds one run of inline Markdown from text pieces that each carry [`Marks`].
///
/// Marks shared by neighbouring pieces stay open across them (`**a b**`, not `**a****b**`), and
/// whitespace at the edge of a marked piece is moved outside its delimiters, because CommonMark
/// does not close `**a **`.
pub(crate) struct InlineWriter {
    out: String,
    open: Vec<OpenWrap>,
    /// Whitespace seen but not yet written: it goes after closers and before openers.
    pending_ws: String,
    /// A hard break seen but not yet written: dropped if nothing follows it.
    pending_break: bool,
    /// Where the last code span starts and ends in `out`, and its text, so that two adjacent
    /// spans are merged (written back to back, their backticks would run together).
    last_code: Option<(usize, usize, String)>,
    mode: InlineMode,
}

impl InlineWriter {
    /// An empty writer for content that ends up in `mode`.
    pub(crate) fn new(mode: InlineMode) -> Self {
        Self {
            out: String::new(),
            open: Vec::new(),
            pending_ws: String::new(),
            pending_break: false,
            last_code: None,
            mode,
        }
    }

    /// Plain text: escaped, then wrapped in `marks` (as a code span if `marks.code`).
    pub(crate) fn text(&mut self, text: &str, marks: &Marks) {
        if marks.code {
            self.code(text, marks);
            return;
        }
        let text: Cow<'_, str> = if self.mode != InlineMode::Block && text.contains(['\n', '\r']) {
            Cow::Owned(text.replace(['\n', '\r'], " "))
        } else {
            Cow::Borrowed(text)
        };
        let core = text.trim_matches(char::is_whitespace);
        if core.is_empty() {
            self.pending_ws.push_str(&text);
            return;
        }
        let lead_len = text.len() - text.trim_start_matches(char::is_whitespace).len();
        self.pending_ws.push_str(&text[..lead_len]);
        self.sync(marks);
        let autolink = !self.open.iter().any(|o| matches!(o.wrap, Wrap::Link(_)));
        if core.contains('\n') {
            // A blank line would end the paragraph (and any open mark) early.
            let lines: Vec<&str> = core.split('\n').filter(|l| !l.trim().is_empty()).collect();
            escape_into(&mut self.out, &lines.join("\n"), autolink);
        } else {
            escape_into(&mut self.out, core, autolink);
        }
        self.pending_ws.push_str(&text[lead_len + core.len()..]);
    }

    /// A code span holding `text` verbatim, wrapped in the other `marks`.
    pub(crate) fn code(&mut self, text: &str, marks: &Marks) {
        if text.is_empty() {
            return;
        }
        let outer = Marks {
            code: false,
            ..marks.clone()
        };
        self.sync(&outer);
        let merged = match self.last_code.take() {
            Some((start, end, prev)) if end == self.out.len() => {
                self.out.truncate(start);
                prev + text
            }
            _ => text.to_owned(),
        };
        let start = self.out.len();
        self.out
            .push_str(&code_span(&merged, self.mode == InlineMode::TableCell));
        self.last_code = Some((start, self.out.len(), merged));
    }

    /// Markdown written as is, outside any marks (placeholders, `<br>`).
    pub(crate) fn raw(&mut self, markdown: &str) {
        if markdown.is_empty() {
            return;
        }
        self.sync(&Marks::default());
        self.out.push_str(markdown);
    }

    /// A hard line break (written only if more content follows).
    pub(crate) fn hard_break(&mut self) {
        self.pending_break = true;
    }

    /// The Markdown written so far, with every mark closed.
    pub(crate) fn finish(mut self) -> String {
        while let Some(o) = self.open.pop() {
            self.out.push_str(&o.closer);
        }
        self.out
    }

    /// Closes the open marks that `marks` does not continue, writes pending whitespace or break,
    /// then opens the marks that are new.
    fn sync(&mut self, marks: &Marks) {
        let wanted = marks.wraps();
        let keep = self
            .open
            .iter()
            .zip(&wanted)
            .take_while(|(o, w)| o.wrap == **w)
            .count();
        while self.open.len() > keep {
            if let Some(o) = self.open.pop() {
                self.out.push_str(&o.closer);
            }
        }
        self.flush_gap();
        for wrap in wanted.into_iter().skip(keep) {
            let (opener, closer) = match &wrap {
                Wrap::Link(href) => ("[".to_owned(), format!("]({})", link_destination(href))),
                Wrap::Strong => ("**".to_owned(), "**".to_owned()),
                // `_` cannot open emphasis inside a word; `*` can.
                Wrap::Em
                    if self
                        .out
                        .chars()
                        .next_back()
                        .is_some_and(char::is_alphanumeric) =>
                {
                    ("*".to_owned(), "*".to_owned())
                }
                Wrap::Em => ("_".to_owned(), "_".to_owned()),
                Wrap::Strike => ("~~".to_owned(), "~~".to_owned()),
            };
            self.out.push_str(&opener);
            self.open.push(OpenWrap { wrap, closer });
        }
    }

    /// Writes the pending break or whitespace, never at the start of the output or of a line.
    fn flush_gap(&mut self) {
        let ws = std::mem::take(&mut self.pending_ws);
        if std::mem::take(&mut self.pending_break) {
            if !self.out.is_empty() {
                self.out.push_str(match self.mode {
                    InlineMode::Block => "\\\n",
                    InlineMode::Heading => " ",
                    InlineMode::TableCell => "<br>",
                });
            }
        } else if !ws.is_empty() && !self.out.is_empty() && !self.out.ends_with('\n') {
            // A newline in the gap stays a (soft) line break; nothing may follow it on the new
            // line, or line-start escaping would not see the line start.
            if ws.contains('\n') {
                self.out.push('\n');
            } else {
                self.out.push_str(&ws);
            }
        }
    }
}

/// Appends `text` escaped for Markdown; whether it starts a line is read from `out`.
pub(crate) fn escape_into(out: &mut String, text: &str, autolink: bool) {
    let prev = out.chars().next_back();
    let line_start = prev.is_none_or(|c| c == '\n');
    escape_with(out, text, prev, line_start, autolink);
}

/// `text` escaped for use in the middle of a line (labels, placeholder names).
pub(crate) fn escape_fragment(text: &str) -> String {
    let mut out = String::new();
    escape_with(&mut out, text, Some(' '), false, false);
    out
}

/// The escaper behind [`escape_into`]; see the module documentation for the policy.
fn escape_with(
    out: &mut String,
    text: &str,
    mut prev: Option<char>,
    mut line_start: bool,
    autolink: bool,
) {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            out.push('\n');
            prev = Some('\n');
            line_start = true;
            i += 1;
            continue;
        }
        if c == '\r' || (line_start && (c == ' ' || c == '\t')) {
            i += 1;
            continue;
        }
        if autolink
            && prev.is_none_or(|p| p.is_whitespace() || matches!(p, '(' | '"' | '\''))
            && let Some(end) = url_end(&chars, i)
        {
            out.push('<');
            out.extend(&chars[i..end]);
            out.push('>');
            prev = Some('>');
            line_start = false;
            i = end;
            continue;
        }
        if line_start {
            line_start = false;
            if let Some(digits) = ordered_marker_digits(&chars[i..]) {
                out.extend(&chars[i..i + digits]);
                out.push('\\');
                out.push(chars[i + digits]);
                prev = Some(chars[i + digits]);
                i += digits + 1;
                continue;
            }
            if matches!(c, '#' | '>' | '-' | '+' | '=') {
                out.push('\\');
                out.push(c);
                prev = Some(c);
                i += 1;
                continue;
            }
        }
        let escape = match c {
            '`' | '*' | '[' | ']' | '|' | '~' | '$' => true,
            '\\' => next.is_none_or(|n| n.is_ascii_punctuation() || n == '\n' || n == '\r'),
            '_' => {
                !(prev.is_some_and(char::is_alphanumeric)
                    && next.is_some_and(char::is_alphanumeric))
            }
            '&' => starts_entity_or_reference(&chars[i + 1..]),
            '@' => !prev.is_some_and(is_word_char) && next.is_some_and(is_word_char),
            '#' | '!' => next.is_some_and(|n| n.is_ascii_digit()),
            '%' => {
                !prev.is_some_and(char::is_alphanumeric)
                    && next.is_some_and(|n| n.is_alphanumeric() || n == '"')
            }
            '{' => matches!(next, Some('+' | '-')),
            _ => false,
        };
        if c == '<' {
            out.push_str("&lt;");
        } else {
            if escape {
                out.push('\\');
            }
            out.push(c);
        }
        prev = Some(c);
        i += 1;
    }
}

/// Returns true if and only if `c` can be part of a GitLab username.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Returns true if and only if `rest` (what follows a `&`) would make the `&` an entity such as
/// `&amp;`/`&#38;` or a GitLab epic reference `&1`.
fn starts_entity_or_reference(rest: &[char]) -> bool {
    if rest.first().is_some_and(char::is_ascii_digit) {
        return true;
    }
    let name = rest
        .iter()
        .take(32)
        .take_while(|c| c.is_ascii_alphanumeric() || **c == '#')
        .count();
    name > 0 && rest.get(name) == Some(&';')
}

/// The digit count of an ordered-list marker (`12.` or `12)` then a space or the end) at the
/// start of `chars`.
fn ordered_marker_digits(chars: &[char]) -> Option<usize> {
    let digits = chars.iter().take_while(|c| c.is_ascii_digit()).count();
    let delimiter_ok = matches!(chars.get(digits), Some('.' | ')'));
    let then_space = chars
        .get(digits + 1)
        .is_none_or(|c| *c == ' ' || *c == '\t');
    ((1..=9).contains(&digits) && delimiter_ok && then_space).then_some(digits)
}

/// Where a bare `http://`/`https://` URL starting at `start` ends (exclusive), with trailing
/// sentence punctuation left out, as GFM's autolinker does.
fn url_end(chars: &[char], start: usize) -> Option<usize> {
    let rest = &chars[start..];
    let scheme = ["https://", "http://"].into_iter().find(|s| {
        rest.len() > s.len()
            && rest
                .iter()
                .zip(s.chars())
                .all(|(a, b)| a.eq_ignore_ascii_case(&b))
    })?;
    let mut end = start
        + rest
            .iter()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '<' | '>' | '|' | '`' | '"'))
            .count();
    loop {
        let last = chars[end - 1];
        let opens = chars[start..end].iter().filter(|c| **c == '(').count();
        let closes = chars[start..end].iter().filter(|c| **c == ')').count();
        if matches!(
            last,
            '.' | ',' | ':' | ';' | '!' | '?' | '\'' | '*' | '_' | '~'
        ) || (last == ')' && closes > opens)
        {
            end -= 1;
        } else {
            break;
        }
    }
    (end - start > scheme.len()).then_some(end)
}

/// A code span for `text`, with a backtick fence longer than any run inside it.
pub(crate) fn code_span(text: &str, in_table: bool) -> String {
    let text = text.replace(['\n', '\r'], " ");
    if text.is_empty() {
        return String::new();
    }
    let fence = "`".repeat(longest_run(&text, '`') + 1);
    // CommonMark strips one space from each side when both are present, and a backtick at an
    // edge would merge with the fence: pad in both cases.
    let pad = text.starts_with('`')
        || text.ends_with('`')
        || (text.starts_with(' ') && text.ends_with(' ') && !text.trim().is_empty());
    let pad = if pad { " " } else { "" };
    let body = if in_table {
        text.replace('|', "\\|")
    } else {
        text
    };
    format!("{fence}{pad}{body}{pad}{fence}")
}

/// A fenced code block; the fence is longer than any backtick run in `code`, and `lang` is cut
/// down to characters that are safe in an info string.
pub(crate) fn fenced_code(code: &str, lang: &str) -> String {
    let code = code.trim_end_matches(['\n', '\r']);
    let fence = "`".repeat(3.max(longest_run(code, '`') + 1));
    let lang: String = lang
        .trim()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '+' | '-' | '#' | '.' | '_'))
        .take(40)
        .collect();
    if code.is_empty() {
        format!("{fence}{lang}\n{fence}")
    } else {
        format!("{fence}{lang}\n{code}\n{fence}")
    }
}

/// The length of the longest run of `c` in `text`.
fn longest_run(text: &str, c: char) -> usize {
    let (mut longest, mut current) = (0, 0);
    for ch in text.chars() {
        current = if ch == c { current + 1 } else { 0 };
        longest = longest.max(current);
    }
    longest
}

/// `href` made safe as an inline link destination: characters that would end it, or split a
/// table cell, are percent-encoded.
pub(crate) fn link_destination(href: &str) -> String {
    let mut out = String::with_capacity(href.len());
    for c in href.trim().chars() {
        match c {
            ' ' => out.push_str("%20"),
            '(' => out.push_str("%28"),
            ')' => out.push_str("%29"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            '|' => out.push_str("%7C"),
            '\\' => out.push_str("%5C"),
            '`' => out.push_str("%60"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// An ATX heading; `level` is clamped to 1–6 and empty text gives nothing.
pub(crate) fn heading(level: u64, mut text: String) -> String {
    if text.is_empty() {
        return String::new();
    }
    // A trailing run of `#` after a space would be read as the heading's closing sequence.
    let kept = text.trim_end_matches('#').len();
    if kept < text.len() && (kept == 0 || text[..kept].ends_with(' ')) {
        text.insert(kept, '\\');
    }
    format!("{} {text}", "#".repeat(level.clamp(1, 6) as usize))
}

/// The placeholder for an attachment that is not copied to GitLab.
pub(crate) fn attachment_placeholder(name: &str) -> String {
    let name = name.trim();
    let name = if name.is_empty() { "file" } else { name };
    format!("_[attachment: {}]_", escape_fragment(name))
}

/// `body` with `first` before its first line and `rest` before every other non-empty line.
/// Empty lines get no prefix beyond its non-blank part, so no line ends in whitespace.
pub(crate) fn prefix_lines(body: &str, first: &str, rest: &str) -> String {
    let mut out = String::with_capacity(body.len() + first.len());
    for (i, line) in body.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let prefix = if i == 0 { first } else { rest };
        if line.is_empty() {
            out.push_str(prefix.trim_end());
        } else {
            out.push_str(prefix);
            out.push_str(line);
        }
    }
    out
}

/// `body` as a block quote (empty if `body` is).
pub(crate) fn quote(body: &str) -> String {
    if body.trim().is_empty() {
        return String::new();
    }
    prefix_lines(body, "> ", "> ")
}

/// A GFM table whose first row is the header. Cells must already be single-line Markdown with
/// `|` escaped; short rows are padded.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    if columns == 0 {
        return String::new();
    }
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for i in 0..columns {
            let cell = cells.get(i).map_or("", |c| c.trim());
            s.push(' ');
            s.push_str(cell);
            s.push_str(" |");
        }
        s
    };
    let mut out = vec![line(&rows[0]), format!("|{}", " --- |".repeat(columns))];
    out.extend(rows[1..].iter().map(|r| line(r)));
    out.join("\n")
}

/// Blocks separated by one blank line; empty blocks are dropped.
pub(crate) fn join_blocks(blocks: impl IntoIterator<Item = String>) -> String {
    blocks
        .into_iter()
        .filter(|b| !b.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The final form: no trailing whitespace on any line, no blank lines at either end.
///
/// GitLab reads a document that opens with a `---` or `;;;` line as front matter and hides it,
/// so a leading rule is written as `***` and a leading `;;;` is escaped.
pub(crate) fn tidy(markdown: &str) -> String {
    let mut out = markdown
        .split('\n')
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned();
    if out == "---" || out.starts_with("---\n") {
        out.replace_range(..3, "***");
    } else if out.starts_with(";;;") {
        out.insert(0, '\\');
    }
    out
}

/// The text of a paragraph of plain text: blank lines separate paragraphs and other newlines
/// are hard breaks. Used where a converter gives up on structure.
pub(crate) fn plain_paragraphs(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let paragraphs = text.split("\n\n").map(|para| {
        let mut w = InlineWriter::new(InlineMode::Block);
        for (i, line) in para.split('\n').enumerate() {
            if i > 0 {
                w.hard_break();
            }
            w.text(line, &Marks::default());
        }
        w.finish()
    });
    join_blocks(paragraphs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// Plain text is escaped only where Markdown or GitLab would act on it.
    #[rstest]
    #[case::prose(
        "Hello, world. It's 5-6 items (roughly)!",
        "Hello, world. It's 5-6 items (roughly)!"
    )]
    #[case::star("a*b*c", "a\\*b\\*c")]
    #[case::snake_case("file_name_here", "file_name_here")]
    #[case::underscore_edges("_x_", "\\_x\\_")]
    #[case::heading_marker("# not a heading", "\\# not a heading")]
    #[case::issue_ref("#1 first", "\\#1 first")]
    #[case::issue_ref_mid("see #12 and !3", "see \\#12 and \\!3")]
    #[case::list_marker("- item", "\\- item")]
    #[case::ordered_marker("1. item", "1\\. item")]
    #[case::decimal_at_start("3.14 is pi", "3.14 is pi")]
    #[case::quote_marker("> quoted", "\\> quoted")]
    #[case::html("<script>alert(1)</script>", "&lt;script>alert(1)&lt;/script>")]
    #[case::entity("&amp; R&D", "\\&amp; R&D")]
    #[case::mention(
        "ping @alice, mail bob@example.com",
        "ping \\@alice, mail bob@example.com"
    )]
    #[case::money_and_label("$5 or ~5", "\\$5 or \\~5")]
    #[case::milestone("%v1 at 50% done", "\\%v1 at 50% done")]
    #[case::backslash("C:\\Users and \\*", "C:\\Users and \\\\\\*")]
    #[case::brackets("[WIP] a|b", "\\[WIP\\] a\\|b")]
    #[case::url("see https://x.org/a_b*c.", "see <https://x.org/a_b*c>.")]
    #[case::url_in_parens("(https://x.org/a_(b))", "(<https://x.org/a_(b)>)")]
    #[case::bare_scheme("http:// alone", "http:// alone")]
    #[case::indent("    indented", "indented")]
    #[case::second_line("a\n- b\n  # c", "a\n\\- b\n\\# c")]
    fn escapes_plain_text(#[case] input: &str, #[case] expected: &str) {
        let mut out = String::new();
        escape_into(&mut out, input, true);
        assert_eq!(out, expected, "escaping of {input:?}");
    }

    /// Code spans use a fence longer than any backtick run and pad where CommonMark needs it.
    #[rstest]
    #[case::simple("a", false, "`a`")]
    #[case::inner_tick("a`b", false, "``a`b``")]
    #[case::edge_tick("`a", false, "`` `a ``")]
    #[case::spaces(" a ", false, "`  a  `")]
    #[case::table_pipe("a|b", true, "`a\\|b`")]
    #[case::newline("a\nb", false, "`a b`")]
    #[case::empty("", false, "")]
    fn writes_code_spans(#[case] text: &str, #[case] in_table: bool, #[case] expected: &str) {
        assert_eq!(code_span(text, in_table), expected, "code span of {text:?}");
    }

    /// Marks shared by neighbours stay open and edge whitespace moves outside the delimiters.
    #[test]
    fn inline_writer_balances_marks() {
        let bold = Marks {
            strong: true,
            ..Marks::default()
        };
        let bold_em = Marks {
            em: true,
            ..bold.clone()
        };
        let mut w = InlineWriter::new(InlineMode::Block);
        w.text("a ", &bold);
        w.text("b", &bold_em);
        w.text(" c", &Marks::default());
        assert_eq!(
            w.finish(),
            "**a _b_** c",
            "marks nest and close before the space"
        );
    }

    /// Adjacent code spans merge instead of running their backticks together.
    #[test]
    fn adjacent_code_spans_merge() {
        let code = Marks {
            code: true,
            ..Marks::default()
        };
        let mut w = InlineWriter::new(InlineMode::Block);
        w.text("a", &code);
        w.text("b", &code);
        assert_eq!(w.finish(), "`ab`", "two code runs become one span");
    }

    /// Hard breaks are written per mode and dropped at the end.
    #[rstest]
    #[case::block(InlineMode::Block, "a\\\nb")]
    #[case::heading(InlineMode::Heading, "a b")]
    #[case::cell(InlineMode::TableCell, "a<br>b")]
    fn hard_breaks_follow_the_mode(#[case] mode: InlineMode, #[case] expected: &str) {
        let mut w = InlineWriter::new(mode);
        w.hard_break();
        w.text("a", &Marks::default());
        w.hard_break();
        w.text("b", &Marks::default());
        w.hard_break();
        assert_eq!(w.finish(), expected, "breaks only between content");
    }

    /// Fences outgrow backtick runs in the code, and the info string is sanitised.
    #[test]
    fn fence_outgrows_backticks() {
        assert_eq!(
            fenced_code("a ```` b\n", "rust`x y"),
            "`````rustxy\na ```` b\n`````",
            "a five-backtick fence around a four-backtick run"
        );
    }

    /// A document never opens with a line GitLab would take for front matter.
    #[rstest]
    #[case::rule("---\n\ntext\n\n---", "***\n\ntext\n\n---")]
    #[case::json(";;;\n{}\n;;;", "\\;;;\n{}\n;;;")]
    #[case::trailing_space("a  \n\n  b \n", "a\n\n  b")]
    fn tidy_avoids_front_matter(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(tidy(input), expected, "tidied form of {input:?}");
    }

    /// Link destinations cannot be broken out of.
    #[test]
    fn link_destinations_are_encoded() {
        assert_eq!(
            link_destination("https://x.org/a b(c)|d"),
            "https://x.org/a%20b%28c%29%7Cd",
            "space, parentheses and pipe are percent-encoded"
        );
    }
}
