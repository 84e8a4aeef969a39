//! Telemetry: the metrics imagegc exports, and the endpoint that serves them.
//!
//! This is the only module that knows the `prometheus` crate (here) and
//! `axum` ([`http`]). [`Metrics`]
//! owns its own registry (never the process-global one, so tests can make as
//! many as they like) and is shared in an `Arc`. Callers speak in domain
//! terms: a finished pass with its [`Report`], a snapshot with its [`Plan`],
//! a new [`Policy`]; this module turns them into series. Label values are
//! policy names and fixed words only, never image IDs or tags, so the number
//! of series stays bounded by the policy file.
//!
//! [`http::serve`] answers `GET /metrics` (text exposition format) and
//! `GET /healthz` (JSON) until its shutdown token is cancelled.

pub mod http;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::proto::MetricFamily;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::gc::{KeptBecause, Plan};
use crate::inventory::Snapshot;
use crate::policy::{DiskPressure, Policy, Threshold};
use crate::run::execute::Report;
use crate::run::{PassOutcome, PassSummary, Trigger};

use self::http::Health;

/// `removal_failures_total{kind}` values: [`crate::engine::EngineError::kind`].
const FAILURE_KINDS: [&str; 3] = ["conflict", "not_found", "engine"];

/// `kind` values of the removal metrics: what was removed.
pub const REMOVAL_KINDS: [&str; 3] = ["image", "build_cache", "container"];

/// `containers{state}` values: the engine's states, and `other` for a word
/// it may add (so the series stay bounded).
pub const CONTAINER_STATES: [&str; 8] = [
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
    "other",
];

/// The states of a stopped container, whose writable layer a
/// `[[containers]]` policy may free.
const STOPPED_STATES: [&str; 3] = ["exited", "dead", "created"];

/// `build_cache_bytes{shared}` values.
const SHARED: [&str; 2] = ["true", "false"];

/// `images{state}` values.
const IMAGE_STATES: [&str; 3] = ["dangling", "in_use", "other"];

/// Pass durations range from a few milliseconds (nothing to do) to minutes
/// (thousands of removals on a slow disk).
/// Buckets of `imagegc_pressure_reaction_seconds`: a sampler interval of
/// seconds plus the first removal, up to the minutes a slow engine takes.
const PRESSURE_REACTION_BUCKETS: [f64; 12] = [
    0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0, 300.0,
];

const PASS_DURATION_BUCKETS: [f64; 15] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Every metric imagegc exports, in a registry of its own.
#[derive(Debug)]
pub struct Metrics {
    /// Owns every series below; `render` gathers from it.
    registry: Registry,
    /// Bytes freed, per policy and kind (`image`, `build_cache`): the
    /// figure users care about most.
    reclaimed_bytes: IntCounterVec,
    /// Build-cache records the engine deleted, per policy.
    removed_records: IntCounterVec,
    /// Build-cache records the engine was asked for and did not delete.
    records_not_deleted: IntCounterVec,
    /// Build-cache bytes by whether the record shares its data
    /// (`Shared`), from the last snapshot.
    build_cache_bytes: IntGaugeVec,
    /// Build-cache records, from the last snapshot.
    build_cache_records: IntGauge,
    /// References (tags, or untagged images by ID) removed, per policy.
    removed_references: IntCounterVec,
    /// Images the engine deleted, per policy (a reference removal may delete none).
    deleted_images: IntCounterVec,
    /// Removals that did not happen, per error kind.
    removal_failures: IntCounterVec,
    /// Passes, per outcome and trigger: alerts on `failed` growing.
    passes: IntCounterVec,
    /// How long passes take.
    pass_duration: Histogram,
    /// From the first disk sample at or above a high watermark to the first
    /// removal of the pass it started: how fast a filling disk is met.
    pressure_reaction: Histogram,
    /// When the last pass ended, whatever its outcome: alerts on a stuck schedule.
    last_pass: Gauge,
    /// When the last successful pass ended.
    last_success: Gauge,
    /// Images on the engine by state, from the last snapshot.
    images: IntGaugeVec,
    /// Unique layer bytes on the engine, from the last snapshot.
    image_bytes: IntGauge,
    /// What the next pass would free now, per policy and kind.
    reclaimable_bytes: IntGaugeVec,
    /// What policies wanted but a safety rule kept, by rule
    /// ([`KeptBecause::word`]), from the last plan.
    kept: IntGaugeVec,
    /// Disk use of the engine's root dir; no label, but a vector so the series
    /// can be absent while the disk is unknown (a remote engine) instead of a
    /// misleading 0.
    disk_used_ratio: GaugeVec,
    /// Bytes unprivileged users may still write there (`df`'s `Avail`),
    /// absent while unknown like `disk_used_ratio`.
    disk_free_bytes: GaugeVec,
    /// Watermarks of policies with percentage `disk_high`/`disk_low`, so a
    /// dashboard can draw `disk_used_ratio` against them.
    policy_disk_high: GaugeVec,
    /// See `policy_disk_high`.
    policy_disk_low: GaugeVec,
    /// Size watermarks, compared with `imagegc_image_bytes`.
    policy_disk_high_bytes: GaugeVec,
    /// Size watermarks, compared with `imagegc_image_bytes`.
    policy_disk_low_bytes: GaugeVec,
    /// Share of the inodes in use there (`df -i`'s `IUse%`); absent while
    /// unknown or when the filesystem reports no inode counts (btrfs).
    inodes_used_ratio: GaugeVec,
    /// `inodes_high` of each table that sets inode watermarks, so a
    /// dashboard can draw `inodes_used_ratio` against them.
    policy_inodes_high: GaugeVec,
    /// See `policy_inodes_high`.
    policy_inodes_low: GaugeVec,
    /// When this process started, so alerts can tell "never succeeded" from
    /// "just started".
    start_time: Gauge,
    /// 1 while the engine answers.
    engine_up: IntGauge,
    /// Containers whose image is gone, at the last check (start-up, and
    /// after each pass): made by a create racing a delete, or by anyone's
    /// forced removal.
    orphaned_containers: IntGauge,
    /// 1 when a byte figure is exact, 0 when it is an estimate, by kind:
    /// `image_sizes` (every image's bytes in the last snapshot, as
    /// `imagegc_image_bytes` and the plan's predictions count them) and
    /// `reclaimed` (the last pass's reclaimed bytes). Says which engines'
    /// figures can be trusted to the byte (the containerd store's shared
    /// layers, Podman's tar sizes are estimates; `docs/ENGINES.md`).
    bytes_exact: IntGaugeVec,
    /// Stopped containers the engine removed, per policy.
    removed_containers: IntCounterVec,
    /// Containers the engine refused with a 409 or 404, per policy.
    containers_not_removed: IntCounterVec,
    /// Containers on the engine by state, from the last snapshot.
    containers: IntGaugeVec,
    /// Known writable-layer bytes of stopped containers, last snapshot.
    stopped_container_bytes: IntGauge,
    /// Layer bytes of the images only stopped containers keep in use.
    pinned_image_bytes: IntGauge,
    /// 1 when the last reload (SIGHUP) applied a valid policy.
    config_last_reload_successful: IntGauge,
    /// Reloads, per outcome.
    config_reloads: IntCounterVec,
    /// Set when the last pass that was not cancelled failed, to when it
    /// ended; `/healthz` reports it.
    last_failure: Mutex<Option<DateTime<Utc>>>,
    /// Why the last pass was abandoned as stuck, until a pass succeeds;
    /// `/healthz` gives it as the reason.
    stall: Mutex<Option<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric. `build_info` is 1, `engine_up` 0 until the
    /// daemon reaches the engine, `config_last_reload_successful` 1 (the
    /// policy in force was loaded successfully at start).
    // One registration per metric, with its help text: long, but the whole
    // list in one place.
    #[allow(clippy::too_many_lines)]
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let policy_counter =
            |name: &str, help: &str| register(r, counter_vec(name, help, "policy"));
        let metrics = Self {
            reclaimed_bytes: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "imagegc_reclaimed_bytes_total",
                        "Bytes freed on the engine, by the policy that removed them and kind: \
                         image (image layers deleted) or build_cache (build-cache records \
                         removed, and the image layers only they still held).",
                    ),
                    &["policy", "kind"],
                )
                .expect("metric names, help and labels are valid constants"),
            ),
            removed_records: policy_counter(
                "imagegc_removed_build_cache_records_total",
                "Build-cache records the engine deleted, by policy.",
            ),
            records_not_deleted: policy_counter(
                "imagegc_build_cache_records_not_deleted_total",
                "Build-cache records a pass asked the engine to remove and it did not delete \
                 (in use by then, children left, or gone already): a normal outcome, by policy.",
            ),
            build_cache_bytes: register(
                r,
                int_gauge_vec(
                    "imagegc_build_cache_bytes",
                    "Bytes of the engine's build-cache records at the last snapshot, by whether \
                     a record shares its data with image layers (shared=\"true\": those bytes \
                     are counted in imagegc_image_bytes too, and removing the record frees them \
                     only once no image uses them).",
                    &["shared"],
                ),
            ),
            build_cache_records: register(
                r,
                int_gauge(
                    "imagegc_build_cache_records",
                    "Build-cache records on the engine at the last snapshot (0 when it has no \
                     build cache or no build_cache policy reads it).",
                ),
            ),
            removed_references: policy_counter(
                "imagegc_removed_references_total",
                "Image references (tags, or untagged images by ID) removed, by policy.",
            ),
            deleted_images: policy_counter(
                "imagegc_deleted_images_total",
                "Images the engine deleted as a result of removals, by policy.",
            ),
            removal_failures: register(
                r,
                counter_vec(
                    "imagegc_removal_failures_total",
                    "Removals that did not happen, by kind: conflict (in use or has children), \
                     not_found (already gone), engine (any other engine error).",
                    "kind",
                ),
            ),
            passes: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "imagegc_passes_total",
                        "Garbage-collection passes, by outcome (success, failed or cancelled) \
                         and trigger (start, schedule, reload, pressure or event).",
                    ),
                    &["outcome", "trigger"],
                )
                .expect("metric names, help and labels are valid constants"),
            ),
            pass_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "imagegc_pass_duration_seconds",
                        "Wall-clock time of a pass, from snapshot to last removal, in seconds.",
                    )
                    .buckets(PASS_DURATION_BUCKETS.to_vec()),
                )
                .expect("the histogram name, help and buckets are valid constants"),
            ),
            pressure_reaction: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "imagegc_pressure_reaction_seconds",
                        "Time from the first disk sample at or above a policy's disk_high to the \
                         first removal of the pass it started, in seconds.",
                    )
                    .buckets(PRESSURE_REACTION_BUCKETS.to_vec()),
                )
                .expect("the histogram name, help and buckets are valid constants"),
            ),
            last_pass: register(
                r,
                gauge(
                    "imagegc_last_pass_timestamp_seconds",
                    "Unix time at which the last pass ended, whatever its outcome; 0 before the first.",
                ),
            ),
            last_success: register(
                r,
                gauge(
                    "imagegc_last_success_timestamp_seconds",
                    "Unix time at which the last successful pass ended; 0 before the first.",
                ),
            ),
            images: register(
                r,
                int_gauge_vec(
                    "imagegc_images",
                    "Images on the engine at the last snapshot, by state: in_use (by a container \
                     in any state), dangling (untagged, no children, unused), other.",
                    &["state"],
                ),
            ),
            image_bytes: register(
                r,
                int_gauge(
                    "imagegc_image_bytes",
                    "Unique image layer bytes on the engine at the last snapshot (shared layers counted once).",
                ),
            ),
            reclaimable_bytes: register(
                r,
                int_gauge_vec(
                    "imagegc_reclaimable_bytes",
                    "Bytes the next pass would free if it ran now, by policy and kind (image \
                     or build_cache), from the last plan.",
                    &["policy", "kind"],
                ),
            ),
            kept: register(
                r,
                int_gauge_vec(
                    "imagegc_kept",
                    "References and untagged images a policy wanted to remove but a safety rule \
                     kept (and build-cache records likewise), in the last plan, by rule: \
                     in_use, protect_label, protect_glob, min_age, removal_limit, whole_image, \
                     build_in_use, has_children.",
                    &["reason"],
                ),
            ),
            disk_used_ratio: register(
                r,
                gauge_vec(
                    "imagegc_disk_used_ratio",
                    "Fraction (0 to 1) of the filesystem holding the engine's root directory in \
                     use at the last snapshot; absent when unknown (remote engine).",
                    &[],
                ),
            ),
            disk_free_bytes: register(
                r,
                gauge_vec(
                    "imagegc_disk_free_bytes",
                    "Bytes still available to unprivileged users (df's Avail) on the filesystem \
                     holding the engine's root directory at the last snapshot; absent when \
                     unknown (remote engine).",
                    &[],
                ),
            ),
            policy_disk_high: register(
                r,
                gauge_vec(
                    "imagegc_policy_disk_high_ratio",
                    "disk_high watermark (fraction 0 to 1) of each policy with percentage \
                     watermarks: the policy acts at or above it.",
                    &["policy"],
                ),
            ),
            policy_disk_low: register(
                r,
                gauge_vec(
                    "imagegc_policy_disk_low_ratio",
                    "disk_low watermark (fraction 0 to 1) of each policy with percentage \
                     watermarks: the policy removes until usage is at or below it.",
                    &["policy"],
                ),
            ),
            policy_disk_high_bytes: register(
                r,
                gauge_vec(
                    "imagegc_policy_disk_high_bytes",
                    "disk_high watermark in bytes of image data (compare with imagegc_image_bytes) \
                     of each policy with size watermarks.",
                    &["policy"],
                ),
            ),
            policy_disk_low_bytes: register(
                r,
                gauge_vec(
                    "imagegc_policy_disk_low_bytes",
                    "disk_low watermark in bytes of image data (compare with imagegc_image_bytes) \
                     of each policy with size watermarks.",
                    &["policy"],
                ),
            ),
            inodes_used_ratio: register(
                r,
                gauge_vec(
                    "imagegc_inodes_used_ratio",
                    "Fraction (0 to 1) of the inodes of the filesystem holding the engine's root \
                     directory in use (df -i's IUse%) at the last snapshot; absent when unknown \
                     (remote engine) or when the filesystem reports no inode counts (btrfs).",
                    &[],
                ),
            ),
            policy_inodes_high: register(
                r,
                gauge_vec(
                    "imagegc_policy_inodes_high_ratio",
                    "inodes_high watermark (fraction 0 to 1 of the inodes) of each policy with \
                     inode watermarks: the policy acts at or above it.",
                    &["policy"],
                ),
            ),
            policy_inodes_low: register(
                r,
                gauge_vec(
                    "imagegc_policy_inodes_low_ratio",
                    "inodes_low watermark (fraction 0 to 1 of the inodes) of each policy with \
                     inode watermarks: the policy removes until the estimated use (inodes freed \
                     in proportion to bytes) is at or below it.",
                    &["policy"],
                ),
            ),
            start_time: register(
                r,
                gauge(
                    "imagegc_start_time_seconds",
                    "Unix time at which this imagegc process started.",
                ),
            ),
            engine_up: register(
                r,
                int_gauge(
                    "imagegc_engine_up",
                    "1 when the container engine answered the last request, 0 otherwise.",
                ),
            ),
            removed_containers: policy_counter(
                "imagegc_removed_containers_total",
                "Stopped containers the engine removed, by [[containers]] policy.",
            ),
            containers_not_removed: policy_counter(
                "imagegc_containers_not_removed_total",
                "Containers a pass asked the engine to remove that it refused with a 409 \
                 (running again, being removed) or 404 (gone already): a normal outcome, by \
                 policy. The images they would have unpinned wait for a later pass.",
            ),
            containers: register(
                r,
                int_gauge_vec(
                    "imagegc_containers",
                    "Containers on the engine at the last snapshot, by state (created, \
                     running, paused, restarting, removing, exited, dead, other).",
                    &["state"],
                ),
            ),
            stopped_container_bytes: register(
                r,
                int_gauge(
                    "imagegc_stopped_container_bytes",
                    "Writable-layer bytes (SizeRw) of stopped containers (exited, dead, \
                     created) at the last snapshot, as far as the engine reported them: read \
                     only for containers a [[containers]] policy selects.",
                ),
            ),
            pinned_image_bytes: register(
                r,
                int_gauge(
                    "imagegc_pinned_image_bytes",
                    "Layer bytes (each layer once) of the images that only stopped containers \
                     keep in use at the last snapshot: what removing those containers could let \
                     image policies collect (layers shared with other images included).",
                ),
            ),
            orphaned_containers: register(
                r,
                int_gauge(
                    "imagegc_orphaned_containers",
                    "Containers whose image no longer exists on the engine, at the last check \
                     (start-up and after each pass): left by a container create that raced an \
                     image delete, or by anyone's forced removal. Each is logged at warning level.",
                ),
            ),
            bytes_exact: register(
                r,
                int_gauge_vec(
                    "imagegc_bytes_exact",
                    "1 when a byte figure is exact, 0 when it is an estimate, by kind: \
                     image_sizes (every image's bytes at the last snapshot: imagegc_image_bytes \
                     and reclaimable_bytes) or reclaimed (the last pass's reclaimed bytes).",
                    &["kind"],
                ),
            ),
            config_last_reload_successful: register(
                r,
                int_gauge(
                    "imagegc_config_last_reload_successful",
                    "1 when the last policy reload succeeded (or none was asked for), 0 when \
                     it failed and the previous policy stays in force.",
                ),
            ),
            config_reloads: register(
                r,
                counter_vec(
                    "imagegc_config_reloads_total",
                    "Policy reloads asked for (SIGHUP), by outcome: success or failed.",
                    "outcome",
                ),
            ),
            last_failure: Mutex::new(None),
            stall: Mutex::new(None),
            registry,
        };
        let build_info = register(
            &metrics.registry,
            int_gauge_vec(
                "imagegc_build_info",
                "Always 1; the version label says which imagegc is running.",
                &["version"],
            ),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics
            .start_time
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        for kind in FAILURE_KINDS {
            metrics.removal_failures.with_label_values(&[kind]);
        }
        for outcome in PassOutcome::ALL {
            for trigger in Trigger::ALL {
                metrics
                    .passes
                    .with_label_values(&[outcome.label(), trigger.label()]);
            }
        }
        for state in IMAGE_STATES {
            metrics.images.with_label_values(&[state]);
        }
        for shared in SHARED {
            metrics.build_cache_bytes.with_label_values(&[shared]);
        }
        for state in CONTAINER_STATES {
            metrics.containers.with_label_values(&[state]);
        }
        for word in KeptBecause::WORDS {
            metrics.kept.with_label_values(&[word]);
        }
        for outcome in ["success", "failed"] {
            metrics.config_reloads.with_label_values(&[outcome]);
        }
        metrics.config_last_reload_successful.set(1);
        metrics
    }

    /// Makes the per-policy series match `policy`: counters of new policy
    /// names appear at 0 (counters of policies that are gone stay, as totals
    /// of what they did); gauges of policies that are gone disappear; the
    /// watermark gauges follow the new percentages.
    pub fn set_policy(&self, policy: &Policy) {
        let images: HashSet<&str> = policy.rules.iter().map(|r| r.name.as_str()).collect();
        let caches: HashSet<&str> = policy.cache_rules.iter().map(|r| r.name.as_str()).collect();
        for &name in &images {
            self.reclaimed_bytes.with_label_values(&[name, "image"]);
            self.removed_references.with_label_values(&[name]);
            self.deleted_images.with_label_values(&[name]);
            self.reclaimable_bytes.with_label_values(&[name, "image"]);
        }
        for &name in &caches {
            self.reclaimed_bytes
                .with_label_values(&[name, "build_cache"]);
            self.removed_records.with_label_values(&[name]);
            self.records_not_deleted.with_label_values(&[name]);
            self.reclaimable_bytes
                .with_label_values(&[name, "build_cache"]);
        }
        let containers: HashSet<&str> = policy
            .container_rules
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        for &name in &containers {
            self.reclaimed_bytes.with_label_values(&[name, "container"]);
            self.removed_containers.with_label_values(&[name]);
            self.containers_not_removed.with_label_values(&[name]);
            self.reclaimable_bytes
                .with_label_values(&[name, "container"]);
        }
        retain_pairs(&self.reclaimable_bytes, |name, kind| match kind {
            "image" => images.contains(name),
            "container" => containers.contains(name),
            _ => caches.contains(name),
        });

        let mut high = BTreeMap::new();
        let mut low = BTreeMap::new();
        let mut high_bytes = BTreeMap::new();
        let mut low_bytes = BTreeMap::new();
        for rule in &policy.rules {
            let name = rule.name.as_str();
            if let Some(DiskPressure { high: h, low: l }) = rule.conditions.disk {
                for (t, ratios, bytes) in [
                    (h, &mut high, &mut high_bytes),
                    (l, &mut low, &mut low_bytes),
                ] {
                    match t {
                        Threshold::Ratio(v) => ratios.insert(name, v),
                        Threshold::Bytes(v) => bytes.insert(name, v as f64),
                    };
                }
            }
        }
        for (vec, wanted) in [
            (&self.policy_disk_high, &high),
            (&self.policy_disk_low, &low),
            (&self.policy_disk_high_bytes, &high_bytes),
            (&self.policy_disk_low_bytes, &low_bytes),
        ] {
            retain_series(vec, |name| wanted.contains_key(name));
            for (&name, &ratio) in wanted {
                vec.with_label_values(&[name]).set(ratio);
            }
        }
        let marks = policy.inode_marks();
        let inodes_high: BTreeMap<&str, f64> =
            marks.iter().map(|(n, h, _)| (n.as_str(), *h)).collect();
        let inodes_low: BTreeMap<&str, f64> =
            marks.iter().map(|(n, _, l)| (n.as_str(), *l)).collect();
        for (vec, wanted) in [
            (&self.policy_inodes_high, &inodes_high),
            (&self.policy_inodes_low, &inodes_low),
        ] {
            retain_series(vec, |name| wanted.contains_key(name));
            for (&name, &ratio) in wanted {
                vec.with_label_values(&[name]).set(ratio);
            }
        }
    }

    /// Counts a finished pass and, when it got as far as removing, what its
    /// `report` says it removed and what failed.
    pub fn record_summary(&self, summary: &PassSummary, report: Option<&Report>) {
        self.count_pass(
            summary.outcome,
            summary.trigger,
            report,
            summary.duration,
            summary.finished,
        );
    }

    /// A pressure pass removed something `reaction` after the first sample
    /// at or above a high watermark.
    pub fn observe_pressure_reaction(&self, reaction: Duration) {
        self.pressure_reaction.observe(reaction.as_secs_f64());
    }

    /// [`Metrics::record_summary`] for a caller without a summary (a `once`
    /// style pass run by hand): counted as a `schedule` pass.
    pub fn record_pass(
        &self,
        outcome: PassOutcome,
        report: Option<&Report>,
        duration: Duration,
        finished_at: DateTime<Utc>,
    ) {
        self.count_pass(outcome, Trigger::Schedule, report, duration, finished_at);
    }

    fn count_pass(
        &self,
        outcome: PassOutcome,
        trigger: Trigger,
        report: Option<&Report>,
        duration: Duration,
        finished_at: DateTime<Utc>,
    ) {
        self.passes
            .with_label_values(&[outcome.label(), trigger.label()])
            .inc();
        self.pass_duration.observe(duration.as_secs_f64());
        let at = finished_at.timestamp_millis() as f64 / 1000.0;
        self.last_pass.set(at);
        match outcome {
            PassOutcome::Success => {
                self.last_success.set(at);
                *self.last_failure_lock() = None;
                *self.stall_lock() = None;
            }
            PassOutcome::Failed => {
                *self.last_failure_lock() = Some(finished_at);
                // A stuck pass is recorded right after, with `record_stall`.
                *self.stall_lock() = None;
            }
            // A pass stopped by shutdown says nothing about the engine or the
            // policy: health stays as the last finished pass left it.
            PassOutcome::Cancelled => {}
        }
        let Some(report) = report else {
            return;
        };
        self.bytes_exact
            .with_label_values(&["reclaimed"])
            .set(i64::from(report.reclaimed_exact));
        for removed in &report.removed {
            let policy = [removed.policy.as_str()];
            saturating_inc(
                &self
                    .reclaimed_bytes
                    .with_label_values(&[removed.policy.as_str(), "image"]),
                removed.reclaimed_bytes,
            );
            self.removed_references.with_label_values(&policy).inc();
            saturating_inc(
                &self.deleted_images.with_label_values(&policy),
                removed.deleted_images.len() as u64,
            );
        }
        for failed in &report.failed {
            self.removal_failures
                .with_label_values(&[failed.kind])
                .inc();
        }
        for removed in &report.records_removed {
            saturating_inc(
                &self
                    .reclaimed_bytes
                    .with_label_values(&[removed.policy.as_str(), "build_cache"]),
                removed.reclaimed_bytes,
            );
            self.removed_records
                .with_label_values(&[removed.policy.as_str()])
                .inc();
        }
        for record in &report.records_not_deleted {
            self.records_not_deleted
                .with_label_values(&[record.policy.as_str()])
                .inc();
        }
        for failed in &report.records_failed {
            self.removal_failures
                .with_label_values(&[failed.kind])
                .inc();
        }
        for removed in &report.containers_removed {
            saturating_inc(
                &self
                    .reclaimed_bytes
                    .with_label_values(&[removed.policy.as_str(), "container"]),
                removed.reclaimed_bytes,
            );
            self.removed_containers
                .with_label_values(&[removed.policy.as_str()])
                .inc();
        }
        for not in &report.containers_not_removed {
            self.containers_not_removed
                .with_label_values(&[not.policy.as_str()])
                .inc();
        }
        for failed in &report.containers_failed {
            self.removal_failures
                .with_label_values(&[failed.kind])
                .inc();
        }
    }

    /// The engine's state as one snapshot and the plan made from it show it:
    /// image counts, image bytes, disk use and what each policy would free.
    pub fn record_inventory(&self, snapshot: &Snapshot, plan: &Plan) {
        let mut counts = [0i64; IMAGE_STATES.len()];
        for i in 0..snapshot.images.len() {
            let in_use = snapshot.in_use.get(i).copied().unwrap_or(false);
            let state = if in_use {
                1
            } else if snapshot.is_dangling(i) {
                0
            } else {
                2
            };
            counts[state] += 1;
        }
        for (state, count) in IMAGE_STATES.iter().zip(counts) {
            self.images.with_label_values(&[state]).set(count);
        }
        self.image_bytes.set(saturating_i64(snapshot.image_bytes()));
        let exact = snapshot.images.iter().all(|i| i.sizes_exact);
        self.bytes_exact
            .with_label_values(&["image_sizes"])
            .set(i64::from(exact));
        self.record_containers(snapshot);

        // Every policy already shown drops to 0 unless the plan names it, and
        // each value is set once, so a scrape never sees a series vanish.
        let mut reclaimable: BTreeMap<(String, String), u64> =
            series_pairs(&self.reclaimable_bytes)
                .into_iter()
                .map(|pair| (pair, 0))
                .collect();
        let removals = plan
            .removals
            .iter()
            .map(|r| (&r.policy, "image", r.reclaim_bytes));
        let records = plan
            .records
            .iter()
            .map(|r| (&r.policy, "build_cache", r.reclaim_bytes));
        let containers = plan
            .containers
            .iter()
            .map(|c| (&c.policy, "container", c.reclaim_bytes));
        for (policy, kind, bytes) in removals.chain(records).chain(containers) {
            let total = reclaimable
                .entry((policy.clone(), kind.to_string()))
                .or_default();
            *total = total.saturating_add(bytes);
        }
        for ((name, kind), bytes) in &reclaimable {
            self.reclaimable_bytes
                .with_label_values(&[name.as_str(), kind.as_str()])
                .set(saturating_i64(*bytes));
        }

        let cache = &snapshot.cache;
        let (mut shared, mut private) = (0u64, 0u64);
        for rec in &cache.records {
            let total = if rec.shared {
                &mut shared
            } else {
                &mut private
            };
            *total = total.saturating_add(rec.size);
        }
        self.build_cache_bytes
            .with_label_values(&["true"])
            .set(saturating_i64(shared));
        self.build_cache_bytes
            .with_label_values(&["false"])
            .set(saturating_i64(private));
        self.build_cache_records
            .set(i64::try_from(cache.len()).unwrap_or(i64::MAX));

        // Every reason word, set once each, so none is ever missing.
        let mut kept = KeptBecause::WORDS.map(|word| (word, 0i64));
        let words = plan
            .kept
            .iter()
            .map(|k| k.reason.word())
            .chain(plan.kept_records.iter().map(|k| k.reason.word()))
            .chain(plan.kept_containers.iter().map(|k| k.reason.word()));
        for word in words {
            if let Some(slot) = kept.iter_mut().find(|(w, _)| *w == word) {
                slot.1 += 1;
            }
        }
        for (word, count) in kept {
            self.kept.with_label_values(&[word]).set(count);
        }

        if let Some(disk) = snapshot.disk {
            self.disk_used_ratio
                .with_label_values::<&str>(&[])
                .set(disk.used_ratio());
            self.disk_free_bytes
                .with_label_values::<&str>(&[])
                .set(disk.free_bytes() as f64);
        } else {
            self.disk_used_ratio.reset();
            self.disk_free_bytes.reset();
        }
        match snapshot.disk.and_then(|d| d.inodes_used_ratio()) {
            Some(ratio) => self
                .inodes_used_ratio
                .with_label_values::<&str>(&[])
                .set(ratio),
            None => self.inodes_used_ratio.reset(),
        }
    }

    /// The container gauges of one snapshot: containers by state, the known
    /// writable-layer bytes of the stopped ones, and the layer bytes of the
    /// images only stopped containers use.
    fn record_containers(&self, snapshot: &Snapshot) {
        let mut counts = [0i64; CONTAINER_STATES.len()];
        let mut stopped_bytes = 0u64;
        for c in &snapshot.containers {
            let state = c.container.state.as_str();
            let slot = CONTAINER_STATES
                .iter()
                .position(|s| *s == state)
                .unwrap_or(CONTAINER_STATES.len() - 1);
            counts[slot] += 1;
            if STOPPED_STATES.contains(&state) {
                if let Some(size) = c.details.as_ref().and_then(|d| d.size_rw) {
                    stopped_bytes = stopped_bytes.saturating_add(size);
                }
            }
        }
        for (state, count) in CONTAINER_STATES.iter().zip(counts) {
            self.containers.with_label_values(&[state]).set(count);
        }
        self.stopped_container_bytes
            .set(saturating_i64(stopped_bytes));
        let mut layers: HashSet<u32> = HashSet::new();
        for (i, users) in snapshot.users.iter().enumerate() {
            let only_stopped = !users.is_empty()
                && users.iter().all(|&c| {
                    snapshot
                        .containers
                        .get(c)
                        .is_some_and(|c| STOPPED_STATES.contains(&c.container.state.as_str()))
                });
            if only_stopped {
                if let Some(img) = snapshot.images.get(i) {
                    layers.extend(img.layers.iter().copied());
                }
            }
        }
        let pinned = layers.iter().fold(0u64, |total, &l| {
            total.saturating_add(snapshot.layers.get(l as usize).map_or(0, |x| x.size))
        });
        self.pinned_image_bytes.set(saturating_i64(pinned));
    }

    /// Whether the engine answered the last request.
    pub fn set_engine_up(&self, up: bool) {
        self.engine_up.set(i64::from(up));
    }

    /// How many containers have lost their image, at the last check.
    pub fn set_orphaned_containers(&self, count: usize) {
        self.orphaned_containers
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Counts a policy reload (SIGHUP) and whether it succeeded.
    pub fn record_reload(&self, ok: bool) {
        let outcome = if ok { "success" } else { "failed" };
        self.config_reloads.with_label_values(&[outcome]).inc();
        self.config_last_reload_successful.set(i64::from(ok));
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Fails only for a family without series, which `gather` leaves out.
        if let Err(error) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(%error, "cannot encode the metrics");
        }
        out
    }

    /// A pass was abandoned because it made no progress; `reason` says so
    /// in `/healthz` until a pass succeeds (it counts as failed as well).
    pub fn record_stall(&self, reason: &str) {
        *self.stall_lock() = Some(reason.to_owned());
    }

    /// Healthy while the engine answers and the last pass that ran to an end
    /// (cancelled passes do not count) did not fail; no pass yet is healthy.
    /// A pass abandoned as stuck names why.
    pub fn health(&self) -> Health {
        let mut reasons = Vec::new();
        if self.engine_up.get() != 1 {
            reasons.push("the container engine is not reachable".to_string());
        }
        if let Some(stall) = self.stall_lock().clone() {
            reasons.push(stall);
        } else if let Some(at) = *self.last_failure_lock() {
            reasons.push(format!(
                "the last pass failed (at {})",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        Health {
            ok: reasons.is_empty(),
            reason: reasons.join("; "),
        }
    }

    fn stall_lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A whole string or none: a poisoned lock is still good.
        self.stall.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn last_failure_lock(&self) -> std::sync::MutexGuard<'_, Option<DateTime<Utc>>> {
        // The guarded value is a plain timestamp: a panic elsewhere cannot
        // leave it half-written, so a poisoned lock is still good.
        self.last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Adds `collector` to `registry` and hands it back.
fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("each metric name is registered once");
    collector
}

fn counter_vec(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label])
        .expect("metric names, help and labels are valid constants")
}

fn int_gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels)
        .expect("metric names, help and labels are valid constants")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), labels)
        .expect("metric names, help and labels are valid constants")
}

/// Adds `by` to `counter`, stopping at `u64::MAX` instead of wrapping to a
/// small figure (which Prometheus would take for a counter reset).
fn saturating_inc(counter: &prometheus::IntCounter, by: u64) {
    counter.inc_by(by.min(u64::MAX - counter.get()));
}

fn int_gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::with_opts(Opts::new(name, help)).expect("metric names and help are valid constants")
}

fn gauge(name: &str, help: &str) -> Gauge {
    Gauge::with_opts(Opts::new(name, help)).expect("metric names and help are valid constants")
}

/// The first label's value of every series of a one-label vector.
fn series_labels<T: MetricVecBuilder>(vec: &MetricVec<T>) -> Vec<String> {
    vec.collect()
        .iter()
        .flat_map(MetricFamily::get_metric)
        .filter_map(|m| m.get_label().first().map(|l| l.value().to_string()))
        .collect()
}

/// Removes the series of a one-label vector whose label `keep` refuses.
fn retain_series<T: MetricVecBuilder>(vec: &MetricVec<T>, keep: impl Fn(&str) -> bool) {
    for name in series_labels(vec) {
        if !keep(&name) {
            // Err only when the series is already gone.
            let _ = vec.remove_label_values(&[name.as_str()]);
        }
    }
}

/// The first two labels' values of every series of a two-label vector.
fn series_pairs<T: MetricVecBuilder>(vec: &MetricVec<T>) -> Vec<(String, String)> {
    vec.collect()
        .iter()
        .flat_map(MetricFamily::get_metric)
        .filter_map(|m| {
            let labels = m.get_label();
            let value = |name: &str| {
                labels
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
            };
            Some((value("policy")?, value("kind")?))
        })
        .collect()
}

/// Removes the `{policy, kind}` series `keep` refuses.
fn retain_pairs<T: MetricVecBuilder>(vec: &MetricVec<T>, keep: impl Fn(&str, &str) -> bool) {
    for (name, kind) in series_pairs(vec) {
        if !keep(&name, &kind) {
            // Err only when the series is already gone.
            let _ = vec.remove_label_values(&[name.as_str(), kind.as_str()]);
        }
    }
}

fn saturating_i64(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}
