//! The JSON contract of `plan`, `once` and `explain` (`--output json`), as
//! types: every field a program may read is a field here, and the output is
//! these structs serialized, nothing hand-built. The field names and their
//! values are a stable interface; `schema_version` changes when one does.
//! A field is only ever added within a version.
//!
//! Each removal and kept entry has its `reason` in words (as the table shows
//! it) and `why`, the same facts typed: objects with a `kind` and their
//! figures, durations in seconds.

use serde::Serialize;
use serde_json::Value;

use chrono::{DateTime, Utc};

use super::explain::{ContainerExplanation, Explanation, RecordExplanation};
use crate::gc::plan::{KeptBecause, Plan, Reasons};
use crate::inventory::Snapshot;
use crate::run::execute::{ContainerNotRemoved, Failed, Report};

/// The version of every JSON document below.
pub const SCHEMA_VERSION: u32 = 1;

/// `imagegc plan --output json`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanJson<'a> {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// What the pass removes, in execution order.
    pub removals: Vec<RemovalJson<'a>>,
    /// What a policy wanted but a safety rule or the limit kept.
    pub kept: Vec<KeptJson<'a>>,
    /// Bytes the whole plan frees.
    pub reclaim_bytes: u64,
    /// The plan's notes, in words.
    pub notes: Vec<String>,
    /// Images in the snapshot.
    pub images: usize,
    /// Unique layer bytes of every image.
    pub image_bytes: u64,
    /// Build-cache record removals, run after every image removal,
    /// children before parents.
    pub records: Vec<RecordJson<'a>>,
    /// Build-cache records a policy wanted, kept by a safety rule.
    pub kept_records: Vec<KeptRecordJson<'a>>,
    /// Build-cache records in the snapshot (0 when the engine has none or
    /// they were not read).
    pub build_cache_records: usize,
    /// Stopped-container removals, run before every image removal.
    pub containers: Vec<ContainerRemovalJson<'a>>,
    /// Containers a `[[containers]]` policy wanted, kept by a safety rule.
    pub kept_containers: Vec<KeptContainerJson<'a>>,
}

/// One planned stopped-container removal.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerRemovalJson<'a> {
    /// The container's full ID.
    pub container_id: &'a str,
    /// Its name (without the `/`).
    pub name: &'a str,
    /// Its state as the engine spells it (`exited`, `dead`, `created`).
    pub state: &'a str,
    /// When it finished (`State.FinishedAt`), or `null` if it never ran.
    pub finished: Option<DateTime<Utc>>,
    /// Its writable layer as the engine reports it (`SizeRw`), or `null`
    /// when the engine did not say.
    pub size_rw_bytes: Option<u64>,
    /// Bytes removing it frees by itself (its writable layer).
    pub reclaim_bytes: u64,
    /// The `[[containers]]` policy that removes it.
    pub policy: &'a str,
    /// Why, in words.
    pub reason: String,
    /// Why, typed.
    pub why: &'a Reasons,
    /// Image IDs no container uses once it (and the container removals
    /// before it) are done.
    pub unpins: Vec<&'a str>,
}

/// One container kept by a safety rule.
#[derive(Debug, Clone, Serialize)]
pub struct KeptContainerJson<'a> {
    /// The container's full ID.
    pub container_id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its state as the engine spells it.
    pub state: &'a str,
    /// The policy that wanted it.
    pub policy: &'a str,
    /// The rule, in words.
    pub reason: String,
    /// The rule, typed (`kind` is the `imagegc_kept` metric's `reason`).
    pub why: &'a KeptBecause,
}

/// One planned build-cache record removal.
#[derive(Debug, Clone, Serialize)]
pub struct RecordJson<'a> {
    /// The full record ID.
    pub record_id: &'a str,
    /// The record's type as the engine spells it (`regular`, …).
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// What made it, as the engine describes it (unescaped).
    pub description: &'a str,
    /// Its size as the engine counts it (shared bytes included).
    pub size_bytes: u64,
    /// Bytes removing it frees in plan order (0 for a shared record an
    /// image still uses).
    pub reclaim_bytes: u64,
    /// False when `reclaim_bytes` is an estimate: on an engine whose
    /// records the record model does not fit (the containerd image store,
    /// where a record keeps snapshots of its own).
    pub sizes_exact: bool,
    /// The `[[build_cache]]` policy that removes it.
    pub policy: &'a str,
    /// Why, in words.
    pub reason: String,
    /// Why, typed.
    pub why: &'a Reasons,
}

/// One build-cache record kept by a safety rule.
#[derive(Debug, Clone, Serialize)]
pub struct KeptRecordJson<'a> {
    /// The full record ID.
    pub record_id: &'a str,
    /// The record's type.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// What made it.
    pub description: &'a str,
    /// The policy that wanted it.
    pub policy: &'a str,
    /// The rule, in words.
    pub reason: String,
    /// The rule, typed (`kind` is the `imagegc_kept` metric's `reason`).
    pub why: &'a KeptBecause,
}

/// One planned removal.
#[derive(Debug, Clone, Serialize)]
pub struct RemovalJson<'a> {
    /// `sha256:<hex>`.
    pub image_id: &'a str,
    /// The tag, or `null` for an untagged image removed by ID.
    pub reference: Option<&'a str>,
    /// The policy that removes it.
    pub policy: &'a str,
    /// Why, in words.
    pub reason: String,
    /// Why, typed.
    pub why: &'a Reasons,
    /// Bytes it frees in plan order.
    pub reclaim_bytes: u64,
    /// True when the engine deletes the image with it.
    pub deletes_image: bool,
    /// False when the image's layer sizes are a best guess.
    pub sizes_exact: bool,
    /// Names of the containers whose removal earlier in the plan unpinned
    /// the image (empty when none used it).
    pub unpinned_by: &'a [String],
}

/// One reference or image kept by a safety rule.
#[derive(Debug, Clone, Serialize)]
pub struct KeptJson<'a> {
    /// `sha256:<hex>`.
    pub image_id: &'a str,
    /// The tag, or `null` for an untagged image.
    pub reference: Option<&'a str>,
    /// The policy that wanted it.
    pub policy: &'a str,
    /// The rule, in words.
    pub reason: String,
    /// The rule, typed (`kind` is the `imagegc_kept` metric's `reason`).
    pub why: &'a KeptBecause,
}

/// `imagegc once --output json`: the plan, and what the pass did.
#[derive(Debug, Clone, Serialize)]
pub struct PassJson<'a> {
    /// The plan's fields, `schema_version` included.
    #[serde(flatten)]
    pub plan: PlanJson<'a>,
    /// True when nothing was removed on purpose.
    pub dry_run: bool,
    /// Removals the engine carried out.
    pub removed: Vec<RemovedJson<'a>>,
    /// Removals that did not happen.
    pub failed: Vec<FailedJson<'a>>,
    /// Bytes of the layers the engine deleted.
    pub reclaimed_bytes: u64,
    /// True when `reclaimed_bytes` counts the layers the engine reported
    /// deleted; false when the engine reports none and the figure is the
    /// ledger's prediction for the removals that happened. Build-cache
    /// record bytes are the ledger's for the records the engine said it
    /// deleted, on every engine (its own byte figure counts shared bytes).
    pub reclaimed_exact: bool,
    /// Images the engine deleted.
    pub deleted_images: usize,
    /// Removals not attempted (cancelled, or the engine was lost).
    pub skipped: usize,
    /// True when cancellation stopped the pass.
    pub cancelled: bool,
    /// Build-cache records the engine deleted (their bytes are in
    /// `reclaimed_bytes`).
    pub records_removed: Vec<RemovedRecordJson<'a>>,
    /// Build-cache records the engine did not delete (a normal outcome).
    pub records_not_deleted: Vec<RecordNotDeletedJson<'a>>,
    /// Build-cache record removals that failed.
    pub records_failed: Vec<FailedRecordJson<'a>>,
    /// Record removals not attempted: the engine has no build cache.
    pub records_unsupported: usize,
    /// Stopped containers the engine removed (their bytes are in
    /// `reclaimed_bytes`).
    pub containers_removed: Vec<RemovedContainerJson<'a>>,
    /// Containers the engine refused with a 409 or 404: a normal outcome.
    pub containers_not_removed: Vec<ContainerNotRemovedJson<'a>>,
    /// Container removals that failed with another engine error.
    pub containers_failed: Vec<ContainerNotRemovedJson<'a>>,
    /// Image removals left for a later pass: a container pinning the image
    /// was not removed. Not failures.
    pub pinned_skipped: Vec<PinnedSkippedJson<'a>>,
}

/// One stopped container the engine removed.
#[derive(Debug, Clone, Serialize)]
pub struct RemovedContainerJson<'a> {
    /// The container's full ID.
    pub container_id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// The policy that asked for it.
    pub policy: &'a str,
    /// Bytes of its writable layer (the engine's `SizeRw`).
    pub reclaimed_bytes: u64,
}

/// One container removal that did not happen.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerNotRemovedJson<'a> {
    /// The container's full ID.
    pub container_id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// The policy that asked for it.
    pub policy: &'a str,
    /// `conflict`, `not_found` or `engine`.
    pub kind: &'a str,
    /// The engine's words.
    pub message: &'a str,
}

/// One image removal left for a later pass.
#[derive(Debug, Clone, Serialize)]
pub struct PinnedSkippedJson<'a> {
    /// The image the removal was for.
    pub image_id: &'a str,
    /// The tag, or `null`.
    pub reference: Option<&'a str>,
    /// The policy that asked for it.
    pub policy: &'a str,
    /// The container (name) still using it.
    pub container: &'a str,
}

/// One build-cache record the engine deleted.
#[derive(Debug, Clone, Serialize)]
pub struct RemovedRecordJson<'a> {
    /// The full record ID.
    pub record_id: &'a str,
    /// The policy that asked for it.
    pub policy: &'a str,
    /// Bytes its removal freed, after what the pass removed before it.
    pub reclaimed_bytes: u64,
    /// What the engine said it reclaimed (shared bytes included: not what
    /// the disk gained).
    pub engine_reported_bytes: u64,
}

/// One build-cache record the engine did not delete.
#[derive(Debug, Clone, Serialize)]
pub struct RecordNotDeletedJson<'a> {
    /// The full record ID.
    pub record_id: &'a str,
    /// The policy that asked for it.
    pub policy: &'a str,
}

/// One build-cache record removal that failed.
#[derive(Debug, Clone, Serialize)]
pub struct FailedRecordJson<'a> {
    /// The full record ID.
    pub record_id: &'a str,
    /// The policy that asked for it.
    pub policy: &'a str,
    /// `conflict`, `not_found` or `engine`.
    pub kind: &'a str,
    /// The engine's words.
    pub message: &'a str,
}

/// One removal the engine carried out.
#[derive(Debug, Clone, Serialize)]
pub struct RemovedJson<'a> {
    /// The image the removal was for.
    pub image_id: &'a str,
    /// The tag removed, or `null`.
    pub reference: Option<&'a str>,
    /// The policy that asked for it.
    pub policy: &'a str,
    /// Bytes of the layers it deleted.
    pub reclaimed_bytes: u64,
    /// Image IDs the engine deleted.
    pub deleted_images: &'a [String],
    /// References the engine removed.
    pub untagged: &'a [String],
}

/// One removal that did not happen.
#[derive(Debug, Clone, Serialize)]
pub struct FailedJson<'a> {
    /// The image the removal was for.
    pub image_id: &'a str,
    /// The tag, or `null`.
    pub reference: Option<&'a str>,
    /// The policy that asked for it.
    pub policy: &'a str,
    /// `conflict`, `not_found` or `engine`.
    pub kind: &'a str,
    /// The engine's words.
    pub message: &'a str,
}

impl<'a> PlanJson<'a> {
    /// The document for `plan` made from `snapshot`.
    pub fn new(plan: &'a Plan, snapshot: &'a Snapshot) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            removals: plan
                .removals
                .iter()
                .map(|r| RemovalJson {
                    image_id: &r.image_id,
                    reference: r.reference.as_deref(),
                    policy: &r.policy,
                    reason: r.reason.to_string(),
                    why: &r.reason,
                    reclaim_bytes: r.reclaim_bytes,
                    deletes_image: r.deletes_image,
                    sizes_exact: snapshot.images[r.image].sizes_exact,
                    unpinned_by: &r.unpinned_by,
                })
                .collect(),
            kept: plan
                .kept
                .iter()
                .map(|k| KeptJson {
                    image_id: &k.image_id,
                    reference: k.reference.as_deref(),
                    policy: &k.policy,
                    reason: k.reason.to_string(),
                    why: &k.reason,
                })
                .collect(),
            reclaim_bytes: plan.reclaim_bytes,
            notes: plan.notes.iter().map(ToString::to_string).collect(),
            images: snapshot.images.len(),
            image_bytes: snapshot.image_bytes(),
            records: plan
                .records
                .iter()
                .map(|r| {
                    let rec = snapshot.cache.records.get(r.record);
                    RecordJson {
                        record_id: &r.record_id,
                        kind: rec.map_or("", |c| c.kind.as_str()),
                        description: rec.map_or("", |c| c.description.as_str()),
                        size_bytes: rec.map_or(0, |c| c.size),
                        reclaim_bytes: r.reclaim_bytes,
                        sizes_exact: snapshot.capabilities.models_cache_records,
                        policy: &r.policy,
                        reason: r.reason.to_string(),
                        why: &r.reason,
                    }
                })
                .collect(),
            kept_records: plan
                .kept_records
                .iter()
                .map(|k| {
                    let rec = snapshot.cache.records.get(k.record);
                    KeptRecordJson {
                        record_id: &k.record_id,
                        kind: rec.map_or("", |c| c.kind.as_str()),
                        description: rec.map_or("", |c| c.description.as_str()),
                        policy: &k.policy,
                        reason: k.reason.to_string(),
                        why: &k.reason,
                    }
                })
                .collect(),
            build_cache_records: snapshot.cache.len(),
            containers: containers_json(plan, snapshot),
            kept_containers: kept_containers_json(plan, snapshot),
        }
    }
}

impl<'a> PassJson<'a> {
    /// The document for `once`; `report` is `None` when nothing ran.
    pub fn new(
        plan: &'a Plan,
        snapshot: &'a Snapshot,
        report: Option<&'a Report>,
        dry_run: bool,
    ) -> Self {
        let exact = report.is_none_or(|r| r.reclaimed_exact);
        let (removed, failed, reclaimed_bytes, deleted_images, skipped, cancelled) = match report {
            Some(r) => (
                r.removed
                    .iter()
                    .map(|r| RemovedJson {
                        image_id: &r.image_id,
                        reference: r.reference.as_deref(),
                        policy: &r.policy,
                        reclaimed_bytes: r.reclaimed_bytes,
                        deleted_images: &r.deleted_images,
                        untagged: &r.untagged,
                    })
                    .collect(),
                r.failed.iter().map(FailedJson::from).collect(),
                r.reclaimed_bytes,
                r.deleted_images(),
                r.skipped,
                r.cancelled,
            ),
            None => (Vec::new(), Vec::new(), 0, 0, 0, false),
        };
        let records: (&[_], &[_], &[_]) = report.map_or((&[], &[], &[]), |r| {
            (
                r.records_removed.as_slice(),
                r.records_not_deleted.as_slice(),
                r.records_failed.as_slice(),
            )
        });
        let records_removed = records
            .0
            .iter()
            .map(|x| RemovedRecordJson {
                record_id: &x.record_id,
                policy: &x.policy,
                reclaimed_bytes: x.reclaimed_bytes,
                engine_reported_bytes: x.engine_reported_bytes,
            })
            .collect();
        let records_not_deleted = records
            .1
            .iter()
            .map(|x| RecordNotDeletedJson {
                record_id: &x.record_id,
                policy: &x.policy,
            })
            .collect();
        let records_failed = records
            .2
            .iter()
            .map(|x| FailedRecordJson {
                record_id: &x.record_id,
                policy: &x.policy,
                kind: x.kind,
                message: &x.message,
            })
            .collect();
        let records_unsupported = report.map_or(0, |r| r.records_unsupported);
        let (containers_removed, containers_not_removed, containers_failed, pinned_skipped) =
            container_outcomes(report);
        Self {
            plan: PlanJson::new(plan, snapshot),
            dry_run,
            removed,
            failed,
            reclaimed_bytes,
            reclaimed_exact: exact,
            deleted_images,
            skipped,
            cancelled,
            records_removed,
            records_not_deleted,
            records_failed,
            records_unsupported,
            containers_removed,
            containers_not_removed,
            containers_failed,
            pinned_skipped,
        }
    }
}

/// The plan's container removals as JSON.
fn containers_json<'a>(plan: &'a Plan, snapshot: &'a Snapshot) -> Vec<ContainerRemovalJson<'a>> {
    plan.containers
        .iter()
        .map(|c| {
            let snap = snapshot.containers.get(c.container);
            let details = snap.and_then(|s| s.details.as_ref());
            ContainerRemovalJson {
                container_id: &c.container_id,
                name: &c.name,
                state: snap.map_or("", |s| s.container.state.as_str()),
                finished: details.and_then(|d| d.finished_at),
                size_rw_bytes: details.and_then(|d| d.size_rw),
                reclaim_bytes: c.reclaim_bytes,
                policy: &c.policy,
                reason: c.reason.to_string(),
                why: &c.reason,
                unpins: c
                    .unpins
                    .iter()
                    .filter_map(|&i| snapshot.images.get(i).map(|m| m.id.as_str()))
                    .collect(),
            }
        })
        .collect()
}

/// The plan's kept containers as JSON.
fn kept_containers_json<'a>(plan: &'a Plan, snapshot: &'a Snapshot) -> Vec<KeptContainerJson<'a>> {
    plan.kept_containers
        .iter()
        .map(|k| KeptContainerJson {
            container_id: &k.container_id,
            name: &k.name,
            state: snapshot
                .containers
                .get(k.container)
                .map_or("", |s| s.container.state.as_str()),
            policy: &k.policy,
            reason: k.reason.to_string(),
            why: &k.reason,
        })
        .collect()
}

/// The JSON of what a pass's container removals did: removed, refused,
/// failed, and the image removals left pinned.
#[allow(clippy::type_complexity)] // four lists, named at the one caller
fn container_outcomes<'a>(
    report: Option<&'a Report>,
) -> (
    Vec<RemovedContainerJson<'a>>,
    Vec<ContainerNotRemovedJson<'a>>,
    Vec<ContainerNotRemovedJson<'a>>,
    Vec<PinnedSkippedJson<'a>>,
) {
    let not_removed = |list: &'a [ContainerNotRemoved]| {
        list.iter()
            .map(|x| ContainerNotRemovedJson {
                container_id: &x.container_id,
                name: &x.name,
                policy: &x.policy,
                kind: x.kind,
                message: &x.message,
            })
            .collect()
    };
    let containers_removed = report.map_or_else(Vec::new, |r| {
        r.containers_removed
            .iter()
            .map(|x| RemovedContainerJson {
                container_id: &x.container_id,
                name: &x.name,
                policy: &x.policy,
                reclaimed_bytes: x.reclaimed_bytes,
            })
            .collect()
    });
    let containers_not_removed =
        report.map_or_else(Vec::new, |r| not_removed(&r.containers_not_removed));
    let containers_failed = report.map_or_else(Vec::new, |r| not_removed(&r.containers_failed));
    let pinned_skipped = report.map_or_else(Vec::new, |r| {
        r.pinned_skipped
            .iter()
            .map(|x| PinnedSkippedJson {
                image_id: &x.image_id,
                reference: x.reference.as_deref(),
                policy: &x.policy,
                container: &x.container,
            })
            .collect()
    });
    (
        containers_removed,
        containers_not_removed,
        containers_failed,
        pinned_skipped,
    )
}

impl<'a> From<&'a Failed> for FailedJson<'a> {
    fn from(f: &'a Failed) -> Self {
        Self {
            image_id: &f.image_id,
            reference: f.reference.as_deref(),
            policy: &f.policy,
            kind: f.kind,
            message: &f.message,
        }
    }
}

/// `imagegc explain IMAGE --output json`.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainJson<'a> {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `image`: what the document explains (a build-cache record's is
    /// [`ExplainRecordJson`], `build_cache_record`).
    pub kind: &'static str,
    /// `sha256:<hex>`.
    pub image_id: &'a str,
    /// Tag references.
    pub references: &'a [String],
    /// Digest references.
    pub digests: &'a [String],
    /// Bytes of all its layers, shared ones included.
    pub size_bytes: u64,
    /// Bytes deleting it alone would free.
    pub unique_bytes: u64,
    /// Bytes deleting it with the untagged parents only it holds would free.
    pub with_parents_bytes: u64,
    /// How many such parents.
    pub parents_freed: usize,
    /// Created time.
    pub created: DateTime<Utc>,
    /// First seen by imagegc, or `null`.
    pub first_seen: Option<DateTime<Utc>>,
    /// `seen`, `baseline`, `no_state_yet` or `tracking_restarted`.
    pub first_seen_basis: &'static str,
    /// When the engine last put a reference on it, or `null`.
    pub last_tagged: Option<DateTime<Utc>>,
    /// Last used.
    pub last_used: DateTime<Utc>,
    /// `created`, `tagged`, `container`, `event`, `tracking_restarted` or
    /// `build`.
    pub last_used_source: &'static str,
    /// For a `build` last use: which build, in words (the image built on it,
    /// or the build-cache record made from it); `null` otherwise.
    pub last_used_by_build: Option<&'a str>,
    /// Containers using it.
    pub containers: Vec<ContainerJson<'a>>,
    /// Parent image ID, or `null`.
    pub parent: Option<&'a str>,
    /// Number of child images.
    pub children: usize,
    /// Bytes of its layers that build-cache records hold: deleting the
    /// image frees them only after those records go.
    pub held_by_cache_bytes: u64,
    /// The IDs of those records.
    pub held_by_records: &'a [String],
    /// How each policy sees each reference.
    pub policies: Vec<PolicyJson<'a>>,
    /// Every safety rule that protects it.
    pub safety: Vec<SafetyJson<'a>>,
    /// What the next pass would do with it.
    pub next_pass: NextPassJson<'a>,
    /// The one-line answer.
    pub summary: String,
}

/// A container using the image.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerJson<'a> {
    /// Short container ID.
    pub id: &'a str,
    /// First name, or empty.
    pub name: &'a str,
    /// State.
    pub state: &'a str,
    /// The `[[containers]]` policy the next pass removes it by, or `null`.
    pub removed_by: Option<&'a str>,
    /// Why the next pass keeps it although a policy wants it, or `null`.
    pub kept_because: Option<&'a KeptBecause>,
}

/// One policy's view of one reference.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyJson<'a> {
    /// The policy's name.
    pub policy: &'a str,
    /// The tag, or `null` for the untagged image.
    pub reference: Option<&'a str>,
    /// Whether its selectors pick it.
    pub selected: bool,
    /// Each condition it sets (empty when not selected).
    pub conditions: Vec<ConditionJson>,
    /// Selected and every condition holds.
    pub conditions_hold: bool,
}

/// One condition, checked.
#[derive(Debug, Clone, Serialize)]
pub struct ConditionJson {
    /// `unused_for`, `older_than`, `keep_most_recent` or `disk_high`.
    pub condition: &'static str,
    /// Whether it holds.
    pub holds: bool,
    /// The figures, in words.
    pub detail: String,
}

/// A safety rule that protects a reference (or the untagged image).
#[derive(Debug, Clone, Serialize)]
pub struct SafetyJson<'a> {
    /// The tag, or `null`.
    pub reference: Option<&'a str>,
    /// The rule, in words.
    pub rule: String,
    /// The rule, typed.
    pub why: &'a KeptBecause,
}

/// The next pass, for this image.
#[derive(Debug, Clone, Serialize)]
pub struct NextPassJson<'a> {
    /// Its removals.
    pub removals: Vec<NextRemovalJson<'a>>,
    /// What safety keeps.
    pub kept: Vec<NextKeptJson<'a>>,
}

/// A removal of the next pass.
#[derive(Debug, Clone, Serialize)]
pub struct NextRemovalJson<'a> {
    /// The tag, or `null`.
    pub reference: Option<&'a str>,
    /// The policy.
    pub policy: &'a str,
    /// Why, in words.
    pub reason: String,
    /// Why, typed.
    pub why: &'a Reasons,
    /// Bytes it frees in plan order.
    pub reclaim_bytes: u64,
}

/// A reference the next pass keeps.
#[derive(Debug, Clone, Serialize)]
pub struct NextKeptJson<'a> {
    /// The tag, or `null`.
    pub reference: Option<&'a str>,
    /// The policy that wanted it.
    pub policy: &'a str,
    /// The rule, in words.
    pub reason: String,
    /// The rule, typed.
    pub why: &'a KeptBecause,
}

impl<'a> ExplainJson<'a> {
    /// The document for one explanation.
    pub fn new(e: &'a Explanation) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            kind: "image",
            image_id: &e.image_id,
            references: &e.references,
            digests: &e.digests,
            size_bytes: e.size_bytes,
            unique_bytes: e.unique_bytes,
            with_parents_bytes: e.with_parents_bytes,
            parents_freed: e.parents_freed,
            created: e.created,
            first_seen: e.first_seen,
            first_seen_basis: e.first_seen_basis.as_str(),
            last_tagged: e.last_tagged,
            last_used: e.last_used,
            last_used_source: e.last_used_source,
            last_used_by_build: e.last_used_by_build.as_deref(),
            containers: e
                .containers
                .iter()
                .map(|c| ContainerJson {
                    id: &c.id,
                    name: &c.name,
                    state: &c.state,
                    removed_by: c.removed_by.as_deref(),
                    kept_because: c.kept_because.as_ref(),
                })
                .collect(),
            parent: e.parent.as_deref(),
            children: e.children,
            held_by_cache_bytes: e.held_by_cache_bytes,
            held_by_records: &e.held_by_records,
            policies: e
                .verdicts
                .iter()
                .map(|v| PolicyJson {
                    policy: &v.policy,
                    reference: v.reference.as_deref(),
                    selected: v.selected,
                    conditions: v
                        .conditions
                        .iter()
                        .map(|c| ConditionJson {
                            condition: c.condition,
                            holds: c.holds,
                            detail: c.fact.to_string(),
                        })
                        .collect(),
                    conditions_hold: v.selected && v.conditions.iter().all(|c| c.holds),
                })
                .collect(),
            safety: e
                .protections
                .iter()
                .map(|p| SafetyJson {
                    reference: p.reference.as_deref(),
                    rule: p.rule.to_string(),
                    why: &p.rule,
                })
                .collect(),
            next_pass: NextPassJson {
                removals: e
                    .removals
                    .iter()
                    .map(|r| NextRemovalJson {
                        reference: r.reference.as_deref(),
                        policy: &r.policy,
                        reason: r.reason.to_string(),
                        why: &r.reason,
                        reclaim_bytes: r.reclaim_bytes,
                    })
                    .collect(),
                kept: e
                    .kept
                    .iter()
                    .map(|k| NextKeptJson {
                        reference: k.reference.as_deref(),
                        policy: &k.policy,
                        reason: k.reason.to_string(),
                        why: &k.reason,
                    })
                    .collect(),
            },
            summary: e.summary(),
        }
    }
}

/// `imagegc explain RECORD-ID --output json`: one build-cache record.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainRecordJson<'a> {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `build_cache_record`.
    pub kind: &'static str,
    /// The full record ID.
    pub record_id: &'a str,
    /// The record's type as the engine spells it.
    #[serde(rename = "type")]
    pub record_type: &'a str,
    /// What made it, as the engine describes it.
    pub description: &'a str,
    /// Its size as the engine counts it (shared bytes included).
    pub size_bytes: u64,
    /// Bytes removing it alone, now, would free.
    pub frees_bytes: u64,
    /// Bytes of image layers whose data it shares.
    pub held_layer_bytes: u64,
    /// Created time.
    pub created: DateTime<Utc>,
    /// When a build last used it, or `null` if never.
    pub last_used: Option<DateTime<Utc>>,
    /// How many builds used it.
    pub usage_count: u64,
    /// A running build holds it.
    pub in_use: bool,
    /// Its data is shared with image layers or other records.
    pub shared: bool,
    /// Parent record IDs.
    pub parents: &'a [String],
    /// Child record IDs.
    pub children: &'a [String],
    /// How each `[[build_cache]]` policy sees it (`reference` is `null`).
    pub policies: Vec<PolicyJson<'a>>,
    /// Every safety rule that protects it (`reference` is `null`).
    pub safety: Vec<SafetyJson<'a>>,
    /// What the next pass would do with it.
    pub next_pass: NextPassJson<'a>,
    /// The one-line answer.
    pub summary: String,
}

impl<'a> ExplainRecordJson<'a> {
    /// The document for one record's explanation.
    pub fn new(e: &'a RecordExplanation) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            kind: "build_cache_record",
            record_id: &e.record_id,
            record_type: &e.kind,
            description: &e.description,
            size_bytes: e.size_bytes,
            frees_bytes: e.frees_bytes,
            held_layer_bytes: e.held_layer_bytes,
            created: e.created,
            last_used: e.last_used,
            usage_count: e.usage_count,
            in_use: e.in_use,
            shared: e.shared,
            parents: &e.parents,
            children: &e.children,
            policies: e.verdicts.iter().map(policy_json).collect(),
            safety: e
                .protections
                .iter()
                .map(|p| SafetyJson {
                    reference: p.reference.as_deref(),
                    rule: p.rule.to_string(),
                    why: &p.rule,
                })
                .collect(),
            next_pass: NextPassJson {
                removals: e
                    .removal
                    .iter()
                    .map(|r| NextRemovalJson {
                        reference: None,
                        policy: &r.policy,
                        reason: r.reason.to_string(),
                        why: &r.reason,
                        reclaim_bytes: r.reclaim_bytes,
                    })
                    .collect(),
                kept: e
                    .kept
                    .iter()
                    .map(|k| NextKeptJson {
                        reference: None,
                        policy: &k.policy,
                        reason: k.reason.to_string(),
                        why: &k.reason,
                    })
                    .collect(),
            },
            summary: e.summary(),
        }
    }
}

/// `imagegc explain CONTAINER --output json`.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainContainerJson<'a> {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `container`.
    pub kind: &'static str,
    /// The full container ID.
    pub container_id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its state as the engine spells it.
    pub state: &'a str,
    /// The image ID it uses.
    pub image_id: &'a str,
    /// The image reference it was created from.
    pub image_ref: &'a str,
    /// Created time.
    pub created: DateTime<Utc>,
    /// Last start, or `null` (never started, or not inspected).
    pub started: Option<DateTime<Utc>>,
    /// Finish time, or `null`.
    pub finished: Option<DateTime<Utc>>,
    /// Restart policy, or `null` when not inspected.
    pub restart_policy: Option<&'a str>,
    /// Writable layer (`SizeRw`), or `null` when the engine did not say.
    pub size_rw_bytes: Option<u64>,
    /// How each `[[containers]]` policy sees it.
    pub policies: Vec<PolicyJson<'a>>,
    /// Every safety rule that protects it.
    pub safety: Vec<SafetyJson<'a>>,
    /// What the next pass would do with it.
    pub next_pass: NextPassJson<'a>,
    /// Images (first tag or short ID) its removal unpins.
    pub unpins: &'a [String],
    /// The one-line answer.
    pub summary: String,
}

impl<'a> ExplainContainerJson<'a> {
    /// The document for one container's explanation.
    pub fn new(e: &'a ContainerExplanation) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            kind: "container",
            container_id: &e.container_id,
            name: &e.name,
            state: &e.state,
            image_id: &e.image_id,
            image_ref: &e.image_ref,
            created: e.created,
            started: e.started_at,
            finished: e.finished_at,
            restart_policy: e.restart_policy.as_deref(),
            size_rw_bytes: e.size_rw,
            policies: e.verdicts.iter().map(policy_json).collect(),
            safety: e
                .protections
                .iter()
                .map(|p| SafetyJson {
                    reference: None,
                    rule: p.rule.to_string(),
                    why: &p.rule,
                })
                .collect(),
            next_pass: NextPassJson {
                removals: e
                    .removal
                    .iter()
                    .map(|r| NextRemovalJson {
                        reference: None,
                        policy: &r.policy,
                        reason: r.reason.to_string(),
                        why: &r.reason,
                        reclaim_bytes: r.reclaim_bytes,
                    })
                    .collect(),
                kept: e
                    .kept
                    .iter()
                    .map(|k| NextKeptJson {
                        reference: None,
                        policy: &k.policy,
                        reason: k.reason.to_string(),
                        why: &k.reason,
                    })
                    .collect(),
            },
            unpins: &e.unpins,
            summary: e.summary(),
        }
    }
}

fn policy_json(v: &crate::gc::Verdict) -> PolicyJson<'_> {
    PolicyJson {
        policy: &v.policy,
        reference: v.reference.as_deref(),
        selected: v.selected,
        conditions: v
            .conditions
            .iter()
            .map(|c| ConditionJson {
                condition: c.condition,
                holds: c.holds,
                detail: c.fact.to_string(),
            })
            .collect(),
        conditions_hold: v.selected && v.conditions.iter().all(|c| c.holds),
    }
}

/// A document as a JSON value: object keys sorted, as the output has always
/// printed them.
pub fn to_value<T: Serialize>(document: &T) -> Value {
    // Serializing these structs (strings, numbers, lists) cannot fail.
    serde_json::to_value(document).expect("a JSON document serializes")
}

/// The plan as JSON.
pub fn plan_json(plan: &Plan, snapshot: &Snapshot) -> Value {
    to_value(&PlanJson::new(plan, snapshot))
}

/// The plan and what execution did, as JSON (the `once` output).
pub fn pass_json(
    plan: &Plan,
    snapshot: &Snapshot,
    report: Option<&Report>,
    dry_run: bool,
) -> Value {
    to_value(&PassJson::new(plan, snapshot, report, dry_run))
}
