//! What removing an image frees on each store behind the Docker API, as image facts the ledger
//! can replay: the layers (by chain ID) and the content blobs beside them.
//!
//! Measured on Docker 26.1.5 (API 1.45) and Podman 4.3.1 (`docs/ENGINES.md`, "What a removal
//! frees on each store"):
//! - **Graph driver**: a layer's history size is its diff size and the removal's answer lists
//!   the deleted chain IDs: layers only, no blobs ([`layers::image_facts`]).
//! - **Containerd store**: a removal frees the image's unpacked snapshots (one per chain ID) and
//!   its content blobs (layer blobs, config, manifest) that no remaining image holds. History
//!   sizes are the snapshots' usage (`du`-like, measured equal); the inspect `Size` is the
//!   content total (every blob of the image). The API (< 1.47) gives no per-layer blob size, so
//!   the content total is split over the layers in proportion to their snapshot usage, keyed
//!   by diff ID (the same uncompressed layer is one blob on one store), the rounding remainder
//!   kept by the image itself (key: its ID, the manifest digest). Those shares are flagged
//!   estimated ([`Blob::exact`] false): an image none of whose blobs another image holds frees
//!   their sum, the exact content total; one sharing a layer frees an estimated part of it.
//! - **Podman**: history sizes are the layers' tar sizes (what containers/storage records, not
//!   the unpacked files' blocks); the inspect `Size` is their sum plus the config and manifest,
//!   which are the image's own content. Exact as the engine's figures, estimated as disk bytes:
//!   the facts say `sizes_exact: false`.
//!
//! The blobs are extra entries, not layers: chain prefixes drive parents and build use, and
//! stay untouched.

use crate::engine::{Blob, ImageFacts};

use super::flavor::Flavor;
use super::layers::{self, ImageDetails};

/// The key of the content an image holds alone (config, manifest, index): its ID.
fn own_key(image_id: &str) -> String {
    format!("image:{image_id}")
}

/// The key of a layer's content blob, by the layer's diff ID.
fn layer_blob_key(diff_id: &str) -> String {
    format!("layer-blob:{diff_id}")
}

/// The facts of image `image_id` on a store of `flavor`, from its inspect and history
/// (`details`) and the inspect's `Size` (`content_size`; `None` when the engine gave none or a
/// negative one).
pub fn image_facts(
    flavor: Flavor,
    image_id: &str,
    details: &ImageDetails,
    content_size: Option<u64>,
) -> ImageFacts {
    let mut facts = layers::image_facts(details);
    match flavor {
        Flavor::GraphDriver => {}
        Flavor::ContainerdStore => match content_size {
            Some(total) => facts.blobs = containerd_blobs(image_id, details, &facts, total),
            None => facts.sizes_exact = false,
        },
        Flavor::Podman => {
            let layers = facts
                .layers
                .iter()
                .fold(0u64, |t, l| t.saturating_add(l.size));
            if let Some(total) = content_size {
                facts.blobs.push(Blob {
                    key: own_key(image_id),
                    size: total.saturating_sub(layers),
                    exact: true,
                });
            }
            // Tar sizes, not the unpacked files' blocks on disk.
            facts.sizes_exact = false;
        }
    }
    facts
}

/// The containerd store's content blobs of one image: `total` split over its layers in
/// proportion to their snapshot usage, the remainder the image's own.
fn containerd_blobs(
    image_id: &str,
    details: &ImageDetails,
    facts: &ImageFacts,
    total: u64,
) -> Vec<Blob> {
    let usage: u128 = facts.layers.iter().map(|l| u128::from(l.size)).sum();
    let mut blobs = Vec::with_capacity(facts.layers.len() + 1);
    let mut given = 0u64;
    if usage > 0 && details.diff_ids.len() == facts.layers.len() {
        for (diff, layer) in details.diff_ids.iter().zip(&facts.layers) {
            // At most `total`: the product fits in u128 and the quotient in u64.
            let share =
                u64::try_from(u128::from(total) * u128::from(layer.size) / usage).unwrap_or(total);
            given = given.saturating_add(share);
            if let Some(same) = blobs
                .iter_mut()
                .find(|b: &&mut Blob| b.key == layer_blob_key(diff))
            {
                // One layer twice in an image is one blob.
                same.size = same.size.saturating_add(share);
            } else {
                blobs.push(Blob {
                    key: layer_blob_key(diff),
                    size: share,
                    exact: false,
                });
            }
        }
    }
    blobs.push(Blob {
        key: own_key(image_id),
        size: total.saturating_sub(given),
        exact: blobs.is_empty(),
    });
    blobs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::docker::layers::HistoryEntry;

    fn details(diffs: &[&str], sizes: &[u64]) -> ImageDetails {
        ImageDetails {
            diff_ids: diffs.iter().map(|d| (*d).to_owned()).collect(),
            history: sizes
                .iter()
                .map(|&size| HistoryEntry {
                    size,
                    created_by: "COPY x /".to_owned(),
                })
                .collect(),
            last_tag_time: None,
        }
    }

    fn sum(facts: &ImageFacts) -> u64 {
        facts.layers.iter().map(|l| l.size).sum::<u64>()
            + facts.blobs.iter().map(|b| b.size).sum::<u64>()
    }

    #[test]
    fn a_graph_driver_image_is_its_layers_only() {
        let d = details(&["sha256:a"], &[500_000]);
        let facts = image_facts(Flavor::GraphDriver, "sha256:i", &d, Some(500_726));
        assert!(facts.blobs.is_empty());
        assert!(facts.sizes_exact);
        assert_eq!(sum(&facts), 500_000);
    }

    /// Recorded on Docker 26.1.5 with the containerd store: an image of one 500,000-byte file
    /// (`GET /images/{id}/json` `Size` 502,486, history 507,904; list `Size` 1,010,390, the
    /// disk dropped 1,032,192 on its removal).
    #[test]
    fn a_containerd_image_frees_its_snapshots_and_its_whole_content() {
        let d = details(&["sha256:f404"], &[507_904]);
        let id = "sha256:6be9";
        let facts = image_facts(Flavor::ContainerdStore, id, &d, Some(502_486));
        assert_eq!(sum(&facts), 1_010_390, "the image list's Size");
        assert_eq!(facts.layers[0].size, 507_904);
        assert_eq!(facts.blobs.len(), 2);
        assert!(facts.sizes_exact);
    }

    /// Recorded on the containerd store: two images on one 300,000-byte base layer (snapshot
    /// 307,200), tops of 200,000 and 100,000 bytes (204,800 and 106,496), content totals
    /// 513,021 and 410,621.
    #[test]
    fn containerd_images_sharing_a_base_name_one_blob_for_it_and_shares_are_estimates() {
        let s1 = details(&["sha256:base", "sha256:s1"], &[307_200, 204_800]);
        let s2 = details(&["sha256:base", "sha256:s2"], &[307_200, 106_496]);
        let f1 = image_facts(Flavor::ContainerdStore, "sha256:i1", &s1, Some(513_021));
        let f2 = image_facts(Flavor::ContainerdStore, "sha256:i2", &s2, Some(410_621));
        assert_eq!(f1.blobs[0].key, f2.blobs[0].key, "one base blob");
        assert_ne!(f1.blobs[1].key, f2.blobs[1].key);
        assert!(f1.blobs.iter().take(2).all(|b| !b.exact));
        assert_eq!(sum(&f1), 307_200 + 204_800 + 513_021);
        // The base's share is about the base's blob (307,200 B of tar): within 1%.
        let base = f1.blobs[0].size;
        assert!(base.abs_diff(307_200) * 100 <= 307_200, "{base}");
    }

    #[test]
    fn a_containerd_image_without_a_content_size_is_flagged_estimated() {
        let d = details(&["sha256:a"], &[4096]);
        let facts = image_facts(Flavor::ContainerdStore, "sha256:i", &d, None);
        assert!(!facts.sizes_exact);
        assert!(facts.blobs.is_empty());
    }

    #[test]
    fn absurd_containerd_sizes_saturate_instead_of_wrapping() {
        let d = details(&["sha256:a", "sha256:b"], &[u64::MAX, u64::MAX]);
        let facts = image_facts(Flavor::ContainerdStore, "sha256:i", &d, Some(u64::MAX));
        let content: u128 = facts.blobs.iter().map(|b| u128::from(b.size)).sum();
        assert_eq!(
            content,
            u128::from(u64::MAX),
            "the shares add up to the content total"
        );
        assert_eq!(facts.blobs.len(), 3);
    }

    /// Recorded on Podman 4.3.1: one 500,000-byte file, history (tar size) 501,760, inspect
    /// `Size` 502,917.
    #[test]
    fn a_podman_image_is_its_tar_sizes_plus_its_config_and_manifest_flagged_estimated() {
        let d = details(&["sha256:9101"], &[501_760]);
        let facts = image_facts(Flavor::Podman, "sha256:a8f7", &d, Some(502_917));
        assert_eq!(sum(&facts), 502_917);
        assert_eq!(facts.blobs.len(), 1);
        assert_eq!(facts.blobs[0].size, 1_157);
        assert!(facts.blobs[0].exact);
        assert!(!facts.sizes_exact, "tar sizes, not blocks on disk");
    }
}
