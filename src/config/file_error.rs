//! A TOML error about the config file, made safe to show: toml's own message quotes the line at
//! fault, and that line may hold a secret (`token = "glpat-…"` is a key we refuse, but the
//! refusal must not print it). This names the key as `section.key` with its line and column, and
//! gives toml's reason without the values it quotes.

use std::collections::HashMap;

/// `jira.token (line 12, column 1): unknown field `token`, expected one of …`.
pub(super) fn describe(text: &str, e: &toml::de::Error) -> String {
    let reason = without_values(e.message().lines().next().unwrap_or("not valid TOML"));
    let Some(span) = e.span() else {
        return reason;
    };
    let at = floor_char_boundary(text, span.start);
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..at].matches('\n').count() + 1;
    let column = text[line_start..at].chars().count() + 1;
    let key = key_at(text, line_start);
    if key.is_empty() {
        format!("line {line}, column {column}: {reason}")
    } else {
        format!("{key} (line {line}, column {column}): {reason}")
    }
}

/// The largest char boundary of `text` at or before `i`.
fn floor_char_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The dotted key of the line starting at `line_start`: the table it is in (an array of tables
/// indexed, `rule[1]`), then the key before its `=`, if it has one. A header line names its
/// table. Only text shaped like a key is used, never a value.
fn key_at(text: &str, line_start: usize) -> String {
    let mut arrays: HashMap<String, usize> = HashMap::new();
    let mut table = String::new();
    for line in text[..line_start].lines() {
        if let Some(path) = header(line, &mut arrays) {
            table = path;
        }
    }
    let line = text[line_start..].lines().next().unwrap_or("");
    if let Some(path) = header(line, &mut arrays) {
        return path;
    }
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| is_key_text(k));
    match key {
        Some(k) if table.is_empty() => k.to_owned(),
        Some(k) => format!("{table}.{k}"),
        None => table,
    }
}

/// A `[table]` or `[[array]]` header's path, counting the arrays' elements in `arrays`.
fn header(line: &str, arrays: &mut HashMap<String, usize>) -> Option<String> {
    let line = line.trim();
    let (name, array) = if let Some(rest) = line.strip_prefix("[[") {
        (rest.split_once("]]")?.0.trim(), true)
    } else {
        (line.strip_prefix('[')?.split_once(']')?.0.trim(), false)
    };
    if !is_key_text(name) {
        return None;
    }
    if array {
        *arrays.entry(name.to_owned()).or_default() += 1;
    }
    // Each prefix that names an array of tables gets its current element's index.
    let mut path = String::new();
    let mut raw = String::new();
    for (i, part) in name.split('.').map(str::trim).enumerate() {
        if i > 0 {
            path.push('.');
            raw.push('.');
        }
        path.push_str(part);
        raw.push_str(part);
        if let Some(n) = arrays.get(&raw) {
            path.push_str(&format!("[{}]", n - 1));
        }
    }
    Some(path)
}

/// Returns true if and only if `s` is shaped like a (dotted, possibly quoted) TOML key.
fn is_key_text(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('#')
        && s.chars()
            .all(|c| c.is_alphanumeric() || " _-.\"'".contains(c))
}

/// `message` without the double-quoted values serde puts in it (`invalid type: string "…"`);
/// names in backticks (keys, expected tokens) are kept.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars().peekable();
    let mut in_backticks = false;
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                in_backticks = !in_backticks;
                out.push(c);
            }
            '"' if !in_backticks => {
                // Skip to the closing quote, minding escapes, and the space before the value.
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                if out.ends_with(' ') {
                    out.pop();
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quoted values go, backticked names stay.
    #[rstest::rstest]
    #[case::string(
        "invalid type: string \"glpat-x\\\"y\", expected u64",
        "invalid type: string, expected u64"
    )]
    #[case::backticks(
        "invalid basic string, expected `\"`",
        "invalid basic string, expected `\"`"
    )]
    #[case::names(
        "unknown field `token`, expected `url`",
        "unknown field `token`, expected `url`"
    )]
    fn values_are_removed(#[case] message: &str, #[case] shown: &str) {
        assert_eq!(without_values(message), shown);
    }

    /// Keys are named from their table, arrays of tables indexed.
    #[test]
    fn keys_are_dotted_and_indexed() {
        let text = "top = 1\n[jira]\nurl = \"x\"\n[[rule]]\nname = \"a\"\n[[rule]]\n\
                    name = \"b\"\n[rule.severity]\n\"P1 - Outage\" = 5\n";
        let line = |n: usize| text.lines().take(n - 1).map(|l| l.len() + 1).sum::<usize>();
        assert_eq!(key_at(text, line(1)), "top");
        assert_eq!(key_at(text, line(3)), "jira.url");
        assert_eq!(key_at(text, line(6)), "rule[1]");
        assert_eq!(key_at(text, line(7)), "rule[1].name");
        assert_eq!(key_at(text, line(9)), "rule[1].severity.\"P1 - Outage\"");
    }
}
