//! GitLab's issue `search`: PostgreSQL full-text search over title and description, with the
//! ILIKE fallback for search strings outside the Latin ranges.
//!
//! Sources (gitlabhq/gitlabhq):
//! - `app/finders/issuable_finder.rb` (`by_search`, `use_full_text_search?`,
//!   `FULL_TEXT_SEARCH_TERM_REGEX`, `filter_by_full_text_search`): a search string made only of
//!   characters in `[\u0000-\u02FF\u1E00-\u1EFF\u2070-\u218F]` always takes the full-text path,
//!   whatever its length; there is no minimum length on that path.
//! - `app/models/concerns/pg_full_text_searchable.rb`: the search vector is
//!   `setweight(to_tsvector('english', title), 'A') || setweight(to_tsvector('english',
//!   description), 'B')` after XML tags `</?(x)>` are replaced by ` x `; the query is built by
//!   `build_tsquery`: terms from `Gitlab::SQL::Pattern.split_query_to_search_terms`, each quoted as
//!   one `to_tsquery` operand with `:*` (prefix) and the weights of `in` (`title` → A,
//!   `description` → B, none → any), a digits-only term as `(N:* | -N:*)`, a quoted phrase as
//!   its words joined by `<->` without prefix, all terms joined by `&`.
//! - `app/models/issue.rb` (`full_search`) and `app/models/concerns/issuable.rb` (`full_search`),
//!   `lib/gitlab/sql/pattern.rb` (`fuzzy_search`, `MIN_CHARS_FOR_PARTIAL_MATCHING = 3`): the
//!   fallback for other search strings is ILIKE `%word%` for every word of three characters or
//!   more (all words, in one column), or ILIKE of the whole string when no word is that long,
//!   restricted to issues whose title or description has a non-Latin character.
//!
//! The tokenizer follows PostgreSQL's default parser (`src/backend/tsearch/wparser_def.c` in
//! postgres/postgres) for the token types that matter here:
//! - `scheme://` is a `protocol` token, which the `english` configuration does not index;
//! - `host.tld/path` is a `url` followed by its `host` and `url_path` (the path runs to the next
//!   space or quote), all indexed whole and lower-cased (`simple` dictionary), so a key inside a
//!   link is not a lexeme of its own;
//! - a hyphenated word is the compound plus its parts (`foo-bar` → `foo-bar`, `foo`, `bar`), but a
//!   part made only of digits does not continue a hyphenated word (`TPS_InHyphenDigitLookahead`
//!   needs a letter after the digits): `OPS-1` is the word `ops` followed by the signed integer
//!   `-1`, which is why GitLab searches a digits-only term `N` as `N | -N`;
//! - `a@b.tld` is an `email`, a run with a `/` is a `file` path, numbers keep their sign and dots.
//!
//! Simplifications, on purpose: words are lower-cased and stemmed with Porter2 steps 1a–1c only
//! (not the whole Snowball English stemmer; the same stemmer runs on documents and queries, so
//! matches agree with PostgreSQL for plurals and `-ed`/`-ing` forms, not for every suffix);
//! stop words are the Snowball English list; no transliteration of accents; positions are not
//! capped at 16383.

/// Snowball's English stop words (PostgreSQL's `english.stop`).
const STOP_WORDS: &[&str] = &[
    "i",
    "me",
    "my",
    "myself",
    "we",
    "our",
    "ours",
    "ourselves",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "he",
    "him",
    "his",
    "himself",
    "she",
    "her",
    "hers",
    "herself",
    "it",
    "its",
    "itself",
    "they",
    "them",
    "their",
    "theirs",
    "themselves",
    "what",
    "which",
    "who",
    "whom",
    "this",
    "that",
    "these",
    "those",
    "am",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "having",
    "do",
    "does",
    "did",
    "doing",
    "a",
    "an",
    "the",
    "and",
    "but",
    "if",
    "or",
    "because",
    "as",
    "until",
    "while",
    "of",
    "at",
    "by",
    "for",
    "with",
    "about",
    "against",
    "between",
    "into",
    "through",
    "during",
    "before",
    "after",
    "above",
    "below",
    "to",
    "from",
    "up",
    "down",
    "in",
    "out",
    "on",
    "off",
    "over",
    "under",
    "again",
    "further",
    "then",
    "once",
    "here",
    "there",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "nor",
    "not",
    "only",
    "own",
    "same",
    "so",
    "than",
    "too",
    "very",
    "s",
    "t",
    "can",
    "will",
    "just",
    "don",
    "should",
    "now",
];

/// How a token is normalized: the `english` configuration maps word tokens to `english_stem`
/// and everything else it indexes to `simple`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dict {
    English,
    Simple,
}

/// One token of the parser, already classified by its dictionary.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Token {
    text: String,
    dict: Dict,
}

/// A lexeme at a position (1-based), as `to_tsvector` yields it; `None` is a stop word, which
/// still takes its position.
fn lexemes(text: &str) -> Vec<(u32, Option<String>)> {
    tokens(text)
        .into_iter()
        .enumerate()
        .map(|(i, t)| (i as u32 + 1, normalize(&t)))
        .collect()
}

fn normalize(t: &Token) -> Option<String> {
    let lower = t.text.to_lowercase();
    match t.dict {
        Dict::Simple => Some(lower),
        Dict::English if STOP_WORDS.contains(&lower.as_str()) => None,
        Dict::English => Some(stem(&lower)),
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

/// PostgreSQL's default parser, reduced to the token types listed in the module docs.
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_word_char(c) {
            i = word_like(&chars, i, &mut out);
        } else if (c == '-' || c == '+') && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
            let end = number_end(&chars, i + 1);
            out.push(simple(&chars[i..end]));
            i = end;
        } else if c == '/' && chars.get(i + 1).is_some_and(|n| n.is_ascii_alphanumeric()) {
            let end = file_end(&chars, i);
            out.push(simple(&chars[i..end]));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn simple(chars: &[char]) -> Token {
    Token {
        text: chars.iter().collect(),
        dict: Dict::Simple,
    }
}

fn english(chars: &[char]) -> Token {
    Token {
        text: chars.iter().collect(),
        dict: Dict::English,
    }
}

/// Parses the token starting with a letter or digit at `start`; returns where the next one may
/// start.
fn word_like(chars: &[char], start: usize, out: &mut Vec<Token>) -> usize {
    // `scheme://`: a protocol token, not indexed; the host that follows is parsed next.
    let letters = run(chars, start, |c| c.is_ascii_alphabetic());
    if letters > start
        && chars.get(letters) == Some(&':')
        && chars.get(letters + 1) == Some(&'/')
        && chars.get(letters + 2) == Some(&'/')
    {
        return letters + 3;
    }
    if let Some(end) = email_end(chars, start) {
        out.push(simple(&chars[start..end]));
        return end;
    }
    if let Some(host_end) = host_end(chars, start) {
        if chars.get(host_end) == Some(&'/') {
            let path_end = run(chars, host_end, |c| {
                !c.is_whitespace() && c != '"' && c != '\''
            });
            out.push(simple(&chars[start..path_end]));
            out.push(simple(&chars[start..host_end]));
            out.push(simple(&chars[host_end..path_end]));
            return path_end;
        }
        out.push(simple(&chars[start..host_end]));
        return host_end;
    }
    let file = file_end(chars, start);
    if chars[start..file].contains(&'/') {
        out.push(simple(&chars[start..file]));
        return file;
    }
    if chars[start].is_ascii_digit() {
        let digits = run(chars, start, |c| c.is_ascii_digit());
        if !chars.get(digits).is_some_and(|c| is_word_char(*c)) {
            let end = number_end(chars, start);
            out.push(simple(&chars[start..end]));
            return end;
        }
    }
    // A word, possibly the first part of a hyphenated word.
    let first = run(chars, start, is_word_char);
    let mut parts = vec![(start, first)];
    let mut end = first;
    while chars.get(end) == Some(&'-') {
        let part_end = run(chars, end + 1, is_word_char);
        let part = &chars[end + 1..part_end];
        // A part needs a letter: digits alone end the hyphenated word (and become `-N`).
        if part.is_empty() || !part.iter().any(|c| c.is_alphabetic()) {
            break;
        }
        parts.push((end + 1, part_end));
        end = part_end;
    }
    let has_letter = |s: &[char]| s.iter().any(|c| c.is_alphabetic());
    let has_digit = |s: &[char]| s.iter().any(|c| c.is_ascii_digit());
    if parts.len() > 1 && has_letter(&chars[start..first]) {
        let whole = &chars[start..end];
        out.push(if has_digit(whole) {
            simple(whole)
        } else {
            english(whole)
        });
        for (s, e) in parts {
            let part = &chars[s..e];
            out.push(if has_digit(part) {
                simple(part)
            } else {
                english(part)
            });
        }
        return end;
    }
    let word = &chars[start..first];
    out.push(if has_digit(word) {
        simple(word)
    } else {
        english(word)
    });
    first
}

fn run(chars: &[char], from: usize, pred: impl Fn(char) -> bool) -> usize {
    let mut i = from;
    while i < chars.len() && pred(chars[i]) {
        i += 1;
    }
    i
}

/// Digits with optional `.digits` groups (decimals and version numbers).
fn number_end(chars: &[char], digits_start: usize) -> usize {
    let mut end = run(chars, digits_start, |c| c.is_ascii_digit());
    while chars.get(end) == Some(&'.') && chars.get(end + 1).is_some_and(char::is_ascii_digit) {
        end = run(chars, end + 1, |c| c.is_ascii_digit());
    }
    end
}

/// A file path: letters, digits, `_`, `.`, `-`, `~` and `/`, without a trailing `.` or `-`.
fn file_end(chars: &[char], start: usize) -> usize {
    let mut end = run(chars, start, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '~' | '/')
    });
    while end > start && matches!(chars[end - 1], '.' | '-') {
        end -= 1;
    }
    end
}

/// A host name (`label.label.tld`, a top-level label of two or more ASCII letters, an optional
/// `:port`) starting at `start`; returns its end.
fn host_end(chars: &[char], start: usize) -> Option<usize> {
    let mut labels = Vec::new();
    let mut i = start;
    loop {
        let label_start = i;
        if !chars.get(i).is_some_and(char::is_ascii_alphanumeric) {
            break;
        }
        i = run(chars, i, |c| c.is_ascii_alphanumeric() || c == '-');
        while i > label_start && chars[i - 1] == '-' {
            i -= 1;
        }
        labels.push((label_start, i));
        if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(char::is_ascii_alphanumeric) {
            i += 1;
        } else {
            break;
        }
    }
    let &(tld_start, tld_end) = labels.last()?;
    let tld = &chars[tld_start..tld_end];
    if labels.len() < 2 || tld.len() < 2 || !tld.iter().all(char::is_ascii_alphabetic) {
        return None;
    }
    // The host must end the run: `ops.example.com-x` or `a.bc_d` are something else.
    if chars
        .get(tld_end)
        .is_some_and(|c| is_word_char(*c) || *c == '_' || *c == '-')
    {
        return None;
    }
    let mut end = tld_end;
    if chars.get(end) == Some(&':') && chars.get(end + 1).is_some_and(char::is_ascii_digit) {
        end = run(chars, end + 1, |c| c.is_ascii_digit());
    }
    Some(end)
}

/// `local@host.tld`.
fn email_end(chars: &[char], start: usize) -> Option<usize> {
    let at = run(chars, start, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')
    });
    if chars.get(at) != Some(&'@') {
        return None;
    }
    let end = host_end(chars, at + 1)?;
    // No port in an e-mail address.
    Some(
        run(chars, at + 1, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '-')
        })
        .min(end),
    )
}

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u' | 'y')
}

/// Porter2 steps 1a–1c (see the module docs for why only these).
fn stem(word: &str) -> String {
    let mut w: Vec<char> = word.chars().collect();
    if w.len() <= 2 || !w.iter().all(char::is_ascii_lowercase) {
        return word.to_owned();
    }
    let ends = |w: &[char], s: &str| {
        let s: Vec<char> = s.chars().collect();
        w.len() >= s.len() && w[w.len() - s.len()..] == s[..]
    };
    // Step 1a.
    if ends(&w, "sses") {
        w.truncate(w.len() - 2);
    } else if ends(&w, "ied") || ends(&w, "ies") {
        let cut = if w.len() > 4 { 2 } else { 1 };
        w.truncate(w.len() - cut);
    } else if ends(&w, "s")
        && !ends(&w, "us")
        && !ends(&w, "ss")
        && w[..w.len() - 2].iter().any(|c| is_vowel(*c))
    {
        w.pop();
    }
    // Step 1b (without R1: `eed`/`eedly` are left alone).
    for suffix in ["ingly", "edly", "ing", "ed"] {
        if ends(&w, suffix) && !ends(&w, "eed") {
            let stem_len = w.len() - suffix.len();
            if w[..stem_len].iter().any(|c| is_vowel(*c)) {
                w.truncate(stem_len);
                if ends(&w, "at") || ends(&w, "bl") || ends(&w, "iz") {
                    w.push('e');
                } else if w.len() >= 2
                    && w[w.len() - 1] == w[w.len() - 2]
                    && "bdfgmnprt".contains(w[w.len() - 1])
                {
                    w.pop();
                }
            }
            break;
        }
    }
    // Step 1c.
    if w.len() > 2 && matches!(w[w.len() - 1], 'y') && !is_vowel(w[w.len() - 2]) {
        let last = w.len() - 1;
        w[last] = 'i';
    }
    w.into_iter().collect()
}

/// A lexeme of the search vector.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    lexeme: String,
    pos: u32,
    /// `A` (title) or `B` (description).
    weight: char,
}

/// The issue's search vector: title lexemes weighted A, then description lexemes weighted B,
/// shifted past the title's last position (the `||` of two tsvectors).
fn search_vector(title: &str, description: Option<&str>) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut offset = 0;
    for (text, weight) in [(Some(title), 'A'), (description, 'B')] {
        let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
            continue;
        };
        let mut last = 0;
        for (pos, lexeme) in lexemes(&strip_xml_tags(text)) {
            if let Some(lexeme) = lexeme {
                last = last.max(pos);
                entries.push(Entry {
                    lexeme,
                    pos: pos + offset,
                    weight,
                });
            }
        }
        offset += last;
    }
    entries
}

/// `column_text.gsub(XML_TAG_REGEX, ' \1 ')` with `XML_TAG_REGEX = %r{</?([^>]+)>}`.
fn strip_xml_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let inner_start = usize::from(after.starts_with('/'));
        let inner = &after[inner_start..];
        match inner.find('>') {
            Some(close) if close > 0 => {
                out.push_str(&rest[..open]);
                out.push(' ');
                out.push_str(&inner[..close]);
                out.push(' ');
                rest = &inner[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One lexeme of a query operand: where it sits relative to the operand's first lexeme, and
/// whether it is a prefix (`:*`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct QueryLexeme {
    offset: u32,
    lexeme: String,
    prefix: bool,
}

/// A phrase: lexemes that must follow each other at their offsets.
type Phrase = Vec<QueryLexeme>;

/// The parsed `to_tsquery`: every clause must match; a clause matches when one of its phrases
/// does.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TsQuery {
    clauses: Vec<Vec<Phrase>>,
    /// Allowed weights; empty allows all.
    weights: Vec<char>,
}

/// The lexemes `to_tsquery` makes of one operand; stop words keep their place in the phrase.
fn operand(text: &str, prefix: bool, base: u32) -> (Phrase, u32) {
    let found = lexemes(text);
    let first = found.first().map_or(1, |(p, _)| *p);
    let width = found.last().map_or(0, |(p, _)| *p + 1 - first);
    let phrase = found
        .into_iter()
        .filter_map(|(pos, lexeme)| {
            lexeme.map(|lexeme| QueryLexeme {
                offset: base + pos - first,
                lexeme,
                prefix,
            })
        })
        .collect();
    (phrase, width)
}

/// One operand on its own: its first lexeme at offset 0.
fn single_operand(text: &str, prefix: bool) -> Phrase {
    rebase(operand(text, prefix, 0).0)
}

/// Normalizes a phrase so that its first lexeme sits at offset 0.
fn rebase(mut phrase: Phrase) -> Phrase {
    if let Some(min) = phrase.iter().map(|l| l.offset).min() {
        for l in &mut phrase {
            l.offset -= min;
        }
    }
    phrase
}

/// `Gitlab::SQL::Pattern.split_query_to_search_terms`: `"quoted terms"` (standing alone between
/// spaces) are taken out and appended after the other whitespace-separated terms.
fn search_terms(query: &str) -> Vec<String> {
    let chars: Vec<char> = query.chars().collect();
    let mut rest = String::new();
    let mut quoted = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let at_start = i == 0 || chars[i - 1] == ' ';
        if chars[i] == '"'
            && at_start
            && let Some(len) = chars[i + 1..].iter().position(|c| *c == '"')
        {
            let close = i + 1 + len;
            let ends = close + 1 == chars.len() || chars[close + 1] == ' ';
            if len > 0 && ends {
                quoted.push(chars[i + 1..close].iter().collect::<String>());
                i = close + 1;
                continue;
            }
        }
        rest.push(chars[i]);
        i += 1;
    }
    rest.split_whitespace()
        .map(str::to_owned)
        .chain(quoted)
        .collect()
}

/// GitLab's `build_tsquery` followed by PostgreSQL's `to_tsquery('english', …)`.
fn build_tsquery(search: &str, within: Option<&str>) -> TsQuery {
    let weights = within
        .unwrap_or_default()
        .split(',')
        .filter_map(|c| match c {
            "title" => Some('A'),
            "description" => Some('B'),
            _ => None,
        })
        .collect();
    let clauses = search_terms(search)
        .into_iter()
        .map(|term| {
            if term.chars().all(|c| c.is_ascii_digit()) {
                vec![
                    single_operand(&term, true),
                    single_operand(&format!("-{term}"), true),
                ]
            } else if term.contains(char::is_whitespace) {
                let mut phrase = Vec::new();
                let mut base = 0;
                for word in term.split_whitespace() {
                    let (lexemes, width) = operand(word, false, base);
                    phrase.extend(lexemes);
                    base += width.max(1);
                }
                vec![rebase(phrase)]
            } else {
                vec![single_operand(&term, true)]
            }
        })
        .map(|alternatives| {
            alternatives
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
        })
        // An operand with no lexemes (stop words, punctuation) is dropped, as to_tsquery does.
        .filter(|alternatives| !alternatives.is_empty())
        .collect();
    TsQuery { clauses, weights }
}

fn lexeme_matches(entry: &Entry, q: &QueryLexeme, weights: &[char]) -> bool {
    (weights.is_empty() || weights.contains(&entry.weight))
        && if q.prefix {
            entry.lexeme.starts_with(&q.lexeme)
        } else {
            entry.lexeme == q.lexeme
        }
}

fn phrase_matches(vector: &[Entry], phrase: &Phrase, weights: &[char]) -> bool {
    let Some(first) = phrase.first() else {
        return false;
    };
    vector
        .iter()
        .filter(|e| lexeme_matches(e, first, weights))
        .any(|start| {
            phrase.iter().skip(1).all(|q| {
                let pos = start.pos - first.offset + q.offset;
                vector
                    .iter()
                    .any(|e| e.pos == pos && lexeme_matches(e, q, weights))
            })
        })
}

/// `search_vector @@ to_tsquery(...)`; an empty query matches nothing.
fn full_text_matches(title: &str, description: Option<&str>, query: &TsQuery) -> bool {
    if query.clauses.is_empty() {
        return false;
    }
    let vector = search_vector(title, description);
    query.clauses.iter().all(|alternatives| {
        alternatives
            .iter()
            .any(|p| phrase_matches(&vector, p, &query.weights))
    })
}

/// `IssuableFinder::FULL_TEXT_SEARCH_TERM_PATTERN`.
fn is_latin(c: char) -> bool {
    matches!(c as u32, 0..=0x02FF | 0x1E00..=0x1EFF | 0x2070..=0x218F)
}

/// `fuzzy_search` over the columns of `in` (both when none is named), for non-Latin searches.
fn fuzzy_matches(
    title: &str,
    description: Option<&str>,
    search: &str,
    within: Option<&str>,
) -> bool {
    let non_latin = |t: &str| !t.chars().all(is_latin);
    if !non_latin(title) && !description.is_some_and(non_latin) {
        return false;
    }
    let squished = search.split_whitespace().collect::<Vec<_>>().join(" ");
    if squished.is_empty() {
        return false;
    }
    let words: Vec<String> = search_terms(&squished)
        .into_iter()
        .filter(|w| w.chars().count() >= 3)
        .map(|w| w.to_lowercase())
        .collect();
    let named: Vec<&str> = within
        .unwrap_or_default()
        .split(',')
        .filter(|c| matches!(*c, "title" | "description"))
        .collect();
    let columns: Vec<Option<&str>> = if named.is_empty() {
        vec![Some(title), description]
    } else {
        named
            .iter()
            .map(|c| {
                if *c == "title" {
                    Some(title)
                } else {
                    description
                }
            })
            .collect()
    };
    columns.into_iter().flatten().any(|text| {
        let text = text.to_lowercase();
        if words.is_empty() {
            text == squished.to_lowercase()
        } else {
            words.iter().all(|w| text.contains(w.as_str()))
        }
    })
}

/// Whether GitLab's `GET /projects/:id/issues?search=…&in=…` lists this issue.
pub(crate) fn issue_matches(
    title: &str,
    description: Option<&str>,
    search: &str,
    within: Option<&str>,
) -> bool {
    if search.chars().all(is_latin) {
        full_text_matches(title, description, &build_tsquery(search, within))
    } else {
        fuzzy_matches(title, description, search, within)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lexeme_list(text: &str) -> Vec<String> {
        lexemes(text).into_iter().filter_map(|(_, l)| l).collect()
    }

    /// A URL is url, host and url_path; the key inside it is no lexeme of its own.
    #[test]
    fn url_tokens() {
        assert_eq!(
            lexeme_list("https://acme.atlassian.net/browse/OPS-1"),
            [
                "acme.atlassian.net/browse/ops-1",
                "acme.atlassian.net",
                "/browse/ops-1"
            ],
            "protocol dropped, url + host + url_path"
        );
        assert_eq!(
            lexeme_list("see acme.example.com for more"),
            ["see", "acme.example.com"],
            "a bare host; stop words dropped"
        );
        assert_eq!(
            lexeme_list("mail ops@acme.example"),
            ["mail", "ops@acme.example"],
            "e-mail"
        );
    }

    /// `OPS-1` is `ops` (stemmed `op`) and the signed integer `-1`; `foo-bar` is compound + parts.
    #[test]
    fn hyphens_and_numbers() {
        assert_eq!(lexeme_list("OPS-1 failed"), ["op", "-1", "fail"]);
        assert_eq!(
            lexeme_list("foo-bar beta-2a"),
            ["foo-bar", "foo", "bar", "beta-2a", "beta", "2a"],
            "compound then parts; a part with digits and letters continues the word"
        );
        assert_eq!(lexeme_list("v1.2.3 and 42"), ["v1", "2.3", "42"]);
        assert_eq!(lexeme_list("browse/OPS-4"), ["browse/ops-4"], "a file path");
    }

    /// Porter2 step 1: plurals and -ed/-ing.
    #[test]
    fn stemming() {
        for (word, stemmed) in [
            ("incidents", "incident"),
            ("databases", "database"),
            ("failed", "fail"),
            ("running", "run"),
            ("classes", "class"),
            ("status", "status"),
            ("ponies", "poni"),
            ("happy", "happi"),
        ] {
            assert_eq!(stem(word), stemmed, "{word}");
        }
    }

    /// GitLab's term splitting keeps quoted phrases apart and puts them last.
    #[test]
    fn terms() {
        assert_eq!(
            search_terms(r#"a "b c" d"#),
            ["a", "d", "b c"],
            "quoted phrase last"
        );
        assert_eq!(
            search_terms(r#"x"y z""#),
            [r#"x"y"#, r#"z""#],
            "not standing alone"
        );
    }

    #[test]
    fn search_semantics() {
        let url = "https://acme.atlassian.net/browse/OPS-1";
        let desc = Some(url);
        assert!(
            !issue_matches("Database down", desc, "OPS-1", Some("description")),
            "a key inside a link is not found"
        );
        assert!(
            issue_matches("Database down", desc, url, Some("description")),
            "the whole link is found"
        );
        assert!(
            issue_matches("Database down", desc, "acme.atlassian.net", None),
            "the host is a lexeme"
        );
        assert!(
            issue_matches("OPS-1 Database down", desc, "OPS-1", None),
            "a plain key in the title is found"
        );
        assert!(
            !issue_matches("OPS-1 Database down", desc, "OPS-1", Some("description")),
            "in=description does not look at the title (weight A)"
        );
        assert!(
            issue_matches("OPS-12 broke", None, "OPS-1", None),
            "prefix matching: OPS-1 also finds OPS-12"
        );
        assert!(
            issue_matches("Databases are failing", None, "database fail", None),
            "stemmed words, every term must match"
        );
        assert!(
            !issue_matches("Databases are failing", None, "database crash", None),
            "all terms are required"
        );
        assert!(
            issue_matches("Databas", None, "dat", None),
            "no minimum length: a short term is a prefix"
        );
        assert!(
            !issue_matches("some text", Some("more"), "the", None),
            "a query of stop words matches nothing"
        );
        assert!(
            issue_matches("Port 1 closed", None, "1", None),
            "digits-only term"
        );
        assert!(
            issue_matches("OPS-1 closed", None, "1", None),
            "digits-only term also finds -1"
        );
        assert!(
            issue_matches("the disk is full now", None, r#""disk is full""#, None),
            "a quoted phrase with a stop word inside"
        );
        assert!(
            !issue_matches("full disk", None, r#""disk full""#, None),
            "a quoted phrase needs its order"
        );
        assert!(
            issue_matches("a <b>bold</b> move", None, "bold", None),
            "XML tags are unwrapped"
        );
    }

    /// Non-Latin searches use ILIKE on issues that have non-Latin text.
    #[test]
    fn non_latin_fallback() {
        assert!(issue_matches(
            "データベース障害",
            None,
            "データベース",
            None
        ));
        assert!(!issue_matches(
            "データベース障害",
            None,
            "障害x",
            Some("description")
        ));
        assert!(
            !issue_matches("Database down", Some("データ"), "デー", Some("title")),
            "short words compare the whole column"
        );
        assert!(
            issue_matches("x", Some("デー"), "デー", None),
            "whole column"
        );
    }
}
