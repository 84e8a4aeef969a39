//! The engine's build cache in a snapshot: `BuildKit` records, indexed for
//! the planner and the ledger (parents, children, the image layers a shared
//! record holds).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

pub use crate::engine::{CacheRecord, CacheRecordKind};

/// Whether the snapshot's engine has a build cache the pass could read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheAvailability {
    /// The records were listed.
    Listed,
    /// The engine has no build cache (Podman: 404 on `/build/prune`).
    Unsupported,
    /// Not read: no `[[build_cache]]` policy needs it, or the snapshot was
    /// built without one (tests, benchmarks).
    #[default]
    NotRead,
}

/// Build-cache records of one snapshot, with their indices.
#[derive(Debug, Clone, Default)]
pub struct BuildCache {
    /// Whether `records` is the engine's whole build cache.
    pub availability: CacheAvailability,
    /// Records in the order the engine listed them.
    pub records: Vec<CacheRecord>,
    /// Record ID → index.
    pub by_id: HashMap<String, usize>,
    /// Parent indices per record (only parents present).
    pub parents: Vec<Vec<usize>>,
    /// Child indices per record: a record goes only after all of these.
    pub children: Vec<Vec<usize>>,
    /// Per record: the image layers (indices into `Snapshot::layers`) whose
    /// data it shares. Non-empty only for `Shared` records; removing such a
    /// record frees those bytes only once no image uses them, and deleting
    /// the last image using them frees nothing while a record holds them.
    pub holds: Vec<Vec<u32>>,
    /// Per record: the bytes removing it frees by itself, beside the held
    /// layers (`holds`): its `Size` for a record that shares nothing, 0 for
    /// one whose data is the held image layers. Every shared record has 0,
    /// also one that matches no image layer ([`map_records`]).
    pub own_bytes: Vec<u64>,
}

impl BuildCache {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// When record `r` was last used by a build (its `CreatedAt` when never
    /// used), and whether that is a use (`true`) or the creation (`false`).
    pub fn last_used(&self, r: usize) -> (DateTime<Utc>, bool) {
        let rec = &self.records[r];
        match rec.last_used {
            Some(t) if t > rec.created => (t, true),
            _ => (rec.created, false),
        }
    }
}

/// A record's match on an image is only possible (sizes allow it).
const WEAK: u8 = 0;
/// The record's chain ends where the image does.
const ENDS: u8 = 1;
/// Sizes place the match.
const PLACED: u8 = 2;

/// The image layers each record holds and the bytes each frees by itself
/// (`BuildCache::holds`, `BuildCache::own_bytes`), from the records, their
/// child indices, each image's layers (indices into `layer_sizes`, bottom
/// first) and the interned layers' sizes.
///
/// What it rests on (docs/ENGINES.md, "Build cache and image layers",
/// measured on a private Docker 20.10):
/// - a `Shared` record is one image layer: the one at its depth in its
///   `Parent` chain (0 for a record without a parent), its `Size` that
///   layer's diff size; records the engine made for a `FROM` base's layers
///   (`from local …`) have `Size` 0 whatever the layer's size;
/// - removing a shared record while an image uses the layer frees nothing,
///   and removing the last image frees nothing while a record holds it: the
///   bytes go with the last of both. So a shared record owns 0 bytes and
///   holds its layers;
/// - `Shared` turns false as soon as no image uses the data, and removing a
///   non-shared record frees its `Size`.
///
/// The rule: a shared record at depth *d* matches layer *d* of an image when
/// every record along its chain (root to it) is shared and has the size of
/// the image's layer at that depth, a record of `Size` 0 matching any size.
/// A match is *placed by sizes* when the record's own size equals the
/// layer's, or when one of its children's matches on the same image is (a
/// `from local` record is placed by the layers built on it). Failing that, a
/// match *ends with the image* when the record has no shared child and sits
/// at the image's top layer, or a child's match on the same image ends so (a
/// base's own records with nothing built on them left: the base image
/// itself). A record holds the layers of its matches placed by sizes; when
/// it has none, of those that end with an image; when none, of all its
/// matches (every image it could be). So a record may hold several distinct
/// layers when sizes are ambiguous: imagegc then predicts less for removing
/// those images alone, never more. A shared record matching nothing holds
/// nothing and owns 0 (some image the pass cannot name uses its data).
/// Non-shared records own their `Size` and hold nothing; a non-shared
/// `from local` record (`Size` 0) frees a base layer's bytes no API names:
/// it is counted as 0, an under-prediction.
pub fn map_records(
    records: &[CacheRecord],
    children: &[Vec<usize>],
    images: &[Vec<u32>],
    layer_sizes: &[u64],
) -> (Vec<Vec<u32>>, Vec<u64>) {
    let n = records.len();
    let own_bytes = records
        .iter()
        .map(|r| if r.shared { 0 } else { r.size })
        .collect();
    let fits = |r: usize, size: u64| {
        records[r].shared && (records[r].size == size || records[r].size == 0)
    };
    let roots: Vec<usize> = (0..n)
        .filter(|&r| records[r].shared && records[r].parents.is_empty())
        .collect();
    // Per tier (weak, chain ends with the image, placed by sizes), per record: the layers it
    // matches.
    let mut by_tier: [Vec<Vec<u32>>; 3] = std::array::from_fn(|_| vec![Vec::new(); n]);
    for layers in images {
        let size_at = |d: usize| layer_sizes.get(layers[d] as usize).copied().unwrap_or(0);
        // levels[d]: the records matching this image at depth d.
        let mut levels: Vec<Vec<usize>> = Vec::new();
        for d in 0..layers.len() {
            let size = size_at(d);
            let mut level: Vec<usize> = match levels.last() {
                None => roots.iter().copied().filter(|&r| fits(r, size)).collect(),
                Some(prev) => prev
                    .iter()
                    .flat_map(|&p| children.get(p).into_iter().flatten().copied())
                    .filter(|&c| c < n && fits(c, size))
                    .collect(),
            };
            level.sort_unstable();
            level.dedup();
            if level.is_empty() {
                break;
            }
            levels.push(level);
        }
        // Each match's tier, deepest first: 2 when the sizes place it (its own, or a
        // child's placed on this image), 1 when its chain ends where the image does (a leaf
        // record at the image's top layer, or a child so placed: a base's own records), else 0.
        let mut tier_below: Vec<(usize, u8)> = Vec::new();
        for d in (0..levels.len()).rev() {
            let size = size_at(d);
            let mut tier_here = Vec::new();
            for &r in &levels[d] {
                let kids = children.get(r).map_or(&[][..], Vec::as_slice);
                let child_tier = kids
                    .iter()
                    .filter_map(|c| {
                        tier_below
                            .binary_search_by_key(c, |&(id, _)| id)
                            .ok()
                            .map(|i| tier_below[i].1)
                    })
                    .max();
                let leaf = !kids.iter().any(|&c| c < n && records[c].shared);
                let tier = if records[r].size == size || child_tier == Some(PLACED) {
                    PLACED
                } else if (leaf && d + 1 == layers.len()) || child_tier == Some(ENDS) {
                    ENDS
                } else {
                    WEAK
                };
                by_tier[usize::from(tier)][r].push(layers[d]);
                tier_here.push((r, tier));
            }
            tier_here.sort_unstable();
            tier_below = tier_here;
        }
    }
    let [weak, ends, strong] = by_tier;
    let holds = strong
        .into_iter()
        .zip(ends)
        .zip(weak)
        .map(|((s, e), w)| {
            let mut h = if !s.is_empty() {
                s
            } else if !e.is_empty() {
                e
            } else {
                w
            };
            h.sort_unstable();
            h.dedup();
            h
        })
        .collect();
    (holds, own_bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use chrono::{TimeZone, Utc};

    use super::{CacheRecord, CacheRecordKind};
    use crate::engine::{ImageFacts, ImageSummary, Layer};
    use crate::inventory::{ImageInput, Snapshot, Tracked};

    /// An image whose layers are `(chain ID, size)`, bottom first.
    fn image(id: &str, layers: &[(&str, u64)]) -> ImageInput {
        ImageInput {
            summary: ImageSummary {
                id: id.to_string(),
                parent_id: None,
                tags: vec![format!("{id}:1")],
                digests: Vec::new(),
                created: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
                labels: BTreeMap::new(),
            },
            facts: Arc::new(ImageFacts {
                layers: layers
                    .iter()
                    .map(|(c, s)| Layer {
                        chain_id: (*c).to_string(),
                        size: *s,
                    })
                    .collect(),
                sizes_exact: true,
                last_tag_time: None,
                blobs: Vec::new(),
            }),
            tracked: Tracked::default(),
        }
    }

    fn record(id: &str, parent: Option<&str>, size: u64, shared: bool) -> CacheRecord {
        CacheRecord {
            id: id.to_string(),
            parents: parent.into_iter().map(str::to_owned).collect(),
            kind: CacheRecordKind::Regular,
            description: if size == 0 {
                "from local ".to_string()
            } else {
                "fileop target".to_string()
            },
            in_use: false,
            shared,
            size,
            created: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            last_used: None,
            usage_count: 1,
        }
    }

    /// The chain IDs a record holds, sorted.
    fn held(snap: &Snapshot, id: &str) -> Vec<String> {
        let r = snap.cache.by_id[id];
        let mut out: Vec<String> = snap.cache.holds[r]
            .iter()
            .map(|&l| snap.layers[l as usize].chain_id.clone())
            .collect();
        out.sort();
        out
    }

    fn own(snap: &Snapshot, id: &str) -> u64 {
        snap.cache.own_bytes[snap.cache.by_id[id]]
    }

    #[test]
    fn a_scratch_build_s_shared_records_hold_its_layers_bottom_first() {
        // As measured: FROM scratch, COPY 1,000,000 B, COPY 500,000 B.
        let snap = Snapshot::build(
            vec![image("app", &[("L1", 1_000_000), ("L2", 500_000)])],
            Vec::new(),
            None,
        )
        .with_build_cache(vec![
            record("ctx", None, 1_505_280, false),
            record("copy", None, 1_500_049, false),
            record("a", None, 1_000_000, true),
            record("b", Some("a"), 500_000, true),
        ]);
        assert_eq!(held(&snap, "a"), ["L1"]);
        assert_eq!(held(&snap, "b"), ["L2"]);
        assert_eq!(own(&snap, "a"), 0);
        assert_eq!(own(&snap, "b"), 0);
        assert!(held(&snap, "ctx").is_empty());
        assert_eq!(own(&snap, "ctx"), 1_505_280);
        assert_eq!(own(&snap, "copy"), 1_500_049);
    }

    #[test]
    fn a_chain_matches_only_when_every_size_along_it_matches() {
        // The record of size 500,000 sits on a 999 B parent: not app's chain.
        let snap = Snapshot::build(
            vec![image("app", &[("L1", 1_000_000), ("L2", 500_000)])],
            Vec::new(),
            None,
        )
        .with_build_cache(vec![
            record("p", None, 999, true),
            record("c", Some("p"), 500_000, true),
        ]);
        assert!(held(&snap, "p").is_empty());
        assert!(held(&snap, "c").is_empty());
        // Shared and matching nothing: some image the pass cannot name uses
        // the data, so removing it alone frees nothing.
        assert_eq!(own(&snap, "c"), 0);
    }

    #[test]
    fn from_records_of_size_zero_are_placed_by_what_was_built_on_them() {
        // FROM base (800,000 + 300,000 B), COPY 200,000 B; another image
        // with an 800,000 B bottom layer of its own.
        let snap = Snapshot::build(
            vec![
                image("base", &[("B1", 800_000), ("B2", 300_000)]),
                image("app", &[("B1", 800_000), ("B2", 300_000), ("A3", 200_000)]),
                image("other", &[("O1", 800_000), ("O2", 300_000)]),
            ],
            Vec::new(),
            None,
        )
        .with_build_cache(vec![
            record("f0", None, 0, true),
            record("f1", Some("f0"), 0, true),
            record("c", Some("f1"), 200_000, true),
        ]);
        assert_eq!(held(&snap, "f0"), ["B1"]);
        assert_eq!(held(&snap, "f1"), ["B2"]);
        assert_eq!(held(&snap, "c"), ["A3"]);
        assert_eq!(own(&snap, "f0"), 0);
    }

    #[test]
    fn from_records_with_nothing_built_on_them_hold_the_layers_of_images_their_chain_ends_with() {
        // The base's two `from local` records, nothing built on them left: the base itself (two
        // layers) is what they are, not the one-layer image nor the bottom of the three-layer one.
        let snap = Snapshot::build(
            vec![
                image("base", &[("B1", 800_000), ("B2", 300_000)]),
                image("other", &[("O1", 700_000)]),
                image("tall", &[("T1", 1), ("T2", 2), ("T3", 3)]),
            ],
            Vec::new(),
            None,
        )
        .with_build_cache(vec![
            record("f0", None, 0, true),
            record("f1", Some("f0"), 0, true),
        ]);
        assert_eq!(held(&snap, "f0"), ["B1"]);
        assert_eq!(held(&snap, "f1"), ["B2"]);
    }

    #[test]
    fn from_records_that_no_image_ends_with_hold_every_layer_they_could_be() {
        let snap = Snapshot::build(
            vec![
                image("other", &[("O1", 700_000)]),
                image("tall", &[("T1", 1), ("T2", 2), ("T3", 3)]),
            ],
            Vec::new(),
            None,
        )
        .with_build_cache(vec![
            record("f0", None, 0, true),
            record("f1", Some("f0"), 0, true),
        ]);
        assert_eq!(held(&snap, "f0"), ["O1", "T1"]);
        assert_eq!(held(&snap, "f1"), ["T2"]);
    }

    #[test]
    fn equal_sizes_of_distinct_layers_are_all_held() {
        let snap = Snapshot::build(
            vec![
                image("one", &[("X1", 4096)]),
                image("two", &[("Y1", 4096)]),
                image("three", &[("Z1", 8192)]),
            ],
            Vec::new(),
            None,
        )
        .with_build_cache(vec![record("r", None, 4096, true)]);
        assert_eq!(held(&snap, "r"), ["X1", "Y1"]);
    }

    #[test]
    fn a_layer_shared_by_two_images_is_held_once() {
        let snap = Snapshot::build(
            vec![
                image("one", &[("X1", 4096), ("X2", 10)]),
                image("two", &[("X1", 4096), ("Y2", 20)]),
            ],
            Vec::new(),
            None,
        )
        .with_build_cache(vec![
            record("r", None, 4096, true),
            record("s", Some("r"), 20, true),
        ]);
        assert_eq!(held(&snap, "r"), ["X1"]);
        assert_eq!(held(&snap, "s"), ["Y2"]);
    }

    #[test]
    fn non_shared_records_hold_nothing_and_own_their_size() {
        // After `rmi` the engine turns the layer records to non-shared: each
        // then frees its Size, whatever its size matches.
        let snap = Snapshot::build(vec![image("app", &[("L1", 1000)])], Vec::new(), None)
            .with_build_cache(vec![
                record("a", None, 1000, false),
                record("b", Some("a"), 0, true),
            ]);
        assert!(held(&snap, "a").is_empty());
        assert_eq!(own(&snap, "a"), 1000);
        // A shared record under a non-shared parent is not on any image's
        // chain this pass can follow.
        assert!(held(&snap, "b").is_empty());
        assert_eq!(own(&snap, "b"), 0);
    }

    #[test]
    fn a_parent_cycle_does_not_hang_the_mapping() {
        // Not from a real engine; absurd input must still end.
        let snap = Snapshot::build(
            vec![image("app", &[("L1", 0), ("L2", 0)])],
            Vec::new(),
            None,
        )
        .with_build_cache(vec![
            record("a", Some("b"), 0, true),
            record("b", Some("a"), 0, true),
        ]);
        assert!(held(&snap, "a").is_empty());
        assert_eq!(snap.cache.holds.len(), 2);
    }
}
