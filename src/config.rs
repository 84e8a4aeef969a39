//! Policy file (TOML text) → validated [`Policy`], with errors that point at
//! the file, line and column.
//!
//! Two stages, as in ripgrep and zincati. First the text is read into raw
//! serde structs (`Raw*`, private to this module; every value is
//! [`Spanned`], so a later check can point at it). Then every raw value is
//! checked and turned into the types in [`crate::policy`]. Nothing outside
//! this module sees a raw type.
//!
//! Every problem in a file is reported, not just the first:
//! - Syntax errors are all collected by the recovering TOML parser. They stop
//!   the check, since anything read past them would be guesswork.
//! - Each section and each `[[policy]]` is deserialized on its own, so a type
//!   error in `[safety]` does not hide one in the third policy. When a key in
//!   a section is refused, it is reported and dropped, and the section is read
//!   again without it, so two bad keys in one table give two errors.
//! - The semantic checks then run over everything that was read. A check that
//!   depends on a key that was refused is skipped, so one mistake is never
//!   reported twice.
//!
//! Checking is bounded and linear: [`load`] reads only regular files of at
//! most [`MAX_POLICY_BYTES`], positions and key paths of all errors are found
//! in one sweep, and at most [`MAX_SHOWN_ERRORS`] are printed. What messages
//! echo from the file is escaped ([`escape_controls`]).
//!
//! Each [`ConfigError`] has the file, the 1-based line and column (counted in
//! characters), the key path (`safety.min_age`, `policy "stale-ci".older_than`;
//! `policy[2].name` with a 0-based index where the policy's name is unknown or
//! is itself the problem) and a message that says what would be valid.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::policy::{
    Conditions, DiskPressure, Glob, LabelMatch, MetricsSettings, Policy, Rule, Safety, Selectors,
    StateSettings, Threshold,
};
use crate::schedule::Schedule;

/// The built-in policy, used when no policy file exists. The README's policy
/// reference quotes the same file.
pub const DEFAULT_POLICY_TEXT: &str = include_str!("../config/imagegc.toml");

/// Where the daemon looks for a policy file when none is named.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/imagegc/imagegc.toml";

/// `source` of the policy built from [`DEFAULT_POLICY_TEXT`].
pub const BUILTIN_SOURCE: &str = "<built-in>";

/// `schedule` when the key is absent.
pub const DEFAULT_SCHEDULE: &str = "@hourly";

/// `[metrics] listen` when the key is absent.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9317);

/// `[state] path` when the key is absent.
pub const DEFAULT_STATE_PATH: &str = "/var/lib/imagegc/state.json";

/// `[safety] min_age` when the key is absent.
pub const DEFAULT_MIN_AGE: Duration = Duration::from_secs(60 * 60);

/// The error for a file without policies: it would never remove anything,
/// which is almost certainly not what its author meant.
const NO_POLICIES: &str = "no [[policy]] tables: nothing to do; add at least one, such as \
                           [[policy]] name = \"dangling\", dangling = true, older_than = \"1h\"";

/// Refused keys reported per table before giving up on it.
const MAX_REFUSED_PER_TABLE: usize = 32;

/// The largest policy file [`load`] reads. Real ones are a few KiB; a bigger
/// file is a mistake (or an attack) and would only cost time and memory.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// Errors shown by [`ConfigErrors`]'s `Display`; the rest are counted.
pub const MAX_SHOWN_ERRORS: usize = 50;

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

/// Parses and validates a policy file. `source` names the file in messages.
///
/// Linear in the size of `text`, however many errors it holds: positions and
/// key paths are found with one sweep over sorted offsets, not a search from
/// the start per error. Control characters in what the messages echo (keys,
/// values, the file name) are escaped, so a message cannot drive a terminal.
pub fn parse(text: &str, source: &str) -> Result<Policy, ConfigErrors> {
    let mut checker = Checker {
        lines: Lines::new(text),
        text,
        file: source,
        pending: Vec::new(),
    };
    // In a block, so the document and the parser's errors are freed before
    // `finish` builds the errors of our own (a 1 MiB file can hold 1.5
    // million syntax errors).
    let policy = {
        let (document, syntax_errors) = DeTable::parse_recoverable(text);
        if syntax_errors.is_empty() {
            let raw = checker.read(document.get_ref());
            checker.validate(raw)
        } else {
            checker.syntax_errors(document.get_ref(), syntax_errors);
            None
        }
    };
    match policy {
        Some(policy) if checker.pending.is_empty() => Ok(policy),
        _ => Err(ConfigErrors {
            errors: checker.finish(),
        }),
    }
}

/// Reads and validates the policy file at `path`.
///
/// Refuses, without reading them, anything but a regular file (a FIFO would
/// block forever, `/dev/zero` would never end) and files over
/// [`MAX_POLICY_BYTES`]; reads at most that much plus one byte, so a file
/// that grows while it is read is refused too. Text that is not UTF-8 is
/// reported at the line and column of its first bad byte.
pub fn load(path: &Path) -> Result<Policy, ConfigErrors> {
    let file = path.display().to_string();
    let whole_file = |line: usize, column: usize, message: String| ConfigErrors {
        errors: vec![ConfigError {
            file: escape_controls(&file),
            line,
            column,
            key: String::new(),
            message,
        }],
    };
    let bytes = read_policy_file(path)
        .map_err(|reason| whole_file(0, 0, format!("cannot read the policy file: {reason}")))?;
    match String::from_utf8(bytes) {
        Ok(text) => parse(&text, &file),
        Err(error) => {
            let bytes = error.as_bytes();
            let at = error.utf8_error().valid_up_to();
            // The prefix is valid UTF-8 by definition of `valid_up_to`.
            let before = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let column = before
                .rsplit('\n')
                .next()
                .unwrap_or_default()
                .chars()
                .count()
                + 1;
            let message = format!(
                "cannot read the policy file: it is not valid UTF-8 text (the byte {:#04x} here \
                 does not start a UTF-8 character); save it as UTF-8",
                bytes.get(at).copied().unwrap_or_default()
            );
            Err(whole_file(line, column, message))
        }
    }
}

/// The bytes of the policy file at `path`, or why they cannot be had.
fn read_policy_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};

    let refuse_kind = |kind: std::fs::FileType| -> Result<(), String> {
        let what = if kind.is_file() {
            return Ok(());
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO (named pipe)"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else {
            "something other than a file"
        };
        Err(format!(
            "it is {what}, not a regular file; point imagegc at a TOML file"
        ))
    };
    let too_large = |size: u64| {
        format!(
            "it is {} ({size} bytes), more than the {} a policy file may have",
            bytesize::ByteSize(size).display().iec(),
            bytesize::ByteSize(MAX_POLICY_BYTES).display().iec(),
        )
    };
    // Checked before opening: opening a FIFO waits for a writer.
    let metadata = std::fs::metadata(path).map_err(|e| e.to_string())?;
    refuse_kind(metadata.file_type())?;
    if metadata.len() > MAX_POLICY_BYTES {
        return Err(too_large(metadata.len()));
    }
    // Non-blocking and checked again on the open file, in case the path was
    // replaced in between; reads of a regular file ignore O_NONBLOCK.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| e.to_string())?;
    let metadata = file.metadata().map_err(|e| e.to_string())?;
    refuse_kind(metadata.file_type())?;
    let mut bytes = Vec::with_capacity(metadata.len().min(MAX_POLICY_BYTES) as usize + 1);
    file.take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(format!(
            "it grew past the {} a policy file may have while it was read",
            bytesize::ByteSize(MAX_POLICY_BYTES).display().iec(),
        ));
    }
    Ok(bytes)
}

/// The built-in default policy ([`DEFAULT_POLICY_TEXT`]).
pub fn builtin() -> Policy {
    parse(DEFAULT_POLICY_TEXT, BUILTIN_SOURCE)
        .expect("the built-in policy parses: tests/config_errors.rs checks it")
}

// ---------------------------------------------------------------------------
// Stage 1: raw values as written.

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    enabled: Option<Spanned<bool>>,
    listen: Option<Spanned<String>>,
}

/// `[state]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    path: Option<Spanned<String>>,
}

/// `[safety]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSafety {
    min_age: Option<Spanned<String>>,
    protect: Option<Vec<Spanned<String>>>,
    protect_labels: Option<Vec<Spanned<String>>>,
    /// Signed so that `-1` reaches the semantic check and its clearer message.
    max_removals_per_run: Option<Spanned<i64>>,
}

/// One `[[policy]]` as written. `name` is optional here so that a missing
/// name gets a message of ours, pointing at the table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Option<Spanned<String>>,
    dangling: Option<Spanned<bool>>,
    repositories: Option<Spanned<Vec<Spanned<String>>>>,
    labels: Option<Spanned<Vec<Spanned<String>>>>,
    unused_for: Option<Spanned<String>>,
    older_than: Option<Spanned<String>>,
    keep_most_recent: Option<Spanned<i64>>,
    disk_high: Option<Spanned<String>>,
    disk_low: Option<Spanned<String>>,
}

/// One `[[policy]]` element with what the checks need to point at it.
struct RawEntry {
    /// 0-based position in the file.
    index: usize,
    /// The `[[policy]]` header (or the inline table).
    span: Range<usize>,
    /// `policy "name"`, or `policy[index]` when the name is unknown.
    path: String,
    /// Keys that were refused while reading, each with the valid key it is
    /// closest to (worked out once); checks that need them are skipped.
    refused: Vec<(String, Option<&'static str>)>,
    raw: RawPolicy,
}

impl RawEntry {
    /// Whether `key` was written but refused, or a refused key looks like a
    /// typo of it (`older_tan`): then checks that miss `key` stay quiet, as
    /// the refusal already told the author.
    fn refused_as(&self, key: &str) -> bool {
        self.refused
            .iter()
            .any(|(refused, close)| refused == key || *close == Some(key))
    }
}

/// The whole file as written. Sections that were absent or not tables are
/// empty defaults (their errors are already reported).
#[derive(Default)]
struct RawFile {
    schedule: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    engine: Option<Spanned<String>>,
    dry_run: Option<Spanned<bool>>,
    run_on_start: Option<Spanned<bool>>,
    metrics: RawMetrics,
    state: RawState,
    safety: RawSafety,
    /// Whether the file has a `policy` key at all.
    has_policy_key: bool,
    policies: Vec<RawEntry>,
}

/// The tables of a policy file, for unknown-key hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Top,
    Metrics,
    State,
    Safety,
    Policy,
}

impl Section {
    const ALL: [Self; 5] = [
        Self::Top,
        Self::Metrics,
        Self::State,
        Self::Safety,
        Self::Policy,
    ];

    /// Valid keys, in the order the README lists them.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Top => &[
                "schedule",
                "timezone",
                "run_on_start",
                "engine",
                "dry_run",
                "metrics",
                "state",
                "safety",
                "policy",
            ],
            Self::Metrics => &["enabled", "listen"],
            Self::State => &["path"],
            Self::Safety => &[
                "min_age",
                "protect",
                "protect_labels",
                "max_removals_per_run",
            ],
            Self::Policy => &[
                "name",
                "dangling",
                "repositories",
                "labels",
                "unused_for",
                "older_than",
                "keep_most_recent",
                "disk_high",
                "disk_low",
            ],
        }
    }

    /// Where its keys go, completing "belongs ...".
    fn place(self) -> &'static str {
        match self {
            Self::Top => "at the top level",
            Self::Metrics => "in [metrics]",
            Self::State => "in [state]",
            Self::Safety => "in [safety]",
            Self::Policy => "in a [[policy]] table",
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

/// Collects errors while reading and validating one file.
struct Checker<'t> {
    text: &'t str,
    lines: Lines,
    file: &'t str,
    pending: Vec<Pending>,
}

impl Checker<'_> {
    fn error(&mut self, span: &Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.pending.push(Pending {
            offset: span.start,
            key: key.into(),
            message: message.into(),
        });
    }

    /// The errors in file order, with line and column, control characters
    /// escaped. One sweep over the text: sorted offsets only move forward.
    fn finish(self) -> Vec<ConfigError> {
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
    fn syntax_errors(&mut self, partial: &DeTable<'_>, errors: Vec<toml::de::Error>) {
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

    /// Stage 1: reads every top-level key into its raw form.
    fn read(&mut self, document: &DeTable<'_>) -> RawFile {
        let mut raw = RawFile::default();
        for (key, value) in document {
            let name: &str = key.get_ref();
            match name {
                "schedule" => raw.schedule = self.scalar(name, value),
                "timezone" => raw.timezone = self.scalar(name, value),
                "engine" => raw.engine = self.scalar(name, value),
                "dry_run" => raw.dry_run = self.scalar(name, value),
                "run_on_start" => raw.run_on_start = self.scalar(name, value),
                "metrics" => {
                    if let Some((section, _)) = self.table(name, value, Section::Metrics) {
                        raw.metrics = section;
                    }
                }
                "state" => {
                    if let Some((section, _)) = self.table(name, value, Section::State) {
                        raw.state = section;
                    }
                }
                "safety" => {
                    if let Some((section, _)) = self.table(name, value, Section::Safety) {
                        raw.safety = section;
                    }
                }
                "policy" => {
                    raw.has_policy_key = true;
                    raw.policies = self.policies(value);
                }
                _ => {
                    let message = unknown_key_message(name, Section::Top);
                    self.error(&key.span(), name, message);
                }
            }
        }
        raw
    }

    /// A top-level value that is not a table.
    fn scalar<T: DeserializeOwned>(
        &mut self,
        key: &str,
        value: &Spanned<DeValue<'_>>,
    ) -> Option<Spanned<T>> {
        match Spanned::<T>::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(v) => Some(v),
            Err(error) => {
                let span = error.span().unwrap_or_else(|| value.span());
                let path =
                    value_path_at(key, value.get_ref(), span.start).unwrap_or_else(|| key.into());
                let message = explain(
                    error.message(),
                    Some(key),
                    path.ends_with(']'),
                    value_starting_at(value, span.start),
                    Section::Top,
                );
                self.error(&span, path, message);
                None
            }
        }
    }

    /// Deserializes one table into `T`. A refused key is reported, dropped,
    /// and the table read again, so every bad key in it is reported. Returns
    /// the keys that were refused alongside, or `None` when the value is not
    /// a table or could not be read at all (already reported).
    fn table<T: DeserializeOwned>(
        &mut self,
        path: &str,
        value: &Spanned<DeValue<'_>>,
        section: Section,
    ) -> Option<(T, Vec<String>)> {
        let DeValue::Table(table) = value.get_ref() else {
            let message = match section {
                Section::Policy => {
                    "each policy must be a table: write a [[policy]] section".to_string()
                }
                _ => format!("`{path}` must be a table: write a [{path}] section"),
            };
            self.error(&value.span(), path, message);
            return None;
        };
        let mut table = table.clone();
        let mut refused = Vec::new();
        // Each failed attempt removes one key, so this ends.
        loop {
            let attempt = Spanned::new(value.span(), DeValue::Table(table.clone()));
            let error = match T::deserialize(ValueDeserializer::from(attempt)) {
                Ok(raw) => return Some((raw, refused)),
                Err(error) => error,
            };
            let span = error.span().unwrap_or_else(|| value.span());
            let culprit = table.iter().find_map(|(k, v)| {
                (contains(&k.span(), span.start) || contains(&v.span(), span.start))
                    .then(|| k.get_ref().to_string())
            });
            let key_path =
                table_path_at(path, &table, span.start, false).unwrap_or_else(|| path.into());
            let message = explain(
                error.message(),
                culprit.as_deref(),
                key_path.ends_with(']'),
                table
                    .values()
                    .find_map(|v| value_starting_at(v, span.start)),
                section,
            );
            self.error(&span, key_path, message);
            let culprit = culprit?;
            if refused.len() + 1 >= MAX_REFUSED_PER_TABLE {
                // Retrying costs O(keys) each time; a table this broken needs
                // a fresh look from its author, not more messages.
                let message = format!(
                    "stopped checking {path} after {MAX_REFUSED_PER_TABLE} refused keys; fix \
                     these and check again"
                );
                self.error(&value.span(), path, message);
                return None;
            }
            table.remove(culprit.as_str());
            refused.push(culprit);
        }
    }

    /// The `policy` key: an array of tables, each read on its own.
    fn policies(&mut self, value: &Spanned<DeValue<'_>>) -> Vec<RawEntry> {
        let items = match value.get_ref() {
            DeValue::Array(items) => items,
            DeValue::Table(_) => {
                self.error(
                    &value.span(),
                    "policy",
                    "`policy` must be an array of tables: write [[policy]], with two brackets, \
                     before each policy",
                );
                return Vec::new();
            }
            _ => {
                self.error(
                    &value.span(),
                    "policy",
                    "`policy` must be an array of tables, written as [[policy]] sections",
                );
                return Vec::new();
            }
        };
        if items.is_empty() {
            self.error(&value.span(), "policy", NO_POLICIES);
        }
        let mut entries = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let named = match item.get_ref() {
                DeValue::Table(table) => match table.get("name").map(Spanned::get_ref) {
                    Some(DeValue::String(name)) if !name.trim().is_empty() => {
                        Some(format!("policy {name:?}"))
                    }
                    _ => None,
                },
                _ => None,
            };
            let path = named.unwrap_or_else(|| format!("policy[{index}]"));
            if let Some((raw, refused)) = self.table::<RawPolicy>(&path, item, Section::Policy) {
                let refused = refused
                    .into_iter()
                    .map(|key| {
                        let close = closest(&key, Section::Policy.keys().iter().copied());
                        (key, close)
                    })
                    .collect();
                entries.push(RawEntry {
                    index,
                    span: item.span(),
                    path,
                    refused,
                    raw,
                });
            }
        }
        entries
    }

    // -----------------------------------------------------------------------
    // Stage 2: raw → validated.

    fn validate(&mut self, raw: RawFile) -> Option<Policy> {
        let schedule = self.schedule(raw.schedule.as_ref());
        let timezone = raw
            .timezone
            .as_ref()
            .and_then(|tz| self.timezone(tz))
            .unwrap_or(chrono_tz::Tz::UTC);
        let engine = raw.engine.as_ref().and_then(|engine| {
            let text = engine.get_ref().trim();
            if text.is_empty() {
                self.error(
                    &engine.span(),
                    "engine",
                    "must not be empty: write an address like \"unix:///var/run/docker.sock\", \
                     or remove the key to use DOCKER_HOST or the local socket",
                );
                None
            } else {
                Some(text.to_string())
            }
        });
        let metrics = self.metrics(&raw.metrics);
        let state = self.state(&raw.state);
        let safety = self.safety(&raw.safety);
        let rules = self.rules(&raw);
        Some(Policy {
            source: self.file.to_string(),
            schedule: schedule?,
            timezone,
            engine,
            dry_run: raw.dry_run.is_some_and(Spanned::into_inner),
            run_on_start: raw.run_on_start.is_none_or(Spanned::into_inner),
            metrics,
            state,
            safety,
            rules,
        })
    }

    fn schedule(&mut self, raw: Option<&Spanned<String>>) -> Option<Schedule> {
        let Some(raw) = raw else {
            return match Schedule::parse(DEFAULT_SCHEDULE) {
                Ok(schedule) => Some(schedule),
                Err(error) => {
                    let message =
                        format!("the default schedule {DEFAULT_SCHEDULE:?} was refused: {error}");
                    self.error(&(0..0), "schedule", message);
                    None
                }
            };
        };
        match Schedule::parse(raw.get_ref()) {
            Ok(schedule) => Some(schedule),
            Err(error) => {
                // The scheduler's message says what is valid.
                let message = format!("invalid schedule {:?}: {error}", raw.get_ref());
                self.error(&raw.span(), "schedule", message);
                None
            }
        }
    }

    fn timezone(&mut self, raw: &Spanned<String>) -> Option<chrono_tz::Tz> {
        let name = raw.get_ref();
        if let Ok(tz) = chrono_tz::Tz::from_str(name) {
            return Some(tz);
        }
        let mut message = format!(
            "unknown time zone {name:?}: expected an IANA name like \"UTC\" or \"Europe/Berlin\""
        );
        let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
        if let Some(close) = closest(name, names) {
            let _ = write!(message, "; did you mean {close:?}?");
        }
        self.error(&raw.span(), "timezone", message);
        None
    }

    fn metrics(&mut self, raw: &RawMetrics) -> MetricsSettings {
        let listen = raw.listen.as_ref().and_then(|listen| {
            let addr = SocketAddr::from_str(listen.get_ref().trim()).ok();
            if addr.is_none() {
                let message = format!(
                    "invalid listen address {:?}: expected an IP address and a port, like \
                     \"127.0.0.1:9317\", \"0.0.0.0:9317\" or \"[::1]:9317\" (host names are \
                     not resolved)",
                    listen.get_ref()
                );
                self.error(&listen.span(), "metrics.listen", message);
            }
            addr
        });
        MetricsSettings {
            enabled: raw.enabled.as_ref().is_none_or(|e| *e.get_ref()),
            listen: listen.unwrap_or(DEFAULT_LISTEN),
        }
    }

    fn state(&mut self, raw: &RawState) -> StateSettings {
        let path = match &raw.path {
            Some(path) if path.get_ref().trim().is_empty() => {
                self.error(
                    &path.span(),
                    "state.path",
                    format!(
                        "must not be empty: write a file path, or remove the key to use \
                         {DEFAULT_STATE_PATH:?}"
                    ),
                );
                PathBuf::from(DEFAULT_STATE_PATH)
            }
            Some(path) => PathBuf::from(path.get_ref()),
            None => PathBuf::from(DEFAULT_STATE_PATH),
        };
        StateSettings { path }
    }

    fn safety(&mut self, raw: &RawSafety) -> Safety {
        let min_age = self
            .duration(raw.min_age.as_ref(), "safety.min_age", true)
            .unwrap_or(DEFAULT_MIN_AGE);
        let protect = self.globs(raw.protect.as_deref().unwrap_or_default(), "safety.protect");
        let protect_labels = self.labels(
            raw.protect_labels.as_deref().unwrap_or_default(),
            "safety.protect_labels",
        );
        let max_removals_per_run = raw.max_removals_per_run.as_ref().and_then(|max| {
            let n = usize::try_from(*max.get_ref())
                .ok()
                .and_then(NonZeroUsize::new);
            if n.is_none() {
                self.error(
                    &max.span(),
                    "safety.max_removals_per_run",
                    format!(
                        "must be a positive integer, like 500, not {}; remove the key for no limit",
                        max.get_ref()
                    ),
                );
            }
            n
        });
        Safety {
            min_age,
            protect,
            protect_labels,
            max_removals_per_run,
        }
    }

    fn rules(&mut self, raw: &RawFile) -> Vec<Rule> {
        if !raw.has_policy_key {
            self.error(&(0..0), "policy", NO_POLICIES);
        }
        // Name → line of the policy that used it first.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut rules = Vec::new();
        for entry in &raw.policies {
            let name = self.rule_name(entry, &mut seen);
            let selectors = self.selectors(entry);
            let conditions = self.conditions(entry);
            if let (Some(name), Some(conditions)) = (name, conditions) {
                rules.push(Rule {
                    name,
                    selectors,
                    conditions,
                });
            }
        }
        rules
    }

    fn rule_name<'r>(
        &mut self,
        entry: &'r RawEntry,
        seen: &mut HashMap<&'r str, usize>,
    ) -> Option<String> {
        let key = format!("policy[{}].name", entry.index);
        let Some(name) = &entry.raw.name else {
            if !entry.refused_as("name") {
                self.error(
                    &entry.span,
                    format!("policy[{}]", entry.index),
                    "missing `name`: every [[policy]] needs a unique name, like \
                     name = \"stale-ci\"; it labels each removal and metric",
                );
            }
            return None;
        };
        if let Some(message) = Rule::name_problem(name.get_ref()) {
            self.error(&name.span(), key, message);
            return None;
        }
        let line = self.lines.locate(self.text, entry.span.start).0;
        if let Some(first) = seen.get(name.get_ref().as_str()) {
            let message = format!(
                "duplicate policy name {:?}: the [[policy]] at line {first} already uses it; \
                 names must be unique",
                name.get_ref()
            );
            self.error(&name.span(), key, message);
            return None;
        }
        seen.insert(name.get_ref(), line);
        Some(name.get_ref().clone())
    }

    fn selectors(&mut self, entry: &RawEntry) -> Selectors {
        let raw = &entry.raw;
        let path = &entry.path;
        let dangling = raw.dangling.as_ref().map(|d| *d.get_ref());
        let mut repositories = Vec::new();
        if let Some(list) = &raw.repositories {
            let key = format!("{path}.repositories");
            if list.get_ref().is_empty() {
                self.error(
                    &list.span(),
                    key,
                    "an empty list would select every repository: list at least one glob, \
                     like [\"ci/*\"], or remove the key",
                );
            } else if dangling == Some(true) {
                self.error(
                    &list.span(),
                    key,
                    "cannot be combined with `dangling = true`: untagged images have no \
                     repository, so the policy would select nothing; split it into two policies",
                );
            } else {
                repositories = self.globs(list.get_ref(), &key);
            }
        }
        let mut labels = Vec::new();
        if let Some(list) = &raw.labels {
            let key = format!("{path}.labels");
            if list.get_ref().is_empty() {
                self.error(
                    &list.span(),
                    key,
                    "an empty list would select every image: list at least one label, \
                     like [\"ci\"] or [\"tier=dev\"], or remove the key",
                );
            } else {
                labels = self.labels(list.get_ref(), &key);
            }
        }
        Selectors {
            dangling,
            repositories,
            labels,
        }
    }

    /// `None` when the policy's conditions are unusable (already reported).
    fn conditions(&mut self, entry: &RawEntry) -> Option<Conditions> {
        let raw = &entry.raw;
        let path = &entry.path;
        let before = self.pending.len();
        let unused_for = self.duration(
            raw.unused_for.as_ref(),
            &format!("{path}.unused_for"),
            false,
        );
        let older_than = self.duration(
            raw.older_than.as_ref(),
            &format!("{path}.older_than"),
            false,
        );
        let keep_most_recent = raw.keep_most_recent.as_ref().and_then(|keep| {
            let n = usize::try_from(*keep.get_ref()).ok().filter(|n| *n >= 1);
            if n.is_none() {
                self.error(
                    &keep.span(),
                    format!("{path}.keep_most_recent"),
                    format!(
                        "must be at least 1, not {}: it keeps the N newest references of each \
                         repository; to remove by age alone, use older_than or unused_for",
                        keep.get_ref()
                    ),
                );
            }
            n
        });
        let disk = self.disk(entry);
        let condition_keys = [
            "unused_for",
            "older_than",
            "keep_most_recent",
            "disk_high",
            "disk_low",
        ];
        let any_written = raw.unused_for.is_some()
            || raw.older_than.is_some()
            || raw.keep_most_recent.is_some()
            || raw.disk_high.is_some()
            || raw.disk_low.is_some()
            || condition_keys.iter().any(|k| entry.refused_as(k));
        if !any_written {
            self.error(
                &entry.span,
                path.clone(),
                format!(
                    "{path} has no condition: set at least one of unused_for, older_than, \
                     keep_most_recent, disk_high/disk_low"
                ),
            );
        }
        (self.pending.len() == before).then_some(Conditions {
            unused_for,
            older_than,
            keep_most_recent,
            disk,
        })
    }

    fn disk(&mut self, entry: &RawEntry) -> Option<DiskPressure> {
        let path = &entry.path;
        let raw = &entry.raw;
        let high_key = format!("{path}.disk_high");
        let low_key = format!("{path}.disk_low");
        let high = raw
            .disk_high
            .as_ref()
            .map(|v| (v.span(), self.threshold(v, &high_key)));
        let low = raw
            .disk_low
            .as_ref()
            .map(|v| (v.span(), self.threshold(v, &low_key)));
        match (high, low) {
            (Some((_, Some(high))), Some((low_span, Some(low)))) => {
                let ordered = match (high, low) {
                    (Threshold::Ratio(h), Threshold::Ratio(l)) => l < h,
                    (Threshold::Bytes(h), Threshold::Bytes(l)) => l < h,
                    (Threshold::Ratio(_), Threshold::Bytes(_))
                    | (Threshold::Bytes(_), Threshold::Ratio(_)) => {
                        let (low_kind, high_kind) = match low {
                            Threshold::Ratio(_) => ("a percentage", "a size"),
                            Threshold::Bytes(_) => ("a size", "a percentage"),
                        };
                        self.error(
                            &low_span,
                            low_key,
                            format!(
                                "disk_low is {low_kind} but disk_high is {high_kind}: use the \
                                 same kind for both, like \"85%\"/\"70%\" or \"200GiB\"/\"150GiB\""
                            ),
                        );
                        return None;
                    }
                };
                if ordered {
                    Some(DiskPressure { high, low })
                } else {
                    self.error(
                        &low_span,
                        low_key,
                        format!(
                            "disk_low ({low}) must be below disk_high ({high}): imagegc starts \
                             removing at disk_high and stops at disk_low"
                        ),
                    );
                    None
                }
            }
            (Some((span, _)), None) if !entry.refused_as("disk_low") => {
                self.error(
                    &span,
                    high_key,
                    "disk_high is set without disk_low: set both, like disk_high = \"85%\" \
                     and disk_low = \"70%\"",
                );
                None
            }
            (None, Some((span, _))) if !entry.refused_as("disk_high") => {
                self.error(
                    &span,
                    low_key,
                    "disk_low is set without disk_high: set both, like disk_high = \"85%\" \
                     and disk_low = \"70%\"",
                );
                None
            }
            _ => None,
        }
    }

    fn threshold(&mut self, raw: &Spanned<String>, key: &str) -> Option<Threshold> {
        match parse_threshold(raw.get_ref()) {
            Ok(threshold) => Some(threshold),
            Err(message) => {
                self.error(&raw.span(), key, message);
                None
            }
        }
    }

    fn duration(
        &mut self,
        raw: Option<&Spanned<String>>,
        key: &str,
        allow_zero: bool,
    ) -> Option<Duration> {
        let raw = raw?;
        let text = raw.get_ref().trim();
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() && !allow_zero => {
                self.error(
                    &raw.span(),
                    key,
                    format!(
                        "must be longer than zero, not {:?}: write a duration like \"12h\" or \"7d\"",
                        raw.get_ref()
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(error) => {
                let message = format!(
                    "invalid duration {:?} ({error}): expected a number and a unit, like \
                     \"90m\", \"12h\" or \"7d\"",
                    raw.get_ref()
                );
                self.error(&raw.span(), key, message);
                None
            }
        }
    }

    fn globs(&mut self, raw: &[Spanned<String>], key: &str) -> Vec<Glob> {
        let mut globs = Vec::new();
        for (i, pattern) in raw.iter().enumerate() {
            match compile_glob(pattern.get_ref()) {
                Ok(glob) => globs.push(glob),
                Err(message) => self.error(&pattern.span(), format!("{key}[{i}]"), message),
            }
        }
        globs
    }

    fn labels(&mut self, raw: &[Spanned<String>], key: &str) -> Vec<LabelMatch> {
        let mut labels = Vec::new();
        for (i, label) in raw.iter().enumerate() {
            match parse_label(label.get_ref()) {
                Ok(label) => labels.push(label),
                Err(message) => self.error(&label.span(), format!("{key}[{i}]"), message),
            }
        }
        labels
    }
}

// ---------------------------------------------------------------------------
// Value parsers: plain functions, so their rules read in one place.

/// `"85%"` → `Ratio(0.85)`, in (0, 100]; `"200GiB"` → `Bytes`, above zero.
fn parse_threshold(text: &str) -> Result<Threshold, String> {
    let valid = "expected a percentage of the disk like \"85%\", or a size of image data \
                 like \"200GiB\" (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)";
    let trimmed = text.trim();
    if let Some(number) = trimmed.strip_suffix('%') {
        return match number.trim().parse::<f64>() {
            Ok(p) if p.is_finite() && p > 0.0 && p <= 100.0 => Ok(Threshold::Ratio(p / 100.0)),
            Ok(_) => Err(format!(
                "invalid percentage {text:?}: must be more than 0% and at most 100%"
            )),
            Err(_) => Err(format!("invalid percentage {text:?}: {valid}")),
        };
    }
    if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "{text:?} has no unit: write a percentage like \"85%\" or a size like \"200GiB\""
        ));
    }
    match trimmed.parse::<bytesize::ByteSize>() {
        Ok(size) if size.as_u64() > 0 => Ok(Threshold::Bytes(size.as_u64())),
        Ok(_) => Err(format!("invalid size {text:?}: must be more than zero")),
        Err(_) => Err(format!("invalid size {text:?}: {valid}")),
    }
}

/// A glob where `*` stays within one `/` segment and `**` crosses them.
fn compile_glob(pattern: &str) -> Result<Glob, String> {
    if pattern.is_empty() {
        return Err("empty glob: write a pattern like \"ci/*\" or \"**/build-*\"".to_string());
    }
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|glob| Glob {
            pattern: pattern.to_string(),
            matcher: glob.compile_matcher(),
        })
        .map_err(|error| {
            format!(
                "invalid glob {pattern:?}: {}; expected a pattern like \"ci/*\" or \"**/build-*\"",
                error.kind()
            )
        })
}

/// `key` or `key=value`, with a non-empty key.
fn parse_label(text: &str) -> Result<LabelMatch, String> {
    let valid = "write `key` (label present) or `key=value`";
    let (key, value) = match text.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (text, None),
    };
    if key.trim().is_empty() {
        return Err(format!("invalid label {text:?}: the key is empty; {valid}"));
    }
    let spaced = key != key.trim() || value.is_some_and(|v| v.starts_with(char::is_whitespace));
    if spaced {
        return Err(format!(
            "invalid label {text:?}: spaces around the key or `=` would never match; {valid}, \
             without spaces"
        ));
    }
    Ok(LabelMatch {
        key: key.to_string(),
        value: value.map(str::to_string),
    })
}

// ---------------------------------------------------------------------------
// Messages and positions.

/// Rewrites a serde message so it says what would be valid. `found` is the
/// value the message is about, when it could be found.
fn explain(
    message: &str,
    field: Option<&str>,
    element: bool,
    found: Option<&DeValue<'_>>,
    section: Section,
) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let mut message = format!("unknown key `{rest}");
        message.push_str(&unknown_key_hint(name, section));
        return message;
    }
    let wrong_value =
        message.starts_with("invalid type: ") || message.starts_with("invalid value: ");
    match (wrong_value, field.and_then(|f| expected(f, element)), found) {
        (true, Some(expected), Some(found)) => {
            let too_large = if message.contains(" as i128") || message.contains(" as u128") {
                " (too large)"
            } else {
                ""
            };
            format!("expected {expected}, found {}{too_large}", describe(found))
        }
        (true, Some(expected), None) => format!("expected {expected}; {message}"),
        _ => message.to_string(),
    }
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

/// What a key's value should look like.
fn expected(field: &str, element: bool) -> Option<&'static str> {
    Some(match (field, element) {
        ("schedule", _) => "a crontab expression string, like \"0 * * * *\" or \"@hourly\"",
        ("timezone", _) => "an IANA time zone name string, like \"UTC\" or \"Europe/Berlin\"",
        ("engine", _) => "an engine address string, like \"unix:///var/run/docker.sock\"",
        ("dry_run" | "run_on_start" | "enabled" | "dangling", _) => "true or false",
        ("listen", _) => "an address string, like \"127.0.0.1:9317\"",
        ("path", _) => "a file path string, like \"/var/lib/imagegc/state.json\"",
        ("min_age" | "unused_for" | "older_than", _) => {
            "a duration string, like \"90m\", \"12h\" or \"7d\""
        }
        ("protect", false) => "an array of reference globs, like [\"base/*\", \"**/release-*\"]",
        ("protect", true) => "a reference glob string, like \"base/*\"",
        ("repositories", false) => "an array of repository globs, like [\"ci/*\"]",
        ("repositories", true) => "a repository glob string, like \"ci/*\"",
        ("protect_labels" | "labels", false) => {
            "an array of label strings, like [\"keep\", \"tier=prod\"]"
        }
        ("protect_labels" | "labels", true) => "a label string, like \"keep\" or \"tier=prod\"",
        ("max_removals_per_run", _) => "a positive integer, like 500",
        ("keep_most_recent", _) => "an integer of at least 1, like 3",
        ("disk_high" | "disk_low", _) => {
            "a percentage string like \"85%\" or a size string like \"200GiB\""
        }
        ("name", _) => "a non-empty string, like \"stale-ci\"",
        _ => return None,
    })
}

/// `unknown key `x`, expected one of ...` for keys we walk ourselves (the top
/// level), in the same words as serde's message for the sections.
fn unknown_key_message(name: &str, section: Section) -> String {
    let valid: Vec<String> = section.keys().iter().map(|k| format!("`{k}`")).collect();
    format!(
        "unknown key `{name}`, expected one of {}{}",
        valid.join(", "),
        unknown_key_hint(name, section)
    )
}

/// `; did you mean ...?`, or where the key belongs, or nothing.
fn unknown_key_hint(name: &str, section: Section) -> String {
    if let Some(close) = closest(name, section.keys().iter().copied()) {
        return format!("; did you mean `{close}`?");
    }
    let others = Section::ALL.into_iter().filter(|s| *s != section);
    for other in others.clone() {
        let wanted = normalize(name);
        if let Some(key) = other.keys().iter().find(|k| normalize(k) == wanted) {
            return if other == Section::Top {
                format!(
                    "; `{key}` is a top-level key: move it above the first [table] header, since \
                     keys below a header belong to that table"
                )
            } else {
                format!("; `{key}` belongs {}", other.place())
            };
        }
    }
    for other in others {
        if let Some(close) = closest(name, other.keys().iter().copied()) {
            return format!("; did you mean `{close}` {}?", other.place());
        }
    }
    String::new()
}

/// Lower case, `-` as `_`: `Min-Age` and `min_age` are the same typo.
fn normalize(text: &str) -> String {
    text.to_lowercase().replace('-', "_")
}

/// The candidate closest to `wanted` by edit distance, if close enough to be
/// a likely typo (or `wanted` is a prefix of it, like `unused` for `unused_for`).
fn closest<'a>(wanted: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
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
            edit_distance(&wanted, &norm)
        };
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// Where each line starts, so locating many errors in a big file stays cheap.
struct Lines {
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

// The index behind `paths_at`.

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
/// in the order [`table_path_at`] tries them.
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
/// it, as [`table_path_at`] with `inclusive` finds it, for all offsets in one
/// sweep: O((keys + offsets) log keys) rather than keys × offsets, which
/// matters for a file with thousands of keys and thousands of syntax errors.
///
/// [`table_path_at`] searches depth-first and returns the first key span,
/// value below, or value span containing the offset. The same walk lays out
/// those spans as regions numbered in search order; the answer for an offset
/// is the lowest-numbered region containing it.
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

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end
}

/// Key path of the deepest key or value in `table` at `offset`.
/// `inclusive` also matches the offset just past a value (where a syntax
/// error about an unfinished value points).
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
        if contains(&span, offset) || (inclusive && offset == span.end && span.end > span.start) {
            return Some(path);
        }
    }
    None
}

/// The deepest value in `value` that starts at `offset`: what a type error
/// points at.
fn value_starting_at<'v, 'i>(
    value: &'v Spanned<DeValue<'i>>,
    offset: usize,
) -> Option<&'v DeValue<'i>> {
    let inner = match value.get_ref() {
        DeValue::Table(table) => table.values().find_map(|v| value_starting_at(v, offset)),
        DeValue::Array(items) => items.iter().find_map(|v| value_starting_at(v, offset)),
        _ => None,
    };
    inner.or_else(|| (value.span().start == offset).then(|| value.get_ref()))
}

/// Key path below a value (into tables and array elements) at `offset`.
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("min_agee", "min_age"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn typos_are_matched_to_the_closest_key_and_nonsense_is_not() {
        let keys = Section::Policy.keys().iter().copied();
        assert_eq!(closest("repository", keys.clone()), Some("repositories"));
        assert_eq!(closest("Older-Than", keys.clone()), Some("older_than"));
        assert_eq!(closest("unused", keys.clone()), Some("unused_for"));
        assert_eq!(closest("colour", keys), None);
    }

    #[test]
    fn thresholds_accept_percentages_and_sizes_with_units_only() {
        assert_eq!(parse_threshold("85%"), Ok(Threshold::Ratio(0.85)));
        assert_eq!(parse_threshold("100 %"), Ok(Threshold::Ratio(1.0)));
        assert_eq!(
            parse_threshold("200GiB"),
            Ok(Threshold::Bytes(200 * 1024 * 1024 * 1024))
        );
        for bad in ["0%", "100.5%", "NaN%", "inf%", "85", "0B", "", "%", "lots"] {
            assert!(parse_threshold(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn labels_need_a_key_and_no_spaces_around_the_equals_sign() {
        assert_eq!(
            parse_label("tier=prod"),
            Ok(LabelMatch {
                key: "tier".into(),
                value: Some("prod".into())
            })
        );
        assert_eq!(
            parse_label("keep"),
            Ok(LabelMatch {
                key: "keep".into(),
                value: None
            })
        );
        assert!(parse_label("=x").is_err());
        assert!(parse_label("tier = prod").is_err());
    }
}
