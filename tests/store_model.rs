//! The store model (`engine/docker/store.rs`) replayed by the ledger: what removing an image
//! frees on Docker's containerd image store and on Podman, from answers recorded on those
//! engines (`docs/ENGINES.md`, "What a removal frees on each store"). The matrix scenario
//! `bytes` checks the same against the engines' disks.
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::DateTime;

use imagegc::engine::docker::flavor::Flavor;
use imagegc::engine::docker::layers::{HistoryEntry, ImageDetails};
use imagegc::engine::docker::store;
use imagegc::engine::ImageSummary;
use imagegc::gc::ledger::Ledger;
use imagegc::inventory::{ImageInput, Snapshot, Tracked};

/// An image as a store of `flavor` answers for it: diff IDs and history sizes bottom
/// first, the inspect's `Size`.
fn image(
    flavor: Flavor,
    id: &str,
    tags: &[&str],
    layers: &[(&str, u64)],
    content: u64,
) -> ImageInput {
    let details = ImageDetails {
        diff_ids: layers.iter().map(|(d, _)| (*d).to_owned()).collect(),
        history: layers
            .iter()
            .map(|&(_, size)| HistoryEntry {
                size,
                created_by: "COPY x /".to_owned(),
            })
            .collect(),
        last_tag_time: None,
    };
    ImageInput {
        summary: ImageSummary {
            id: id.to_owned(),
            parent_id: None,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            digests: Vec::new(),
            created: DateTime::UNIX_EPOCH,
            labels: BTreeMap::new(),
        },
        facts: Arc::new(store::image_facts(flavor, id, &details, Some(content))),
        tracked: Tracked::default(),
    }
}

/// The images measured on Docker 26.1.5's containerd store (`docs/ENGINES.md`): history
/// sizes are snapshot usage, `Size` the content total.
fn containerd_world() -> Snapshot {
    let cs = Flavor::ContainerdStore;
    Snapshot::build(
        vec![
            image(cs, "sha256:u", &["u:1"], &[("sha256:du", 507_904)], 502_486),
            image(
                cs,
                "sha256:s1",
                &["s1:1"],
                &[("sha256:base", 307_200), ("sha256:d1", 204_800)],
                513_021,
            ),
            image(
                cs,
                "sha256:s2",
                &["s2:1"],
                &[("sha256:base", 307_200), ("sha256:d2", 106_496)],
                410_621,
            ),
            image(
                cs,
                "sha256:m",
                &["m:1", "m:2"],
                &[("sha256:dm", 155_648)],
                154_326,
            ),
        ],
        Vec::new(),
        None,
    )
}

#[test]
fn a_containerd_image_sharing_nothing_frees_the_image_lists_size_exactly() {
    let snap = containerd_world();
    let mut ledger = Ledger::new(&snap);
    let effect = ledger.remove_reference(0);
    // The list's `Size` said 1,010,390; the disk dropped 1,032,192 (metadata).
    assert_eq!(effect.freed, 1_010_390);
    assert!(!effect.estimated);
    assert_eq!(ledger.freed_layer_bytes(), 1_010_390);
}

#[test]
fn a_containerd_image_on_a_shared_base_frees_its_own_snapshot_and_blobs_flagged_estimated() {
    let snap = containerd_world();
    let mut ledger = Ledger::new(&snap);
    let first = ledger.remove_reference(1);
    // Measured: the disk dropped 425,984 (snapshot 204,800 + blob 204,800 + config and
    // manifest + metadata). The model: the snapshot and the top layer's share.
    assert!(first.estimated, "a share of a shared image's content");
    assert!(
        first.freed.abs_diff(204_800 + 204_800) * 100 <= 409_600,
        "{}",
        first.freed
    );
    let second = ledger.remove_reference(2);
    // Measured 847,872: both snapshots of s2 (base included) and its blobs.
    assert!(second.estimated);
    let want = 307_200 + 106_496 + 410_621;
    assert!(
        second.freed.abs_diff(want) * 100 <= want,
        "{}",
        second.freed
    );
}

#[test]
fn a_containerd_image_goes_with_its_last_tag_and_only_then_frees_its_blobs() {
    let snap = containerd_world();
    let mut ledger = Ledger::new(&snap);
    assert_eq!(ledger.remove_reference(3).freed, 0, "measured: 0 on disk");
    let last = ledger.remove_reference(3);
    // The list's `Size` 309,974; the disk dropped 327,680.
    assert_eq!(last.freed, 309_974);
    assert!(!last.estimated);
}

#[test]
fn a_podman_removal_frees_its_tar_sizes_and_its_config_flagged_estimated() {
    let snap = Snapshot::build(
        vec![image(
            Flavor::Podman,
            "sha256:p",
            &["localhost/u:1"],
            &[("sha256:dp", 501_760)],
            502_917,
        )],
        Vec::new(),
        None,
    );
    let mut ledger = Ledger::new(&snap);
    let effect = ledger.remove_reference(0);
    // The disk dropped 552,960: the unpacked file's blocks and the store's records.
    assert_eq!(effect.freed, 502_917);
    assert!(effect.estimated, "tar sizes, not blocks on disk");
    assert_eq!(snap.image_bytes(), 502_917);
}

#[test]
fn the_prediction_does_not_depend_on_the_order_the_engine_lists_images_in() {
    let snap = containerd_world();
    let reversed = Snapshot::build(
        {
            let cs = Flavor::ContainerdStore;
            vec![
                image(
                    cs,
                    "sha256:s2",
                    &["s2:1"],
                    &[("sha256:base", 307_200), ("sha256:d2", 106_496)],
                    410_621,
                ),
                image(
                    cs,
                    "sha256:s1",
                    &["s1:1"],
                    &[("sha256:base", 307_200), ("sha256:d1", 204_800)],
                    513_021,
                ),
            ]
        },
        Vec::new(),
        None,
    );
    let mut forward = Ledger::new(&snap);
    let mut backward = Ledger::new(&reversed);
    // s1 then s2 in both: indices 1, 2 in the first snapshot, 1, 0 in the second.
    let a = (
        forward.remove_reference(1).freed,
        forward.remove_reference(2).freed,
    );
    let b = (
        backward.remove_reference(1).freed,
        backward.remove_reference(0).freed,
    );
    assert_eq!(a, b);
}
