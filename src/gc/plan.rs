//! What the planner decides, as data: removals with the facts behind them,
//! what safety kept and why, and notes. Nothing here is text; the words are
//! rendered at the edge by the `Display` impls in [`crate::report::text`],
//! and the JSON comes from the `Serialize` impls (durations in seconds).

use std::num::NonZeroUsize;

use chrono::TimeDelta;
use serde::{Serialize, Serializer};

use crate::inventory::LastUsedSource;
use crate::policy::Threshold;

/// What a pass would do.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Removals in execution order (children before parents).
    pub removals: Vec<Removal>,
    /// What a policy wanted to remove but a safety rule (or a limit) kept.
    pub kept: Vec<Kept>,
    /// Container removals, run before every image removal (a removed
    /// container unpins its image for the image removals after it).
    pub containers: Vec<ContainerRemoval>,
    /// Containers a policy wanted, kept by a safety rule.
    pub kept_containers: Vec<KeptContainer>,
    /// Build-cache record removals, run after every image removal, children
    /// before parents.
    pub records: Vec<RecordRemoval>,
    /// Build-cache records a policy wanted, kept by a safety rule.
    pub kept_records: Vec<KeptRecord>,
    /// Bytes the whole plan frees (containers, images and records).
    pub reclaim_bytes: u64,
    /// Facts about the plan worth a log line (inactive disk policies, limits).
    pub notes: Vec<Note>,
}

/// One removal.
#[derive(Debug, Clone, PartialEq)]
pub struct Removal {
    /// Snapshot index of the image.
    pub image: usize,
    /// `sha256:<hex>`.
    pub image_id: String,
    /// The tag removed, or `None` when an untagged image is removed by ID.
    pub reference: Option<String>,
    /// Name of the `[[policy]]` that removes it.
    pub policy: String,
    /// Why: the conditions that held.
    pub reason: Reasons,
    /// Bytes this removal frees when run in plan order.
    pub reclaim_bytes: u64,
    /// True when the engine deletes the image with this removal.
    pub deletes_image: bool,
    /// Names of the containers whose removal earlier in the plan unpinned
    /// the image (empty when no container used it).
    pub unpinned_by: Vec<String>,
}

impl Removal {
    /// What to pass to the engine: the tag, or the image ID.
    pub fn target(&self) -> &str {
        self.reference.as_deref().unwrap_or(&self.image_id)
    }
}

/// One stopped-container removal.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRemoval {
    /// Index into the snapshot's `containers`.
    pub container: usize,
    /// The container's full ID, what the engine is asked to remove.
    pub container_id: String,
    /// Its first name (without the `/`), for the report.
    pub name: String,
    /// Name of the `[[containers]]` policy that removes it.
    pub policy: String,
    /// Why: the conditions that held.
    pub reason: Reasons,
    /// Bytes this removal frees by itself: the writable layer (`SizeRw`).
    pub reclaim_bytes: u64,
    /// Images (snapshot indices) no container uses once this one and the
    /// container removals before it are done: what it unpins.
    pub unpins: Vec<usize>,
}

/// A container a policy would remove, kept by a safety rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptContainer {
    /// Index into the snapshot's `containers`.
    pub container: usize,
    /// The container's full ID.
    pub container_id: String,
    /// Its first name.
    pub name: String,
    /// The policy that wanted it.
    pub policy: String,
    /// The safety rule (or limit) that kept it.
    pub reason: KeptBecause,
}

/// One build-cache record removal.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRemoval {
    /// Index into the snapshot's `cache.records`.
    pub record: usize,
    /// The record ID, what the engine is asked to remove.
    pub record_id: String,
    /// Name of the `[[build_cache]]` policy that removes it.
    pub policy: String,
    /// Why: the conditions that held.
    pub reason: Reasons,
    /// Bytes this removal frees when run in plan order (0 for a shared
    /// record whose data an image still uses).
    pub reclaim_bytes: u64,
}

/// A build-cache record a policy would remove, kept by a safety rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptRecord {
    /// Index into the snapshot's `cache.records`.
    pub record: usize,
    /// The record ID.
    pub record_id: String,
    /// The policy that wanted it.
    pub policy: String,
    /// The safety rule (or limit) that kept it.
    pub reason: KeptBecause,
}

/// A reference or image a policy would remove, kept by a safety rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Snapshot index of the image.
    pub image: usize,
    /// `sha256:<hex>`.
    pub image_id: String,
    /// The tag, or `None` for an untagged image.
    pub reference: Option<String>,
    /// The policy that wanted it.
    pub policy: String,
    /// The safety rule (or limit) that kept it.
    pub reason: KeptBecause,
}

/// The facts behind one removal, in the order they are told: for an
/// age/usage policy its conditions that held (or [`Reason::Dangling`] when
/// the policy sets none); for a disk policy the pressure, those conditions
/// and the last use.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Reasons(pub Vec<Reason>);

/// One fact behind a removal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// `unused_for` held: last used `idle` ago, longer than `limit`.
    UnusedFor {
        /// Since the last use.
        #[serde(rename = "idle_seconds", serialize_with = "seconds")]
        idle: TimeDelta,
        /// The policy's `unused_for`.
        #[serde(rename = "limit_seconds", serialize_with = "seconds")]
        limit: TimeDelta,
        /// Where the last-use time came from.
        source: LastUsedSource,
    },
    /// `exited_for` held: the container finished `idle` ago (or, never
    /// started, was created then), longer than `limit`.
    ExitedFor {
        /// Since it finished (or was created, if never started).
        #[serde(rename = "idle_seconds", serialize_with = "seconds")]
        idle: TimeDelta,
        /// The policy's `exited_for`.
        #[serde(rename = "limit_seconds", serialize_with = "seconds")]
        limit: TimeDelta,
        /// `finished` or `created`.
        since: &'static str,
    },
    /// `older_than` held: created `age` ago, longer than `limit`.
    OlderThan {
        /// Since the image was created.
        #[serde(rename = "age_seconds", serialize_with = "seconds")]
        age: TimeDelta,
        /// The policy's `older_than`.
        #[serde(rename = "limit_seconds", serialize_with = "seconds")]
        limit: TimeDelta,
    },
    /// `keep_most_recent` held: the tag is not among the `n` newest of its
    /// repository.
    NotAmongNewest {
        /// The policy's `keep_most_recent`.
        n: usize,
        /// The repository the tags are ranked in.
        repository: String,
    },
    /// An untagged image removed by a policy that sets no condition.
    Dangling,
    /// `keep_storage` held: the more recently used selected records already
    /// fill `keep` bytes (`newer` of them), so this one is not kept.
    KeepStorage {
        /// The policy's `keep_storage`.
        keep: u64,
        /// Bytes of the more recently used selected records.
        newer: u64,
    },
    /// A disk policy acts: usage at the start of the pass is at or above
    /// `high`.
    DiskPressure {
        /// Usage before any removal of this pass.
        usage: Usage,
        /// The policy's `disk_high`.
        #[serde(serialize_with = "threshold")]
        high: Threshold,
    },
    /// An inode policy acts: the share of inodes in use at the start of the
    /// pass is at or above `high`.
    InodePressure {
        /// Share of the inodes in use before any removal of this pass.
        #[serde(serialize_with = "ratio")]
        usage: f64,
        /// The policy's `inodes_high`.
        #[serde(serialize_with = "ratio")]
        high: f64,
    },
    /// The disk policy takes the least recently used first.
    LeastRecentlyUsed {
        /// Since the last use.
        #[serde(rename = "idle_seconds", serialize_with = "seconds")]
        idle: TimeDelta,
        /// Where the last-use time came from.
        source: LastUsedSource,
    },
}

/// Why a safety rule (or the removal limit) kept what a policy wanted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeptBecause {
    /// A container, in any state, uses the image.
    InUse {
        /// The container's full ID.
        container: String,
        /// Its state (`running`, `exited`, `created`, …).
        state: String,
    },
    /// The image carries a label `[safety] protect_labels` names.
    ProtectLabel {
        /// The matching `protect_labels` entry (`key` or `key=value`).
        label: String,
    },
    /// A reference matches a `[safety] protect` glob.
    ProtectGlob {
        /// The glob as written.
        pattern: String,
    },
    /// The image is younger than `min_age`.
    #[serde(rename = "min_age")]
    TooYoung {
        /// `[safety] min_age`.
        #[serde(rename = "min_age_seconds", serialize_with = "seconds")]
        min_age: TimeDelta,
        /// Where the grace period starts: `created`, `last tagged` or
        /// `first seen` for an image; `finished` (or `created`, never
        /// started) for a container.
        since: &'static str,
        /// Time since then.
        #[serde(rename = "age_seconds", serialize_with = "seconds")]
        age: TimeDelta,
    },
    /// `max_removals_per_run` was reached.
    RemovalLimit {
        /// The limit.
        max: NonZeroUsize,
    },
    /// The engine deletes the whole image whatever reference names it
    /// (`Capabilities::untags_single_reference` is false), and the image has
    /// other references: removing this one would take them too, so only an
    /// image's sole reference is removed on such an engine.
    WholeImage {
        /// How many references the image has.
        references: usize,
    },
    /// A running build holds the build-cache record (`InUse`).
    BuildInUse,
    /// The container is not stopped: `running`, `paused`, `restarting` or
    /// `removing`.
    ContainerActive {
        /// Its state.
        state: String,
    },
    /// The container's restart policy brings it back (`always`,
    /// `unless-stopped`).
    RestartPolicy {
        /// The restart policy's name.
        policy: String,
    },
    /// Another container uses this one (`--volumes-from`,
    /// `network_mode: container:…`).
    UsedByContainer {
        /// The other container's full ID.
        container: String,
        /// `volumes_from` or `network`.
        how: &'static str,
    },
    /// Compose manages the container and the policy does not select the
    /// `com.docker.compose.project` label.
    Compose {
        /// The Compose project.
        project: String,
    },
    /// A name matches a `[safety] protect_containers` glob.
    ProtectContainer {
        /// The glob as written.
        pattern: String,
    },
    /// Records made on top of this one are kept, and a record goes only
    /// after its children.
    HasChildren {
        /// How many child records are kept.
        children: usize,
    },
}

impl KeptBecause {
    /// Every [`KeptBecause::word`], so a metric can show each one at 0.
    pub const WORDS: [&'static str; 13] = [
        "in_use",
        "protect_label",
        "protect_glob",
        "min_age",
        "removal_limit",
        "whole_image",
        "build_in_use",
        "has_children",
        "container_active",
        "restart_policy",
        "used_by_container",
        "compose",
        "protect_container",
    ];

    /// One fixed word per kind: a metric label, and the JSON `kind`.
    pub fn word(&self) -> &'static str {
        match self {
            Self::InUse { .. } => "in_use",
            Self::ProtectLabel { .. } => "protect_label",
            Self::ProtectGlob { .. } => "protect_glob",
            Self::TooYoung { .. } => "min_age",
            Self::RemovalLimit { .. } => "removal_limit",
            Self::WholeImage { .. } => "whole_image",
            Self::BuildInUse => "build_in_use",
            Self::ContainerActive { .. } => "container_active",
            Self::RestartPolicy { .. } => "restart_policy",
            Self::UsedByContainer { .. } => "used_by_container",
            Self::Compose { .. } => "compose",
            Self::ProtectContainer { .. } => "protect_container",
            Self::HasChildren { .. } => "has_children",
        }
    }
}

/// A fact about the plan worth a log line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Note {
    /// `max_removals_per_run` was reached; the rest waits for the next pass.
    RemovalLimit {
        /// The limit.
        max: NonZeroUsize,
    },
    /// A disk policy was not evaluated: the disk is unknown (remote engine).
    DiskUnknown {
        /// The policy's name.
        policy: String,
    },
    /// A disk policy did not act: usage is below its `disk_high`.
    BelowDiskHigh {
        /// The policy's name.
        policy: String,
        /// Usage before any removal of this pass.
        usage: Usage,
        /// The policy's `disk_high`.
        #[serde(serialize_with = "threshold")]
        high: Threshold,
    },
    /// A disk policy acted.
    DiskPressure {
        /// The policy's name.
        policy: String,
        /// Usage before any removal of this pass.
        usage: Usage,
        /// The policy's `disk_high`.
        #[serde(serialize_with = "threshold")]
        high: Threshold,
        /// Removals it planned.
        removals: usize,
        /// Projected usage after them; `None` when unknown.
        after: Option<Usage>,
        /// The policy's `disk_low`.
        #[serde(serialize_with = "threshold")]
        low: Threshold,
    },
    /// An inode policy's `inodes_high` was not evaluated: the disk is
    /// unknown (remote engine).
    InodesUnknown {
        /// The policy's name.
        policy: String,
    },
    /// An inode policy's `inodes_high` was not evaluated: the filesystem
    /// reports no inode counts (`f_files` 0: btrfs, some FUSE filesystems).
    NoInodeCounts {
        /// The policy's name.
        policy: String,
    },
    /// An inode policy did not act on inodes: their use is below its
    /// `inodes_high`.
    BelowInodesHigh {
        /// The policy's name.
        policy: String,
        /// Share of the inodes in use before any removal of this pass.
        #[serde(serialize_with = "ratio")]
        usage: f64,
        /// The policy's `inodes_high`.
        #[serde(serialize_with = "ratio")]
        high: f64,
    },
    /// An inode policy acted.
    InodePressure {
        /// The policy's name.
        policy: String,
        /// Share of the inodes in use before any removal of this pass.
        #[serde(serialize_with = "ratio")]
        usage: f64,
        /// The policy's `inodes_high`.
        #[serde(serialize_with = "ratio")]
        high: f64,
        /// Removals the policy planned.
        removals: usize,
        /// The estimated share after them (inodes freed in proportion to
        /// the bytes freed); `None` when unknown.
        #[serde(serialize_with = "opt_ratio")]
        after: Option<f64>,
        /// The policy's `inodes_low`.
        #[serde(serialize_with = "ratio")]
        low: f64,
    },
    /// The engine has no build cache (Podman), or it was not read: the
    /// `[[build_cache]]` policies plan nothing. Said once per plan.
    NoBuildCache {
        /// The `[[build_cache]]` policies skipped, in file order.
        policies: Vec<String>,
    },
}

/// Usage in a watermark's unit: a share of the filesystem, or bytes of
/// image data.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Usage {
    /// Fraction 0.0..=1.0 of the filesystem in use.
    Ratio(f64),
    /// Unique image layer bytes.
    Bytes(u64),
}

impl Usage {
    /// `value` in the unit of `like`.
    pub fn like(value: f64, like: Threshold) -> Self {
        match like {
            Threshold::Ratio(_) => Self::Ratio(value),
            // Saturating float-to-int: an absurd figure shows as u64::MAX.
            Threshold::Bytes(_) => Self::Bytes(value as u64),
        }
    }
}

// Bit equality, so `Eq`-like comparisons of plans are exact (the values are
// finite ratios and byte counts; no NaN reaches here).
impl PartialEq for Usage {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Ratio(a), Self::Ratio(b)) => a.to_bits() == b.to_bits(),
            (Self::Bytes(a), Self::Bytes(b)) => a == b,
            _ => false,
        }
    }
}

fn seconds<S: Serializer>(d: &TimeDelta, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(d.num_seconds())
}

/// A share as `{"ratio": 0.8}`, like a [`Usage::Ratio`].
// serde's `serialize_with` passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn ratio<S: Serializer>(r: &f64, s: S) -> Result<S::Ok, S::Error> {
    Usage::Ratio(*r).serialize(s)
}

/// An optional share as `{"ratio": 0.8}` or `null`.
// serde's `serialize_with` passes a reference.
#[allow(clippy::ref_option)]
fn opt_ratio<S: Serializer>(r: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    r.map(Usage::Ratio).serialize(s)
}

/// A watermark as `{"ratio": 0.8}` or `{"bytes": 1000}`, like [`Usage`].
fn threshold<S: Serializer>(t: &Threshold, s: S) -> Result<S::Ok, S::Error> {
    match *t {
        Threshold::Ratio(r) => Usage::Ratio(r).serialize(s),
        Threshold::Bytes(b) => Usage::Bytes(b).serialize(s),
    }
}
