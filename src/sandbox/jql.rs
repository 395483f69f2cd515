//! The JQL subset the fake Jira understands: clauses joined by `AND`, parentheses, a handful of
//! fields, Jira's date literals read in the searching user's time zone, and `ORDER BY`.
//!
//! It is a real parser (tokens with positions, one error per malformed query) so that a client
//! that builds bad JQL fails here the way it would against Jira. `OR` and `NOT` are refused on
//! purpose: the sync engine never needs them, and a fake that half-supports them would hide bugs.

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::jira::FakeIssue;

/// Why a query was refused: the text goes into Jira's `errorMessages`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JqlError(pub String);

impl fmt::Display for JqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JqlError {}

/// The fields a clause may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    Project,
    IssueType,
    Key,
    Status,
    StatusCategory,
    Labels,
    Priority,
    Created,
    Updated,
    Resolved,
}

impl Field {
    fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "project" => Field::Project,
            "issuetype" | "type" => Field::IssueType,
            "key" | "issuekey" | "id" => Field::Key,
            "status" => Field::Status,
            "statuscategory" => Field::StatusCategory,
            "labels" => Field::Labels,
            "priority" => Field::Priority,
            "created" | "createddate" => Field::Created,
            "updated" | "updateddate" => Field::Updated,
            "resolved" | "resolutiondate" => Field::Resolved,
            _ => return None,
        })
    }

    fn is_date(self) -> bool {
        matches!(self, Field::Created | Field::Updated | Field::Resolved)
    }

    fn name(self) -> &'static str {
        match self {
            Field::Project => "project",
            Field::IssueType => "issuetype",
            Field::Key => "key",
            Field::Status => "status",
            Field::StatusCategory => "statusCategory",
            Field::Labels => "labels",
            Field::Priority => "priority",
            Field::Created => "created",
            Field::Updated => "updated",
            Field::Resolved => "resolved",
        }
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A literal on the right of an operator, already typed for its field.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Literal {
    Text(String),
    Time(DateTime<Utc>),
    /// The keyword `EMPTY` (or `NULL`) used as a value: `field = EMPTY`.
    Empty,
}

/// One `field op value` clause.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Condition {
    Compare(Field, Op, Literal),
    In {
        field: Field,
        negated: bool,
        values: Vec<Literal>,
    },
    Empty {
        field: Field,
        negated: bool,
    },
}

/// A field `ORDER BY` may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SortField {
    Key,
    Created,
    Updated,
}

/// A parsed query: all conditions must hold (the subset is AND-only).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Query {
    pub conditions: Vec<Condition>,
    /// Sort keys with `true` for ascending.
    pub order_by: Vec<(SortField, bool)>,
}

impl Query {
    /// Parses `text`, reading date literals in `zone` (the searching user's profile zone) and
    /// relative periods (`-10m`) against `now`.
    pub(crate) fn parse(text: &str, zone: Tz, now: DateTime<Utc>) -> Result<Self, JqlError> {
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            tokens,
            pos: 0,
            zone,
            now,
        };
        parser.query()
    }

    /// The issue keys and ids the query names (`key = X`, `id in (1, 2)`).
    pub(crate) fn referenced_issues(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.conditions {
            match c {
                Condition::Compare(Field::Key, Op::Eq, Literal::Text(v)) => out.push(v.clone()),
                Condition::In {
                    field: Field::Key,
                    negated: false,
                    values,
                } => out.extend(values.iter().filter_map(|v| match v {
                    Literal::Text(t) => Some(t.clone()),
                    _ => None,
                })),
                _ => {}
            }
        }
        out
    }

    /// Returns true if and only if `issue` satisfies every condition.
    pub(crate) fn matches(&self, issue: &FakeIssue) -> bool {
        self.conditions.iter().all(|c| c.matches(issue))
    }

    /// Orders two issues by the query's `ORDER BY`, then by key so the order is total.
    pub(crate) fn compare(&self, a: &FakeIssue, b: &FakeIssue) -> Ordering {
        for &(field, ascending) in &self.order_by {
            let ord = match field {
                SortField::Key => key_order(&a.key, &b.key),
                SortField::Created => a.created.cmp(&b.created),
                SortField::Updated => a.updated.cmp(&b.updated),
            };
            let ord = if ascending { ord } else { ord.reverse() };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        key_order(&a.key, &b.key)
    }
}

/// Natural key order: project, then issue number as a number (`OPS-9` < `OPS-10`).
pub(crate) fn key_order(a: &str, b: &str) -> Ordering {
    split_key(a).cmp(&split_key(b))
}

fn split_key(key: &str) -> (String, u64, String) {
    match key.rsplit_once('-') {
        Some((project, number)) => match number.parse::<u64>() {
            Ok(n) => (project.to_ascii_uppercase(), n, String::new()),
            Err(_) => (key.to_ascii_uppercase(), 0, key.to_owned()),
        },
        None => (key.to_ascii_uppercase(), 0, key.to_owned()),
    }
}

impl Condition {
    fn matches(&self, issue: &FakeIssue) -> bool {
        match self {
            Condition::Compare(field, op, value) => compare(issue, *field, *op, value),
            Condition::In {
                field,
                negated,
                values,
            } => {
                let any = values.iter().any(|v| compare(issue, *field, Op::Eq, v));
                if *negated {
                    // Jira's `not in` never matches an empty field.
                    !any && !is_empty(issue, *field)
                } else {
                    any
                }
            }
            Condition::Empty { field, negated } => is_empty(issue, *field) != *negated,
        }
    }
}

fn is_empty(issue: &FakeIssue, field: Field) -> bool {
    match field {
        Field::Labels => issue.labels.is_empty(),
        Field::Priority => issue.priority.is_none(),
        Field::Resolved => issue.resolutiondate.is_none(),
        _ => false,
    }
}

fn compare(issue: &FakeIssue, field: Field, op: Op, value: &Literal) -> bool {
    match (field, value) {
        (Field::Created | Field::Updated | Field::Resolved, Literal::Time(t)) => {
            let actual = match field {
                Field::Created => Some(issue.created),
                Field::Updated => Some(issue.updated),
                _ => issue.resolutiondate,
            };
            // A comparison with an empty date never matches, as in Jira.
            actual.is_some_and(|a| holds(a.cmp(t), op))
        }
        // `issuekey` takes an issue's id as well as its key ("issueKey … or issue ID", Jira's
        // JQL field reference); an id finds the issue wherever it moved.
        (Field::Key, Literal::Text(k)) if k.chars().all(|c| c.is_ascii_digit()) => {
            let Some(id) = issue.id else {
                return false;
            };
            match k.parse::<u64>() {
                Ok(n) => holds(id.cmp(&n), op),
                Err(_) => false,
            }
        }
        (Field::Key, Literal::Text(k)) => {
            let ord = key_order(&issue.key, k);
            let same_project = split_key(&issue.key).0 == split_key(k).0;
            match op {
                Op::Eq => ord == Ordering::Equal,
                Op::Ne => ord != Ordering::Equal,
                // Key ranges only make sense within one project.
                _ => same_project && holds(ord, op),
            }
        }
        (Field::Labels, Literal::Text(l)) => {
            let has = issue.labels.iter().any(|x| x == l);
            match op {
                Op::Eq => has,
                _ => !has && !issue.labels.is_empty(),
            }
        }
        (_, Literal::Text(v)) => {
            let actual: Option<&str> = match field {
                Field::Project => Some(issue.project.as_str()),
                Field::IssueType => Some(issue.issue_type.as_str()),
                Field::Status => Some(issue.status.as_str()),
                Field::Priority => issue.priority.as_deref(),
                Field::StatusCategory => {
                    let key = issue.status_category.as_str();
                    let name = super::jira::status_category_name(key);
                    return holds_eq(
                        key.eq_ignore_ascii_case(v) || name.eq_ignore_ascii_case(v),
                        op,
                    );
                }
                _ => None,
            };
            actual.is_some_and(|a| holds_eq(a.eq_ignore_ascii_case(v), op))
        }
        (_, Literal::Time(_) | Literal::Empty) => false,
    }
}

fn holds_eq(equal: bool, op: Op) -> bool {
    match op {
        Op::Eq => equal,
        _ => !equal,
    }
}

fn holds(ord: Ordering, op: Op) -> bool {
    match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// An unquoted word: a field name, keyword or bare value.
    Word(String),
    Quoted(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    /// 1-based character position, as Jira reports it.
    at: usize,
}

impl Token {
    fn describe(&self) -> String {
        match &self.tok {
            Tok::Word(w) => w.clone(),
            Tok::Quoted(q) => q.clone(),
            Tok::Op(o) => (*o).to_owned(),
            Tok::LParen => "(".to_owned(),
            Tok::RParen => ")".to_owned(),
            Tok::Comma => ",".to_owned(),
        }
    }

    fn is_word(&self, keyword: &str) -> bool {
        matches!(&self.tok, Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

fn syntax_error(what: &str, at: usize) -> JqlError {
    JqlError(format!(
        "Error in the JQL Query: {what} (line 1, character {at})"
    ))
}

fn tokenize(text: &str) -> Result<Vec<Token>, JqlError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = match c {
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            ',' => {
                i += 1;
                Tok::Comma
            }
            '"' | '\'' => {
                let quote = c;
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(syntax_error(
                                &format!(
                                    "The quoted string starting with {quote} has not been completed."
                                ),
                                at,
                            ));
                        }
                        Some('\\') => {
                            if let Some(&next) = chars.get(i + 1) {
                                value.push(next);
                            }
                            i += 2;
                        }
                        Some(&ch) if ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            value.push(ch);
                            i += 1;
                        }
                    }
                }
                Tok::Quoted(value)
            }
            '=' => {
                i += 1;
                Tok::Op("=")
            }
            '~' => {
                i += 1;
                Tok::Op("~")
            }
            '!' => match chars.get(i + 1) {
                Some('=') => {
                    i += 2;
                    Tok::Op("!=")
                }
                Some('~') => {
                    i += 2;
                    Tok::Op("!~")
                }
                _ => {
                    return Err(syntax_error(
                        "The character '!' is a reserved JQL character.",
                        at,
                    ));
                }
            },
            '>' | '<' => {
                let eq = chars.get(i + 1) == Some(&'=');
                i += if eq { 2 } else { 1 };
                Tok::Op(match (c, eq) {
                    ('>', true) => ">=",
                    ('>', false) => ">",
                    ('<', true) => "<=",
                    _ => "<",
                })
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !"()=,!<>~\"'".contains(chars[i])
                {
                    i += 1;
                }
                Tok::Word(chars[start..i].iter().collect())
            }
        };
        tokens.push(Token { tok, at });
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    zone: Tz,
    now: DateTime<Utc>,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    /// The position just past the end of the query, for "got end of query" errors.
    fn end_at(&self) -> usize {
        self.tokens
            .last()
            .map_or(1, |t| t.at + t.describe().chars().count())
    }

    fn unexpected_end(&self, expecting: &str) -> JqlError {
        syntax_error(
            &format!("Expecting {expecting} but got the end of the query."),
            self.end_at(),
        )
    }

    fn query(&mut self) -> Result<Query, JqlError> {
        let mut conditions = Vec::new();
        if self.peek().is_some() && !self.peek().is_some_and(|t| t.is_word("order")) {
            self.expr(&mut conditions)?;
        }
        let mut order_by = Vec::new();
        if let Some(t) = self.next() {
            if !t.is_word("order") {
                return Err(syntax_error(
                    &format!("Expecting either 'OR' or 'AND' but got '{}'.", t.describe()),
                    t.at,
                ));
            }
            match self.next() {
                Some(by) if by.is_word("by") => {}
                Some(other) => {
                    return Err(syntax_error(
                        &format!("Expecting 'BY' but got '{}'.", other.describe()),
                        other.at,
                    ));
                }
                None => return Err(self.unexpected_end("'BY'")),
            }
            loop {
                let field = match self.next() {
                    Some(Token {
                        tok: Tok::Word(w) | Tok::Quoted(w),
                        at,
                    }) => match Field::parse(&w) {
                        Some(Field::Key) => SortField::Key,
                        Some(Field::Created) => SortField::Created,
                        Some(Field::Updated) => SortField::Updated,
                        Some(_) => {
                            return Err(JqlError(format!(
                                "The sandbox can order only by key, created and updated, not by '{w}' (line 1, character {at})"
                            )));
                        }
                        None => return Err(no_such_field(&w)),
                    },
                    Some(other) => {
                        return Err(syntax_error(
                            &format!("Expecting a field name but got '{}'.", other.describe()),
                            other.at,
                        ));
                    }
                    None => return Err(self.unexpected_end("a field name")),
                };
                let mut ascending = true;
                if let Some(t) = self.peek() {
                    if t.is_word("asc") {
                        self.pos += 1;
                    } else if t.is_word("desc") {
                        ascending = false;
                        self.pos += 1;
                    }
                }
                order_by.push((field, ascending));
                match self.next() {
                    None => break,
                    Some(Token {
                        tok: Tok::Comma, ..
                    }) => continue,
                    Some(other) => {
                        return Err(syntax_error(
                            &format!("Expecting ',' but got '{}'.", other.describe()),
                            other.at,
                        ));
                    }
                }
            }
        }
        Ok(Query {
            conditions,
            order_by,
        })
    }

    /// `term (AND term)*`, stopping before `)`, `ORDER` or the end.
    fn expr(&mut self, out: &mut Vec<Condition>) -> Result<(), JqlError> {
        self.term(out)?;
        loop {
            let Some(t) = self.peek() else { return Ok(()) };
            if t.is_word("and") {
                self.pos += 1;
                self.term(out)?;
            } else if t.is_word("or") {
                return Err(unsupported("OR", t.at));
            } else {
                return Ok(());
            }
        }
    }

    fn term(&mut self, out: &mut Vec<Condition>) -> Result<(), JqlError> {
        let Some(t) = self.next() else {
            return Err(self.unexpected_end("a field name"));
        };
        match &t.tok {
            Tok::LParen => {
                self.expr(out)?;
                match self.next() {
                    Some(Token {
                        tok: Tok::RParen, ..
                    }) => Ok(()),
                    Some(other) => Err(syntax_error(
                        &format!("Expecting ')' but got '{}'.", other.describe()),
                        other.at,
                    )),
                    None => Err(self.unexpected_end("')'")),
                }
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("not") => Err(unsupported("NOT", t.at)),
            Tok::Word(w) if w.eq_ignore_ascii_case("order") => Err(syntax_error(
                "Expecting a field name but got 'ORDER'.",
                t.at,
            )),
            Tok::Word(name) | Tok::Quoted(name) => {
                let field = Field::parse(name).ok_or_else(|| no_such_field(name))?;
                out.push(self.condition(field)?);
                Ok(())
            }
            _ => Err(syntax_error(
                &format!("Expecting a field name but got '{}'.", t.describe()),
                t.at,
            )),
        }
    }

    fn condition(&mut self, field: Field) -> Result<Condition, JqlError> {
        let Some(t) = self.next() else {
            return Err(self.unexpected_end("an operator"));
        };
        let op = match &t.tok {
            Tok::Op("=") => Op::Eq,
            Tok::Op("!=") => Op::Ne,
            Tok::Op(">") => Op::Gt,
            Tok::Op(">=") => Op::Ge,
            Tok::Op("<") => Op::Lt,
            Tok::Op("<=") => Op::Le,
            Tok::Op(o @ ("~" | "!~")) => {
                return Err(operator_not_supported(o, field));
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("in") => {
                return self.in_list(field, false);
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("not") => {
                return match self.next() {
                    Some(n) if n.is_word("in") => self.in_list(field, true),
                    Some(other) => Err(syntax_error(
                        &format!("Expecting 'IN' but got '{}'.", other.describe()),
                        other.at,
                    )),
                    None => Err(self.unexpected_end("'IN'")),
                };
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("is") => {
                let mut negated = false;
                let mut n = self.next();
                if n.as_ref().is_some_and(|t| t.is_word("not")) {
                    negated = true;
                    n = self.next();
                }
                return match n {
                    Some(e) if e.is_word("empty") || e.is_word("null") => {
                        Ok(Condition::Empty { field, negated })
                    }
                    Some(other) => Err(syntax_error(
                        &format!(
                            "Expecting 'EMPTY' or 'NULL' but got '{}'.",
                            other.describe()
                        ),
                        other.at,
                    )),
                    None => Err(self.unexpected_end("'EMPTY'")),
                };
            }
            _ => {
                return Err(syntax_error(
                    &format!(
                        "Expecting operator but got '{}'. The valid operators are '=', '!=', '<', '>', '<=', '>=', 'IN', 'NOT IN', 'IS' and 'IS NOT'.",
                        t.describe()
                    ),
                    t.at,
                ));
            }
        };
        if matches!(op, Op::Gt | Op::Ge | Op::Lt | Op::Le)
            && !field.is_date()
            && field != Field::Key
        {
            return Err(operator_not_supported(
                match op {
                    Op::Gt => ">",
                    Op::Ge => ">=",
                    Op::Lt => "<",
                    _ => "<=",
                },
                field,
            ));
        }
        let value = self.value(field)?;
        // `field = EMPTY` is another spelling of `field is EMPTY`.
        if value == Literal::Empty {
            return match op {
                Op::Eq => Ok(Condition::Empty {
                    field,
                    negated: false,
                }),
                Op::Ne => Ok(Condition::Empty {
                    field,
                    negated: true,
                }),
                _ => Err(operator_not_supported("EMPTY", field)),
            };
        }
        Ok(Condition::Compare(field, op, value))
    }

    fn in_list(&mut self, field: Field, negated: bool) -> Result<Condition, JqlError> {
        match self.next() {
            Some(Token {
                tok: Tok::LParen, ..
            }) => {}
            Some(other) => {
                return Err(syntax_error(
                    &format!("Expecting '(' but got '{}'.", other.describe()),
                    other.at,
                ));
            }
            None => return Err(self.unexpected_end("'('")),
        }
        let mut values = Vec::new();
        loop {
            values.push(self.value(field)?);
            match self.next() {
                Some(Token {
                    tok: Tok::Comma, ..
                }) => continue,
                Some(Token {
                    tok: Tok::RParen, ..
                }) => break,
                Some(other) => {
                    return Err(syntax_error(
                        &format!("Expecting ',' or ')' but got '{}'.", other.describe()),
                        other.at,
                    ));
                }
                None => return Err(self.unexpected_end("')'")),
            }
        }
        Ok(Condition::In {
            field,
            negated,
            values,
        })
    }

    fn value(&mut self, field: Field) -> Result<Literal, JqlError> {
        let Some(t) = self.next() else {
            return Err(self.unexpected_end("either a value, list or function"));
        };
        let (text, quoted) = match t.tok {
            Tok::Word(w) => (w, false),
            Tok::Quoted(q) => (q, true),
            _ => {
                return Err(syntax_error(
                    &format!(
                        "Expecting either a value, list or function but got '{}'.",
                        t.describe()
                    ),
                    t.at,
                ));
            }
        };
        if !quoted && (text.eq_ignore_ascii_case("empty") || text.eq_ignore_ascii_case("null")) {
            return Ok(Literal::Empty);
        }
        if !quoted && text.ends_with("()") {
            return Err(JqlError(format!(
                "The sandbox does not support JQL functions ('{text}')."
            )));
        }
        if field.is_date() {
            parse_date(&text, quoted, self.zone, self.now)
                .map(Literal::Time)
                .ok_or_else(|| {
                    JqlError(format!(
                        "Date value '{text}' for field '{}' is invalid. Valid formats include: 'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a period format e.g. '-5d', '4w 2d'.",
                        field.name()
                    ))
                })
        } else {
            Ok(Literal::Text(text))
        }
    }
}

/// Reads a date literal: `yyyy-MM-dd HH:mm`, `yyyy/MM/dd HH:mm`, `yyyy-MM-dd`, `yyyy/MM/dd` in
/// `zone`; an unquoted integer as epoch milliseconds; a period (`-10m`, `-2h`, `-1d`, `-1w`)
/// relative to `now`.
fn parse_date(text: &str, quoted: bool, zone: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if !quoted && !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        let ms: i64 = text.parse().ok()?;
        return DateTime::from_timestamp_millis(ms);
    }
    for format in ["%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return in_zone(naive, zone);
        }
    }
    for format in ["%Y-%m-%d", "%Y/%m/%d"] {
        if let Ok(date) = NaiveDate::parse_from_str(text, format) {
            return in_zone(date.and_hms_opt(0, 0, 0)?, zone);
        }
    }
    relative_period(text).map(|d| now + d)
}

/// A local time in `zone`; in a DST gap, the first valid minute after it; in an overlap, the
/// earlier instant.
fn in_zone(naive: NaiveDateTime, zone: Tz) -> Option<DateTime<Utc>> {
    let mut probe = naive;
    for _ in 0..180 {
        if let Some(t) = zone.from_local_datetime(&probe).earliest() {
            return Some(t.with_timezone(&Utc));
        }
        probe += Duration::minutes(1);
    }
    None
}

fn relative_period(text: &str) -> Option<Duration> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'-' => (-1, &text[1..]),
        b'+' => (1, &text[1..]),
        _ => (1, text),
    };
    let unit = rest.chars().last()?;
    let n: i64 = rest[..rest.len() - unit.len_utf8()].parse().ok()?;
    let d = match unit {
        'm' => Duration::minutes(n),
        'h' => Duration::hours(n),
        'd' => Duration::days(n),
        'w' => Duration::weeks(n),
        _ => return None,
    };
    Some(d * sign)
}

fn no_such_field(name: &str) -> JqlError {
    JqlError(format!(
        "Field '{name}' does not exist or you do not have permission to view it."
    ))
}

fn unsupported(keyword: &str, at: usize) -> JqlError {
    JqlError(format!(
        "Error in the JQL Query: '{keyword}' is not supported by the sandbox Jira, which understands only clauses joined by AND. (line 1, character {at})"
    ))
}

fn operator_not_supported(op: &str, field: Field) -> JqlError {
    JqlError(format!(
        "The operator '{op}' is not supported by the '{}' field.",
        field.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    fn parse(text: &str) -> Result<Query, JqlError> {
        Query::parse(text, chrono_tz::UTC, now())
    }

    fn issue(key: &str, created: DateTime<Utc>) -> FakeIssue {
        FakeIssue::new(key, "summary", created)
    }

    /// A typical sync query parses into its conditions and sort keys.
    #[test]
    fn parses_and_clauses_and_order_by() {
        let q = parse("project = OPS AND issuetype = Incident AND updated >= \"2025-01-01 10:00\" ORDER BY updated ASC, key DESC").unwrap();
        assert_eq!(q.conditions.len(), 3, "three AND-ed clauses");
        assert_eq!(
            q.order_by,
            vec![(SortField::Updated, true), (SortField::Key, false)],
            "sort keys keep their order and direction"
        );
    }

    /// Keywords are case-insensitive and parentheses only group.
    #[test]
    fn keywords_are_case_insensitive_and_groups_flatten() {
        let q = parse("(project = OPS and labels in (a, \"b c\")) AnD status != Done order by KEY")
            .unwrap();
        assert_eq!(q.conditions.len(), 3, "a group of AND clauses flattens");
        assert_eq!(
            q.order_by,
            vec![(SortField::Key, true)],
            "ASC is the default"
        );
    }

    /// A date literal is read in the user's zone, not UTC.
    #[test]
    fn date_literal_is_read_in_user_zone() {
        let zone: Tz = "Asia/Kolkata".parse().unwrap();
        let q = Query::parse("updated >= \"2025-01-10 05:30\"", zone, now()).unwrap();
        let expected = Utc.with_ymd_and_hms(2025, 1, 10, 0, 0, 0).unwrap();
        assert_eq!(
            q.conditions,
            vec![Condition::Compare(
                Field::Updated,
                Op::Ge,
                Literal::Time(expected)
            )],
            "05:30 in +05:30 is midnight UTC"
        );
    }

    /// All documented literal formats, epoch milliseconds and periods are accepted.
    #[test]
    fn date_formats() {
        let zone = chrono_tz::UTC;
        let t = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 0).unwrap();
        for text in [
            "\"2025-01-02 03:04\"",
            "'2025/01/02 03:04'",
            &t.timestamp_millis().to_string(),
        ] {
            let q = Query::parse(&format!("created > {text}"), zone, now()).unwrap();
            assert_eq!(
                q.conditions[0],
                Condition::Compare(Field::Created, Op::Gt, Literal::Time(t)),
                "{text} must denote 2025-01-02 03:04 UTC"
            );
        }
        let q = Query::parse("created > \"2025-01-02\"", zone, now()).unwrap();
        assert_eq!(
            q.conditions[0],
            Condition::Compare(
                Field::Created,
                Op::Gt,
                Literal::Time(Utc.with_ymd_and_hms(2025, 1, 2, 0, 0, 0).unwrap())
            ),
            "a bare date is midnight"
        );
        let q = Query::parse("updated > -10m", zone, now()).unwrap();
        assert_eq!(
            q.conditions[0],
            Condition::Compare(
                Field::Updated,
                Op::Gt,
                Literal::Time(now() - Duration::minutes(10))
            ),
            "a period is relative to now"
        );
    }

    /// An unknown field gets Jira's own message.
    #[test]
    fn unknown_field() {
        assert_eq!(
            parse("foo = bar").unwrap_err().0,
            "Field 'foo' does not exist or you do not have permission to view it.",
            "Jira's wording, which clients may match on"
        );
    }

    /// OR and NOT are refused rather than half-supported.
    #[test]
    fn or_and_not_are_refused() {
        let err = parse("project = A OR project = B").unwrap_err().0;
        assert!(
            err.contains("'OR'") && err.contains("character 13"),
            "names OR and its position: {err}"
        );
        let err = parse("NOT project = A").unwrap_err().0;
        assert!(
            err.contains("'NOT'") && err.contains("character 1"),
            "names NOT and its position: {err}"
        );
    }

    /// Malformed queries name the position of the problem.
    #[test]
    fn syntax_errors_name_positions() {
        let cases = [
            ("project OPS", "character 9"),
            ("project = ", "end of the query"),
            ("project = OPS status = Done", "character 15"),
            ("created > \"2025-01-01", "not been completed"),
            ("labels in (a, b", "end of the query"),
            ("created >= \"yesterday\"", "Date value 'yesterday'"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err().0;
            assert!(
                err.contains(expected),
                "{text:?} must fail mentioning {expected:?}, got {err:?}"
            );
        }
    }

    /// Evaluation covers equality, lists, labels, emptiness, ranges and keys.
    #[test]
    fn evaluation() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let mut a = issue("OPS-2", t0);
        a.labels = vec!["db".into()];
        let mut b = issue("OPS-10", t0 + Duration::hours(1));
        b.resolutiondate = Some(t0 + Duration::hours(2));
        let c = issue("WEB-1", t0);
        let check = |text: &str, expected: &[&str]| {
            let q = parse(text).unwrap();
            let got: Vec<&str> = [&a, &b, &c]
                .into_iter()
                .filter(|i| q.matches(i))
                .map(|i| i.key.as_str())
                .collect();
            assert_eq!(got, expected, "{text}");
        };
        check("project = ops", &["OPS-2", "OPS-10"]);
        check("project in (WEB, Nope)", &["WEB-1"]);
        check("project not in (WEB)", &["OPS-2", "OPS-10"]);
        check("labels = db", &["OPS-2"]);
        check("labels is EMPTY", &["OPS-10", "WEB-1"]);
        check("resolved is not EMPTY", &["OPS-10"]);
        check("resolutiondate is EMPTY", &["OPS-2", "WEB-1"]);
        check("labels = EMPTY", &["OPS-10", "WEB-1"]);
        check("priority != empty", &["OPS-2", "OPS-10", "WEB-1"]);
        check("created > \"2025-01-01 00:30\"", &["OPS-10"]);
        check("key > OPS-2", &["OPS-10"]);
        check("key = ops-10", &["OPS-10"]);
        check(
            "issuetype = incident AND statusCategory = \"To Do\"",
            &["OPS-2", "OPS-10", "WEB-1"],
        );
        check("", &["OPS-2", "OPS-10", "WEB-1"]);
    }

    /// Ordering is natural on keys and falls back to the key for ties.
    #[test]
    fn ordering() {
        let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
        let mut issues = [
            issue("OPS-10", t0),
            issue("OPS-9", t0),
            issue("ABC-1", t0 + Duration::hours(1)),
        ];
        let q = parse("order by created desc").unwrap();
        issues.sort_by(|x, y| q.compare(x, y));
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["ABC-1", "OPS-9", "OPS-10"],
            "newest first, then natural key order"
        );
    }

    /// Ordering comparisons on text fields are refused like Jira does.
    #[test]
    fn range_on_text_field_is_refused() {
        let err = parse("status > Done").unwrap_err().0;
        assert_eq!(
            err, "The operator '>' is not supported by the 'status' field.",
            "Jira's wording"
        );
    }
}
