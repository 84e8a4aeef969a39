//! The ledger: replays removals against a snapshot and says which images the
//! engine will delete, which become dangling, and the bytes that frees.
//!
//! A layer's bytes come back only when the last image using it is deleted
//! and no live build-cache record holds it (`BuildCache::holds`); a record's
//! removal frees its own bytes (`BuildCache::own_bytes`) and every held layer
//! it was the last holder of that no live image uses. This module owns that
//! rule, in both directions, for the planner, `explain` and the tests.
//!
//! A content blob an image holds besides its layers ([`Snapshot::blobs`]:
//! the containerd store's layer blobs, config and manifest; Podman's config
//! and manifest) is freed like a layer no build-cache record holds: when the
//! last live image holding it is deleted. Blobs are counted as image bytes
//! and are no part of any layer chain.
//!
//! Stopped containers are removed first ([`Ledger::remove_container`]): a
//! removal frees the writable layer (`SizeRw`) and takes one user off its
//! image, and an image is in use only while a container of it is left, so
//! the image removals after it see what it unpinned.

use crate::inventory::{dangling, Snapshot};
use crate::model::repository_of;

/// What one removal did, as the ledger predicts it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effect {
    /// Images (snapshot indices) the engine deletes because of this removal.
    pub deleted: Vec<usize>,
    /// Bytes this removal frees: layers whose last user (image or record)
    /// went with it, and a record's own bytes.
    pub freed: u64,
    /// Bytes of layers whose last image user went with this removal but
    /// that a live build-cache record still holds: freed only when the last
    /// of those records goes.
    pub held: u64,
    /// Untagged images that lost their last child and so became dangling:
    /// they are candidates now, though nothing has removed them.
    pub newly_dangling: Vec<usize>,
    /// True when `freed` counts the bytes of an image deleted with it whose
    /// sizes are a best guess (`Image::sizes_exact` false): the figure is an
    /// estimate.
    pub estimated: bool,
}

impl Effect {
    /// Back to no effect, keeping the vectors' room.
    fn clear(&mut self) {
        self.deleted.clear();
        self.freed = 0;
        self.held = 0;
        self.newly_dangling.clear();
        self.estimated = false;
    }
}

/// Replays removals against a snapshot.
///
/// An image is deleted once every reference of it is removed (or, for an
/// untagged image, its removal is asked for), no child image remains and no
/// container uses it. With removals run children before parents this is
/// exactly what the engine does, so the result does not depend on the order
/// removals are fed in; only the split of bytes between removals does. An
/// image whose last container is removed later is deleted then, if every
/// reference of it was removed before.
#[derive(Debug, Clone)]
pub struct Ledger<'a> {
    snapshot: &'a Snapshot,
    /// Live images using each layer.
    layer_users: Vec<u32>,
    /// Live images holding each blob.
    blob_users: Vec<u32>,
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
    /// Live build-cache records holding each layer.
    layer_holders: Vec<u32>,
    /// Per record: removed by the removals so far.
    record_removed: Vec<bool>,
    /// Per record: the distinct, valid layer indices it holds.
    record_holds: Vec<Vec<u32>>,
    /// Per layer: counted as build-cache bytes ([`cache_bytes`]): held by a
    /// record and used by no image.
    cache_only: Vec<bool>,
    /// Containers not yet removed, per image.
    image_users: Vec<u32>,
    /// Per container: removed by the removals so far.
    container_removed: Vec<bool>,
    /// Bytes freed by the removals so far.
    freed: u64,
    /// Of `freed`: bytes of image layers.
    freed_layers: u64,
    /// Of `freed`: build-cache bytes ([`cache_bytes`]).
    freed_cache: u64,
}

/// The distinct layer indices record `r` holds that exist in the snapshot
/// (an index out of range is ignored, never a panic).
fn distinct_holds(snapshot: &Snapshot, r: usize) -> Vec<u32> {
    let mut held: Vec<u32> = snapshot
        .cache
        .holds
        .get(r)
        .map(|h| {
            h.iter()
                .copied()
                .filter(|&l| (l as usize) < snapshot.layers.len())
                .collect()
        })
        .unwrap_or_default();
    held.sort_unstable();
    held.dedup();
    held
}

/// Record `r`'s own bytes (0 when the snapshot gives none).
fn own_bytes(snapshot: &Snapshot, r: usize) -> u64 {
    snapshot.cache.own_bytes.get(r).copied().unwrap_or(0)
}

/// The build cache's bytes, as a `[[build_cache]]` policy's byte watermarks
/// count them: every record's own bytes plus the held layers no image uses
/// (held layers an image uses count as image bytes).
pub fn cache_bytes(snapshot: &Snapshot) -> u64 {
    let mut image_used = vec![false; snapshot.layers.len()];
    for image in &snapshot.images {
        for &l in &image.layers {
            if let Some(u) = image_used.get_mut(l as usize) {
                *u = true;
            }
        }
    }
    let mut counted = vec![false; snapshot.layers.len()];
    let mut total = 0u64;
    for r in 0..snapshot.cache.len() {
        total = total.saturating_add(own_bytes(snapshot, r));
        for l in distinct_holds(snapshot, r) {
            let l = l as usize;
            if !image_used[l] && !counted[l] {
                counted[l] = true;
                total = total.saturating_add(snapshot.layers[l].size);
            }
        }
    }
    total
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
        let mut blob_users = vec![0u32; snapshot.blobs.len()];
        for image in &snapshot.images {
            for &b in &image.blobs {
                if let Some(users) = blob_users.get_mut(b as usize) {
                    *users += 1;
                }
            }
        }
        let n = snapshot.images.len();
        let record_holds: Vec<Vec<u32>> = (0..snapshot.cache.len())
            .map(|r| distinct_holds(snapshot, r))
            .collect();
        let mut layer_holders = vec![0u32; snapshot.layers.len()];
        for held in &record_holds {
            for &l in held {
                layer_holders[l as usize] += 1;
            }
        }
        let cache_only = layer_users
            .iter()
            .zip(&layer_holders)
            .map(|(&users, &holders)| users == 0 && holders > 0)
            .collect();
        Self {
            snapshot,
            layer_users,
            blob_users,
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
            layer_holders,
            record_removed: vec![false; snapshot.cache.len()],
            record_holds,
            cache_only,
            image_users: snapshot
                .users
                .iter()
                .map(|u| u32::try_from(u.len()).unwrap_or(u32::MAX))
                .collect(),
            container_removed: vec![false; snapshot.containers.len()],
            freed: 0,
            freed_layers: 0,
            freed_cache: 0,
        }
    }

    /// Bytes freed by every removal so far, images and records (saturating
    /// at `u64::MAX`).
    pub fn freed(&self) -> u64 {
        self.freed
    }

    /// Of [`Ledger::freed`]: bytes of image layers (what an image policy's
    /// byte watermarks count, against [`Snapshot::image_bytes`]).
    pub fn freed_layer_bytes(&self) -> u64 {
        self.freed_layers
    }

    /// Of [`Ledger::freed`]: build-cache bytes as [`cache_bytes`] counts
    /// them (records' own bytes, held layers no image used).
    pub fn freed_cache_bytes(&self) -> u64 {
        self.freed_cache
    }

    /// True when record `record` was removed by the removals so far.
    pub fn is_record_removed(&self, record: usize) -> bool {
        self.record_removed.get(record).copied().unwrap_or(false)
    }

    /// True when a container not removed so far uses `image` (the
    /// snapshot's `in_use`, less the containers removed). An index out of
    /// range is not in use.
    pub fn in_use(&self, image: usize) -> bool {
        self.image_users.get(image).is_some_and(|&u| u > 0)
    }

    /// True when container `container` was removed by the removals so far.
    pub fn is_container_removed(&self, container: usize) -> bool {
        self.container_removed
            .get(container)
            .copied()
            .unwrap_or(false)
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
        let mut effect = Effect::default();
        self.remove_reference_into(image, &mut effect);
        effect
    }

    /// [`Ledger::remove_reference`], into an [`Effect`] the caller reuses
    /// (cleared first): the planner prices every removal twice, and two
    /// fresh vectors per removal were a large share of a plan's allocations.
    pub fn remove_reference_into(&mut self, image: usize, effect: &mut Effect) {
        effect.clear();
        self.refs_left[image] = self.refs_left[image].saturating_sub(1);
        if self.refs_left[image] > 0 {
            return;
        }
        if self.keeps_digest[image] {
            // Untagged now, but a digest holds it: dangling, not deleted.
            if self.live_children[image] == 0 && !self.in_use(image) {
                effect.newly_dangling.push(image);
            }
            return;
        }
        self.requested[image] = true;
        self.settle_into(image, effect);
    }

    /// Remove an untagged image by ID.
    pub fn remove_untagged(&mut self, image: usize) -> Effect {
        let mut effect = Effect::default();
        self.remove_untagged_into(image, &mut effect);
        effect
    }

    /// [`Ledger::remove_untagged`], into a reused [`Effect`] (cleared first).
    pub fn remove_untagged_into(&mut self, image: usize, effect: &mut Effect) {
        effect.clear();
        self.requested[image] = true;
        self.settle_into(image, effect);
    }

    /// Remove stopped container `container` (index into the snapshot's
    /// `containers`): frees its writable layer (`SizeRw`, 0 when the
    /// snapshot does not know it) and takes one user off its image. When it
    /// was the image's last user ([`Ledger::in_use`] turns false), an image
    /// whose references were all removed already is deleted now, and an
    /// untagged image without children becomes dangling
    /// ([`Effect::newly_dangling`]). Removing it again, or an index out of
    /// range, does nothing.
    pub fn remove_container(&mut self, container: usize) -> Effect {
        let mut effect = Effect::default();
        if self.is_container_removed(container) || container >= self.container_removed.len() {
            return effect;
        }
        self.container_removed[container] = true;
        let c = &self.snapshot.containers[container];
        let rw = c.details.as_ref().and_then(|d| d.size_rw).unwrap_or(0);
        self.add_freed(&mut effect, rw, false, false);
        let Some(image) = c.image.filter(|&i| i < self.image_users.len()) else {
            return effect;
        };
        self.image_users[image] = self.image_users[image].saturating_sub(1);
        if self.image_users[image] > 0 || self.deleted[image] {
            return effect;
        }
        if self.requested[image] {
            let settled = self.settle(image);
            effect.deleted = settled.deleted;
            effect.held = settled.held;
            effect.newly_dangling = settled.newly_dangling;
            effect.estimated = settled.estimated;
            effect.freed = effect.freed.saturating_add(settled.freed);
        } else if self.is_dangling(image) {
            effect.newly_dangling.push(image);
        }
        effect
    }

    /// Remove build-cache record `record` (by index into the snapshot's
    /// `cache.records`): frees its own bytes and every layer it held as the
    /// last live record that no live image uses. Removing it again, or an
    /// index out of range, frees nothing. The ledger does not check for
    /// child records: the planner removes a record only after its children,
    /// as the engine requires.
    pub fn remove_record(&mut self, record: usize) -> Effect {
        let mut effect = Effect::default();
        if record >= self.record_removed.len() || self.record_removed[record] {
            return effect;
        }
        self.record_removed[record] = true;
        let own = own_bytes(self.snapshot, record);
        self.add_freed(&mut effect, own, false, true);
        for k in 0..self.record_holds[record].len() {
            let l = self.record_holds[record][k] as usize;
            self.layer_holders[l] -= 1;
            if self.layer_holders[l] == 0 && self.layer_users[l] == 0 {
                let size = self.snapshot.layers[l].size;
                let cache = self.cache_only[l];
                self.add_freed(&mut effect, size, true, cache);
            }
        }
        effect
    }

    /// Count `bytes` as freed by `effect`, as layer bytes and/or cache bytes.
    fn add_freed(&mut self, effect: &mut Effect, bytes: u64, layer: bool, cache: bool) {
        // Saturating: an engine reporting absurd sizes gets a total of
        // u64::MAX, never a wrapped small figure.
        effect.freed = effect.freed.saturating_add(bytes);
        self.freed = self.freed.saturating_add(bytes);
        if layer {
            self.freed_layers = self.freed_layers.saturating_add(bytes);
        }
        if cache {
            self.freed_cache = self.freed_cache.saturating_add(bytes);
        }
    }

    fn settle(&mut self, start: usize) -> Effect {
        let mut effect = Effect::default();
        self.settle_into(start, &mut effect);
        effect
    }

    /// Delete what `start`'s removal lets the engine delete, adding to
    /// `effect`.
    fn settle_into(&mut self, start: usize, effect: &mut Effect) {
        let mut current = Some(start);
        while let Some(i) = current.take() {
            if self.deleted[i] || !self.requested[i] || self.live_children[i] > 0 {
                break;
            }
            if self.in_use(i) {
                break;
            }
            self.deleted[i] = true;
            effect.deleted.push(i);
            let snap = self.snapshot;
            effect.estimated |= !snap.images[i].sizes_exact;
            for &b in &snap.images[i].blobs {
                let Some(users) = self.blob_users.get_mut(b as usize) else {
                    continue;
                };
                *users -= 1;
                if *users == 0 {
                    let size = snap.blobs[b as usize].size;
                    self.add_freed(effect, size, true, false);
                }
            }
            for &l in &snap.images[i].layers {
                let users = &mut self.layer_users[l as usize];
                *users -= 1;
                if *users == 0 {
                    let size = snap.layers[l as usize].size;
                    if self.layer_holders[l as usize] == 0 {
                        self.add_freed(effect, size, true, false);
                    } else {
                        effect.held = effect.held.saturating_add(size);
                    }
                }
            }
            if let Some(p) = self.snapshot.parent[i] {
                self.live_children[p] -= 1;
                if self.live_children[p] == 0 {
                    if self.requested[p] {
                        current = Some(p);
                    } else if self.refs_left[p] == 0 && !self.in_use(p) {
                        effect.newly_dangling.push(p);
                    }
                }
            }
        }
    }
}
