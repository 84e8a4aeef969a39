//! Carries out a plan against an engine and reports what happened.
//!
//! Removals start in plan order (children before parents), never forced:
//! containers and build-cache records one at a time, images with at most
//! `[safety] max_parallel_removals` in flight, each only after the earlier
//! removals it depends on ([`removal_dependencies`]), their answers settled
//! in plan order. A 409 (now in use, has children) or 404 (already gone) is
//! a normal outcome: counted, logged at info, and the pass goes on.
//! Cancellation is checked before each start only, so a removal in flight
//! always finishes.
//!
//! Where the reclaimed bytes come from is the engine's capability
//! ([`ReclaimSource`]): on an engine that lists the layers a removal
//! deleted (Docker), they are the sizes of those layer chain IDs, not the
//! prediction; on one that lists none, they are the ledger's prediction for
//! the removals that succeeded, and the report says they are estimated.
//!
//! Container removals ([`Plan::containers`]) run first, one
//! `remove_container` call each (never forced, never volumes: the engine's
//! contract), in plan order. A 409 (running again, being removed) or 404
//! (gone already) is a normal outcome, counted and logged at info; the image
//! removals that container would have unpinned ([`Removal::unpinned_by`]
//! naming it) are then not attempted this pass and are reported as
//! [`Report::pinned_skipped`], not as failures. A removed container frees its
//! writable layer: the plan's `reclaim_bytes` for it, the engine's own
//! `SizeRw` figure (the removal answer reports no bytes). That counts as
//! exact; a container whose size the engine did not report makes the pass's
//! bytes an estimate.
//!
//! Build-cache record removals ([`Plan::records`]) run after every image
//! removal, in plan order (children before parents), one anchored prune per
//! record. A record the engine did not delete (`CachesDeleted` lacks it) is a
//! normal outcome, counted and logged; an engine without a build cache stops
//! the record removals with one warning, not a failed pass. A record's bytes
//! are the ledger's, replayed over what actually happened (the image
//! removals the engine carried out, then each record it deleted): the engine
//! names which records went, never what that freed (its `SpaceReclaimed`
//! counts shared bytes). So an image removal whose layers records still hold
//! reports 0 and the record removal that releases them reports the bytes,
//! and no byte is counted twice.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::engine::{Capabilities, DeleteItem, Engine, EngineError};
use crate::gc::ledger::{Effect, Ledger};
use crate::gc::plan::ContainerRemoval;
use crate::gc::{Plan, Removal};
use crate::inventory::Snapshot;

/// What a pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Removals the engine carried out.
    pub removed: Vec<Removed>,
    /// Removals the engine refused or that failed.
    pub failed: Vec<Failed>,
    /// Removals not attempted: the pass was cancelled or lost the engine.
    pub skipped: usize,
    /// Bytes of the layers the engine deleted (see `reclaimed_exact`).
    pub reclaimed_bytes: u64,
    /// True when the image bytes are what the engine reported deleting;
    /// false when they are the ledger's estimate ([`ReclaimSource::Predicted`]).
    /// Build-cache record bytes always come from the ledger (the engine's
    /// `SpaceReclaimed` counts shared bytes that stay on disk): its model of
    /// shared layers, checked against the data root's drop on disk by
    /// `tests/build_cache_scenario.rs`; they do not clear this flag.
    pub reclaimed_exact: bool,
    /// True when cancellation stopped the pass early.
    pub cancelled: bool,
    /// True when the engine stopped answering during the pass.
    pub engine_lost: bool,
    /// Build-cache records the engine deleted, in the order removed. Their
    /// bytes are in `reclaimed_bytes` too.
    pub records_removed: Vec<RemovedRecord>,
    /// Build-cache records the engine was asked to remove and did not
    /// delete (in use by then, children left, gone already): normal.
    pub records_not_deleted: Vec<RecordNotDeleted>,
    /// Build-cache record removals that failed with an engine error.
    pub records_failed: Vec<FailedRecord>,
    /// Record removals not attempted because the engine has no build cache
    /// (it said so at the first one): not a failure.
    pub records_unsupported: usize,
    /// Stopped containers the engine removed, in the order removed. Their
    /// bytes are in `reclaimed_bytes` too.
    pub containers_removed: Vec<RemovedContainer>,
    /// Containers the engine refused with a 409 (running again, being
    /// removed) or 404 (gone already): normal outcomes.
    pub containers_not_removed: Vec<ContainerNotRemoved>,
    /// Container removals that failed with another engine error.
    pub containers_failed: Vec<ContainerNotRemoved>,
    /// Image removals not attempted because a container they needed gone
    /// was not removed: the image is still pinned this pass. Not failures.
    pub pinned_skipped: Vec<PinnedSkipped>,
}

impl Default for Report {
    /// Nothing done, nothing reclaimed (exactly).
    fn default() -> Self {
        Self {
            removed: Vec::new(),
            failed: Vec::new(),
            skipped: 0,
            reclaimed_bytes: 0,
            reclaimed_exact: true,
            cancelled: false,
            engine_lost: false,
            records_removed: Vec::new(),
            records_not_deleted: Vec::new(),
            records_failed: Vec::new(),
            records_unsupported: 0,
            containers_removed: Vec::new(),
            containers_not_removed: Vec::new(),
            containers_failed: Vec::new(),
            pinned_skipped: Vec::new(),
        }
    }
}

/// Where reclaimed bytes and deleted images come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReclaimSource {
    /// The layer chain IDs (and image IDs) the engine lists as deleted.
    ReportedLayers,
    /// The engine lists nothing: the ledger's prediction for the removals
    /// the engine carried out, replayed against the snapshot. An estimate.
    Predicted,
}

impl ReclaimSource {
    /// The source an engine with `capabilities` allows.
    pub fn for_engine(capabilities: &Capabilities) -> Self {
        if capabilities.reports_deleted_layers {
            Self::ReportedLayers
        } else {
            Self::Predicted
        }
    }
}

impl Report {
    /// Images the engine deleted in this pass.
    pub fn deleted_images(&self) -> usize {
        self.removed.iter().map(|r| r.deleted_images.len()).sum()
    }

    /// Bytes the container removals freed (their writable layers; part of
    /// `reclaimed_bytes`).
    pub fn container_bytes(&self) -> u64 {
        self.containers_removed
            .iter()
            .fold(0u64, |total, c| total.saturating_add(c.reclaimed_bytes))
    }

    /// Bytes the build-cache record removals freed (part of
    /// `reclaimed_bytes`).
    pub fn record_bytes(&self) -> u64 {
        self.records_removed
            .iter()
            .fold(0u64, |total, r| total.saturating_add(r.reclaimed_bytes))
    }
}

/// One stopped container the engine removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedContainer {
    /// The container's full ID.
    pub container_id: String,
    /// Its name.
    pub name: String,
    /// The `[[containers]]` policy that asked for it.
    pub policy: String,
    /// Bytes of its writable layer (`SizeRw`, the engine's figure; 0 when
    /// the engine did not report it).
    pub reclaimed_bytes: u64,
}

/// A container removal that did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerNotRemoved {
    /// The container's full ID.
    pub container_id: String,
    /// Its name.
    pub name: String,
    /// The policy that asked for it.
    pub policy: String,
    /// [`EngineError::kind`]: `conflict`, `not_found` or `engine`.
    pub kind: &'static str,
    /// The engine's words.
    pub message: String,
}

/// An image removal left for a later pass because a container pinning it
/// was not removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedSkipped {
    /// The image the removal was for.
    pub image_id: String,
    /// The tag, or `None` for an untagged image.
    pub reference: Option<String>,
    /// The policy that asked for it.
    pub policy: String,
    /// The container (name) that is still there.
    pub container: String,
}

/// One build-cache record the engine deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedRecord {
    /// The record ID.
    pub record_id: String,
    /// The `[[build_cache]]` policy that asked for it.
    pub policy: String,
    /// Bytes its removal freed, as the ledger counts them after what the
    /// pass removed before it (0 for a shared record an image still uses).
    pub reclaimed_bytes: u64,
    /// What the engine said it reclaimed (`SpaceReclaimed`; shared bytes
    /// included, so information only).
    pub engine_reported_bytes: u64,
}

/// A build-cache record the engine was asked to remove and did not delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordNotDeleted {
    /// The record ID.
    pub record_id: String,
    /// The policy that asked for it.
    pub policy: String,
}

/// A build-cache record removal that failed with an engine error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecord {
    /// The record ID.
    pub record_id: String,
    /// The policy that asked for it.
    pub policy: String,
    /// [`EngineError::kind`]: `conflict`, `not_found` or `engine`.
    pub kind: &'static str,
    /// The engine's words.
    pub message: String,
}

/// One removal the engine carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The image the removal was for.
    pub image_id: String,
    /// The tag removed, or `None` for an untagged image removed by ID.
    pub reference: Option<String>,
    /// The policy that asked for it.
    pub policy: String,
    /// Bytes of the layers deleted by this removal.
    pub reclaimed_bytes: u64,
    /// Image IDs the engine deleted.
    pub deleted_images: Vec<String>,
    /// References the engine removed.
    pub untagged: Vec<String>,
}

/// One removal that did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The image the removal was for.
    pub image_id: String,
    /// The tag, or `None` for an untagged image.
    pub reference: Option<String>,
    /// The policy that asked for it.
    pub policy: String,
    /// `conflict`, `not_found` or `engine`.
    pub kind: &'static str,
    /// The engine's words.
    pub message: String,
}

/// Run `plan` against `engine`, one image removal at a time
/// ([`execute_with`] with a bound of 1). Layer sizes come from `snapshot`,
/// the one the plan was made from.
pub async fn execute<E: Engine>(
    engine: &E,
    snapshot: &Snapshot,
    plan: &Plan,
    cancel: &CancellationToken,
) -> Report {
    execute_with(engine, snapshot, plan, cancel, NonZeroUsize::MIN).await
}

/// Run `plan` against `engine` with at most `max_parallel` image removals
/// in flight (`[safety] max_parallel_removals`), each started only after
/// the earlier removals it depends on ([`removal_dependencies`]) finished.
/// Container and record removals stay one at a time. The report is the
/// same, entry for entry and byte for byte, as with a bound of 1: outcomes
/// are settled in plan order, whatever order the engine answers in.
pub async fn execute_with<E: Engine>(
    engine: &E,
    snapshot: &Snapshot,
    plan: &Plan,
    cancel: &CancellationToken,
    max_parallel: NonZeroUsize,
) -> Report {
    let capabilities = engine.capabilities();
    let source = ReclaimSource::for_engine(&capabilities);
    let mut settle = Settle {
        snapshot,
        capabilities,
        source,
        layer_size: snapshot
            .layers
            .iter()
            .map(|l| (l.chain_id.as_str(), l.size))
            .collect(),
        image_ids: snapshot.images.iter().map(|i| i.id.as_str()).collect(),
        // Replays only the removals that happened, so a refusal frees
        // nothing. On an engine that lists deleted layers it is there for
        // the records: which layers the images removed so far released to
        // them.
        ledger: Ledger::new(snapshot),
        reported_layers: HashSet::new(),
        report: Report {
            // A modelled store's prediction is exact where its facts are.
            reclaimed_exact: source == ReclaimSource::ReportedLayers
                || capabilities.models_removed_bytes,
            ..Report::default()
        },
    };
    let Some(still_pinned) = execute_containers(
        engine,
        snapshot,
        plan,
        cancel,
        &mut settle.ledger,
        &mut settle.report,
    )
    .await
    else {
        return settle.report;
    };
    if let Some(stop) = execute_images(
        engine,
        plan,
        cancel,
        max_parallel,
        &still_pinned,
        &mut settle,
    )
    .await
    {
        let report = &mut settle.report;
        report.skipped = plan.removals.len() - stop.started + plan.records.len();
        if stop.engine_lost {
            warn!(skipped = report.skipped, "engine unreachable; pass stops");
        } else {
            report.cancelled = true;
            info!(skipped = report.skipped, "pass cancelled between removals");
        }
        return settle.report;
    }
    let Settle {
        mut ledger,
        reported_layers,
        mut report,
        ..
    } = settle;
    execute_records(
        engine,
        snapshot,
        plan,
        cancel,
        &mut ledger,
        &reported_layers,
        &mut report,
    )
    .await;
    report
}

/// Where the image removals stopped early.
struct Stop {
    /// Removals started (or skipped as pinned) before the stop, a prefix of
    /// the plan's; the rest are `skipped`.
    started: usize,
    /// True when the engine stopped answering, false when cancelled.
    engine_lost: bool,
}

/// What an image removal's slot holds.
enum Slot {
    /// Not started yet.
    Waiting,
    /// Started, no answer yet.
    InFlight,
    /// Skipped as still pinned (already in the report).
    Pinned,
    /// The engine's answer, not yet settled into the report.
    Answered(Result<Vec<DeleteItem>, EngineError>),
    /// Settled.
    Settled,
}

impl Slot {
    /// Whether a removal that depends on this one may start.
    fn finished(&self) -> bool {
        matches!(self, Self::Pinned | Self::Answered(_) | Self::Settled)
    }
}

/// The image removals of `plan`, at most `max_parallel` in flight, started
/// in plan order (a removal whose dependencies are still in flight holds
/// back the ones after it), settled in plan order. `None` when all ran;
/// else where they stopped: cancellation (no removal starts after it, those
/// in flight finish and are reported) or a lost engine.
async fn execute_images<E: Engine>(
    engine: &E,
    plan: &Plan,
    cancel: &CancellationToken,
    max_parallel: NonZeroUsize,
    still_pinned: &HashSet<&str>,
    settle: &mut Settle<'_, '_>,
) -> Option<Stop> {
    let removals = &plan.removals;
    let depends_on = removal_dependencies(settle.snapshot, removals);
    let mut slots: Vec<Slot> = removals.iter().map(|_| Slot::Waiting).collect();
    let mut in_flight = FuturesUnordered::new();
    let start = |n: usize| {
        let target = removals[n].target();
        async move { (n, engine.remove_image(target).await) }
    };
    let mut next = 0;
    let mut settled = 0;
    let mut stop: Option<bool> = None;
    loop {
        while stop.is_none() && next < removals.len() && in_flight.len() < max_parallel.get() {
            if cancel.is_cancelled() {
                stop = Some(false);
                break;
            }
            let removal = &removals[next];
            if let Some(pinned) = still_pinned_by(removal, still_pinned) {
                settle.report.pinned_skipped.push(pinned);
                slots[next] = Slot::Pinned;
                next += 1;
                continue;
            }
            if !depends_on[next].iter().all(|&d| slots[d].finished()) {
                break;
            }
            slots[next] = Slot::InFlight;
            in_flight.push(start(next));
            next += 1;
        }
        while settled < next {
            match std::mem::replace(&mut slots[settled], Slot::Settled) {
                Slot::Answered(answer) => settle.image_removal(&removals[settled], answer),
                Slot::InFlight => {
                    slots[settled] = Slot::InFlight;
                    break;
                }
                _ => {}
            }
            settled += 1;
        }
        let Some((n, answer)) = in_flight.next().await else {
            // Nothing in flight: every removal ran, or none may start.
            break;
        };
        if matches!(&answer, Err(err) if err.is_unreachable()) {
            stop = Some(true);
        }
        slots[n] = Slot::Answered(answer);
    }
    stop.map(|engine_lost| Stop {
        started: next,
        engine_lost,
    })
}

/// For each image removal of `removals` (in plan order, children first),
/// the earlier ones it must wait for: the one before it of the same image
/// (one reference of an image at a time), the one before it of a descendant
/// of its image (`parent` or `chain_parent` links: a parent only after its
/// children), and, for a removal that may delete its image, the one before
/// it that may delete an image holding one of the same layers or blobs (so
/// the engine deletes a shared layer with the same removal as one by one,
/// and the bytes are reported against the same entry). Waiting for the last
/// one of each kind is waiting for all: those wait for theirs.
pub fn removal_dependencies(snapshot: &Snapshot, removals: &[Removal]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq, Eq, Hash)]
    enum Key {
        Image(usize),
        Descendant(usize),
        Layer(u32),
        Blob(u32),
    }
    let mut last_of_image: HashMap<usize, usize> = HashMap::new();
    for (n, removal) in removals.iter().enumerate() {
        last_of_image.insert(removal.image, n);
    }
    let mut last: HashMap<Key, usize> = HashMap::new();
    let mut depends_on = Vec::with_capacity(removals.len());
    for (n, removal) in removals.iter().enumerate() {
        let image = removal.image;
        let mut mine = vec![Key::Image(image), Key::Descendant(image)];
        let may_delete = removal.deletes_image
            || removal.reference.is_none()
            || last_of_image.get(&image) == Some(&n);
        if let Some(facts) = snapshot.images.get(image).filter(|_| may_delete) {
            mine.extend(facts.layers.iter().map(|&l| Key::Layer(l)));
            mine.extend(facts.blobs.iter().map(|&b| Key::Blob(b)));
        }
        let mut deps: Vec<usize> = mine.iter().filter_map(|k| last.get(k).copied()).collect();
        deps.sort_unstable();
        deps.dedup();
        depends_on.push(deps);
        // Register under every key a later removal may look it up by: its
        // image's ancestors see it as a descendant's removal.
        mine.retain(|k| *k != Key::Descendant(image));
        mine.extend(ancestors(snapshot, image).into_iter().map(Key::Descendant));
        for key in mine {
            last.insert(key, n);
        }
    }
    depends_on
}

/// Every ancestor of image `image` by `parent` and `chain_parent` links.
fn ancestors(snapshot: &Snapshot, image: usize) -> Vec<usize> {
    let links = |i: usize| {
        [
            snapshot.parent.get(i).copied().flatten(),
            snapshot.chain_parent.get(i).copied().flatten(),
        ]
    };
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![image];
    while let Some(i) = stack.pop() {
        for p in links(i).into_iter().flatten() {
            if p != image && seen.insert(p) {
                found.push(p);
                stack.push(p);
            }
        }
    }
    found
}

/// What settling image removals into a report needs, in plan order.
struct Settle<'s, 'l> {
    snapshot: &'s Snapshot,
    capabilities: Capabilities,
    source: ReclaimSource,
    /// Layer sizes by chain ID.
    layer_size: HashMap<&'s str, u64>,
    /// The snapshot's image IDs, to tell deleted images from layers.
    image_ids: HashSet<&'s str>,
    ledger: Ledger<'l>,
    /// Chain IDs the engine listed as deleted.
    reported_layers: HashSet<&'s str>,
    report: Report,
}

impl Settle<'_, '_> {
    /// Puts the engine's `answer` to image removal `removal` into the
    /// report, as the removal after those settled before it.
    fn image_removal(&mut self, removal: &Removal, answer: Result<Vec<DeleteItem>, EngineError>) {
        let target = removal.target();
        match answer {
            Ok(items) => {
                let mut done = Removed {
                    image_id: removal.image_id.clone(),
                    reference: removal.reference.clone(),
                    policy: removal.policy.clone(),
                    reclaimed_bytes: 0,
                    deleted_images: Vec::new(),
                    untagged: Vec::new(),
                };
                for item in items {
                    match item {
                        DeleteItem::Untagged(r) => done.untagged.push(r),
                        DeleteItem::Deleted(id) => {
                            if let Some((chain, size)) = self.layer_size.get_key_value(id.as_str())
                            {
                                done.reclaimed_bytes = done.reclaimed_bytes.saturating_add(*size);
                                self.reported_layers.insert(chain);
                            } else if self.image_ids.contains(id.as_str()) {
                                done.deleted_images.push(id);
                            }
                        }
                    }
                }
                let effect = replay(&mut self.ledger, removal);
                if self.source == ReclaimSource::Predicted {
                    self.report.reclaimed_exact &= !effect.estimated;
                    predicted(effect, self.snapshot, &mut done);
                }
                self.report.reclaimed_bytes = self
                    .report
                    .reclaimed_bytes
                    .saturating_add(done.reclaimed_bytes);
                info!(
                    policy = %removal.policy,
                    target = %target,
                    image = %removal.image_id,
                    bytes = done.reclaimed_bytes,
                    deleted_images = done.deleted_images.len(),
                    reason = %removal.reason,
                    "removed"
                );
                self.report.removed.push(done);
            }
            Err(EngineError::NotFound(_))
                if pruned_with_child(&self.capabilities, self.snapshot, removal, &self.report) =>
            {
                pruned_parent(
                    &mut self.ledger,
                    self.snapshot,
                    removal,
                    self.source,
                    &mut self.report,
                );
            }
            Err(err) => {
                if err.is_unreachable() {
                    self.report.engine_lost = true;
                }
                let failed = refused(removal, target, &err);
                self.report.failed.push(failed);
            }
        }
    }
}

/// The skip of image removal `removal` (logged) when a container it needed
/// gone is still there, else `None`.
fn still_pinned_by(removal: &Removal, still_pinned: &HashSet<&str>) -> Option<PinnedSkipped> {
    let pin = removal
        .unpinned_by
        .iter()
        .find(|c| still_pinned.contains(c.as_str()))?;
    info!(
        policy = %removal.policy,
        target = %removal.target(),
        container = %pin,
        "not removed this pass: container {pin} that uses it is still there"
    );
    Some(PinnedSkipped {
        image_id: removal.image_id.clone(),
        reference: removal.reference.clone(),
        policy: removal.policy.clone(),
        container: pin.clone(),
    })
}

/// The container removals of `plan`, before its image removals: one call
/// each, in plan order. Returns the names of the containers not removed, so
/// the image removals that needed them gone are skipped; `None` when the
/// pass stops here (cancelled, engine lost).
async fn execute_containers<'p, E: Engine>(
    engine: &E,
    snapshot: &Snapshot,
    plan: &'p Plan,
    cancel: &CancellationToken,
    ledger: &mut Ledger<'_>,
    report: &mut Report,
) -> Option<HashSet<&'p str>> {
    let mut still_pinned = HashSet::new();
    let rest = |n: usize| plan.containers.len() - n + plan.removals.len() + plan.records.len();
    for (n, removal) in plan.containers.iter().enumerate() {
        if cancel.is_cancelled() {
            report.cancelled = true;
            report.skipped = rest(n);
            info!(
                skipped = report.skipped,
                "pass cancelled between container removals"
            );
            return None;
        }
        match engine.remove_container(&removal.container_id).await {
            Ok(()) => {
                ledger.remove_container(removal.container);
                let reported = snapshot
                    .containers
                    .get(removal.container)
                    .and_then(|c| c.details.as_ref())
                    .and_then(|d| d.size_rw)
                    .is_some();
                if !reported {
                    // No figure from the engine: what it freed is unknown.
                    report.reclaimed_exact = false;
                }
                report.reclaimed_bytes =
                    report.reclaimed_bytes.saturating_add(removal.reclaim_bytes);
                info!(
                    policy = %removal.policy,
                    container = %removal.container_id,
                    name = %removal.name,
                    bytes = removal.reclaim_bytes,
                    unpins = removal.unpins.len(),
                    reason = %removal.reason,
                    "container removed"
                );
                report.containers_removed.push(RemovedContainer {
                    container_id: removal.container_id.clone(),
                    name: removal.name.clone(),
                    policy: removal.policy.clone(),
                    reclaimed_bytes: removal.reclaim_bytes,
                });
            }
            Err(err) => {
                still_pinned.insert(removal.name.as_str());
                let not = container_refused(removal, &err);
                if matches!(err, EngineError::Conflict(_) | EngineError::NotFound(_)) {
                    report.containers_not_removed.push(not);
                } else {
                    report.containers_failed.push(not);
                }
                if err.is_unreachable() {
                    report.engine_lost = true;
                    report.skipped = rest(n + 1);
                    warn!(skipped = report.skipped, "engine unreachable; pass stops");
                    return None;
                }
            }
        }
    }
    Some(still_pinned)
}

/// The failure of container removal `removal`, logged: at info for a 409 or
/// 404 (normal outcomes), else as a warning.
fn container_refused(removal: &ContainerRemoval, err: &EngineError) -> ContainerNotRemoved {
    match err {
        EngineError::Conflict(_) | EngineError::NotFound(_) => info!(
            policy = %removal.policy,
            container = %removal.container_id,
            name = %removal.name,
            kind = err.kind(),
            error = %err,
            "container not removed (running again, being removed, or gone); going on"
        ),
        _ => warn!(
            policy = %removal.policy,
            container = %removal.container_id,
            name = %removal.name,
            error = %err,
            "container removal failed"
        ),
    }
    ContainerNotRemoved {
        container_id: removal.container_id.clone(),
        name: removal.name.clone(),
        policy: removal.policy.clone(),
        kind: err.kind(),
        message: err.to_string(),
    }
}

/// The record removals of `plan`, after its image removals: one call per
/// record, in plan order, each record's bytes from `ledger` (which has
/// replayed the image removals that happened). `reported` are the layer
/// chain IDs the engine listed as deleted by those image removals: bytes
/// already counted there are not counted again for the record that held
/// them.
async fn execute_records<E: Engine>(
    engine: &E,
    snapshot: &Snapshot,
    plan: &Plan,
    cancel: &CancellationToken,
    ledger: &mut Ledger<'_>,
    reported: &HashSet<&str>,
    report: &mut Report,
) {
    // Live holders per layer, to find the record that releases a layer the
    // engine already reported deleted.
    let mut holders: HashMap<u32, u32> = HashMap::new();
    for &l in snapshot.cache.holds.iter().flatten() {
        *holders.entry(l).or_default() += 1;
    }
    // Rounds: a record the engine did not delete is asked again after a
    // round that deleted some other record, as long as rounds make progress.
    // The engine refuses a parent while a child exists, and Docker 26.1 names
    // no record's parents (docs/ENGINES.md), so the plan's children-first
    // order is a guess there; a refused parent goes once its children did.
    // At most one round per record; a record in use stays refused and is
    // reported not deleted once.
    let mut pending: Vec<usize> = (0..plan.records.len()).collect();
    let mut first_round = true;
    loop {
        let mut refused: Vec<usize> = Vec::new();
        let mut deleted_any = false;
        for (k, &n) in pending.iter().enumerate() {
            let removal = &plan.records[n];
            if cancel.is_cancelled() {
                report.cancelled = true;
                if first_round {
                    report.skipped = pending.len() - k;
                } else {
                    // Asked once and refused already: not deleted, not skipped.
                    refused.extend_from_slice(&pending[k..]);
                }
                info!(
                    skipped = report.skipped,
                    "pass cancelled between build-cache removals"
                );
                not_deleted(plan, &refused, report);
                return;
            }
            match engine.remove_cache_record(&removal.record_id).await {
                Ok(answer) if answer.deleted => {
                    deleted_any = true;
                    // Off the record model's store, what it freed is an
                    // estimate.
                    report.reclaimed_exact &= engine.capabilities().models_cache_records;
                    let bytes = record_bytes(snapshot, ledger, &mut holders, reported, removal);
                    report.reclaimed_bytes = report.reclaimed_bytes.saturating_add(bytes);
                    info!(
                        policy = %removal.policy,
                        record = %removal.record_id,
                        bytes,
                        engine_reported_bytes = answer.reported_bytes,
                        reason = %removal.reason,
                        retried = !first_round,
                        "build-cache record removed"
                    );
                    report.records_removed.push(RemovedRecord {
                        record_id: removal.record_id.clone(),
                        policy: removal.policy.clone(),
                        reclaimed_bytes: bytes,
                        engine_reported_bytes: answer.reported_bytes,
                    });
                }
                Ok(_) => refused.push(n),
                Err(EngineError::Unsupported(why)) => {
                    report.records_unsupported = pending.len() - k;
                    warn!(
                        skipped = report.records_unsupported,
                        reason = %why,
                        "the engine has no build cache; build-cache removals skipped"
                    );
                    not_deleted(plan, &refused, report);
                    return;
                }
                Err(err) => {
                    warn!(
                        policy = %removal.policy,
                        record = %removal.record_id,
                        error = %err,
                        "build-cache record removal failed"
                    );
                    report.records_failed.push(FailedRecord {
                        record_id: removal.record_id.clone(),
                        policy: removal.policy.clone(),
                        kind: err.kind(),
                        message: err.to_string(),
                    });
                    if err.is_unreachable() {
                        report.engine_lost = true;
                        if first_round {
                            report.skipped = pending.len() - k - 1;
                        } else {
                            refused.extend_from_slice(&pending[k + 1..]);
                        }
                        warn!(skipped = report.skipped, "engine unreachable; pass stops");
                        not_deleted(plan, &refused, report);
                        return;
                    }
                }
            }
        }
        if refused.is_empty() || !deleted_any {
            not_deleted(plan, &refused, report);
            return;
        }
        debug!(
            records = refused.len(),
            "asking again for build-cache records the engine kept while others went"
        );
        // Plan order within the round, as the first time.
        refused.sort_unstable();
        pending = refused;
        first_round = false;
    }
}

/// What deleting `removal`'s record freed: its ledger bytes, less the
/// layers it released that an image removal of this pass already counted
/// (the engine listed them deleted); `holders` counts each layer's live
/// holders.
fn record_bytes(
    snapshot: &Snapshot,
    ledger: &mut Ledger<'_>,
    holders: &mut HashMap<u32, u32>,
    reported: &HashSet<&str>,
    removal: &crate::gc::plan::RecordRemoval,
) -> u64 {
    let mut bytes = ledger.remove_record(removal.record).freed;
    for &l in snapshot
        .cache
        .holds
        .get(removal.record)
        .map_or(&[][..], Vec::as_slice)
    {
        let left = holders.entry(l).or_default();
        *left = left.saturating_sub(1);
        let Some(layer) = snapshot.layers.get(l as usize) else {
            continue;
        };
        if *left == 0 && reported.contains(layer.chain_id.as_str()) {
            // Counted with the image removal the engine said deleted it.
            bytes = bytes.saturating_sub(layer.size);
        }
    }
    bytes
}

/// Records the engine kept (in use, children left, or gone), reported and
/// logged once each, in plan order.
fn not_deleted(plan: &Plan, refused: &[usize], report: &mut Report) {
    let mut refused = refused.to_vec();
    refused.sort_unstable();
    for n in refused {
        let removal = &plan.records[n];
        info!(
            policy = %removal.policy,
            record = %removal.record_id,
            "build-cache record not deleted (in use, children left, or gone); going on"
        );
        report.records_not_deleted.push(RecordNotDeleted {
            record_id: removal.record_id.clone(),
            policy: removal.policy.clone(),
        });
    }
}

/// The failure of `removal` (asked as `target`), logged: at info for a 409
/// or 404 (normal outcomes), else as a warning.
fn refused(removal: &Removal, target: &str, err: &EngineError) -> Failed {
    match err {
        EngineError::Conflict(_) | EngineError::NotFound(_) => info!(
            policy = %removal.policy,
            target = %target,
            kind = err.kind(),
            error = %err,
            "not removed; going on"
        ),
        _ => {
            warn!(policy = %removal.policy, target = %target, error = %err, "removal failed");
        }
    }
    Failed {
        image_id: removal.image_id.clone(),
        reference: removal.reference.clone(),
        policy: removal.policy.clone(),
        kind: err.kind(),
        message: err.to_string(),
    }
}

/// Whether the image `removal` names (untagged) was gone because the engine
/// prunes parents (`prunes_parents`) and a child of it was removed earlier
/// in this pass.
fn pruned_with_child(
    capabilities: &Capabilities,
    snapshot: &Snapshot,
    removal: &Removal,
    report: &Report,
) -> bool {
    capabilities.prunes_parents
        && removal.reference.is_none()
        && report
            .removed
            .iter()
            .flat_map(|done| &done.deleted_images)
            .filter_map(|id| snapshot.by_id.get(id))
            .any(|&child| snapshot.is_ancestor(removal.image, child))
}

/// A parent the engine deleted with its child (Podman prunes parents,
/// `noprune` or not, and lists only the child), as removed: replayed in
/// `ledger`, its bytes counted here, once, in `report`.
fn pruned_parent(
    ledger: &mut Ledger<'_>,
    snapshot: &Snapshot,
    removal: &Removal,
    source: ReclaimSource,
    report: &mut Report,
) {
    let mut done = Removed {
        image_id: removal.image_id.clone(),
        reference: None,
        policy: removal.policy.clone(),
        reclaimed_bytes: 0,
        deleted_images: vec![removal.image_id.clone()],
        untagged: Vec::new(),
    };
    let effect = replay(ledger, removal);
    if source == ReclaimSource::Predicted {
        predicted(effect, snapshot, &mut done);
    }
    info!(
        policy = %removal.policy,
        image = %removal.image_id,
        bytes = done.reclaimed_bytes,
        "removed by the engine with its child"
    );
    report.reclaimed_bytes = report.reclaimed_bytes.saturating_add(done.reclaimed_bytes);
    report.removed.push(done);
}

/// Replays `removal`, which the engine carried out, in `ledger`.
fn replay(ledger: &mut Ledger<'_>, removal: &Removal) -> Effect {
    if removal.reference.is_some() {
        ledger.remove_reference(removal.image)
    } else {
        ledger.remove_untagged(removal.image)
    }
}

/// Fills in what a removal freed and deleted from the ledger's `effect`, for
/// an engine whose answer lists nothing deleted. Image IDs the engine did
/// list are kept.
fn predicted(effect: Effect, snapshot: &Snapshot, done: &mut Removed) {
    done.reclaimed_bytes = done.reclaimed_bytes.saturating_add(effect.freed);
    for i in effect.deleted {
        let id = &snapshot.images[i].id;
        if !done.deleted_images.contains(id) {
            done.deleted_images.push(id.clone());
        }
    }
}
