//! `imagegc explain`: everything imagegc knows and decides about one image.
//!
//! This is the answer to "why did (or didn't) imagegc delete this?": the
//! image's references, size and the bytes it alone would free, its times and
//! where its last-used time came from, how every policy sees each of its
//! references, every safety rule that protects it, and what the next pass
//! would actually do with it (taken from a full plan, so the answer is the
//! planner's own, not a second opinion).
//!
//! A target that names no image is looked up among the containers (full ID,
//! unique ID prefix of at least 4 characters, or exact name), and their
//! questions are answered for it: [`explain_container`]. One that names no
//! container either is looked up among the build-cache records
//! (full ID, or a unique prefix of at least 4 characters), and the same
//! questions are answered for the record: [`explain_record`].

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::json::{self, ExplainJson, ExplainRecordJson};
use super::table::{escaped, short_record_id};
use super::text::{human_duration, size};
use crate::gc::plan::{KeptBecause, Plan, Reasons};
use crate::gc::{self, Ledger, Protection, Verdict};
use crate::inventory::{BuildUser, FirstSeenBasis, LastUsedSource, Snapshot};
use crate::model::{as_written, repository_of, short_id};
use crate::policy::Policy;

/// Why a target names no single image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// Nothing matches.
    #[error("no image, container or build-cache record matches {0:?}: give a reference (repo:tag), an image ID, a container name or ID, or a build-cache record ID (or a unique prefix of an ID)")]
    NotFound(String),
    /// An ID prefix matches several images.
    #[error("{target:?} matches {count} images; give more of the ID")]
    Ambiguous {
        /// What was asked for.
        target: String,
        /// How many images match.
        count: usize,
    },
    /// An ID prefix matches several containers.
    #[error("{target:?} matches {} containers: {}; give more of the ID or the name", candidates.len(), candidates.join(", "))]
    AmbiguousContainer {
        /// What was asked for.
        target: String,
        /// The matching containers, `short-id (name)`, in the engine's order.
        candidates: Vec<String>,
    },
    /// An ID prefix matches several build-cache records.
    #[error("{target:?} matches {} build-cache records: {}; give more of the ID", candidates.len(), candidates.join(", "))]
    AmbiguousRecord {
        /// What was asked for.
        target: String,
        /// The matching record IDs, in the engine's order.
        candidates: Vec<String>,
    },
}

/// What an `explain` target names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An image: index into the snapshot's images.
    Image(usize),
    /// A container: index into the snapshot's containers.
    Container(usize),
    /// A build-cache record: index into the snapshot's `cache.records`.
    Record(usize),
}

/// The fewest characters of a record ID prefix `explain` accepts.
pub const MIN_RECORD_PREFIX: usize = 4;

/// The fewest characters of a container ID prefix `explain` accepts.
pub const MIN_CONTAINER_PREFIX: usize = 4;

/// Find what `target` names: an image as [`find`] does, else a container
/// by full ID, exact name (with or without its `/`) or unique ID prefix (at
/// least [`MIN_CONTAINER_PREFIX`] characters), else a build-cache record by
/// full ID or unique prefix (at least [`MIN_RECORD_PREFIX`] characters). An
/// ambiguous prefix is an error at the first kind it is ambiguous in
/// (images, then containers).
pub fn find_target(snapshot: &Snapshot, target: &str) -> Result<Target, LookupError> {
    match find(snapshot, target) {
        Ok(i) => return Ok(Target::Image(i)),
        Err(e @ LookupError::Ambiguous { .. }) => return Err(e),
        Err(_) => {}
    }
    if let Some(c) = find_container(snapshot, target)? {
        return Ok(Target::Container(c));
    }
    let cache = &snapshot.cache;
    if let Some(&r) = cache.by_id.get(target) {
        return Ok(Target::Record(r));
    }
    let not_found = || LookupError::NotFound(target.to_string());
    if target.chars().count() < MIN_RECORD_PREFIX
        || !target.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(not_found());
    }
    let matches: Vec<usize> = cache
        .records
        .iter()
        .enumerate()
        .filter(|(_, rec)| rec.id.starts_with(target))
        .map(|(i, _)| i)
        .collect();
    match matches.as_slice() {
        [r] => Ok(Target::Record(*r)),
        [] => Err(not_found()),
        many => Err(LookupError::AmbiguousRecord {
            target: target.to_string(),
            candidates: many.iter().map(|&r| cache.records[r].id.clone()).collect(),
        }),
    }
}

/// The container `target` names (full ID, exact name, unique ID prefix),
/// `None` when none does.
fn find_container(snapshot: &Snapshot, target: &str) -> Result<Option<usize>, LookupError> {
    let containers = &snapshot.containers;
    let name = target.strip_prefix('/').unwrap_or(target);
    if let Some(c) = containers.iter().position(|c| {
        c.container.id == target
            || c.container
                .names
                .iter()
                .any(|n| n.strip_prefix('/').unwrap_or(n) == name)
    }) {
        return Ok(Some(c));
    }
    if target.chars().count() < MIN_CONTAINER_PREFIX
        || !target.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Ok(None);
    }
    let matches: Vec<usize> = containers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.container.id.starts_with(target))
        .map(|(i, _)| i)
        .collect();
    match matches.as_slice() {
        [] => Ok(None),
        [c] => Ok(Some(*c)),
        many => Err(LookupError::AmbiguousContainer {
            target: target.to_string(),
            candidates: many
                .iter()
                .map(|&c| {
                    let c = &containers[c].container;
                    format!("{} ({})", short_id(&c.id), first_name(&c.names))
                })
                .collect(),
        }),
    }
}

/// A container's first name without its `/`, or empty.
fn first_name(names: &[String]) -> String {
    names
        .first()
        .map(|n| n.strip_prefix('/').unwrap_or(n).to_string())
        .unwrap_or_default()
}

/// Find the image a reference or an ID (prefix) names.
pub fn find(snapshot: &Snapshot, target: &str) -> Result<usize, LookupError> {
    let with_latest = if repository_of(target) == target && !target.contains('@') {
        Some(format!("{target}:latest"))
    } else {
        None
    };
    // On an engine that qualifies names without a registry with `localhost/`
    // (Podman), a reference written without it names the image too, as
    // policies' repositories do.
    let qualified = snapshot.capabilities.qualifies_local_names;
    let names = |r: &str| r == target || Some(r) == with_latest.as_deref();
    if let Some(i) = snapshot.images.iter().position(|img| {
        img.tags
            .iter()
            .chain(&img.digests)
            .any(|r| names(r) || (qualified && as_written(r).is_some_and(names)))
    }) {
        return Ok(i);
    }
    let hex = target.strip_prefix("sha256:").unwrap_or(target);
    if hex.len() < 4 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(LookupError::NotFound(target.to_string()));
    }
    let matches: Vec<usize> = snapshot
        .images
        .iter()
        .enumerate()
        .filter(|(_, img)| {
            img.id
                .strip_prefix("sha256:")
                .unwrap_or(&img.id)
                .starts_with(hex)
        })
        .map(|(i, _)| i)
        .collect();
    match matches.as_slice() {
        [i] => Ok(*i),
        [] => Err(LookupError::NotFound(target.to_string())),
        many => Err(LookupError::Ambiguous {
            target: target.to_string(),
            count: many.len(),
        }),
    }
}

/// Everything `explain` reports about one image.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// Image ID.
    pub image_id: String,
    /// Tag references.
    pub references: Vec<String>,
    /// Digest references.
    pub digests: Vec<String>,
    /// Bytes of all its layers, shared ones included.
    pub size_bytes: u64,
    /// Bytes deleting this image alone would free (0 while a child or a
    /// container holds it).
    pub unique_bytes: u64,
    /// Bytes deleting it together with the untagged parents only it holds
    /// would free: the engine deletes those along with it on a plain
    /// `docker rmi`, and a pass that removes it may remove them next. A
    /// classic-builder image often frees nothing alone, its layers being
    /// its intermediate parents' too.
    pub with_parents_bytes: u64,
    /// How many untagged parents go with it for `with_parents_bytes`.
    pub parents_freed: usize,
    /// Created time.
    pub created: DateTime<Utc>,
    /// First seen by imagegc, if after tracking began.
    pub first_seen: Option<DateTime<Utc>>,
    /// What `first_seen` stands for (seen, baseline, no state yet, restart).
    pub first_seen_basis: FirstSeenBasis,
    /// When the engine last put a reference on it (`LastTagTime`).
    pub last_tagged: Option<DateTime<Utc>>,
    /// Last used.
    pub last_used: DateTime<Utc>,
    /// Where the last-used time came from.
    pub last_used_source: &'static str,
    /// When a build was the last use: the image built on it or the
    /// build-cache record used, in words (`image 0123456789ab (app:2) was
    /// built on it`).
    pub last_used_by_build: Option<String>,
    /// Containers using it.
    pub containers: Vec<ContainerUse>,
    /// Parent image ID, when the engine knows one.
    pub parent: Option<String>,
    /// Number of child images.
    pub children: usize,
    /// Bytes of its layers that build-cache records hold: deleting the
    /// image frees them only after those records go.
    pub held_by_cache_bytes: u64,
    /// The records holding them, in the engine's order.
    pub held_by_records: Vec<String>,
    /// How each policy sees each reference.
    pub verdicts: Vec<Verdict>,
    /// Safety rules that protect it.
    pub protections: Vec<Protection>,
    /// What the next pass would do with it.
    pub removals: Vec<NextRemoval>,
    /// What the next pass would keep for a safety reason.
    pub kept: Vec<NextKept>,
    /// When this was worked out.
    pub now: DateTime<Utc>,
}

/// A container that uses the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUse {
    /// Short container ID.
    pub id: String,
    /// Its first name, or empty.
    pub name: String,
    /// Its state (`running`, `exited`, …).
    pub state: String,
    /// The `[[containers]]` policy the next pass removes it by, if any.
    pub removed_by: Option<String>,
    /// Why the next pass keeps it although a policy wants it, if so.
    pub kept_because: Option<KeptBecause>,
}

/// A removal of the image the next pass would make.
#[derive(Debug, Clone, PartialEq)]
pub struct NextRemoval {
    /// The tag, or `None` for the untagged image.
    pub reference: Option<String>,
    /// The policy that removes it.
    pub policy: String,
    /// Why.
    pub reason: Reasons,
    /// Bytes it frees in plan order.
    pub reclaim_bytes: u64,
}

/// A reference (or the untagged image) the next pass would keep for safety.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextKept {
    /// The tag, or `None` for the untagged image.
    pub reference: Option<String>,
    /// The policy that wanted it.
    pub policy: String,
    /// The rule that keeps it.
    pub reason: KeptBecause,
}

/// Explain image `i` of `snapshot` under `policy` at `now`, given the full
/// `plan` of that snapshot.
pub fn explain(
    policy: &Policy,
    snapshot: &Snapshot,
    plan: &Plan,
    now: DateTime<Utc>,
    i: usize,
) -> Explanation {
    let img = &snapshot.images[i];
    let (verdicts, protections) = gc::judge(policy, snapshot, now, i);
    let mut ledger = Ledger::new(snapshot);
    let mut orphaned_parents = Vec::new();
    for _ in &img.tags {
        orphaned_parents.extend(ledger.remove_reference(i).newly_dangling);
    }
    // Untagged, or held by a digest once its tags are gone: removed by ID.
    orphaned_parents.extend(ledger.remove_untagged(i).newly_dangling);
    // A digest-held image becomes dangling itself; it is no parent.
    orphaned_parents.retain(|&p| p != i);
    let unique_bytes = ledger.freed();
    // Then the untagged parents it alone held, as far up as they go.
    let mut parents_freed = 0;
    while let Some(p) = orphaned_parents.pop() {
        let effect = ledger.remove_untagged(p);
        parents_freed += effect.deleted.len();
        orphaned_parents.extend(effect.newly_dangling);
    }
    let (held_by_cache_bytes, held_by_records) = held_by_cache(snapshot, i);
    let last = snapshot.last_use(i);
    let (last_used, source) = (last.at, last.source);
    let last_used_by_build = last
        .build
        .filter(|_| source == LastUsedSource::Build)
        .map(|by| build_user(snapshot, by));
    Explanation {
        image_id: img.id.clone(),
        references: img.tags.clone(),
        digests: img.digests.clone(),
        size_bytes: img.layers.iter().fold(0u64, |total, &l| {
            total.saturating_add(snapshot.layers[l as usize].size)
        }),
        unique_bytes,
        with_parents_bytes: ledger.freed(),
        parents_freed,
        created: img.created,
        first_seen: img.tracked.first_seen,
        first_seen_basis: img.tracked.basis,
        last_tagged: img.last_tag_time,
        last_used,
        last_used_source: source.as_str(),
        last_used_by_build,
        containers: snapshot.users[i]
            .iter()
            .map(|&ci| {
                let c = &snapshot.containers[ci].container;
                ContainerUse {
                    id: short_id(&c.id).to_string(),
                    name: c.names.first().cloned().unwrap_or_default(),
                    state: c.state.clone(),
                    removed_by: plan
                        .containers
                        .iter()
                        .find(|r| r.container == ci)
                        .map(|r| r.policy.clone()),
                    kept_because: plan
                        .kept_containers
                        .iter()
                        .find(|k| k.container == ci)
                        .map(|k| k.reason.clone()),
                }
            })
            .collect(),
        parent: snapshot.parent[i].map(|p| snapshot.images[p].id.clone()),
        children: snapshot.children[i].len(),
        held_by_cache_bytes,
        held_by_records,
        verdicts,
        protections,
        removals: plan
            .removals
            .iter()
            .filter(|r| r.image == i)
            .map(|r| NextRemoval {
                reference: r.reference.clone(),
                policy: r.policy.clone(),
                reason: r.reason.clone(),
                reclaim_bytes: r.reclaim_bytes,
            })
            .collect(),
        kept: plan
            .kept
            .iter()
            .filter(|k| k.image == i)
            .map(|k| NextKept {
                reference: k.reference.clone(),
                policy: k.policy.clone(),
                reason: k.reason.clone(),
            })
            .collect(),
        now,
    }
}

/// Bytes of image `i`'s layers that build-cache records hold, and those
/// records' IDs.
fn held_by_cache(snapshot: &Snapshot, i: usize) -> (u64, Vec<String>) {
    let cache = &snapshot.cache;
    let layers = &snapshot.images[i].layers;
    let mut held = vec![false; layers.len()];
    let mut records = Vec::new();
    for (r, holds) in cache.holds.iter().enumerate() {
        let mut any = false;
        for (n, l) in layers.iter().enumerate() {
            if holds.contains(l) {
                held[n] = true;
                any = true;
            }
        }
        if any {
            if let Some(rec) = cache.records.get(r) {
                records.push(rec.id.clone());
            }
        }
    }
    let bytes = layers
        .iter()
        .zip(&held)
        .filter(|(_, &h)| h)
        .fold(0u64, |total, (&l, _)| {
            total.saturating_add(snapshot.layers[l as usize].size)
        });
    (bytes, records)
}

/// The build that used an image, in words: the image built on it (with
/// its first reference while it is there) or the record.
fn build_user(snapshot: &Snapshot, by: BuildUser) -> String {
    match by {
        BuildUser::Image(id) => {
            let tag = snapshot
                .images
                .iter()
                .find(|img| short_id(&img.id) == id.as_str())
                .and_then(|img| img.tags.first());
            match tag {
                Some(tag) => format!("image {id} ({tag}) was built on it"),
                None => format!("image {id} was built on it"),
            }
        }
        BuildUser::Record(id) => match snapshot.cache.by_id.get(id.as_str()) {
            Some(&r) => format!(
                "build-cache record {id} ({}) made from it was used",
                snapshot.cache.records[r].description
            ),
            None => format!("build-cache record {id} made from it was used"),
        },
        BuildUser::Unnamed => "recorded in the state".to_owned(),
    }
}

fn shown(reference: Option<&String>) -> &str {
    reference.map_or("<untagged>", String::as_str)
}

impl Explanation {
    /// One-line answer: will the next pass remove it?
    pub fn summary(&self) -> String {
        if self.removals.is_empty() {
            if let Some(k) = self.kept.first() {
                format!(
                    "kept: policy {} would remove it, but it is {}",
                    k.policy, k.reason
                )
            } else if self.verdicts.iter().any(|v| v.selected) {
                "kept: the policies that select it have conditions that do not hold".to_string()
            } else {
                "kept: no policy selects it".to_string()
            }
        } else {
            let deleted = self.removals.len() == self.references.len().max(1);
            format!(
                "the next pass would {} it ({} removal{}, frees {})",
                if deleted { "remove" } else { "untag" },
                self.removals.len(),
                if self.removals.len() == 1 { "" } else { "s" },
                size(
                    self.removals
                        .iter()
                        .fold(0u64, |total, r| total.saturating_add(r.reclaim_bytes))
                )
            )
        }
    }

    /// As JSON: [`ExplainJson`].
    pub fn to_json(&self) -> Value {
        json::to_value(&ExplainJson::new(self))
    }

    /// As text for a terminal.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let ago = |t: DateTime<Utc>| human_duration(self.now - t);
        let _ = writeln!(o, "image        {}", self.image_id);
        let refs = if self.references.is_empty() {
            "<untagged>".to_string()
        } else {
            self.references.join(", ")
        };
        let _ = writeln!(o, "references   {refs}");
        if !self.digests.is_empty() {
            let _ = writeln!(o, "digests      {}", self.digests.join(", "));
        }
        let _ = if self.parents_freed == 0 {
            writeln!(
                o,
                "size         {} ({} freed if deleted alone)",
                size(self.size_bytes),
                size(self.unique_bytes)
            )
        } else {
            writeln!(
                o,
                "size         {} ({} freed if deleted alone; {} with the {} untagged \
                 parent{} only it holds)",
                size(self.size_bytes),
                size(self.unique_bytes),
                size(self.with_parents_bytes),
                self.parents_freed,
                if self.parents_freed == 1 { "" } else { "s" }
            )
        };
        let _ = writeln!(
            o,
            "created      {} ({} ago)",
            self.created.format("%Y-%m-%d %H:%M:%S UTC"),
            ago(self.created)
        );
        if let Some(t) = self.last_tagged {
            let _ = writeln!(
                o,
                "last tagged  {} ({} ago)",
                t.format("%Y-%m-%d %H:%M:%S UTC"),
                ago(t)
            );
        }
        self.times_text(&mut o);
        if let Some(p) = &self.parent {
            let _ = writeln!(o, "parent       {p}");
        }
        if self.children > 0 {
            let _ = writeln!(o, "children     {} (kept while they exist)", self.children);
        }
        for c in &self.containers {
            let next = match (&c.removed_by, &c.kept_because) {
                (Some(p), _) => {
                    format!("; the next pass removes it (policy {p}), unpinning the image")
                }
                (None, Some(k)) => format!("; kept: {k}"),
                (None, None) => String::new(),
            };
            let _ = writeln!(o, "container    {} {} ({}){next}", c.id, c.name, c.state);
        }
        if !self.held_by_records.is_empty() {
            let _ = writeln!(
                o,
                "build cache  {} bytes of its layers are held by build-cache records {}; \
                 removing it frees them only after those records go",
                self.held_by_cache_bytes,
                short_records(&self.held_by_records)
            );
        }
        self.decisions_text(&mut o);
        o
    }

    /// First seen and last used, as text.
    fn times_text(&self, o: &mut String) {
        let ago = |t: DateTime<Utc>| human_duration(self.now - t);
        let _ = match (self.first_seen, self.first_seen_basis) {
            (Some(t), FirstSeenBasis::Restarted) => writeln!(
                o,
                "first seen   {} ({} ago; tracking restarted then: the state file was lost or cannot be written)",
                t.format("%Y-%m-%d %H:%M:%S UTC"),
                ago(t)
            ),
            (Some(t), _) => writeln!(
                o,
                "first seen   {} ({} ago)",
                t.format("%Y-%m-%d %H:%M:%S UTC"),
                ago(t)
            ),
            (None, FirstSeenBasis::NoStateYet) => writeln!(
                o,
                "first seen   not tracked yet: there is no state file, so the first pass takes it into its baseline (the grace period counts from created or last tagged)"
            ),
            (None, _) => writeln!(
                o,
                "first seen   already there when tracking began (the grace period counts from created or last tagged)"
            ),
        };
        let _ = match &self.last_used_by_build {
            Some(by) => writeln!(
                o,
                "last used    by a build at {} ({} ago; {by})",
                self.last_used.format("%Y-%m-%d %H:%M:%S UTC"),
                ago(self.last_used),
            ),
            None => writeln!(
                o,
                "last used    {} ({} ago; from: {})",
                self.last_used.format("%Y-%m-%d %H:%M:%S UTC"),
                ago(self.last_used),
                self.last_used_source
            ),
        };
    }

    /// Policies, safety and the next pass, as text.
    fn decisions_text(&self, o: &mut String) {
        o.push_str("\nPolicies:\n");
        if self.verdicts.is_empty() {
            o.push_str("  (none)\n");
        }
        for v in &self.verdicts {
            let who = shown(v.reference.as_ref());
            if !v.selected {
                let _ = writeln!(o, "  {} on {who}: not selected", v.policy);
                continue;
            }
            let all = v.conditions.iter().all(|c| c.holds);
            let _ = writeln!(
                o,
                "  {} on {who}: selected; conditions {}",
                v.policy,
                if all { "hold" } else { "do not hold" }
            );
            for c in &v.conditions {
                let _ = writeln!(o, "    {c}");
            }
        }
        o.push_str("\nSafety:\n");
        if self.protections.is_empty() {
            o.push_str("  no safety rule protects it\n");
        }
        for p in &self.protections {
            let _ = writeln!(o, "  {}: {}", shown(p.reference.as_ref()), p.rule);
        }
        o.push_str("\nNext pass:\n");
        for r in &self.removals {
            let _ = writeln!(
                o,
                "  remove {} (policy {}, frees {}): {}",
                shown(r.reference.as_ref()),
                r.policy,
                size(r.reclaim_bytes),
                r.reason
            );
        }
        for k in &self.kept {
            let _ = writeln!(
                o,
                "  keep {} (policy {} would remove it): {}",
                shown(k.reference.as_ref()),
                k.policy,
                k.reason
            );
        }
        let _ = writeln!(o, "  => {}", self.summary());
    }
}

/// Up to 5 short record IDs, then how many more.
fn short_records(ids: &[String]) -> String {
    let mut shown: Vec<&str> = ids.iter().take(5).map(|id| short_record_id(id)).collect();
    let more = ids.len().saturating_sub(5);
    let extra = format!("and {more} more");
    if more > 0 {
        shown.push(&extra);
    }
    shown.join(", ")
}

/// Everything `explain` reports about one build-cache record.
#[derive(Debug, Clone)]
pub struct RecordExplanation {
    /// The full record ID.
    pub record_id: String,
    /// The record's type as the engine spells it.
    pub kind: String,
    /// What made it, as the engine describes it.
    pub description: String,
    /// Its size as the engine counts it (shared bytes included).
    pub size_bytes: u64,
    /// Bytes removing it alone, now, would free.
    pub frees_bytes: u64,
    /// Bytes of image layers whose data it shares.
    pub held_layer_bytes: u64,
    /// Created time.
    pub created: chrono::DateTime<Utc>,
    /// When a build last used it, if ever.
    pub last_used: Option<DateTime<Utc>>,
    /// How many builds used it.
    pub usage_count: u64,
    /// A running build holds it.
    pub in_use: bool,
    /// Its data is shared with image layers or other records.
    pub shared: bool,
    /// The records it was made on top of (IDs, as the engine names them).
    pub parents: Vec<String>,
    /// The records made on top of it.
    pub children: Vec<String>,
    /// How each `[[build_cache]]` policy sees it.
    pub verdicts: Vec<Verdict>,
    /// Safety rules that protect it.
    pub protections: Vec<Protection>,
    /// The next pass's removal of it, if any.
    pub removal: Option<NextRemoval>,
    /// What the next pass keeps of it for a safety reason.
    pub kept: Vec<NextKept>,
    /// When this was worked out.
    pub now: DateTime<Utc>,
}

/// Explain build-cache record `r` of `snapshot` under `policy` at `now`,
/// given the full `plan` of that snapshot.
pub fn explain_record(
    policy: &Policy,
    snapshot: &Snapshot,
    plan: &Plan,
    now: DateTime<Utc>,
    r: usize,
) -> RecordExplanation {
    let cache = &snapshot.cache;
    let rec = &cache.records[r];
    let (verdicts, protections) = gc::judge_record(policy, snapshot, now, r);
    let frees_bytes = Ledger::new(snapshot).remove_record(r).freed;
    let held_layer_bytes = cache.holds.get(r).map_or(0, |held| {
        held.iter().fold(0u64, |total, &l| {
            total.saturating_add(snapshot.layers.get(l as usize).map_or(0, |x| x.size))
        })
    });
    RecordExplanation {
        record_id: rec.id.clone(),
        kind: rec.kind.to_string(),
        description: rec.description.clone(),
        size_bytes: rec.size,
        frees_bytes,
        held_layer_bytes,
        created: rec.created,
        last_used: rec.last_used,
        usage_count: rec.usage_count,
        in_use: rec.in_use,
        shared: rec.shared,
        parents: rec.parents.clone(),
        children: cache
            .children
            .get(r)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(|&c| cache.records.get(c).map(|x| x.id.clone()))
            .collect(),
        verdicts,
        protections,
        removal: plan
            .records
            .iter()
            .find(|x| x.record == r)
            .map(|x| NextRemoval {
                reference: None,
                policy: x.policy.clone(),
                reason: x.reason.clone(),
                reclaim_bytes: x.reclaim_bytes,
            }),
        kept: plan
            .kept_records
            .iter()
            .filter(|k| k.record == r)
            .map(|k| NextKept {
                reference: None,
                policy: k.policy.clone(),
                reason: k.reason.clone(),
            })
            .collect(),
        now,
    }
}

impl RecordExplanation {
    /// One-line answer: will the next pass remove it?
    pub fn summary(&self) -> String {
        if let Some(r) = &self.removal {
            format!(
                "the next pass would remove it (policy {}, frees {})",
                r.policy,
                size(r.reclaim_bytes)
            )
        } else if let Some(k) = self.kept.first() {
            format!(
                "kept: policy {} would remove it, but it is {}",
                k.policy, k.reason
            )
        } else if self.verdicts.iter().any(|v| v.selected) {
            "kept: the build_cache policies that select it have conditions that do not hold"
                .to_string()
        } else {
            "kept: no build_cache policy selects it".to_string()
        }
    }

    /// As JSON: [`ExplainRecordJson`].
    pub fn to_json(&self) -> Value {
        json::to_value(&ExplainRecordJson::new(self))
    }

    /// As text for a terminal.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let ago = |t: DateTime<Utc>| human_duration(self.now - t);
        let at = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let _ = writeln!(o, "build-cache record  {}", self.record_id);
        let _ = writeln!(o, "type         {}", self.kind);
        let _ = writeln!(o, "description  {}", escaped(&self.description));
        let _ = writeln!(
            o,
            "size         {} ({} freed if removed alone now)",
            size(self.size_bytes),
            size(self.frees_bytes)
        );
        let _ = writeln!(
            o,
            "created      {} ({} ago)",
            at(self.created),
            ago(self.created)
        );
        let _ = match self.last_used {
            Some(t) => writeln!(
                o,
                "last used    {} ({} ago; {} use{})",
                at(t),
                ago(t),
                self.usage_count,
                if self.usage_count == 1 { "" } else { "s" }
            ),
            None => writeln!(o, "last used    never"),
        };
        let _ = writeln!(
            o,
            "in use       {}",
            if self.in_use {
                "yes: a running build holds it"
            } else {
                "no"
            }
        );
        if self.shared {
            let _ = writeln!(
                o,
                "shared       yes: its data is shared{}; removing it frees that only once no image uses it",
                if self.held_layer_bytes > 0 {
                    format!(" with {} of image layers", size(self.held_layer_bytes))
                } else {
                    String::new()
                }
            );
        } else {
            let _ = writeln!(o, "shared       no");
        }
        if !self.parents.is_empty() {
            let _ = writeln!(o, "parents      {}", short_records(&self.parents));
        }
        if !self.children.is_empty() {
            let _ = writeln!(
                o,
                "children     {} (it goes only after them)",
                short_records(&self.children)
            );
        }
        self.decisions_text(&mut o);
        o
    }

    /// Policies, safety and the next pass, as text.
    fn decisions_text(&self, o: &mut String) {
        policies_and_safety_text(o, &self.verdicts, &self.protections, "build_cache");
        o.push_str("\nNext pass:\n");
        removal_text(o, self.removal.as_ref());
        kept_and_summary_text(o, &self.kept, &self.summary());
    }
}

/// The `Policies:` and `Safety:` parts of a record's or a container's
/// explanation: each policy's verdict with its checks, then every safety
/// rule that protects it. `kind` names the table kind when no policy judged it.
fn policies_and_safety_text(
    o: &mut String,
    verdicts: &[Verdict],
    protections: &[Protection],
    kind: &str,
) {
    o.push_str("\nPolicies:\n");
    if verdicts.is_empty() {
        let _ = writeln!(o, "  (no {kind} policy judged it)");
    }
    for v in verdicts {
        if !v.selected {
            let _ = writeln!(o, "  {}: not selected", v.policy);
            continue;
        }
        let all = v.conditions.iter().all(|c| c.holds);
        let _ = writeln!(
            o,
            "  {}: selected; conditions {}",
            v.policy,
            if all { "hold" } else { "do not hold" }
        );
        for c in &v.conditions {
            let _ = writeln!(o, "    {c}");
        }
    }
    o.push_str("\nSafety:\n");
    if protections.is_empty() {
        o.push_str("  no safety rule protects it\n");
    }
    for p in protections {
        let _ = writeln!(o, "  {}", p.rule);
    }
}

/// The next pass's removal, if it makes one.
fn removal_text(o: &mut String, removal: Option<&NextRemoval>) {
    if let Some(r) = removal {
        let _ = writeln!(
            o,
            "  remove (policy {}, frees {}): {}",
            r.policy,
            size(r.reclaim_bytes),
            r.reason
        );
    }
}

/// What policies would remove but safety keeps, and the one-line summary.
fn kept_and_summary_text(o: &mut String, kept: &[NextKept], summary: &str) {
    for k in kept {
        let _ = writeln!(
            o,
            "  keep (policy {} would remove it): {}",
            k.policy, k.reason
        );
    }
    let _ = writeln!(o, "  => {summary}");
}

/// Everything `explain` reports about one container.
#[derive(Debug, Clone)]
pub struct ContainerExplanation {
    /// The full container ID.
    pub container_id: String,
    /// Its first name, without the `/`.
    pub name: String,
    /// Its state as the engine spells it.
    pub state: String,
    /// The image ID it uses.
    pub image_id: String,
    /// The image reference it was created from.
    pub image_ref: String,
    /// Created time.
    pub created: DateTime<Utc>,
    /// When it last started, if ever (`None` also when not inspected).
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished, if it did.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its restart policy, or `None` when not inspected.
    pub restart_policy: Option<String>,
    /// Its writable layer, when the engine reported it.
    pub size_rw: Option<u64>,
    /// How each `[[containers]]` policy sees it.
    pub verdicts: Vec<Verdict>,
    /// Safety rules that protect it.
    pub protections: Vec<Protection>,
    /// The next pass's removal of it, if any.
    pub removal: Option<NextRemoval>,
    /// Images the next pass's removal of it unpins (first tag or short ID).
    pub unpins: Vec<String>,
    /// What the next pass keeps of it for a safety reason.
    pub kept: Vec<NextKept>,
    /// When this was worked out.
    pub now: DateTime<Utc>,
}

/// Explain container `c` of `snapshot` under `policy` at `now`, given the
/// full `plan` of that snapshot.
pub fn explain_container(
    policy: &Policy,
    snapshot: &Snapshot,
    plan: &Plan,
    now: DateTime<Utc>,
    c: usize,
) -> ContainerExplanation {
    let snap = &snapshot.containers[c];
    let container = &snap.container;
    let details = snap.details.as_ref();
    let (verdicts, protections) = gc::judge_container(policy, snapshot, now, c);
    let planned = plan.containers.iter().find(|r| r.container == c);
    ContainerExplanation {
        container_id: container.id.clone(),
        name: first_name(&container.names),
        state: container.state.clone(),
        image_id: container.image_id.clone(),
        image_ref: container.image_ref.clone(),
        created: container.created,
        started_at: details.and_then(|d| d.started_at),
        finished_at: details.and_then(|d| d.finished_at),
        restart_policy: details.map(|d| d.restart_policy.clone()),
        size_rw: details.and_then(|d| d.size_rw),
        verdicts,
        protections,
        removal: planned.map(|r| NextRemoval {
            reference: None,
            policy: r.policy.clone(),
            reason: r.reason.clone(),
            reclaim_bytes: r.reclaim_bytes,
        }),
        unpins: planned.map_or_else(Vec::new, |r| {
            r.unpins
                .iter()
                .filter_map(|&i| snapshot.images.get(i))
                .map(|i| {
                    i.tags
                        .first()
                        .cloned()
                        .unwrap_or_else(|| short_id(&i.id).to_string())
                })
                .collect()
        }),
        kept: plan
            .kept_containers
            .iter()
            .filter(|k| k.container == c)
            .map(|k| NextKept {
                reference: None,
                policy: k.policy.clone(),
                reason: k.reason.clone(),
            })
            .collect(),
        now,
    }
}

impl ContainerExplanation {
    /// One-line answer: will the next pass remove it?
    pub fn summary(&self) -> String {
        if let Some(r) = &self.removal {
            format!(
                "the next pass would remove it (policy {}, frees {}{})",
                r.policy,
                size(r.reclaim_bytes),
                if self.unpins.is_empty() {
                    String::new()
                } else {
                    format!(", unpins {}", self.unpins.join(", "))
                }
            )
        } else if let Some(k) = self.kept.first() {
            format!(
                "kept: policy {} would remove it, but {}",
                k.policy, k.reason
            )
        } else if self.verdicts.iter().any(|v| v.selected) {
            "kept: the containers policies that select it have conditions that do not hold"
                .to_string()
        } else {
            "kept: no containers policy selects it".to_string()
        }
    }

    /// As JSON: [`json::ExplainContainerJson`].
    pub fn to_json(&self) -> Value {
        json::to_value(&json::ExplainContainerJson::new(self))
    }

    /// As text for a terminal.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let ago = |t: DateTime<Utc>| human_duration(self.now - t);
        let at = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let _ = writeln!(o, "container    {}", self.container_id);
        let _ = writeln!(o, "name         {}", escaped(&self.name));
        let _ = writeln!(o, "state        {}", self.state);
        let _ = writeln!(
            o,
            "image        {} ({})",
            escaped(&self.image_ref),
            short_id(&self.image_id)
        );
        let _ = writeln!(
            o,
            "created      {} ({} ago)",
            at(self.created),
            ago(self.created)
        );
        let _ = match self.finished_at {
            Some(t) => writeln!(o, "finished     {} ({} ago)", at(t), ago(t)),
            None if self.started_at.is_none() && self.restart_policy.is_some() => {
                writeln!(o, "finished     never started")
            }
            None => writeln!(o, "finished     -"),
        };
        let _ = writeln!(
            o,
            "restart      {}",
            match self.restart_policy.as_deref() {
                None => "(not inspected: no containers policy)",
                Some("") => "no",
                Some(p) => p,
            }
        );
        let _ = writeln!(
            o,
            "writable     {}",
            self.size_rw
                .map_or_else(|| "not reported".to_string(), size)
        );
        policies_and_safety_text(&mut o, &self.verdicts, &self.protections, "containers");
        o.push_str("\nNext pass:\n");
        removal_text(&mut o, self.removal.as_ref());
        if self.removal.is_some() && !self.unpins.is_empty() {
            let _ = writeln!(o, "  unpins {}", self.unpins.join(", "));
        }
        kept_and_summary_text(&mut o, &self.kept, &self.summary());
        o
    }
}
