//! Removal candidates and sets of them, one bit per candidate.
//!
//! The planner asks "planned yet?", "kept already?" and "among the newest?"
//! of every candidate, several times per rule; at 100,000 images hashed
//! sets of targets were a tenth of a plan (BENCHMARKS.md). A snapshot's
//! candidates are a dense range instead: each image has one slot for
//! itself untagged and one per tag, so a set is a bit vector.

use std::collections::HashMap;

use crate::inventory::Snapshot;
use crate::model::{as_written, repository_of};

/// A removal candidate: one tag of an image, or an untagged image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Target {
    Tag(usize, usize),
    Untagged(usize),
}

impl Target {
    pub(super) fn image(self) -> usize {
        match self {
            Self::Tag(i, _) | Self::Untagged(i) => i,
        }
    }
}

/// Where each image's slots start: image `i` has slot `start[i]` for itself
/// untagged and `start[i] + 1 + t` for its tag `t`.
#[derive(Debug, Clone)]
pub(super) struct Slots {
    start: Vec<usize>,
    len: usize,
}

impl Slots {
    pub(super) fn new(snap: &Snapshot) -> Self {
        Self::of_tag_counts(snap.images.iter().map(|img| img.tags.len()))
    }

    /// Slots for images with these numbers of tags.
    fn of_tag_counts(tags: impl ExactSizeIterator<Item = usize>) -> Self {
        let mut start = Vec::with_capacity(tags.len());
        let mut len = 0;
        for n in tags {
            start.push(len);
            len += 1 + n;
        }
        Slots { start, len }
    }

    fn slot(&self, target: Target) -> usize {
        match target {
            Target::Untagged(i) => self.start[i],
            Target::Tag(i, t) => self.start[i] + 1 + t,
        }
    }

    /// An empty set of this snapshot's targets.
    pub(super) fn set(&self) -> TargetSet {
        TargetSet {
            bits: vec![0; self.len.div_ceil(64)],
        }
    }
}

/// The repository of every tag, as an index into the snapshot's distinct
/// repositories: a `repositories` glob is matched once per repository, not
/// once per tag and rule (globs were the largest part of a plan at 100,000
/// images).
#[derive(Debug, Clone)]
pub(super) struct Repos<'s> {
    /// Per slot: its tag's repository (0, unused, for untagged slots).
    of_slot: Vec<usize>,
    /// Each distinct repository, with the spelling the user wrote where the
    /// engine qualifies local names (`localhost/ci/app` is `ci/app`).
    pub(super) distinct: Vec<(&'s str, Option<&'s str>)>,
}

impl<'s> Repos<'s> {
    pub(super) fn new(snap: &'s Snapshot, slots: &Slots) -> Self {
        let qualifies = snap.capabilities.qualifies_local_names;
        let mut of_slot = vec![0; slots.len];
        let mut index: HashMap<(&str, Option<&str>), usize> = HashMap::new();
        let mut distinct = Vec::new();
        for (i, img) in snap.images.iter().enumerate() {
            for (t, tag) in img.tags.iter().enumerate() {
                let written = qualifies
                    .then(|| as_written(tag).map(repository_of))
                    .flatten();
                let key = (repository_of(tag), written);
                let id = *index.entry(key).or_insert_with(|| {
                    distinct.push(key);
                    distinct.len() - 1
                });
                of_slot[slots.slot(Target::Tag(i, t))] = id;
            }
        }
        Repos { of_slot, distinct }
    }

    /// The repository of a tag (index into `distinct`); `None` for an
    /// untagged image.
    pub(super) fn of(&self, slots: &Slots, target: Target) -> Option<usize> {
        match target {
            Target::Tag(..) => Some(self.of_slot[slots.slot(target)]),
            Target::Untagged(_) => None,
        }
    }
}

/// A set of one snapshot's targets (made by [`Slots::set`], used with the
/// same [`Slots`]).
#[derive(Debug, Clone, Default)]
pub(super) struct TargetSet {
    bits: Vec<u64>,
}

impl TargetSet {
    /// Adds the target; true when it was not in the set.
    pub(super) fn insert(&mut self, slots: &Slots, target: Target) -> bool {
        let s = slots.slot(target);
        let (word, bit) = (s / 64, 1u64 << (s % 64));
        let new = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        new
    }

    /// True when the target is in the set (an empty default set holds none).
    pub(super) fn contains(&self, slots: &Slots, target: Target) -> bool {
        let s = slots.slot(target);
        self.bits
            .get(s / 64)
            .is_some_and(|w| w & (1 << (s % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_slot_of_its_own() {
        // Images with 0, 3, 70 and 1 tags: slots cross word boundaries.
        let tags = [0, 3, 70, 1];
        let slots = Slots::of_tag_counts(tags.iter().copied());
        let mut all = Vec::new();
        for (i, &n) in tags.iter().enumerate() {
            all.push(Target::Untagged(i));
            all.extend((0..n).map(|t| Target::Tag(i, t)));
        }
        let mut seen: Vec<usize> = all.iter().map(|&t| slots.slot(t)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), all.len(), "two targets share a slot");

        let mut set = slots.set();
        for (n, &t) in all.iter().enumerate() {
            assert!(!set.contains(&slots, t));
            assert!(set.insert(&slots, t), "{t:?} was new");
            assert!(!set.insert(&slots, t), "{t:?} is in the set now");
            // Only the targets inserted so far are in it.
            for (m, &u) in all.iter().enumerate() {
                assert_eq!(set.contains(&slots, u), m <= n, "{u:?} after {t:?}");
            }
        }
        assert!(!TargetSet::default().contains(&slots, Target::Tag(2, 69)));
    }
}
