//! The planner and build-cache records (issue 8): one case per rule of
//! `[[build_cache]]` policies (selectors, `unused_for`, `older_than`,
//! `keep_storage`, disk pressure of both kinds in file order), the safety
//! of records (a running build, `min_age`, children before parents, the
//! removal limit shared with images), the two-way byte ledger, then
//! property tests against an independent model.
//!
//! Everything here is pure: snapshots are built in memory with
//! `Snapshot::build(..).with_build_cache(..)` and the `holds`/`own_bytes`
//! of shared records are set directly.

mod support;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;

use chrono::{DateTime, Utc};
use imagegc::engine::DiskUsage;
use imagegc::plan::{
    judge_record, plan, KeptBecause, Note, Plan, Reason, RecordRemoval,
};
use imagegc::policy::{Policy, RuleRef, Threshold};
use imagegc::snapshot::{CacheAvailability, LastUsedSource, Snapshot};
use proptest::prelude::*;
use support::{
    cache_rule, hold, img, now, policy_with_cache, rec, rule, secs, snapshot, snapshot_on_disk,
    with_records, Rec, DAY, HOUR,
};

/// The record IDs the plan removes, in plan order.
fn record_ids(plan: &Plan) -> Vec<&str> {
    plan.records.iter().map(|r| r.record_id.as_str()).collect()
}

fn sorted(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_unstable();
    v
}

fn record<'p>(plan: &'p Plan, id: &str) -> &'p RecordRemoval {
    plan.records
        .iter()
        .find(|r| r.record_id == id)
        .unwrap_or_else(|| panic!("{id} is not in the plan: {:?}", record_ids(plan)))
}

fn kept_record<'p>(plan: &'p Plan, id: &str) -> Option<&'p KeptBecause> {
    plan.kept_records
        .iter()
        .find(|k| k.record_id == id)
        .map(|k| &k.reason)
}

fn disk(used: u64) -> DiskUsage {
    DiskUsage {
        total_bytes: 10_000,
        used_bytes: used,
    }
}

fn no_images() -> Snapshot {
    snapshot(&[], vec![])
}

// ---------------------------------------------------------------------------
// Selectors and conditions.

#[test]
fn unused_for_removes_records_idle_longer_and_names_where_the_last_use_came_from() {
    let p = policy_with_cache(
        vec![],
        vec![cache_rule("cache").unused_for(secs(2 * DAY)).build()],
    );
    let snap = with_records(
        no_images(),
        &[
            rec("used-long-ago", 10 * DAY).used(3 * DAY),
            rec("never-used", 5 * DAY),
            rec("used-recently", 10 * DAY).used(HOUR),
        ],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(sorted(record_ids(&planned)), vec!["never-used", "used-long-ago"]);
    let sources: HashMap<&str, LastUsedSource> = planned
        .records
        .iter()
        .map(|r| match &r.reason.0[..] {
            [Reason::UnusedFor { source, .. }] => (r.record_id.as_str(), *source),
            other => panic!("unexpected reason {other:?}"),
        })
        .collect();
    assert_eq!(sources["used-long-ago"], LastUsedSource::Build);
    assert_eq!(sources["never-used"], LastUsedSource::Created);
    assert_eq!(planned.reclaim_bytes, 200);
    assert!(planned.removals.is_empty());
}

#[test]
fn older_than_counts_from_created_even_for_a_record_used_a_minute_ago() {
    let p = policy_with_cache(
        vec![],
        vec![cache_rule("cache").older_than(secs(14 * DAY)).build()],
    );
    let snap = with_records(
        no_images(),
        &[rec("old", 20 * DAY).used(60), rec("new", 3 * DAY)],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(record_ids(&planned), vec!["old"]);
    assert!(matches!(
        planned.records[0].reason.0[..],
        [Reason::OlderThan { .. }]
    ));
}

#[test]
fn types_select_records_by_their_engine_type() {
    let p = policy_with_cache(
        vec![],
        vec![cache_rule("mounts")
            .types(&["exec.cachemount", "source.local"])
            .unused_for(secs(DAY))
            .build()],
    );
    let snap = with_records(
        no_images(),
        &[
            rec("layer", 5 * DAY),
            rec("mount", 5 * DAY).kind("exec.cachemount"),
            rec("context", 5 * DAY).kind("source.local"),
            rec("git", 5 * DAY).kind("source.git.checkout"),
        ],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(sorted(record_ids(&planned)), vec!["context", "mount"]);
}

#[test]
fn keep_storage_keeps_the_most_recently_used_records_that_fit_and_removes_the_rest() {
    let p = policy_with_cache(
        vec![],
        vec![cache_rule("cache").keep_storage(250).build()],
    );
    // Most recently used first: a (100), b (100), c (100), d (10).
    // a + b = 200 fits 250; with c it is 300, so c goes, and so does d:
    // the kept records are the most recently used ones, not a packing.
    let snap = with_records(
        no_images(),
        &[
            rec("d", 10 * DAY).size(10).used(4 * DAY),
            rec("b", 10 * DAY).used(2 * DAY),
            rec("a", 10 * DAY).used(DAY),
            rec("c", 10 * DAY).used(3 * DAY),
        ],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(sorted(record_ids(&planned)), vec!["c", "d"]);
    assert_eq!(
        record(&planned, "c").reason.0,
        vec![Reason::KeepStorage {
            keep: 250,
            newer: 200
        }]
    );
    assert_eq!(
        record(&planned, "d").reason.0,
        vec![Reason::KeepStorage {
            keep: 250,
            newer: 300
        }]
    );
    assert_eq!(planned.reclaim_bytes, 110);
}

#[test]
fn keep_storage_ranks_never_used_records_by_their_creation() {
    let p = policy_with_cache(vec![], vec![cache_rule("cache").keep_storage(100).build()]);
    let snap = with_records(
        no_images(),
        &[rec("older", 5 * DAY), rec("newer", 2 * DAY)],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(record_ids(&planned), vec!["older"]);
}

#[test]
fn the_first_cache_policy_in_file_order_whose_conditions_hold_names_the_removal() {
    let p = policy_with_cache(
        vec![],
        vec![
            cache_rule("mounts")
                .types(&["exec.cachemount"])
                .unused_for(secs(DAY))
                .build(),
            cache_rule("all").unused_for(secs(DAY)).build(),
        ],
    );
    let snap = with_records(
        no_images(),
        &[
            rec("mount", 5 * DAY).kind("exec.cachemount"),
            rec("layer", 5 * DAY),
        ],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(record(&planned, "mount").policy, "mounts");
    assert_eq!(record(&planned, "layer").policy, "all");
}

// ---------------------------------------------------------------------------
// Safety.

#[test]
fn a_record_a_running_build_holds_is_kept_and_so_is_its_parent() {
    let p = policy_with_cache(vec![], vec![cache_rule("cache").unused_for(secs(DAY)).build()]);
    let snap = with_records(
        no_images(),
        &[
            rec("base", 10 * DAY),
            rec("busy", 10 * DAY).parents(&["base"]).in_use(),
            rec("idle", 10 * DAY),
        ],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(record_ids(&planned), vec!["idle"]);
    assert_eq!(kept_record(&planned, "busy"), Some(&KeptBecause::BuildInUse));
    assert_eq!(
        kept_record(&planned, "base"),
        Some(&KeptBecause::HasChildren { children: 1 })
    );
}

#[test]
fn min_age_counts_from_a_records_creation() {
    let mut p = policy_with_cache(vec![], vec![cache_rule("cache").keep_storage(0).build()]);
    p.safety.min_age = secs(2 * HOUR);
    let snap = with_records(
        no_images(),
        &[rec("fresh", HOUR), rec("settled", 3 * HOUR)],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(record_ids(&planned), vec!["settled"]);
    match kept_record(&planned, "fresh") {
        Some(KeptBecause::TooYoung { since, .. }) => assert_eq!(*since, "created"),
        other => panic!("fresh should be kept for min_age: {other:?}"),
    }
}

#[test]
fn children_go_before_parents_and_a_parent_waits_for_every_child() {
    let p = policy_with_cache(vec![], vec![cache_rule("cache").unused_for(secs(DAY)).build()]);
    // root <- mid <- leaf, and root <- young (used an hour ago: not removed).
    let snap = with_records(
        no_images(),
        &[
            rec("root", 10 * DAY),
            rec("mid", 10 * DAY).parents(&["root"]),
            rec("leaf", 10 * DAY).parents(&["mid"]),
            rec("other-root", 10 * DAY),
            rec("other-leaf", 10 * DAY).parents(&["other-root"]),
            rec("young", 10 * DAY).parents(&["other-root"]).used(HOUR),
        ],
    );

    let planned = plan(&p, &snap, now());

    let ids = record_ids(&planned);
    assert_eq!(ids, vec!["leaf", "mid", "other-leaf", "root"]);
    assert_eq!(
        kept_record(&planned, "other-root"),
        Some(&KeptBecause::HasChildren { children: 1 })
    );
}

#[test]
fn max_removals_per_run_counts_image_and_record_removals_together() {
    let mut p = policy_with_cache(
        vec![rule("images").older_than(secs(DAY)).build()],
        vec![cache_rule("cache").unused_for(secs(DAY)).build()],
    );
    p.safety.max_removals_per_run = NonZeroUsize::new(3);
    let images = [
        img("a", 5 * DAY).tags(&["a:1"]).layer("a", 10),
        img("b", 5 * DAY).tags(&["b:1"]).layer("b", 10),
    ];
    let snap = with_records(
        snapshot(&images, vec![]),
        &[rec("r1", 5 * DAY), rec("r2", 5 * DAY), rec("r3", 5 * DAY)],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(planned.removals.len() + planned.records.len(), 3);
    assert_eq!(planned.removals.len(), 2);
    assert_eq!(planned.records.len(), 1);
    let limited = planned
        .kept_records
        .iter()
        .filter(|k| matches!(k.reason, KeptBecause::RemovalLimit { .. }))
        .count();
    assert_eq!(limited, 2);
    assert_eq!(
        planned
            .notes
            .iter()
            .filter(|n| matches!(n, Note::RemovalLimit { .. }))
            .count(),
        1
    );
}

// ---------------------------------------------------------------------------
// Bytes shared between images and records.

/// `app:1`, built by BuildKit on `base`: records hold both of its layers.
fn buildkit_world() -> Snapshot {
    let images = [img("app", 10 * DAY)
        .tags(&["app:1"])
        .layer("base", 1000)
        .layer("app", 500)];
    let mut snap = with_records(
        snapshot(&images, vec![]),
        &[
            rec("r-base", 10 * DAY).size(1000),
            rec("r-app", 10 * DAY).size(500).parents(&["r-base"]),
            rec("r-mount", 10 * DAY).size(70).kind("exec.cachemount"),
        ],
    );
    hold(&mut snap, "r-base", &["base"]);
    hold(&mut snap, "r-app", &["app"]);
    snap
}

#[test]
fn removing_a_buildkit_built_image_whose_layers_records_hold_frees_nothing() {
    let p = policy_with_cache(vec![rule("images").older_than(secs(DAY)).build()], vec![]);
    let snap = buildkit_world();

    let planned = plan(&p, &snap, now());

    assert_eq!(planned.removals.len(), 1);
    assert!(planned.removals[0].deletes_image);
    assert_eq!(planned.removals[0].reclaim_bytes, 0);
    assert_eq!(planned.reclaim_bytes, 0);
}

#[test]
fn an_image_and_its_records_removed_in_one_pass_free_the_layer_bytes_once() {
    let p = policy_with_cache(
        vec![rule("images").older_than(secs(DAY)).build()],
        vec![cache_rule("cache").unused_for(secs(DAY)).build()],
    );
    let snap = buildkit_world();

    let planned = plan(&p, &snap, now());

    assert_eq!(planned.removals[0].reclaim_bytes, 0);
    assert_eq!(record_ids(&planned), vec!["r-app", "r-base", "r-mount"]);
    assert_eq!(record(&planned, "r-app").reclaim_bytes, 500);
    assert_eq!(record(&planned, "r-base").reclaim_bytes, 1000);
    assert_eq!(record(&planned, "r-mount").reclaim_bytes, 70);
    assert_eq!(planned.reclaim_bytes, 1570);
}

#[test]
fn a_shared_record_frees_nothing_while_an_image_still_uses_its_layers() {
    let p = policy_with_cache(vec![], vec![cache_rule("cache").unused_for(secs(DAY)).build()]);
    let snap = buildkit_world();

    let planned = plan(&p, &snap, now());

    assert_eq!(record(&planned, "r-app").reclaim_bytes, 0);
    assert_eq!(record(&planned, "r-base").reclaim_bytes, 0);
    assert_eq!(record(&planned, "r-mount").reclaim_bytes, 70);
    assert_eq!(planned.reclaim_bytes, 70);
}

// ---------------------------------------------------------------------------
// Disk pressure of both kinds, in file order.

#[test]
fn a_cache_disk_policy_removes_least_recently_used_records_until_disk_low() {
    let p = policy_with_cache(
        vec![],
        vec![cache_rule("pressure")
            .disk(Threshold::Ratio(0.8), Threshold::Ratio(0.7))
            .build()],
    );
    // 8 500 of 10 000 used: down to 7 000 takes 1 500 bytes.
    let snap = with_records(
        snapshot_on_disk(&[], vec![], disk(8_500)),
        &[
            rec("oldest", 10 * DAY).size(1000).used(9 * DAY),
            rec("older", 10 * DAY).size(1000).used(8 * DAY),
            rec("newer", 10 * DAY).size(1000).used(7 * DAY),
        ],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(sorted(record_ids(&planned)), vec!["older", "oldest"]);
    let r = record(&planned, "oldest");
    assert!(matches!(r.reason.0.first(), Some(Reason::DiskPressure { .. })));
    assert!(matches!(
        r.reason.0.last(),
        Some(Reason::LeastRecentlyUsed {
            source: LastUsedSource::Build,
            ..
        })
    ));
    let note = planned
        .notes
        .iter()
        .find_map(|n| match n {
            Note::DiskPressure {
                policy,
                removals,
                after,
                ..
            } => Some((policy.as_str(), *removals, *after)),
            _ => None,
        })
        .expect("a disk-pressure note");
    assert_eq!(note.0, "pressure");
    assert_eq!(note.1, 2);
}

#[test]
fn a_disk_policy_later_in_the_file_counts_the_bytes_an_earlier_one_freed() {
    let images = [
        img("a", 10 * DAY).tags(&["a:1"]).layer("a", 1000),
        img("b", 10 * DAY).tags(&["b:1"]).layer("b", 1000),
    ];
    let records = [
        rec("r1", 10 * DAY).size(1000),
        rec("r2", 10 * DAY).size(1000),
    ];
    let snap = with_records(snapshot_on_disk(&images, vec![], disk(9_000)), &records);
    let cache = cache_rule("cache-pressure")
        .disk(Threshold::Ratio(0.9), Threshold::Ratio(0.75))
        .build();
    let images_rule = rule("image-pressure")
        .disk(Threshold::Ratio(0.9), Threshold::Ratio(0.75))
        .build();

    // Cache first: both records (9 000 → 7 000) reach disk_low, so the
    // image policy, active by the usage at the start, removes nothing.
    let mut cache_first = policy_with_cache(vec![images_rule.clone()], vec![cache.clone()]);
    cache_first.order = vec![RuleRef::Cache(0), RuleRef::Image(0)];
    let planned = plan(&cache_first, &snap, now());
    assert_eq!(planned.records.len(), 2);
    assert!(planned.removals.is_empty());

    // Images first: both images go, then the records are not needed.
    let images_first = policy_with_cache(vec![images_rule], vec![cache]);
    let planned = plan(&images_first, &snap, now());
    assert_eq!(planned.removals.len(), 2);
    assert!(planned.records.is_empty());
    assert_eq!(planned.reclaim_bytes, 2000);
}

#[test]
fn a_parent_record_waits_under_pressure_until_its_child_is_planned() {
    let p = policy_with_cache(
        vec![],
        vec![cache_rule("pressure")
            .disk(Threshold::Ratio(0.8), Threshold::Ratio(0.5))
            .build()],
    );
    // The parent is the least recently used, but goes only after its child.
    let snap = with_records(
        snapshot_on_disk(&[], vec![], disk(8_000)),
        &[
            rec("parent", 10 * DAY).size(1000).used(9 * DAY),
            rec("child", 10 * DAY).size(1000).parents(&["parent"]).used(8 * DAY),
        ],
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(record_ids(&planned), vec!["child", "parent"]);
    assert!(planned.kept_records.is_empty());
}

#[test]
fn byte_watermarks_of_a_cache_policy_count_build_cache_bytes() {
    let p = policy_with_cache(
        vec![],
        vec![cache_rule("cache-bytes")
            .disk(Threshold::Bytes(1500), Threshold::Bytes(1100))
            .build()],
    );
    // Build cache: r-mount's 70 own bytes + r-other's 1 500; r-app and
    // r-base share the image's layers, which count as image bytes.
    let mut snap = with_records(
        snapshot(
            &[img("app", 10 * DAY)
                .tags(&["app:1"])
                .layer("base", 1000)
                .layer("app", 500)],
            vec![],
        ),
        &[
            rec("r-base", 10 * DAY).size(1000),
            rec("r-mount", 10 * DAY).size(70).used(9 * DAY),
            rec("r-other", 10 * DAY).size(1500).used(8 * DAY),
        ],
    );
    hold(&mut snap, "r-base", &["base"]);
    assert_eq!(imagegc::plan::cache_bytes(&snap), 1570);

    let planned = plan(&p, &snap, now());

    // LRU: r-base (never used, frees 0), r-mount (70), r-other (1 500):
    // 1 570 → 1 500 after r-mount, still above 1 100, so r-other too.
    assert_eq!(
        sorted(record_ids(&planned)),
        vec!["r-base", "r-mount", "r-other"]
    );
    let after = planned.notes.iter().find_map(|n| match n {
        Note::DiskPressure { after, .. } => *after,
        _ => None,
    });
    assert_eq!(after, Some(imagegc::plan::Usage::Bytes(0)));
}

// ---------------------------------------------------------------------------
// Engines without a build cache, and explain.

#[test]
fn an_engine_without_build_cache_plans_no_records_and_says_so_once() {
    let p = policy_with_cache(
        vec![rule("images").older_than(secs(DAY)).build()],
        vec![
            cache_rule("c1").unused_for(secs(DAY)).build(),
            cache_rule("c2")
                .disk(Threshold::Ratio(0.5), Threshold::Ratio(0.4))
                .build(),
        ],
    );
    let mut snap = with_records(
        snapshot_on_disk(
            &[img("a", 5 * DAY).tags(&["a:1"]).layer("a", 10)],
            vec![],
            disk(9_000),
        ),
        &[rec("r", 5 * DAY)],
    );
    snap.cache.availability = CacheAvailability::Unsupported;

    let planned = plan(&p, &snap, now());

    assert!(planned.records.is_empty());
    assert_eq!(planned.removals.len(), 1);
    let notes: Vec<&Note> = planned
        .notes
        .iter()
        .filter(|n| matches!(n, Note::NoBuildCache { .. }))
        .collect();
    assert_eq!(
        notes,
        vec![&Note::NoBuildCache {
            policies: vec!["c1".to_string(), "c2".to_string()]
        }]
    );
}

#[test]
fn judge_record_shows_each_cache_policy_and_every_safety_rule() {
    let mut p = policy_with_cache(
        vec![],
        vec![
            cache_rule("mounts")
                .types(&["exec.cachemount"])
                .unused_for(secs(DAY))
                .build(),
            cache_rule("all")
                .unused_for(secs(DAY))
                .keep_storage(0)
                .build(),
        ],
    );
    p.safety.min_age = secs(30 * DAY);
    let snap = with_records(
        no_images(),
        &[
            rec("base", 10 * DAY).used(2 * DAY),
            rec("busy", 10 * DAY).parents(&["base"]).in_use(),
        ],
    );
    let base = snap.cache.by_id["base"];

    let (verdicts, protections) = judge_record(&p, &snap, now(), base);

    assert_eq!(verdicts.len(), 2);
    assert!(!verdicts[0].selected && verdicts[0].conditions.is_empty());
    assert!(verdicts[1].selected);
    let keys: Vec<(&str, bool)> = verdicts[1]
        .conditions
        .iter()
        .map(|c| (c.condition, c.holds))
        .collect();
    assert_eq!(keys, vec![("unused_for", true), ("keep_storage", true)]);
    let rules: Vec<&KeptBecause> = protections.iter().map(|p| &p.rule).collect();
    assert!(matches!(rules[0], KeptBecause::TooYoung { since: "created", .. }));
    assert_eq!(rules[1], &KeptBecause::HasChildren { children: 1 });
    assert_eq!(rules.len(), 2);

    let busy = snap.cache.by_id["busy"];
    let (_, protections) = judge_record(&p, &snap, now(), busy);
    assert_eq!(protections[0].rule, KeptBecause::BuildInUse);
    assert_eq!(judge_record(&p, &snap, now(), 99), (vec![], vec![]));
}
