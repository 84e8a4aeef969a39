//! Policy file (TOML text) → validated [`Policy`], with errors that point at
//! the file, line and column.
//!
//! In stages, as in ripgrep and zincati, around one table of every section
//! and key:
//! - [`schema`]: every section's keys once: kind, "expected …" text, and the
//!   README's reference rows. Unknown keys, values of the wrong kind and
//!   "did you mean" hints all come from it.
//! - `raw` (stage 1): the TOML document, checked against the schema in one
//!   walk, → raw serde structs whose values are [`Spanned`], so a later check
//!   can point at them. Nothing outside this module sees a raw type.
//! - `validate` (stage 2): raw → the types in [`crate::policy`], one function
//!   per section; `values` holds the pure parsers (durations, thresholds,
//!   globs, labels).
//! - `diagnostics`: [`ConfigError`], [`ConfigErrors`], positions and hints.
//!
//! Every problem in a file is reported, not just the first:
//! - Syntax errors are all collected by the recovering TOML parser. They stop
//!   the check, since anything read past them would be guesswork.
//! - Every key of every table is checked against the schema, so a type error
//!   in `[safety]` does not hide one in the third policy, and two bad keys in
//!   one table give two errors. A refused key is left out of what stage 2
//!   sees.
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
//! characters), the key path (`safety.min_age`, `policy "stale-ci".older_than`,
//! `build_cache "cache".keep_storage`; `policy[2].name` with a 0-based index
//! where the policy's name is unknown or is itself the problem) and a message
//! that says what would be valid.
//!
//! `[[policy]]`, `[[build_cache]]` and `[[containers]]` tables share one name
//! space (a duplicate names the line, and the kind, of the table that used
//! the name first) and one order, [`Policy::order`](crate::policy::Policy::order):
//! the file's, found from the tables' byte offsets, so disk-pressure policies
//! run as they are written.

mod diagnostics;
mod raw;
pub mod schema;
mod validate;
mod values;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use toml::de::DeTable;
#[cfg(doc)]
use toml::Spanned;

pub use diagnostics::{escape_controls, ConfigError, ConfigErrors};

use crate::policy::Policy;

/// The built-in policy, used when no policy file exists. The README's policy
/// reference quotes the same file.
pub const DEFAULT_POLICY_TEXT: &str = include_str!("../../config/imagegc.toml");

/// Where the daemon looks for a policy file when none is named.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/imagegc/imagegc.toml";

/// `source` of the policy built from [`DEFAULT_POLICY_TEXT`].
pub const BUILTIN_SOURCE: &str = "<built-in>";

/// `schedule` when the key is absent.
pub const DEFAULT_SCHEDULE: &str = "@hourly";

/// `[metrics] listen` when the key is absent.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9317);

/// `[pressure] interval` when the key is absent.
pub const DEFAULT_PRESSURE_INTERVAL: Duration = Duration::from_secs(5);

/// `[pressure] cooldown` when the key is absent.
pub const DEFAULT_PRESSURE_COOLDOWN: Duration = Duration::from_secs(60);

/// `[state] path` when the key is absent.
pub const DEFAULT_STATE_PATH: &str = "/var/lib/imagegc/state.json";

/// `[safety] min_age` when the key is absent.
pub const DEFAULT_MIN_AGE: Duration = Duration::from_secs(60 * 60);

/// The largest policy file [`load`] reads. Real ones are a few KiB; a bigger
/// file is a mistake (or an attack) and would only cost time and memory.
pub const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// Errors shown by [`ConfigErrors`]'s `Display`; the rest are counted.
pub const MAX_SHOWN_ERRORS: usize = 50;

/// Parses and validates a policy file. `source` names the file in messages.
///
/// Linear in the size of `text`, however many errors it holds: positions and
/// key paths are found with one sweep over sorted offsets, not a search from
/// the start per error. Control characters in what the messages echo (keys,
/// values, the file name) are escaped, so a message cannot drive a terminal.
pub fn parse(text: &str, source: &str) -> Result<Policy, ConfigErrors> {
    let mut checker = diagnostics::Checker::new(text, source);
    // In a block, so the document and the parser's errors are freed before
    // `finish` builds the errors of our own (a 1 MiB file can hold 1.5
    // million syntax errors).
    let policy = {
        let (document, syntax_errors) = DeTable::parse_recoverable(text);
        if syntax_errors.is_empty() {
            raw::read(&mut checker, document).and_then(|raw| checker.validate(&raw))
        } else {
            checker.syntax_errors(document.get_ref(), syntax_errors);
            None
        }
    };
    match policy {
        Some(policy) if checker.count() == 0 => Ok(policy),
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
