//! One garbage-collection pass: snapshot → plan → (execute) → state.
//!
//! The glue the `plan` and `once` commands and the daemon loop share. It owns
//! the order of steps, not any decision: the planner decides, the executor
//! acts, the state records.
//!
//! After every pass that may change something (dry runs included) it looks
//! for orphaned containers: containers whose image no longer exists. With
//! Docker's graph-driver store a `docker create` racing the delete of its
//! image can make one (both calls succeed), and so does anyone's forced
//! removal (`docker rmi -f`). No client can prevent that; imagegc names each
//! one at warning level, with the removal of the pass that deleted the image
//! when it was one of ours.
//!
//! It also owns the pass vocabulary the daemon, the metrics and the log
//! share: what started a pass ([`Trigger`]), how it ended ([`PassOutcome`]),
//! and the one [`PassSummary`] each finished pass is reduced to.

use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use tracing::{debug, info, warn};

pub mod execute;
pub mod state;

use crate::engine::{Container, Engine, EngineError};
use crate::gc::{plan, Plan};
use crate::host::disk::{DiskProbe, Statvfs};
use crate::inventory::{collect_for, CollectNeeds, DetailsCache, Snapshot};
use crate::policy::Policy;

use self::execute::{execute_with, Removed, Report};
use self::state::State;

/// What a pass is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plan only; the state is read but not changed.
    Plan,
    /// Plan and record first-seen times, remove nothing.
    DryRun,
    /// Plan, remove, record.
    Execute,
}

/// What started a pass. Label values are fixed words, so the
/// `imagegc_passes_total{trigger}` series are known in advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The daemon started and the policy says `run_on_start`.
    Start,
    /// A fire time of the policy's schedule.
    Schedule,
    /// A policy reload asked for a pass.
    Reload,
    /// The disk-pressure sampler's periodic look found usage at or above a
    /// policy's `disk_high`.
    Pressure,
    /// An engine event that adds data (pull, load, build, container create)
    /// made the sampler look at once, and usage was at or above a high mark.
    Event,
}

impl Trigger {
    /// Every trigger, in label order (the metrics zero-fill these).
    pub const ALL: [Trigger; 5] = [
        Trigger::Start,
        Trigger::Schedule,
        Trigger::Reload,
        Trigger::Pressure,
        Trigger::Event,
    ];

    /// The `trigger` label value and log field.
    pub fn label(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Schedule => "schedule",
            Self::Reload => "reload",
            Self::Pressure => "pressure",
            Self::Event => "event",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PassOutcome {
    /// The pass ran to the end (removal conflicts and 404s are normal).
    Success,
    /// The pass could not run, lost the engine, or was abandoned.
    Failed,
    /// Shutdown stopped the pass between removals.
    Cancelled,
}

impl PassOutcome {
    /// Every outcome, in label order (the metrics zero-fill these).
    pub const ALL: [PassOutcome; 3] = [
        PassOutcome::Success,
        PassOutcome::Failed,
        PassOutcome::Cancelled,
    ];

    /// The `outcome` label value and log field.
    pub fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for PassOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// A finished pass reduced to what its observers need: the metrics, the
/// systemd status line and the log line are all made from this one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassSummary {
    /// What started the pass.
    pub trigger: Trigger,
    /// How it ended.
    pub outcome: PassOutcome,
    /// When it started, by the daemon's clock.
    pub started: DateTime<Utc>,
    /// When it ended, by the daemon's clock.
    pub finished: DateTime<Utc>,
    /// How long it took, by the monotonic clock (a wall-clock jump does not
    /// stretch it).
    pub duration: Duration,
    /// What the pass did; `None` when it failed before it had a plan.
    pub work: Option<PassWork>,
}

/// What a pass that got as far as a plan did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassWork {
    /// A dry run: the plan is the whole story.
    DryRun {
        /// References the plan would remove.
        would_remove: usize,
        /// Build-cache records the plan would remove.
        would_remove_records: usize,
        /// Stopped containers the plan would remove.
        would_remove_containers: usize,
        /// Bytes the plan predicts those removals free (images and records).
        would_free_bytes: u64,
    },
    /// Removals were carried out.
    Executed {
        /// References removed.
        removed: usize,
        /// Images the engine deleted as a result.
        deleted_images: usize,
        /// Removals that failed.
        failed: usize,
        /// Removals not attempted (a limit, or a cancellation), records
        /// included.
        skipped: usize,
        /// Build-cache records the engine deleted.
        records_removed: usize,
        /// Build-cache records the engine was asked for and did not delete
        /// (a normal outcome).
        records_not_deleted: usize,
        /// Build-cache record removals that failed.
        records_failed: usize,
        /// Stopped containers the engine removed.
        containers_removed: usize,
        /// Containers refused with a 409 or 404 (a normal outcome), or whose
        /// removal failed.
        containers_not_removed: usize,
        /// Bytes the removals freed (images and records).
        reclaimed_bytes: u64,
        /// Bytes the plan predicted.
        predicted_bytes: u64,
        /// References the plan kept.
        kept: usize,
    },
}

impl PassSummary {
    /// A pass that produced `outcome`; `Failed` when its report says it lost
    /// the engine, `Cancelled` when shutdown stopped it.
    pub fn of(
        trigger: Trigger,
        outcome: &Outcome,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
        duration: Duration,
    ) -> Self {
        let (result, work) = match &outcome.report {
            None => (
                PassOutcome::Success,
                PassWork::DryRun {
                    would_remove: outcome.plan.removals.len(),
                    would_remove_records: outcome.plan.records.len(),
                    would_remove_containers: outcome.plan.containers.len(),
                    would_free_bytes: outcome.plan.reclaim_bytes,
                },
            ),
            Some(report) => (
                if report.cancelled {
                    PassOutcome::Cancelled
                } else if report.engine_lost {
                    PassOutcome::Failed
                } else {
                    PassOutcome::Success
                },
                PassWork::Executed {
                    removed: report.removed.len(),
                    deleted_images: report.deleted_images(),
                    failed: report.failed.len(),
                    skipped: report.skipped,
                    records_removed: report.records_removed.len(),
                    records_not_deleted: report.records_not_deleted.len(),
                    records_failed: report.records_failed.len(),
                    containers_removed: report.containers_removed.len(),
                    containers_not_removed: report.containers_not_removed.len()
                        + report.containers_failed.len(),
                    reclaimed_bytes: report.reclaimed_bytes,
                    predicted_bytes: outcome.plan.reclaim_bytes,
                    kept: outcome.plan.kept.len(),
                },
            ),
        };
        Self {
            trigger,
            outcome: result,
            started,
            finished,
            duration,
            work: Some(work),
        }
    }

    /// A pass that failed before it had a plan (no engine, a failed listing,
    /// abandoned).
    pub fn failed(
        trigger: Trigger,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
        duration: Duration,
    ) -> Self {
        Self {
            trigger,
            outcome: PassOutcome::Failed,
            started,
            finished,
            duration,
            work: None,
        }
    }

    /// References removed (0 for a dry run or a pass without a plan).
    pub fn removed(&self) -> usize {
        match self.work {
            Some(PassWork::Executed { removed, .. }) => removed,
            _ => 0,
        }
    }

    /// The `pass finished` log line, for a pass that had a plan. (A pass
    /// without one says why in its own error line.)
    pub fn log(&self) {
        let duration_ms = self.duration.as_millis() as u64;
        let (trigger, outcome) = (self.trigger.label(), self.outcome.label());
        match self.work {
            None => {}
            Some(PassWork::DryRun {
                would_remove,
                would_remove_records,
                would_remove_containers,
                would_free_bytes,
            }) => info!(
                trigger,
                outcome,
                dry_run = true,
                would_remove,
                would_remove_records,
                would_remove_containers,
                would_free_bytes,
                duration_ms,
                "pass finished"
            ),
            Some(PassWork::Executed {
                removed,
                deleted_images,
                failed,
                skipped,
                records_removed,
                records_not_deleted,
                records_failed,
                containers_removed,
                containers_not_removed,
                reclaimed_bytes,
                predicted_bytes,
                kept,
            }) => info!(
                trigger,
                outcome,
                removed,
                deleted_images,
                failed,
                skipped,
                records_removed,
                records_not_deleted,
                records_failed,
                containers_removed,
                containers_not_removed,
                reclaimed_bytes,
                predicted_bytes,
                kept,
                duration_ms,
                "pass finished"
            ),
        }
    }
}

/// Everything a pass produced.
#[derive(Debug)]
pub struct Outcome {
    /// The snapshot the plan was made from.
    pub snapshot: Snapshot,
    /// The plan.
    pub plan: Plan,
    /// What execution did, in [`Mode::Execute`].
    pub report: Option<Report>,
    /// Containers whose image is gone, found after the pass; `None` in
    /// [`Mode::Plan`] or when the engine could not be asked.
    pub orphans: Option<Vec<Orphan>>,
}

/// A container whose image no longer exists on the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// Full container ID.
    pub container_id: String,
    /// The container's first name, or empty when it has none.
    pub container_name: String,
    /// The image ID the container was created from, which is gone.
    pub image_id: String,
    /// The removal of this pass that deleted the image, when it was ours:
    /// `(policy, target)`.
    pub removed_by: Option<(String, String)>,
}

/// What passes remember between them.
#[derive(Debug)]
pub struct Memory {
    /// Inspect results by image ID.
    pub cache: DetailsCache,
    /// First-seen and last-used times; saving it is the caller's job.
    pub state: State,
    /// How the disk under the engine's root dir is read: statvfs, unless a
    /// test swaps in a fake with [`Memory::with_disk_probe`].
    pub disk: Arc<dyn DiskProbe>,
    /// What a pass reads from the engine beyond what the policy needs
    /// ([`CollectNeeds::for_policy`]); `None`: only that.
    pub needs: Option<CollectNeeds>,
}

impl Memory {
    /// Start from the given state, its image facts in the cache (so a
    /// restarted daemon, a `once` and a `plan` inspect no image the state
    /// file knows).
    pub fn new(state: State) -> Self {
        let mut cache = DetailsCache::new();
        cache.adopt(&state.facts);
        Self {
            cache,
            state,
            disk: Arc::new(Statvfs),
            needs: None,
        }
    }

    /// The same memory, reading the disk through `probe`.
    #[must_use]
    pub fn with_disk_probe(mut self, probe: Arc<dyn DiskProbe>) -> Self {
        self.disk = probe;
        self
    }

    /// The same memory, with passes reading `needs` whatever the policy
    /// needs: `explain` of a build-cache record, and the daemon, whose
    /// gauges show the build cache.
    #[must_use]
    pub fn with_needs(mut self, needs: CollectNeeds) -> Self {
        self.needs = Some(needs);
        self
    }
}

/// Run one pass. `root_dir` is the engine's root dir (for disk usage). The
/// state is updated in memory in every mode but [`Mode::Plan`].
pub async fn run<E: Engine>(
    engine: &E,
    policy: &Policy,
    root_dir: Option<&str>,
    memory: &mut Memory,
    mode: Mode,
    now: DateTime<Utc>,
    cancel: &CancellationToken,
) -> Result<Outcome, EngineError> {
    let Memory {
        cache,
        state,
        disk,
        needs,
    } = memory;
    // A reference put on an image since the last pass (an event) may have
    // changed its last tag time: read its facts again.
    for id in &state.refresh {
        cache.forget(id);
    }
    if mode != Mode::Plan {
        state.refresh.clear();
    }
    let snapshot = {
        let st = &*state;
        let for_policy = CollectNeeds::for_policy(policy);
        let needs = needs.map_or(for_policy, |n| n.union(for_policy));
        collect_for(
            engine,
            disk,
            root_dir,
            cache,
            &|id| st.tracked(id, now),
            needs,
            &policy.container_rules,
        )
        .await?
    };
    if mode != Mode::Plan {
        state.observe(snapshot.images.iter().map(|i| i.id.as_str()), now);
        record_build_uses(state, &snapshot);
        state.remember_facts(cache.known());
    }
    let plan = plan(policy, &snapshot, now);
    for note in &plan.notes {
        info!(note = %note, "plan");
    }
    let report = if mode == Mode::Execute {
        let report = execute_with(
            engine,
            &snapshot,
            &plan,
            cancel,
            policy.safety.max_parallel_removals,
        )
        .await;
        let gone: Vec<&str> = report
            .removed
            .iter()
            .flat_map(|r| r.deleted_images.iter().map(String::as_str))
            .collect();
        for id in gone {
            state.images.remove(id);
        }
        Some(report)
    } else {
        None
    };
    let orphans = if mode == Mode::Plan {
        None
    } else {
        let removed = report.as_ref().map_or(&[][..], |r| r.removed.as_slice());
        // Nothing removed: the snapshot of this pass is the freshest view.
        let seen = removed.is_empty().then_some(&snapshot);
        match find_orphans(engine, seen, removed).await {
            Ok(orphans) => {
                log_orphans(&orphans);
                Some(orphans)
            }
            Err(error) => {
                warn!(%error, "cannot check for containers whose image is gone");
                None
            }
        }
    };
    Ok(Outcome {
        snapshot,
        plan,
        report,
        orphans,
    })
}

/// Builds count as use, and the use must outlive what shows it: the image
/// built on a base may be deleted, its record pruned. Each build use the
/// snapshot shows ([`Snapshot::build_use`]) goes into the state as a use
/// like an event (`last_used_by` names the build), after `observe`, so it
/// lands on the image's own record.
fn record_build_uses(state: &mut State, snapshot: &Snapshot) {
    let mut recorded = 0usize;
    for (i, img) in snapshot.images.iter().enumerate() {
        if let Some(u) = snapshot.build_use(i) {
            state.touch(&img.id, u.at, &u.by.state_text());
            recorded += 1;
        }
    }
    if recorded > 0 {
        debug!(images = recorded, "build uses recorded in the state");
    }
}

/// Containers whose image no longer exists, as `seen` (a pass's snapshot)
/// shows them, or as the engine lists them now when `seen` is `None`.
/// `removed` are the removals of the pass just run, to name the one that
/// deleted an image.
///
/// Containers are listed before images, so an image pulled for a container
/// made in between cannot look missing; and each image that seems missing is
/// confirmed with an inspect, so an image left out of a snapshot, or made
/// after the image list, is not taken for gone.
pub async fn find_orphans<E: Engine>(
    engine: &E,
    seen: Option<&Snapshot>,
    removed: &[Removed],
) -> Result<Vec<Orphan>, EngineError> {
    let containers: Vec<Container> = if let Some(snapshot) = seen {
        snapshot
            .containers
            .iter()
            .filter(|c| c.image.is_none())
            .map(|c| c.container.clone())
            .collect()
    } else {
        let containers = engine.list_containers().await?;
        let images: HashSet<String> = engine
            .list_images()
            .await?
            .into_iter()
            .map(|i| i.id)
            .collect();
        containers
            .into_iter()
            .filter(|c| !images.contains(&c.image_id))
            .collect()
    };
    let mut missing: BTreeMap<String, bool> = containers
        .iter()
        .filter(|c| !c.image_id.is_empty())
        .map(|c| (c.image_id.clone(), false))
        .collect();
    for (image_id, gone) in &mut missing {
        match engine.resolve_image(image_id).await {
            Err(EngineError::NotFound(_)) => *gone = true,
            Ok(_) => {}
            Err(e) if e.is_unreachable() => return Err(e),
            Err(error) => {
                debug!(image = %image_id, %error, "cannot inspect the image of a container");
            }
        }
    }
    let mut orphans: Vec<Orphan> = containers
        .into_iter()
        .filter(|c| missing.get(&c.image_id).copied().unwrap_or(false))
        .map(|c| {
            let removed_by = removed
                .iter()
                .find(|r| r.deleted_images.contains(&c.image_id))
                .map(|r| {
                    let target = r.reference.clone().unwrap_or_else(|| r.image_id.clone());
                    (r.policy.clone(), target)
                });
            Orphan {
                container_name: c.names.first().cloned().unwrap_or_default(),
                container_id: c.id,
                image_id: c.image_id,
                removed_by,
            }
        })
        .collect();
    orphans.sort_by(|a, b| a.container_id.cmp(&b.container_id));
    Ok(orphans)
}

/// One warning per orphaned container.
pub fn log_orphans(orphans: &[Orphan]) {
    for o in orphans {
        if let Some((policy, target)) = &o.removed_by {
            warn!(
                container = %o.container_id,
                name = %o.container_name,
                image = %o.image_id,
                %policy,
                removal = %target,
                "container's image is gone: deleted by this pass's removal of {target} \
                 (policy {policy}) while the container was being created"
            );
        } else {
            warn!(
                container = %o.container_id,
                name = %o.container_name,
                image = %o.image_id,
                "container's image is gone (a forced removal, or a create that raced a delete)"
            );
        }
    }
}
