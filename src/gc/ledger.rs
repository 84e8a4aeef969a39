//! The ledger: replays removals against a snapshot and says which images the
//! engine will delete, which become dangling, and the bytes that frees.
//!
//! A layer's bytes come back only when the last image using it is deleted;
//! this module owns that rule for the planner, `explain` and the tests.

use crate::inventory::{dangling, Snapshot};
use crate::model::repository_of;

/// What one removal did, as the ledger predicts it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effect {
    /// Images (snapshot indices) the engine deletes because of this removal.
    pub deleted: Vec<usize>,
    /// Bytes this removal frees: layers whose last user went with it.
    pub freed: u64,
    /// Untagged images that lost their last child and so became dangling:
    /// they are candidates now, though nothing has removed them.
    pub newly_dangling: Vec<usize>,
}

/// Replays removals against a snapshot.
///
/// An image is deleted once every reference of it is removed (or, for an
/// untagged image, its removal is asked for), no child image remains and no
/// container uses it. With removals run children before parents this is
/// exactly what the engine does, so the result does not depend on the order
/// removals are fed in; only the split of bytes between removals does.
#[derive(Debug, Clone)]
pub struct Ledger<'a> {
    snapshot: &'a Snapshot,
    /// Live images using each layer.
    layer_users: Vec<u32>,
    /// Tags not yet removed, per image.
    refs_left: Vec<u32>,
    /// Per image: does a digest reference outlive its last tag? The engine
    /// drops `repo@digest` with the last `repo:tag` of the same repository,
    /// but a digest of a repository the image has no tag in keeps the image
    /// (untagged, so dangling) until it is removed by ID.
    keeps_digest: Vec<bool>,
    /// Child images not yet deleted, per image.
    live_children: Vec<u32>,
    /// Every reference removed, or removal by ID asked for.
    requested: Vec<bool>,
    /// Deleted by the removals so far.
    deleted: Vec<bool>,
    /// Bytes freed by the removals so far.
    freed: u64,
}

impl<'a> Ledger<'a> {
    /// A ledger with nothing removed yet.
    pub fn new(snapshot: &'a Snapshot) -> Self {
        let mut layer_users = vec![0u32; snapshot.layers.len()];
        for image in &snapshot.images {
            for &l in &image.layers {
                layer_users[l as usize] += 1;
            }
        }
        let n = snapshot.images.len();
        Self {
            snapshot,
            layer_users,
            refs_left: snapshot
                .images
                .iter()
                .map(|i| i.tags.len() as u32)
                .collect(),
            keeps_digest: snapshot
                .images
                .iter()
                .map(|i| {
                    !i.tags.is_empty()
                        && i.digests.iter().any(|d| {
                            let repo = repository_of(d);
                            !i.tags.iter().any(|t| repository_of(t) == repo)
                        })
                })
                .collect(),
            live_children: snapshot.children.iter().map(|c| c.len() as u32).collect(),
            requested: vec![false; n],
            deleted: vec![false; n],
            freed: 0,
        }
    }

    /// Bytes freed by every removal so far (saturating at `u64::MAX`).
    pub fn freed(&self) -> u64 {
        self.freed
    }

    /// [`Snapshot::is_dangling`] after the removals so far: no tag left, no
    /// child left, and not deleted.
    pub fn is_dangling(&self, image: usize) -> bool {
        !self.deleted[image]
            && dangling(
                self.refs_left[image] as usize,
                self.live_children[image] as usize,
            )
    }

    /// Remove one tag reference of `image`.
    pub fn remove_reference(&mut self, image: usize) -> Effect {
        self.refs_left[image] = self.refs_left[image].saturating_sub(1);
        if self.refs_left[image] > 0 {
            return Effect::default();
        }
        if self.keeps_digest[image] {
            // Untagged now, but a digest holds it: dangling, not deleted.
            let mut effect = Effect::default();
            if self.live_children[image] == 0 && !self.snapshot.in_use[image] {
                effect.newly_dangling.push(image);
            }
            return effect;
        }
        self.requested[image] = true;
        self.settle(image)
    }

    /// Remove an untagged image by ID.
    pub fn remove_untagged(&mut self, image: usize) -> Effect {
        self.requested[image] = true;
        self.settle(image)
    }

    /// Remove build-cache record `record` (by index into the snapshot's
    /// `cache.records`). Skeleton: the two-way sharing comes with the
    /// planner part of issue 8.
    pub fn remove_record(&mut self, record: usize) -> Effect {
        let _ = (self.snapshot.cache.len(), record);
        Effect::default()
    }

    fn settle(&mut self, start: usize) -> Effect {
        let mut effect = Effect::default();
        let mut current = Some(start);
        while let Some(i) = current.take() {
            if self.deleted[i] || !self.requested[i] || self.live_children[i] > 0 {
                break;
            }
            if self.snapshot.in_use[i] {
                break;
            }
            self.deleted[i] = true;
            effect.deleted.push(i);
            for &l in &self.snapshot.images[i].layers {
                let users = &mut self.layer_users[l as usize];
                *users -= 1;
                if *users == 0 {
                    // Saturating: an engine reporting absurd sizes gets
                    // a total of u64::MAX, never a wrapped small figure.
                    let size = self.snapshot.layers[l as usize].size;
                    effect.freed = effect.freed.saturating_add(size);
                    self.freed = self.freed.saturating_add(size);
                }
            }
            if let Some(p) = self.snapshot.parent[i] {
                self.live_children[p] -= 1;
                if self.live_children[p] == 0 {
                    if self.requested[p] {
                        current = Some(p);
                    } else if self.refs_left[p] == 0 && !self.snapshot.in_use[p] {
                        effect.newly_dangling.push(p);
                    }
                }
            }
        }
        effect
    }
}
