//! Jira wiki markup (the text that Jira Data Center and REST v2 return for descriptions) to
//! GitLab Markdown.
//!
//! This module owns parsing wiki markup: block macros (`{code}`, `{noformat}`, `{quote}`,
//! `{panel}`), headings, lists, tables and inline formatting. It does not copy attachments:
//! `!image.png!` becomes a placeholder naming the file. Escaping of the text that remains is
//! described in the `markdown` module this one writes through.
//!
//! Like Jira, emphasis needs word boundaries: `*bold*` opens after a non-letter and closes
//! before one, so `a*b*c` and `file_name_here` stay literal. A single newline inside a paragraph
//! is a line break, as Jira renders it. Unknown macros such as `{toc}` stay as text, and nothing
//! panics on any input.

use super::markdown::{
    InlineMode, InlineWriter, MAX_DEPTH, Marks, attachment_placeholder, escape_fragment,
    fenced_code, heading, join_blocks, plain_paragraphs, prefix_lines, quote, table, tidy,
};

/// Converts Jira wiki markup to GitLab Markdown.
///
/// Blocks are separated by one blank line, no line ends in whitespace and the result is trimmed.
pub fn wiki_to_markdown(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    tidy(&blocks(&text, 0))
}

/// The block macros, which must start a line. Their content runs to the matching closing tag.
const BLOCK_MACROS: &[&str] = &["code", "noformat", "quote", "panel"];

/// A block macro's opening tag, such as `{code:java}`.
struct MacroTag<'a> {
    name: &'static str,
    /// What follows the `:` (`java`, `title=x|lang=y`), or `""`.
    params: &'a str,
    /// The tag's length in bytes.
    len: usize,
}

/// The block macro tag at the start of `line`, if any.
fn macro_tag(line: &str) -> Option<MacroTag<'_>> {
    let after_brace = line.strip_prefix('{')?;
    BLOCK_MACROS.iter().find_map(|&name| {
        let after = after_brace.strip_prefix(name)?;
        let end = after.find('}')?;
        let inner = &after[..end];
        let params = if inner.is_empty() {
            ""
        } else {
            inner.strip_prefix(':')?
        };
        Some(MacroTag {
            name,
            params,
            len: 1 + name.len() + end + 1,
        })
    })
}

/// A macro parameter: `key=value`, or the first bare word (a code block's language) for `""`.
fn macro_param<'a>(params: &'a str, key: &str) -> Option<&'a str> {
    params
        .split('|')
        .find_map(|part| match part.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case(key) => Some(v.trim()),
            None if key.is_empty() => Some(part.trim()),
            _ => None,
        })
        .filter(|v| !v.is_empty())
}

/// `text` without its first line if that line is blank (macro content usually starts on the
/// line after the tag).
fn skip_blank_first_line(text: &str) -> &str {
    match text.split_once('\n') {
        Some((first, rest)) if first.trim().is_empty() => rest,
        _ => text,
    }
}

/// Lines being gathered into one block.
#[derive(Default)]
struct Gathered {
    paragraph: Vec<String>,
    list: Vec<(String, String)>,
    table: Vec<String>,
}

impl Gathered {
    /// Renders and empties whatever is gathered.
    fn flush(&mut self, out: &mut Vec<String>) {
        if !self.paragraph.is_empty() {
            let mut w = InlineWriter::new(InlineMode::Block);
            for (i, line) in self.paragraph.drain(..).enumerate() {
                if i > 0 {
                    w.hard_break();
                }
                InlineParser::new(&line).run(&mut w, &Marks::default());
            }
            out.push(w.finish());
        }
        if !self.list.is_empty() {
            out.push(list(&std::mem::take(&mut self.list)));
        }
        if !self.table.is_empty() {
            out.push(wiki_table(&std::mem::take(&mut self.table)));
        }
    }
}

/// Block-level conversion of `text`.
fn blocks(text: &str, depth: usize) -> String {
    if depth >= MAX_DEPTH {
        return plain_paragraphs(text);
    }
    let mut out = Vec::new();
    let mut gathered = Gathered::default();
    let mut rest = text;
    while !rest.is_empty() {
        let (line, after) = rest.split_once('\n').unwrap_or((rest, ""));
        let trimmed = line.trim();
        let indent = line.len() - line.trim_start().len();

        if let Some(tag) = macro_tag(&line[indent..]) {
            gathered.flush(&mut out);
            let body_and_rest = &rest[indent + tag.len..];
            let closer = format!("{{{}}}", tag.name);
            let (body, remaining) = match body_and_rest.find(&closer) {
                Some(at) => (&body_and_rest[..at], &body_and_rest[at + closer.len()..]),
                None => (body_and_rest, ""),
            };
            out.push(block_macro(&tag, body, depth));
            // Text after the closing tag on the same line is a line of its own.
            rest = match remaining.split_once('\n') {
                Some((tail, next)) if tail.trim().is_empty() => next,
                None if remaining.trim().is_empty() => "",
                _ => remaining,
            };
            continue;
        }
        rest = after;

        if trimmed.is_empty() {
            gathered.flush(&mut out);
        } else if let Some(last) = gathered
            .table
            .last_mut()
            .filter(|row| !row.trim_end().ends_with('|') && !trimmed.starts_with('|'))
        {
            // A row without its closing `|` continues on the next line, as a line break.
            last.push_str("\\\\");
            last.push_str(trimmed);
        } else if let Some((level, title)) = heading_line(trimmed) {
            gathered.flush(&mut out);
            out.push(heading(level, inline(title, InlineMode::Heading)));
        } else if let Some(quoted) = trimmed
            .strip_prefix("bq.")
            .filter(|q| q.is_empty() || q.starts_with(char::is_whitespace))
        {
            gathered.flush(&mut out);
            out.push(quote(&inline(quoted, InlineMode::Block)));
        } else if trimmed.len() >= 4 && trimmed.chars().all(|c| c == '-') {
            gathered.flush(&mut out);
            out.push("---".to_owned());
        } else if let Some((marker, item)) = list_line(trimmed) {
            if gathered.list.is_empty() {
                gathered.flush(&mut out);
            }
            gathered
                .list
                .push((marker.to_owned(), inline(item, InlineMode::Block)));
        } else if trimmed.starts_with('|') {
            if gathered.table.is_empty() {
                gathered.flush(&mut out);
            }
            gathered.table.push(trimmed.to_owned());
        } else {
            if gathered.paragraph.is_empty() {
                gathered.flush(&mut out);
            }
            gathered.paragraph.push(line.to_owned());
        }
    }
    gathered.flush(&mut out);
    join_blocks(out)
}

/// A block macro with its content.
fn block_macro(tag: &MacroTag<'_>, body: &str, depth: usize) -> String {
    let title = macro_param(tag.params, "title").map(|t| format!("**{}**", escape_fragment(t)));
    match tag.name {
        "code" | "noformat" => {
            let lang = if tag.name == "code" {
                macro_param(tag.params, "")
                    .or_else(|| macro_param(tag.params, "lang"))
                    .or_else(|| macro_param(tag.params, "language"))
                    .unwrap_or("")
            } else {
                ""
            };
            let code = fenced_code(skip_blank_first_line(body).trim_end(), lang);
            join_blocks([title.unwrap_or_default(), code])
        }
        _ => quote(&join_blocks([
            title.unwrap_or_default(),
            blocks(body, depth + 1),
        ])),
    }
}

/// `h1.`–`h6.` and the heading's text.
fn heading_line(line: &str) -> Option<(u64, &str)> {
    let rest = line.strip_prefix(['h', 'H'])?;
    let level = rest
        .chars()
        .next()?
        .to_digit(10)
        .filter(|l| (1..=6).contains(l))?;
    let title = rest[1..].strip_prefix('.')?;
    (title.is_empty() || title.starts_with(char::is_whitespace))
        .then_some((u64::from(level), title))
}

/// A list line's marker (`*`, `**`, `#`, `*#`, `-`) and its text.
fn list_line(line: &str) -> Option<(&str, &str)> {
    let marker_len = if line.starts_with('-') {
        1
    } else {
        line.chars().take_while(|c| matches!(c, '*' | '#')).count()
    };
    let (marker, item) = line.split_at(marker_len);
    (marker_len > 0 && (item.is_empty() || item.starts_with([' ', '\t']))).then_some((marker, item))
}

/// Inline markup rendered on its own.
fn inline(text: &str, mode: InlineMode) -> String {
    let mut w = InlineWriter::new(mode);
    InlineParser::new(text).run(&mut w, &Marks::default());
    w.finish()
}

/// Nested lists: the marker's length is the depth and its last character the kind (`#` is
/// numbered). Each level is indented to its parent's text, as CommonMark requires.
fn list(items: &[(String, String)]) -> String {
    /// One open list level.
    struct Level {
        ordered: bool,
        count: usize,
        /// Width of the current item's marker, which its children are indented by.
        width: usize,
    }
    let mut stack: Vec<Level> = Vec::new();
    let mut lines = Vec::new();
    for (marker, body) in items {
        // A level can only be one deeper than the last, so skipped levels are closed up.
        let depth = marker
            .chars()
            .count()
            .min(stack.len() + 1)
            .clamp(1, MAX_DEPTH);
        let ordered = marker.ends_with('#');
        stack.truncate(depth);
        if stack.len() == depth && stack[depth - 1].ordered != ordered {
            stack.pop();
        }
        if stack.len() < depth {
            stack.push(Level {
                ordered,
                count: 0,
                width: 2,
            });
        }
        let indent: usize = stack[..depth - 1].iter().map(|l| l.width).sum();
        let level = &mut stack[depth - 1];
        level.count += 1;
        let bullet = if level.ordered {
            format!("{}. ", level.count)
        } else {
            "- ".to_owned()
        };
        level.width = bullet.len();
        let pad = " ".repeat(indent);
        lines.push(prefix_lines(
            body,
            &format!("{pad}{bullet}"),
            &" ".repeat(indent + bullet.len()),
        ));
    }
    lines.join("\n")
}

/// A GFM table from `|cell|` and `||header||` rows. The first row is the header row; header
/// cells further down are bold.
fn wiki_table(rows: &[String]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(r, row)| {
            split_row(row)
                .into_iter()
                .map(|(is_header, cell)| {
                    let marks = Marks {
                        strong: is_header && r > 0,
                        ..Marks::default()
                    };
                    let mut w = InlineWriter::new(InlineMode::TableCell);
                    InlineParser::new(cell.trim()).run(&mut w, &marks);
                    w.finish()
                })
                .collect::<Vec<_>>()
        })
        .filter(|cells| !cells.is_empty())
        .collect();
    table(&rows)
}

/// A table row's cells, each with whether it is a header (`||`) cell. A `|` inside `[…|…]` or
/// `{{…}}`, or escaped as `\|`, does not split cells.
fn split_row(row: &str) -> Vec<(bool, String)> {
    let chars: Vec<char> = row.chars().collect();
    let last_close_bracket = chars.iter().rposition(|c| *c == ']');
    let mut cells = Vec::new();
    let mut cell = String::new();
    let (mut header, mut started, mut in_link, mut in_mono) = (false, false, false, false);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\\' && next.is_some() {
            cell.push(c);
            cell.extend(next);
            i += 2;
            continue;
        }
        if c == '{' && next == Some('{') && !in_mono {
            in_mono = true;
        } else if c == '}' && next == Some('}') && in_mono {
            in_mono = false;
        } else if c == '[' && last_close_bracket.is_some_and(|l| l > i) {
            in_link = true;
        } else if c == ']' {
            in_link = false;
        } else if c == '|' && !in_link && !in_mono {
            if started {
                cells.push((header, std::mem::take(&mut cell)));
            }
            started = true;
            header = next == Some('|');
            i += if header { 2 } else { 1 };
            continue;
        }
        cell.push(c);
        i += 1;
    }
    if !cell.trim().is_empty() {
        cells.push((header, cell));
    }
    cells
}

/// Single-character emphasis delimiters and what they become. `??` (citation) is handled
/// separately because it is two characters long.
const DELIMITERS: [(char, Effect); 6] = [
    ('*', Effect::Strong),
    ('_', Effect::Em),
    ('-', Effect::Strike),
    ('+', Effect::Plain),
    ('^', Effect::Plain),
    ('~', Effect::Plain),
];

/// What a pair of delimiters does to the text between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Strong,
    Em,
    Strike,
    /// Underline, superscript and subscript, which GitLab Markdown cannot show.
    Plain,
}

/// Parses one line (or table cell) of inline markup and writes it.
///
/// Every "where is the next closing X" question is answered from tables built once per line,
/// so that unclosed delimiters cannot make parsing quadratic.
struct InlineParser {
    chars: Vec<char>,
    /// Per delimiter in [`DELIMITERS`], then `??`: the first valid closing position at or after
    /// each index.
    closers: Vec<Vec<usize>>,
    /// The next `}}`, `]`, `!` and `}` at or after each index.
    next_mono_end: Vec<usize>,
    next_bracket_end: Vec<usize>,
    next_bang: Vec<usize>,
    next_brace_end: Vec<usize>,
    /// The next `{code}` and `{noformat}` closing tag at or after each index.
    next_code_end: Vec<usize>,
    next_noformat_end: Vec<usize>,
}

/// For each index, the first index at or after it where `pred` holds (`usize::MAX` if none).
fn next_where(len: usize, pred: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut next = vec![usize::MAX; len + 1];
    for k in (0..len).rev() {
        next[k] = if pred(k) { k } else { next[k + 1] };
    }
    next
}

/// Looks an index up in a [`next_where`] table: the position found, if it is before `end`.
fn lookup(table: &[usize], at: usize, end: usize) -> Option<usize> {
    table.get(at).copied().filter(|k| *k < end)
}

impl InlineParser {
    fn new(text: &str) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let n = chars.len();
        let at = |k: usize| chars.get(k).copied();
        let starts_with =
            |k: usize, s: &str| s.chars().enumerate().all(|(j, c)| at(k + j) == Some(c));
        // A closer follows a non-space that is not the delimiter itself, and is not followed by
        // a letter or digit.
        let closes = |k: usize, d: char, len: usize| {
            k > 0
                && (0..len).all(|j| at(k + j) == Some(d))
                && at(k - 1).is_some_and(|p| !p.is_whitespace() && p != d)
                && !at(k + len).is_some_and(char::is_alphanumeric)
        };
        let mut closers: Vec<Vec<usize>> = DELIMITERS
            .iter()
            .map(|(d, _)| next_where(n, |k| closes(k, *d, 1)))
            .collect();
        closers.push(next_where(n, |k| closes(k, '?', 2)));
        Self {
            next_mono_end: next_where(n, |k| starts_with(k, "}}")),
            next_bracket_end: next_where(n, |k| chars[k] == ']'),
            next_bang: next_where(n, |k| chars[k] == '!'),
            next_brace_end: next_where(n, |k| chars[k] == '}'),
            next_code_end: next_where(n, |k| starts_with(k, "{code}")),
            next_noformat_end: next_where(n, |k| starts_with(k, "{noformat}")),
            closers,
            chars,
        }
    }

    /// Writes the whole text with `marks` as the base formatting.
    fn run(&self, w: &mut InlineWriter, marks: &Marks) {
        self.range(w, 0, self.chars.len(), marks, 0);
    }

    /// The characters `from..to` as a string.
    fn text(&self, from: usize, to: usize) -> String {
        self.chars[from..to].iter().collect()
    }

    /// Writes `chars[start..end]`.
    fn range(&self, w: &mut InlineWriter, start: usize, end: usize, marks: &Marks, depth: usize) {
        let chars = &self.chars;
        let mut buf = String::new();
        let mut i = start;
        while i < end {
            let c = chars[i];
            let next = chars.get(i + 1).copied().filter(|_| i + 1 < end);
            if c == '\\' {
                match next {
                    Some('\\') => {
                        flush(w, &mut buf, marks);
                        w.hard_break();
                    }
                    // `\*` and friends are Jira's escapes for a literal character.
                    Some(n) if n.is_ascii_punctuation() => buf.push(n),
                    _ => {
                        buf.push(c);
                        i += 1;
                        continue;
                    }
                }
                i += 2;
                continue;
            }
            if depth < MAX_DEPTH
                && let Some((inner_start, inner_end, after, effect)) = self.emphasis(i, end)
            {
                flush(w, &mut buf, marks);
                let mut inner = marks.clone();
                match effect {
                    Effect::Strong => inner.strong = true,
                    Effect::Em => inner.em = true,
                    Effect::Strike => inner.strike = true,
                    Effect::Plain => {}
                }
                self.range(w, inner_start, inner_end, &inner, depth + 1);
                i = after;
                continue;
            }
            let consumed = match c {
                '{' => self.brace(w, &mut buf, i, end, marks),
                '[' if depth < MAX_DEPTH => self.bracket(w, &mut buf, i, end, marks, depth),
                '!' => self.image(w, &mut buf, i, end, marks),
                _ => None,
            };
            match consumed {
                Some(after) => i = after,
                None => {
                    buf.push(c);
                    i += 1;
                }
            }
        }
        flush(w, &mut buf, marks);
    }

    /// An emphasis pair opening at `i` and closing before `end`: the inner range, the index
    /// after the closer, and the effect.
    fn emphasis(&self, i: usize, end: usize) -> Option<(usize, usize, usize, Effect)> {
        let chars = &self.chars;
        let c = chars[i];
        let (len, table, effect) = if c == '?' && chars.get(i + 1) == Some(&'?') {
            (2, &self.closers[DELIMITERS.len()], Effect::Em)
        } else {
            let at = DELIMITERS.iter().position(|(d, _)| *d == c)?;
            (1, &self.closers[at], DELIMITERS[at].1)
        };
        // An opener follows a non-letter and precedes a non-space that is not the delimiter.
        let opens = (i == 0 || !chars[i - 1].is_alphanumeric())
            && chars
                .get(i + len)
                .is_some_and(|n| i + len < end && !n.is_whitespace() && *n != c);
        if !opens {
            return None;
        }
        let close = lookup(table, i + len + 1, end)?;
        (close + len <= end).then_some((i + len, close, close + len, effect))
    }

    /// `{{monospace}}`, inline `{code}…{code}`/`{noformat}…{noformat}`, or a `{color}` tag
    /// (dropped). Other macros stay as text.
    fn brace(
        &self,
        w: &mut InlineWriter,
        buf: &mut String,
        i: usize,
        end: usize,
        marks: &Marks,
    ) -> Option<usize> {
        let code = Marks {
            code: true,
            ..marks.clone()
        };
        if self.chars.get(i + 1) == Some(&'{') {
            let close = lookup(&self.next_mono_end, i + 2, end)?;
            if close + 2 > end {
                return None;
            }
            flush(w, buf, marks);
            w.code(&self.text(i + 2, close), &code);
            return Some(close + 2);
        }
        let tag_end = lookup(&self.next_brace_end, i + 1, end)?;
        let tag = self.text(i + 1, tag_end);
        let name = tag.split(':').next().unwrap_or("");
        match name {
            "color" => {
                flush(w, buf, marks);
                Some(tag_end + 1)
            }
            "code" | "noformat" => {
                let (table, closer_len) = if name == "code" {
                    (&self.next_code_end, "{code}".len())
                } else {
                    (&self.next_noformat_end, "{noformat}".len())
                };
                let close = lookup(table, tag_end + 1, end)?;
                if close + closer_len > end {
                    return None;
                }
                flush(w, buf, marks);
                w.code(self.text(tag_end + 1, close).trim(), &code);
                Some(close + closer_len)
            }
            _ => None,
        }
    }

    /// `[text|url]`, `[url]`, `[~user]`, `[^attachment]`, `[#anchor]`; anything else in
    /// brackets (`[WIP]`, `[yes|no]`) stays as text.
    fn bracket(
        &self,
        w: &mut InlineWriter,
        buf: &mut String,
        i: usize,
        end: usize,
        marks: &Marks,
        depth: usize,
    ) -> Option<usize> {
        let close = lookup(&self.next_bracket_end, i + 1, end)?;
        let inner = self.text(i + 1, close);
        let after = Some(close + 1);
        if let Some(user) = inner.strip_prefix('~') {
            let user = user.trim();
            let user = user.strip_prefix("accountid:").unwrap_or(user);
            if user.is_empty() {
                return None;
            }
            flush(w, buf, marks);
            // The writer escapes the `@`, so no GitLab user is notified.
            w.text(&format!("@{user}"), marks);
            return after;
        }
        let (label_len, target) = match inner.split_once('|') {
            Some((label, rest)) => (
                Some(label.chars().count()),
                rest.split('|').next().unwrap_or(""),
            ),
            None => (None, inner.as_str()),
        };
        let target = target.trim();
        if let Some(file) = target.strip_prefix('^') {
            flush(w, buf, marks);
            w.raw(&attachment_placeholder(file));
            return after;
        }
        if let Some(anchor) = target.strip_prefix('#') {
            flush(w, buf, marks);
            match label_len {
                Some(len) => self.range(w, i + 1, i + 1 + len, marks, depth + 1),
                None => w.text(anchor, marks),
            }
            return after;
        }
        let href = link_target(target)?;
        flush(w, buf, marks);
        let linked = Marks {
            link: Some(href),
            ..marks.clone()
        };
        match label_len {
            Some(len) if !self.text(i + 1, i + 1 + len).trim().is_empty() => {
                self.range(w, i + 1, i + 1 + len, &linked, depth + 1);
            }
            _ => w.text(target, &linked),
        }
        after
    }

    /// `!file.png!` or `!file.png|thumbnail!`: an attachment placeholder. The name must look
    /// like a file or URL, so that `Wow! Great!` stays text.
    fn image(
        &self,
        w: &mut InlineWriter,
        buf: &mut String,
        i: usize,
        end: usize,
        marks: &Marks,
    ) -> Option<usize> {
        let close = lookup(&self.next_bang, i + 1, end)?;
        if close == i + 1 {
            return None;
        }
        let inner = self.text(i + 1, close);
        let name = inner.split('|').next().unwrap_or("");
        let looks_like_file = name.trim() == name && (name.contains('.') || name.contains("://"));
        if !looks_like_file {
            return None;
        }
        flush(w, buf, marks);
        w.raw(&attachment_placeholder(name));
        Some(close + 1)
    }
}

/// Writes buffered plain text.
fn flush(w: &mut InlineWriter, buf: &mut String, marks: &Marks) {
    if !buf.is_empty() {
        w.text(buf, marks);
        buf.clear();
    }
}

/// The href for a link target that is a URL (`scheme://…`, `mailto:…`, `www.…`); `None` for
/// anything else, such as an issue key or a wiki page name.
fn link_target(target: &str) -> Option<String> {
    if target.contains(char::is_whitespace) || target.is_empty() {
        return None;
    }
    let lower = target.to_ascii_lowercase();
    if lower.starts_with("www.") {
        return Some(format!("http://{target}"));
    }
    let has_scheme = target.split_once("://").is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    (has_scheme || (lower.starts_with("mailto:") && target.len() > 7)).then(|| target.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// Inline formatting maps to Markdown, with Jira's word-boundary rules.
    #[rstest]
    #[case::bold("a *bold* word", "a **bold** word")]
    #[case::italic("an _italic_ word", "an _italic_ word")]
    #[case::strike("a -gone- word", "a ~~gone~~ word")]
    #[case::underline("an +under+ word", "an under word")]
    #[case::sup_sub("x^2^ and H~2~O and ^up^", "x^2^ and H\\~2\\~O and up")]
    #[case::citation("??Someone??", "_Someone_")]
    #[case::monospace("run {{cargo *test*}} now", "run `cargo *test*` now")]
    #[case::monospace_backtick("{{a`b}}", "``a`b``")]
    #[case::nested("*bold _both_*", "**bold _both_**")]
    #[case::bold_then_text("*bold*, then", "**bold**, then")]
    #[case::arithmetic("a*b*c", "a\\*b\\*c")]
    #[case::snake_case("file_name_here", "file_name_here")]
    #[case::spaced_stars("2 * 3 * 4", "2 \\* 3 \\* 4")]
    #[case::dashes("a - b - c and x-y-z", "a - b - c and x-y-z")]
    #[case::em_dash("a --- b", "a --- b")]
    #[case::cli_flags("use --force-with-lease", "use --force-with-lease")]
    #[case::unclosed("*not bold", "\\*not bold")]
    #[case::color("{color:red}red{color} text", "red text")]
    #[case::unknown_macro("{toc} here", "{toc} here")]
    #[case::inline_code("call {code}x|y{code} there", "call `x|y` there")]
    #[case::escapes("\\*literal\\* and C:\\Users", "\\*literal\\* and C:\\Users")]
    #[case::line_break("one\\\\two", "one\\\ntwo")]
    #[case::html("<b>not html</b>", "&lt;b>not html&lt;/b>")]
    #[case::url("see https://e.org/a_b.", "see <https://e.org/a_b>.")]
    fn renders_inline(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(
            wiki_to_markdown(input),
            expected,
            "inline rendering of {input:?}"
        );
    }

    /// Links, mentions and attachments.
    #[rstest]
    #[case::labelled("[Docs|https://e.org/a_(b)]", "[Docs](https://e.org/a_%28b%29)")]
    #[case::spaced_target("[Docs|https://e.org/x y]", "\\[Docs\\|https://e.org/x y\\]")]
    #[case::labelled_bold("[*Docs*|https://e.org]", "[**Docs**](https://e.org)")]
    #[case::bare("[https://e.org/a_b]", "[https://e.org/a_b](https://e.org/a_b)")]
    #[case::www("[www.e.org]", "[www.e.org](http://www.e.org)")]
    #[case::mailto("[Mail|mailto:a@e.org]", "[Mail](mailto:a@e.org)")]
    #[case::mention("ask [~jdoe] now", "ask \\@jdoe now")]
    #[case::mention_account("[~accountid:5b10ac]", "\\@5b10ac")]
    #[case::attachment_link("[^report.pdf]", "_[attachment: report.pdf]_")]
    #[case::anchor("[Top|#top]", "Top")]
    #[case::not_a_link("[WIP] and [yes|no]", "\\[WIP\\] and \\[yes\\|no\\]")]
    #[case::image("!screen shot.png!", "_[attachment: screen shot.png]_")]
    #[case::image_thumbnail(
        "see !diagram.jpg|thumbnail! here",
        "see _[attachment: diagram.jpg]_ here"
    )]
    #[case::exclamations("Wow! Great!", "Wow! Great!")]
    fn renders_links_and_media(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(wiki_to_markdown(input), expected, "rendering of {input:?}");
    }

    /// Block constructs map to Markdown blocks separated by blank lines.
    #[rstest]
    #[case::headings(
        "h1. Title\nh3. Sub *bold*\nh7. no",
        "# Title\n\n### Sub **bold**\n\nh7. no"
    )]
    #[case::heading_hashes("h2. Issue #", "## Issue \\#")]
    #[case::paragraphs("one\ntwo\n\nthree", "one\\\ntwo\n\nthree")]
    #[case::rule("a\n----\nb", "a\n\n---\n\nb")]
    #[case::bq("bq. quoted *text*", "> quoted **text**")]
    #[case::bq_needs_space("bq.not", "bq.not")]
    #[case::quote_block(
        "{quote}\nfirst\n\nsecond\n{quote}\nafter",
        "> first\n>\n> second\n\nafter"
    )]
    #[case::quote_inline("{quote}short{quote}", "> short")]
    #[case::panel(
        "{panel:title=Note|borderStyle=dashed}\nbody\n{panel}",
        "> **Note**\n>\n> body"
    )]
    #[case::panel_untitled("{panel}body{panel}", "> body")]
    #[case::code_lang("{code:java}\nint *x = 1;\n{code}", "```java\nint *x = 1;\n```")]
    #[case::code_plain("{code}\n  a\n    b\n{code}", "```\n  a\n    b\n```")]
    #[case::code_title(
        "{code:title=Foo.java|lang=java}\nx\n{code}",
        "**Foo.java**\n\n```java\nx\n```"
    )]
    #[case::code_language_key(
        "{code:title=x|language=sql}\nSELECT 1\n{code}",
        "**x**\n\n```sql\nSELECT 1\n```"
    )]
    #[case::code_verbatim(
        "{code}\n*a* [b|http://c] h1. {quote}\n{code}",
        "```\n*a* [b|http://c] h1. {quote}\n```"
    )]
    #[case::code_backticks("{code}\n```\n{code}", "````\n```\n````")]
    #[case::noformat("{noformat}\n<b>x</b>\n{noformat}\ntail", "```\n<b>x</b>\n```\n\ntail")]
    #[case::unclosed_code("{code}\nx", "```\nx\n```")]
    #[case::code_in_quote("{quote}\n{code}\nx\n{code}\n{quote}", "> ```\n> x\n> ```")]
    fn renders_blocks(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(
            wiki_to_markdown(input),
            expected,
            "block rendering of {input:?}"
        );
    }

    /// Lists nest by marker length and mix bullets and numbers.
    #[rstest]
    #[case::bullets("* a\n* b", "- a\n- b")]
    #[case::dash("- a\n- b", "- a\n- b")]
    #[case::numbered("# a\n# b", "1. a\n2. b")]
    #[case::nested("* a\n** b\n*** c\n* d", "- a\n  - b\n    - c\n- d")]
    #[case::mixed("# a\n#* b\n#* c\n# d\n## e", "1. a\n   - b\n   - c\n2. d\n   1. e")]
    #[case::skipped_level("* a\n*** b", "- a\n  - b")]
    #[case::kind_change("* a\n# b", "- a\n1. b")]
    #[case::list_then_paragraph("* a\ntext", "- a\n\ntext")]
    #[case::bold_not_list("*bold* start", "**bold** start")]
    #[case::formatted_item("* *bold* and [~u]", "- **bold** and \\@u")]
    #[case::item_looks_like_list("* - x", "- \\- x")]
    #[case::many_numbers(
        "# a\n# b\n# c\n# d\n# e\n# f\n# g\n# h\n# i\n# j\n## k",
        "1. a\n2. b\n3. c\n4. d\n5. e\n6. f\n7. g\n8. h\n9. i\n10. j\n    1. k"
    )]
    fn renders_lists(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(
            wiki_to_markdown(input),
            expected,
            "list rendering of {input:?}"
        );
    }

    /// Tables become GFM tables; a table without a header row uses its first row.
    #[rstest]
    #[case::header("||H1||H2||\n|a|b|", "| H1 | H2 |\n| --- | --- |\n| a | b |")]
    #[case::no_header("|a|b|\n|c|d|", "| a | b |\n| --- | --- |\n| c | d |")]
    #[case::row_header("||H||V||\n||k|v|", "| H | V |\n| --- | --- |\n| **k** | v |")]
    #[case::link_in_cell(
        "|[x|https://e.org]|{{a|b}}|",
        "| [x](https://e.org) | `a\\|b` |\n| --- | --- |"
    )]
    #[case::escaped_pipe("|a\\|b|c|", "| a\\|b | c |\n| --- | --- |")]
    #[case::ragged("|a|b|c|\n|d|", "| a | b | c |\n| --- | --- | --- |\n| d |  |  |")]
    #[case::break_in_cell("|a\\\\b|c|", "| a<br>b | c |\n| --- | --- |")]
    #[case::continued_row(
        "|a|multi\nline|\n|c|d|",
        "| a | multi<br>line |\n| --- | --- |\n| c | d |"
    )]
    #[case::empty_cell("|a| |b|", "| a |  | b |\n| --- | --- | --- |")]
    #[case::table_then_text("|a|\ntext", "| a |\n| --- |\n\ntext")]
    fn renders_tables(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(
            wiki_to_markdown(input),
            expected,
            "table rendering of {input:?}"
        );
    }

    /// Jira text that looks like Markdown or HTML stays text in GitLab.
    #[rstest]
    #[case::markdown_heading("# not a list?", "1. not a list?")]
    #[case::hash_ref("#1 is first", "\\#1 is first")]
    #[case::markdown_list_marker("+ plus", "\\+ plus")]
    #[case::ordered_text("1. first", "1\\. first")]
    #[case::quote_marker("> not quoted", "\\> not quoted")]
    #[case::script("<script>alert(1)</script>", "&lt;script>alert(1)&lt;/script>")]
    #[case::backticks("a `b` c", "a \\`b\\` c")]
    #[case::mention_text("@all hands", "\\@all hands")]
    #[case::indented("    four spaces", "four spaces")]
    fn escapes_text(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(wiki_to_markdown(input), expected, "escaping of {input:?}");
    }

    /// Odd input never panics and gives sensible text.
    #[rstest]
    #[case::empty("", "")]
    #[case::blank("  \n\n \t\n", "")]
    #[case::crlf("a\r\nb\r\n\r\nc", "a\\\nb\n\nc")]
    #[case::lone_braces("{ } {{ }} {{", "{ } ` ` {{")]
    #[case::lone_brackets("[ ] [| ] [~] ]", "\\[ \\] \\[\\| \\] \\[\\~\\] \\]")]
    #[case::lone_markers("* \n# \n-", "-\n1.\n-")]
    #[case::lone_delimiters("x * _ - + ^ ~ ??", "x \\* \\_ - + ^ \\~ ??")]
    #[case::multibyte("*ünï* _çødé_ ✓", "**ünï** _çødé_ ✓")]
    #[case::unclosed_quote("{quote}\nopen", "> open")]
    #[case::only_closer("{code}", "```\n```")]
    #[case::trailing_backslash("end\\", "end\\\\")]
    fn survives_odd_input(#[case] input: &str, #[case] expected: &str) {
        assert_eq!(
            wiki_to_markdown(input),
            expected,
            "best-effort output for {input:?}"
        );
    }

    /// At the depth cap markup is no longer parsed but kept, escaped, as text.
    #[rstest]
    #[case::blocks(blocks("h1. *a*\nb", MAX_DEPTH), "h1. \\*a\\*\\\nb")]
    #[case::inline(
        inline_at_depth("*a* [b|https://e.org]", MAX_DEPTH),
        "\\*a\\* \\[b\\|https://e.org\\]"
    )]
    #[case::below_cap(inline_at_depth("*a*", MAX_DEPTH - 1), "**a**")]
    fn caps_recursion_depth(#[case] output: String, #[case] expected: &str) {
        assert_eq!(output, expected, "plain text at the cap, markup below it");
    }

    /// Inline markup parsed as if already `depth` levels deep.
    fn inline_at_depth(text: &str, depth: usize) -> String {
        let parser = InlineParser::new(text);
        let mut w = InlineWriter::new(InlineMode::Block);
        parser.range(&mut w, 0, parser.chars.len(), &Marks::default(), depth);
        w.finish()
    }

    /// Macros nested in one another, or repeated many times, neither panic nor lose text.
    #[test]
    fn nested_macros_keep_their_text() {
        let nested = format!(
            "{}deep{}",
            "{panel}{quote}".repeat(100),
            "{quote}{panel}".repeat(100)
        );
        let md = wiki_to_markdown(&nested);
        assert!(md.contains("deep"), "the innermost text survives: {md}");
        assert!(
            md.lines().all(|l| l == l.trim_end()),
            "no trailing whitespace"
        );
    }

    /// Long runs of unclosed delimiters convert in linear time rather than hanging.
    #[test]
    fn unclosed_delimiters_stay_fast() {
        let text = "*-_+[!{{{code}".repeat(5_000);
        let started = std::time::Instant::now();
        let md = wiki_to_markdown(&text);
        assert!(!md.is_empty(), "something is produced");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "conversion took {:?}",
            started.elapsed()
        );
    }

    /// Thousands of pseudo-random strings of markup characters convert without panicking and
    /// without trailing whitespace.
    #[test]
    fn random_markup_never_panics() {
        const ALPHABET: &[&str] = &[
            "*",
            "_",
            "-",
            "+",
            "^",
            "~",
            "??",
            "{",
            "}",
            "{{",
            "}}",
            "[",
            "]",
            "|",
            "||",
            "!",
            "\\",
            "\\\\",
            "#",
            "h1. ",
            "bq. ",
            "----",
            "{code}",
            "{code:x}",
            "{noformat}",
            "{quote}",
            "{panel:title=t}",
            "{panel}",
            "{color:red}",
            "{color}",
            "[~u]",
            "[a|http://b]",
            "!a.png!",
            "\n",
            "\n\n",
            " ",
            "\t",
            "a",
            "é",
            "<",
            "&",
            "@",
            "`",
            "1. ",
            "\r",
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..3_000 {
            let mut text = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            for _ in 0..(seed % 40) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push_str(ALPHABET[(seed % ALPHABET.len() as u64) as usize]);
            }
            let md = wiki_to_markdown(&text);
            assert!(
                md.lines().all(|l| l == l.trim_end()),
                "no trailing whitespace for {text:?}: {md:?}"
            );
        }
    }

    /// A realistic Data Center description converts end to end.
    #[test]
    fn converts_a_realistic_description() {
        let input = "h2. Steps\n# Open the *checkout* page\n# Click _Pay_\n\n\
                     ||Env||Result||\n|prod|fails (HTTP 500)|\n\n\
                     {code:json}\n{\"error\": \"boom\"}\n{code}\n\
                     See [runbook|https://wiki.e.org/run_book] and ask [~ops].";
        let expected = "## Steps\n\n1. Open the **checkout** page\n2. Click _Pay_\n\n\
                        | Env | Result |\n| --- | --- |\n| prod | fails (HTTP 500) |\n\n\
                        ```json\n{\"error\": \"boom\"}\n```\n\n\
                        See [runbook](https://wiki.e.org/run_book) and ask \\@ops.";
        assert_eq!(
            wiki_to_markdown(input),
            expected,
            "every construct converts"
        );
        assert!(
            wiki_to_markdown(input).lines().all(|l| l == l.trim_end()),
            "no trailing whitespace"
        );
    }
}
