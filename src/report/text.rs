//! Text for people: durations, sizes, and the `Display` of every reason,
//! safety rule, note and condition check the planner returns. The words are
//! a stable interface too (logs, tables, `explain`, the JSON `reason`
//! fields), so they are written here once.

use std::fmt::{self, Display, Formatter};

use chrono::TimeDelta;

use crate::gc::conditions::{Check, Fact};
use crate::gc::plan::{KeptBecause, Note, Reason, Reasons, Usage};
use crate::inventory::LastUsedSource;
use crate::model::short_id;
use crate::policy::Threshold;
use crate::run::{PassOutcome, PassSummary, PassWork};

/// A compact duration: `12d`, `3d 4h`, `5h 12m`, `40s`.
///
/// ```
/// use chrono::TimeDelta;
/// use imagegc::report::text::human_duration;
/// assert_eq!(human_duration(TimeDelta::days(12)), "12d");
/// assert_eq!(human_duration(TimeDelta::hours(76)), "3d 4h");
/// assert_eq!(human_duration(TimeDelta::minutes(312)), "5h 12m");
/// assert_eq!(human_duration(TimeDelta::seconds(40)), "40s");
/// ```
pub fn human_duration(d: TimeDelta) -> String {
    let secs = d.num_seconds().max(0);
    let (days, hours, mins) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (days, hours, mins) {
        (d, 0, _) if d > 0 => format!("{d}d"),
        (d, h, _) if d > 0 && d < 10 => format!("{d}d {h}h"),
        (d, _, _) if d > 0 => format!("{d}d"),
        (_, h, 0) if h > 0 => format!("{h}h"),
        (_, h, m) if h > 0 => format!("{h}h {m}m"),
        (_, _, m) if m > 0 => format!("{m}m"),
        _ => format!("{secs}s"),
    }
}

/// Human size, IEC units.
pub fn size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

impl Display for Usage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Ratio(r) => write!(f, "{:.1}%", r * 100.0),
            Self::Bytes(b) => f.write_str(&size(b)),
        }
    }
}

impl Display for Reason {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnusedFor {
                idle,
                limit,
                source,
            } => write!(
                f,
                "unused for {} (unused_for {}; last use: {})",
                human_duration(*idle),
                human_duration(*limit),
                source.as_str()
            ),
            Self::ExitedFor { idle, limit, since } => write!(
                f,
                "{} for {} (exited_for {})",
                if *since == "created" {
                    "never started, created"
                } else {
                    "exited"
                },
                human_duration(*idle),
                human_duration(*limit)
            ),
            Self::OlderThan { age, limit } => write!(
                f,
                "created {} ago (older_than {})",
                human_duration(*age),
                human_duration(*limit)
            ),
            Self::NotAmongNewest { n, repository } => write!(
                f,
                "not among the {n} newest of {repository} (keep_most_recent {n})"
            ),
            Self::Dangling => f.write_str("dangling"),
            Self::KeepStorage { keep, newer } => write!(
                f,
                "beyond keep_storage {}: newer records hold {}",
                size(*keep),
                size(*newer)
            ),
            Self::DiskPressure { usage, high } => {
                write!(f, "usage {usage} at or above disk_high {high}")
            }
            Self::InodePressure { usage, high } => write!(
                f,
                "inodes {} at or above inodes_high {}",
                Usage::Ratio(*usage),
                Threshold::Ratio(*high)
            ),
            Self::LeastRecentlyUsed { idle, source } => write!(
                f,
                "least recently used (last use {} ago: {})",
                human_duration(*idle),
                source.as_str()
            ),
        }
    }
}

impl Display for Reasons {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (n, reason) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(", ")?;
            }
            Display::fmt(reason, f)?;
        }
        Ok(())
    }
}

impl Display for KeptBecause {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::InUse { container, state } => {
                write!(f, "in use by container {} ({state})", short_id(container))
            }
            Self::ProtectLabel { label } => write!(f, "protected by label {label}"),
            Self::ProtectGlob { pattern } => write!(f, "protected by glob {pattern}"),
            Self::TooYoung {
                min_age,
                since,
                age,
            } => write!(
                f,
                "younger than min_age {} ({since} {} ago)",
                human_duration(*min_age),
                human_duration(*age)
            ),
            Self::RemovalLimit { max } => write!(f, "max_removals_per_run {max} reached"),
            Self::WholeImage { references } => write!(
                f,
                "the engine deletes whole images and this one has {references} references"
            ),
            Self::BuildInUse => f.write_str("in use by a running build"),
            Self::ContainerActive { state } => write!(f, "the container is {state}"),
            Self::RestartPolicy { policy } => {
                write!(f, "restart policy {policy} brings it back")
            }
            Self::UsedByContainer { container, how } => match *how {
                "network" => write!(f, "container {} joins its network", short_id(container)),
                _ => write!(
                    f,
                    "container {} mounts its volumes (--volumes-from)",
                    short_id(container)
                ),
            },
            Self::Compose { project } => write!(
                f,
                "managed by Compose project {project} (a policy must select \
                 com.docker.compose.project to remove it)"
            ),
            Self::ProtectContainer { pattern } => {
                write!(f, "protected by container glob {pattern}")
            }
            Self::HasChildren { children } => write!(
                f,
                "{children} record{} made on top of it {} kept",
                if *children == 1 { "" } else { "s" },
                if *children == 1 { "is" } else { "are" }
            ),
        }
    }
}

impl Display for Note {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::RemovalLimit { max } => write!(
                f,
                "max_removals_per_run {max} reached; the rest waits for the next pass"
            ),
            Self::DiskUnknown { policy } => write!(
                f,
                "policy {policy}: disk usage of the engine's root dir is unknown (remote engine?); disk_high not evaluated"
            ),
            Self::BelowDiskHigh {
                policy,
                usage,
                high,
            } => write!(f, "policy {policy}: usage {usage} is below disk_high {high}"),
            Self::DiskPressure {
                policy,
                usage,
                high,
                removals,
                after,
                low,
            } => {
                write!(
                    f,
                    "policy {policy}: usage {usage} at or above disk_high {high}; {removals} removals bring it to "
                )?;
                if let Some(after) = after {
                    Display::fmt(after, f)?;
                }
                write!(f, " (disk_low {low})")
            }
            Self::InodesUnknown { policy } => write!(
                f,
                "policy {policy}: inode use of the engine's root dir is unknown (remote engine?); inodes_high not evaluated"
            ),
            Self::NoInodeCounts { policy } => write!(
                f,
                "policy {policy}: the filesystem holding the engine's root dir reports no inode counts (btrfs, some FUSE filesystems); inodes_high/inodes_low skipped"
            ),
            Self::BelowInodesHigh {
                policy,
                usage,
                high,
            } => write!(
                f,
                "policy {policy}: inodes {} is below inodes_high {}",
                Usage::Ratio(*usage),
                Threshold::Ratio(*high)
            ),
            Self::InodePressure {
                policy,
                usage,
                high,
                removals,
                after,
                low,
            } => {
                write!(
                    f,
                    "policy {policy}: inodes {} at or above inodes_high {}; {removals} removals bring it to ",
                    Usage::Ratio(*usage),
                    Threshold::Ratio(*high)
                )?;
                if let Some(after) = after {
                    write!(f, "an estimated {}", Usage::Ratio(*after))?;
                }
                write!(
                    f,
                    " (inodes_low {}; inodes freed are estimated in proportion to bytes freed)",
                    Threshold::Ratio(*low)
                )
            }
            Self::NoBuildCache { policies } => write!(
                f,
                "the engine has no build cache (or it was not read); build_cache policies skipped: {}",
                policies.join(", ")
            ),
        }
    }
}

/// The detail `explain` shows for a condition: the figures behind the answer.
impl Display for Fact<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnusedFor {
                idle,
                limit,
                source: LastUsedSource::Build,
            } => write!(
                f,
                "last used by a build {} ago; unused_for {}",
                human_duration(*idle),
                human_duration(*limit)
            ),
            Self::UnusedFor {
                idle,
                limit,
                source,
            } => write!(
                f,
                "last used {} ago ({}); unused_for {}",
                human_duration(*idle),
                source.as_str(),
                human_duration(*limit)
            ),
            Self::ExitedFor { idle, limit, since } => write!(
                f,
                "{} {} ago; exited_for {}",
                if *since == "created" {
                    "never started, created"
                } else {
                    "exited"
                },
                human_duration(*idle),
                human_duration(*limit)
            ),
            Self::OlderThan { age, limit } => write!(
                f,
                "created {} ago; older_than {}",
                human_duration(*age),
                human_duration(*limit)
            ),
            Self::Rank {
                n,
                repository,
                among_newest: true,
            } => write!(f, "among the {n} newest of {repository}: kept"),
            Self::Rank {
                n,
                repository,
                among_newest: false,
            } => write!(f, "not among the {n} newest of {repository}"),
            Self::Unranked => f.write_str("untagged images have no repository to rank in"),
            Self::Storage {
                keep,
                newer,
                kept: true,
            } => write!(
                f,
                "fits in keep_storage {} with the more recently used records ({}): kept",
                size(*keep),
                size(*newer)
            ),
            Self::Storage {
                keep,
                newer,
                kept: false,
            } => write!(
                f,
                "beyond keep_storage {}: more recently used records hold {}",
                size(*keep),
                size(*newer)
            ),
            Self::DiskUnknown => f.write_str("disk usage unknown"),
            Self::Disk { usage, disk } => write!(
                f,
                "usage {usage} vs disk_high {} (then least recently used first down to disk_low {})",
                disk.high, disk.low
            ),
            Self::NoInodeCounts => {
                f.write_str("the filesystem reports no inode counts; inodes_high skipped")
            }
            Self::Inodes { usage, inodes } => write!(
                f,
                "inodes {} vs inodes_high {} (then least recently used first down to an estimated inodes_low {}, inodes freed taken in proportion to bytes freed)",
                Usage::Ratio(*usage),
                Threshold::Ratio(inodes.high),
                Threshold::Ratio(inodes.low)
            ),
        }
    }
}

/// `[x] key: detail`, as `explain` lists a policy's conditions.
impl Display for Check<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {}: {}",
            if self.holds { "x" } else { " " },
            self.condition,
            self.fact
        )
    }
}

// The words of a pass summary live here with the others (a `PassSummary` is
// made in `run`, its text at this edge).
impl PassSummary {
    /// The one-line status for `systemctl status`.
    pub fn status_line(&self) -> String {
        let at = self.finished.format("%H:%M");
        match (self.outcome, self.work) {
            (PassOutcome::Failed, _) | (_, None) => format!("last pass {at} failed"),
            (
                _,
                Some(PassWork::DryRun {
                    would_remove,
                    would_remove_records,
                    would_remove_containers,
                    would_free_bytes,
                }),
            ) => format!(
                "last pass {at} (dry run): would remove {}{}{}, free {}",
                containers_clause(would_remove_containers),
                super::table::count(would_remove, "reference", "references"),
                records_clause(would_remove_records),
                size(would_free_bytes)
            ),
            (
                outcome,
                Some(PassWork::Executed {
                    removed,
                    records_removed,
                    containers_removed,
                    reclaimed_bytes,
                    ..
                }),
            ) => format!(
                "last pass {at}: removed {}{}{}, freed {}{}",
                containers_clause(containers_removed),
                super::table::count(removed, "reference", "references"),
                records_clause(records_removed),
                size(reclaimed_bytes),
                match outcome {
                    PassOutcome::Success => String::new(),
                    other => format!(" ({other})"),
                }
            ),
        }
    }
}

/// `N containers, ` (before the references), or nothing for none: the
/// summaries of a host without container policies read as they always have.
pub fn containers_clause(containers: usize) -> String {
    if containers == 0 {
        String::new()
    } else {
        format!(
            "{}, ",
            super::table::count(containers, "container", "containers")
        )
    }
}

/// ` and N build-cache records`, or nothing for none: the summaries of a
/// host without build-cache policies read as they always have.
pub fn records_clause(records: usize) -> String {
    if records == 0 {
        String::new()
    } else {
        format!(
            " and {}",
            super::table::count(records, "build-cache record", "build-cache records")
        )
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;
    use crate::gc::plan::Usage;
    use crate::inventory::LastUsedSource;

    fn days(n: i64) -> TimeDelta {
        TimeDelta::days(n)
    }

    #[test]
    fn every_reason_reads_as_the_plan_table_has_always_printed_it() {
        let reasons = Reasons(vec![
            Reason::DiskPressure {
                usage: Usage::Ratio(0.9),
                high: Threshold::Ratio(0.85),
            },
            Reason::UnusedFor {
                idle: days(30),
                limit: days(7),
                source: LastUsedSource::Event,
            },
            Reason::OlderThan {
                age: TimeDelta::hours(76),
                limit: TimeDelta::hours(1),
            },
            Reason::NotAmongNewest {
                n: 3,
                repository: "ci/app".into(),
            },
            Reason::LeastRecentlyUsed {
                idle: days(12),
                source: LastUsedSource::Container,
            },
        ]);
        assert_eq!(
            reasons.to_string(),
            "usage 90.0% at or above disk_high 85%, \
             unused for 30d (unused_for 7d; last use: event), \
             created 3d 4h ago (older_than 1h), \
             not among the 3 newest of ci/app (keep_most_recent 3), \
             least recently used (last use 12d ago: container)"
        );
        assert_eq!(Reasons(vec![Reason::Dangling]).to_string(), "dangling");
        assert_eq!(Reasons::default().to_string(), "");
    }

    #[test]
    fn every_safety_rule_and_note_reads_as_before() {
        let two = NonZeroUsize::new(2).expect("2 is not zero");
        let cases = [
            (
                KeptBecause::InUse {
                    container: format!("sha256:{}", "3f2a1b2c3d4e".repeat(5)),
                    state: "exited".into(),
                }
                .to_string(),
                "in use by container 3f2a1b2c3d4e (exited)",
            ),
            (
                KeptBecause::ProtectLabel {
                    label: "tier=prod".into(),
                }
                .to_string(),
                "protected by label tier=prod",
            ),
            (
                KeptBecause::ProtectGlob {
                    pattern: "base/*".into(),
                }
                .to_string(),
                "protected by glob base/*",
            ),
            (
                KeptBecause::TooYoung {
                    min_age: TimeDelta::hours(1),
                    since: "first seen",
                    age: TimeDelta::minutes(12),
                }
                .to_string(),
                "younger than min_age 1h (first seen 12m ago)",
            ),
            (
                KeptBecause::RemovalLimit { max: two }.to_string(),
                "max_removals_per_run 2 reached",
            ),
            (
                KeptBecause::WholeImage { references: 3 }.to_string(),
                "the engine deletes whole images and this one has 3 references",
            ),
            (
                Note::RemovalLimit { max: two }.to_string(),
                "max_removals_per_run 2 reached; the rest waits for the next pass",
            ),
            (
                Note::BelowDiskHigh {
                    policy: "p".into(),
                    usage: Usage::Bytes(1024),
                    high: Threshold::Bytes(4096),
                }
                .to_string(),
                "policy p: usage 1.0 KiB is below disk_high 4.0 KiB",
            ),
            (
                Note::DiskPressure {
                    policy: "p".into(),
                    usage: Usage::Ratio(0.9),
                    high: Threshold::Ratio(0.85),
                    removals: 3,
                    after: None,
                    low: Threshold::Ratio(0.7),
                }
                .to_string(),
                "policy p: usage 90.0% at or above disk_high 85%; 3 removals bring it to  (disk_low 70%)",
            ),
            (
                Reason::InodePressure {
                    usage: 0.93,
                    high: 0.9,
                }
                .to_string(),
                "inodes 93.0% at or above inodes_high 90%",
            ),
            (
                Note::InodePressure {
                    policy: "p".into(),
                    usage: 0.93,
                    high: 0.9,
                    removals: 2,
                    after: Some(0.79),
                    low: 0.8,
                }
                .to_string(),
                "policy p: inodes 93.0% at or above inodes_high 90%; 2 removals bring it to an \
                 estimated 79.0% (inodes_low 80%; inodes freed are estimated in proportion to \
                 bytes freed)",
            ),
            (
                Note::BelowInodesHigh {
                    policy: "p".into(),
                    usage: 0.5,
                    high: 0.9,
                }
                .to_string(),
                "policy p: inodes 50.0% is below inodes_high 90%",
            ),
            (
                Note::NoInodeCounts { policy: "p".into() }.to_string(),
                "policy p: the filesystem holding the engine's root dir reports no inode counts \
                 (btrfs, some FUSE filesystems); inodes_high/inodes_low skipped",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn the_status_line_counts_build_cache_records_only_when_there_are_some() {
        use chrono::{TimeZone, Utc};
        use std::time::Duration;
        let at = Utc
            .with_ymd_and_hms(2026, 3, 1, 12, 30, 0)
            .single()
            .expect("a time");
        let summary = |work| PassSummary {
            trigger: crate::run::Trigger::Schedule,
            outcome: PassOutcome::Success,
            started: at,
            finished: at,
            duration: Duration::from_secs(1),
            work: Some(work),
        };
        let executed = |records_removed| PassWork::Executed {
            removed: 3,
            deleted_images: 2,
            failed: 0,
            skipped: 0,
            records_removed,
            records_not_deleted: 0,
            records_failed: 0,
            containers_removed: 0,
            containers_not_removed: 0,
            reclaimed_bytes: 2048,
            predicted_bytes: 2048,
            kept: 0,
        };
        assert_eq!(
            summary(executed(2)).status_line(),
            "last pass 12:30: removed 3 references and 2 build-cache records, freed 2.0 KiB"
        );
        assert_eq!(
            summary(executed(0)).status_line(),
            "last pass 12:30: removed 3 references, freed 2.0 KiB"
        );
        assert_eq!(
            summary(PassWork::DryRun {
                would_remove: 1,
                would_remove_records: 1,
                would_remove_containers: 0,
                would_free_bytes: 1024,
            })
            .status_line(),
            "last pass 12:30 (dry run): would remove 1 reference and 1 build-cache record, free 1.0 KiB"
        );
        assert_eq!(
            summary(PassWork::DryRun {
                would_remove: 1,
                would_remove_records: 0,
                would_remove_containers: 2,
                would_free_bytes: 1024,
            })
            .status_line(),
            "last pass 12:30 (dry run): would remove 2 containers, 1 reference, free 1.0 KiB"
        );
    }
}
