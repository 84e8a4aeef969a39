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

use imagegc::accounting::{Effect, Ledger};
use imagegc::engine::DiskUsage;
use imagegc::plan::{judge_record, plan, KeptBecause, Note, Plan, Reason, RecordRemoval};
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
        ..DiskUsage::default()
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

    assert_eq!(
        sorted(record_ids(&planned)),
        vec!["never-used", "used-long-ago"]
    );
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
    let p = policy_with_cache(vec![], vec![cache_rule("cache").keep_storage(250).build()]);
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
    let snap = with_records(no_images(), &[rec("older", 5 * DAY), rec("newer", 2 * DAY)]);

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
    let p = policy_with_cache(
        vec![],
        vec![cache_rule("cache").unused_for(secs(DAY)).build()],
    );
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
    assert_eq!(
        kept_record(&planned, "busy"),
        Some(&KeptBecause::BuildInUse)
    );
    assert_eq!(
        kept_record(&planned, "base"),
        Some(&KeptBecause::HasChildren { children: 1 })
    );
}

#[test]
fn min_age_counts_from_a_records_creation() {
    let mut p = policy_with_cache(vec![], vec![cache_rule("cache").keep_storage(0).build()]);
    p.safety.min_age = secs(2 * HOUR);
    let snap = with_records(no_images(), &[rec("fresh", HOUR), rec("settled", 3 * HOUR)]);

    let planned = plan(&p, &snap, now());

    assert_eq!(record_ids(&planned), vec!["settled"]);
    match kept_record(&planned, "fresh") {
        Some(KeptBecause::TooYoung { since, .. }) => assert_eq!(*since, "created"),
        other => panic!("fresh should be kept for min_age: {other:?}"),
    }
}

#[test]
fn children_go_before_parents_and_a_parent_waits_for_every_child() {
    let p = policy_with_cache(
        vec![],
        vec![cache_rule("cache").unused_for(secs(DAY)).build()],
    );
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

/// `app:1`, built by `BuildKit` on `base`: records hold both of its layers.
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
    let p = policy_with_cache(
        vec![],
        vec![cache_rule("cache").unused_for(secs(DAY)).build()],
    );
    let snap = buildkit_world();

    let planned = plan(&p, &snap, now());

    assert_eq!(record(&planned, "r-app").reclaim_bytes, 0);
    assert_eq!(record(&planned, "r-base").reclaim_bytes, 0);
    assert_eq!(record(&planned, "r-mount").reclaim_bytes, 70);
    assert_eq!(planned.reclaim_bytes, 70);
}

// ---------------------------------------------------------------------------
// The ledger itself, both directions.

/// Images `one` (base `b` 1 000, `x` 10) and `two` (`b`); record `held`
/// holds `b` and `x` (listed twice, and an index out of range), record
/// `own` has 7 bytes of its own.
fn ledger_world() -> Snapshot {
    let images = [
        img("one", DAY)
            .tags(&["one:1"])
            .layer("b", 1000)
            .layer("x", 10),
        img("two", DAY).tags(&["two:1"]).layer("b", 1000),
    ];
    let mut snap = with_records(
        snapshot(&images, vec![]),
        &[rec("held", DAY).size(1010), rec("own", DAY).size(7)],
    );
    hold(&mut snap, "held", &["b", "x", "x"]);
    snap.cache.holds[0].push(99);
    snap
}

#[test]
fn ledger_frees_a_held_layer_only_with_its_last_user_of_either_kind() {
    let snap = ledger_world();
    let mut ledger = Ledger::new(&snap);
    let one = ledger.remove_reference(0);
    assert_eq!((one.freed, one.held), (0, 10), "x is held by the record");
    assert_eq!(ledger.remove_record(0).freed, 10, "b is still used by two");
    let two = ledger.remove_reference(1);
    assert_eq!((two.freed, two.held), (1000, 0));
    assert_eq!(ledger.freed(), 1010);
    assert_eq!(ledger.freed_layer_bytes(), 1010);
    assert_eq!(ledger.freed_cache_bytes(), 0);
}

#[test]
fn ledger_frees_a_records_own_bytes_once_and_nothing_for_a_bad_index() {
    let snap = ledger_world();
    let mut ledger = Ledger::new(&snap);
    assert_eq!(ledger.remove_record(1).freed, 7);
    assert_eq!(ledger.remove_record(1).freed, 0);
    assert_eq!(ledger.remove_record(42), Effect::default());
    assert!(ledger.is_record_removed(1));
    assert!(!ledger.is_record_removed(42));
    assert_eq!(ledger.freed_cache_bytes(), 7);
}

#[test]
fn cache_bytes_are_own_bytes_and_held_layers_no_image_uses() {
    let mut snap = ledger_world();
    assert_eq!(
        imagegc::plan::cache_bytes(&snap),
        7,
        "b and x are image bytes"
    );
    snap.images.clear();
    assert_eq!(imagegc::plan::cache_bytes(&snap), 1017);
    let mut ledger = Ledger::new(&snap);
    assert_eq!(ledger.remove_record(0).freed, 1010);
    assert_eq!(ledger.freed_cache_bytes(), 1010);
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
    assert!(matches!(
        r.reason.0.first(),
        Some(Reason::DiskPressure { .. })
    ));
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
            rec("child", 10 * DAY)
                .size(1000)
                .parents(&["parent"])
                .used(8 * DAY),
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
    assert!(matches!(
        rules[0],
        KeptBecause::TooYoung {
            since: "created",
            ..
        }
    ));
    assert_eq!(rules[1], &KeptBecause::HasChildren { children: 1 });
    assert_eq!(rules.len(), 2);

    let busy = snap.cache.by_id["busy"];
    let (_, protections) = judge_record(&p, &snap, now(), busy);
    assert_eq!(protections[0].rule, KeptBecause::BuildInUse);
    assert_eq!(judge_record(&p, &snap, now(), 99), (vec![], vec![]));
}

// ---------------------------------------------------------------------------
// Property tests: random images sharing layers, random records (some shared
// with those layers, some in use, parents among earlier records), random
// policies of both kinds in a random file order, checked against an
// independent model.

#[derive(Debug, Clone)]
struct ImgSeed {
    layers: Vec<usize>,
    tags: usize,
    created_hours: u64,
    in_use: bool,
}

#[derive(Debug, Clone)]
struct RecSeed {
    parents: Vec<usize>,
    kind: usize,
    in_use: bool,
    size: u64,
    created_hours: u64,
    /// Hours after creation it was last used, if ever.
    used_after: Option<u64>,
    /// Pool layers it shares (when any of them exists in the snapshot).
    shares: Vec<usize>,
}

#[derive(Debug, Clone)]
struct WorldSeed {
    pool: Vec<u64>,
    images: Vec<ImgSeed>,
    records: Vec<RecSeed>,
    other_used: u64,
    free: u64,
}

const KINDS: [&str; 3] = ["regular", "source.local", "exec.cachemount"];

fn img_seed(pool: usize) -> impl Strategy<Value = ImgSeed> {
    (
        prop::collection::vec(0..pool, 1..4),
        0usize..3,
        1u64..30 * 24,
        prop::bool::weighted(0.1),
    )
        .prop_map(|(layers, tags, created_hours, in_use)| ImgSeed {
            layers,
            tags,
            created_hours,
            in_use,
        })
}

fn rec_seed(pool: usize) -> impl Strategy<Value = RecSeed> {
    (
        prop::collection::vec(0usize..8, 0..3),
        0..KINDS.len(),
        prop::bool::weighted(0.15),
        0u64..1500,
        0u64..30 * 24,
        prop::option::of(0u64..30 * 24),
        prop::collection::vec(0..pool, 0..3),
    )
        .prop_map(
            |(parents, kind, in_use, size, created_hours, used_after, shares)| RecSeed {
                parents,
                kind,
                in_use,
                size,
                created_hours,
                used_after,
                shares,
            },
        )
}

fn world_seed() -> impl Strategy<Value = WorldSeed> {
    prop::collection::vec(1u64..1000, 1..7).prop_flat_map(|pool| {
        let n = pool.len();
        (
            Just(pool),
            prop::collection::vec(img_seed(n), 0..6),
            prop::collection::vec(rec_seed(n), 0..9),
            0u64..3000,
            0u64..6000,
        )
            .prop_map(|(pool, images, records, other_used, free)| WorldSeed {
                pool,
                images,
                records,
                other_used,
                free,
            })
    })
}

fn build_world(seed: &WorldSeed) -> Snapshot {
    let images: Vec<_> = seed
        .images
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let tags: Vec<String> = (0..s.tags).map(|t| format!("repo{i}:t{t}")).collect();
            let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
            let mut im = img(&format!("i{i}"), s.created_hours * HOUR).tags(&tag_refs);
            let mut added = HashSet::new();
            for &l in &s.layers {
                if added.insert(l) {
                    im = im.layer(&format!("l{l}"), seed.pool[l]);
                }
            }
            im
        })
        .collect();
    let containers = seed
        .images
        .iter()
        .enumerate()
        .filter(|(_, s)| s.in_use)
        .map(|(i, _)| support::container(&format!("c{i}"), &format!("i{i}"), "running"))
        .collect();
    let base = snapshot(&images, containers);
    let records: Vec<Rec> = seed
        .records
        .iter()
        .enumerate()
        .map(|(j, s)| {
            let created = s.created_hours * HOUR;
            let parents: Vec<String> = s
                .parents
                .iter()
                .filter(|&&p| p < j)
                .map(|p| format!("r{p}"))
                .collect();
            let parent_refs: Vec<&str> = parents.iter().map(String::as_str).collect();
            let mut r = rec(&format!("r{j}"), created)
                .kind(KINDS[s.kind])
                .size(s.size)
                .parents(&parent_refs);
            if let Some(after) = s.used_after {
                r = r.used(created.saturating_sub(after * HOUR));
            }
            if s.in_use {
                r = r.in_use();
            }
            r
        })
        .collect();
    let mut snap = with_records(base, &records);
    for (j, s) in seed.records.iter().enumerate() {
        let held: Vec<u32> = s
            .shares
            .iter()
            .filter_map(|&l| {
                let chain = format!("sha256:l{l}");
                snap.layers.iter().position(|x| x.chain_id == chain)
            })
            .map(|l| u32::try_from(l).expect("small"))
            .collect();
        if !held.is_empty() {
            snap.cache.holds[j] = held;
            snap.cache.own_bytes[j] = 0;
            snap.cache.records[j].shared = true;
        }
    }
    // The disk holds the images, the build cache and other files.
    let own: u64 = snap.cache.own_bytes.iter().sum();
    let used = snap.image_bytes() + own + seed.other_used;
    snap.disk = Some(DiskUsage {
        total_bytes: used + seed.free + 1,
        used_bytes: used,
        ..DiskUsage::default()
    });
    snap
}

#[derive(Debug, Clone)]
enum CacheSeed {
    UnusedFor(u64),
    OlderThan(u64),
    KeepStorage(u64),
    Disk(f64, f64),
}

#[derive(Debug, Clone)]
struct PolicySeed {
    image_rule: Option<(bool, u64, f64, f64)>,
    cache_rules: Vec<(Vec<usize>, CacheSeed)>,
    order_seed: Vec<usize>,
    max: Option<usize>,
    min_age_hours: u64,
}

fn watermarks() -> impl Strategy<Value = (f64, f64)> {
    (0.2f64..1.0, 0.05f64..0.95).prop_map(|(high, f)| (high, high * f))
}

fn cache_seed() -> impl Strategy<Value = CacheSeed> {
    prop_oneof![
        (1u64..20 * 24).prop_map(CacheSeed::UnusedFor),
        (1u64..20 * 24).prop_map(CacheSeed::OlderThan),
        (0u64..3000).prop_map(CacheSeed::KeepStorage),
        watermarks().prop_map(|(h, l)| CacheSeed::Disk(h, l)),
    ]
}

fn policy_seed() -> impl Strategy<Value = PolicySeed> {
    (
        prop::option::of((any::<bool>(), 1u64..20 * 24, watermarks())),
        prop::collection::vec(
            (prop::collection::vec(0..KINDS.len(), 0..3), cache_seed()),
            1..4,
        ),
        prop::collection::vec(0usize..100, 4),
        prop::option::of(1usize..8),
        0u64..3,
    )
        .prop_map(
            |(image_rule, cache_rules, order_seed, max, min_age_hours)| PolicySeed {
                image_rule: image_rule.map(|(disk, hours, (h, l))| (disk, hours, h, l)),
                cache_rules,
                order_seed,
                max,
                min_age_hours,
            },
        )
}

fn build_policy(seed: &PolicySeed) -> Policy {
    let rules = seed
        .image_rule
        .iter()
        .map(|&(disk, hours, h, l)| {
            let r = rule("images");
            if disk {
                r.disk(Threshold::Ratio(h), Threshold::Ratio(l)).build()
            } else {
                r.unused_for(secs(hours * HOUR)).build()
            }
        })
        .collect();
    let cache_rules = seed
        .cache_rules
        .iter()
        .enumerate()
        .map(|(k, (types, c))| {
            let names: Vec<&str> = types.iter().map(|&t| KINDS[t]).collect();
            let r = cache_rule(&format!("cache{k}")).types(&names);
            match *c {
                CacheSeed::UnusedFor(h) => r.unused_for(secs(h * HOUR)),
                CacheSeed::OlderThan(h) => r.older_than(secs(h * HOUR)),
                CacheSeed::KeepStorage(b) => r.keep_storage(b),
                CacheSeed::Disk(h, l) => r.disk(Threshold::Ratio(h), Threshold::Ratio(l)),
            }
            .build()
        })
        .collect();
    let mut p = policy_with_cache(rules, cache_rules);
    // A random file order across both kinds.
    let mut order = p.order.clone();
    let mut keyed: Vec<(usize, RuleRef)> = order
        .drain(..)
        .enumerate()
        .map(|(i, r)| (seed.order_seed[i % seed.order_seed.len()] * 10 + i, r))
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    p.order = keyed.into_iter().map(|(_, r)| r).collect();
    p.safety.max_removals_per_run = seed.max.and_then(NonZeroUsize::new);
    p.safety.min_age = secs(seed.min_age_hours * HOUR);
    p
}

// --- The independent model: which images a set of removals deletes, and
// the bytes a set of image and record removals frees.

/// Removed images (every tag removed, or the untagged image by ID; the
/// world has no parents or digests) and removed records, by index.
#[derive(Debug, Default, Clone)]
struct Removed {
    tags: HashMap<usize, usize>,
    untagged: HashSet<usize>,
    records: HashSet<usize>,
}

fn model_freed(snap: &Snapshot, removed: &Removed) -> u64 {
    let deleted: Vec<bool> = (0..snap.images.len())
        .map(|i| {
            let tags = snap.images[i].tags.len();
            let gone = if tags == 0 {
                removed.untagged.contains(&i)
            } else {
                removed.tags.get(&i).copied().unwrap_or(0) >= tags
            };
            gone && !snap.in_use[i]
        })
        .collect();
    let mut freed = 0u64;
    for (l, layer) in snap.layers.iter().enumerate() {
        let image_left = snap
            .images
            .iter()
            .enumerate()
            .any(|(i, im)| !deleted[i] && im.layers.contains(&(l as u32)));
        let record_left = (0..snap.cache.len())
            .any(|r| !removed.records.contains(&r) && snap.cache.holds[r].contains(&(l as u32)));
        if !image_left && !record_left {
            freed += layer.size;
        }
    }
    for &r in &removed.records {
        freed += snap.cache.own_bytes[r];
    }
    freed
}

/// One step of the plan in execution order.
#[derive(Debug, Clone, Copy)]
enum Step {
    Image(usize, bool),
    Record(usize),
}

fn steps(plan: &Plan) -> Vec<(Step, u64, String)> {
    plan.removals
        .iter()
        .map(|r| {
            (
                Step::Image(r.image, r.reference.is_some()),
                r.reclaim_bytes,
                r.policy.clone(),
            )
        })
        .chain(
            plan.records
                .iter()
                .map(|r| (Step::Record(r.record), r.reclaim_bytes, r.policy.clone())),
        )
        .collect()
}

fn apply(removed: &mut Removed, step: Step) {
    match step {
        Step::Image(i, true) => *removed.tags.entry(i).or_default() += 1,
        Step::Image(i, false) => {
            removed.untagged.insert(i);
        }
        Step::Record(r) => {
            removed.records.insert(r);
        }
    }
}

fn removed_by(all: &[(Step, u64, String)], keep: impl Fn(&str) -> bool) -> Removed {
    let mut removed = Removed::default();
    for (step, _, policy) in all {
        if keep(policy) {
            apply(&mut removed, *step);
        }
    }
    removed
}

fn used_ratio(snap: &Snapshot, freed: u64) -> f64 {
    let d = snap.disk.expect("the world has a disk");
    d.used_bytes.saturating_sub(freed) as f64 / d.total_bytes as f64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn records_in_the_plan_respect_safety_order_bytes_and_the_limit(
        world in world_seed(),
        seed in policy_seed(),
    ) {
        let snap = build_world(&world);
        let p = build_policy(&seed);
        let planned = plan(&p, &snap, now());

        // Never an in-use record, never one younger than min_age.
        for r in &planned.records {
            let record = &snap.cache.records[r.record];
            prop_assert!(!record.in_use, "{} is in use", record.id);
            prop_assert!(now() - record.created >= chrono::TimeDelta::from_std(p.safety.min_age).unwrap());
        }

        // Never a parent before its children, never a parent without all
        // of them planned.
        let position: HashMap<usize, usize> = planned
            .records
            .iter()
            .enumerate()
            .map(|(k, r)| (r.record, k))
            .collect();
        prop_assert_eq!(position.len(), planned.records.len(), "a record planned twice");
        for (k, r) in planned.records.iter().enumerate() {
            for c in &snap.cache.children[r.record] {
                let at = position.get(c);
                prop_assert!(at.is_some_and(|&at| at < k),
                    "{} planned at {} but its child {} at {:?}",
                    r.record_id, k, snap.cache.records[*c].id, at);
            }
        }

        // Kept records are not planned, and each is kept once.
        let kept: HashSet<usize> = planned.kept_records.iter().map(|k| k.record).collect();
        prop_assert_eq!(kept.len(), planned.kept_records.len());
        prop_assert!(kept.iter().all(|k| !position.contains_key(k)));

        // max_removals_per_run counts images and records together.
        if let Some(max) = p.safety.max_removals_per_run {
            prop_assert!(planned.removals.len() + planned.records.len() <= max.get());
        }

        // Every removal's bytes, in plan order, equal the model's set
        // computation over shared layers, and so does the total.
        let all = steps(&planned);
        let mut removed = Removed::default();
        let mut before = 0u64;
        for (step, bytes, _) in &all {
            apply(&mut removed, *step);
            let now_freed = model_freed(&snap, &removed);
            prop_assert_eq!(*bytes, now_freed - before, "step {:?}", step);
            before = now_freed;
        }
        prop_assert_eq!(planned.reclaim_bytes, before);

        // Disk pressure, in file order across both kinds: before a disk
        // policy's last removal its disk_low was not reached yet, counting
        // every removal made before it in the pass.
        let disk_policies: Vec<(String, f64)> = p
            .order
            .iter()
            .filter_map(|r| match *r {
                RuleRef::Image(i) => p.rules[i].conditions.disk.map(|d| (p.rules[i].name.clone(), d.low)),
                RuleRef::Cache(i) => p.cache_rules[i].conditions.disk.map(|d| (p.cache_rules[i].name.clone(), d.low)),
                RuleRef::Container(_) => None,
            })
            .map(|(n, low)| match low {
                Threshold::Ratio(r) => (n, r),
                Threshold::Bytes(_) => unreachable!("the generator makes ratios"),
            })
            .collect();
        let disk_names: HashSet<&str> = disk_policies.iter().map(|(n, _)| n.as_str()).collect();
        let mut earlier: HashSet<&str> = HashSet::new();
        for (name, low) in &disk_policies {
            let own: Vec<&(Step, u64, String)> = all.iter().filter(|s| &s.2 == name).collect();
            if !own.is_empty() {
                let base = removed_by(&all, |pol| !disk_names.contains(pol) || earlier.contains(pol));
                let needed = own.iter().enumerate().any(|(skip, _)| {
                    let mut without = base.clone();
                    for (k, s) in own.iter().enumerate() {
                        if k != skip {
                            apply(&mut without, s.0);
                        }
                    }
                    used_ratio(&snap, model_freed(&snap, &without)) > low + 1e-12
                });
                prop_assert!(needed, "policy {} removed past its disk_low {}", name, low);
            }
            earlier.insert(name);
        }
    }

    #[test]
    fn keep_storage_keeps_the_most_recently_used_records_up_to_the_limit_and_no_more(
        world in world_seed(),
        types in prop::collection::vec(0..KINDS.len(), 0..3),
        keep in 0u64..4000,
    ) {
        let snap = build_world(&world);
        let names: Vec<&str> = types.iter().map(|&t| KINDS[t]).collect();
        let mut p = policy_with_cache(
            vec![],
            vec![cache_rule("storage").types(&names).keep_storage(keep).build()],
        );
        p.safety.min_age = secs(0);
        let planned = plan(&p, &snap, now());

        // The model: selected records, most recently used first.
        let cache = &snap.cache;
        let last = |r: usize| {
            let rec = &cache.records[r];
            rec.last_used.filter(|t| *t > rec.created).unwrap_or(rec.created)
        };
        let mut selected: Vec<usize> = (0..cache.len())
            .filter(|&r| names.is_empty() || names.contains(&cache.records[r].kind.as_str()))
            .collect();
        selected.sort_by(|&a, &b| {
            last(b).cmp(&last(a))
                .then(cache.records[b].created.cmp(&cache.records[a].created))
                .then(cache.records[b].id.cmp(&cache.records[a].id))
        });
        let mut total = 0u64;
        let mut kept_by_storage = HashSet::new();
        for &r in &selected {
            if total + cache.records[r].size > keep {
                break;
            }
            total += cache.records[r].size;
            kept_by_storage.insert(r);
        }
        // Up to the limit and no more: the next one would not fit.
        prop_assert!(total <= keep);
        if let Some(&next) = selected.get(kept_by_storage.len()) {
            prop_assert!(total + cache.records[next].size > keep);
        }
        // Exactly the others are wanted: planned, or kept by safety.
        let wanted: HashSet<usize> = planned
            .records
            .iter()
            .map(|r| r.record)
            .chain(planned.kept_records.iter().map(|k| k.record))
            .collect();
        let expected: HashSet<usize> = selected
            .iter()
            .copied()
            .filter(|r| !kept_by_storage.contains(r))
            .collect();
        prop_assert_eq!(wanted, expected);
        // And safety keeps only what it must.
        for k in &planned.kept_records {
            let ok = match k.reason {
                KeptBecause::BuildInUse => cache.records[k.record].in_use,
                KeptBecause::HasChildren { children } => children > 0
                    && cache.children[k.record].iter().filter(|c| !planned.records.iter().any(|r| r.record == **c)).count() == children,
                _ => false,
            };
            prop_assert!(ok, "{:?}", k);
        }
    }

    #[test]
    fn cache_disk_pressure_removes_least_recently_used_records_until_disk_low_and_stops(
        sizes in prop::collection::vec((0u64..2000, 1u64..1000), 1..10),
        used in 1000u64..20_000,
        (high, low) in watermarks(),
    ) {
        // Records without parents or sharing, each last used at a distinct
        // hour: the order the model removes them in is the LRU order.
        let records: Vec<Rec> = sizes
            .iter()
            .enumerate()
            .map(|(j, &(size, hours))| {
                rec(&format!("r{j}"), 100 * DAY).size(size).used(hours * HOUR * 2 + j as u64)
            })
            .collect();
        let total = used + used / 3 + 1;
        let snap = with_records(
            snapshot_on_disk(&[], vec![], DiskUsage { total_bytes: total, used_bytes: used, ..DiskUsage::default() }),
            &records,
        );
        let p = policy_with_cache(
            vec![],
            vec![cache_rule("pressure").disk(Threshold::Ratio(high), Threshold::Ratio(low)).build()],
        );
        let planned = plan(&p, &snap, now());

        let mut expected = Vec::new();
        let start = used as f64 / total as f64;
        if start >= high - 1e-12 {
            let mut lru: Vec<usize> = (0..records.len()).collect();
            lru.sort_by_key(|&j| std::cmp::Reverse(records[j].0.last_used));
            lru.reverse();
            let mut freed = 0u64;
            for j in lru {
                if (used - freed.min(used)) as f64 / total as f64 <= low + 1e-12 {
                    break;
                }
                freed += records[j].0.size;
                expected.push(records[j].0.id.clone());
            }
        }
        let mut got: Vec<String> = planned.records.iter().map(|r| r.record_id.clone()).collect();
        got.sort();
        expected.sort();
        prop_assert_eq!(got, expected);
    }
}
