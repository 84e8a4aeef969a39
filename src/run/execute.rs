//! Carries out a plan against an engine and reports what happened.
//!
//! Removals run one by one in plan order (children before parents), never
//! forced. A 409 (now in use, has children) or 404 (already gone) is a normal
//! outcome: counted, logged at info, and the pass goes on. Cancellation is
//! checked between removals only, so a removal in flight always finishes.
//!
//! Where the reclaimed bytes come from is the engine's capability
//! ([`ReclaimSource`]): on an engine that lists the layers a removal
//! deleted (Docker), they are the sizes of those layer chain IDs, not the
//! prediction; on one that lists none, they are the ledger's prediction for
//! the removals that succeeded, and the report says they are estimated.

use std::collections::{HashMap, HashSet};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::engine::{Capabilities, DeleteItem, Engine, EngineError};
use crate::gc::ledger::Ledger;
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
    /// True when the bytes are what the engine reported deleting; false
    /// when they are the ledger's estimate ([`ReclaimSource::Predicted`]).
    pub reclaimed_exact: bool,
    /// True when cancellation stopped the pass early.
    pub cancelled: bool,
    /// True when the engine stopped answering during the pass.
    pub engine_lost: bool,
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

/// Run `plan` against `engine`. Layer sizes come from `snapshot`, the one the
/// plan was made from.
pub async fn execute<E: Engine>(
    engine: &E,
    snapshot: &Snapshot,
    plan: &Plan,
    cancel: &CancellationToken,
) -> Report {
    let layer_size: HashMap<&str, u64> = snapshot
        .layers
        .iter()
        .map(|l| (l.chain_id.as_str(), l.size))
        .collect();
    let image_ids: HashSet<&str> = snapshot.images.iter().map(|i| i.id.as_str()).collect();
    let source = ReclaimSource::for_engine(&engine.capabilities());
    // Replays only the removals that happened, so a refusal frees nothing.
    let mut ledger = (source == ReclaimSource::Predicted).then(|| Ledger::new(snapshot));
    let mut report = Report {
        reclaimed_exact: source == ReclaimSource::ReportedLayers,
        ..Report::default()
    };
    for (n, removal) in plan.removals.iter().enumerate() {
        if cancel.is_cancelled() {
            report.cancelled = true;
            report.skipped = plan.removals.len() - n;
            info!(skipped = report.skipped, "pass cancelled between removals");
            break;
        }
        let target = removal.target();
        match engine.remove_image(target).await {
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
                            if let Some(size) = layer_size.get(id.as_str()) {
                                done.reclaimed_bytes = done.reclaimed_bytes.saturating_add(*size);
                            } else if image_ids.contains(id.as_str()) {
                                done.deleted_images.push(id);
                            }
                        }
                    }
                }
                if let Some(ledger) = ledger.as_mut() {
                    predict(ledger, snapshot, removal, &mut done);
                }
                report.reclaimed_bytes =
                    report.reclaimed_bytes.saturating_add(done.reclaimed_bytes);
                info!(
                    policy = %removal.policy,
                    target = %target,
                    image = %removal.image_id,
                    bytes = done.reclaimed_bytes,
                    deleted_images = done.deleted_images.len(),
                    reason = %removal.reason,
                    "removed"
                );
                report.removed.push(done);
            }
            Err(err) => {
                let failed = Failed {
                    image_id: removal.image_id.clone(),
                    reference: removal.reference.clone(),
                    policy: removal.policy.clone(),
                    kind: err.kind(),
                    message: err.to_string(),
                };
                match &err {
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
                report.failed.push(failed);
                if err.is_unreachable() {
                    report.engine_lost = true;
                    report.skipped = plan.removals.len() - n - 1;
                    warn!(skipped = report.skipped, "engine unreachable; pass stops");
                    break;
                }
            }
        }
    }
    report
}

/// Fills in what `removal` freed and deleted from the ledger's replay, for an
/// engine whose answer lists nothing deleted. Image IDs the engine did list
/// are kept.
fn predict(ledger: &mut Ledger<'_>, snapshot: &Snapshot, removal: &Removal, done: &mut Removed) {
    let effect = if removal.reference.is_some() {
        ledger.remove_reference(removal.image)
    } else {
        ledger.remove_untagged(removal.image)
    };
    done.reclaimed_bytes = done.reclaimed_bytes.saturating_add(effect.freed);
    for i in effect.deleted {
        let id = &snapshot.images[i].id;
        if !done.deleted_images.contains(id) {
            done.deleted_images.push(id.clone());
        }
    }
}
