//! Build-cache records in the plan: which `[[build_cache]]` rule selects a
//! record, its `keep_storage` rank, the record phases of a pass and the
//! children-before-parents rule.
//!
//! A record is removable only once every child record is planned: the
//! age/usage phase visits records deepest first, so one pass is the
//! fixpoint; a disk-pressure pass holds a record whose children are not yet
//! planned aside and takes it up again once its last child is planned.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use super::conditions::{
    check_record, record_last_used, Basis, CacheCondition, Check, RecordContext, StorageRank,
};
use super::plan::{KeptBecause, KeptRecord, Reason, Reasons};
use super::{safety, Planner};
use crate::inventory::{BuildCache, Snapshot};
use crate::policy::CacheRule;

/// Per cache rule, precomputed.
pub(super) struct CacheView<'p> {
    /// The rule.
    pub rule: &'p CacheRule,
    /// Per record: its `keep_storage` rank (`None`: not selected, or no
    /// `keep_storage`).
    pub storage: Vec<Option<StorageRank>>,
}

impl<'p> CacheView<'p> {
    pub(super) fn new(rule: &'p CacheRule, snap: &Snapshot) -> Self {
        CacheView {
            rule,
            storage: storage_ranks(rule, snap),
        }
    }
}

/// Selectors: the record's type is one of `types` (empty: every type).
pub(super) fn selects_record(rule: &CacheRule, snap: &Snapshot, r: usize) -> bool {
    let types = &rule.selectors.types;
    types.is_empty() || {
        let kind = snap.cache.records[r].kind.as_str();
        types.iter().any(|t| t == kind)
    }
}

/// `keep_storage`: the selected records, most recently used first (then
/// newest created, then the ID that sorts last); the longest run of them
/// whose sizes add up to at most `keep_storage` is kept, every later one
/// holds the condition.
fn storage_ranks(rule: &CacheRule, snap: &Snapshot) -> Vec<Option<StorageRank>> {
    let mut ranks = vec![None; snap.cache.len()];
    let Some(keep) = rule.conditions.keep_storage else {
        return ranks;
    };
    let cache = &snap.cache;
    let mut selected: Vec<usize> = (0..cache.len())
        .filter(|&r| selects_record(rule, snap, r))
        .collect();
    selected.sort_by(|&a, &b| {
        let (ra, rb) = (&cache.records[a], &cache.records[b]);
        cache
            .last_used(b)
            .0
            .cmp(&cache.last_used(a).0)
            .then_with(|| rb.created.cmp(&ra.created))
            .then_with(|| rb.id.cmp(&ra.id))
    });
    let mut newer = 0u64;
    let mut fits = true;
    for r in selected {
        let size = cache.records[r].size;
        fits = fits && newer.checked_add(size).is_some_and(|t| t <= keep);
        ranks[r] = Some(StorageRank { newer, kept: fits });
        newer = newer.saturating_add(size);
    }
    ranks
}

/// Per record, the length of its longest chain of parents (0 for a root).
/// Every child is deeper than each of its parents, so deepest first is
/// children before parents. A parent cycle (not made by a real engine) is
/// cut at the edge that closes it, never a panic or an endless loop.
pub(super) fn record_depths(cache: &BuildCache) -> Vec<usize> {
    let n = cache.len();
    let parents = |r: usize| parents_of(cache, r);
    let mut depth = vec![0usize; n];
    // 0: not visited, 1: on the stack, 2: done.
    let mut state = vec![0u8; n];
    for start in 0..n {
        if state[start] != 0 {
            continue;
        }
        state[start] = 1;
        let mut stack = vec![(start, 0usize)];
        while let Some(top) = stack.last_mut() {
            let (node, next) = *top;
            if let Some(&p) = parents(node).get(next) {
                top.1 += 1;
                if p < n && state[p] == 0 {
                    state[p] = 1;
                    stack.push((p, 0));
                }
            } else {
                depth[node] = parents(node)
                    .iter()
                    .filter(|&&p| p < n && state[p] == 2)
                    .map(|&p| depth[p] + 1)
                    .max()
                    .unwrap_or(0);
                state[node] = 2;
                stack.pop();
            }
        }
    }
    depth
}

/// Child records of `r` (none for an index the cache does not have).
pub(super) fn children_of(cache: &BuildCache, r: usize) -> &[usize] {
    cache.children.get(r).map_or(&[][..], Vec::as_slice)
}

/// Parent records of `r` (none for an index the cache does not have).
fn parents_of(cache: &BuildCache, r: usize) -> &[usize] {
    cache.parents.get(r).map_or(&[][..], Vec::as_slice)
}

/// Disk-pressure record candidates, least recently used first (then oldest
/// created, then first found).
type RecordHeap = BinaryHeap<
    Reverse<(
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        usize,
        usize,
    )>,
>;

/// What became of a record the planner tried to remove.
enum Outcome {
    Planned,
    Kept,
    /// Its children are not all planned yet.
    Waiting,
}

impl<'a> Planner<'a> {
    fn record_context<'k>(&self, view: &'k CacheView<'_>) -> RecordContext<'a, 'k> {
        RecordContext {
            snap: self.snap,
            now: self.now,
            storage: &view.storage,
            cache_bytes: self.cache_bytes,
        }
    }

    /// Every condition of a cache rule, checked against record `r`, lazily.
    pub(super) fn record_checks<'k>(
        &self,
        view: &'k CacheView<'_>,
        r: usize,
    ) -> impl Iterator<Item = Check<'a>> + 'k
    where
        'a: 'k,
    {
        let cx = self.record_context(view);
        CacheCondition::of(&view.rule.conditions).map(move |c| check_record(&cx, c, r))
    }

    /// True when the rule sets a condition and every one but disk and inode
    /// pressure
    /// holds. A rule without conditions (the policy file refuses it)
    /// removes nothing.
    fn record_conditions_met(&self, view: &CacheView<'_>, r: usize) -> bool {
        let mut any = false;
        let all = self.record_checks(view, r).all(|c| {
            any = true;
            c.condition == "disk_high" || c.condition == "inodes_high" || c.holds
        });
        any && all
    }

    /// The reasons of the conditions that held, pressure aside.
    fn record_held(&self, view: &CacheView<'_>, r: usize) -> Vec<Reason> {
        self.record_checks(view, r)
            .filter(|c| c.holds)
            .filter_map(|c| c.fact.reason())
            .collect()
    }

    /// Child records of `r` not planned (so far).
    fn pending_children(&self, r: usize) -> usize {
        children_of(&self.snap.cache, r)
            .iter()
            .filter(|&&c| !self.planned_records.get(c).copied().unwrap_or(false))
            .count()
    }

    fn keep_record(&mut self, r: usize, rule: usize, reason: KeptBecause) {
        if self.kept_records_seen.insert(r) {
            self.kept_records.push(KeptRecord {
                record: r,
                record_id: self.snap.cache.records[r].id.clone(),
                policy: self.cache_rules[rule].rule.name.clone(),
                reason,
            });
        }
    }

    /// Safety, then children before parents (`wait`: report it rather than
    /// keep the record), then the removal limit, then the ledger.
    fn try_remove_record(&mut self, r: usize, rule: usize, reason: Reasons, wait: bool) -> Outcome {
        let first = safety::record_protections(&self.policy.safety, self.snap, self.now, r).next();
        if let Some(why) = first {
            self.keep_record(r, rule, why);
            return Outcome::Kept;
        }
        let children = self.pending_children(r);
        if children > 0 {
            if wait {
                return Outcome::Waiting;
            }
            self.keep_record(r, rule, KeptBecause::HasChildren { children });
            return Outcome::Kept;
        }
        if let Some(why) = self.limit_reached() {
            self.keep_record(r, rule, why);
            return Outcome::Kept;
        }
        self.planned_records[r] = true;
        self.selected_records.push((r, rule, reason));
        self.ledger.remove_record(r);
        Outcome::Planned
    }

    /// Every record rule without disk watermarks, in file order: the first
    /// whose selectors and conditions hold names the removal. Records are
    /// visited deepest first, so a parent is judged after all its children.
    pub(super) fn record_age_and_usage_phase(&mut self) {
        if !self.cache_on {
            return;
        }
        let mut order: Vec<usize> = (0..self.snap.cache.len()).collect();
        order.sort_by_key(|&r| Reverse(self.record_depth[r]));
        for r in order {
            if self.planned_records[r] {
                continue;
            }
            let hit = (0..self.cache_rules.len()).find_map(|c| {
                let view = &self.cache_rules[c];
                (!view.rule.conditions.is_pressure()
                    && selects_record(view.rule, self.snap, r)
                    && self.record_conditions_met(view, r))
                .then(|| (c, Reasons(self.record_held(view, r))))
            });
            if let Some((c, reason)) = hit {
                self.try_remove_record(r, c, reason, false);
            }
        }
    }

    fn push_record_candidate(&self, heap: &mut RecordHeap, seq: &mut usize, c: usize, r: usize) {
        if self.planned_records[r] {
            return;
        }
        let view = &self.cache_rules[c];
        if !selects_record(view.rule, self.snap, r) || !self.record_conditions_met(view, r) {
            return;
        }
        *seq += 1;
        heap.push(Reverse((
            self.snap.cache.last_used(r).0,
            self.snap.cache.records[r].created,
            *seq,
            r,
        )));
    }

    /// One `[[build_cache]]` pressure rule: when its `disk_high` or
    /// `inodes_high` holds at the start of the pass, remove its least
    /// recently used candidates until the projection (every byte the pass
    /// frees so far, and inodes in proportion) reaches every low mark it
    /// sets. A candidate whose children are not all planned waits
    /// until they are; one still waiting at the end is kept
    /// ([`KeptBecause::HasChildren`]).
    pub(super) fn disk_records(&mut self, c: usize) {
        if !self.cache_on {
            return;
        }
        let conditions = &self.cache_rules[c].rule.conditions;
        if !conditions.is_pressure() {
            return;
        }
        let (disk, inodes) = (conditions.disk, conditions.inodes);
        let policy = self.cache_rules[c].rule.name.clone();
        let pressure = self.pressure_at_start(&policy, disk, inodes, Basis::Cache);
        if !pressure.active() {
            return;
        }
        let first = pressure.reasons();
        let mut heap = RecordHeap::new();
        let mut seq = 0usize;
        for r in 0..self.snap.cache.len() {
            self.push_record_candidate(&mut heap, &mut seq, c, r);
        }
        let mut waiting: HashSet<usize> = HashSet::new();
        let mut removals = 0usize;
        while let Some(Reverse((_, _, _, r))) = heap.pop() {
            if self.lows_reached(&pressure, Basis::Cache) {
                break;
            }
            if self.planned_records[r] {
                continue;
            }
            let reason = self.record_disk_reason(c, r, &first);
            match self.try_remove_record(r, c, reason, true) {
                Outcome::Planned => {
                    removals += 1;
                    for &p in parents_of(&self.snap.cache, r) {
                        if self.pending_children(p) == 0 && waiting.remove(&p) {
                            self.push_record_candidate(&mut heap, &mut seq, c, p);
                        }
                    }
                }
                Outcome::Waiting => {
                    waiting.insert(r);
                }
                Outcome::Kept => {}
            }
        }
        let mut still: Vec<usize> = waiting.into_iter().collect();
        still.sort_unstable();
        for r in still {
            let children = self.pending_children(r);
            self.keep_record(r, c, KeptBecause::HasChildren { children });
        }
        self.pressure_notes(&policy, &pressure, removals, Basis::Cache);
    }

    /// The pressure (`first`), the other conditions that held, and the last
    /// use.
    fn record_disk_reason(&self, c: usize, r: usize, first: &[Reason]) -> Reasons {
        let (last, source) = record_last_used(self.snap, r);
        let mut out = first.to_vec();
        out.extend(self.record_held(&self.cache_rules[c], r));
        out.push(Reason::LeastRecentlyUsed {
            idle: self.now - last,
            source,
        });
        Reasons(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{CacheRecord, CacheRecordKind};
    use chrono::{TimeZone, Utc};

    fn cache(parents: &[&[&str]]) -> BuildCache {
        let records = parents
            .iter()
            .enumerate()
            .map(|(i, ps)| CacheRecord {
                id: format!("r{i}"),
                parents: ps.iter().map(ToString::to_string).collect(),
                kind: CacheRecordKind::Regular,
                description: String::new(),
                in_use: false,
                shared: false,
                size: 1,
                created: Utc.timestamp_opt(0, 0).single().expect("epoch"),
                last_used: None,
                usage_count: 0,
            })
            .collect();
        Snapshot::build(Vec::new(), Vec::new(), None)
            .with_build_cache(records)
            .cache
    }

    #[test]
    fn depth_is_the_longest_parent_chain() {
        // r0 <- r1 <- r2, and r3 on both r0 and r2 (a diamond).
        let c = cache(&[&[], &["r0"], &["r1"], &["r0", "r2"]]);
        assert_eq!(record_depths(&c), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_parent_cycle_is_cut_without_a_panic() {
        let c = cache(&[&["r1"], &["r0"], &["r1"]]);
        let d = record_depths(&c);
        assert_eq!(d.len(), 3);
        assert!(d[2] > d[1], "the child outside the cycle is deeper: {d:?}");
    }
}
