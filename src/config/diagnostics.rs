//! What a policy file's errors are and how they read: [`ConfigError`] and
//! [`ConfigErrors`], the [`Checker`] both stages report into, byte offsets
//! turned into lines and columns, "did you mean" hints (`strsim`), and the
//! key paths of syntax errors.
//!
//! Positions are worked out once for all errors, in [`Checker::finish`], with
//! one sweep over sorted offsets, so a file with a million errors is still
//! checked in time linear in its size.

use std::fmt::{self, Write as _};
use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::schema::{Section, SECTIONS, TOP};
use super::MAX_SHOWN_ERRORS;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The path (or `<built-in>`) the text came from.
    pub file: String,
    /// 1-based line; 0 when the problem is the file as a whole (it could not be read).
    pub line: usize,
    /// 1-based column in characters; 0 together with `line`.
    pub column: usize,
    /// Key path such as `safety.min_age` or `policy "stale-ci".older_than`;
    /// empty when no key applies (syntax errors, unreadable files).
    pub key: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one policy file, in file order.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors {
    /// Never empty when returned by this module.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    /// One line per error (`file:line:col: key: message`), the first
    /// [`MAX_SHOWN_ERRORS`] only (`… and N more errors` for the rest), then
    /// the count.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for error in self.errors.iter().take(MAX_SHOWN_ERRORS) {
            writeln!(f, "{error}")?;
        }
        match self.errors.len().saturating_sub(MAX_SHOWN_ERRORS) {
            0 => {}
            1 => writeln!(f, "… and 1 more error")?,
            n => writeln!(f, "… and {n} more errors")?,
        }
        match self.errors.len() {
            1 => f.write_str("1 error"),
            n => write!(f, "{n} errors"),
        }
    }
}

/// An error whose position is still a byte offset: positions are worked
/// out for all errors at once, in [`Checker::finish`].
struct Pending {
    offset: usize,
    key: String,
    message: String,
}

/// Collects the errors of one file while it is read and validated.
pub(super) struct Checker<'t> {
    /// The whole text, for positions.
    pub(super) text: &'t str,
    /// Where its lines start.
    pub(super) lines: Lines,
    /// The file's name as given (escaped when the errors are built).
    pub(super) file: &'t str,
    pending: Vec<Pending>,
}

impl<'t> Checker<'t> {
    pub(super) fn new(text: &'t str, file: &'t str) -> Self {
        Self {
            text,
            lines: Lines::new(text),
            file,
            pending: Vec::new(),
        }
    }

    pub(super) fn error(
        &mut self,
        span: &Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.pending.push(Pending {
            offset: span.start,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Errors reported so far.
    pub(super) fn count(&self) -> usize {
        self.pending.len()
    }

    /// 1-based line of a byte offset.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        self.lines.locate(self.text, offset).0
    }

    /// The errors in file order, with line and column, control characters
    /// escaped. One sweep over the text: sorted offsets only move forward.
    pub(super) fn finish(self) -> Vec<ConfigError> {
        let mut pending = self.pending;
        pending.sort_by_key(|p| p.offset.min(self.text.len()));
        let file = escape_controls(self.file);
        let mut columns = Columns::new(self.text, &self.lines);
        pending
            .into_iter()
            .map(|p| {
                let (line, column) = columns.locate(p.offset);
                ConfigError {
                    file: file.clone(),
                    line,
                    column,
                    key: escape_owned(p.key),
                    message: escape_owned(p.message),
                }
            })
            .collect()
    }

    /// All syntax errors, each with the key path it is in (found for all of
    /// them in one sweep, see [`paths_at`]).
    pub(super) fn syntax_errors(&mut self, partial: &DeTable<'_>, errors: Vec<toml::de::Error>) {
        let spans: Vec<Range<usize>> = errors.iter().map(|e| e.span().unwrap_or(0..0)).collect();
        let offsets: Vec<usize> = spans.iter().map(|span| span.start).collect();
        let keys = paths_at(partial, &offsets);
        for ((error, span), key) in errors.into_iter().zip(spans).zip(keys) {
            let message = if error.message() == "duplicate key" {
                let name = self.text.get(span.clone()).unwrap_or_default();
                let mut message = format!(
                    "duplicate key `{name}`: a key or table may be defined only once; merge the \
                     two"
                );
                if name == "policy" {
                    message.push_str("; policies are written [[policy]], with two brackets each");
                }
                message
            } else {
                format!("invalid TOML: {}", error.message())
            };
            self.error(&span, key.unwrap_or_default(), message);
        }
    }
}

// ---------------------------------------------------------------------------
// Messages.

/// `unknown key `x`, expected one of ...`, then a hint: the valid keys are
/// listed as serde lists a struct's fields (`` `a` ``, `` `a` or `b` ``,
/// `` one of `a`, `b`, `c` ``).
pub(super) fn unknown_key_message(name: &str, section: &Section) -> String {
    let valid: Vec<String> = section.names().map(|k| format!("`{k}`")).collect();
    let valid = match valid.as_slice() {
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        all => format!("one of {}", all.join(", ")),
    };
    format!(
        "unknown key `{name}`, expected {valid}{}",
        unknown_key_hint(name, section)
    )
}

/// `; did you mean ...?`, or where the key belongs, or nothing.
fn unknown_key_hint(name: &str, section: &Section) -> String {
    if let Some(close) = closest(name, section.names()) {
        return format!("; did you mean `{close}`?");
    }
    let others = SECTIONS.into_iter().filter(|s| s.name != section.name);
    let wanted = normalize(name);
    for other in others.clone() {
        if let Some(key) = other.names().find(|k| normalize(k) == wanted) {
            return if other.name == TOP.name {
                format!(
                    "; `{key}` is a top-level key: move it above the first [table] header, since \
                     keys below a header belong to that table"
                )
            } else {
                format!("; `{key}` belongs {}", other.place)
            };
        }
    }
    for other in others {
        if let Some(close) = closest(name, other.names()) {
            return format!("; did you mean `{close}` {}?", other.place);
        }
    }
    String::new()
}

/// `expected …, found …` for a value of the wrong kind. `expected` is the
/// schema's text for the key (or its elements).
pub(super) fn wrong_kind_message(expected: &str, found: &DeValue<'_>) -> String {
    match found {
        // What toml itself says about numbers that no type can hold.
        DeValue::Integer(n) if integer_width(n) == Width::None => {
            "integer number overflowed".to_string()
        }
        DeValue::Float(x) if !float_fits(x) => "floating-point number overflowed".to_string(),
        DeValue::Integer(n) if integer_width(n) == Width::Wide => {
            format!("expected {expected}, found {} (too large)", describe(found))
        }
        _ => format!("expected {expected}, found {}", describe(found)),
    }
}

/// Which Rust integers can hold a TOML integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Width {
    /// `i64` or `u64`.
    Word,
    /// Only `i128` or `u128`: called too large.
    Wide,
    /// None at all.
    None,
}

pub(super) fn integer_width(n: &toml::de::DeInteger<'_>) -> Width {
    let (digits, radix) = (n.as_str(), n.radix());
    if i64::from_str_radix(digits, radix).is_ok() || u64::from_str_radix(digits, radix).is_ok() {
        Width::Word
    } else if i128::from_str_radix(digits, radix).is_ok()
        || u128::from_str_radix(digits, radix).is_ok()
    {
        Width::Wide
    } else {
        Width::None
    }
}

/// Whether an `f64` holds the float: one that only parses as infinity
/// without being written `inf` does not (toml's own rule).
fn float_fits(x: &toml::de::DeFloat<'_>) -> bool {
    x.as_str()
        .parse::<f64>()
        .is_ok_and(|f| !f.is_infinite() || x.as_str().contains("inf"))
}

/// A value as the author wrote it, for "found ..." (one line, kept short).
fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(text) => {
            let short: String = text.chars().take(60).collect();
            let ellipsis = if short.len() < text.len() { "..." } else { "" };
            format!("the string {short:?}{ellipsis}")
        }
        DeValue::Integer(n) => format!("the integer {n}"),
        DeValue::Float(n) => format!("the number {n}"),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => format!("the date-time {d}"),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

/// Lower case, `-` as `_`: `Min-Age` and `min_age` are the same typo.
fn normalize(text: &str) -> String {
    text.to_lowercase().replace('-', "_")
}

/// The candidate closest to `wanted` by edit distance, if close enough to be
/// a likely typo (or `wanted` is a prefix of it, like `unused` for `unused_for`).
pub(super) fn closest<'a>(
    wanted: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    // Long inputs are not typos of short names, and would make this slow.
    if wanted.is_empty() || wanted.len() > 64 {
        return None;
    }
    let wanted = normalize(wanted);
    let limit = (wanted.chars().count() / 3).max(2);
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let norm = normalize(candidate);
        let distance = if norm.starts_with(&wanted) && wanted.len() >= 4 {
            0
        } else {
            strsim::levenshtein(&wanted, &norm)
        };
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

// ---------------------------------------------------------------------------
// Positions.

/// Where each line starts, so locating many errors in a big file stays cheap.
pub(super) struct Lines {
    /// Byte offset of the first byte of each line; the first is 0.
    starts: Vec<usize>,
}

impl Lines {
    fn new(text: &str) -> Self {
        let newlines = text.bytes().enumerate().filter(|(_, b)| *b == b'\n');
        let starts = std::iter::once(0).chain(newlines.map(|(i, _)| i + 1));
        Self {
            starts: starts.collect(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset. Offsets past
    /// the end, or inside a character, do not panic.
    fn locate(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        // The number of lines starting at or before `offset`; at least 1, as
        // the first starts at 0.
        let line = self.starts.partition_point(|start| *start <= offset);
        let start = self.starts[line - 1];
        let column = count_chars(&text.as_bytes()[start..offset]) + 1;
        (line, column)
    }
}

/// Line and column of offsets given in increasing order, each counted on
/// from the one before: finding N positions costs one pass over the text,
/// even when they are all on one long line.
struct Columns<'a> {
    text: &'a str,
    lines: &'a Lines,
    /// The last offset located (clamped), its 1-based line and column.
    last: Option<(usize, usize, usize)>,
}

impl<'a> Columns<'a> {
    fn new(text: &'a str, lines: &'a Lines) -> Self {
        Self {
            text,
            lines,
            last: None,
        }
    }

    fn locate(&mut self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.lines.starts.partition_point(|start| *start <= offset);
        let (line, column) = match self.last {
            Some((last, last_line, last_column)) if last_line == line && last <= offset => {
                let more = count_chars(&self.text.as_bytes()[last..offset]);
                (line, last_column + more)
            }
            _ => self.lines.locate(self.text, offset),
        };
        self.last = Some((offset, line, column));
        (line, column)
    }
}

/// Characters in `bytes` counted by their first bytes (UTF-8 continuation
/// bytes are `0b10xx_xxxx`); a slice that cuts a character does not panic.
fn count_chars(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| (**b & 0xC0) != 0x80).count()
}

/// `text` with control characters (ANSI escapes, carriage returns, …) and
/// bidirectional overrides written as escapes (`\u{1b}`), so echoing it
/// cannot move the cursor, recolour or rewrite a terminal line.
pub fn escape_controls(text: &str) -> String {
    let bidi = is_bidi_control;
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_debug());
        } else if bidi(c) {
            let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// [`escape_controls`] without a copy when there is nothing to escape.
fn escape_owned(text: String) -> String {
    if text.contains(|c: char| c.is_control() || is_bidi_control(c)) {
        escape_controls(&text)
    } else {
        text
    }
}

/// Unicode's explicit bidirectional formatting characters (marks,
/// embeddings, overrides, isolates): not control characters, but they
/// reorder what a terminal shows after them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

// ---------------------------------------------------------------------------
// Key paths of syntax errors. The parser reports only a span; the partial
// document it recovered tells which key the span is in.

/// One step of a key path: `.key` or `[index]`.
enum Step {
    Key(String),
    Index(usize),
}

/// A node of the path tree: its parent and its own step.
struct Node {
    parent: Option<usize>,
    step: Step,
}

/// Byte range `start..end` that belongs to node `node`; `order` is its
/// place in the depth-first search.
struct Region {
    start: usize,
    end: usize,
    node: usize,
    order: usize,
}

/// The key paths of a document as a tree, and the spans that lead to them
/// in depth-first order: a key's span, then what is below its value, then
/// its value's span (one byte longer at the top level, where a syntax error
/// about an unfinished value points just past it).
struct Walk {
    nodes: Vec<Node>,
    regions: Vec<Region>,
}

impl Walk {
    fn region(&mut self, span: &Range<usize>, end: usize, node: usize) {
        if span.start < end {
            let order = self.regions.len();
            self.regions.push(Region {
                start: span.start,
                end,
                node,
                order,
            });
        }
    }

    fn node(&mut self, parent: Option<usize>, step: Step) -> usize {
        self.nodes.push(Node { parent, step });
        self.nodes.len() - 1
    }

    fn table(&mut self, parent: Option<usize>, table: &DeTable<'_>, inclusive: bool) {
        for (key, value) in table {
            let node = self.node(parent, Step::Key(key.get_ref().to_string()));
            self.region(&key.span(), key.span().end, node);
            self.value(node, value.get_ref());
            let span = value.span();
            let end = if inclusive && span.end > span.start {
                span.end + 1
            } else {
                span.end
            };
            self.region(&span, end, node);
        }
    }

    fn value(&mut self, node: usize, value: &DeValue<'_>) {
        match value {
            DeValue::Table(table) => self.table(Some(node), table, false),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let element = self.node(Some(node), Step::Index(i));
                    self.value(element, item.get_ref());
                    self.region(&item.span(), item.span().end, element);
                }
            }
            _ => {}
        }
    }

    /// The key path of `node`, like `policy[2].name`.
    fn path(&self, node: usize) -> String {
        let mut steps = Vec::new();
        let mut at = Some(node);
        while let Some(n) = at {
            steps.push(&self.nodes[n].step);
            at = self.nodes[n].parent;
        }
        let mut path = String::new();
        for step in steps.into_iter().rev() {
            match step {
                Step::Key(key) if path.is_empty() => path.push_str(key),
                Step::Key(key) => {
                    path.push('.');
                    path.push_str(key);
                }
                Step::Index(i) => {
                    let _ = write!(path, "[{i}]");
                }
            }
        }
        path
    }
}

/// For each offset, the key path of the deepest key or value of `table` at
/// it, for all offsets in one sweep: O((keys + offsets) log keys) rather
/// than keys × offsets, which matters for a file with thousands of keys and
/// thousands of syntax errors.
///
/// A search per offset would go depth-first and return the first key span,
/// value below, or value span containing the offset. The same walk lays out
/// those spans as regions numbered in search order; the answer for an offset
/// is the lowest-numbered region containing it (the unit test below checks
/// this against such a search at every offset of several documents).
fn paths_at(table: &DeTable<'_>, offsets: &[usize]) -> Vec<Option<String>> {
    let mut walk = Walk {
        nodes: Vec::new(),
        regions: Vec::new(),
    };
    walk.table(None, table, true);
    walk.regions.sort_by_key(|r| r.start);
    let mut queries: Vec<(usize, usize)> = offsets.iter().copied().zip(0..).collect();
    queries.sort_unstable();
    let mut paths = vec![None; offsets.len()];
    // Regions that start at or before the current offset, lowest order first;
    // ones that end before it are dropped when they come to the top (offsets
    // only grow, so they can never contain a later one).
    let mut active = std::collections::BinaryHeap::new();
    let mut next = 0;
    for (offset, index) in queries {
        while let Some(region) = walk.regions.get(next).filter(|r| r.start <= offset) {
            active.push(std::cmp::Reverse((region.order, region.end, region.node)));
            next += 1;
        }
        while let Some(std::cmp::Reverse((_, end, _))) = active.peek() {
            if *end > offset {
                break;
            }
            active.pop();
        }
        if let Some(std::cmp::Reverse((_, _, node))) = active.peek() {
            paths[index] = Some(walk.path(*node));
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::POLICY;

    #[test]
    fn line_and_column_count_characters_from_one() {
        let text = "a = 1\nbé = \"x\"\n";
        let lines = Lines::new(text);
        assert_eq!(lines.locate(text, 0), (1, 1));
        assert_eq!(lines.locate(text, 5), (1, 6));
        assert_eq!(lines.locate(text, 6), (2, 1));
        // After the two-byte `é`, the space is the third character.
        assert_eq!(lines.locate(text, 9), (2, 3));
        // Inside `é` (no real span points there): no panic.
        assert_eq!(lines.locate(text, 8), (2, 3));
        assert_eq!(lines.locate(text, 1000), (3, 1));
        assert_eq!(Lines::new("").locate("", 3), (1, 1));
    }

    /// Texts with nested tables, arrays of tables, inline tables, dotted
    /// keys and syntax errors, for the position indexes below.
    const SHAPES: [&str; 6] = [
        "a = 1\nb = [1, [2, {c = 3}], \"x\"]\n[t]\nd.e = 4\n[[p]]\nname = \"x\"\n[[p]]\nq = [{r = 1}]\n",
        "schedule = \"@hourly\nbogus = 1\n[safety\nmin_age = \"1h\"\n",
        "a = [,,,]\nb = {c = 1 d = 2}\n=\n[x.y]\nz = [1 2]\n",
        "[[policy]]\nname = \"p\"\nolder_than = \"1d\"\n[[policy]]\nname = \"p\"\nx = \n",
        "\"é\" = [1, 2,, 3]\n[a]\nb = 1\n[a.c]\nd = [[1], [2,]]\ne = \n",
        "",
    ];

    fn contains(span: &Range<usize>, offset: usize) -> bool {
        span.start <= offset && offset < span.end
    }

    /// The search per offset that [`paths_at`] replaces: key path of the
    /// deepest key or value in `table` at `offset`. `inclusive` also matches
    /// the offset just past a value.
    fn table_path_at(
        prefix: &str,
        table: &DeTable<'_>,
        offset: usize,
        inclusive: bool,
    ) -> Option<String> {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            if contains(&key.span(), offset) {
                return Some(path);
            }
            if let Some(deeper) = value_path_at(&path, value.get_ref(), offset) {
                return Some(deeper);
            }
            let span = value.span();
            if contains(&span, offset) || (inclusive && offset == span.end && span.end > span.start)
            {
                return Some(path);
            }
        }
        None
    }

    fn value_path_at(prefix: &str, value: &DeValue<'_>, offset: usize) -> Option<String> {
        match value {
            DeValue::Table(table) => table_path_at(prefix, table, offset, false),
            DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                let path = format!("{prefix}[{i}]");
                value_path_at(&path, item.get_ref(), offset)
                    .or_else(|| contains(&item.span(), offset).then_some(path))
            }),
            _ => None,
        }
    }

    #[test]
    fn one_sweep_finds_the_same_key_paths_as_a_search_per_offset() {
        for text in SHAPES {
            let (document, _) = DeTable::parse_recoverable(text);
            let offsets: Vec<usize> = (0..=text.len() + 1).rev().collect();
            let swept = paths_at(document.get_ref(), &offsets);
            for (offset, path) in offsets.into_iter().zip(swept) {
                let searched = table_path_at("", document.get_ref(), offset, true);
                assert_eq!(path, searched, "{text:?} at {offset}");
            }
        }
    }

    #[test]
    fn columns_counted_on_from_the_last_offset_match_counting_from_the_line_start() {
        for text in SHAPES.into_iter().chain(["é\nàb\n\nc", "ééé"]) {
            let lines = Lines::new(text);
            let mut columns = Columns::new(text, &lines);
            for offset in 0..=text.len() + 2 {
                // Each offset twice: equal offsets come in a row too.
                for _ in 0..2 {
                    assert_eq!(
                        columns.locate(offset),
                        lines.locate(text, offset),
                        "{text:?} at {offset}"
                    );
                }
            }
        }
    }

    #[test]
    fn control_characters_and_bidi_overrides_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("plain é ß"), "plain é ß");
        assert_eq!(
            escape_controls("\u{1b}[31mred\r\n\t"),
            "\\u{1b}[31mred\\r\\n\\t"
        );
        assert_eq!(escape_controls("\u{9b}2J\u{7f}"), "\\u{9b}2J\\u{7f}");
        assert_eq!(
            escape_controls("a\u{202e}b\u{2066}"),
            "a\\u{202e}b\\u{2066}"
        );
    }

    #[test]
    fn typos_are_matched_to_the_closest_key_and_nonsense_is_not() {
        let keys = POLICY.names();
        assert_eq!(closest("repository", keys.clone()), Some("repositories"));
        assert_eq!(closest("Older-Than", keys.clone()), Some("older_than"));
        assert_eq!(closest("unused", keys.clone()), Some("unused_for"));
        assert_eq!(closest("colour", keys), None);
    }

    #[test]
    fn valid_keys_are_listed_as_serde_lists_fields() {
        use crate::config::schema::{METRICS, STATE};
        assert!(unknown_key_message("x", &STATE).starts_with("unknown key `x`, expected `path`"));
        assert!(unknown_key_message("x", &METRICS)
            .starts_with("unknown key `x`, expected `enabled` or `listen`"));
        assert!(unknown_key_message("x", &TOP)
            .starts_with("unknown key `x`, expected one of `schedule`, `timezone`, "));
    }
}
