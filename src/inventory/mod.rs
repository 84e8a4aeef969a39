//! One consistent view of the engine for one pass, and the inspect cache.
//!
//! A [`Snapshot`] holds the images, their sized layers (interned, so shared
//! layers are one entry), the containers, and the disk; it also carries the
//! indices the planner and the ledger need (parent, children, in use). It is
//! plain data: the planner reads it without I/O, and tests and benchmarks
//! build it directly with [`Snapshot::build`].
//!
//! [`DetailsCache`] keeps inspect and history results by image ID. Image IDs
//! are content hashes, so the layers never go stale; only the last tag time
//! does, and an entry is read again when the image's references changed
//! ([`RefsPrint`]) or a tag event named it. A steady-state pass makes
//! inspect calls only for images it has not seen before, up to
//! [`INSPECT_CONCURRENCY`] at a time, and the state file keeps the entries
//! for the next process.

pub mod build_cache;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tracing::warn;

use crate::engine::{
    Blob, Capabilities, Container, ContainerDetails, DiskUsage, Engine, EngineError, ImageSummary,
    Layer,
};
use crate::host::disk::{self, DiskProbe};
use crate::model::short_id;
use crate::policy::{ContainerRule, Policy, StoppedState};
pub use build_cache::{BuildCache, CacheAvailability, CacheRecord, CacheRecordKind};

/// What is known about an image beyond the image list (computed by the
/// engine adapter; defined in [`crate::engine`]).
pub use crate::engine::ImageFacts;

/// Per-image times kept by imagegc itself (the state file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tracked {
    /// When imagegc first saw the image ID; `None` for images that were there
    /// before tracking began.
    pub first_seen: Option<DateTime<Utc>>,
    /// Newest event seen for the image (container start, tag, …).
    pub last_event: Option<DateTime<Utc>>,
    /// `Some` when that newest use was a build (the state's `last_used_by`
    /// says `build of …`): an image built on this one appeared, or a
    /// build-cache record made from it was used. `None`: an engine event.
    pub last_event_build: Option<BuildUser>,
    /// What `first_seen` stands for, so `explain` can say it.
    pub basis: FirstSeenBasis,
    /// When tracking last restarted (the state file was lost or cannot be
    /// written): uses before then are unknown, so the image counts as used
    /// then at the earliest ([`Snapshot::last_used`]).
    pub restarted: Option<DateTime<Utc>>,
}

/// Where an image's first-seen time comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FirstSeenBasis {
    /// imagegc saw the image appear at `first_seen` (for an image no pass
    /// has recorded yet: now, as the next pass will record).
    #[default]
    Seen,
    /// The image was there when tracking began on a first install: no
    /// first-seen time; the grace period counts from created or last tagged.
    Baseline,
    /// There is no state file yet: the first pass will take the image into
    /// its baseline (as [`FirstSeenBasis::Baseline`]).
    NoStateYet,
    /// Tracking restarted at `first_seen` because the state file was lost
    /// or cannot be written; the grace period counts from then.
    Restarted,
}

impl FirstSeenBasis {
    /// Short name for JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seen => "seen",
            Self::Baseline => "baseline",
            Self::NoStateYet => "no_state_yet",
            Self::Restarted => "tracking_restarted",
        }
    }
}

/// One image in a snapshot.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:<hex>`.
    pub id: String,
    /// Tag references (`repo:tag`).
    pub tags: Vec<String>,
    /// Digest references (`repo@sha256:…`).
    pub digests: Vec<String>,
    /// Created time from the image config.
    pub created: DateTime<Utc>,
    /// Image labels.
    pub labels: BTreeMap<String, String>,
    /// Layer indices into [`Snapshot::layers`], bottom first.
    pub layers: Vec<u32>,
    /// Indices into [`Snapshot::blobs`]: the content the image holds
    /// besides its layers (`ImageFacts::blobs`), each once.
    pub blobs: Vec<u32>,
    /// False when the bytes its removal frees are a best guess: layer
    /// sizes the adapter guessed, or a blob whose size is an estimated
    /// share ([`crate::engine::Blob::exact`]) that another image holds too
    /// (alone, the image frees all its shares together: their exact sum).
    pub sizes_exact: bool,
    /// When a reference was last put on the image (`docker tag`, `build -t`;
    /// Docker 20.10 does not set it on pull or load).
    pub last_tag_time: Option<DateTime<Utc>>,
    /// Times from the state file.
    pub tracked: Tracked,
}

/// A container in a snapshot, with its image resolved.
#[derive(Debug, Clone)]
pub struct SnapContainer {
    /// The engine's view.
    pub container: Container,
    /// Index of its image, when the image is in the snapshot.
    pub image: Option<usize>,
    /// Inspect facts (finish time, restart policy, volumes-from, network
    /// container, writable-layer size): read for every container when a
    /// `[[containers]]` policy exists (the size only for the stopped ones a
    /// policy selects); `None` otherwise.
    pub details: Option<ContainerDetails>,
    /// Its image reference as the user wrote it, on an engine that
    /// qualifies names without a registry with `localhost/` (Podman lists
    /// `localhost/ci/app:1` for `ci/app:1`): what `[[containers]] images`
    /// globs match besides the engine's spelling. Set by
    /// [`Snapshot::with_capabilities`]; `None` elsewhere.
    pub image_as_written: Option<String>,
}

/// Everything one pass looks at.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Images in the order the engine listed them.
    pub images: Vec<Image>,
    /// Interned layers; shared layers appear once.
    pub layers: Vec<Layer>,
    /// Interned content blobs besides the layers (the containerd store's,
    /// Podman's config and manifest); shared ones appear once, with an
    /// exact size if an image gives one, else the smallest estimate (the
    /// same whatever order the engine lists images in). Empty on a graph
    /// driver.
    pub blobs: Vec<Blob>,
    /// Parent index per image (only parents present in the snapshot).
    pub parent: Vec<Option<usize>>,
    /// Child indices per image.
    pub children: Vec<Vec<usize>>,
    /// Per image, the present image whose layer chain is the longest strict
    /// prefix of its own ([`built_on`]): its parent for the order of
    /// removals only. `BuildKit` images and every image on the containerd
    /// store or from a load without a `Parent` have no `ParentId`, yet
    /// removing the base first would be removing a parent before its child.
    /// Not a parent for "dangling" (the engine does not hold it for them).
    pub chain_parent: Vec<Option<usize>>,
    /// Per image, the longest path of `parent` and `chain_parent` links
    /// above it ([`Snapshot::depth`]).
    depths: Vec<usize>,
    /// Containers using each image (indices into `containers`).
    pub users: Vec<Vec<usize>>,
    /// True when any container, in any state, uses the image.
    pub in_use: Vec<bool>,
    /// Every container.
    pub containers: Vec<SnapContainer>,
    /// Filesystem holding the engine's root dir, when known.
    pub disk: Option<DiskUsage>,
    /// Image ID → index.
    pub by_id: HashMap<String, usize>,
    /// What the engine the snapshot was taken from can do; Docker 20.10's
    /// unless [`Snapshot::with_capabilities`] says otherwise.
    pub capabilities: Capabilities,
    /// The engine's build cache; empty ([`CacheAvailability::NotRead`])
    /// unless [`Snapshot::with_build_cache`] gave it.
    pub cache: BuildCache,
    /// [`Snapshot::build_use`] of every image, worked out on first use (the
    /// snapshot is not changed after that: reset by `with_build_cache`).
    build_uses: OnceLock<Vec<Option<BuildUse>>>,
}

/// Who made a build use of an image: short enough to copy, so [`Tracked`]
/// stays `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildUser {
    /// An image built on top of it appeared (its short ID).
    Image(ShortRef),
    /// A build-cache record made from it was used (the record's ID).
    Record(ShortRef),
    /// A build the state recorded without naming it.
    Unnamed,
}

impl BuildUser {
    /// What the state file keeps as `last_used_by` for this use.
    pub fn state_text(&self) -> String {
        match self {
            Self::Image(id) => format!("build of {id}"),
            Self::Record(id) => format!("build cache record {id}"),
            Self::Unnamed => "build".to_owned(),
        }
    }

    /// The build a state's `last_used_by` names; `None` when it names no
    /// build (`container start`, `tag`, …).
    pub fn from_state_text(text: &str) -> Option<Self> {
        if let Some(id) = text.strip_prefix("build of ") {
            Some(Self::Image(ShortRef::new(id)))
        } else if let Some(id) = text.strip_prefix("build cache record ") {
            Some(Self::Record(ShortRef::new(id)))
        } else if text == "build" {
            Some(Self::Unnamed)
        } else {
            None
        }
    }
}

/// A short identifier (an image's short ID, a record's ID) kept inline:
/// at most [`ShortRef::MAX`] ASCII characters, anything past them (or past
/// the first character that is not printable ASCII) left out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortRef {
    len: u8,
    bytes: [u8; ShortRef::MAX],
}

impl ShortRef {
    /// The most characters kept (`BuildKit` record IDs have 25).
    pub const MAX: usize = 32;

    /// The leading printable ASCII of `text`, at most [`ShortRef::MAX`] bytes.
    pub fn new(text: &str) -> Self {
        let mut bytes = [0u8; Self::MAX];
        let mut len = 0;
        for b in text.bytes().take(Self::MAX) {
            if !b.is_ascii_graphic() {
                break;
            }
            bytes[len] = b;
            len += 1;
        }
        Self {
            len: len as u8,
            bytes,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Debug for ShortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl std::fmt::Display for ShortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A use of an image by a build, as the snapshot shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildUse {
    /// When: the appearance of the image built on it, or the record's
    /// `LastUsedAt`.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: BuildUser,
    /// The image built on it (index), when `by` is one in this snapshot.
    pub image: Option<usize>,
    /// The record (index into `cache.records`), when `by` is a record.
    pub record: Option<usize>,
}

/// An image's last use and where it came from ([`Snapshot::last_use`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastUse {
    /// When.
    pub at: DateTime<Utc>,
    /// Where the time came from.
    pub source: LastUsedSource,
    /// The build, when `source` is [`LastUsedSource::Build`].
    pub build: Option<BuildUser>,
}

/// True when the layer chain `base` is a proper prefix of `new`'s: `base`
/// has k ≥ 1 layers, `new` more, and both have the same k-th chain ID (chain
/// IDs are cumulative, so that one names the whole prefix). This is how a
/// `FROM base` shows in the image a build made.
pub fn built_on(new: &[Layer], base: &[Layer]) -> bool {
    let k = base.len();
    k >= 1 && new.len() > k && new[k - 1].chain_id == base[k - 1].chain_id
}

/// Per image, the image whose chain is the longest strict prefix of its own,
/// if one is present (the first listed, when several have that chain).
/// Chain IDs are cumulative, so an image whose top layer is layer *j* of
/// another's chain has exactly that prefix.
fn chain_parents(images: &[Image]) -> Vec<Option<usize>> {
    let mut by_top: HashMap<u32, usize> = HashMap::new();
    for (i, img) in images.iter().enumerate() {
        if let Some(&top) = img.layers.last() {
            by_top.entry(top).or_insert(i);
        }
    }
    images
        .iter()
        .map(|img| {
            let n = img.layers.len();
            img.layers[..n.saturating_sub(1)]
                .iter()
                .rev()
                .find_map(|layer| by_top.get(layer).copied())
        })
        .collect()
}

/// The containers with their images resolved (by ID, among `images`
/// images), and each image's users (indices into the containers).
fn resolve_containers(
    containers: Vec<Container>,
    by_id: &HashMap<String, usize>,
    images: usize,
) -> (Vec<SnapContainer>, Vec<Vec<usize>>) {
    let mut users = vec![Vec::new(); images];
    let containers = containers
        .into_iter()
        .enumerate()
        .map(|(ci, container)| {
            let image = by_id.get(&container.image_id).copied();
            if let Some(i) = image {
                users[i].push(ci);
            }
            SnapContainer {
                container,
                image,
                details: None,
                image_as_written: None,
            }
        })
        .collect();
    (containers, users)
}

/// The longest path of `parent` and `chain_parent` links above each image,
/// each worked out once. A cycle (impossible on a real engine: chain
/// parents are strictly shorter, and `ParentId`s form a tree) is cut where
/// it closes.
fn ordering_depths(parent: &[Option<usize>], chain_parent: &[Option<usize>]) -> Vec<usize> {
    const UNSEEN: usize = usize::MAX;
    const ON_PATH: usize = usize::MAX - 1;
    let n = parent.len();
    let mut depth = vec![UNSEEN; n];
    let ups = |i: usize| [parent[i], chain_parent[i]].into_iter().flatten();
    for start in 0..n {
        if depth[start] != UNSEEN {
            continue;
        }
        let mut stack = vec![start];
        while let Some(&node) = stack.last() {
            if depth[node] == UNSEEN {
                depth[node] = ON_PATH;
                stack.extend(ups(node).filter(|&p| depth[p] == UNSEEN));
            } else {
                stack.pop();
                if depth[node] == ON_PATH {
                    depth[node] = ups(node)
                        .filter(|&p| depth[p] < ON_PATH)
                        .map(|p| depth[p] + 1)
                        .max()
                        .unwrap_or(0);
                }
            }
        }
    }
    depth
}

/// Input for one image when building a snapshot.
#[derive(Debug, Clone)]
pub struct ImageInput {
    /// From the image list.
    pub summary: ImageSummary,
    /// From inspect and history.
    pub facts: Arc<ImageFacts>,
    /// From the state file.
    pub tracked: Tracked,
}

/// Clears `sizes_exact` of every image holding an estimated blob another
/// image holds too: its removal frees some of its shares, not their sum.
fn shared_estimates_are_inexact(images: &mut [Image], blobs: &[Blob]) {
    let mut holders = vec![0u32; blobs.len()];
    for image in images.iter() {
        for &b in &image.blobs {
            holders[b as usize] += 1;
        }
    }
    for image in images.iter_mut() {
        if image
            .blobs
            .iter()
            .any(|&b| holders[b as usize] > 1 && !blobs[b as usize].exact)
        {
            image.sizes_exact = false;
        }
    }
}

/// The one definition of "dangling": no tag reference left and no child
/// image left. [`Snapshot::is_dangling`] applies it to a snapshot, and the
/// ledger to a snapshot with some removals replayed.
pub fn dangling(tags_left: usize, children_left: usize) -> bool {
    tags_left == 0 && children_left == 0
}

impl Snapshot {
    /// Index images, layers and containers.
    pub fn build(
        images: Vec<ImageInput>,
        containers: Vec<Container>,
        disk: Option<DiskUsage>,
    ) -> Self {
        let mut layer_index: HashMap<String, u32> = HashMap::new();
        let mut layers: Vec<Layer> = Vec::new();
        let mut blob_index: HashMap<String, u32> = HashMap::new();
        let mut blobs: Vec<Blob> = Vec::new();
        let mut out_images = Vec::with_capacity(images.len());
        let mut parent_ids = Vec::with_capacity(images.len());
        for input in images {
            let mut held: Vec<u32> = Vec::with_capacity(input.facts.blobs.len());
            for blob in &input.facts.blobs {
                let next = blobs.len() as u32;
                let i = *blob_index.entry(blob.key.clone()).or_insert_with(|| {
                    blobs.push(blob.clone());
                    next
                });
                // Images may estimate one shared blob differently: keep an exact size if
                // any image gives one, else the smallest estimate, so the figure does not
                // depend on the order the engine lists images in.
                let have = &mut blobs[i as usize];
                if (blob.exact && !have.exact)
                    || (blob.exact == have.exact && blob.size < have.size)
                {
                    *have = blob.clone();
                }
                if !held.contains(&i) {
                    held.push(i);
                }
            }
            let mut idx = Vec::with_capacity(input.facts.layers.len());
            for layer in &input.facts.layers {
                let next = layers.len() as u32;
                let i = *layer_index
                    .entry(layer.chain_id.clone())
                    .or_insert_with(|| {
                        layers.push(layer.clone());
                        next
                    });
                idx.push(i);
            }
            parent_ids.push(input.summary.parent_id);
            out_images.push(Image {
                id: input.summary.id,
                tags: input.summary.tags,
                digests: input.summary.digests,
                created: input.summary.created,
                labels: input.summary.labels,
                layers: idx,
                blobs: held,
                sizes_exact: input.facts.sizes_exact,
                last_tag_time: input.facts.last_tag_time,
                tracked: input.tracked,
            });
        }
        let by_id: HashMap<String, usize> = out_images
            .iter()
            .enumerate()
            .map(|(i, img)| (img.id.clone(), i))
            .collect();
        let parent: Vec<Option<usize>> = parent_ids
            .iter()
            .map(|p| p.as_ref().and_then(|p| by_id.get(p).copied()))
            .collect();
        let mut children = vec![Vec::new(); out_images.len()];
        for (child, p) in parent.iter().enumerate() {
            if let Some(p) = p {
                children[*p].push(child);
            }
        }
        let chain_parent = chain_parents(&out_images);
        let depths = ordering_depths(&parent, &chain_parent);
        let (containers, users) = resolve_containers(containers, &by_id, out_images.len());
        let in_use = users.iter().map(|u| !u.is_empty()).collect();
        shared_estimates_are_inexact(&mut out_images, &blobs);
        Self {
            images: out_images,
            layers,
            blobs,
            parent,
            children,
            chain_parent,
            depths,
            users,
            in_use,
            containers,
            disk,
            by_id,
            capabilities: Capabilities::DOCKER_20_10,
            cache: BuildCache::default(),
            build_uses: OnceLock::new(),
        }
    }

    /// The same snapshot with the engine's build-cache records, indexed, and
    /// the image layers each shared record holds mapped
    /// ([`build_cache::map_records`]).
    #[must_use]
    pub fn with_build_cache(mut self, records: Vec<CacheRecord>) -> Self {
        let by_id: HashMap<String, usize> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        let parents: Vec<Vec<usize>> = records
            .iter()
            .map(|r| {
                r.parents
                    .iter()
                    .filter_map(|p| by_id.get(p).copied())
                    .collect()
            })
            .collect();
        let mut children = vec![Vec::new(); records.len()];
        for (child, ps) in parents.iter().enumerate() {
            for &p in ps {
                children[p].push(child);
            }
        }
        let images: Vec<Vec<u32>> = self.images.iter().map(|i| i.layers.clone()).collect();
        let sizes: Vec<u64> = self.layers.iter().map(|l| l.size).collect();
        let (holds, own_bytes) = build_cache::map_records(&records, &children, &images, &sizes);
        self.cache = BuildCache {
            availability: CacheAvailability::Listed,
            records,
            by_id,
            parents,
            children,
            holds,
            own_bytes,
        };
        self.build_uses = OnceLock::new();
        self
    }

    /// The same snapshot, taken from an engine with these capabilities.
    #[must_use]
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        for c in &mut self.containers {
            c.image_as_written = capabilities
                .qualifies_local_names
                .then(|| crate::model::as_written(&c.container.image_ref).map(str::to_owned))
                .flatten();
        }
        self
    }

    /// Unique layer and blob bytes of every image on the engine (saturating
    /// at `u64::MAX`: absurd sizes from the engine must not wrap).
    pub fn image_bytes(&self) -> u64 {
        let layers = self
            .layers
            .iter()
            .fold(0u64, |total, l| total.saturating_add(l.size));
        self.blobs
            .iter()
            .fold(layers, |total, b| total.saturating_add(b.size))
    }

    /// True when image `image` is dangling ([`dangling`]): untagged, with no
    /// child image. Whether a container uses it is a separate fact
    /// ([`Snapshot::in_use`]).
    pub fn is_dangling(&self, image: usize) -> bool {
        dangling(
            self.images[image].tags.len(),
            self.children.get(image).map_or(0, Vec::len),
        )
    }

    /// How many images present are above this one, along the longest path
    /// of parent links (`ParentId`) and layer-chain prefixes
    /// ([`Snapshot::chain_parent`]); removals go deepest first, so a child
    /// always goes before its parent whether or not the engine records
    /// parents (capability `has_parents`).
    pub fn depth(&self, image: usize) -> usize {
        self.depths.get(image).copied().unwrap_or(0)
    }

    /// True when `ancestor` is above `image` along parent or layer-chain
    /// links.
    pub fn is_ancestor(&self, ancestor: usize, image: usize) -> bool {
        let mut stack = vec![image];
        let mut seen = vec![false; self.images.len()];
        while let Some(i) = stack.pop() {
            for p in [self.parent[i], self.chain_parent[i]].into_iter().flatten() {
                if p == ancestor {
                    return true;
                }
                if !std::mem::replace(&mut seen[p], true) {
                    stack.push(p);
                }
            }
        }
        false
    }

    /// When the grace period (`min_age`) starts for an image: the latest of
    /// its created time, its last tag time and when imagegc first saw it.
    pub fn grace_start(&self, image: usize) -> (DateTime<Utc>, &'static str) {
        let img = &self.images[image];
        let mut best = (img.created, "created");
        if let Some(t) = img.last_tag_time.filter(|t| *t > best.0) {
            best = (t, "last tagged");
        }
        if let Some(t) = img.tracked.first_seen.filter(|t| *t > best.0) {
            best = (t, "first seen");
        }
        best
    }

    /// When image `image` appeared, as a build use of the images under it
    /// counts it: its first-seen time when imagegc saw it appear, else the
    /// newest of its created and last tagged times (an image there before
    /// tracking began, or first seen only at a restart of tracking).
    pub fn appeared(&self, image: usize) -> DateTime<Utc> {
        let img = &self.images[image];
        match img.tracked.first_seen {
            Some(t) if img.tracked.basis == FirstSeenBasis::Seen => t,
            _ => img
                .last_tag_time
                .filter(|t| *t > img.created)
                .unwrap_or(img.created),
        }
    }

    /// The newest use of image `image` by a build that this snapshot shows:
    /// - an image present whose layer chain has this image's as a proper
    ///   prefix ([`built_on`]; a `FROM`), at its appearance
    ///   ([`Snapshot::appeared`]); the newest such image wins;
    /// - a build-cache record holding this image's top layer
    ///   (`cache.holds`), at the record's `LastUsedAt` when that is a use
    ///   ([`BuildCache::last_used`]).
    ///
    /// Worked out for every image at the first call, in time linear in the
    /// layers and held layers of the snapshot.
    pub fn build_use(&self, image: usize) -> Option<BuildUse> {
        self.build_uses
            .get_or_init(|| self.compute_build_uses())
            .get(image)
            .copied()
            .flatten()
    }

    fn compute_build_uses(&self) -> Vec<Option<BuildUse>> {
        fn newer(slot: &mut Option<BuildUse>, candidate: BuildUse) {
            if slot.is_none_or(|u| candidate.at > u.at) {
                *slot = Some(candidate);
            }
        }
        // (position, layer) of a prefix → the newest image with more layers
        // than that prefix: (appeared, image).
        let mut on_top: HashMap<(usize, u32), (DateTime<Utc>, usize)> = HashMap::new();
        for (n, img) in self.images.iter().enumerate() {
            let at = self.appeared(n);
            let m = img.layers.len();
            for (pos, &layer) in img.layers.iter().enumerate().take(m.saturating_sub(1)) {
                on_top
                    .entry((pos, layer))
                    .and_modify(|e| {
                        if at > e.0 {
                            *e = (at, n);
                        }
                    })
                    .or_insert((at, n));
            }
        }
        let mut uses: Vec<Option<BuildUse>> = self
            .images
            .iter()
            .map(|img| {
                let k = img.layers.len();
                let top = *img.layers.last()?;
                let &(at, n) = on_top.get(&(k - 1, top))?;
                Some(BuildUse {
                    at,
                    by: BuildUser::Image(ShortRef::new(short_id(&self.images[n].id))),
                    image: Some(n),
                    record: None,
                })
            })
            .collect();
        if self.cache.records.is_empty() {
            return uses;
        }
        let mut by_top: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, img) in self.images.iter().enumerate() {
            if let Some(&top) = img.layers.last() {
                by_top.entry(top).or_default().push(i);
            }
        }
        for (r, held) in self.cache.holds.iter().enumerate() {
            if r >= self.cache.records.len() {
                break;
            }
            let (at, is_use) = self.cache.last_used(r);
            if !is_use {
                continue;
            }
            let by = BuildUser::Record(ShortRef::new(&self.cache.records[r].id));
            for layer in held {
                for &i in by_top.get(layer).into_iter().flatten() {
                    newer(
                        &mut uses[i],
                        BuildUse {
                            at,
                            by,
                            image: None,
                            record: Some(r),
                        },
                    );
                }
            }
        }
        uses
    }

    /// Last used: the newest of created, last tag time, the creation of any
    /// container using it, a build ([`Snapshot::build_use`]), the newest
    /// tracked use (an event, or a build the state recorded), and the
    /// restart of tracking after a state loss (uses before it are unknown,
    /// so an image used yesterday does not look unused since it was
    /// created).
    pub fn last_used(&self, image: usize) -> (DateTime<Utc>, LastUsedSource) {
        let last = self.last_use(image);
        (last.at, last.source)
    }

    /// [`Snapshot::last_used`], with the build when a build was the last use.
    pub fn last_use(&self, image: usize) -> LastUse {
        let img = &self.images[image];
        let mut best = LastUse {
            at: img.created,
            source: LastUsedSource::Created,
            build: None,
        };
        let mut offer = |at: DateTime<Utc>, source, build| {
            if at > best.at {
                best = LastUse { at, source, build };
            }
        };
        if let Some(t) = img.last_tag_time {
            offer(t, LastUsedSource::Tagged, None);
        }
        for &c in &self.users[image] {
            offer(
                self.containers[c].container.created,
                LastUsedSource::Container,
                None,
            );
        }
        if let Some(u) = self.build_use(image) {
            offer(u.at, LastUsedSource::Build, Some(u.by));
        }
        if let Some(t) = img.tracked.last_event {
            match img.tracked.last_event_build {
                Some(by) => offer(t, LastUsedSource::Build, Some(by)),
                None => offer(t, LastUsedSource::Event, None),
            }
        }
        if let Some(t) = img.tracked.restarted {
            offer(t, LastUsedSource::TrackingRestarted, None);
        }
        best
    }
}

/// Where a last-used time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LastUsedSource {
    /// The image's created time.
    Created,
    /// The image's last tag time.
    Tagged,
    /// A container created from the image.
    Container,
    /// An engine event imagegc recorded.
    Event,
    /// Tracking restarted after the state was lost: no earlier use is known.
    TrackingRestarted,
    /// A build used it: an image built on top of it appeared, or a
    /// build-cache record made from it was used (`LastUsedAt`).
    Build,
}

impl LastUsedSource {
    /// Short name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Tagged => "tagged",
            Self::Container => "container",
            Self::Event => "event",
            Self::TrackingRestarted => "tracking_restarted",
            Self::Build => "build",
        }
    }
}

/// How many inspect (image and container) calls a collection keeps in flight.
/// The engine answers them in parallel (dockerd serves each request on its
/// own goroutine), so a host with 1,000 new images is read in about an
/// eighth of the sequential time; 8 keeps the engine's other clients
/// (builds, the CI runner) answered on a small host, as a bound well under
/// Docker's default `max-concurrent-*` limits. Not configurable: it is an
/// internal bound, not a policy.
pub const INSPECT_CONCURRENCY: usize = 8;

/// A fingerprint of an image's references (tags and digests, in any order):
/// FNV-1a, stable across processes and releases, so it can be kept in the
/// state file. The facts of an image are fixed by its ID except its last tag
/// time, which a reference put on it changes; when the references differ
/// from those seen at inspect, the facts are read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RefsPrint(pub u64);

impl RefsPrint {
    /// The fingerprint of `summary`'s tags and digests.
    pub fn of(summary: &ImageSummary) -> Self {
        let mut refs: Vec<&str> = summary
            .tags
            .iter()
            .chain(&summary.digests)
            .map(String::as_str)
            .collect();
        refs.sort_unstable();
        refs.dedup();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for r in refs {
            for b in r.bytes().chain([0]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        Self(h)
    }
}

/// The facts known for one image ID, and the references they were read with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownFacts {
    /// What inspect and history said.
    pub facts: Arc<ImageFacts>,
    /// [`RefsPrint`] of the image when they were read; `None` when read
    /// outside a pass (an event), adopted by the next pass as they are.
    pub refs: Option<RefsPrint>,
}

/// Inspect and history results by image ID, so a pass inspects only images
/// it does not know, and a later process (through the state file: see
/// [`crate::run::state`]) neither.
#[derive(Debug, Default)]
pub struct DetailsCache {
    entries: HashMap<String, KnownFacts>,
}

impl DetailsCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached image IDs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The facts cached for `image_id`.
    pub fn get(&self, image_id: &str) -> Option<&Arc<ImageFacts>> {
        self.entries.get(image_id).map(|k| &k.facts)
    }

    /// Cache the facts of `image_id` (learnt outside a pass: the daemon
    /// inspects a new image an event names).
    pub fn insert(&mut self, image_id: &str, facts: Arc<ImageFacts>) {
        self.entries
            .insert(image_id.to_owned(), KnownFacts { facts, refs: None });
    }

    /// Take known facts (from the state file) for IDs not cached yet.
    pub fn adopt<'a>(&mut self, known: impl IntoIterator<Item = (&'a String, &'a KnownFacts)>) {
        for (id, k) in known {
            self.entries.entry(id.clone()).or_insert_with(|| k.clone());
        }
    }

    /// Forget the facts of `image_id`, so the next pass reads them again (a
    /// reference was put on it: its last tag time changed).
    pub fn forget(&mut self, image_id: &str) {
        self.entries.remove(image_id);
    }

    /// Every cached image ID with its facts.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<ImageFacts>)> {
        self.entries.iter().map(|(id, k)| (id.as_str(), &k.facts))
    }

    /// Every cached image ID with its facts and references, for the state.
    pub fn known(&self) -> impl Iterator<Item = (&String, &KnownFacts)> {
        self.entries.iter()
    }

    /// Drop entries for images no longer listed.
    fn retain(&mut self, live: &HashSet<&str>) {
        self.entries.retain(|id, _| live.contains(id.as_str()));
    }
}

/// What a pass needs collected beyond images, containers and the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectNeeds {
    /// Read the engine's build cache (when its capabilities say it has one).
    pub build_cache: bool,
    /// Inspect every container for [`SnapContainer::details`] (with
    /// `size=1` only the stopped ones `[[containers]]` policies select).
    pub container_details: bool,
}

impl CollectNeeds {
    /// Images, containers and the disk only.
    pub const IMAGES_ONLY: Self = Self {
        build_cache: false,
        container_details: false,
    };
    /// Everything, the build cache included (`explain` of a record, reports).
    pub const ALL: Self = Self {
        build_cache: true,
        container_details: true,
    };

    /// Everything either asks for.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self {
            build_cache: self.build_cache || other.build_cache,
            container_details: self.container_details || other.container_details,
        }
    }

    /// What a pass under `policy` needs: the build cache when a
    /// `[[build_cache]]` table exists, or when any `[[policy]]` table uses
    /// last use (`unused_for` or a disk or inode watermark, whose least-recently-used
    /// order counts builds as use: a record's `LastUsedAt`).
    pub fn for_policy(policy: &Policy) -> Self {
        let uses_last_use = policy
            .rules
            .iter()
            .any(|r| r.conditions.unused_for.is_some() || r.conditions.is_pressure());
        Self {
            build_cache: !policy.cache_rules.is_empty() || uses_last_use,
            container_details: !policy.container_rules.is_empty(),
        }
    }
}

/// Whether the selectors of `rule` pick container `c` (its conditions
/// aside): its state is one of the rule's `states` (none given: `exited`
/// and `dead`), any of its names matches any `names` glob, its image
/// reference matches any `images` glob, and it has every `labels` match.
/// A selector list left empty does not narrow. The one definition collect
/// (which inspects only selected containers with their size) and the
/// planner share. Selection is not safety: a running container is never
/// selected, but a Compose-managed or protected one may be, and the planner
/// keeps it.
pub fn container_selected(rule: &ContainerRule, c: &SnapContainer) -> bool {
    let selectors = &rule.selectors;
    let container = &c.container;
    let Some(state) = StoppedState::from_engine(&container.state) else {
        return false;
    };
    let state_ok = if selectors.states.is_empty() {
        matches!(state, StoppedState::Exited | StoppedState::Dead)
    } else {
        selectors.states.contains(&state)
    };
    state_ok
        && (selectors.names.is_empty()
            || container.names.iter().any(|n| {
                // Names are matched without Docker's leading `/`.
                let n = n.strip_prefix('/').unwrap_or(n);
                selectors.names.iter().any(|g| g.is_match(n))
            }))
        && (selectors.images.is_empty()
            || selectors.images.iter().any(|g| {
                g.is_match(&container.image_ref)
                    || c.image_as_written.as_deref().is_some_and(|w| g.is_match(w))
            }))
        && selectors
            .labels
            .iter()
            .all(|l| l.matches(&container.labels))
}

/// Set once the "no build cache" warning was logged in this process.
static UNSUPPORTED_WARNED: AtomicBool = AtomicBool::new(false);

/// Images, containers and disk of the engine, with facts from the cache and
/// times from `tracked`, without the build cache: [`collect_with`] with
/// [`CollectNeeds::IMAGES_ONLY`].
pub async fn collect<E: Engine>(
    engine: &E,
    disk: &Arc<dyn DiskProbe>,
    root_dir: Option<&str>,
    cache: &mut DetailsCache,
    tracked: &(dyn Fn(&str) -> Tracked + Sync),
) -> Result<Snapshot, EngineError> {
    collect_with(
        engine,
        disk,
        root_dir,
        cache,
        tracked,
        CollectNeeds::IMAGES_ONLY,
    )
    .await
}

/// Images, containers and disk of the engine, with facts from the cache and
/// times from `tracked`, and the build cache when `needs` says so. The disk
/// is `disk`'s reading at `root_dir`, when the engine's root dir is on this
/// host.
///
/// The build cache is read only from an engine whose capabilities say it has
/// one ([`CacheAvailability::Unsupported`] otherwise, without a call). An
/// engine that answers [`EngineError::Unsupported`] anyway gives
/// [`CacheAvailability::Unsupported`] too, with a warning logged once per
/// process: not a failed pass. Any other error fails the collection, as
/// other engine errors do.
pub async fn collect_with<E: Engine>(
    engine: &E,
    disk: &Arc<dyn DiskProbe>,
    root_dir: Option<&str>,
    cache: &mut DetailsCache,
    tracked: &(dyn Fn(&str) -> Tracked + Sync),
    needs: CollectNeeds,
) -> Result<Snapshot, EngineError> {
    collect_for(engine, disk, root_dir, cache, tracked, needs, &[]).await
}

/// [`collect_with`], inspecting containers for `[[containers]]` rules:
/// with `needs.container_details`, every container is inspected once
/// (without its size) for [`SnapContainer::details`], and the stopped ones
/// (`exited`, `dead`, `created`) some rule in `container_rules` selects
/// ([`container_selected`]) with their writable-layer size (`size=1`,
/// expensive on large hosts: only candidates pay for it). A container gone
/// between the list and its inspect (`NotFound`) keeps `details: None`,
/// which the planner treats as unknown (kept); any other error fails the
/// collection, as other engine errors do.
pub async fn collect_for<E: Engine>(
    engine: &E,
    disk: &Arc<dyn DiskProbe>,
    root_dir: Option<&str>,
    cache: &mut DetailsCache,
    tracked: &(dyn Fn(&str) -> Tracked + Sync),
    needs: CollectNeeds,
    container_rules: &[ContainerRule],
) -> Result<Snapshot, EngineError> {
    let capabilities = engine.capabilities();
    let summaries = engine.list_images().await?;
    let containers = engine.list_containers().await?;
    let inputs = image_inputs(engine, summaries, cache, tracked).await?;
    let live: HashSet<&str> = inputs.iter().map(|i| i.summary.id.as_str()).collect();
    cache.retain(&live);
    let disk = match root_dir {
        Some(dir) if capabilities.root_dir_on_host => disk::usage_of(disk, dir).await,
        _ => None,
    };
    // `Some(None)`: asked for, but the engine has none.
    let records = if needs.build_cache {
        Some(build_cache_of(engine, &capabilities).await?)
    } else {
        None
    };
    let mut snapshot = Snapshot::build(inputs, containers, disk).with_capabilities(capabilities);
    if needs.container_details {
        inspect_containers(engine, &mut snapshot.containers, container_rules).await?;
    }
    match records {
        Some(Some(records)) => snapshot = snapshot.with_build_cache(records),
        Some(None) => snapshot.cache.availability = CacheAvailability::Unsupported,
        None => {}
    }
    Ok(snapshot)
}

/// The engine's build-cache records; `None` when it has no build cache (its
/// capabilities say so, without a call, or it answers
/// [`EngineError::Unsupported`], warned about once per process).
async fn build_cache_of<E: Engine>(
    engine: &E,
    capabilities: &Capabilities,
) -> Result<Option<Vec<CacheRecord>>, EngineError> {
    if !capabilities.build_cache {
        return Ok(None);
    }
    match engine.build_cache().await {
        Ok(records) => Ok(Some(records)),
        Err(EngineError::Unsupported(why)) => {
            if !UNSUPPORTED_WARNED.swap(true, Ordering::Relaxed) {
                warn!(
                    reason = %why,
                    "the engine has no build cache: [[build_cache]] policies are skipped"
                );
            }
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The snapshot input of every listed image, in list order: facts from the
/// cache when it knows the image with the same references, else from
/// `image_details`, up to [`INSPECT_CONCURRENCY`] at a time (cached as they
/// arrive). An image removed between list and inspect (`NotFound`) is left
/// out; any other error fails the collection.
async fn image_inputs<E: Engine>(
    engine: &E,
    summaries: Vec<ImageSummary>,
    cache: &mut DetailsCache,
    tracked: &(dyn Fn(&str) -> Tracked + Sync),
) -> Result<Vec<ImageInput>, EngineError> {
    let prints: Vec<RefsPrint> = summaries.iter().map(RefsPrint::of).collect();
    let mut facts: Vec<Option<Arc<ImageFacts>>> = Vec::with_capacity(summaries.len());
    let mut wanted = Vec::new();
    for (i, summary) in summaries.iter().enumerate() {
        match cache.entries.get_mut(&summary.id) {
            Some(k) if k.refs.is_none_or(|r| r == prints[i]) => {
                k.refs = Some(prints[i]);
                facts.push(Some(Arc::clone(&k.facts)));
            }
            _ => {
                facts.push(None);
                wanted.push(i);
            }
        }
    }
    let mut gone = vec![false; summaries.len()];
    {
        let summaries = &summaries;
        let mut read = futures_util::stream::iter(wanted)
            .map(|i| async move { (i, engine.image_details(&summaries[i].id).await) })
            .buffer_unordered(INSPECT_CONCURRENCY);
        while let Some((i, got)) = read.next().await {
            match got {
                Ok(f) => {
                    let f = Arc::new(f);
                    cache.entries.insert(
                        summaries[i].id.clone(),
                        KnownFacts {
                            facts: Arc::clone(&f),
                            refs: Some(prints[i]),
                        },
                    );
                    facts[i] = Some(f);
                }
                // Removed between list and inspect: skip it, it is gone.
                Err(EngineError::NotFound(_)) => gone[i] = true,
                Err(e) => return Err(e),
            }
        }
    }
    let mut inputs = Vec::with_capacity(summaries.len());
    for ((summary, facts), gone) in summaries.into_iter().zip(facts).zip(gone) {
        let Some(facts) = facts.filter(|_| !gone) else {
            continue;
        };
        let tracked = tracked(&summary.id);
        inputs.push(ImageInput {
            summary,
            facts,
            tracked,
        });
    }
    Ok(inputs)
}

/// Fills [`SnapContainer::details`]: one inspect per container, with the
/// size for stopped ones a rule selects, up to [`INSPECT_CONCURRENCY`] at a
/// time. `NotFound` leaves `None`.
async fn inspect_containers<E: Engine>(
    engine: &E,
    containers: &mut [SnapContainer],
    rules: &[ContainerRule],
) -> Result<(), EngineError> {
    let asks: Vec<(usize, String, bool)> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let candidate = rules.iter().any(|r| container_selected(r, c));
            (i, c.container.id.clone(), candidate)
        })
        .collect();
    let mut read = futures_util::stream::iter(asks)
        .map(
            |(i, id, candidate)| async move { (i, engine.container_details(&id, candidate).await) },
        )
        .buffer_unordered(INSPECT_CONCURRENCY);
    while let Some((i, got)) = read.next().await {
        match got {
            Ok(details) => containers[i].details = Some(details),
            // Removed between list and inspect: nothing is known of it.
            Err(EngineError::NotFound(_)) => containers[i].details = None,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ContainerConditions, ContainerSelectors, Glob, LabelMatch};

    fn glob(pattern: &str) -> Glob {
        Glob {
            pattern: pattern.to_owned(),
            matcher: globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .expect("a glob")
                .compile_matcher(),
        }
    }

    fn rule(selectors: ContainerSelectors) -> ContainerRule {
        ContainerRule {
            name: "r".to_owned(),
            selectors,
            conditions: ContainerConditions {
                exited_for: Some(std::time::Duration::from_secs(1)),
                older_than: None,
            },
        }
    }

    fn container(
        state: &str,
        name: &str,
        image_ref: &str,
        labels: &[(&str, &str)],
    ) -> SnapContainer {
        SnapContainer {
            container: Container {
                id: "c".to_owned(),
                names: vec![name.to_owned()],
                image_id: "sha256:i".to_owned(),
                state: state.to_owned(),
                created: DateTime::UNIX_EPOCH,
                image_ref: image_ref.to_owned(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            },
            image: None,
            details: None,
            image_as_written: None,
        }
    }

    #[test]
    fn without_selectors_only_exited_and_dead_containers_are_selected() {
        let r = rule(ContainerSelectors::default());
        for (state, selected) in [
            ("exited", true),
            ("dead", true),
            ("created", false),
            ("running", false),
            ("paused", false),
            ("restarting", false),
            ("removing", false),
            ("", false),
        ] {
            assert_eq!(
                container_selected(&r, &container(state, "x", "img", &[])),
                selected,
                "{state}"
            );
        }
    }

    #[test]
    fn states_name_created_but_never_a_running_state() {
        let r = rule(ContainerSelectors {
            states: vec![StoppedState::Created],
            ..ContainerSelectors::default()
        });
        assert!(container_selected(&r, &container("created", "x", "i", &[])));
        assert!(!container_selected(&r, &container("exited", "x", "i", &[])));
        assert!(!container_selected(
            &r,
            &container("running", "x", "i", &[])
        ));
    }

    #[test]
    fn any_name_may_match_any_name_glob() {
        let r = rule(ContainerSelectors {
            names: vec![glob("ci-*"), glob("runner-*")],
            ..ContainerSelectors::default()
        });
        let mut c = container("exited", "web", "i", &[]);
        assert!(!container_selected(&r, &c));
        c.container.names.push("runner-7".to_owned());
        assert!(container_selected(&r, &c));
        assert!(container_selected(
            &r,
            &container("exited", "ci-job-1", "i", &[])
        ));
        let nameless = SnapContainer {
            container: Container {
                names: Vec::new(),
                ..c.container.clone()
            },
            ..c
        };
        assert!(!container_selected(&r, &nameless));
    }

    #[test]
    fn image_globs_match_the_reference_the_container_was_made_from() {
        let r = rule(ContainerSelectors {
            images: vec![glob("ci/**")],
            ..ContainerSelectors::default()
        });
        assert!(container_selected(
            &r,
            &container("exited", "x", "ci/app/test:1", &[])
        ));
        assert!(!container_selected(
            &r,
            &container("exited", "x", "web/ci:1", &[])
        ));
        assert!(!container_selected(&r, &container("exited", "x", "", &[])));
    }

    #[test]
    fn on_podman_image_globs_match_the_reference_as_written_too() {
        let r = rule(ContainerSelectors {
            images: vec![glob("ci/**")],
            ..ContainerSelectors::default()
        });
        let podman = Capabilities {
            qualifies_local_names: true,
            ..Capabilities::DOCKER_20_10
        };
        let made = |caps: Capabilities| {
            let mut snap = Snapshot::build(Vec::new(), Vec::new(), None);
            snap.containers
                .push(container("exited", "x", "localhost/ci/app:1", &[]));
            snap.with_capabilities(caps).containers.remove(0)
        };
        assert!(container_selected(&r, &made(podman)));
        // On Docker `localhost/` is a registry the user did not write.
        assert!(!container_selected(&r, &made(Capabilities::DOCKER_20_10)));
    }

    #[test]
    fn every_label_match_must_hold() {
        let r = rule(ContainerSelectors {
            labels: vec![
                LabelMatch {
                    key: "job".to_owned(),
                    value: Some("build".to_owned()),
                },
                LabelMatch {
                    key: "com.docker.compose.project".to_owned(),
                    value: None,
                },
            ],
            ..ContainerSelectors::default()
        });
        let both = [("job", "build"), ("com.docker.compose.project", "p")];
        assert!(container_selected(
            &r,
            &container("exited", "x", "i", &both)
        ));
        assert!(!container_selected(
            &r,
            &container("exited", "x", "i", &[("job", "test"), both[1]])
        ));
        assert!(!container_selected(
            &r,
            &container("exited", "x", "i", &both[..1])
        ));
    }
}
