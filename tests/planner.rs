//! The planner, pinned: one unit case per rule of DESIGN.md ("Policy
//! semantics", the safety invariants, exact space accounting), then property
//! tests that check the invariants over random snapshots and policies.
//!
//! Everything here is pure: policies and snapshots are built in memory and
//! `plan` runs at the fixed instant `support::now()`.

mod support;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;

use chrono::{DateTime, TimeDelta, Utc};
use imagegc::engine::{Capabilities, DiskUsage};
use imagegc::plan::{plan, KeptBecause, Note, Plan, Reason, Removal};
use imagegc::policy::{Policy, Rule, Threshold};
use imagegc::snapshot::{LastUsedSource, Snapshot};
use proptest::prelude::*;
use support::{
    ago, container, glob, id, img, label, now, policy, rule, secs, snapshot, snapshot_on_disk, Img,
    DAY, HOUR, MINUTE,
};

/// What the plan passes to the engine, in order.
fn targets(plan: &Plan) -> Vec<&str> {
    plan.removals.iter().map(Removal::target).collect()
}

fn sorted(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_unstable();
    v
}

/// Why `reference` (or the untagged image `image`) was kept, if it was.
fn kept_reason<'p>(
    plan: &'p Plan,
    reference: Option<&str>,
    image: &str,
) -> Option<&'p KeptBecause> {
    plan.kept
        .iter()
        .find(|k| k.image_id == image && k.reference.as_deref() == reference)
        .map(|k| &k.reason)
}

fn removal<'p>(plan: &'p Plan, target: &str) -> &'p Removal {
    plan.removals
        .iter()
        .find(|r| r.target() == target)
        .unwrap_or_else(|| panic!("{target} is not in the plan: {:?}", targets(plan)))
}

/// A filesystem of 10 000 bytes with `used` in use.
fn disk(used: u64) -> DiskUsage {
    DiskUsage {
        total_bytes: 10_000,
        used_bytes: used,
        ..DiskUsage::default()
    }
}

// ---------------------------------------------------------------------------
// Grace period.

#[test]
fn dangling_images_older_than_min_age_are_removed_and_younger_ones_kept() {
    let mut p = policy(vec![rule("dangling")
        .dangling(true)
        .older_than(secs(HOUR))
        .build()]);
    p.safety.min_age = secs(2 * HOUR);
    let snap = snapshot(
        &[
            img("old", 3 * HOUR).layer("old", 100),
            img("young", 90 * MINUTE).layer("young", 100),
            img("tagged", 30 * DAY)
                .tags(&["app:1"])
                .layer("tagged", 100),
        ],
        vec![],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec![id("old")]);
    assert_eq!(planned.removals[0].policy, "dangling");
    assert_eq!(planned.reclaim_bytes, 100);
    let why = kept_reason(&planned, None, &id("young")).expect("the young image is kept");
    assert!(matches!(why, KeptBecause::TooYoung { .. }), "{why:?}");
}

#[test]
fn grace_period_counts_from_first_seen_so_an_old_image_pulled_minutes_ago_is_kept() {
    let p = policy(vec![rule("dangling")
        .dangling(true)
        .older_than(secs(HOUR))
        .build()]);
    let snap = snapshot(
        &[
            img("just-pulled", 30 * DAY)
                .first_seen(ago(5 * MINUTE))
                .layer("a", 1),
            img("pulled-yesterday", 30 * DAY)
                .first_seen(ago(DAY))
                .layer("b", 1),
            img("there-before-tracking", 30 * DAY).layer("c", 1),
        ],
        vec![],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(
        targets(&planned),
        vec![id("pulled-yesterday"), id("there-before-tracking")]
    );
    let why = kept_reason(&planned, None, &id("just-pulled")).expect("kept");
    assert!(
        matches!(
            why,
            KeptBecause::TooYoung {
                since: "first seen",
                ..
            }
        ),
        "{why:?}"
    );
}

// ---------------------------------------------------------------------------
// Safety rules.

#[test]
fn an_image_used_by_a_container_in_any_state_is_never_removed_and_the_reason_names_the_container() {
    let states = [
        "created",
        "running",
        "exited",
        "paused",
        "dead",
        "restarting",
        "removing",
    ];
    for state in states {
        let p = policy(vec![rule("everything").older_than(secs(DAY)).build()]);
        let builder = container("builder", "tagged", state);
        let runner = container("runner", "untagged", state);
        let snap = snapshot(
            &[
                img("tagged", 30 * DAY)
                    .tags(&["app:1", "app:2"])
                    .layer("t", 10),
                img("untagged", 30 * DAY).layer("u", 10),
                img("free", 30 * DAY).tags(&["app:3"]).layer("f", 10),
            ],
            vec![builder.clone(), runner.clone()],
        );

        let planned = plan(&p, &snap, now());

        assert_eq!(targets(&planned), vec!["app:3"], "container state {state}");
        for (reference, image, user) in [
            (Some("app:1"), "tagged", &builder),
            (Some("app:2"), "tagged", &builder),
            (None, "untagged", &runner),
        ] {
            let why = kept_reason(&planned, reference, &id(image))
                .unwrap_or_else(|| panic!("{reference:?} of {image} is kept ({state})"));
            assert_eq!(
                why,
                &KeptBecause::InUse {
                    container: user.id.clone(),
                    state: state.to_string(),
                }
            );
        }
    }
}

#[test]
fn a_protect_glob_keeps_a_reference_and_the_reason_names_the_glob() {
    let mut p = policy(vec![rule("everything").older_than(secs(DAY)).build()]);
    p.safety.protect = vec![glob("base/*")];
    let snap = snapshot(
        &[
            img("os", 30 * DAY)
                .tags(&["base/os:1", "app:1"])
                .layer("os", 500),
            img("nested", 30 * DAY)
                .tags(&["base/x/os:1"])
                .layer("nested", 7),
        ],
        vec![],
    );

    let planned = plan(&p, &snap, now());

    // `*` does not cross `/`: base/x/os is not protected by base/*.
    assert_eq!(sorted(targets(&planned)), vec!["app:1", "base/x/os:1"]);
    assert!(!removal(&planned, "app:1").deletes_image);
    assert_eq!(planned.reclaim_bytes, 7);
    let why = kept_reason(&planned, Some("base/os:1"), &id("os")).expect("kept");
    assert_eq!(
        why,
        &KeptBecause::ProtectGlob {
            pattern: "base/*".into()
        }
    );
}

/// `docker pull base/os@sha256:…` leaves an image with no tag and one digest
/// reference; removing it by ID removes that reference.
#[test]
fn a_protect_glob_keeps_an_image_pulled_by_digest_only() {
    let mut p = policy(vec![rule("dangling")
        .dangling(true)
        .older_than(secs(HOUR))
        .build()]);
    p.safety.protect = vec![glob("base/*")];
    let snap = snapshot(
        &[
            img("pinned", 10 * DAY)
                .digests(&["base/os@sha256:0123abcd"])
                .layer("p", 100),
            img("unpinned", 10 * DAY)
                .digests(&["ci/app@sha256:4567abcd"])
                .layer("u", 100),
        ],
        vec![],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec![id("unpinned")]);
    let why = kept_reason(&planned, None, &id("pinned")).expect("kept");
    assert_eq!(
        why,
        &KeptBecause::ProtectGlob {
            pattern: "base/*".into()
        }
    );
}

/// Pulled as `ubuntu@sha256:…`, then tagged `ci/app:1`: removing the tag
/// leaves the digest of the other repository, so the engine keeps the image
/// (untagged). It frees nothing until a dangling policy removes it by ID.
#[test]
fn a_digest_of_another_repository_keeps_the_image_after_its_last_tag_goes() {
    let only_tags = policy(vec![rule("stale")
        .repositories(&["ci/*"])
        .older_than(secs(DAY))
        .build()]);
    let with_dangling = policy(vec![
        rule("stale")
            .repositories(&["ci/*"])
            .older_than(secs(DAY))
            .build(),
        rule("dangling")
            .dangling(true)
            .older_than(secs(HOUR))
            .build(),
    ]);
    let snap = snapshot(
        &[img("pulled", 10 * DAY)
            .tags(&["ci/app:1"])
            .digests(&["ubuntu@sha256:0123abcd"])
            .layer("p", 100)],
        vec![],
    );

    let planned = plan(&only_tags, &snap, now());
    assert_eq!(targets(&planned), vec!["ci/app:1"]);
    assert_eq!(planned.reclaim_bytes, 0, "the digest keeps the image");
    assert!(!planned.removals[0].deletes_image);

    let planned = plan(&with_dangling, &snap, now());
    assert_eq!(
        targets(&planned),
        vec!["ci/app:1".to_string(), id("pulled")]
    );
    assert_eq!(planned.removals[1].policy, "dangling");
    assert_eq!(planned.reclaim_bytes, 100);
}

/// A digest of the same repository goes with the last tag, as the engine
/// drops it: the image is deleted by the tag removal.
#[test]
fn a_digest_of_the_same_repository_goes_with_the_last_tag() {
    let p = policy(vec![rule("stale")
        .repositories(&["ci/*"])
        .older_than(secs(DAY))
        .build()]);
    let snap = snapshot(
        &[img("pushed", 10 * DAY)
            .tags(&["ci/app:1"])
            .digests(&["ci/app@sha256:0123abcd"])
            .layer("p", 100)],
        vec![],
    );
    let planned = plan(&p, &snap, now());
    assert_eq!(targets(&planned), vec!["ci/app:1"]);
    assert_eq!(planned.reclaim_bytes, 100);
}

#[test]
fn a_protect_label_keeps_every_reference_of_the_image() {
    let mut p = policy(vec![rule("everything").older_than(secs(DAY)).build()]);
    p.safety.protect_labels = vec![label("keep"), label("tier=prod")];
    let snap = snapshot(
        &[
            img("kept", 30 * DAY)
                .tags(&["a:1", "b:1"])
                .label("keep", "")
                .layer("k", 1),
            img("prod", 30 * DAY).label("tier", "prod").layer("p", 1),
            img("dev", 30 * DAY)
                .tags(&["c:1"])
                .label("tier", "dev")
                .layer("d", 1),
        ],
        vec![],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["c:1"]);
    for (reference, image, matched) in [
        (Some("a:1"), "kept", "keep"),
        (Some("b:1"), "kept", "keep"),
        (None, "prod", "tier=prod"),
    ] {
        let why = kept_reason(&planned, reference, &id(image)).expect("kept");
        assert_eq!(
            why,
            &KeptBecause::ProtectLabel {
                label: matched.into()
            }
        );
    }
}

#[test]
fn max_removals_per_run_caps_the_removals_and_keeps_the_rest_with_that_reason() {
    let mut p = policy(vec![rule("dangling")
        .dangling(true)
        .older_than(secs(HOUR))
        .build()]);
    let two = NonZeroUsize::new(2).expect("2 is not zero");
    p.safety.max_removals_per_run = Some(two);
    let images: Vec<Img> = (0..5)
        .map(|n| img(&format!("d{n}"), 2 * DAY).layer(&format!("l{n}"), 10))
        .collect();
    let snap = snapshot(&images, vec![]);

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec![id("d0"), id("d1")]);
    assert_eq!(planned.kept.len(), 3);
    for n in 2..5 {
        let why = kept_reason(&planned, None, &id(&format!("d{n}"))).expect("kept");
        assert_eq!(why, &KeptBecause::RemovalLimit { max: two });
    }
    assert!(
        planned.notes.contains(&Note::RemovalLimit { max: two }),
        "{:?}",
        planned.notes
    );
}

// ---------------------------------------------------------------------------
// keep_most_recent.

#[test]
fn keep_most_recent_two_of_six_tags_removes_exactly_the_four_oldest() {
    let p = policy(vec![rule("ci")
        .repositories(&["ci/app"])
        .keep_most_recent(2)
        .build()]);
    let images: Vec<Img> = (1..=6)
        .map(|n| {
            img(&format!("v{n}"), (70 - 10 * n) * DAY)
                .tags(&[&format!("ci/app:v{n}")])
                .layer(&format!("v{n}"), 1)
        })
        .collect();
    let snap = snapshot(&images, vec![]);

    let planned = plan(&p, &snap, now());

    assert_eq!(
        sorted(targets(&planned)),
        vec!["ci/app:v1", "ci/app:v2", "ci/app:v3", "ci/app:v4"]
    );
    for r in &planned.removals {
        assert!(
            matches!(
                r.reason.0.as_slice(),
                [Reason::NotAmongNewest { n: 2, repository }] if repository == "ci/app"
            ),
            "{:?}",
            r.reason
        );
    }
}

/// Two images created at the same instant rank by tag name; the one whose
/// tag sorts last counts as the newer (v5 over v4).
#[test]
fn keep_most_recent_breaks_created_time_ties_by_tag_name_keeping_the_higher_name() {
    let p = policy(vec![rule("ci")
        .repositories(&["ci/app"])
        .keep_most_recent(2)
        .build()]);
    let created = [60, 50, 40, 20, 20, 10];
    let images: Vec<Img> = (1..=6)
        .map(|n| {
            img(&format!("v{n}"), created[n - 1] * DAY)
                .tags(&[&format!("ci/app:v{n}")])
                .layer(&format!("v{n}"), 1)
        })
        .collect();
    let snap = snapshot(&images, vec![]);

    let planned = plan(&p, &snap, now());

    assert_eq!(
        sorted(targets(&planned)),
        vec!["ci/app:v1", "ci/app:v2", "ci/app:v3", "ci/app:v4"]
    );
}

#[test]
fn keep_most_recent_counts_per_repository() {
    let p = policy(vec![rule("ci")
        .repositories(&["ci/*"])
        .keep_most_recent(1)
        .build()]);
    let snap = snapshot(
        &[
            img("a1", 3 * DAY).tags(&["ci/a:1"]).layer("a1", 1),
            img("a2", 2 * DAY).tags(&["ci/a:2"]).layer("a2", 1),
            img("b1", 9 * DAY).tags(&["ci/b:1"]).layer("b1", 1),
        ],
        vec![],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["ci/a:1"]);
}

// ---------------------------------------------------------------------------
// References and exact bytes.

#[test]
fn an_image_tagged_twice_where_one_tag_matches_is_untagged_but_not_deleted() {
    let p = policy(vec![rule("ci")
        .repositories(&["ci/*"])
        .older_than(secs(DAY))
        .build()]);
    let snap = snapshot(
        &[img("shared", 10 * DAY)
            .tags(&["ci/app:1", "release/app:1"])
            .layer("base", 1000)
            .layer("app", 50)],
        vec![],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["ci/app:1"]);
    let r = &planned.removals[0];
    assert!(!r.deletes_image);
    assert_eq!(r.reclaim_bytes, 0);
    assert_eq!(planned.reclaim_bytes, 0);
}

#[test]
fn on_an_engine_that_deletes_whole_images_only_an_images_sole_reference_is_removed() {
    let p = policy(vec![rule("ci")
        .repositories(&["ci/*"])
        .older_than(secs(DAY))
        .build()]);
    let whole_image = Capabilities {
        untags_single_reference: false,
        ..Capabilities::DOCKER_20_10
    };
    let snap = snapshot(
        &[
            img("twice", 10 * DAY)
                .tags(&["ci/a:1", "ci/b:1"])
                .layer("l", 300),
            img("once", 10 * DAY).tags(&["ci/c:1"]).layer("m", 70),
        ],
        vec![],
    )
    .with_capabilities(whole_image);

    let planned = plan(&p, &snap, now());

    // Removing ci/a:1 would take ci/b:1 with it on such an engine: both are
    // kept, the sole reference of the other image goes, and the bytes follow.
    assert_eq!(targets(&planned), vec!["ci/c:1"]);
    assert_eq!(planned.reclaim_bytes, 70);
    for tag in ["ci/a:1", "ci/b:1"] {
        assert_eq!(
            kept_reason(&planned, Some(tag), &id("twice")),
            Some(&KeptBecause::WholeImage { references: 2 }),
            "{tag}"
        );
    }
    // The same snapshot on Docker, which untags one reference at a time,
    // removes all three references.
    let docker = plan(
        &p,
        &snap.with_capabilities(Capabilities::DOCKER_20_10),
        now(),
    );
    assert_eq!(targets(&docker), vec!["ci/a:1", "ci/b:1", "ci/c:1"]);
}

#[test]
fn an_image_whose_every_tag_is_removed_is_deleted_by_the_last_removal() {
    let p = policy(vec![rule("ci")
        .repositories(&["ci/*"])
        .older_than(secs(DAY))
        .build()]);
    let snap = snapshot(
        &[img("twice", 10 * DAY)
            .tags(&["ci/a:1", "ci/b:1"])
            .layer("l", 300)],
        vec![],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["ci/a:1", "ci/b:1"]);
    let deletes: Vec<(bool, u64)> = planned
        .removals
        .iter()
        .map(|r| (r.deletes_image, r.reclaim_bytes))
        .collect();
    assert_eq!(deletes, vec![(false, 0), (true, 300)]);
}

fn two_images_on_one_base() -> Vec<Img> {
    vec![
        img("a", 10 * DAY)
            .tags(&["ci/a:1"])
            .layer("base", 1000)
            .layer("a", 100),
        img("b", 10 * DAY)
            .tags(&["other/b:1"])
            .layer("base", 1000)
            .layer("b", 200),
    ]
}

#[test]
fn deleting_one_of_two_images_sharing_a_base_layer_frees_only_its_own_layer() {
    let p = policy(vec![rule("ci")
        .repositories(&["ci/*"])
        .older_than(secs(DAY))
        .build()]);
    let snap = snapshot(&two_images_on_one_base(), vec![]);

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["ci/a:1"]);
    assert!(planned.removals[0].deletes_image);
    assert_eq!(planned.removals[0].reclaim_bytes, 100);
    assert_eq!(planned.reclaim_bytes, 100);
}

#[test]
fn deleting_both_images_sharing_a_base_layer_frees_the_shared_layer_once() {
    let p = policy(vec![rule("all").older_than(secs(DAY)).build()]);
    let snap = snapshot(&two_images_on_one_base(), vec![]);

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["ci/a:1", "other/b:1"]);
    let bytes: Vec<u64> = planned.removals.iter().map(|r| r.reclaim_bytes).collect();
    assert_eq!(bytes, vec![100, 1200]);
    assert_eq!(planned.reclaim_bytes, 1300);
}

// ---------------------------------------------------------------------------
// Parents and children.

#[test]
fn a_child_is_removed_before_its_parent() {
    let p = policy(vec![rule("all").older_than(secs(DAY)).build()]);
    // The parent is listed first, so only the planner's ordering puts the
    // child first.
    let snap = snapshot(
        &[
            img("parent", 20 * DAY).tags(&["base/p:1"]).layer("p", 1000),
            img("child", 10 * DAY)
                .tags(&["app:1"])
                .parent("parent")
                .layer("p", 1000)
                .layer("c", 10),
        ],
        vec![],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["app:1", "base/p:1"]);
    assert!(planned.removals.iter().all(|r| r.deletes_image));
    assert_eq!(planned.reclaim_bytes, 1010);
}

#[test]
fn an_untagged_parent_that_still_has_a_child_is_not_a_candidate() {
    let p = policy(vec![rule("dangling")
        .dangling(true)
        .older_than(secs(HOUR))
        .build()]);
    let snap = snapshot(
        &[
            img("parent", 20 * DAY).layer("p", 1000),
            img("child", 10 * DAY)
                .tags(&["app:1"])
                .parent("parent")
                .layer("p", 1000)
                .layer("c", 10),
        ],
        vec![],
    );

    let planned = plan(&p, &snap, now());

    assert!(planned.removals.is_empty(), "{:?}", targets(&planned));
    assert!(planned.kept.is_empty(), "{:?}", planned.kept);
}

#[test]
fn removing_a_child_makes_its_untagged_parent_dangling_and_it_goes_after_the_child() {
    let p = policy(vec![
        rule("ci")
            .repositories(&["ci/*"])
            .older_than(secs(DAY))
            .build(),
        rule("dangling")
            .dangling(true)
            .older_than(secs(HOUR))
            .build(),
    ]);
    let snap = snapshot(
        &[
            img("grandparent", 30 * DAY).layer("g", 5000),
            img("parent", 20 * DAY)
                .parent("grandparent")
                .layer("g", 5000)
                .layer("p", 1000),
            img("child", 10 * DAY)
                .tags(&["ci/app:1"])
                .parent("parent")
                .layer("g", 5000)
                .layer("p", 1000)
                .layer("c", 10),
        ],
        vec![],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(
        targets(&planned),
        vec![
            "ci/app:1",
            id("parent").as_str(),
            id("grandparent").as_str()
        ]
    );
    let policies: Vec<&str> = planned.removals.iter().map(|r| r.policy.as_str()).collect();
    assert_eq!(policies, vec!["ci", "dangling", "dangling"]);
    let bytes: Vec<u64> = planned.removals.iter().map(|r| r.reclaim_bytes).collect();
    assert_eq!(bytes, vec![10, 1000, 5000]);
}

#[test]
fn an_untagged_parent_freed_by_its_child_still_waits_out_the_grace_period() {
    let p = policy(vec![
        rule("ci")
            .repositories(&["ci/*"])
            .older_than(secs(DAY))
            .build(),
        rule("dangling")
            .dangling(true)
            .older_than(secs(HOUR))
            .build(),
    ]);
    let snap = snapshot(
        &[
            img("parent", 20 * DAY)
                .first_seen(ago(10 * MINUTE))
                .layer("p", 1000),
            img("child", 10 * DAY)
                .tags(&["ci/app:1"])
                .parent("parent")
                .layer("p", 1000)
                .layer("c", 10),
        ],
        vec![],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["ci/app:1"]);
    let why = kept_reason(&planned, None, &id("parent")).expect("kept");
    assert!(matches!(why, KeptBecause::TooYoung { .. }), "{why:?}");
}

// ---------------------------------------------------------------------------
// Disk pressure.

/// Five old images of one unique layer each; their last use differs.
fn five_images_last_used_apart() -> Vec<Img> {
    // (name, bytes, last used days ago)
    let spec = [
        ("a", 1000, 10),
        ("b", 700, 5),
        ("c", 500, 3),
        ("d", 1500, 1),
        ("e", 300, 20),
    ];
    spec.iter()
        .map(|&(name, bytes, used)| {
            img(name, 60 * DAY)
                .tags(&[&format!("ci/{name}:1")])
                .last_event(ago(used * DAY))
                .layer(name, bytes)
        })
        .collect()
}

fn disk_rule() -> Rule {
    rule("pressure")
        .disk(Threshold::Ratio(0.85), Threshold::Ratio(0.70))
        .build()
}

#[test]
fn disk_pressure_does_nothing_below_disk_high_and_says_so() {
    let p = policy(vec![disk_rule()]);
    let snap = snapshot_on_disk(&five_images_last_used_apart(), vec![], disk(8_400));

    let planned = plan(&p, &snap, now());

    assert!(planned.removals.is_empty(), "{:?}", targets(&planned));
    assert!(
        planned.notes.iter().any(
            |n| matches!(n, Note::BelowDiskHigh { policy, high: Threshold::Ratio(h), .. }
                if policy == "pressure" && (h - 0.85).abs() < 1e-12)
        ),
        "{:?}",
        planned.notes
    );
}

#[test]
fn disk_pressure_removes_least_recently_used_first_and_stops_at_disk_low() {
    let p = policy(vec![disk_rule()]);
    // 90% used; freeing e (300), a (1000) and b (700) lands exactly on 70%.
    let snap = snapshot_on_disk(&five_images_last_used_apart(), vec![], disk(9_000));

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["ci/e:1", "ci/a:1", "ci/b:1"]);
    assert_eq!(planned.reclaim_bytes, 2000);
    for r in &planned.removals {
        assert_eq!(r.policy, "pressure");
        assert!(
            matches!(
                r.reason.0.as_slice(),
                [
                    Reason::DiskPressure { .. },
                    ..,
                    Reason::LeastRecentlyUsed { .. }
                ]
            ),
            "{:?}",
            r.reason
        );
    }
}

#[test]
fn disk_pressure_at_exactly_disk_high_is_active() {
    let p = policy(vec![disk_rule()]);
    // 85% used: e (300) and a (1000) bring it to 72%, b to 65%.
    let snap = snapshot_on_disk(&five_images_last_used_apart(), vec![], disk(8_500));

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["ci/e:1", "ci/a:1", "ci/b:1"]);
}

#[test]
fn disk_pressure_never_removes_what_safety_protects() {
    let mut p = policy(vec![disk_rule()]);
    p.safety.protect = vec![glob("ci/a")];
    let mut web = container("web", "e", "exited");
    web.created = ago(30 * DAY);
    let snap = snapshot_on_disk(&five_images_last_used_apart(), vec![web], disk(9_000));

    let planned = plan(&p, &snap, now());

    // Without e and a, the next least recently used are b, c, d.
    assert_eq!(targets(&planned), vec!["ci/b:1", "ci/c:1", "ci/d:1"]);
    assert!(kept_reason(&planned, Some("ci/e:1"), &id("e")).is_some());
    assert!(kept_reason(&planned, Some("ci/a:1"), &id("a")).is_some());
}

#[test]
fn disk_pressure_considers_an_untagged_parent_that_an_earlier_policy_left_dangling() {
    let p = policy(vec![
        rule("ci")
            .repositories(&["ci/**"])
            .older_than(secs(DAY))
            .build(),
        disk_rule(),
    ]);
    let snap = snapshot_on_disk(
        &[
            img("parent", 30 * DAY).layer("p", 5000),
            img("child", 10 * DAY)
                .tags(&["ci/app:1"])
                .parent("parent")
                .layer("p", 5000)
                .layer("c", 10),
            img("tools", 30 * DAY)
                .tags(&["tools:1"])
                .last_event(ago(DAY))
                .layer("t", 100),
        ],
        vec![],
        disk(9_000),
    );

    let planned = plan(&p, &snap, now());

    // The ci policy removes the child; the parent is then dangling and the
    // least recently used candidate of the disk policy, which needs its bytes.
    assert_eq!(targets(&planned), vec!["ci/app:1", id("parent").as_str()]);
    assert_eq!(planned.removals[1].policy, "pressure");
    assert_eq!(planned.reclaim_bytes, 5010);
}

#[test]
fn absolute_watermarks_compare_against_unique_image_bytes() {
    // Unique bytes: base 1000 + 800 + 700 + 600 = 3100. The engine's
    // per-image sizes would sum to 5100.
    let images = [
        img("a", 60 * DAY)
            .tags(&["ci/a:1"])
            .last_event(ago(9 * DAY))
            .layer("base", 1000)
            .layer("a", 800),
        img("b", 60 * DAY)
            .tags(&["ci/b:1"])
            .last_event(ago(8 * DAY))
            .layer("base", 1000)
            .layer("b", 700),
        img("c", 60 * DAY)
            .tags(&["ci/c:1"])
            .last_event(ago(DAY))
            .layer("base", 1000)
            .layer("c", 600),
    ];
    // No disk figures: absolute watermarks do not need them.
    let snap = snapshot(&images, vec![]);
    assert_eq!(snap.image_bytes(), 3100);

    let inactive = policy(vec![rule("bytes")
        .disk(Threshold::Bytes(4000), Threshold::Bytes(2000))
        .build()]);
    let planned = plan(&inactive, &snap, now());
    assert!(planned.removals.is_empty(), "{:?}", targets(&planned));

    let active = policy(vec![rule("bytes")
        .disk(Threshold::Bytes(3000), Threshold::Bytes(2000))
        .build()]);
    let planned = plan(&active, &snap, now());
    assert_eq!(targets(&planned), vec!["ci/a:1", "ci/b:1"]);
    assert_eq!(planned.reclaim_bytes, 1500);
}

#[test]
fn disk_pressure_with_unknown_disk_usage_removes_nothing_and_says_so() {
    let p = policy(vec![disk_rule()]);
    let snap = snapshot(&five_images_last_used_apart(), vec![]);

    let planned = plan(&p, &snap, now());

    assert!(planned.removals.is_empty());
    assert!(
        planned
            .notes
            .iter()
            .any(|n| matches!(n, Note::DiskUnknown { .. })),
        "{:?}",
        planned.notes
    );
}

// ---------------------------------------------------------------------------
// Selectors.

#[test]
fn repositories_glob_ci_star_does_not_match_ci_x_app_but_ci_double_star_does() {
    let images = [
        img("flat", 10 * DAY).tags(&["ci/app:1"]).layer("f", 1),
        img("nested", 10 * DAY).tags(&["ci/x/app:1"]).layer("n", 1),
        img("other", 10 * DAY).tags(&["cix/app:1"]).layer("o", 1),
    ];
    let snap = snapshot(&images, vec![]);
    let star = policy(vec![rule("ci")
        .repositories(&["ci/*"])
        .older_than(secs(DAY))
        .build()]);
    let double_star = policy(vec![rule("ci")
        .repositories(&["ci/**"])
        .older_than(secs(DAY))
        .build()]);

    assert_eq!(targets(&plan(&star, &snap, now())), vec!["ci/app:1"]);
    assert_eq!(
        targets(&plan(&double_star, &snap, now())),
        vec!["ci/app:1", "ci/x/app:1"]
    );
}

#[test]
fn labels_selector_picks_only_images_carrying_every_listed_label() {
    let p = policy(vec![rule("team-a-ci")
        .labels(&["team=a", "ci"])
        .older_than(secs(DAY))
        .build()]);
    let snap = snapshot(
        &[
            img("both", 10 * DAY)
                .tags(&["x:1"])
                .label("team", "a")
                .label("ci", "yes")
                .layer("1", 1),
            img("team-only", 10 * DAY)
                .tags(&["x:2"])
                .label("team", "a")
                .layer("2", 1),
            img("other-team", 10 * DAY)
                .tags(&["x:3"])
                .label("team", "b")
                .label("ci", "yes")
                .layer("3", 1),
            img("untagged", 10 * DAY)
                .label("team", "a")
                .label("ci", "")
                .layer("4", 1),
        ],
        vec![],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["x:1", id("untagged").as_str()]);
}

#[test]
fn dangling_false_selects_tagged_references_only() {
    let p = policy(vec![rule("tagged")
        .dangling(false)
        .older_than(secs(DAY))
        .build()]);
    let snap = snapshot(
        &[
            img("untagged", 10 * DAY).layer("u", 1),
            img("tagged", 10 * DAY).tags(&["app:1"]).layer("t", 1),
        ],
        vec![],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["app:1"]);
}

#[test]
fn a_rule_with_a_repositories_selector_never_selects_untagged_images() {
    let p = policy(vec![rule("any-repo")
        .repositories(&["**"])
        .older_than(secs(DAY))
        .build()]);
    let snap = snapshot(
        &[
            img("untagged", 10 * DAY).layer("u", 1),
            img("tagged", 10 * DAY).tags(&["a/b/c:1"]).layer("t", 1),
        ],
        vec![],
    );

    assert_eq!(targets(&plan(&p, &snap, now())), vec!["a/b/c:1"]);
}

#[test]
fn unused_for_counts_from_the_newest_use_of_an_image() {
    let p = policy(vec![rule("idle").unused_for(secs(7 * DAY)).build()]);
    let snap = snapshot(
        &[
            img("idle", 30 * DAY).tags(&["a:1"]).layer("1", 1),
            img("event", 30 * DAY)
                .tags(&["b:1"])
                .last_event(ago(DAY))
                .layer("2", 1),
        ],
        vec![],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["a:1"]);
    assert!(
        matches!(
            planned.removals[0].reason.0.as_slice(),
            [Reason::UnusedFor { idle, .. }] if *idle == TimeDelta::days(30)
        ),
        "{:?}",
        planned.removals[0].reason
    );
}

#[test]
fn after_a_state_loss_an_image_with_no_recorded_use_counts_as_used_at_the_restart() {
    // Tracking restarted two hours ago (min_age has passed since): "old",
    // created 30 days ago, may have been used yesterday; nothing says so.
    let restart = ago(2 * HOUR);
    let idle = policy(vec![rule("idle").unused_for(secs(DAY)).build()]);
    let images = [
        img("old", 30 * DAY)
            .tags(&["ci/old:1"])
            .restarted(restart)
            .layer("old", 3000),
        img("used", 30 * DAY)
            .tags(&["ci/used:1"])
            .restarted(restart)
            .last_event(ago(HOUR))
            .layer("used", 3000),
    ];
    let snap = snapshot_on_disk(&images, vec![], disk(9_000));

    let planned = plan(&idle, &snap, now());
    assert!(
        planned.removals.is_empty(),
        "unused_for counts from the restart: {:?}",
        planned.removals
    );

    // Under disk pressure the least recently used goes first, and its last
    // use is the restart, not its created time.
    let planned = plan(&policy(vec![disk_rule()]), &snap, now());
    assert_eq!(targets(&planned), vec!["ci/old:1"]);
    assert!(
        planned.removals[0].reason.0.iter().any(|r| matches!(
            r,
            Reason::LeastRecentlyUsed { idle, source: LastUsedSource::TrackingRestarted }
                if *idle == TimeDelta::hours(2)
        )),
        "{:?}",
        planned.removals[0].reason
    );
}

#[test]
fn the_first_policy_in_file_order_whose_conditions_hold_names_the_removal() {
    let p = policy(vec![
        rule("first").older_than(secs(60 * DAY)).build(),
        rule("second").older_than(secs(DAY)).build(),
        rule("third").older_than(secs(HOUR)).build(),
    ]);
    let snap = snapshot(&[img("x", 10 * DAY).tags(&["app:1"]).layer("x", 1)], vec![]);

    let planned = plan(&p, &snap, now());

    assert_eq!(planned.removals[0].policy, "second");
}

#[test]
fn every_removal_names_its_policy_and_a_non_empty_reason() {
    let mut p = policy(vec![
        rule("ci")
            .repositories(&["ci/**"])
            .keep_most_recent(1)
            .build(),
        rule("dangling")
            .dangling(true)
            .older_than(secs(HOUR))
            .build(),
        rule("idle").unused_for(secs(20 * DAY)).build(),
        disk_rule(),
    ]);
    p.safety.min_age = secs(HOUR);
    let mut images = five_images_last_used_apart();
    images.extend([
        img("ci1", 40 * DAY).tags(&["ci/x/app:1"]).layer("ci1", 100),
        img("ci2", 30 * DAY).tags(&["ci/x/app:2"]).layer("ci2", 100),
        img("dangling", 2 * DAY).layer("dangling", 100),
        img("idle", 50 * DAY).tags(&["tools:1"]).layer("idle", 100),
    ]);
    let snap = snapshot_on_disk(&images, vec![], disk(9_500));

    let planned = plan(&p, &snap, now());

    let names: HashSet<&str> = planned.removals.iter().map(|r| r.policy.as_str()).collect();
    assert_eq!(
        names,
        HashSet::from(["ci", "dangling", "idle", "pressure"]),
        "{:#?}",
        planned.removals
    );
    for r in &planned.removals {
        assert!(!r.reason.to_string().trim().is_empty(), "{r:?}");
    }
}

// ---------------------------------------------------------------------------
// Properties over random snapshots and policies.

const REPOS: [&str; 4] = ["app", "ci/app", "ci/x/app", "base/os"];
const TAG_NAMES: [&str; 4] = ["1", "2", "3", "latest"];
const STATES: [&str; 7] = [
    "created",
    "running",
    "exited",
    "paused",
    "dead",
    "restarting",
    "removing",
];
const DURATIONS: [u64; 4] = [0, HOUR, DAY, 7 * DAY];
const REPO_GLOBS: [&str; 4] = ["ci/*", "ci/**", "app", "**/app"];
const PROTECT_GLOBS: [&str; 3] = ["base/**", "app:latest", "ci/x/*"];
/// Shared base layers; layer `k` weighs `(k + 1) * 1000` bytes.
const POOL: usize = 5;

#[derive(Debug, Clone)]
struct ImgSeed {
    created_ago: u64,
    first_seen_ago: Option<u64>,
    last_event_ago: Option<u64>,
    tags: Vec<(usize, usize)>,
    parent: Option<prop::sample::Index>,
    base: Option<usize>,
    own_layers: Vec<u64>,
    keep_label: Option<bool>,
    team_a: Option<bool>,
    /// A `repo@sha256:…` reference in this repository.
    digest: Option<usize>,
}

#[derive(Debug, Clone)]
struct ContainerSeed {
    image: prop::sample::Index,
    state: usize,
}

#[derive(Debug, Clone)]
struct WorldSeed {
    images: Vec<ImgSeed>,
    containers: Vec<ContainerSeed>,
    /// `(share of used bytes that is not image data, fill percent)`.
    disk: Option<(u64, u64)>,
}

fn time_ago() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..3 * HOUR,
        (0u64..80).prop_map(|half_days| half_days * 12 * HOUR)
    ]
}

fn img_seed() -> impl Strategy<Value = ImgSeed> {
    (
        time_ago(),
        prop::option::of(0..10 * DAY),
        prop::option::weighted(0.3, 0..30 * DAY),
        prop::collection::vec((0..REPOS.len(), 0..TAG_NAMES.len()), 0..3),
        prop::option::weighted(0.4, any::<prop::sample::Index>()),
        prop::option::of(0..POOL),
        prop::collection::vec(0u64..5000, 0..3),
        prop::option::weighted(0.15, any::<bool>()),
        prop::option::of(any::<bool>()),
        prop::option::weighted(0.3, 0..REPOS.len()),
    )
        .prop_map(
            |(
                created_ago,
                first_seen_ago,
                last_event_ago,
                tags,
                parent,
                base,
                own_layers,
                keep_label,
                team_a,
                digest,
            )| ImgSeed {
                created_ago,
                first_seen_ago,
                last_event_ago,
                tags,
                parent,
                base,
                own_layers,
                keep_label,
                team_a,
                digest,
            },
        )
}

fn world_seed() -> impl Strategy<Value = WorldSeed> {
    (
        prop::collection::vec(img_seed(), 0..60),
        prop::collection::vec(
            (any::<prop::sample::Index>(), 0..STATES.len())
                .prop_map(|(image, state)| ContainerSeed { image, state }),
            0..8,
        ),
        prop::option::weighted(0.8, (0u64..100, 1u64..=100)),
    )
        .prop_map(|(images, containers, disk)| WorldSeed {
            images,
            containers,
            disk,
        })
}

/// The images, containers and disk a seed describes. Tags are unique across
/// the snapshot (a reference names one image); children carry their
/// parent's layers as a prefix, as on a real engine.
fn build_world(seed: &WorldSeed) -> Snapshot {
    let mut used_tags = HashSet::new();
    let mut images: Vec<Img> = Vec::with_capacity(seed.images.len());
    for (i, s) in seed.images.iter().enumerate() {
        let name = format!("img{i:02}");
        let mut image = img(&name, s.created_ago);
        let tags: Vec<String> = s
            .tags
            .iter()
            .map(|&(r, t)| format!("{}:{}", REPOS[r], TAG_NAMES[t]))
            .filter(|t| used_tags.insert(t.clone()))
            .collect();
        image.tags = tags;
        if let Some(r) = s.digest {
            image.digests = vec![format!("{}@sha256:{i:064x}", REPOS[r])];
        }
        if let Some(ago_secs) = s.first_seen_ago {
            image = image.first_seen(ago(ago_secs));
        }
        if let Some(ago_secs) = s.last_event_ago {
            image = image.last_event(ago(ago_secs));
        }
        match s.parent.filter(|_| i > 0).map(|ix| ix.index(i)) {
            Some(p) => {
                image.parent = Some(images[p].id.clone());
                image.layers.clone_from(&images[p].layers);
            }
            None => {
                if let Some(k) = s.base {
                    image = image.layer(&format!("pool{k}"), (k as u64 + 1) * 1000);
                }
            }
        }
        for (j, size) in s.own_layers.iter().enumerate() {
            image = image.layer(&format!("own-{i}-{j}"), *size);
        }
        if let Some(yes) = s.keep_label {
            image = image.label("keep", if yes { "yes" } else { "no" });
        }
        if let Some(a) = s.team_a {
            image = image.label("team", if a { "a" } else { "b" });
        }
        images.push(image);
    }
    let containers = if images.is_empty() {
        Vec::new()
    } else {
        seed.containers
            .iter()
            .enumerate()
            .map(|(n, c)| {
                let target = &images[c.image.index(images.len())];
                let mut made = container(&format!("c{n:02}"), "x", STATES[c.state]);
                made.image_id.clone_from(&target.id);
                made
            })
            .collect()
    };
    let mut layer_sizes: HashMap<&str, u64> = HashMap::new();
    for image in &images {
        for (chain, size) in &image.layers {
            layer_sizes.insert(chain.as_str(), *size);
        }
    }
    let image_bytes: u64 = layer_sizes.values().sum();
    let disk = seed.disk.map(|(other_pct, fill_pct)| {
        let used = image_bytes + image_bytes * other_pct / 100;
        DiskUsage {
            total_bytes: (used * 100 / fill_pct).max(1),
            used_bytes: used,
            ..DiskUsage::default()
        }
    });
    Snapshot::build(images.iter().map(Img::input).collect(), containers, disk)
}

#[derive(Debug, Clone)]
struct SafetySeed {
    min_age: usize,
    protect: Vec<usize>,
    protect_label: Option<bool>,
    max_removals: Option<usize>,
}

#[derive(Debug, Clone)]
struct SelectorSeed {
    dangling: Option<bool>,
    repositories: Vec<usize>,
    team_a: bool,
}

#[derive(Debug, Clone, Copy)]
struct DiskSeed {
    absolute: bool,
    high_pct: u64,
    gap_pct: u64,
}

#[derive(Debug, Clone)]
struct RuleSeed {
    selectors: SelectorSeed,
    unused_for: Option<usize>,
    older_than: Option<usize>,
    keep: Option<usize>,
    disk: Option<DiskSeed>,
}

fn safety_seed() -> impl Strategy<Value = SafetySeed> {
    (
        0..DURATIONS.len(),
        prop::sample::subsequence((0..PROTECT_GLOBS.len()).collect::<Vec<_>>(), 0..=2),
        prop::option::of(any::<bool>()),
        prop::option::weighted(0.3, 1usize..15),
    )
        .prop_map(
            |(min_age, protect, protect_label, max_removals)| SafetySeed {
                min_age,
                protect,
                protect_label,
                max_removals,
            },
        )
}

fn selector_seed() -> impl Strategy<Value = SelectorSeed> {
    (
        prop::option::of(any::<bool>()),
        prop::sample::subsequence((0..REPO_GLOBS.len()).collect::<Vec<_>>(), 0..=2),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(dangling, repositories, team_a)| SelectorSeed {
            dangling,
            repositories,
            team_a,
        })
}

fn disk_seed() -> impl Strategy<Value = DiskSeed> {
    (any::<bool>(), 10u64..=95, 1u64..=40).prop_map(|(absolute, high_pct, gap_pct)| DiskSeed {
        absolute,
        high_pct,
        gap_pct,
    })
}

fn rule_seed() -> impl Strategy<Value = RuleSeed> {
    (
        selector_seed(),
        prop::option::of(0..DURATIONS.len()),
        prop::option::of(0..DURATIONS.len()),
        prop::option::weighted(0.3, 0usize..4),
        prop::option::weighted(0.3, disk_seed()),
    )
        .prop_map(|(selectors, unused_for, older_than, keep, disk)| RuleSeed {
            selectors,
            unused_for,
            older_than,
            keep,
            disk,
        })
}

fn build_safety(policy: &mut Policy, seed: &SafetySeed) {
    policy.safety.min_age = secs(DURATIONS[seed.min_age]);
    policy.safety.protect = seed
        .protect
        .iter()
        .map(|&g| glob(PROTECT_GLOBS[g]))
        .collect();
    policy.safety.protect_labels = match seed.protect_label {
        Some(true) => vec![label("keep=yes")],
        Some(false) => vec![label("keep")],
        None => Vec::new(),
    };
    policy.safety.max_removals_per_run = seed.max_removals.and_then(NonZeroUsize::new);
}

fn thresholds(seed: DiskSeed, image_bytes: u64) -> (Threshold, Threshold) {
    let low_pct = seed.high_pct.saturating_sub(seed.gap_pct);
    if seed.absolute {
        let high = (image_bytes * seed.high_pct / 100).max(1);
        let low = (image_bytes * low_pct / 100).min(high - 1);
        (Threshold::Bytes(high), Threshold::Bytes(low))
    } else {
        (
            Threshold::Ratio(seed.high_pct as f64 / 100.0),
            Threshold::Ratio(low_pct as f64 / 100.0),
        )
    }
}

fn build_rule(name: &str, seed: &RuleSeed, image_bytes: u64) -> Rule {
    let s = &seed.selectors;
    let mut r = rule(name);
    if let Some(d) = s.dangling {
        r = r.dangling(d);
    }
    let globs: Vec<&str> = s.repositories.iter().map(|&g| REPO_GLOBS[g]).collect();
    r = r.repositories(&globs);
    if s.team_a {
        r = r.labels(&["team=a"]);
    }
    if let Some(d) = seed.unused_for {
        r = r.unused_for(secs(DURATIONS[d]));
    }
    if let Some(d) = seed.older_than {
        r = r.older_than(secs(DURATIONS[d]));
    }
    if let Some(n) = seed.keep {
        r = r.keep_most_recent(n);
    }
    if let Some(d) = seed.disk {
        let (high, low) = thresholds(d, image_bytes);
        r = r.disk(high, low);
    }
    let mut built = r.build();
    let c = &built.conditions;
    if c.unused_for.is_none()
        && c.older_than.is_none()
        && c.keep_most_recent.is_none()
        && c.disk.is_none()
    {
        built.conditions.older_than = Some(secs(HOUR));
    }
    built
}

fn build_policy(safety: &SafetySeed, rules: &[RuleSeed], snap: &Snapshot) -> Policy {
    let rules = rules
        .iter()
        .enumerate()
        .map(|(n, seed)| build_rule(&format!("r{n}"), seed, snap.image_bytes()))
        .collect();
    let mut p = policy(rules);
    build_safety(&mut p, safety);
    p
}

fn world_and_policy() -> impl Strategy<Value = (Snapshot, Policy)> {
    (
        world_seed(),
        safety_seed(),
        prop::collection::vec(rule_seed(), 1..4),
    )
        .prop_map(|(world, safety, rules)| {
            let snap = build_world(&world);
            let p = build_policy(&safety, &rules, &snap);
            (snap, p)
        })
}

// --- An independent model of the rules, for the properties to check against.

fn grace_start(snap: &Snapshot, image: usize) -> DateTime<Utc> {
    let img = &snap.images[image];
    img.tracked
        .first_seen
        .map_or(img.created, |s| s.max(img.created))
}

fn repository(reference: &str) -> &str {
    match reference.split_once('@') {
        Some((repo, _)) => repo,
        None => reference
            .rsplit_once(':')
            .map_or(reference, |(repo, _)| repo),
    }
}

/// A protect glob matches the reference removed: the tag, or for an untagged
/// image removed by ID, any of its digest references.
fn protected_by_glob(
    policy: &Policy,
    img: &imagegc::snapshot::Image,
    reference: Option<&str>,
) -> bool {
    let removed: Vec<&str> = match reference {
        Some(r) => vec![r],
        None => img.digests.iter().map(String::as_str).collect(),
    };
    removed.iter().any(|r| {
        policy
            .safety
            .protect
            .iter()
            .any(|g| g.is_match(r) || g.is_match(repository(r)))
    })
}

fn used_by_containers(snap: &Snapshot) -> HashSet<&str> {
    snap.containers
        .iter()
        .map(|c| c.container.image_id.as_str())
        .collect()
}

/// Any safety rule that keeps `reference` of `image` (or the untagged image).
fn safety_protects(
    policy: &Policy,
    snap: &Snapshot,
    image: usize,
    reference: Option<&str>,
) -> bool {
    let img = &snap.images[image];
    let s = &policy.safety;
    let in_use = used_by_containers(snap).contains(img.id.as_str());
    let label = s.protect_labels.iter().any(|l| l.matches(&img.labels));
    let globbed = protected_by_glob(policy, img, reference);
    let young = now() - grace_start(snap, image) < TimeDelta::from_std(s.min_age).expect("small");
    in_use || label || globbed || young
}

fn rule_selects(rule: &Rule, snap: &Snapshot, image: usize, reference: Option<&str>) -> bool {
    let sel = &rule.selectors;
    let img = &snap.images[image];
    let kind_ok = !matches!(
        (sel.dangling, reference),
        (Some(true), Some(_)) | (Some(false), None)
    );
    let repo_ok = sel.repositories.is_empty()
        || reference.is_some_and(|r| sel.repositories.iter().any(|g| g.is_match(repository(r))));
    kind_ok && repo_ok && sel.labels.iter().all(|l| l.matches(&img.labels))
}

/// Which tags and untagged images a plan removes.
struct Removed<'p> {
    tags: HashSet<(usize, &'p str)>,
    untagged: HashSet<usize>,
}

fn removed<'p>(removals: &[&'p Removal]) -> Removed<'p> {
    let mut out = Removed {
        tags: HashSet::new(),
        untagged: HashSet::new(),
    };
    for r in removals {
        match &r.reference {
            Some(t) => out.tags.insert((r.image, t.as_str())),
            None => out.untagged.insert(r.image),
        };
    }
    out
}

/// The engine drops `repo@digest` with the last `repo:tag` of the same
/// repository; a digest of a repository the image has no tag in keeps the
/// image, untagged, until it is removed by ID.
fn digest_outlives_tags(img: &imagegc::snapshot::Image) -> bool {
    img.digests.iter().any(|d| {
        let repo = repository(d);
        !img.tags.iter().any(|t| repository(t) == repo)
    })
}

/// Which images the engine deletes after `removed`: an image goes once every
/// reference is removed (or, untagged, its removal asked for), no container
/// uses it and every child has gone.
fn model_deleted(snap: &Snapshot, removed: &Removed<'_>) -> Vec<bool> {
    let n = snap.images.len();
    let used = used_by_containers(snap);
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (child, parent) in snap.parent.iter().enumerate() {
        if let Some(p) = parent {
            children[*p].push(child);
        }
    }
    let mut deleted = vec![false; n];
    loop {
        let mut changed = false;
        for i in 0..n {
            let img = &snap.images[i];
            if deleted[i] || used.contains(img.id.as_str()) {
                continue;
            }
            let requested = if img.tags.is_empty() {
                removed.untagged.contains(&i)
            } else {
                img.tags
                    .iter()
                    .all(|t| removed.tags.contains(&(i, t.as_str())))
                    && (!digest_outlives_tags(img) || removed.untagged.contains(&i))
            };
            if requested && children[i].iter().all(|&c| deleted[c]) {
                deleted[i] = true;
                changed = true;
            }
        }
        if !changed {
            return deleted;
        }
    }
}

/// Bytes of the layers that only deleted images use.
fn model_freed(snap: &Snapshot, deleted: &[bool]) -> u64 {
    let mut users: HashMap<&str, (u64, bool)> = HashMap::new();
    for (i, img) in snap.images.iter().enumerate() {
        for &l in &img.layers {
            let layer = &snap.layers[l as usize];
            let entry = users
                .entry(layer.chain_id.as_str())
                .or_insert((layer.size, true));
            entry.1 &= deleted[i];
        }
    }
    users
        .values()
        .filter(|(_, all_gone)| *all_gone)
        .map(|(size, _)| size)
        .sum()
}

fn descendants(snap: &Snapshot, image: usize) -> HashSet<usize> {
    (0..snap.images.len())
        .filter(|&i| {
            let mut cur = snap.parent[i];
            let mut steps = 0;
            while let Some(p) = cur {
                if p == image {
                    return true;
                }
                steps += 1;
                if steps > snap.images.len() {
                    return false;
                }
                cur = snap.parent[p];
            }
            false
        })
        .collect()
}

fn all(plan: &Plan) -> Vec<&Removal> {
    plan.removals.iter().collect()
}

/// Projected usage, in the unit of `like`, after freeing `freed` bytes.
fn projected(snap: &Snapshot, like: Threshold, freed: u64) -> Option<f64> {
    match like {
        Threshold::Ratio(_) => snap.disk.map(|d| {
            if d.total_bytes == 0 {
                0.0
            } else {
                d.used_bytes.saturating_sub(freed) as f64 / d.total_bytes as f64
            }
        }),
        Threshold::Bytes(_) => Some(snap.image_bytes().saturating_sub(freed) as f64),
    }
}

fn at_or_below(value: f64, t: Threshold) -> bool {
    match t {
        Threshold::Ratio(r) => value <= r + 1e-12,
        Threshold::Bytes(b) => value <= b as f64,
    }
}

proptest! {
    // 256 cases each by default; set PROPTEST_CASES for a longer hunt.

    #[test]
    fn never_removes_an_image_a_container_uses((snap, p) in world_and_policy()) {
        let planned = plan(&p, &snap, now());
        let used = used_by_containers(&snap);
        for r in &planned.removals {
            prop_assert!(!used.contains(r.image_id.as_str()), "removes in-use {r:?}");
        }
        let deleted = model_deleted(&snap, &removed(&all(&planned)));
        for (i, gone) in deleted.iter().enumerate() {
            prop_assert!(!(*gone && used.contains(snap.images[i].id.as_str())));
        }
    }

    #[test]
    fn never_removes_a_protected_reference_nor_an_image_with_a_protect_label(
        (snap, p) in world_and_policy()
    ) {
        let planned = plan(&p, &snap, now());
        for r in &planned.removals {
            let img = &snap.images[r.image];
            prop_assert!(
                !p.safety.protect_labels.iter().any(|l| l.matches(&img.labels)),
                "removes {r:?} of an image labelled {:?}", img.labels
            );
            prop_assert!(
                !protected_by_glob(&p, img, r.reference.as_deref()),
                "removes protected {r:?} (digests {:?})", img.digests
            );
        }
    }

    #[test]
    fn never_removes_anything_younger_than_min_age((snap, p) in world_and_policy()) {
        let planned = plan(&p, &snap, now());
        let min_age = TimeDelta::from_std(p.safety.min_age).expect("small");
        for r in &planned.removals {
            let age = now() - grace_start(&snap, r.image);
            prop_assert!(age >= min_age, "{r:?} is only {age} old");
        }
    }

    #[test]
    fn never_removes_a_parent_before_its_child((snap, p) in world_and_policy()) {
        let planned = plan(&p, &snap, now());
        for (k, r) in planned.removals.iter().enumerate() {
            if !r.deletes_image {
                continue;
            }
            let below = descendants(&snap, r.image);
            for later in &planned.removals[k + 1..] {
                prop_assert!(
                    !below.contains(&later.image),
                    "{} deletes {} before {} touches its descendant {}",
                    r.target(), r.image_id, later.target(), later.image_id
                );
            }
        }
    }

    #[test]
    fn predicted_bytes_are_the_layers_no_remaining_image_uses((snap, p) in world_and_policy()) {
        let planned = plan(&p, &snap, now());
        let sum: u64 = planned.removals.iter().map(|r| r.reclaim_bytes).sum();
        prop_assert_eq!(planned.reclaim_bytes, sum);

        let everything = all(&planned);
        let deleted = model_deleted(&snap, &removed(&everything));
        let flagged: HashSet<usize> = planned
            .removals
            .iter()
            .filter(|r| r.deletes_image)
            .map(|r| r.image)
            .collect();
        let model: HashSet<usize> = (0..deleted.len()).filter(|&i| deleted[i]).collect();
        prop_assert_eq!(&flagged, &model);
        prop_assert_eq!(
            planned.removals.iter().filter(|r| r.deletes_image).count(),
            flagged.len(),
            "an image is deleted twice"
        );
        prop_assert_eq!(planned.reclaim_bytes, model_freed(&snap, &deleted));

        // Each removal's share is what it frees when run in plan order.
        let mut before = 0;
        for k in 0..everything.len() {
            let after = model_freed(&snap, &model_deleted(&snap, &removed(&everything[..=k])));
            prop_assert_eq!(everything[k].reclaim_bytes, after - before, "{:?}", everything[k]);
            before = after;
        }
    }

    #[test]
    fn every_removal_names_a_policy_of_the_file_and_a_reason((snap, p) in world_and_policy()) {
        let planned = plan(&p, &snap, now());
        let names: HashSet<&str> = p.rules.iter().map(|r| r.name.as_str()).collect();
        for r in &planned.removals {
            prop_assert!(names.contains(r.policy.as_str()), "{r:?}");
            prop_assert!(!r.reason.to_string().trim().is_empty(), "{r:?}");
        }
        if let Some(max) = p.safety.max_removals_per_run {
            prop_assert!(planned.removals.len() <= max.get());
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_plan((snap, p) in world_and_policy()) {
        let a = plan(&p, &snap, now());
        let b = plan(&p, &snap.clone(), now());
        prop_assert_eq!(&a.removals, &b.removals);
        prop_assert_eq!(&a.kept, &b.kept);
        prop_assert_eq!(a.reclaim_bytes, b.reclaim_bytes);
        prop_assert_eq!(&a.notes, &b.notes);
    }

    #[test]
    fn keep_most_recent_keeps_exactly_the_n_newest_selected_references_per_repository(
        world in world_seed(),
        selectors in selector_seed(),
        n in 1usize..4,
    ) {
        let mut world = world;
        world.containers.clear();
        let snap = build_world(&world);
        let seed = RuleSeed { selectors, unused_for: None, older_than: None, keep: Some(n), disk: None };
        let mut p = policy(vec![build_rule("keep", &seed, 0)]);
        p.safety.min_age = secs(0);
        let planned = plan(&p, &snap, now());

        let gone: HashSet<(usize, &str)> = planned
            .removals
            .iter()
            .map(|r| (r.image, r.reference.as_deref().expect("keep_most_recent removes tags only")))
            .collect();
        let mut by_repo: HashMap<&str, Vec<(usize, &str)>> = HashMap::new();
        for (i, img) in snap.images.iter().enumerate() {
            for t in &img.tags {
                if rule_selects(&p.rules[0], &snap, i, Some(t)) {
                    by_repo.entry(repository(t)).or_default().push((i, t.as_str()));
                }
            }
        }
        let selected: usize = by_repo.values().map(Vec::len).sum();
        prop_assert_eq!(gone.len(), selected - by_repo.values().map(|v| v.len().min(n)).sum::<usize>());
        for (repo, mut refs) in by_repo {
            refs.sort_by(|a, b| {
                snap.images[b.0].created.cmp(&snap.images[a.0].created).then(b.1.cmp(a.1))
            });
            let remaining: Vec<(usize, &str)> =
                refs.iter().copied().filter(|r| !gone.contains(r)).collect();
            prop_assert_eq!(remaining.len(), refs.len().min(n), "in {}", repo);
            prop_assert_eq!(&remaining[..], &refs[..refs.len().min(n)], "in {}", repo);
        }
    }

    #[test]
    fn disk_pressure_stops_at_the_low_watermark_or_when_candidates_run_out(
        world in world_seed(),
        safety in safety_seed(),
        selectors in selector_seed(),
        disk in disk_seed(),
        older_than in prop::option::of(0..DURATIONS.len()),
        with_age_rule in any::<bool>(),
    ) {
        let snap = build_world(&world);
        let pressure = RuleSeed { selectors, unused_for: None, older_than, keep: None, disk: Some(disk) };
        let mut rules = vec![build_rule("pressure", &pressure, snap.image_bytes())];
        if with_age_rule {
            rules.insert(0, rule("ci-age").repositories(&["ci/**"]).older_than(secs(DAY)).build());
        }
        let mut p = policy(rules);
        build_safety(&mut p, &safety);
        let disk_rule = p.rules.iter().find(|r| r.name == "pressure").expect("present").clone();
        let watermarks = disk_rule.conditions.disk.expect("a disk rule");
        let planned = plan(&p, &snap, now());
        let by_disk: Vec<&Removal> =
            planned.removals.iter().filter(|r| r.policy == "pressure").collect();

        let Some(start) = projected(&snap, watermarks.high, 0) else {
            prop_assert!(by_disk.is_empty(), "acts without knowing the disk");
            return Ok(());
        };
        let active = match watermarks.high {
            Threshold::Ratio(h) => start >= h - 1e-12,
            Threshold::Bytes(h) => start >= h as f64,
        };
        if !active {
            prop_assert!(by_disk.is_empty(), "acts below disk_high: {by_disk:?}");
            return Ok(());
        }

        let everything = all(&planned);
        let gone = removed(&everything);
        let deleted = model_deleted(&snap, &gone);
        let end = projected(&snap, watermarks.low, model_freed(&snap, &deleted)).expect("known");
        if at_or_below(end, watermarks.low) {
            // It stopped as soon as it could: without one of its removals the
            // usage would still be above disk_low.
            if !by_disk.is_empty() {
                let needed = by_disk.iter().any(|d| {
                    let without: Vec<&Removal> =
                        everything.iter().copied().filter(|r| !std::ptr::eq(*r, *d)).collect();
                    let freed = model_freed(&snap, &model_deleted(&snap, &removed(&without)));
                    !at_or_below(projected(&snap, watermarks.low, freed).expect("known"), watermarks.low)
                });
                prop_assert!(needed, "removes more than needed to reach disk_low: {by_disk:?}");
            }
        } else {
            // Above disk_low: only because nothing it may remove is left.
            let capped = p.safety.max_removals_per_run.is_some_and(|m| planned.removals.len() >= m.get());
            let left = removable_left(&p, &disk_rule, &snap, &gone, &deleted);
            prop_assert!(
                capped || left.is_none(),
                "stops at {end} above disk_low {} while {left:?} could go", watermarks.low
            );
        }
    }
}

/// A reference or dangling image the disk rule could still remove after the
/// plan, if any: `(image, reference)`.
fn removable_left(
    p: &Policy,
    disk_rule: &Rule,
    snap: &Snapshot,
    gone: &Removed<'_>,
    deleted: &[bool],
) -> Option<(String, Option<String>)> {
    let old_enough = |i: usize| {
        disk_rule
            .conditions
            .older_than
            .is_none_or(|d| now() - snap.images[i].created > TimeDelta::from_std(d).expect("small"))
    };
    for (i, img) in snap.images.iter().enumerate() {
        if deleted[i] || !old_enough(i) {
            continue;
        }
        let mut refs: Vec<Option<&str>> = img
            .tags
            .iter()
            .filter(|t| !gone.tags.contains(&(i, t.as_str())))
            .map(|t| Some(t.as_str()))
            .collect();
        let untagged = img
            .tags
            .iter()
            .all(|t| gone.tags.contains(&(i, t.as_str())));
        let dangling =
            untagged && (0..snap.images.len()).all(|c| snap.parent[c] != Some(i) || deleted[c]);
        if dangling && !gone.untagged.contains(&i) {
            refs.push(None);
        }
        for r in refs {
            if rule_selects(disk_rule, snap, i, r) && !safety_protects(p, snap, i, r) {
                return Some((img.id.clone(), r.map(str::to_string)));
            }
        }
    }
    None
}
