//! Docker's image facts: chain IDs and layer sizes from inspect and history.
//!
//! Docker reports an image's layers as diff IDs (`RootFS.Layers`) and its
//! sizes per history step, without saying which steps made a layer. This
//! module pairs the two (a Dockerfile-aware heuristic, which is why it lives
//! in the Docker adapter and not in the core) and computes the layer store's
//! chain IDs, the keys a removal answer lists as deleted.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::engine::{ImageFacts, Layer};

/// One entry of an image's history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Bytes of the layer this step made (the layer store's diff size), 0 for
    /// metadata-only steps.
    pub size: u64,
    /// The command that made the step; used only to tell empty steps from
    /// zero-byte layers when the two cannot be told apart by count.
    pub created_by: String,
}

/// What inspect and history say about one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDetails {
    /// `RootFS.Layers`: the diff IDs of the image's layers, bottom first.
    pub diff_ids: Vec<String>,
    /// The image history, oldest first.
    pub history: Vec<HistoryEntry>,
    /// When a reference was last put on the image (pull, tag, load), if ever.
    pub last_tag_time: Option<DateTime<Utc>>,
}

/// The engine-neutral facts of an image from its inspect and history.
pub fn image_facts(details: &ImageDetails) -> ImageFacts {
    let layers = image_layers(details);
    ImageFacts {
        layers: layers.layers,
        sizes_exact: layers.exact,
        last_tag_time: details.last_tag_time,
        blobs: Vec::new(),
    }
}

/// Chain IDs of a stack of diff IDs: `C0 = D0`, `Cn = sha256(C(n-1) + " " + Dn)`.
///
/// ```
/// use imagegc::engine::docker::layers::chain_ids;
/// let diffs = vec!["sha256:aa".to_string(), "sha256:bb".to_string()];
/// let chains = chain_ids(&diffs);
/// assert_eq!(chains[0], "sha256:aa");
/// // sha256("sha256:aa sha256:bb")
/// assert_eq!(chains[1], "sha256:b68ad689d6d1ec110ea1c13617437ad6f3766d4b3b309f6a603a222e07a0164f");
/// ```
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(prev) => {
                let digest = Sha256::digest(format!("{prev} {diff}").as_bytes());
                format!("sha256:{}", hex(&digest))
            }
        };
        out.push(next);
    }
    out
}

/// Layer sizes learned from histories in this process, by chain ID, so that an image whose
/// lower layers are known needs no history call ([`layers_from_known`]). A cache, not a
/// record: bounded by [`KnownLayers::CAPACITY`] entries and emptied when full, which costs
/// history calls, never a wrong size (a chain ID names one layer's content for good).
#[derive(Debug, Default)]
pub struct KnownLayers {
    sizes: std::collections::HashMap<String, u64>,
}

impl KnownLayers {
    /// The most layers remembered (about 100 bytes each): far more than a build host holds.
    pub const CAPACITY: usize = 1 << 16;

    /// The size of layer `chain_id`, if learned.
    pub fn get(&self, chain_id: &str) -> Option<u64> {
        self.sizes.get(chain_id).copied()
    }

    /// Remembers the sizes of `layers`, whose sizes are exact.
    pub fn learn(&mut self, layers: &[Layer]) {
        for layer in layers {
            if self.sizes.len() >= Self::CAPACITY && !self.sizes.contains_key(&layer.chain_id) {
                self.sizes.clear();
            }
            self.sizes.insert(layer.chain_id.clone(), layer.size);
        }
    }

    /// How many layers are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sizes.len()
    }
}

/// An image's layers sized from the inspect alone, without its history: on a graph-driver
/// store the inspect `Size` (`total`) is the sum of the chain's diff sizes (measured on Docker
/// 20.10 and 26.1), so when every layer's size but at most one is `known` (learned from an
/// earlier image's history: a chain ID names one layer and its size for good), the missing one
/// is the difference. `None` when two or more are unknown, or when the figures do not add up
/// (an engine whose `Size` is not that sum): the caller then reads the history.
pub fn layers_from_known(
    diff_ids: &[String],
    total: u64,
    known: impl Fn(&str) -> Option<u64>,
) -> Option<Vec<Layer>> {
    let chains = chain_ids(diff_ids);
    if chains.is_empty() {
        return None;
    }
    let sizes: Vec<Option<u64>> = chains.iter().map(|c| known(c)).collect();
    let known_sum = sizes
        .iter()
        .flatten()
        .try_fold(0u64, |t, s| t.checked_add(*s))?;
    let missing = sizes.iter().filter(|s| s.is_none()).count();
    let rest = total.checked_sub(known_sum)?;
    if !(missing == 1 || (missing == 0 && rest == 0)) {
        return None;
    }
    Some(
        chains
            .into_iter()
            .zip(sizes)
            .map(|(chain_id, size)| Layer {
                chain_id,
                size: size.unwrap_or(rest),
            })
            .collect(),
    )
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An image's layers with their sizes, and whether those sizes are certain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayers {
    /// Bottom layer first.
    pub layers: Vec<Layer>,
    /// False when the history could not be matched to the layers one to one
    /// (no history, or zero-byte steps that could be layers or metadata); the
    /// byte figures of such an image may then be off and are flagged.
    pub exact: bool,
}

/// Pair the history's layer-making steps with the diff IDs, oldest first.
///
/// The API does not say which history steps made a layer. Steps with bytes
/// always did; when there are more steps than layers, the zero-byte steps that
/// look like metadata (`#(nop)` without ADD/COPY, ENV, LABEL, …) are taken as
/// empty first. Only zero-byte layers can be misplaced, so a wrong guess can
/// shift sizes only when a zero-byte layer sits between layers with bytes.
pub fn image_layers(details: &ImageDetails) -> ImageLayers {
    let chains = chain_ids(&details.diff_ids);
    let sizes = match_history(&details.history, chains.len());
    let exact = sizes.is_some();
    let sizes = sizes.unwrap_or_else(|| best_effort_sizes(&details.history, chains.len()));
    let layers = chains
        .into_iter()
        .zip(sizes)
        .map(|(chain_id, size)| Layer { chain_id, size })
        .collect();
    ImageLayers { layers, exact }
}

/// Sizes per layer when the history determines them without guessing.
fn match_history(history: &[HistoryEntry], layers: usize) -> Option<Vec<u64>> {
    if history.len() == layers {
        return Some(history.iter().map(|h| h.size).collect());
    }
    let non_zero: Vec<u64> = history.iter().map(|h| h.size).filter(|s| *s > 0).collect();
    if non_zero.len() == layers {
        return Some(non_zero);
    }
    // Zero-byte steps: decide by how the step reads. Certain only when the
    // count of layer-looking steps is exactly right.
    let picked: Vec<u64> = history
        .iter()
        .filter(|h| h.size > 0 || !looks_like_metadata(&h.created_by))
        .map(|h| h.size)
        .collect();
    (picked.len() == layers).then_some(picked)
}

/// A guess that keeps every byte-carrying step and pads or trims zero-byte ones.
fn best_effort_sizes(history: &[HistoryEntry], layers: usize) -> Vec<u64> {
    let mut sizes: Vec<u64> = history.iter().map(|h| h.size).filter(|s| *s > 0).collect();
    sizes.resize(layers, 0);
    sizes
}

fn looks_like_metadata(created_by: &str) -> bool {
    const META: [&str; 13] = [
        "ENV",
        "LABEL",
        "CMD",
        "ENTRYPOINT",
        "EXPOSE",
        "WORKDIR",
        "USER",
        "ARG",
        "VOLUME",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
        "MAINTAINER",
    ];
    let text = created_by.trim();
    if text.contains("#(nop)") {
        let rest = text.split("#(nop)").nth(1).unwrap_or("").trim_start();
        return !(rest.starts_with("ADD") || rest.starts_with("COPY"));
    }
    let first = text.split_whitespace().next().unwrap_or("");
    META.contains(&first) || text.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_of_one_layer_is_its_diff_id_and_later_ones_hash_the_pair() {
        let d = vec!["sha256:aaaa".to_string(), "sha256:bbbb".to_string()];
        let c = chain_ids(&d);
        assert_eq!(c[0], "sha256:aaaa");
        let expected = format!(
            "sha256:{}",
            hex(&Sha256::digest(b"sha256:aaaa sha256:bbbb"))
        );
        assert_eq!(c[1], expected);
    }

    #[test]
    fn known_chain_id_matches_the_engines() {
        // Chain ID of a two-layer stack computed by the moby layer package.
        let d = vec![
            "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef".to_string(),
            "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef".to_string(),
        ];
        let c = chain_ids(&d);
        let manual = Sha256::digest(format!("{} {}", d[0], d[1]).as_bytes());
        assert_eq!(c[1], format!("sha256:{}", hex(&manual)));
        assert_eq!(c[1].len(), 71);
    }

    fn entry(size: u64, created_by: &str) -> HistoryEntry {
        HistoryEntry {
            size,
            created_by: created_by.to_string(),
        }
    }

    #[test]
    fn metadata_steps_are_skipped_when_pairing_history_with_layers() {
        let details = ImageDetails {
            diff_ids: vec!["sha256:a".into(), "sha256:b".into(), "sha256:c".into()],
            history: vec![
                entry(100, "/bin/sh -c #(nop) ADD file:x in /"),
                entry(0, "/bin/sh -c #(nop)  CMD [\"sh\"]"),
                entry(0, "/bin/sh -c true"),
                entry(0, "ENV A=b"),
                entry(7, "RUN make"),
            ],
            last_tag_time: None,
        };
        let got = image_layers(&details);
        assert!(got.exact);
        let sizes: Vec<u64> = got.layers.iter().map(|l| l.size).collect();
        assert_eq!(sizes, vec![100, 0, 7]);
    }

    fn diffs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("sha256:{i:064x}")).collect()
    }

    #[test]
    fn a_single_layer_is_the_whole_size_without_history() {
        let layers = layers_from_known(&diffs(1), 300_000, |_| None).expect("one unknown");
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].chain_id, diffs(1)[0]);
        assert_eq!(layers[0].size, 300_000);
    }

    #[test]
    fn the_one_unknown_layer_is_the_difference_from_the_known_ones() {
        let d = diffs(3);
        let chains = chain_ids(&d);
        let (bottom, top) = (chains[0].clone(), chains[2].clone());
        let known = |c: &str| match c {
            _ if c == bottom => Some(100),
            _ if c == top => Some(7),
            _ => None,
        };
        let layers = layers_from_known(&d, 1_000, known).expect("one unknown");
        let sizes: Vec<u64> = layers.iter().map(|l| l.size).collect();
        assert_eq!(sizes, vec![100, 893, 7]);
        assert_eq!(
            layers
                .iter()
                .map(|l| l.chain_id.clone())
                .collect::<Vec<_>>(),
            chains
        );
    }

    #[test]
    fn the_history_is_needed_when_two_are_unknown_or_the_sum_is_off() {
        let d = diffs(2);
        assert_eq!(layers_from_known(&d, 1_000, |_| None), None);
        // Known more than the total: not the sum this rule relies on.
        assert_eq!(layers_from_known(&d, 10, |_| Some(20)), None);
        // All known, but they do not add up to the total.
        assert_eq!(layers_from_known(&d, 50, |_| Some(20)), None);
        assert_eq!(
            layers_from_known(&d, 40, |_| Some(20)).map(|l| l.len()),
            Some(2)
        );
        assert_eq!(layers_from_known(&[], 0, |_| None), None);
        // A sum that overflows is not trusted either.
        assert_eq!(layers_from_known(&d, u64::MAX, |_| Some(u64::MAX)), None);
    }

    #[test]
    fn known_layers_stay_bounded() {
        let mut known = KnownLayers::default();
        let layer = |i: usize| Layer {
            chain_id: format!("sha256:{i:064x}"),
            size: i as u64,
        };
        let many: Vec<Layer> = (0..=KnownLayers::CAPACITY).map(layer).collect();
        known.learn(&many);
        assert!(known.len() <= KnownLayers::CAPACITY);
        // The newest is remembered, with its size.
        assert_eq!(
            known.get(&layer(KnownLayers::CAPACITY).chain_id),
            Some(KnownLayers::CAPACITY as u64)
        );
        known.learn(&[layer(3)]);
        assert_eq!(known.get(&layer(3).chain_id), Some(3));
    }

    #[test]
    fn missing_history_gives_inexact_sizes_without_panicking() {
        let details = ImageDetails {
            diff_ids: vec!["sha256:a".into(), "sha256:b".into()],
            history: vec![],
            last_tag_time: None,
        };
        let got = image_layers(&details);
        assert!(!got.exact);
        assert_eq!(got.layers.len(), 2);
    }
}
