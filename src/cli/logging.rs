//! Where log lines go: stderr, and under journald with each line's level.
//!
//! journald gives every line of a service's stderr the unit's default
//! priority (6, info) unless the line starts with an sd-daemon prefix such as
//! `<3>` (see `sd-daemon(3)`; `SyslogLevelPrefix=` is on by default). When
//! stderr is the journal stream ([`stderr_is_journal`]), [`Stderr`] puts the
//! prefix of the event's level in front of every line it writes, so
//! `journalctl -p warning` shows warnings and errors. Elsewhere lines go out
//! unchanged.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// True when stderr is the stream systemd connected to the journal: the
/// device and inode in `JOURNAL_STREAM` (`DEV:INODE`, set by systemd for
/// `StandardError=journal`) are stderr's own. A child that inherited the
/// variable but writes elsewhere (`imagegc once 2>file` in a unit's shell)
/// gets no prefixes.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// The syslog priority journald should file a line of `level` under:
/// error 3, warning 4, info 6, debug and trace 7.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Puts `<N>` in front of every line of `text`.
pub fn prefix_lines(priority: u8, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for line in text.split_inclusive('\n') {
        out.push('<');
        out.push(char::from(b'0' + priority.min(7)));
        out.push('>');
        out.push_str(line);
    }
    out
}

/// Writes `text` (one or more lines) to stderr at `level`: prefixed when
/// stderr is the journal, as is otherwise. For messages printed outside
/// `tracing` (the policy file's errors, the final error of a command).
pub fn eprint(journal: bool, level: Level, text: &str) {
    let mut text = text.trim_end_matches('\n').to_string();
    text.push('\n');
    if journal {
        text = prefix_lines(priority(level), &text);
    }
    // Nothing sensible is left to do when stderr itself fails.
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// The `tracing-subscriber` writer: stderr, with level prefixes when
/// `journal` is true.
#[derive(Debug, Clone, Copy)]
pub struct Stderr {
    /// Prefix every line with its level's priority.
    pub journal: bool,
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter::new(self.journal.then_some(priority(Level::INFO)))
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> EventWriter {
        EventWriter::new(self.journal.then(|| priority(*meta.level())))
    }
}

/// Collects one event's text and writes it, prefixed line by line, when
/// dropped: a message with line breaks in it (a policy file's errors) still
/// reaches the journal at its level on every line.
#[derive(Debug)]
pub struct EventWriter {
    /// `None`: write straight through.
    priority: Option<u8>,
    buf: Vec<u8>,
}

impl EventWriter {
    fn new(priority: Option<u8>) -> Self {
        Self {
            priority,
            buf: Vec::new(),
        }
    }

    fn emit(&mut self) -> io::Result<()> {
        let Some(priority) = self.priority else {
            return Ok(());
        };
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buf);
        let out = prefix_lines(priority, &text);
        self.buf.clear();
        io::stderr().lock().write_all(out.as_bytes())
    }
}

impl Write for EventWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.priority.is_none() {
            return io::stderr().write(data);
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.priority.is_none() {
            return io::stderr().flush();
        }
        // Only whole lines: a flush in the middle of an event must not put a
        // prefix in the middle of a line.
        if self.buf.ends_with(b"\n") {
            self.emit()?;
        }
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.emit();
    }
}

/// Installs the process's log subscriber: the level from `-q`/`-v` (or
/// `IMAGEGC_LOG`), text or JSON lines on stderr, with journald's level
/// prefixes and without timestamps or colours under systemd.
pub fn init(cli: &crate::cli::Cli) {
    use crate::cli::LogFormat;
    use tracing_subscriber::EnvFilter;
    let level = if cli.quiet {
        "warn"
    } else {
        match cli.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_env("IMAGEGC_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("imagegc={level},warn")));
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr { journal })
        .with_target(false);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text if journal => builder.without_time().with_ansi(false).init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_gets_the_prefix_of_its_level() {
        assert_eq!(prefix_lines(3, "a\nb\n"), "<3>a\n<3>b\n");
        assert_eq!(prefix_lines(4, "one"), "<4>one");
        assert_eq!(
            [
                Level::ERROR,
                Level::WARN,
                Level::INFO,
                Level::DEBUG,
                Level::TRACE
            ]
            .map(priority),
            [3, 4, 6, 7, 7]
        );
    }
}
