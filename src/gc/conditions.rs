//! One evaluator per policy condition.
//!
//! [`check`] answers, for one condition and one target, whether the condition
//! holds and the figures behind the answer ([`Fact`]). The planner decides
//! with it, names removals from the facts that held, and `imagegc explain`
//! shows the same checks, so `explain` cannot disagree with a pass. A new
//! condition is one [`Condition`] variant and one arm of [`check`].

use std::borrow::Cow;

use chrono::{DateTime, TimeDelta, Utc};

use super::plan::{Reason, Usage};
use super::targets::{Slots, Target, TargetSet};
use crate::inventory::{LastUsedSource, SnapContainer, Snapshot};
use crate::model::repository_of;
use crate::policy::{
    CacheConditions, Conditions, ContainerConditions, DiskPressure, InodePressure, Threshold,
};

/// One condition a policy sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// `unused_for`: last used longer ago than this.
    UnusedFor(TimeDelta),
    /// `older_than`: created longer ago than this.
    OlderThan(TimeDelta),
    /// `keep_most_recent`: not among this many newest of its repository.
    KeepMostRecent(usize),
    /// `disk_high`/`disk_low`: usage at or above the high watermark.
    DiskHigh(DiskPressure),
    /// `inodes_high`/`inodes_low`: inode use at or above the high watermark.
    InodesHigh(InodePressure),
}

impl Condition {
    /// The conditions a rule sets, in a fixed order (the order reasons are
    /// told in): `unused_for`, `older_than`, `keep_most_recent`, disk,
    /// inodes.
    pub fn of(conditions: &Conditions) -> impl Iterator<Item = Condition> {
        [
            conditions
                .unused_for
                .map(|d| Self::UnusedFor(std_to_delta(d))),
            conditions
                .older_than
                .map(|d| Self::OlderThan(std_to_delta(d))),
            conditions.keep_most_recent.map(Self::KeepMostRecent),
            conditions.disk.map(Self::DiskHigh),
            conditions.inodes.map(Self::InodesHigh),
        ]
        .into_iter()
        .flatten()
    }

    /// The condition's key in the policy file (`disk_high` for the disk
    /// pair, `inodes_high` for the inode pair).
    pub fn key(&self) -> &'static str {
        match self {
            Self::UnusedFor(_) => "unused_for",
            Self::OlderThan(_) => "older_than",
            Self::KeepMostRecent(_) => "keep_most_recent",
            Self::DiskHigh(_) => "disk_high",
            Self::InodesHigh(_) => "inodes_high",
        }
    }

    /// Whether this is a watermark pair (disk or inodes), which the disk
    /// phase checks once for the whole table, not per target.
    pub fn is_pressure(&self) -> bool {
        matches!(self, Self::DiskHigh(_) | Self::InodesHigh(_))
    }
}

/// One condition a `[[build_cache]]` policy sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CacheCondition {
    /// `unused_for`: `LastUsedAt` (`CreatedAt` when never used) longer ago
    /// than this.
    UnusedFor(TimeDelta),
    /// `older_than`: `CreatedAt` longer ago than this.
    OlderThan(TimeDelta),
    /// `keep_storage`: not among the most recently used selected records
    /// that fit in this many bytes.
    KeepStorage(u64),
    /// `disk_high`/`disk_low`: usage at or above the high watermark.
    DiskHigh(DiskPressure),
    /// `inodes_high`/`inodes_low`: inode use at or above the high watermark.
    InodesHigh(InodePressure),
}

impl CacheCondition {
    /// The conditions a rule sets, in a fixed order (the order reasons are
    /// told in): `unused_for`, `older_than`, `keep_storage`, disk, inodes.
    pub fn of(conditions: &CacheConditions) -> impl Iterator<Item = CacheCondition> {
        [
            conditions
                .unused_for
                .map(|d| Self::UnusedFor(std_to_delta(d))),
            conditions
                .older_than
                .map(|d| Self::OlderThan(std_to_delta(d))),
            conditions.keep_storage.map(Self::KeepStorage),
            conditions.disk.map(Self::DiskHigh),
            conditions.inodes.map(Self::InodesHigh),
        ]
        .into_iter()
        .flatten()
    }

    /// The condition's key in the policy file (`disk_high` for the disk
    /// pair, `inodes_high` for the inode pair).
    pub fn key(&self) -> &'static str {
        match self {
            Self::UnusedFor(_) => "unused_for",
            Self::OlderThan(_) => "older_than",
            Self::KeepStorage(_) => "keep_storage",
            Self::DiskHigh(_) => "disk_high",
            Self::InodesHigh(_) => "inodes_high",
        }
    }
}

/// One condition a `[[containers]]` policy sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerCondition {
    /// `exited_for`: finished (created, for a never-started container)
    /// longer ago than this.
    ExitedFor(TimeDelta),
    /// `older_than`: created longer ago than this.
    OlderThan(TimeDelta),
}

impl ContainerCondition {
    /// The conditions a rule sets, in a fixed order (the order reasons are
    /// told in): `exited_for`, `older_than`.
    pub fn of(conditions: &ContainerConditions) -> impl Iterator<Item = ContainerCondition> {
        [
            conditions
                .exited_for
                .map(|d| Self::ExitedFor(std_to_delta(d))),
            conditions
                .older_than
                .map(|d| Self::OlderThan(std_to_delta(d))),
        ]
        .into_iter()
        .flatten()
    }

    /// The condition's key in the policy file.
    pub fn key(&self) -> &'static str {
        match self {
            Self::ExitedFor(_) => "exited_for",
            Self::OlderThan(_) => "older_than",
        }
    }
}

/// When a stopped container stopped, and from what: `finished`
/// (`State.FinishedAt`), or `created` for one that never finished (a
/// never-started `created` container; one that ran but has no readable
/// finish time is never removed, `gc::containers`). What `exited_for` and
/// `[safety] min_age` count from.
pub fn container_stopped_at(c: &SnapContainer) -> (DateTime<Utc>, &'static str) {
    match c.details.as_ref().and_then(|d| d.finished_at) {
        Some(t) if c.container.state != "created" => (t, "finished"),
        _ => (c.container.created, "created"),
    }
}

/// Check one `[[containers]]` condition against container `c`.
pub(super) fn check_container(
    now: DateTime<Utc>,
    condition: ContainerCondition,
    c: &SnapContainer,
) -> Check<'static> {
    let (holds, fact) = match condition {
        ContainerCondition::ExitedFor(limit) => {
            let (at, since) = container_stopped_at(c);
            let idle = now - at;
            (idle > limit, Fact::ExitedFor { idle, limit, since })
        }
        ContainerCondition::OlderThan(limit) => {
            let age = now - c.container.created;
            (age > limit, Fact::OlderThan { age, limit })
        }
    };
    Check {
        condition: condition.key(),
        holds,
        fact,
    }
}

/// One condition checked against one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Check<'s> {
    /// The condition's key: `unused_for`, `older_than`, `keep_most_recent`,
    /// `keep_storage`, `disk_high`, `inodes_high`.
    pub condition: &'static str,
    /// Whether it holds now.
    pub holds: bool,
    /// The figures behind the answer.
    pub fact: Fact<'s>,
}

/// A check that owns its figures, as `explain` keeps them.
pub type ConditionCheck = Check<'static>;

impl Check<'_> {
    /// The same check, owning its figures.
    pub fn into_owned(self) -> ConditionCheck {
        Check {
            condition: self.condition,
            holds: self.holds,
            fact: self.fact.into_owned(),
        }
    }
}

/// The figures behind a check.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact<'s> {
    /// Last used `idle` ago (from `source`); the policy says `limit`.
    UnusedFor {
        /// Since the last use.
        idle: TimeDelta,
        /// `unused_for`.
        limit: TimeDelta,
        /// Where the last-use time came from.
        source: LastUsedSource,
    },
    /// A container finished (or, never started, was created) `idle` ago;
    /// the policy says `limit`.
    ExitedFor {
        /// Since it finished (or was created).
        idle: TimeDelta,
        /// `exited_for`.
        limit: TimeDelta,
        /// `finished` or `created`.
        since: &'static str,
    },
    /// Created `age` ago; the policy says `limit`.
    OlderThan {
        /// Since created.
        age: TimeDelta,
        /// `older_than`.
        limit: TimeDelta,
    },
    /// The tag's rank among the selected tags of its repository.
    Rank {
        /// `keep_most_recent`.
        n: usize,
        /// The repository.
        repository: Cow<'s, str>,
        /// True when it is among the `n` newest (so kept).
        among_newest: bool,
    },
    /// An untagged image has no repository to rank in.
    Unranked,
    /// A build-cache record's place in its policy's `keep_storage`: the
    /// selected records used more recently than it hold `newer` bytes.
    Storage {
        /// `keep_storage`.
        keep: u64,
        /// Bytes (`Size`) of the more recently used selected records.
        newer: u64,
        /// True when it still fits in `keep` with them (so kept).
        kept: bool,
    },
    /// The disk is unknown (remote engine).
    DiskUnknown,
    /// Usage before any removal of this pass, against the watermarks.
    Disk {
        /// Usage in the watermarks' unit.
        usage: Usage,
        /// `disk_high`/`disk_low`.
        disk: DiskPressure,
    },
    /// The filesystem reports no inode counts (`f_files` 0: btrfs, some
    /// FUSE filesystems): inode watermarks are skipped.
    NoInodeCounts,
    /// Inode use before any removal of this pass, against the watermarks.
    Inodes {
        /// Share of the inodes in use, 0.0..=1.0.
        usage: f64,
        /// `inodes_high`/`inodes_low`.
        inodes: InodePressure,
    },
}

impl Fact<'_> {
    /// The same fact, owning its figures.
    pub fn into_owned(self) -> Fact<'static> {
        match self {
            Fact::UnusedFor {
                idle,
                limit,
                source,
            } => Fact::UnusedFor {
                idle,
                limit,
                source,
            },
            Fact::ExitedFor { idle, limit, since } => Fact::ExitedFor { idle, limit, since },
            Fact::OlderThan { age, limit } => Fact::OlderThan { age, limit },
            Fact::Rank {
                n,
                repository,
                among_newest,
            } => Fact::Rank {
                n,
                repository: Cow::Owned(repository.into_owned()),
                among_newest,
            },
            Fact::Unranked => Fact::Unranked,
            Fact::Storage { keep, newer, kept } => Fact::Storage { keep, newer, kept },
            Fact::DiskUnknown => Fact::DiskUnknown,
            Fact::Disk { usage, disk } => Fact::Disk { usage, disk },
            Fact::NoInodeCounts => Fact::NoInodeCounts,
            Fact::Inodes { usage, inodes } => Fact::Inodes { usage, inodes },
        }
    }

    /// What a removal says about a condition that held; `None` for the disk
    /// and inode conditions (a pressure removal tells the pressure its own way) and for
    /// facts that never hold.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Fact::UnusedFor {
                idle,
                limit,
                source,
            } => Some(Reason::UnusedFor {
                idle: *idle,
                limit: *limit,
                source: *source,
            }),
            Fact::ExitedFor { idle, limit, since } => Some(Reason::ExitedFor {
                idle: *idle,
                limit: *limit,
                since,
            }),
            Fact::OlderThan { age, limit } => Some(Reason::OlderThan {
                age: *age,
                limit: *limit,
            }),
            Fact::Rank {
                n,
                repository,
                among_newest: false,
            } => Some(Reason::NotAmongNewest {
                n: *n,
                repository: repository.to_string(),
            }),
            Fact::Storage {
                keep,
                newer,
                kept: false,
            } => Some(Reason::KeepStorage {
                keep: *keep,
                newer: *newer,
            }),
            _ => None,
        }
    }
}

/// What a check reads besides the condition and the target.
pub(super) struct Context<'s, 'k> {
    /// The snapshot.
    pub snap: &'s Snapshot,
    /// The instant of the plan.
    pub now: DateTime<Utc>,
    /// The tags the rule's `keep_most_recent` keeps.
    pub kept_recent: &'k TargetSet,
    /// The snapshot's candidates, for `kept_recent`.
    pub slots: &'k Slots,
    /// [`Snapshot::last_used`] per image.
    pub last_used: &'k [(DateTime<Utc>, LastUsedSource)],
}

/// Check one condition against one target. Allocation-free: it runs for
/// every candidate and rule.
pub(super) fn check<'s>(cx: &Context<'s, '_>, condition: Condition, target: Target) -> Check<'s> {
    let snap = cx.snap;
    let i = target.image();
    let (holds, fact) = match condition {
        Condition::UnusedFor(limit) => {
            let (last, source) = cx.last_used[i];
            let idle = cx.now - last;
            (
                idle > limit,
                Fact::UnusedFor {
                    idle,
                    limit,
                    source,
                },
            )
        }
        Condition::OlderThan(limit) => {
            let age = cx.now - snap.images[i].created;
            (age > limit, Fact::OlderThan { age, limit })
        }
        Condition::KeepMostRecent(n) => match target {
            Target::Tag(_, t) => {
                let among_newest = cx.kept_recent.contains(cx.slots, target);
                (
                    !among_newest,
                    Fact::Rank {
                        n,
                        repository: Cow::Borrowed(repository_of(&snap.images[i].tags[t])),
                        among_newest,
                    },
                )
            }
            // Untagged images have no repository to rank in: never removed
            // by a rule that keeps the most recent.
            Target::Untagged(_) => (false, Fact::Unranked),
        },
        Condition::DiskHigh(disk) => disk_high(snap, disk),
        Condition::InodesHigh(inodes) => inodes_high(snap, inodes),
    };
    Check {
        condition: condition.key(),
        holds,
        fact,
    }
}

/// What a policy's byte watermarks count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Basis {
    /// Unique image layer bytes (`[[policy]]`).
    Images,
    /// Build-cache bytes, [`super::ledger::cache_bytes`] (`[[build_cache]]`).
    Cache,
}

/// A `[[build_cache]]` policy's precomputed view of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StorageRank {
    /// Bytes of the more recently used selected records.
    pub newer: u64,
    /// Fits in `keep_storage` with them.
    pub kept: bool,
}

/// What a record check reads besides the condition and the record.
pub(super) struct RecordContext<'s, 'k> {
    /// The snapshot.
    pub snap: &'s Snapshot,
    /// The instant of the plan.
    pub now: DateTime<Utc>,
    /// Per record, its `keep_storage` rank (`None`: not selected, or the
    /// rule sets no `keep_storage`).
    pub storage: &'k [Option<StorageRank>],
    /// Build-cache bytes before any removal (byte watermarks).
    pub cache_bytes: u64,
}

/// When record `r` was last used, and from where: [`LastUsedSource::Build`]
/// for a `LastUsedAt`, [`LastUsedSource::Created`] when never used.
pub(super) fn record_last_used(snap: &Snapshot, r: usize) -> (DateTime<Utc>, LastUsedSource) {
    match snap.cache.last_used(r) {
        (t, true) => (t, LastUsedSource::Build),
        (t, false) => (t, LastUsedSource::Created),
    }
}

/// Check one `[[build_cache]]` condition against record `r`.
pub(super) fn check_record<'s>(
    cx: &RecordContext<'s, '_>,
    condition: CacheCondition,
    r: usize,
) -> Check<'s> {
    let (holds, fact) = match condition {
        CacheCondition::UnusedFor(limit) => {
            let (last, source) = record_last_used(cx.snap, r);
            let idle = cx.now - last;
            (
                idle > limit,
                Fact::UnusedFor {
                    idle,
                    limit,
                    source,
                },
            )
        }
        CacheCondition::OlderThan(limit) => {
            let age = cx.now - cx.snap.cache.records[r].created;
            (age > limit, Fact::OlderThan { age, limit })
        }
        CacheCondition::KeepStorage(keep) => {
            // A record the rule does not select is not ranked: kept.
            let rank = cx.storage.get(r).copied().flatten().unwrap_or(StorageRank {
                newer: 0,
                kept: true,
            });
            (
                !rank.kept,
                Fact::Storage {
                    keep,
                    newer: rank.newer,
                    kept: rank.kept,
                },
            )
        }
        CacheCondition::DiskHigh(disk) => disk_high_of(cx.snap, disk, Basis::Cache, cx.cache_bytes),
        CacheCondition::InodesHigh(inodes) => inodes_high(cx.snap, inodes),
    };
    Check {
        condition: condition.key(),
        holds,
        fact,
    }
}

/// The disk condition, which looks at the whole snapshot, not a target:
/// whether usage before any removal of this pass is at or above `disk_high`.
pub(super) fn disk_high(snap: &Snapshot, disk: DiskPressure) -> (bool, Fact<'static>) {
    disk_high_of(snap, disk, Basis::Images, 0)
}

/// [`disk_high`] for a policy whose byte watermarks count `basis`
/// (`cache_bytes`: the build cache's bytes, read for [`Basis::Cache`]).
pub(super) fn disk_high_of(
    snap: &Snapshot,
    disk: DiskPressure,
    basis: Basis,
    cache_bytes: u64,
) -> (bool, Fact<'static>) {
    let now = match (disk.high, basis) {
        (Threshold::Bytes(_), Basis::Cache) => Some(cache_bytes as f64),
        _ => usage_now(snap, disk.high),
    };
    match now {
        None => (false, Fact::DiskUnknown),
        Some(v) => (
            at_or_above(v, disk.high),
            Fact::Disk {
                usage: Usage::like(v, disk.high),
                disk,
            },
        ),
    }
}

/// The inode condition, which looks at the whole snapshot like the disk
/// one: whether the share of inodes in use before any removal of this pass
/// is at or above `inodes_high`. Never holds on an unknown disk
/// ([`Fact::DiskUnknown`]) or one that reports no inode counts
/// ([`Fact::NoInodeCounts`]).
pub(super) fn inodes_high(snap: &Snapshot, inodes: InodePressure) -> (bool, Fact<'static>) {
    let Some(disk) = snap.disk else {
        return (false, Fact::DiskUnknown);
    };
    match disk.inodes_used_ratio() {
        None => (false, Fact::NoInodeCounts),
        Some(usage) => (
            at_or_above(usage, Threshold::Ratio(inodes.high)),
            Fact::Inodes { usage, inodes },
        ),
    }
}

/// Usage before any removal of this pass, in the threshold's unit; `None`
/// when the disk is unknown (remote engine).
fn usage_now(snap: &Snapshot, like: Threshold) -> Option<f64> {
    match like {
        Threshold::Ratio(_) => snap.disk.map(|d| d.used_ratio()),
        Threshold::Bytes(_) => Some(snap.image_bytes() as f64),
    }
}

fn at_or_above(value: f64, threshold: Threshold) -> bool {
    match threshold {
        Threshold::Ratio(h) => value >= h - 1e-12,
        Threshold::Bytes(h) => value >= h as f64,
    }
}

pub(super) fn at_or_below(value: f64, threshold: Threshold) -> bool {
    match threshold {
        Threshold::Ratio(r) => value <= r + 1e-12,
        Threshold::Bytes(b) => value <= b as f64,
    }
}

pub(super) fn std_to_delta(d: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}
