//! The pure planner: `plan(&Policy, &Snapshot, now) -> Plan`.
//!
//! No engine, no clock, no filesystem: everything the decision needs is in
//! its arguments, so every rule in docs/ARCHITECTURE.md is unit- and property-tested
//! here. The planner decides which references and untagged images go, names
//! the policy and the reason for each, says which safety rule kept each
//! image a policy wanted, and predicts the bytes each removal frees using the
//! [`Ledger`]. Removals come out children before parents, the order the
//! executor runs them in.
//!
//! Build-cache records (`[[build_cache]]` policies) are planned beside the
//! images with the same ledger, which counts a layer shared by images and
//! records once, freed by whichever removal is its last user; record
//! removals run after every image removal, children before parents.
//!
//! Stopped containers (`[[containers]]` policies) are planned first, in
//! [`containers`]: each removal frees its writable layer and unpins its
//! image in the ledger, so the image policies after it see the images no
//! container is left to use; container removals run before every image
//! removal.
//!
//! Each condition is evaluated once, in [`conditions`], and each safety rule
//! once, in [`safety`]: the decision, the removal's [`Reasons`] and
//! `imagegc explain` ([`judge`], [`judge_record`], [`judge_container`]) all
//! read those checks. What the planner
//! decides is data ([`plan`]); the words are made in `report::text`.

pub mod conditions;
mod containers;
pub mod ledger;
pub mod plan;
mod records;
pub mod safety;
mod targets;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::inventory::{LastUsedSource, Snapshot};
use crate::policy::{DiskPressure, InodePressure, Policy, Rule, RuleRef, Threshold};
use conditions::{at_or_below, check, Basis, Context};
pub use conditions::{
    container_stopped_at, CacheCondition, Check, Condition, ConditionCheck, ContainerCondition,
    Fact,
};
pub use ledger::{cache_bytes, Effect, Ledger};
pub use plan::{
    ContainerRemoval, Kept, KeptBecause, KeptContainer, KeptRecord, Note, Plan, Reason, Reasons,
    RecordRemoval, Removal, Usage,
};
use records::CacheView;
use targets::{Repos, Slots, Target, TargetSet};

/// Disk-pressure candidates, least recently used first (then oldest, then
/// first found).
type DiskHeap = BinaryHeap<Reverse<(DateTime<Utc>, DateTime<Utc>, usize, Target)>>;

/// A pressure table's watermark pairs as they stand at the start of the
/// pass: each pair that could be evaluated, its usage then, and whether it
/// reached its high mark. The table acts when either did, and stops once
/// every evaluated pair's projection reaches its low mark.
#[derive(Debug, Clone, Copy)]
struct Pressure {
    /// `disk_high`/`disk_low`, the usage in their unit, high reached.
    disk: Option<(DiskPressure, Usage, bool)>,
    /// `inodes_high`/`inodes_low`, the share of inodes in use, high reached.
    inodes: Option<(InodePressure, f64, bool)>,
}

impl Pressure {
    /// Either high mark reached.
    fn active(&self) -> bool {
        self.disk.is_some_and(|d| d.2) || self.inodes.is_some_and(|i| i.2)
    }

    /// What a removal says first: each pair at or above its high mark.
    fn reasons(&self) -> Vec<Reason> {
        let disk = self
            .disk
            .filter(|d| d.2)
            .map(|(disk, usage, _)| Reason::DiskPressure {
                usage,
                high: disk.high,
            });
        let inodes = self
            .inodes
            .filter(|i| i.2)
            .map(|(inodes, usage, _)| Reason::InodePressure {
                usage,
                high: inodes.high,
            });
        disk.into_iter().chain(inodes).collect()
    }
}

/// Per-rule precomputed data.
struct RuleView<'p> {
    rule: &'p Rule,
    /// Tags kept by `keep_most_recent` (the N newest selected per repository).
    kept_recent: TargetSet,
    /// Per distinct repository ([`Repos`]): whether a `repositories` glob
    /// matches it; `None` when the rule sets no `repositories`.
    repo_match: Option<Vec<bool>>,
}

struct Planner<'a> {
    policy: &'a Policy,
    snap: &'a Snapshot,
    now: DateTime<Utc>,
    rules: Vec<RuleView<'a>>,
    ledger: Ledger<'a>,
    /// The last image removal's effect (reused: no vectors per removal).
    effect: Effect,
    /// The snapshot's candidates, for the target sets.
    slots: Slots,
    /// The repository of every tag.
    repos: Repos<'a>,
    /// [`Snapshot::last_used`] of every image, worked out once: every
    /// `unused_for` check and every pressure candidate reads it.
    last_used: Vec<(DateTime<Utc>, LastUsedSource)>,
    planned: TargetSet,
    /// Selected removals in selection order, with policy index and reason.
    selected: Vec<(Target, usize, Reasons)>,
    kept: Vec<Kept>,
    kept_seen: TargetSet,
    notes: Vec<Note>,
    limit_hit: bool,
    /// The `[[build_cache]]` rules, precomputed.
    cache_rules: Vec<CacheView<'a>>,
    /// True when there are cache rules and the snapshot listed the records.
    cache_on: bool,
    /// Build-cache bytes before any removal ([`ledger::cache_bytes`]).
    cache_bytes: u64,
    /// Per record: its depth (longest parent chain); deeper goes first.
    record_depth: Vec<usize>,
    /// Per record: planned for removal.
    planned_records: Vec<bool>,
    /// Selected record removals in selection order, with cache-rule index
    /// and reason.
    selected_records: Vec<(usize, usize, Reasons)>,
    kept_records: Vec<KeptRecord>,
    kept_records_seen: HashSet<usize>,
    /// Per container: planned for removal (no longer pins its image).
    removed_containers: Vec<bool>,
    /// Selected container removals in selection order, with
    /// container-rule index and reason.
    selected_containers: Vec<(usize, usize, Reasons)>,
    kept_containers: Vec<KeptContainer>,
}

/// Plan one pass: container policies, then image age/usage policies (which
/// see the images those container removals unpinned), then build-cache
/// age/usage policies, then every disk-pressure policy of either kind in
/// file order (counting every byte freed before it, containers' included).
pub fn plan(policy: &Policy, snap: &Snapshot, now: DateTime<Utc>) -> Plan {
    let mut p = Planner::new(policy, snap, now);
    p.container_phase();
    p.age_and_usage_phase();
    p.record_age_and_usage_phase();
    p.disk_phase();
    p.finish()
}

/// How one policy sees one reference (or an untagged image).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The policy's name.
    pub policy: String,
    /// The tag, or `None` for the untagged image itself.
    pub reference: Option<String>,
    /// Whether the policy's selectors pick it.
    pub selected: bool,
    /// Each condition the policy sets (empty when not selected).
    pub conditions: Vec<ConditionCheck>,
}

/// A safety rule that protects a reference (or the untagged image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protection {
    /// The tag, or `None` for the untagged image itself.
    pub reference: Option<String>,
    /// The rule and its figures.
    pub rule: KeptBecause,
}

/// Every policy's verdict and every safety rule, for one image: what
/// `imagegc explain` shows. The checks are the planner's own
/// ([`conditions`], [`safety`]); the plan itself says what the next pass does.
pub fn judge(
    policy: &Policy,
    snap: &Snapshot,
    now: DateTime<Utc>,
    image: usize,
) -> (Vec<Verdict>, Vec<Protection>) {
    let mut p = Planner::new(policy, snap, now);
    // The containers this pass removes no longer keep the image in use.
    p.container_phase();
    let img = &snap.images[image];
    let targets: Vec<Target> = if img.tags.is_empty() {
        vec![Target::Untagged(image)]
    } else {
        (0..img.tags.len()).map(|t| Target::Tag(image, t)).collect()
    };
    let mut verdicts = Vec::new();
    let mut protections = Vec::new();
    for &target in &targets {
        let reference = p.reference(target);
        for view in &p.rules {
            let selected = p.selects(view, target);
            let conditions = if selected {
                p.checks(view, target).map(Check::into_owned).collect()
            } else {
                Vec::new()
            };
            verdicts.push(Verdict {
                policy: view.rule.name.clone(),
                reference: reference.clone(),
                selected,
                conditions,
            });
        }
        for rule in safety::protections(&policy.safety, snap, now, target, &p.removed_containers) {
            protections.push(Protection {
                reference: reference.clone(),
                rule,
            });
        }
    }
    (verdicts, protections)
}

/// Every `[[build_cache]]` policy's verdict and every safety rule, for one
/// build-cache record (index into the snapshot's `cache.records`): what
/// `imagegc explain RECORD-ID` shows. Verdicts and protections carry no
/// reference. Beside the record's own safety rules (a running build,
/// `min_age`), [`KeptBecause::HasChildren`] counts its child records the
/// plan of this snapshot does not remove, when there are any. An index out
/// of range gives nothing.
pub fn judge_record(
    policy: &Policy,
    snap: &Snapshot,
    now: DateTime<Utc>,
    record: usize,
) -> (Vec<Verdict>, Vec<Protection>) {
    if record >= snap.cache.len() {
        return (Vec::new(), Vec::new());
    }
    let p = Planner::new(policy, snap, now);
    let verdicts = p
        .cache_rules
        .iter()
        .map(|view| {
            let selected = records::selects_record(view.rule, snap, record);
            let conditions = if selected {
                p.record_checks(view, record)
                    .map(Check::into_owned)
                    .collect()
            } else {
                Vec::new()
            };
            Verdict {
                policy: view.rule.name.clone(),
                reference: None,
                selected,
                conditions,
            }
        })
        .collect();
    let mut protections: Vec<Protection> =
        safety::record_protections(&policy.safety, snap, now, record)
            .map(|rule| Protection {
                reference: None,
                rule,
            })
            .collect();
    let kids = records::children_of(&snap.cache, record);
    if !kids.is_empty() {
        let planned = plan(policy, snap, now);
        let removed: HashSet<usize> = planned.records.iter().map(|r| r.record).collect();
        let children = kids.iter().filter(|c| !removed.contains(c)).count();
        if children > 0 {
            protections.push(Protection {
                reference: None,
                rule: KeptBecause::HasChildren { children },
            });
        }
    }
    (verdicts, protections)
}

/// Every `[[containers]]` policy's verdict and every safety rule, for one
/// container (index into the snapshot's `containers`): what `imagegc
/// explain CONTAINER` shows. Verdicts and protections carry no reference.
/// The Compose rule is judged against the policy that would name the
/// removal (else the first that selects the container, else none). A
/// container without inspect facts is never removed whatever its verdicts
/// say. An index out of range gives nothing.
pub fn judge_container(
    policy: &Policy,
    snap: &Snapshot,
    now: DateTime<Utc>,
    container: usize,
) -> (Vec<Verdict>, Vec<Protection>) {
    let Some(sc) = snap.containers.get(container) else {
        return (Vec::new(), Vec::new());
    };
    let rules = &policy.container_rules;
    let verdicts = rules
        .iter()
        .map(|rule| {
            let selected = containers::container_selected(rule, sc);
            let conditions = if selected {
                containers::container_checks(rule, now, sc).collect()
            } else {
                Vec::new()
            };
            Verdict {
                policy: rule.name.clone(),
                reference: None,
                selected,
                conditions,
            }
        })
        .collect();
    let judged = containers::naming_rule(rules, now, sc)
        .or_else(|| {
            rules
                .iter()
                .position(|r| containers::container_selected(r, sc))
        })
        .map_or(&[][..], |r| rules[r].selectors.labels.as_slice());
    let protections = safety::container_protections(&policy.safety, snap, now, container, judged)
        .map(|rule| Protection {
            reference: None,
            rule,
        })
        .collect();
    (verdicts, protections)
}

/// The newest `keep_most_recent` selected tags per repository, by created time;
/// on a tie the tag that sorts last counts as newer (`build-102` over
/// `build-101`, as with reproducible builds that share a created time).
/// One sort of every selected tag by repository, then newest first: no map
/// of per-repository lists.
fn keep_most_recent(view: &RuleView, snap: &Snapshot, slots: &Slots, repos: &Repos) -> TargetSet {
    let mut keep = slots.set();
    let Some(n) = view.rule.conditions.keep_most_recent else {
        return keep;
    };
    let mut selected: Vec<(usize, usize, usize)> = Vec::new();
    for (i, img) in snap.images.iter().enumerate() {
        for t in 0..img.tags.len() {
            let target = Target::Tag(i, t);
            if selects(view, snap, slots, repos, target) {
                let repo = repos.of(slots, target).unwrap_or(usize::MAX);
                selected.push((repo, i, t));
            }
        }
    }
    selected.sort_unstable_by(|a, b| {
        let (ia, ib) = (&snap.images[a.1], &snap.images[b.1]);
        a.0.cmp(&b.0)
            .then_with(|| ib.created.cmp(&ia.created))
            .then_with(|| ib.tags[b.2].cmp(&ia.tags[a.2]))
    });
    for repo in selected.chunk_by(|a, b| a.0 == b.0) {
        for &(_, i, t) in repo.iter().take(n) {
            keep.insert(slots, Target::Tag(i, t));
        }
    }
    keep
}

/// Per distinct repository, whether one of the rule's `repositories` globs
/// matches it (on Podman `ci/app` lists as `localhost/ci/app`: the glob the
/// user wrote matches either spelling); `None` without `repositories`.
fn repo_match(rule: &Rule, repos: &Repos) -> Option<Vec<bool>> {
    let globs = &rule.selectors.repositories;
    (!globs.is_empty()).then(|| {
        repos
            .distinct
            .iter()
            .map(|&(repo, written)| {
                globs
                    .iter()
                    .any(|g| g.is_match(repo) || written.is_some_and(|w| g.is_match(w)))
            })
            .collect()
    })
}

/// Selectors: all given must match.
fn selects(view: &RuleView, snap: &Snapshot, slots: &Slots, repos: &Repos, target: Target) -> bool {
    let sel = &view.rule.selectors;
    let img = &snap.images[target.image()];
    match (target, sel.dangling) {
        (Target::Tag(..), Some(true)) | (Target::Untagged(_), Some(false)) => return false,
        _ => {}
    }
    if let Some(matched) = &view.repo_match {
        if !repos.of(slots, target).is_some_and(|r| matched[r]) {
            return false;
        }
    }
    sel.labels.iter().all(|l| l.matches(&img.labels))
}

impl<'a> Planner<'a> {
    fn new(policy: &'a Policy, snap: &'a Snapshot, now: DateTime<Utc>) -> Self {
        let slots = Slots::new(snap);
        let repos = Repos::new(snap, &slots);
        let rules: Vec<RuleView<'a>> = policy
            .rules
            .iter()
            .map(|rule| {
                let mut view = RuleView {
                    rule,
                    kept_recent: TargetSet::default(),
                    repo_match: repo_match(rule, &repos),
                };
                view.kept_recent = keep_most_recent(&view, snap, &slots, &repos);
                view
            })
            .collect();
        let cache_rules: Vec<CacheView<'a>> = policy
            .cache_rules
            .iter()
            .map(|rule| CacheView::new(rule, snap))
            .collect();
        let cache_on = !cache_rules.is_empty()
            && snap.cache.availability == crate::inventory::CacheAvailability::Listed;
        let mut notes = Vec::new();
        if !cache_rules.is_empty() && !cache_on {
            notes.push(Note::NoBuildCache {
                policies: policy.cache_rules.iter().map(|r| r.name.clone()).collect(),
            });
        }
        Planner {
            policy,
            snap,
            now,
            rules,
            ledger: Ledger::new(snap),
            effect: Effect::default(),
            planned: slots.set(),
            selected: Vec::new(),
            kept: Vec::new(),
            kept_seen: slots.set(),
            slots,
            repos,
            last_used: (0..snap.images.len()).map(|i| snap.last_used(i)).collect(),
            notes,
            limit_hit: false,
            cache_rules,
            cache_on,
            cache_bytes: ledger::cache_bytes(snap),
            record_depth: records::record_depths(&snap.cache),
            planned_records: vec![false; snap.cache.len()],
            selected_records: Vec::new(),
            kept_records: Vec::new(),
            kept_records_seen: HashSet::new(),
            removed_containers: vec![false; snap.containers.len()],
            selected_containers: Vec::new(),
            kept_containers: Vec::new(),
        }
    }

    /// `max_removals_per_run`, counting container, image and record
    /// removals together:
    /// the [`KeptBecause::RemovalLimit`] when it is reached (noted once).
    fn limit_reached(&mut self) -> Option<KeptBecause> {
        let max = self.policy.safety.max_removals_per_run?;
        let so_far =
            self.selected.len() + self.selected_records.len() + self.selected_containers.len();
        if so_far < max.get() {
            return None;
        }
        if !self.limit_hit {
            self.notes.push(Note::RemovalLimit { max });
            self.limit_hit = true;
        }
        Some(KeptBecause::RemovalLimit { max })
    }

    fn selects(&self, view: &RuleView<'_>, target: Target) -> bool {
        selects(view, self.snap, &self.slots, &self.repos, target)
    }

    fn context<'k>(&'k self, view: &'k RuleView<'_>) -> Context<'a, 'k> {
        Context {
            snap: self.snap,
            now: self.now,
            kept_recent: &view.kept_recent,
            slots: &self.slots,
            last_used: &self.last_used,
        }
    }

    /// Every condition of a rule, checked against a target, lazily.
    fn checks<'k>(
        &'k self,
        view: &'k RuleView<'_>,
        target: Target,
    ) -> impl Iterator<Item = Check<'a>> + 'k
    where
        'a: 'k,
    {
        let cx = self.context(view);
        Condition::of(&view.rule.conditions).map(move |c| check(&cx, c, target))
    }

    fn candidates(&self) -> Vec<Target> {
        let mut out = Vec::new();
        for (i, img) in self.snap.images.iter().enumerate() {
            out.extend((0..img.tags.len()).map(|t| Target::Tag(i, t)));
            // Dangling after the removals planned so far: an earlier policy
            // may have removed its last child, or its last tag while a
            // digest reference still holds it.
            if self.ledger.is_dangling(i) {
                out.push(Target::Untagged(i));
            }
        }
        out
    }

    /// True when every condition but disk and inode pressure holds.
    fn conditions_met(&self, view: &RuleView<'_>, target: Target) -> bool {
        let cx = self.context(view);
        Condition::of(&view.rule.conditions)
            .filter(|c| !c.is_pressure())
            .all(|c| check(&cx, c, target).holds)
    }

    /// The facts of the conditions that held (disk pressure aside); for an
    /// image without tags and with none, that it is dangling.
    fn held(&self, view: &RuleView<'_>, target: Target) -> Vec<Reason> {
        let mut out: Vec<Reason> = self
            .checks(view, target)
            .filter(|c| c.holds)
            .filter_map(|c| c.fact.reason())
            .collect();
        if out.is_empty() && self.snap.images[target.image()].tags.is_empty() {
            out.push(Reason::Dangling);
        }
        out
    }

    fn keep(&mut self, target: Target, rule: usize, reason: KeptBecause) {
        if self.kept_seen.insert(&self.slots, target) {
            let i = target.image();
            self.kept.push(Kept {
                image: i,
                image_id: self.snap.images[i].id.clone(),
                reference: self.reference(target),
                policy: self.rules[rule].rule.name.clone(),
                reason,
            });
        }
    }

    fn reference(&self, target: Target) -> Option<String> {
        match target {
            Target::Tag(i, t) => Some(self.snap.images[i].tags[t].clone()),
            Target::Untagged(_) => None,
        }
    }

    /// Safety, then the removal limit, then the ledger. Returns false when
    /// the target was kept; when true, `self.effect` is the removal's
    /// [`Effect`] (its `newly_dangling`: the images it left dangling).
    fn try_remove(&mut self, target: Target, rule: usize, reason: Reasons) -> bool {
        let first = safety::protections(
            &self.policy.safety,
            self.snap,
            self.now,
            target,
            &self.removed_containers,
        )
        .next();
        if let Some(why) = first {
            self.keep(target, rule, why);
            return false;
        }
        if let Some(why) = self.limit_reached() {
            self.keep(target, rule, why);
            return false;
        }
        self.planned.insert(&self.slots, target);
        self.selected.push((target, rule, reason));
        match target {
            Target::Tag(i, _) => self.ledger.remove_reference_into(i, &mut self.effect),
            Target::Untagged(i) => self.ledger.remove_untagged_into(i, &mut self.effect),
        }
        true
    }

    /// Every rule without disk watermarks, in file order; the first rule
    /// whose selectors and conditions hold names the removal.
    fn age_and_usage_phase(&mut self) {
        let mut queue: std::collections::VecDeque<Target> = self.candidates().into();
        while let Some(target) = queue.pop_front() {
            if self.planned.contains(&self.slots, target) {
                continue;
            }
            let hit = (0..self.rules.len()).find_map(|r| {
                let view = &self.rules[r];
                (!view.rule.conditions.is_pressure()
                    && self.selects(view, target)
                    && self.conditions_met(view, target))
                .then(|| (r, Reasons(self.held(view, target))))
            });
            if let Some((r, reason)) = hit {
                if self.try_remove(target, r, reason) {
                    let dangling = &self.effect.newly_dangling;
                    queue.extend(dangling.iter().copied().map(Target::Untagged));
                }
            }
        }
    }

    /// Where usage stands for a threshold, after the removals planned so far
    /// (images and records alike): a ratio of the filesystem, or the bytes
    /// a policy of that basis counts.
    fn projected(&self, threshold: Threshold, basis: Basis) -> Option<f64> {
        match (threshold, basis) {
            (Threshold::Ratio(_), _) => self.snap.disk.map(|d| {
                let used = d.used_bytes.saturating_sub(self.ledger.freed());
                if d.total_bytes == 0 {
                    0.0
                } else {
                    used as f64 / d.total_bytes as f64
                }
            }),
            (Threshold::Bytes(_), Basis::Images) => Some(
                self.snap
                    .image_bytes()
                    .saturating_sub(self.ledger.freed_layer_bytes()) as f64,
            ),
            (Threshold::Bytes(_), Basis::Cache) => Some(
                self.cache_bytes
                    .saturating_sub(self.ledger.freed_cache_bytes()) as f64,
            ),
        }
    }

    /// The estimated share of inodes in use after the removals planned so
    /// far; `None` when the disk is unknown or reports no inode counts. No
    /// engine says how many inodes an image or a record holds, so inodes
    /// are taken to be freed in proportion to bytes: inodes used × (used
    /// bytes left / used bytes), with the bytes the disk projection counts.
    fn projected_inodes(&self) -> Option<f64> {
        let d = self.snap.disk?;
        let ratio = d.inodes_used_ratio()?;
        if d.used_bytes == 0 {
            return Some(ratio);
        }
        let left = d.used_bytes.saturating_sub(self.ledger.freed());
        Some(ratio * (left as f64 / d.used_bytes as f64))
    }

    /// Where a pressure table's watermarks stand before any removal of this
    /// pass, with a note for each pair that cannot be evaluated or is below
    /// its high mark.
    fn pressure_at_start(
        &mut self,
        policy: &str,
        disk: Option<DiskPressure>,
        inodes: Option<InodePressure>,
        basis: Basis,
    ) -> Pressure {
        let disk = disk.and_then(|disk| {
            let (reached, fact) =
                conditions::disk_high_of(self.snap, disk, basis, self.cache_bytes);
            let Fact::Disk { usage, .. } = fact else {
                self.notes.push(Note::DiskUnknown {
                    policy: policy.to_owned(),
                });
                return None;
            };
            if !reached {
                self.notes.push(Note::BelowDiskHigh {
                    policy: policy.to_owned(),
                    usage,
                    high: disk.high,
                });
            }
            Some((disk, usage, reached))
        });
        let inodes = inodes.and_then(|inodes| {
            let (reached, fact) = conditions::inodes_high(self.snap, inodes);
            let policy = policy.to_owned();
            match fact {
                Fact::Inodes { usage, .. } => {
                    if !reached {
                        self.notes.push(Note::BelowInodesHigh {
                            policy,
                            usage,
                            high: inodes.high,
                        });
                    }
                    Some((inodes, usage, reached))
                }
                Fact::NoInodeCounts => {
                    self.notes.push(Note::NoInodeCounts { policy });
                    None
                }
                _ => {
                    self.notes.push(Note::InodesUnknown { policy });
                    None
                }
            }
        });
        Pressure { disk, inodes }
    }

    /// Whether the projection has reached every low mark of `pressure`
    /// (a projection that cannot be made counts as reached: nothing more
    /// can be told).
    fn lows_reached(&self, pressure: &Pressure, basis: Basis) -> bool {
        let disk = pressure.disk.is_none_or(|(disk, _, _)| {
            self.projected(disk.low, basis)
                .is_none_or(|now| at_or_below(now, disk.low))
        });
        let inodes = pressure.inodes.is_none_or(|(inodes, _, _)| {
            self.projected_inodes()
                .is_none_or(|now| at_or_below(now, Threshold::Ratio(inodes.low)))
        });
        disk && inodes
    }

    /// The notes of a pressure table that acted: one per pair that reached
    /// its high mark, with the projection after its `removals`.
    fn pressure_notes(&mut self, policy: &str, pressure: &Pressure, removals: usize, basis: Basis) {
        if let Some((disk, usage, true)) = pressure.disk {
            let after = self
                .projected(disk.low, basis)
                .map(|v| Usage::like(v, disk.low));
            self.notes.push(Note::DiskPressure {
                policy: policy.to_owned(),
                usage,
                high: disk.high,
                removals,
                after,
                low: disk.low,
            });
        }
        if let Some((inodes, usage, true)) = pressure.inodes {
            self.notes.push(Note::InodePressure {
                policy: policy.to_owned(),
                usage,
                high: inodes.high,
                removals,
                after: self.projected_inodes(),
                low: inodes.low,
            });
        }
    }

    /// Every table in file order ([`Policy::order`]); a table the order
    /// misses (a policy built by hand) comes after, images then records, and
    /// an entry out of range or repeated is skipped.
    fn file_order(&self) -> Vec<RuleRef> {
        let mut seen = HashSet::new();
        let valid = |r: &RuleRef| match *r {
            RuleRef::Image(i) => i < self.rules.len(),
            RuleRef::Cache(i) => i < self.cache_rules.len(),
            // Container tables have no watermarks: their phase runs first.
            RuleRef::Container(_) => false,
        };
        let listed = self.policy.order.iter().copied().filter(valid);
        let all = (0..self.rules.len())
            .map(RuleRef::Image)
            .chain((0..self.cache_rules.len()).map(RuleRef::Cache));
        listed.chain(all).filter(|r| seen.insert(*r)).collect()
    }

    /// Pressure rules of both kinds, in file order: each acts when usage is
    /// at or above its `disk_high` or inode use at or above its
    /// `inodes_high`, and removes least-recently-used first until the
    /// projection, which counts every byte freed so far in the pass (and
    /// inodes in proportion to them), reaches every low watermark it sets.
    fn disk_phase(&mut self) {
        for table in self.file_order() {
            match table {
                RuleRef::Image(r) => self.disk_images(r),
                RuleRef::Cache(c) => self.disk_records(c),
                RuleRef::Container(_) => {}
            }
        }
    }

    /// One image pressure rule (see [`Planner::disk_phase`]).
    fn disk_images(&mut self, r: usize) {
        let conditions = &self.rules[r].rule.conditions;
        if !conditions.is_pressure() {
            return;
        }
        let (disk, inodes) = (conditions.disk, conditions.inodes);
        let policy = self.rules[r].rule.name.clone();
        // Activation looks at usage before any removal of this pass.
        let pressure = self.pressure_at_start(&policy, disk, inodes, Basis::Images);
        if !pressure.active() {
            return;
        }
        let first = pressure.reasons();
        let mut heap = BinaryHeap::new();
        let mut seq = 0usize;
        let candidates = self.candidates();
        for target in candidates {
            self.push_disk_candidate(&mut heap, &mut seq, r, target);
        }
        let mut removals = 0usize;
        while let Some(Reverse((_, _, _, target))) = heap.pop() {
            if self.lows_reached(&pressure, Basis::Images) {
                break;
            }
            if self.planned.contains(&self.slots, target) {
                continue;
            }
            if let Target::Untagged(i) = target {
                if !self.ledger.is_dangling(i) {
                    continue;
                }
            }
            let reason = self.disk_reason(r, target, &first);
            if self.try_remove(target, r, reason) {
                removals += 1;
                for &d in &self.effect.newly_dangling {
                    self.push_disk_candidate(&mut heap, &mut seq, r, Target::Untagged(d));
                }
            }
        }
        self.pressure_notes(&policy, &pressure, removals, Basis::Images);
    }

    fn push_disk_candidate(&self, heap: &mut DiskHeap, seq: &mut usize, r: usize, target: Target) {
        if self.planned.contains(&self.slots, target) {
            return;
        }
        let view = &self.rules[r];
        if !self.selects(view, target) || !self.conditions_met(view, target) {
            return;
        }
        let i = target.image();
        *seq += 1;
        heap.push(Reverse((
            self.last_used[i].0,
            self.snap.images[i].created,
            *seq,
            target,
        )));
    }

    /// The pressure (`first`), the other conditions that held, and the last
    /// use.
    fn disk_reason(&self, r: usize, target: Target, first: &[Reason]) -> Reasons {
        let (last, source) = self.last_used[target.image()];
        let mut out = first.to_vec();
        out.extend(
            self.held(&self.rules[r], target)
                .into_iter()
                .filter(|c| *c != Reason::Dangling),
        );
        out.push(Reason::LeastRecentlyUsed {
            idle: self.now - last,
            source,
        });
        Reasons(out)
    }

    /// Order containers first, then images children before parents, then
    /// records, and price each removal in that order.
    fn finish(self) -> Plan {
        let snap = self.snap;
        let mut ledger = Ledger::new(snap);
        let mut containers = Vec::with_capacity(self.selected_containers.len());
        for (c, rule, reason) in self.selected_containers {
            let sc = &snap.containers[c];
            let pinned = sc.image.filter(|&i| ledger.in_use(i));
            let effect = ledger.remove_container(c);
            containers.push(ContainerRemoval {
                container: c,
                container_id: sc.container.id.clone(),
                name: containers::display_name(sc),
                policy: self.policy.container_rules[rule].name.clone(),
                reason,
                reclaim_bytes: effect.freed,
                unpins: pinned.filter(|&i| !ledger.in_use(i)).into_iter().collect(),
            });
        }
        // Per image, the containers removed before it that used it: one
        // pass over the container removals, not one per image removal.
        let mut removed_users: HashMap<usize, Vec<String>> = HashMap::new();
        for r in &containers {
            if let Some(image) = snap.containers[r.container].image {
                removed_users.entry(image).or_default().push(r.name.clone());
            }
        }
        let unpinned_by = |image: usize| -> Vec<String> {
            removed_users.get(&image).cloned().unwrap_or_default()
        };
        let mut order: Vec<(usize, (Target, usize, Reasons))> = self
            .selected
            .into_iter()
            .map(|s| (snap.depth(s.0.image()), s))
            .collect();
        // Deeper images first; stable, so selection order holds within a depth.
        order.sort_by_key(|(depth, _)| Reverse(*depth));
        let mut removals = Vec::with_capacity(order.len());
        let mut effect = Effect::default();
        for (_, (target, rule, reason)) in order {
            let i = target.image();
            match target {
                Target::Tag(..) => ledger.remove_reference_into(i, &mut effect),
                Target::Untagged(_) => ledger.remove_untagged_into(i, &mut effect),
            }
            removals.push(Removal {
                image: i,
                image_id: snap.images[i].id.clone(),
                reference: match target {
                    Target::Tag(i, t) => Some(snap.images[i].tags[t].clone()),
                    Target::Untagged(_) => None,
                },
                policy: self.rules[rule].rule.name.clone(),
                reason,
                reclaim_bytes: effect.freed,
                deletes_image: effect.deleted.contains(&i),
                unpinned_by: unpinned_by(i),
            });
        }
        // Records after every image, deeper first (children before
        // parents); stable, so selection order holds within a depth.
        let mut chosen = self.selected_records;
        chosen.sort_by_key(|(r, _, _)| Reverse(self.record_depth[*r]));
        let mut records = Vec::with_capacity(chosen.len());
        for (r, rule, reason) in chosen {
            let effect = ledger.remove_record(r);
            records.push(RecordRemoval {
                record: r,
                record_id: snap.cache.records[r].id.clone(),
                policy: self.cache_rules[rule].rule.name.clone(),
                reason,
                reclaim_bytes: effect.freed,
            });
        }
        // A record one policy had to keep (its children were not planned
        // yet) may have gone with a later policy's removals.
        let planned_records = self.planned_records;
        let kept_records = self
            .kept_records
            .into_iter()
            .filter(|k| !planned_records[k.record])
            .collect();
        Plan {
            containers,
            kept_containers: self.kept_containers,
            removals,
            records,
            kept_records,
            kept: self.kept,
            reclaim_bytes: ledger.freed(),
            notes: self.notes,
        }
    }
}
