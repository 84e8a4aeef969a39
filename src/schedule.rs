//! Crontab expression → next fire time. Pure: no clock, no I/O.
//! (Stub: replaced by the full Vixie-semantics implementation.)

use chrono::{DateTime, Utc};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The expression as the user wrote it.
    pub text: String,
}

/// Why an expression was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ScheduleError(pub String);

impl Schedule {
    /// Parse a 5-field crontab, a 6-field (seconds first) expression, or an `@alias`.
    pub fn parse(expr: &str) -> Result<Self, ScheduleError> {
        Ok(Self { text: expr.to_string() })
    }

    /// The first fire time strictly after `after`, read in `tz`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
        let _ = (after, tz);
        None
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}
