//! The pure planner: `plan(&Policy, &Snapshot, now) -> Plan`.
//!
//! No engine, no clock, no filesystem: everything the decision needs is in
//! its arguments, so every rule in docs/ARCHITECTURE.md is unit- and property-tested
//! here. The planner decides which references and untagged images go, names
//! the policy and the reason for each, says which safety rule kept each
//! image a policy wanted, and predicts the bytes each removal frees using the
//! [`Ledger`]. Removals come out children before parents, the order the
//! executor runs them in.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};

use crate::accounting::Ledger;
use crate::policy::{Policy, Rule, Threshold};
use crate::snapshot::Snapshot;

/// What a pass would do.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Removals in execution order (children before parents).
    pub removals: Vec<Removal>,
    /// What a policy wanted to remove but a safety rule (or a limit) kept.
    pub kept: Vec<Kept>,
    /// Bytes the whole plan frees.
    pub reclaim_bytes: u64,
    /// Facts about the plan worth a log line (inactive disk policies, limits).
    pub notes: Vec<String>,
}

/// One removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Snapshot index of the image.
    pub image: usize,
    /// `sha256:<hex>`.
    pub image_id: String,
    /// The tag removed, or `None` when an untagged image is removed by ID.
    pub reference: Option<String>,
    /// Name of the `[[policy]]` that removes it.
    pub policy: String,
    /// Why, in words: the conditions that held.
    pub reason: String,
    /// Bytes this removal frees when run in plan order.
    pub reclaim_bytes: u64,
    /// True when the engine deletes the image with this removal.
    pub deletes_image: bool,
}

impl Removal {
    /// What to pass to the engine: the tag, or the image ID.
    pub fn target(&self) -> &str {
        self.reference.as_deref().unwrap_or(&self.image_id)
    }
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
    /// The safety rule that kept it.
    pub reason: String,
}

/// A removal candidate: one tag of an image, or an untagged image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Target {
    Tag(usize, usize),
    Untagged(usize),
}

impl Target {
    fn image(self) -> usize {
        match self {
            Self::Tag(i, _) | Self::Untagged(i) => i,
        }
    }
}

/// The repository part of a `repo:tag` or `repo@digest` reference.
///
/// ```
/// use imagegc::plan::repository_of;
/// assert_eq!(repository_of("ci/app:1.2"), "ci/app");
/// assert_eq!(repository_of("localhost:5000/ci/app:1"), "localhost:5000/ci/app");
/// assert_eq!(repository_of("localhost:5000/ci/app"), "localhost:5000/ci/app");
/// assert_eq!(repository_of("base/os@sha256:0123"), "base/os");
/// ```
pub fn repository_of(reference: &str) -> &str {
    if let Some((repo, _digest)) = reference.split_once('@') {
        return repo;
    }
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => reference,
    }
}

/// A compact duration: `12d`, `3d 4h`, `5h 12m`, `40s`.
///
/// ```
/// use chrono::TimeDelta;
/// use imagegc::plan::human_duration;
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

fn std_to_delta(d: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// The first 12 hex digits of an image or container ID, as `docker` shows them.
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

/// Disk-pressure candidates, least recently used first (then oldest, then
/// first found).
type DiskHeap = BinaryHeap<Reverse<(DateTime<Utc>, DateTime<Utc>, usize, Target)>>;

/// Per-rule precomputed data.
struct RuleView<'p> {
    rule: &'p Rule,
    /// Tags kept by `keep_most_recent` (the N newest selected per repository).
    kept_recent: HashSet<(usize, usize)>,
}

struct Planner<'a> {
    policy: &'a Policy,
    snap: &'a Snapshot,
    now: DateTime<Utc>,
    rules: Vec<RuleView<'a>>,
    ledger: Ledger<'a>,
    planned: HashSet<Target>,
    /// Selected removals in selection order, with policy index and reason.
    selected: Vec<(Target, usize, String)>,
    kept: Vec<Kept>,
    kept_seen: HashSet<Target>,
    notes: Vec<String>,
    limit_hit: bool,
}

/// Plan one pass.
pub fn plan(policy: &Policy, snap: &Snapshot, now: DateTime<Utc>) -> Plan {
    let mut p = Planner::new(policy, snap, now);
    p.age_and_usage_phase();
    p.disk_phase();
    p.finish()
}

/// One condition of one policy, checked against one reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionCheck {
    /// The condition's key: `unused_for`, `older_than`, `keep_most_recent`, `disk_high`.
    pub condition: &'static str,
    /// Whether it holds now.
    pub holds: bool,
    /// The figures behind the answer.
    pub detail: String,
}

/// How one policy sees one reference (or an untagged image).
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The rule, in words.
    pub rule: String,
}

/// Every policy's verdict and every safety rule, for one image: what
/// `imagegc explain` shows. The plan itself says what the next pass does.
pub fn judge(
    policy: &Policy,
    snap: &Snapshot,
    now: DateTime<Utc>,
    image: usize,
) -> (Vec<Verdict>, Vec<Protection>) {
    let p = Planner::new(policy, snap, now);
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
            let selected = selects(view.rule, snap, target);
            let conditions = if selected {
                p.check_conditions(view, target)
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
        for rule in p.safety_reasons(target, false) {
            protections.push(Protection {
                reference: reference.clone(),
                rule,
            });
        }
    }
    (verdicts, protections)
}

/// The newest `keep_most_recent` selected tags per repository, by created time;
/// on a tie the tag that sorts last counts as newer (`build-102` over
/// `build-101`, as with reproducible builds that share a created time).
fn keep_most_recent(rule: &Rule, snap: &Snapshot) -> HashSet<(usize, usize)> {
    let Some(n) = rule.conditions.keep_most_recent else {
        return HashSet::new();
    };
    let mut by_repo: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
    for (i, img) in snap.images.iter().enumerate() {
        for (t, tag) in img.tags.iter().enumerate() {
            if selects(rule, snap, Target::Tag(i, t)) {
                by_repo.entry(repository_of(tag)).or_default().push((i, t));
            }
        }
    }
    let mut keep = HashSet::new();
    for refs in by_repo.values_mut() {
        refs.sort_by(|a, b| {
            let (ia, ib) = (&snap.images[a.0], &snap.images[b.0]);
            ib.created
                .cmp(&ia.created)
                .then_with(|| ib.tags[b.1].cmp(&ia.tags[a.1]))
        });
        keep.extend(refs.iter().take(n).copied());
    }
    keep
}

/// Selectors: all given must match.
fn selects(rule: &Rule, snap: &Snapshot, target: Target) -> bool {
    let sel = &rule.selectors;
    let img = &snap.images[target.image()];
    match (target, sel.dangling) {
        (Target::Tag(..), Some(true)) | (Target::Untagged(_), Some(false)) => return false,
        _ => {}
    }
    if !sel.repositories.is_empty() {
        let Target::Tag(_, t) = target else {
            return false;
        };
        let repo = repository_of(&img.tags[t]);
        if !sel.repositories.iter().any(|g| g.is_match(repo)) {
            return false;
        }
    }
    sel.labels.iter().all(|l| l.matches(&img.labels))
}

impl<'a> Planner<'a> {
    fn new(policy: &'a Policy, snap: &'a Snapshot, now: DateTime<Utc>) -> Self {
        let rules = policy
            .rules
            .iter()
            .map(|rule| RuleView {
                rule,
                kept_recent: keep_most_recent(rule, snap),
            })
            .collect();
        Planner {
            policy,
            snap,
            now,
            rules,
            ledger: Ledger::new(snap),
            planned: HashSet::new(),
            selected: Vec::new(),
            kept: Vec::new(),
            kept_seen: HashSet::new(),
            notes: Vec::new(),
            limit_hit: false,
        }
    }

    /// Each condition of a rule, checked and explained, for `explain`.
    fn check_conditions(&self, view: &RuleView<'_>, target: Target) -> Vec<ConditionCheck> {
        let cond = &view.rule.conditions;
        let i = target.image();
        let img = &self.snap.images[i];
        let mut out = Vec::new();
        if let Some(d) = cond.unused_for {
            let (last, source) = self.snap.last_used(i);
            let idle = self.now - last;
            out.push(ConditionCheck {
                condition: "unused_for",
                holds: idle > std_to_delta(d),
                detail: format!(
                    "last used {} ago ({}); unused_for {}",
                    human_duration(idle),
                    source.as_str(),
                    human_duration(std_to_delta(d))
                ),
            });
        }
        if let Some(d) = cond.older_than {
            let age = self.now - img.created;
            out.push(ConditionCheck {
                condition: "older_than",
                holds: age > std_to_delta(d),
                detail: format!(
                    "created {} ago; older_than {}",
                    human_duration(age),
                    human_duration(std_to_delta(d))
                ),
            });
        }
        if let Some(n) = cond.keep_most_recent {
            let (holds, detail) = match target {
                Target::Tag(_, t) => {
                    let repo = repository_of(&img.tags[t]);
                    if view.kept_recent.contains(&(i, t)) {
                        (false, format!("among the {n} newest of {repo}: kept"))
                    } else {
                        (true, format!("not among the {n} newest of {repo}"))
                    }
                }
                Target::Untagged(_) => (
                    false,
                    "untagged images have no repository to rank in".to_string(),
                ),
            };
            out.push(ConditionCheck {
                condition: "keep_most_recent",
                holds,
                detail,
            });
        }
        if let Some(disk) = cond.disk {
            let (holds, detail) = match self.usage_now(disk.high) {
                None => (false, "disk usage unknown".to_string()),
                Some(v) => {
                    (
                        Self::at_or_above(v, disk.high),
                        format!(
                            "usage {} vs disk_high {} (then least recently used first down to disk_low {})",
                            Self::show(v, disk.high),
                            disk.high,
                            disk.low
                        ),
                    )
                }
            };
            out.push(ConditionCheck {
                condition: "disk_high",
                holds,
                detail,
            });
        }
        out
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

    /// True when every condition but disk pressure holds. Allocation-free:
    /// it runs for every candidate and rule.
    fn conditions_met(&self, view: &RuleView<'_>, target: Target) -> bool {
        let cond = &view.rule.conditions;
        let i = target.image();
        if let Some(d) = cond.unused_for {
            if self.now - self.snap.last_used(i).0 <= std_to_delta(d) {
                return false;
            }
        }
        if let Some(d) = cond.older_than {
            if self.now - self.snap.images[i].created <= std_to_delta(d) {
                return false;
            }
        }
        if cond.keep_most_recent.is_some() {
            // Untagged images have no repository to rank in: never removed by
            // a rule that keeps the most recent.
            let Target::Tag(_, t) = target else {
                return false;
            };
            if view.kept_recent.contains(&(i, t)) {
                return false;
            }
        }
        true
    }

    /// The conditions that held, in words.
    fn describe_conditions(&self, view: &RuleView<'_>, target: Target) -> String {
        let cond = &view.rule.conditions;
        let i = target.image();
        let img = &self.snap.images[i];
        let mut parts = Vec::new();
        if let Some(d) = cond.unused_for {
            let (last, source) = self.snap.last_used(i);
            parts.push(format!(
                "unused for {} (unused_for {}; last use: {})",
                human_duration(self.now - last),
                human_duration(std_to_delta(d)),
                source.as_str()
            ));
        }
        if let Some(d) = cond.older_than {
            parts.push(format!(
                "created {} ago (older_than {})",
                human_duration(self.now - img.created),
                human_duration(std_to_delta(d))
            ));
        }
        if let (Some(n), Target::Tag(_, t)) = (cond.keep_most_recent, target) {
            parts.push(format!(
                "not among the {n} newest of {} (keep_most_recent {n})",
                repository_of(&img.tags[t])
            ));
        }
        if img.tags.is_empty() && parts.is_empty() {
            parts.push("dangling".to_string());
        }
        parts.join(", ")
    }

    /// The safety rule that protects a target, if any.
    fn protected(&self, target: Target) -> Option<String> {
        self.safety_reasons(target, true).into_iter().next()
    }

    /// The safety rules that protect a target: the first only, or all.
    fn safety_reasons(&self, target: Target, first_only: bool) -> Vec<String> {
        let i = target.image();
        let img = &self.snap.images[i];
        let safety = &self.policy.safety;
        let mut out = Vec::new();
        for &c in &self.snap.users[i] {
            let c = &self.snap.containers[c].container;
            out.push(format!(
                "in use by container {} ({})",
                short_id(&c.id),
                c.state
            ));
            if first_only {
                return out;
            }
        }
        for l in safety
            .protect_labels
            .iter()
            .filter(|l| l.matches(&img.labels))
        {
            out.push(format!("protected by label {l}"));
            if first_only {
                return out;
            }
        }
        // The references this removal takes away: the tag, or, for an
        // untagged image removed by ID, its digest references.
        let references = match target {
            Target::Tag(_, t) => std::slice::from_ref(&img.tags[t]),
            Target::Untagged(_) => img.digests.as_slice(),
        };
        for reference in references {
            let repo = repository_of(reference);
            for g in safety
                .protect
                .iter()
                .filter(|g| g.is_match(reference) || g.is_match(repo))
            {
                out.push(format!("protected by glob {}", g.pattern));
                if first_only {
                    return out;
                }
            }
        }
        let min_age = std_to_delta(safety.min_age);
        let (since, what) = self.snap.grace_start(i);
        let age = self.now - since;
        if age < min_age {
            out.push(format!(
                "younger than min_age {} ({what} {} ago)",
                human_duration(min_age),
                human_duration(age)
            ));
        }
        out
    }

    fn keep(&mut self, target: Target, rule: usize, reason: String) {
        if self.kept_seen.insert(target) {
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

    /// Safety, then the removal limit, then the ledger. Returns the images
    /// that became dangling, or `None` when the target was kept.
    fn try_remove(&mut self, target: Target, rule: usize, reason: String) -> Option<Vec<usize>> {
        if let Some(why) = self.protected(target) {
            self.keep(target, rule, why);
            return None;
        }
        if let Some(max) = self.policy.safety.max_removals_per_run {
            if self.selected.len() >= max.get() {
                if !self.limit_hit {
                    self.notes.push(format!(
                        "max_removals_per_run {max} reached; the rest waits for the next pass"
                    ));
                    self.limit_hit = true;
                }
                self.keep(target, rule, format!("max_removals_per_run {max} reached"));
                return None;
            }
        }
        self.planned.insert(target);
        self.selected.push((target, rule, reason));
        let effect = match target {
            Target::Tag(i, _) => self.ledger.remove_reference(i),
            Target::Untagged(i) => self.ledger.remove_untagged(i),
        };
        Some(effect.newly_dangling)
    }

    /// Every rule without disk watermarks, in file order; the first rule
    /// whose selectors and conditions hold names the removal.
    fn age_and_usage_phase(&mut self) {
        let mut queue: std::collections::VecDeque<Target> = self.candidates().into();
        while let Some(target) = queue.pop_front() {
            if self.planned.contains(&target) {
                continue;
            }
            let hit = (0..self.rules.len()).find_map(|r| {
                let view = &self.rules[r];
                (view.rule.conditions.disk.is_none()
                    && selects(view.rule, self.snap, target)
                    && self.conditions_met(view, target))
                .then(|| (r, self.describe_conditions(view, target)))
            });
            if let Some((r, reason)) = hit {
                if let Some(dangling) = self.try_remove(target, r, reason) {
                    queue.extend(dangling.into_iter().map(Target::Untagged));
                }
            }
        }
    }

    /// Where usage stands for a threshold, after the removals planned so far.
    fn projected(&self, threshold: Threshold) -> Option<f64> {
        match threshold {
            Threshold::Ratio(_) => self.snap.disk.map(|d| {
                let used = d.used_bytes.saturating_sub(self.ledger.freed());
                if d.total_bytes == 0 {
                    0.0
                } else {
                    used as f64 / d.total_bytes as f64
                }
            }),
            Threshold::Bytes(_) => {
                Some(self.snap.image_bytes().saturating_sub(self.ledger.freed()) as f64)
            }
        }
    }

    /// Usage before any removal of this pass, in the threshold's unit; `None`
    /// when the disk is unknown (remote engine).
    fn usage_now(&self, like: Threshold) -> Option<f64> {
        match like {
            Threshold::Ratio(_) => self.snap.disk.map(|d| d.used_ratio()),
            Threshold::Bytes(_) => Some(self.snap.image_bytes() as f64),
        }
    }

    fn at_or_above(value: f64, threshold: Threshold) -> bool {
        match threshold {
            Threshold::Ratio(h) => value >= h - 1e-12,
            Threshold::Bytes(h) => value >= h as f64,
        }
    }

    fn at_or_below(value: f64, threshold: Threshold) -> bool {
        match threshold {
            Threshold::Ratio(r) => value <= r + 1e-12,
            Threshold::Bytes(b) => value <= b as f64,
        }
    }

    /// Disk-pressure rules, in file order: each acts when usage is at or above
    /// its high watermark and removes least-recently-used first until the
    /// projected usage reaches its low watermark.
    fn disk_phase(&mut self) {
        for r in 0..self.rules.len() {
            let Some(disk) = self.rules[r].rule.conditions.disk else {
                continue;
            };
            let name = self.rules[r].rule.name.clone();
            // Activation looks at usage before any removal of this pass.
            let Some(actual) = self.usage_now(disk.high) else {
                self.notes.push(format!(
                    "policy {name}: disk usage of the engine's root dir is unknown (remote engine?); disk_high not evaluated"
                ));
                continue;
            };
            let high_reached = Self::at_or_above(actual, disk.high);
            let shown = Self::show(actual, disk.high);
            if !high_reached {
                self.notes.push(format!(
                    "policy {name}: usage {shown} is below disk_high {}",
                    disk.high
                ));
                continue;
            }
            let mut heap = BinaryHeap::new();
            let mut seq = 0usize;
            let candidates = self.candidates();
            for target in candidates {
                self.push_disk_candidate(&mut heap, &mut seq, r, target);
            }
            let mut removed = 0usize;
            while let Some(Reverse((_, _, _, target))) = heap.pop() {
                let Some(now) = self.projected(disk.low) else {
                    break;
                };
                if Self::at_or_below(now, disk.low) {
                    break;
                }
                if self.planned.contains(&target) {
                    continue;
                }
                if let Target::Untagged(i) = target {
                    if !self.ledger.is_dangling(i) {
                        continue;
                    }
                }
                let reason = self.disk_reason(r, target, &shown, disk.high);
                if let Some(dangling) = self.try_remove(target, r, reason) {
                    removed += 1;
                    for d in dangling {
                        self.push_disk_candidate(&mut heap, &mut seq, r, Target::Untagged(d));
                    }
                }
            }
            let after = self
                .projected(disk.low)
                .map_or_else(String::new, |v| Self::show(v, disk.low));
            self.notes.push(format!(
                "policy {name}: usage {shown} at or above disk_high {}; {removed} removals bring it to {after} (disk_low {})",
                disk.high, disk.low
            ));
        }
    }

    fn show(value: f64, like: Threshold) -> String {
        match like {
            Threshold::Ratio(_) => format!("{:.1}%", value * 100.0),
            Threshold::Bytes(_) => bytesize::ByteSize::b(value as u64)
                .display()
                .iec()
                .to_string(),
        }
    }

    fn push_disk_candidate(&self, heap: &mut DiskHeap, seq: &mut usize, r: usize, target: Target) {
        if self.planned.contains(&target) {
            return;
        }
        let view = &self.rules[r];
        if !selects(view.rule, self.snap, target) || !self.conditions_met(view, target) {
            return;
        }
        let i = target.image();
        *seq += 1;
        heap.push(Reverse((
            self.snap.last_used(i).0,
            self.snap.images[i].created,
            *seq,
            target,
        )));
    }

    fn disk_reason(&self, r: usize, target: Target, shown: &str, high: Threshold) -> String {
        let (last, source) = self.snap.last_used(target.image());
        let cond = self.describe_conditions(&self.rules[r], target);
        let lru = format!(
            "least recently used (last use {} ago: {})",
            human_duration(self.now - last),
            source.as_str()
        );
        let usage = format!("usage {shown} at or above disk_high {high}");
        if cond.is_empty() || cond == "dangling" {
            format!("{usage}, {lru}")
        } else {
            format!("{usage}, {cond}, {lru}")
        }
    }

    /// Order children before parents and price each removal in that order.
    fn finish(self) -> Plan {
        let snap = self.snap;
        let mut order: Vec<(usize, (Target, usize, String))> = self
            .selected
            .into_iter()
            .map(|s| (snap.depth(s.0.image()), s))
            .collect();
        // Deeper images first; stable, so selection order holds within a depth.
        order.sort_by_key(|(depth, _)| Reverse(*depth));
        let mut ledger = Ledger::new(snap);
        let mut removals = Vec::with_capacity(order.len());
        for (_, (target, rule, reason)) in order {
            let i = target.image();
            let effect = match target {
                Target::Tag(..) => ledger.remove_reference(i),
                Target::Untagged(_) => ledger.remove_untagged(i),
            };
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
            });
        }
        Plan {
            removals,
            kept: self.kept,
            reclaim_bytes: ledger.freed(),
            notes: self.notes,
        }
    }
}
