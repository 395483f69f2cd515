//! Atlassian Document Format (the JSON that Jira Cloud's REST v3 returns for descriptions and
//! comments) to GitLab Markdown.
//!
//! This module owns the mapping from ADF nodes and marks to Markdown constructs. It does not
//! fetch anything, and it does not copy attachments: media become a placeholder naming the file.
//! How text is escaped is described in the `markdown` module this one writes through.
//!
//! The input is untrusted JSON: any shape is accepted, nothing panics, unknown nodes fall back
//! to their content or text, and nesting deeper than `MAX_DEPTH` (64) is flattened to plain text.

use serde_json::Value;

use super::markdown::{
    InlineMode, InlineWriter, MAX_DEPTH, Marks, attachment_placeholder, code_span, escape_fragment,
    fenced_code, heading, join_blocks, plain_paragraphs, prefix_lines, quote, table, tidy,
};

/// Converts an ADF document to GitLab Markdown.
///
/// Blocks are separated by one blank line, no line ends in whitespace and the result is trimmed.
/// A JSON string is taken as plain text; `null` and anything unrecognisable give an empty or
/// best-effort result rather than an error, because a description must never stop a sync.
pub fn adf_to_markdown(doc: &Value) -> String {
    let markdown = match doc {
        Value::String(text) => plain_paragraphs(text),
        Value::Array(nodes) => blocks(nodes, 0),
        _ => block(doc, 0),
    };
    tidy(&markdown)
}

/// ADF's inline node types; anything else in block position is treated as a block.
const INLINE_TYPES: &[&str] = &[
    "text",
    "hardBreak",
    "mention",
    "emoji",
    "date",
    "status",
    "inlineCard",
    "mediaInline",
    "placeholder",
    "inlineExtension",
];

/// Block types that are lists, which a list item keeps tight against the paragraph before them.
const LIST_TYPES: &[&str] = &["bulletList", "orderedList", "taskList", "decisionList"];

/// The node's `type`, or `""`.
fn node_type(node: &Value) -> &str {
    node.get("type").and_then(Value::as_str).unwrap_or("")
}

/// The node's `content` array, or nothing.
fn content(node: &Value) -> &[Value] {
    node.get("content")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A string attribute, if present and non-blank.
fn attr_str<'a>(node: &'a Value, key: &str) -> Option<&'a str> {
    node.get("attrs")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// Returns true if and only if `node` belongs inside a paragraph (strings in a content array
/// count, as text).
fn is_inline(node: &Value) -> bool {
    match node {
        Value::String(_) => true,
        Value::Object(_) => {
            let ty = node_type(node);
            INLINE_TYPES.contains(&ty)
                || (node.get("content").is_none() && node.get("text").is_some_and(Value::is_string))
        }
        _ => false,
    }
}

/// Block children; runs of stray inline nodes are gathered into paragraphs.
fn blocks(nodes: &[Value], depth: usize) -> String {
    let mut out = Vec::new();
    let mut run: Vec<&Value> = Vec::new();
    for node in nodes {
        if is_inline(node) {
            run.push(node);
            continue;
        }
        if !run.is_empty() {
            out.push(inline(&std::mem::take(&mut run), InlineMode::Block, depth));
        }
        out.push(block(node, depth));
    }
    if !run.is_empty() {
        out.push(inline(&run, InlineMode::Block, depth));
    }
    join_blocks(out)
}

/// One block node.
fn block(node: &Value, depth: usize) -> String {
    if depth >= MAX_DEPTH {
        return plain_paragraphs(&plain_text(node));
    }
    let depth = depth + 1;
    let children = content(node);
    match node_type(node) {
        "paragraph" => inline_nodes(children, InlineMode::Block, depth),
        "heading" => adf_heading(node, depth),
        "bulletList" | "decisionList" => list(children, None, depth),
        "orderedList" => {
            let start = node
                .get("attrs")
                .and_then(|a| a.get("order"))
                .and_then(Value::as_u64)
                .unwrap_or(1);
            list(children, Some(start), depth)
        }
        "taskList" => task_list(children, depth),
        "codeBlock" => fenced_code(
            &plain_text_of(children),
            attr_str(node, "language").unwrap_or(""),
        ),
        "blockquote" => quote(&blocks(children, depth)),
        "rule" => "---".to_owned(),
        "panel" => {
            let label = panel_label(attr_str(node, "panelType").unwrap_or("note"));
            quote(&join_blocks([
                format!("**{}**", escape_fragment(&label)),
                blocks(children, depth),
            ]))
        }
        "expand" | "nestedExpand" => {
            let title = attr_str(node, "title")
                .map(|t| {
                    let mut w = InlineWriter::new(InlineMode::Heading);
                    let strong = Marks {
                        strong: true,
                        ..Marks::default()
                    };
                    w.text(t, &strong);
                    w.finish()
                })
                .unwrap_or_default();
            join_blocks([title, blocks(children, depth)])
        }
        "table" => adf_table(children, depth),
        "mediaSingle" | "mediaGroup" => {
            join_blocks(children.iter().map(|child| match node_type(child) {
                "media" | "mediaInline" => media_placeholder(child),
                _ => block(child, depth),
            }))
        }
        "media" | "mediaInline" => media_placeholder(node),
        "blockCard" | "embedCard" => inline(&[node], InlineMode::Block, depth),
        _ if is_inline(node) => inline(&[node], InlineMode::Block, depth),
        // doc, layouts, extensions, list items out of place, and unknown nodes.
        _ if !children.is_empty() => blocks(children, depth),
        _ => node
            .get("text")
            .and_then(Value::as_str)
            .map(plain_paragraphs)
            .unwrap_or_default(),
    }
}

/// `# Title`, with the level clamped to 1–6.
fn adf_heading(node: &Value, depth: usize) -> String {
    let level = node
        .get("attrs")
        .and_then(|a| a.get("level"))
        .and_then(Value::as_u64)
        .unwrap_or(1);
    heading(
        level,
        inline_nodes(content(node), InlineMode::Heading, depth),
    )
}

/// A panel's label: its type with a capital letter (`warning` → `Warning`).
fn panel_label(panel_type: &str) -> String {
    let mut chars = panel_type.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// A bullet (`start` is `None`) or ordered list. Ordered numbers are capped at CommonMark's nine
/// digits.
fn list(items: &[Value], start: Option<u64>, depth: usize) -> String {
    const MAX_NUMBER: u64 = 999_999_999;
    let lines: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let marker = match start {
                None => "- ".to_owned(),
                Some(s) => format!("{}. ", s.saturating_add(i as u64).min(MAX_NUMBER)),
            };
            let body = item_body(item, depth);
            prefix_lines(&body, &marker, &" ".repeat(marker.len()))
        })
        .collect();
    lines.join("\n")
}

/// The Markdown inside one list item: a nested list follows its paragraph without a blank line,
/// so the list stays tight.
fn item_body(item: &Value, depth: usize) -> String {
    if depth >= MAX_DEPTH {
        return plain_paragraphs(&plain_text(item));
    }
    let depth = depth + 1;
    if is_inline(item) {
        return inline(&[item], InlineMode::Block, depth);
    }
    let children = content(item);
    if !matches!(node_type(item), "listItem" | "decisionItem" | "taskItem") {
        return block(item, depth);
    }
    let mut out = String::new();
    let mut run: Vec<&Value> = Vec::new();
    let mut parts: Vec<(String, bool)> = Vec::new();
    for child in children {
        if is_inline(child) {
            run.push(child);
            continue;
        }
        if !run.is_empty() {
            parts.push((
                inline(&std::mem::take(&mut run), InlineMode::Block, depth),
                false,
            ));
        }
        parts.push((block(child, depth), LIST_TYPES.contains(&node_type(child))));
    }
    if !run.is_empty() {
        parts.push((inline(&run, InlineMode::Block, depth), false));
    }
    for (text, is_list) in parts.into_iter().filter(|(t, _)| !t.trim().is_empty()) {
        if !out.is_empty() {
            out.push_str(if is_list { "\n" } else { "\n\n" });
        }
        out.push_str(&text);
    }
    out
}

/// `- [ ]`/`- [x]` items; a task list directly inside another is indented under the item above.
fn task_list(items: &[Value], depth: usize) -> String {
    let lines: Vec<String> = items
        .iter()
        .map(|item| {
            if node_type(item) == "taskList" {
                let nested = if depth >= MAX_DEPTH {
                    plain_paragraphs(&plain_text(item))
                } else {
                    task_list(content(item), depth + 1)
                };
                return prefix_lines(&nested, "  ", "  ");
            }
            let done = attr_str(item, "state") == Some("DONE");
            let marker = if done { "- [x] " } else { "- [ ] " };
            prefix_lines(&item_body(item, depth), marker, "  ")
        })
        .collect();
    lines.join("\n")
}

/// A GFM table; the first row is the header whether or not it holds `tableHeader` cells.
fn adf_table(rows: &[Value], depth: usize) -> String {
    /// Widest colspan honoured: the rest of a corrupt value would only add empty columns.
    const MAX_COLSPAN: u64 = 64;
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = Vec::new();
            for cell in content(row) {
                cells.push(flatten(content(cell), depth));
                let span = cell
                    .get("attrs")
                    .and_then(|a| a.get("colspan"))
                    .and_then(Value::as_u64)
                    .unwrap_or(1)
                    .clamp(1, MAX_COLSPAN);
                cells.extend((1..span).map(|_| String::new()));
            }
            cells
        })
        .filter(|cells| !cells.is_empty())
        .collect();
    table(&rows)
}

/// Block content squeezed onto one line for a table cell: blocks are joined with `<br>`.
fn flatten(nodes: &[Value], depth: usize) -> String {
    if depth >= MAX_DEPTH {
        let mut w = InlineWriter::new(InlineMode::TableCell);
        for node in nodes {
            w.text(&plain_text(node), &Marks::default());
        }
        return w.finish();
    }
    let depth = depth + 1;
    let mut parts = Vec::new();
    let mut run: Vec<&Value> = Vec::new();
    for node in nodes {
        if is_inline(node) {
            run.push(node);
            continue;
        }
        if !run.is_empty() {
            parts.push(inline(
                &std::mem::take(&mut run),
                InlineMode::TableCell,
                depth,
            ));
        }
        let children = content(node);
        parts.push(match node_type(node) {
            "paragraph" | "heading" => inline_nodes(children, InlineMode::TableCell, depth),
            "codeBlock" => code_span(&plain_text_of(children), true),
            "media" | "mediaInline" => media_placeholder(node),
            "rule" => String::new(),
            "bulletList" | "orderedList" | "taskList" | "decisionList" => children
                .iter()
                .map(|item| format!("• {}", flatten(content(item), depth)))
                .collect::<Vec<_>>()
                .join("<br>"),
            _ if !children.is_empty() => flatten(children, depth),
            _ => inline(&[node], InlineMode::TableCell, depth),
        });
    }
    if !run.is_empty() {
        parts.push(inline(&run, InlineMode::TableCell, depth));
    }
    parts.retain(|p| !p.trim().is_empty());
    parts.join("<br>")
}

/// Inline nodes rendered in `mode`.
fn inline_nodes(nodes: &[Value], mode: InlineMode, depth: usize) -> String {
    let refs: Vec<&Value> = nodes.iter().collect();
    inline(&refs, mode, depth)
}

/// Inline nodes rendered in `mode`.
fn inline(nodes: &[&Value], mode: InlineMode, depth: usize) -> String {
    let mut w = InlineWriter::new(mode);
    for node in nodes {
        inline_into(&mut w, node, depth);
    }
    w.finish()
}

/// Writes one inline node.
fn inline_into(w: &mut InlineWriter, node: &Value, depth: usize) {
    if let Value::String(text) = node {
        w.text(text, &Marks::default());
        return;
    }
    if depth >= MAX_DEPTH {
        w.text(&plain_text(node), &Marks::default());
        return;
    }
    let marks = marks(node);
    match node_type(node) {
        "text" => w.text(
            node.get("text").and_then(Value::as_str).unwrap_or(""),
            &marks,
        ),
        "hardBreak" => w.hard_break(),
        "mention" => {
            // The `@` is escaped by the writer, so no GitLab user is notified.
            if let Some(name) = attr_str(node, "text").or_else(|| attr_str(node, "id")) {
                w.text(&format!("@{}", name.trim_start_matches('@')), &marks);
            }
        }
        "emoji" => {
            if let Some(e) = attr_str(node, "text").or_else(|| attr_str(node, "shortName")) {
                w.text(e, &marks);
            }
        }
        "date" => {
            if let Some(date) = date(node) {
                w.text(&date, &marks);
            }
        }
        "status" => {
            if let Some(text) = attr_str(node, "text") {
                w.code(
                    text,
                    &Marks {
                        code: true,
                        ..marks
                    },
                );
            }
        }
        "inlineCard" | "blockCard" | "embedCard" => card(w, node, marks),
        "media" | "mediaInline" => w.raw(&media_placeholder(node)),
        "placeholder" => {}
        _ => {
            let children = content(node);
            if children.is_empty() {
                if let Some(text) = node.get("text").and_then(Value::as_str) {
                    w.text(text, &marks);
                }
            } else {
                for child in children {
                    inline_into(w, child, depth + 1);
                }
            }
        }
    }
}

/// A smart link: `[url](url)`, from `attrs.url` or, for JSON-LD cards, `attrs.data.url`.
fn card(w: &mut InlineWriter, node: &Value, marks: Marks) {
    let data = node.get("attrs").and_then(|a| a.get("data"));
    let url = attr_str(node, "url").or_else(|| {
        data.and_then(|d| d.get("url"))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    });
    let name = data
        .and_then(|d| d.get("name"))
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty());
    match url {
        Some(url) => w.text(
            name.unwrap_or(url),
            &Marks {
                link: Some(url.to_owned()),
                ..marks
            },
        ),
        None => {
            if let Some(name) = name {
                w.text(name, &marks);
            }
        }
    }
}

/// The marks on a node that Markdown can show; underline, colour, sub/superscript and
/// annotations are dropped (the text stays).
fn marks(node: &Value) -> Marks {
    let mut marks = Marks::default();
    let Some(list) = node.get("marks").and_then(Value::as_array) else {
        return marks;
    };
    for mark in list {
        match node_type(mark) {
            "strong" => marks.strong = true,
            "em" => marks.em = true,
            "strike" => marks.strike = true,
            "code" => marks.code = true,
            "link" => {
                marks.link = attr_str(mark, "href").map(str::to_owned);
            }
            _ => {}
        }
    }
    marks
}

/// A `date` node's `attrs.timestamp` (milliseconds since the epoch, as a string or a number)
/// as `YYYY-MM-DD` in UTC; an unparsable timestamp is shown as it is.
fn date(node: &Value) -> Option<String> {
    let raw = node.get("attrs")?.get("timestamp")?;
    let millis = match raw {
        Value::String(s) => s.trim().parse::<i64>().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    };
    let formatted = millis
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|d| d.format("%Y-%m-%d").to_string());
    formatted.or_else(|| match raw {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// The placeholder for a media node: named by its alt text, else its id or URL.
fn media_placeholder(node: &Value) -> String {
    let name = attr_str(node, "alt")
        .or_else(|| attr_str(node, "id"))
        .or_else(|| attr_str(node, "url"))
        .unwrap_or("file");
    attachment_placeholder(name)
}

/// The concatenated `text` of some nodes (a code block's content).
fn plain_text_of(nodes: &[Value]) -> String {
    nodes.iter().map(plain_text).collect()
}

/// All `text` under `node`, in document order, without recursion (so any depth is safe).
/// Block-level children are separated by newlines.
fn plain_text(node: &Value) -> String {
    let mut out = String::new();
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        match n {
            Value::String(s) => out.push_str(s),
            Value::Object(_) => {
                if let Some(text) = n.get("text").and_then(Value::as_str) {
                    out.push_str(text);
                } else if matches!(node_type(n), "paragraph" | "heading" | "hardBreak")
                    && !out.is_empty()
                    && !out.ends_with('\n')
                {
                    out.push('\n');
                }
                stack.extend(content(n).iter().rev());
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    /// A document holding `content`.
    fn doc(content: Value) -> Value {
        json!({"type": "doc", "version": 1, "content": content})
    }

    /// A paragraph holding `content`.
    fn para(content: Value) -> Value {
        json!({"type": "paragraph", "content": content})
    }

    /// A text node with marks.
    fn text(t: &str, marks: Value) -> Value {
        json!({"type": "text", "text": t, "marks": marks})
    }

    /// Each mark maps to its Markdown delimiter, or to plain text where GitLab has none.
    #[rstest]
    #[case::strong(json!([{"type": "strong"}]), "**x y**")]
    #[case::em(json!([{"type": "em"}]), "_x y_")]
    #[case::code(json!([{"type": "code"}]), "`x y`")]
    #[case::strike(json!([{"type": "strike"}]), "~~x y~~")]
    #[case::link(json!([{"type": "link", "attrs": {"href": "https://e.org/a b"}}]), "[x y](https://e.org/a%20b)")]
    #[case::underline(json!([{"type": "underline"}]), "x y")]
    #[case::text_color(json!([{"type": "textColor", "attrs": {"color": "#ff0000"}}]), "x y")]
    #[case::subsup(json!([{"type": "subsup", "attrs": {"type": "sub"}}]), "x y")]
    #[case::strong_em(json!([{"type": "em"}, {"type": "strong"}]), "**_x y_**")]
    #[case::link_strong(json!([{"type": "strong"}, {"type": "link", "attrs": {"href": "https://e.org"}}]), "[**x y**](https://e.org)")]
    #[case::code_link(json!([{"type": "code"}, {"type": "link", "attrs": {"href": "https://e.org"}}]), "[`x y`](https://e.org)")]
    #[case::link_without_href(json!([{"type": "link", "attrs": {}}]), "x y")]
    fn renders_marks(#[case] marks: Value, #[case] expected: &str) {
        let d = doc(json!([para(json!([text("x y", marks)]))]));
        assert_eq!(adf_to_markdown(&d), expected, "mark rendering");
    }

    /// Neighbouring text nodes share delimiters, and whitespace stays outside them.
    #[rstest]
    #[case::coalesced(json!([text("a", json!([{"type": "strong"}])), text("b", json!([{"type": "strong"}]))]), "**ab**")]
    #[case::nested(json!([text("a ", json!([{"type": "strong"}])), text("b", json!([{"type": "strong"}, {"type": "em"}])), text(" c", json!([]))]), "**a _b_** c")]
    #[case::trailing_space(json!([text("bold ", json!([{"type": "strong"}])), text("plain", json!([]))]), "**bold** plain")]
    #[case::intraword_em(json!([text("un", json!([])), text("believ", json!([{"type": "em"}])), text(" able", json!([]))]), "un*believ* able")]
    #[case::backticks_in_code(json!([text("a`b", json!([{"type": "code"}]))]), "``a`b``")]
    #[case::hard_break(json!([text("a", json!([])), {"type": "hardBreak"}, text("b", json!([])), {"type": "hardBreak"}]), "a\\\nb")]
    #[case::blank_line_in_text(json!([text("a\n \nb", json!([{"type": "strong"}]))]), "**a\nb**")]
    #[case::break_then_marker(json!([text("a", json!([])), {"type": "hardBreak"}, text("- b", json!([]))]), "a\\\n\\- b")]
    fn combines_inline_nodes(#[case] inline: Value, #[case] expected: &str) {
        assert_eq!(
            adf_to_markdown(&doc(json!([para(inline)]))),
            expected,
            "inline combination"
        );
    }

    /// Each block node type maps to its Markdown construct.
    #[rstest]
    #[case::heading(json!({"type": "heading", "attrs": {"level": 2}, "content": [{"type": "text", "text": "Title"}]}), "## Title")]
    #[case::heading_clamped(json!({"type": "heading", "attrs": {"level": 9}, "content": [{"type": "text", "text": "T"}]}), "###### T")]
    #[case::heading_closing_hashes(json!({"type": "heading", "attrs": {"level": 1}, "content": [{"type": "text", "text": "Issue ##"}]}), "# Issue \\##")]
    #[case::heading_break(json!({"type": "heading", "attrs": {"level": 1}, "content": [{"type": "text", "text": "a"}, {"type": "hardBreak"}, {"type": "text", "text": "b"}]}), "# a b")]
    #[case::rule_at_start(json!({"type": "rule"}), "***")]
    #[case::blockquote(json!({"type": "blockquote", "content": [para(json!([{"type": "text", "text": "one"}])), para(json!([{"type": "text", "text": "two"}]))]}), "> one\n>\n> two")]
    #[case::code_block(json!({"type": "codeBlock", "attrs": {"language": "rust"}, "content": [{"type": "text", "text": "fn main() {}\n"}]}), "```rust\nfn main() {}\n```")]
    #[case::code_block_backticks(json!({"type": "codeBlock", "content": [{"type": "text", "text": "a ``` b"}]}), "````\na ``` b\n````")]
    #[case::code_block_verbatim(json!({"type": "codeBlock", "content": [{"type": "text", "text": "*x* <y> #1"}]}), "```\n*x* <y> #1\n```")]
    #[case::panel(json!({"type": "panel", "attrs": {"panelType": "warning"}, "content": [para(json!([{"type": "text", "text": "Careful"}]))]}), "> **Warning**\n>\n> Careful")]
    #[case::expand(json!({"type": "expand", "attrs": {"title": "More"}, "content": [para(json!([{"type": "text", "text": "hidden"}]))]}), "**More**\n\nhidden")]
    #[case::nested_expand_untitled(json!({"type": "nestedExpand", "content": [para(json!([{"type": "text", "text": "hidden"}]))]}), "hidden")]
    #[case::block_card(json!({"type": "blockCard", "attrs": {"url": "https://e.org/x"}}), "[https://e.org/x](https://e.org/x)")]
    #[case::media_single(json!({"type": "mediaSingle", "content": [{"type": "media", "attrs": {"id": "abc-123", "type": "file", "alt": "screen.png"}}]}), "_[attachment: screen.png]_")]
    #[case::media_group(json!({"type": "mediaGroup", "content": [{"type": "media", "attrs": {"id": "a1"}}, {"type": "media", "attrs": {"id": "b2"}}]}), "_[attachment: a1]_\n\n_[attachment: b2]_")]
    #[case::media_caption(json!({"type": "mediaSingle", "content": [{"type": "media", "attrs": {"id": "a1"}}, {"type": "caption", "content": [{"type": "text", "text": "Fig 1"}]}]}), "_[attachment: a1]_\n\nFig 1")]
    fn renders_blocks(#[case] node: Value, #[case] expected: &str) {
        assert_eq!(
            adf_to_markdown(&doc(json!([node]))),
            expected,
            "block rendering"
        );
    }

    /// A list item with one paragraph.
    fn item(t: &str) -> Value {
        json!({"type": "listItem", "content": [para(json!([{"type": "text", "text": t}]))]})
    }

    /// Lists indent nested lists under their item's text and keep ordered numbering.
    #[rstest]
    #[case::bullets(json!({"type": "bulletList", "content": [item("a"), item("b")]}), "- a\n- b")]
    #[case::ordered_start(json!({"type": "orderedList", "attrs": {"order": 9}, "content": [item("a"), item("b")]}), "9. a\n10. b")]
    #[case::ordered_default(json!({"type": "orderedList", "content": [item("a")]}), "1. a")]
    #[case::huge_start(json!({"type": "orderedList", "attrs": {"order": 99_999_999_999_u64}, "content": [item("a")]}), "999999999. a")]
    #[case::nested(json!({"type": "bulletList", "content": [
        {"type": "listItem", "content": [
            para(json!([{"type": "text", "text": "a"}])),
            {"type": "orderedList", "content": [
                {"type": "listItem", "content": [
                    para(json!([{"type": "text", "text": "b"}])),
                    {"type": "bulletList", "content": [item("c")]}
                ]}
            ]}
        ]},
        item("d")
    ]}), "- a\n  1. b\n     - c\n- d")]
    #[case::two_paragraphs(json!({"type": "bulletList", "content": [
        {"type": "listItem", "content": [para(json!([{"type": "text", "text": "a"}])), para(json!([{"type": "text", "text": "b"}]))]}
    ]}), "- a\n\n  b")]
    #[case::code_in_item(json!({"type": "bulletList", "content": [
        {"type": "listItem", "content": [{"type": "codeBlock", "content": [{"type": "text", "text": "x\ny"}]}]}
    ]}), "- ```\n  x\n  y\n  ```")]
    #[case::text_that_looks_like_a_list(json!({"type": "bulletList", "content": [item("- not nested")]}), "- \\- not nested")]
    #[case::tasks(json!({"type": "taskList", "content": [
        {"type": "taskItem", "attrs": {"state": "DONE"}, "content": [{"type": "text", "text": "done"}]},
        {"type": "taskItem", "attrs": {"state": "TODO"}, "content": [{"type": "text", "text": "todo"}]},
        {"type": "taskList", "content": [
            {"type": "taskItem", "attrs": {"state": "TODO"}, "content": [{"type": "text", "text": "sub"}]}
        ]}
    ]}), "- [x] done\n- [ ] todo\n  - [ ] sub")]
    #[case::decisions(json!({"type": "decisionList", "content": [
        {"type": "decisionItem", "content": [{"type": "text", "text": "go"}]}
    ]}), "- go")]
    fn renders_lists(#[case] node: Value, #[case] expected: &str) {
        assert_eq!(
            adf_to_markdown(&doc(json!([node]))),
            expected,
            "list rendering"
        );
    }

    /// A table cell holding `t`.
    fn cell(kind: &str, t: &str) -> Value {
        json!({"type": kind, "content": [para(json!([{"type": "text", "text": t}]))]})
    }

    /// Tables become GFM tables with one-line cells, a header and escaped pipes.
    #[rstest]
    #[case::with_header(json!([
        {"type": "tableRow", "content": [cell("tableHeader", "H1"), cell("tableHeader", "H2")]},
        {"type": "tableRow", "content": [cell("tableCell", "a"), cell("tableCell", "b")]}
    ]), "| H1 | H2 |\n| --- | --- |\n| a | b |")]
    #[case::without_header(json!([
        {"type": "tableRow", "content": [cell("tableCell", "a"), cell("tableCell", "b")]},
        {"type": "tableRow", "content": [cell("tableCell", "c")]}
    ]), "| a | b |\n| --- | --- |\n| c |  |")]
    #[case::pipes_and_code(json!([
        {"type": "tableRow", "content": [cell("tableHeader", "a|b"), {"type": "tableCell", "content": [para(json!([text("x|y", json!([{"type": "code"}]))]))]}]}
    ]), "| a\\|b | `x\\|y` |\n| --- | --- |")]
    #[case::multi_block_cell(json!([
        {"type": "tableRow", "content": [{"type": "tableCell", "content": [
            para(json!([{"type": "text", "text": "one"}, {"type": "hardBreak"}, {"type": "text", "text": "two"}])),
            {"type": "bulletList", "content": [item("three")]},
            {"type": "codeBlock", "content": [{"type": "text", "text": "four\nfive"}]}
        ]}]}
    ]), "| one<br>two<br>• three<br>`four five` |\n| --- |")]
    #[case::colspan(json!([
        {"type": "tableRow", "content": [{"type": "tableHeader", "attrs": {"colspan": 2}, "content": [para(json!([{"type": "text", "text": "wide"}]))]}]},
        {"type": "tableRow", "content": [cell("tableCell", "a"), cell("tableCell", "b")]}
    ]), "| wide |  |\n| --- | --- |\n| a | b |")]
    #[case::empty(json!([]), "")]
    fn renders_tables(#[case] rows: Value, #[case] expected: &str) {
        let d = doc(json!([{"type": "table", "content": rows}]));
        assert_eq!(adf_to_markdown(&d), expected, "table rendering");
    }

    /// Inline nodes other than text render as readable text.
    #[rstest]
    #[case::mention(json!({"type": "mention", "attrs": {"id": "5b10", "text": "@Mia Krystof"}}), "\\@Mia Krystof")]
    #[case::mention_id_only(json!({"type": "mention", "attrs": {"id": "5b10ac"}}), "\\@5b10ac")]
    #[case::emoji_text(json!({"type": "emoji", "attrs": {"shortName": ":smile:", "text": "😄"}}), "😄")]
    #[case::emoji_short_name(json!({"type": "emoji", "attrs": {"shortName": ":smile:"}}), ":smile:")]
    #[case::inline_card(json!({"type": "inlineCard", "attrs": {"url": "https://e.org/x_y"}}), "[https://e.org/x_y](https://e.org/x_y)")]
    #[case::status(json!({"type": "status", "attrs": {"text": "IN PROGRESS", "color": "blue"}}), "`IN PROGRESS`")]
    #[case::date_string(json!({"type": "date", "attrs": {"timestamp": "1582156800000"}}), "2020-02-20")]
    #[case::date_number(json!({"type": "date", "attrs": {"timestamp": 0}}), "1970-01-01")]
    #[case::date_garbage(json!({"type": "date", "attrs": {"timestamp": "soon"}}), "soon")]
    #[case::media_inline(json!({"type": "mediaInline", "attrs": {"id": "m1"}}), "_[attachment: m1]_")]
    #[case::placeholder(json!({"type": "placeholder", "attrs": {"text": "Type here"}}), "")]
    fn renders_inline_nodes(#[case] node: Value, #[case] expected: &str) {
        assert_eq!(
            adf_to_markdown(&doc(json!([para(json!([node]))]))),
            expected,
            "inline node rendering"
        );
    }

    /// Jira text that looks like Markdown or HTML stays text in GitLab.
    #[rstest]
    #[case::star_line_start("* not a list", "\\* not a list")]
    #[case::issue_ref_line_start("#1 is first", "\\#1 is first")]
    #[case::script("<script>alert(1)</script>", "&lt;script>alert(1)&lt;/script>")]
    #[case::arithmetic("a*b*c", "a\\*b\\*c")]
    #[case::snake_case("file_name_here", "file_name_here")]
    #[case::prose("Well. It is 5-6 items, done!", "Well. It is 5-6 items, done!")]
    #[case::url("see https://e.org/a_b.", "see <https://e.org/a_b>.")]
    fn escapes_text(#[case] input: &str, #[case] expected: &str) {
        let d = doc(json!([para(json!([{"type": "text", "text": input}]))]));
        assert_eq!(adf_to_markdown(&d), expected, "escaping of {input:?}");
    }

    /// A rule is `---`, except first in the document, where GitLab would see front matter.
    #[test]
    fn renders_rules() {
        let d = doc(json!([
            {"type": "rule"},
            para(json!([{"type": "text", "text": "a"}])),
            {"type": "rule"}
        ]));
        assert_eq!(
            adf_to_markdown(&d),
            "***\n\na\n\n---",
            "leading rule avoids `---`"
        );
    }

    /// Malformed or unexpected JSON never panics and keeps whatever text it can.
    #[rstest]
    #[case::null(json!(null), "")]
    #[case::number(json!(42), "")]
    #[case::bare_string(json!("plain *text*"), "plain \\*text\\*")]
    #[case::array(json!([para(json!([{"type": "text", "text": "a"}]))]), "a")]
    #[case::empty_doc(json!({"type": "doc", "version": 1, "content": []}), "")]
    #[case::no_content(json!({"type": "doc"}), "")]
    #[case::content_not_array(json!({"type": "doc", "content": "x"}), "")]
    #[case::wrong_types(json!({"type": "doc", "content": [
        {"type": 7, "content": [{"type": "text", "text": "kept"}]},
        {"type": "paragraph", "content": [{"type": "text", "text": 5, "marks": "bold"}, "str", null, 3]},
        {"type": "heading", "attrs": {"level": "two"}, "content": [{"type": "text", "text": "h"}]},
        {"type": "orderedList", "attrs": {"order": -4}, "content": [item("x"), "loose", 9]},
        {"type": "table", "content": [{"type": "tableRow", "content": "nope"}, 1]},
        {"type": "mention"}, {"type": "emoji", "attrs": []}, {"type": "date", "attrs": {"timestamp": null}}
    ]}), "kept\n\nstr\n\n# h\n\n1. x\n2. loose\n3.")]
    #[case::unknown_with_content(json!({"type": "doc", "content": [{"type": "fancyBox", "content": [para(json!([{"type": "text", "text": "inside"}]))]}]}), "inside")]
    #[case::unknown_with_text(json!({"type": "doc", "content": [para(json!([{"type": "sparkle", "text": "shiny"}]))]}), "shiny")]
    #[case::unknown_block_text(json!({"type": "doc", "content": [{"type": "sparkleBlock", "text": "shiny"}]}), "shiny")]
    fn survives_garbage(#[case] input: Value, #[case] expected: &str) {
        assert_eq!(
            adf_to_markdown(&input),
            expected,
            "best-effort output for {input}"
        );
    }

    /// Nesting far beyond the cap is flattened to text instead of recursing.
    #[rstest]
    #[case::blockquotes("blockquote")]
    #[case::unknown("wrapper")]
    #[case::bullet_lists("bulletList")]
    fn caps_recursion_depth(#[case] kind: &str) {
        let mut node = para(json!([{"type": "text", "text": "deep *text*"}]));
        for _ in 0..200 {
            node = if kind == "bulletList" {
                json!({"type": kind, "content": [{"type": "listItem", "content": [node]}]})
            } else {
                json!({"type": kind, "content": [node]})
            };
        }
        let md = adf_to_markdown(&doc(json!([node])));
        assert!(
            md.ends_with("deep \\*text\\*"),
            "the innermost text survives, escaped: {md}"
        );
    }

    /// Thousands of pseudo-random ADF trees convert without panicking and without trailing
    /// whitespace.
    #[test]
    fn random_trees_never_panic() {
        const TYPES: &[&str] = &[
            "doc",
            "paragraph",
            "text",
            "hardBreak",
            "heading",
            "bulletList",
            "orderedList",
            "listItem",
            "taskList",
            "taskItem",
            "codeBlock",
            "blockquote",
            "rule",
            "panel",
            "expand",
            "table",
            "tableRow",
            "tableHeader",
            "tableCell",
            "mention",
            "emoji",
            "status",
            "date",
            "inlineCard",
            "mediaSingle",
            "media",
            "unknown",
        ];
        const TEXTS: &[&str] = &["a", " *b* ", "|", "`", "\n", "- x", "  ", "#1", ""];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2_000 {
            // Build bottom-up: a pool of nodes, each new one taking some earlier ones as content.
            let mut pool: Vec<Value> = Vec::new();
            for _ in 0..(next() % 30) {
                let ty = TYPES[(next() % TYPES.len() as u64) as usize];
                let take = (next() % 4) as usize;
                let content: Vec<Value> = (0..take.min(pool.len()))
                    .map(|_| pool.swap_remove((next() % pool.len() as u64) as usize))
                    .collect();
                let t = TEXTS[(next() % TEXTS.len() as u64) as usize];
                let marks = match next() % 4 {
                    0 => json!([{"type": "strong"}, {"type": "code"}]),
                    1 => {
                        json!([{"type": "link", "attrs": {"href": "https://e.org/(x)"}}, {"type": "em"}])
                    }
                    _ => json!([]),
                };
                pool.push(json!({
                    "type": ty, "text": t, "content": content, "marks": marks,
                    "attrs": {"level": next() % 9, "order": next() % 12, "state": "DONE",
                              "text": t, "url": "https://e.org", "timestamp": "86400000"}
                }));
            }
            let d = doc(Value::Array(pool));
            let md = adf_to_markdown(&d);
            assert!(
                md.lines().all(|l| l == l.trim_end()),
                "no trailing whitespace for {d}: {md:?}"
            );
        }
    }

    /// No line of the output ends in whitespace, even around breaks and empty items.
    #[test]
    fn output_has_no_trailing_whitespace() {
        let d = doc(json!([
            para(json!([{"type": "text", "text": "a  "}, {"type": "hardBreak"}, {"type": "text", "text": "  b  "}])),
            {"type": "bulletList", "content": [{"type": "listItem", "content": []}, item("c ")]},
            {"type": "blockquote", "content": [para(json!([{"type": "text", "text": "q"}])), para(json!([{"type": "text", "text": "r"}]))]},
            {"type": "codeBlock", "content": [{"type": "text", "text": "x   \n\ny"}]}
        ]));
        let md = adf_to_markdown(&d);
        assert!(
            md.lines().all(|l| l == l.trim_end()),
            "no trailing whitespace in {md:?}"
        );
        assert_eq!(
            md, "a\\\nb\n\n-\n- c\n\n> q\n>\n> r\n\n```\nx\n\ny\n```",
            "expected layout"
        );
    }

    /// The description of Atlassian's published v3 issue example converts to its text.
    #[test]
    fn converts_the_real_issue_fixture() {
        let issue: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/jira/atlassian-openapi_issue_GET_200_v3_adf.json"
        ))
        .expect("the fixture is valid JSON");
        let md = adf_to_markdown(&issue["fields"]["description"]);
        assert_eq!(
            md, "Main order flow broken",
            "the ADF paragraph's text, unchanged"
        );
        let comment = adf_to_markdown(&issue["fields"]["comment"][0]["body"]);
        assert!(
            comment.starts_with("Lorem ipsum dolor sit amet"),
            "comments use ADF too: {comment}"
        );
    }
}
