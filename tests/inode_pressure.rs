//! Inode watermarks in the planner (`inodes_high`/`inodes_low`), pure: a
//! table acts when the share of inodes in use (`df -i`) is at or above its
//! `inodes_high`, removes least recently used first, and stops once the
//! estimate reaches `inodes_low`. No engine says how many inodes an image
//! or a record holds, so the estimate takes inodes to be freed in
//! proportion to bytes: inodes used × (used bytes left / used bytes).

mod support;

use imagegc::engine::DiskUsage;
use imagegc::plan::{judge, plan, Note, Plan, Reason, Removal};
use imagegc::policy::Threshold;
use support::{
    ago, cache_rule, img, now, policy, policy_with_cache, rec, rule, snapshot, snapshot_on_disk,
    with_records, Img, DAY,
};

/// What the plan passes to the engine, in order.
fn targets(plan: &Plan) -> Vec<&str> {
    plan.removals.iter().map(Removal::target).collect()
}

/// A filesystem of 10 000 bytes with `used` in use, and 1 000 inodes with
/// `inodes` in use.
fn disk(used: u64, inodes: u64) -> DiskUsage {
    DiskUsage {
        total_bytes: 10_000,
        used_bytes: used,
        ..DiskUsage::default()
    }
    .with_inodes(1000, 1000 - inodes)
}

/// Five tagged images, least recently used first: e (300 bytes), a (1000),
/// b (700), c (500), d (1500).
fn five_images_last_used_apart() -> Vec<Img> {
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

fn inode_note(plan: &Plan) -> Option<(usize, Option<f64>)> {
    plan.notes.iter().find_map(|n| match n {
        Note::InodePressure {
            removals, after, ..
        } => Some((*removals, *after)),
        _ => None,
    })
}

#[test]
fn an_inode_policy_acts_on_inodes_alone_and_stops_at_the_estimated_inodes_low() {
    let p = policy(vec![rule("inodes").inodes(0.9, 0.8).build()]);
    // Bytes at 50%, far below any disk mark; inodes at 93%. Freeing e (300
    // of 5 000 used bytes) estimates 93% × 0.94 = 87.4%, then a (1 000
    // more) 93% × 0.74 = 68.8%: at or below 80%, so it stops there.
    let snap = snapshot_on_disk(&five_images_last_used_apart(), vec![], disk(5_000, 930));

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["ci/e:1", "ci/a:1"]);
    for r in &planned.removals {
        assert_eq!(r.policy, "inodes");
        assert!(
            matches!(
                r.reason.0.as_slice(),
                [
                    Reason::InodePressure { usage, high },
                    Reason::LeastRecentlyUsed { .. }
                ] if (*usage - 0.93).abs() < 1e-12 && (*high - 0.9).abs() < 1e-12
            ),
            "{:?}",
            r.reason
        );
    }
    let (removals, after) = inode_note(&planned).expect("an inode-pressure note");
    assert_eq!(removals, 2);
    let after = after.expect("an estimate");
    assert!((after - 0.93 * 0.74).abs() < 1e-9, "{after}");
    assert!(
        !planned
            .notes
            .iter()
            .any(|n| matches!(n, Note::DiskPressure { .. } | Note::BelowDiskHigh { .. })),
        "a table without disk watermarks says nothing of the disk: {:?}",
        planned.notes
    );
    // The words say it is an estimate; the JSON names the reason.
    let text = planned.removals[0].reason.to_string();
    assert!(
        text.starts_with("inodes 93.0% at or above inodes_high 90%"),
        "{text}"
    );
    let note = planned
        .notes
        .iter()
        .find(|n| matches!(n, Note::InodePressure { .. }))
        .expect("note")
        .to_string();
    assert!(note.contains("an estimated 68.8%"), "{note}");
    assert!(note.contains("in proportion to bytes freed"), "{note}");
    let json = serde_json::to_value(&planned.removals[0].reason).expect("JSON");
    assert_eq!(json[0]["kind"], "inode_pressure");
    assert_eq!(json[0]["usage"]["ratio"], 0.93);
    assert_eq!(json[0]["high"]["ratio"], 0.9);
}

#[test]
fn below_inodes_high_an_inode_policy_removes_nothing_and_says_so() {
    let p = policy(vec![rule("inodes").inodes(0.9, 0.8).build()]);
    let snap = snapshot_on_disk(&five_images_last_used_apart(), vec![], disk(9_500, 899));

    let planned = plan(&p, &snap, now());

    assert!(planned.removals.is_empty(), "{:?}", targets(&planned));
    assert!(
        planned.notes.iter().any(|n| matches!(
            n,
            Note::BelowInodesHigh { policy, usage, high }
                if policy == "inodes" && (*usage - 0.899).abs() < 1e-12 && (*high - 0.9).abs() < 1e-12
        )),
        "{:?}",
        planned.notes
    );
}

#[test]
fn on_a_filesystem_without_inode_counts_the_inode_watermarks_are_skipped_with_a_note() {
    let p = policy(vec![rule("inodes").inodes(0.9, 0.8).build()]);
    // btrfs: f_files == 0, so no inode counts; bytes are 95% full.
    let btrfs = DiskUsage {
        total_bytes: 10_000,
        used_bytes: 9_500,
        ..DiskUsage::default()
    }
    .with_inodes(0, 0);
    let snap = snapshot_on_disk(&five_images_last_used_apart(), vec![], btrfs);

    let planned = plan(&p, &snap, now());

    assert!(planned.removals.is_empty(), "{:?}", targets(&planned));
    let note = planned
        .notes
        .iter()
        .find(|n| matches!(n, Note::NoInodeCounts { policy } if policy == "inodes"))
        .expect("a note that the filesystem reports no inode counts");
    assert!(
        note.to_string().contains("reports no inode counts"),
        "{note}"
    );

    // A remote engine: no disk at all.
    let remote = snapshot(&five_images_last_used_apart(), vec![]);
    let planned = plan(&p, &remote, now());
    assert!(planned.removals.is_empty());
    assert!(
        planned
            .notes
            .iter()
            .any(|n| matches!(n, Note::InodesUnknown { policy } if policy == "inodes")),
        "{:?}",
        planned.notes
    );
}

#[test]
fn with_both_pairs_the_disk_high_alone_starts_the_table_and_the_inode_low_is_reached_too() {
    let both = || {
        rule("both")
            .disk(Threshold::Ratio(0.85), Threshold::Ratio(0.70))
            .inodes(0.9, 0.8)
            .build()
    };
    // Disk 90%, inodes 50%: the disk starts it; e, a and b bring the disk
    // to 70% (inodes are estimated far below 80% by then).
    let snap = snapshot_on_disk(&five_images_last_used_apart(), vec![], disk(9_000, 500));

    let planned = plan(&policy(vec![both()]), &snap, now());

    assert_eq!(targets(&planned), vec!["ci/e:1", "ci/a:1", "ci/b:1"]);
    assert!(matches!(
        planned.removals[0].reason.0.as_slice(),
        [
            Reason::DiskPressure { .. },
            Reason::LeastRecentlyUsed { .. }
        ]
    ));
    assert!(planned
        .notes
        .iter()
        .any(|n| matches!(n, Note::BelowInodesHigh { .. })));
    assert!(planned
        .notes
        .iter()
        .any(|n| matches!(n, Note::DiskPressure { removals: 3, .. })));
    assert_eq!(inode_note(&planned), None);
}

#[test]
fn with_both_pairs_the_inode_high_alone_starts_the_table_and_it_stops_only_once_every_low_is_reached(
) {
    let p = policy(vec![rule("both")
        .disk(Threshold::Ratio(0.85), Threshold::Ratio(0.70))
        .inodes(0.9, 0.89)
        .build()]);
    // Disk 80% (below disk_high, above disk_low), inodes 91%. Freeing e
    // alone estimates 91% × 7 700 / 8 000 = 87.6%, under inodes_low, but
    // the disk is then 77%, above disk_low: a goes too (67%).
    let snap = snapshot_on_disk(&five_images_last_used_apart(), vec![], disk(8_000, 910));

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["ci/e:1", "ci/a:1"]);
    assert!(matches!(
        planned.removals[0].reason.0.as_slice(),
        [
            Reason::InodePressure { .. },
            Reason::LeastRecentlyUsed { .. }
        ]
    ));
    assert!(planned
        .notes
        .iter()
        .any(|n| matches!(n, Note::BelowDiskHigh { .. })));
    assert_eq!(inode_note(&planned).map(|n| n.0), Some(2));

    // Both at or above high: the removal names both.
    let snap = snapshot_on_disk(&five_images_last_used_apart(), vec![], disk(9_000, 950));
    let planned = plan(&p, &snap, now());
    assert!(matches!(
        planned.removals[0].reason.0.as_slice(),
        [
            Reason::DiskPressure { .. },
            Reason::InodePressure { .. },
            Reason::LeastRecentlyUsed { .. }
        ]
    ));
}

#[test]
fn explain_shows_the_inode_condition_with_its_figures() {
    let p = policy(vec![rule("inodes").inodes(0.9, 0.8).build()]);
    let snap = snapshot_on_disk(&five_images_last_used_apart(), vec![], disk(5_000, 930));

    let (verdicts, _) = judge(&p, &snap, now(), 0);

    let check = &verdicts[0].conditions[0];
    assert_eq!(check.condition, "inodes_high");
    assert!(check.holds);
    assert_eq!(
        check.to_string(),
        "[x] inodes_high: inodes 93.0% vs inodes_high 90% (then least recently used first down \
         to an estimated inodes_low 80%, inodes freed taken in proportion to bytes freed)"
    );
}

#[test]
fn a_cache_inode_policy_removes_least_recently_used_records_until_the_estimated_inodes_low() {
    let p = policy_with_cache(
        vec![],
        vec![cache_rule("cache-inodes").inodes(0.9, 0.8).build()],
    );
    // 4 000 bytes used, inodes 95%: each record frees 1 000 bytes, an
    // estimated 95% × 3/4 = 71.3% after the first.
    let records = [
        rec("oldest", 10 * DAY).size(1000).used(9 * DAY),
        rec("older", 10 * DAY).size(1000).used(8 * DAY),
        rec("newer", 10 * DAY).size(1000).used(7 * DAY),
    ];
    let snap = with_records(snapshot_on_disk(&[], vec![], disk(4_000, 950)), &records);

    let planned = plan(&p, &snap, now());

    let ids: Vec<&str> = planned
        .records
        .iter()
        .map(|r| r.record_id.as_str())
        .collect();
    assert_eq!(ids, ["oldest"]);
    assert!(matches!(
        planned.records[0].reason.0.as_slice(),
        [
            Reason::InodePressure { .. },
            Reason::LeastRecentlyUsed { .. }
        ]
    ));
    assert_eq!(inode_note(&planned).map(|n| n.0), Some(1));

    // Without inode counts the table removes nothing and says why.
    let btrfs = DiskUsage {
        total_bytes: 10_000,
        used_bytes: 4_000,
        ..DiskUsage::default()
    };
    let snap = with_records(snapshot_on_disk(&[], vec![], btrfs), &records);
    let planned = plan(&p, &snap, now());
    assert!(planned.records.is_empty());
    assert!(planned
        .notes
        .iter()
        .any(|n| matches!(n, Note::NoInodeCounts { policy } if policy == "cache-inodes")));
}
