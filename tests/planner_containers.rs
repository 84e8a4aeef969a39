//! The planner and stopped containers (issue 9): one case per rule of
//! `[[containers]]` policies (selectors, `exited_for` from the finish time,
//! `older_than`), the safety of containers (active states, restart
//! policies, containers used by others, Compose, `protect_containers`,
//! `protect_labels`, `min_age` from the finish), the unpinning of images in
//! the same pass with its bytes, then property tests against an
//! independent model.
//!
//! Everything here is pure: snapshots are built in memory and each
//! container's inspect facts set directly.

mod support;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;

use imagegc::accounting::Ledger;
use imagegc::engine::DiskUsage;
use imagegc::plan::{judge, judge_container, plan, KeptBecause, Plan, Reason};
use imagegc::policy::{Policy, StoppedState, Threshold};
use imagegc::snapshot::Snapshot;
use proptest::prelude::*;
use support::{
    container_rule, ctr, glob, img, label, now, policy_with_containers, rule, secs,
    snapshot_with_containers, Ctr, Img, DAY, HOUR,
};

/// Container names the plan removes, in plan order.
fn removed(plan: &Plan) -> Vec<&str> {
    plan.containers.iter().map(|c| c.name.as_str()).collect()
}

fn sorted(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_unstable();
    v
}

fn kept<'p>(plan: &'p Plan, name: &str) -> Option<&'p KeptBecause> {
    plan.kept_containers
        .iter()
        .find(|k| k.name == name)
        .map(|k| &k.reason)
}

/// A policy removing containers exited for over an hour.
fn exited_hour() -> Policy {
    policy_with_containers(
        vec![],
        vec![container_rule("jobs").exited_for(secs(HOUR)).build()],
    )
}

fn app() -> Img {
    img("app", 10 * DAY)
        .tags(&["ci/app:1"])
        .layer("base", 5_000)
}

// ---------------------------------------------------------------------------
// Selectors and conditions.

#[test]
fn exited_for_counts_from_the_finish_not_from_creation() {
    let p = exited_hour();
    let snap = snapshot_with_containers(
        &[app()],
        &[
            ctr("old-finish", "app", "exited")
                .created(30 * DAY)
                .finished(2 * HOUR),
            ctr("new-finish", "app", "exited")
                .created(30 * DAY)
                .finished(30 * 60),
            ctr("dead", "app", "dead").finished(3 * HOUR),
        ],
        None,
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(sorted(removed(&planned)), vec!["dead", "old-finish"]);
    let c = &planned.containers[0];
    assert_eq!(c.policy, "jobs");
    match &c.reason.0[..] {
        [Reason::ExitedFor { idle, since, .. }] => {
            assert_eq!(*since, "finished");
            assert_eq!(idle.num_seconds(), i64::try_from(2 * HOUR).expect("fits"));
        }
        other => panic!("unexpected reason {other:?}"),
    }
    assert!(
        planned.kept_containers.is_empty(),
        "{:?}",
        planned.kept_containers
    );
}

#[test]
fn a_never_started_container_is_selected_only_when_states_names_created_and_counts_from_creation() {
    let snap = snapshot_with_containers(
        &[app()],
        &[ctr("fresh-create", "app", "created").created(3 * HOUR)],
        None,
    );

    let default_states = plan(&exited_hour(), &snap, now());
    assert!(default_states.containers.is_empty());

    let p = policy_with_containers(
        vec![],
        vec![container_rule("creates")
            .states(&[StoppedState::Created])
            .exited_for(secs(2 * HOUR))
            .build()],
    );
    let planned = plan(&p, &snap, now());
    assert_eq!(removed(&planned), vec!["fresh-create"]);
    assert!(matches!(
        planned.containers[0].reason.0[..],
        [Reason::ExitedFor {
            since: "created",
            ..
        }]
    ));
}

#[test]
fn names_images_and_labels_select_and_older_than_counts_from_creation() {
    let p = policy_with_containers(
        vec![],
        vec![container_rule("ci")
            .names(&["ci-*"])
            .images(&["ci/**"])
            .labels(&["job=build"])
            .older_than(secs(DAY))
            .build()],
    );
    let snap = snapshot_with_containers(
        &[app()],
        &[
            ctr("ci-1", "app", "exited")
                .image_ref("ci/app:1")
                .label("job", "build"),
            ctr("ci-young", "app", "exited")
                .image_ref("ci/app:1")
                .label("job", "build")
                .created(2 * HOUR)
                .finished(HOUR + 60),
            ctr("ci-other-image", "app", "exited")
                .image_ref("other/app:1")
                .label("job", "build"),
            ctr("ci-no-label", "app", "exited").image_ref("ci/app:1"),
            ctr("dev-1", "app", "exited")
                .image_ref("ci/app:1")
                .label("job", "build"),
        ],
        None,
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(removed(&planned), vec!["ci-1"]);
    assert!(matches!(
        planned.containers[0].reason.0[..],
        [Reason::OlderThan { .. }]
    ));
}

#[test]
fn a_container_without_inspect_facts_is_never_removed() {
    let snap = snapshot_with_containers(
        &[app()],
        &[ctr("unknown", "app", "exited").no_details()],
        None,
    );
    let planned = plan(&exited_hour(), &snap, now());
    assert!(planned.containers.is_empty());
    assert!(planned.kept_containers.is_empty());
}

#[test]
fn a_container_that_ran_without_a_readable_finish_time_is_never_removed() {
    // Created two days ago; when it stopped is unknown (it may have stopped a
    // minute ago), so neither exited_for nor min_age can count from creation.
    let snap = snapshot_with_containers(
        &[app()],
        &[
            ctr("no-finish", "app", "exited").finish_unknown(),
            ctr("finished", "app", "exited"),
        ],
        None,
    );
    let planned = plan(&exited_hour(), &snap, now());
    assert_eq!(removed(&planned), vec!["finished"]);
}

// ---------------------------------------------------------------------------
// Safety.

#[test]
fn active_containers_are_never_removed_whatever_a_policy_says() {
    let states = ["running", "paused", "restarting", "removing"];
    let containers: Vec<Ctr> = states
        .iter()
        .map(|s| ctr(s, "app", s).finished(10 * DAY))
        .collect();
    let p = policy_with_containers(
        vec![],
        vec![container_rule("all")
            .states(&StoppedState::ALL)
            .older_than(secs(HOUR))
            .build()],
    );
    let snap = snapshot_with_containers(&[app()], &containers, None);

    let planned = plan(&p, &snap, now());

    assert!(planned.containers.is_empty());
    // Not selected (not a stopped state), so not even "kept"; explain says why.
    for (c, state) in states.iter().enumerate() {
        let (_, protections) = judge_container(&p, &snap, now(), c);
        assert_eq!(
            protections[0].rule,
            KeptBecause::ContainerActive {
                state: (*state).to_string()
            }
        );
    }
}

#[test]
fn restart_policies_that_bring_a_container_back_keep_it() {
    let snap = snapshot_with_containers(
        &[app()],
        &[
            ctr("always", "app", "exited").restart("always"),
            ctr("unless", "app", "exited").restart("unless-stopped"),
            ctr("on-failure", "app", "exited").restart("on-failure"),
        ],
        None,
    );

    let planned = plan(&exited_hour(), &snap, now());

    assert_eq!(removed(&planned), vec!["on-failure"]);
    assert_eq!(
        kept(&planned, "always"),
        Some(&KeptBecause::RestartPolicy {
            policy: "always".to_string()
        })
    );
    assert_eq!(
        kept(&planned, "unless"),
        Some(&KeptBecause::RestartPolicy {
            policy: "unless-stopped".to_string()
        })
    );
}

#[test]
fn a_container_another_uses_by_name_id_or_unique_prefix_is_kept() {
    let snap = snapshot_with_containers(
        &[app()],
        &[
            ctr("data", "app", "exited"),
            ctr("uses-data", "app", "running").volumes_from("data"),
            ctr("netns", "app", "exited").id("abcdef0001"),
            ctr("joins-net", "app", "exited").network_of("abcdef"),
            ctr("ambiguous-a", "app", "exited").id("fff1"),
            ctr("ambiguous-b", "app", "exited").id("fff2"),
            ctr("names-prefix", "app", "exited").volumes_from("fff"),
        ],
        None,
    );

    let planned = plan(&exited_hour(), &snap, now());

    assert_eq!(
        kept(&planned, "data"),
        Some(&KeptBecause::UsedByContainer {
            container: snap.containers[1].container.id.clone(),
            how: "volumes_from"
        })
    );
    assert_eq!(
        kept(&planned, "netns"),
        Some(&KeptBecause::UsedByContainer {
            container: snap.containers[3].container.id.clone(),
            how: "network"
        })
    );
    // An ambiguous prefix names neither; the users themselves go.
    assert_eq!(
        sorted(removed(&planned)),
        vec!["ambiguous-a", "ambiguous-b", "joins-net", "names-prefix"]
    );
}

#[test]
fn compose_containers_go_only_with_a_policy_that_selects_the_compose_label() {
    let compose = || ctr("proj-web-1", "app", "exited").label("com.docker.compose.project", "proj");
    let snap = snapshot_with_containers(&[app()], &[compose()], None);

    let planned = plan(&exited_hour(), &snap, now());
    assert!(planned.containers.is_empty());
    assert_eq!(
        kept(&planned, "proj-web-1"),
        Some(&KeptBecause::Compose {
            project: "proj".to_string()
        })
    );

    // A later policy selecting the label is the one allowed to remove it.
    let p = policy_with_containers(
        vec![],
        vec![
            container_rule("jobs").exited_for(secs(HOUR)).build(),
            container_rule("compose")
                .labels(&["com.docker.compose.project=proj"])
                .exited_for(secs(HOUR))
                .build(),
        ],
    );
    let planned = plan(&p, &snap, now());
    assert_eq!(removed(&planned), vec!["proj-web-1"]);
    assert_eq!(planned.containers[0].policy, "compose");
}

#[test]
fn protect_containers_protect_labels_and_min_age_from_the_finish_keep_containers() {
    let mut p = exited_hour();
    p.safety.protect_containers = vec![glob("keep-*")];
    p.safety.protect_labels = vec![label("precious")];
    p.safety.min_age = secs(6 * HOUR);
    let snap = snapshot_with_containers(
        &[app()],
        &[
            ctr("keep-me", "app", "exited"),
            ctr("labelled", "app", "exited").label("precious", "yes"),
            ctr("recent", "app", "exited")
                .created(30 * DAY)
                .finished(2 * HOUR),
            ctr("gone", "app", "exited"),
        ],
        None,
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(removed(&planned), vec!["gone"]);
    assert_eq!(
        kept(&planned, "keep-me"),
        Some(&KeptBecause::ProtectContainer {
            pattern: "keep-*".to_string()
        })
    );
    assert_eq!(
        kept(&planned, "labelled"),
        Some(&KeptBecause::ProtectLabel {
            label: "precious".to_string()
        })
    );
    assert!(matches!(
        kept(&planned, "recent"),
        Some(KeptBecause::TooYoung {
            since: "finished",
            ..
        })
    ));
}

#[test]
fn max_removals_per_run_counts_containers_and_images_together() {
    let mut p = policy_with_containers(
        vec![rule("old").older_than(secs(DAY)).build()],
        vec![container_rule("jobs").exited_for(secs(HOUR)).build()],
    );
    p.safety.max_removals_per_run = NonZeroUsize::new(2);
    let snap = snapshot_with_containers(
        &[
            app(),
            img("lib", 10 * DAY).tags(&["lib:1"]).layer("lib", 10),
        ],
        &[ctr("a", "app", "exited"), ctr("b", "app", "exited")],
        None,
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(removed(&planned), vec!["a", "b"]);
    assert!(planned.removals.is_empty());
    assert!(planned
        .kept
        .iter()
        .all(|k| matches!(k.reason, KeptBecause::RemovalLimit { .. })));
    assert_eq!(
        planned.kept.len(),
        2,
        "app:1 and lib:1 wait: {:?}",
        planned.kept
    );
}

// ---------------------------------------------------------------------------
// Unpinning and bytes.

#[test]
fn removing_the_last_container_of_an_image_lets_the_same_pass_remove_the_image() {
    let p = policy_with_containers(
        vec![rule("old").older_than(secs(DAY)).build()],
        vec![container_rule("jobs").exited_for(secs(HOUR)).build()],
    );
    let snap = snapshot_with_containers(
        &[
            app(),
            img("kept", 10 * DAY)
                .tags(&["ci/kept:1"])
                .layer("base", 5_000)
                .layer("k", 300),
        ],
        &[
            ctr("job-1", "app", "exited").size_rw(Some(1_000)),
            ctr("job-2", "app", "exited").size_rw(None),
            ctr("job-3", "kept", "exited").size_rw(Some(70)),
            ctr("svc", "kept", "running"),
        ],
        None,
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(removed(&planned), vec!["job-1", "job-2", "job-3"]);
    let bytes: Vec<u64> = planned.containers.iter().map(|c| c.reclaim_bytes).collect();
    assert_eq!(bytes, vec![1_000, 0, 70]);
    // job-2 was app's last user; kept is still pinned by svc.
    let unpins: Vec<&[usize]> = planned
        .containers
        .iter()
        .map(|c| c.unpins.as_slice())
        .collect();
    assert_eq!(unpins, vec![&[][..], &[0][..], &[][..]]);

    assert_eq!(planned.removals.len(), 1, "{:?}", planned.removals);
    let r = &planned.removals[0];
    assert_eq!(r.reference.as_deref(), Some("ci/app:1"));
    assert_eq!(r.unpinned_by, vec!["job-1", "job-2"]);
    assert!(r.deletes_image);
    // base is shared with the kept image: only app's own layers would free;
    // it has none of its own.
    assert_eq!(r.reclaim_bytes, 0);
    assert_eq!(planned.reclaim_bytes, 1_070);
    assert!(planned
        .kept
        .iter()
        .any(|k| k.reference.as_deref() == Some("ci/kept:1")
            && k.reason
                == KeptBecause::InUse {
                    container: snap.containers[3].container.id.clone(),
                    state: "running".to_string()
                }));
}

#[test]
fn an_untagged_image_unpinned_by_its_container_becomes_a_dangling_candidate() {
    let p = policy_with_containers(
        vec![rule("dangling")
            .dangling(true)
            .older_than(secs(DAY))
            .build()],
        vec![container_rule("jobs").exited_for(secs(HOUR)).build()],
    );
    let snap = snapshot_with_containers(
        &[img("old", 10 * DAY).layer("o", 4_000)],
        &[ctr("job", "old", "exited").size_rw(Some(25))],
        None,
    );

    let planned = plan(&p, &snap, now());

    assert_eq!(removed(&planned), vec!["job"]);
    assert_eq!(planned.containers[0].unpins, vec![0]);
    assert_eq!(planned.removals.len(), 1);
    assert_eq!(planned.removals[0].reference, None);
    assert_eq!(planned.removals[0].unpinned_by, vec!["job"]);
    assert_eq!(planned.reclaim_bytes, 4_025);

    // Without the container policy the image stays pinned.
    let alone = policy_with_containers(
        vec![rule("dangling")
            .dangling(true)
            .older_than(secs(DAY))
            .build()],
        vec![],
    );
    assert!(plan(&alone, &snap, now()).removals.is_empty());
}

#[test]
fn a_disk_policy_counts_the_bytes_container_removals_freed() {
    let p = policy_with_containers(
        vec![rule("pressure")
            .disk(Threshold::Ratio(0.8), Threshold::Ratio(0.5))
            .build()],
        vec![container_rule("jobs").exited_for(secs(HOUR)).build()],
    );
    let disk = DiskUsage {
        total_bytes: 10_000,
        used_bytes: 9_000,
        ..DiskUsage::default()
    };
    let snap = snapshot_with_containers(
        &[img("lib", 10 * DAY).tags(&["lib:1"]).layer("lib", 1_000)],
        &[ctr("big", "app", "exited").size_rw(Some(5_000))],
        Some(disk),
    );

    let planned = plan(&p, &snap, now());

    // 9,000 - 5,000 = 4,000 used: already below disk_low, no image goes.
    assert_eq!(removed(&planned), vec!["big"]);
    assert!(planned.removals.is_empty(), "{:?}", planned.removals);
    assert_eq!(planned.reclaim_bytes, 5_000);
}

#[test]
fn the_ledger_frees_the_writable_layer_once_and_deletes_an_image_whose_last_user_goes() {
    let snap = snapshot_with_containers(
        &[img("app", DAY).tags(&["app:1"]).layer("a", 500)],
        &[ctr("c", "app", "exited").size_rw(Some(40))],
        None,
    );
    let mut ledger = Ledger::new(&snap);
    assert!(ledger.in_use(0));
    // The tag goes first here: the image waits for its container.
    assert!(ledger.remove_reference(0).deleted.is_empty());
    let effect = ledger.remove_container(0);
    assert_eq!(effect.deleted, vec![0]);
    assert_eq!(effect.freed, 540);
    assert!(!ledger.in_use(0));
    assert_eq!(ledger.remove_container(0).freed, 0);
    assert_eq!(ledger.remove_container(7).freed, 0);
    assert_eq!(ledger.freed(), 540);
}

// ---------------------------------------------------------------------------
// Explain.

#[test]
fn judge_container_shows_each_policy_and_every_safety_rule() {
    let mut p = policy_with_containers(
        vec![],
        vec![
            container_rule("ci")
                .names(&["ci-*"])
                .exited_for(secs(HOUR))
                .build(),
            container_rule("long").exited_for(secs(10 * DAY)).build(),
        ],
    );
    p.safety.protect_containers = vec![glob("ci-keep")];
    let snap = snapshot_with_containers(
        &[app()],
        &[ctr("ci-keep", "app", "exited").restart("always")],
        None,
    );

    let (verdicts, protections) = judge_container(&p, &snap, now(), 0);

    assert_eq!(verdicts.len(), 2);
    assert!(verdicts[0].selected && verdicts[0].conditions[0].holds);
    assert!(verdicts[1].selected && !verdicts[1].conditions[0].holds);
    let rules: Vec<&str> = protections.iter().map(|p| p.rule.word()).collect();
    assert_eq!(rules, vec!["restart_policy", "protect_container"]);
    assert_eq!(judge_container(&p, &snap, now(), 9), (vec![], vec![]));
}

#[test]
fn judge_of_an_image_does_not_count_a_container_the_plan_removes() {
    let p = policy_with_containers(
        vec![rule("old").older_than(secs(DAY)).build()],
        vec![container_rule("jobs").exited_for(secs(HOUR)).build()],
    );
    let snap = snapshot_with_containers(
        &[app()],
        &[ctr("job", "app", "exited"), ctr("svc", "app", "running")],
        None,
    );
    let (_, protections) = judge(&p, &snap, now(), 0);
    let users: Vec<&KeptBecause> = protections.iter().map(|p| &p.rule).collect();
    assert_eq!(
        users,
        vec![&KeptBecause::InUse {
            container: snap.containers[1].container.id.clone(),
            state: "running".to_string()
        }]
    );
}

// ---------------------------------------------------------------------------
// Properties, against an independent model.

const STATES: [&str; 7] = [
    "exited",
    "dead",
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
];
const RESTARTS: [&str; 4] = ["no", "always", "unless-stopped", "on-failure"];

/// One generated container: image index, state, restart policy, finish
/// and creation ages (hours), flags, what it uses.
// Each flag is one independent fact the generator draws.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone)]
struct GenCtr {
    image: usize,
    state: usize,
    restart: usize,
    created_h: u64,
    finished_h: u64,
    size_rw: Option<u64>,
    keep_name: bool,
    keep_label: bool,
    compose: bool,
    details: bool,
    /// Index of another container it mounts volumes from (by name).
    uses: Option<usize>,
}

#[derive(Debug, Clone)]
struct World {
    /// Per image: tagged, and its layers (indices into a pool of 6).
    images: Vec<(bool, Vec<usize>)>,
    containers: Vec<GenCtr>,
    exited_for_h: u64,
    min_age_h: u64,
    select_compose: bool,
    max: Option<usize>,
}

fn arb_world() -> impl Strategy<Value = World> {
    let image = (any::<bool>(), prop::collection::vec(0usize..6, 1..4));
    let images = prop::collection::vec(image, 1..5);
    (images, 0usize..8).prop_flat_map(|(images, n)| {
        let n_img = images.len();
        let c = (
            0..n_img,
            0..STATES.len(),
            0..RESTARTS.len(),
            0u64..100,
            0u64..100,
            prop::option::of(0u64..10_000),
            prop::bool::weighted(0.15),
            prop::bool::weighted(0.15),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.9),
            prop::option::weighted(0.2, 0..n.max(1)),
        )
            .prop_map(
                |(
                    image,
                    state,
                    restart,
                    created_h,
                    finished_h,
                    size_rw,
                    kn,
                    kl,
                    compose,
                    details,
                    uses,
                )| {
                    GenCtr {
                        image,
                        state,
                        restart,
                        created_h: created_h.max(finished_h),
                        finished_h,
                        size_rw,
                        keep_name: kn,
                        keep_label: kl,
                        compose,
                        details,
                        uses,
                    }
                },
            );
        (
            Just(images),
            prop::collection::vec(c, n),
            0u64..50,
            0u64..50,
            any::<bool>(),
            prop::option::of(1usize..6),
        )
            .prop_map(
                |(images, containers, exited_for_h, min_age_h, select_compose, max)| World {
                    images,
                    containers,
                    exited_for_h,
                    min_age_h,
                    select_compose,
                    max,
                },
            )
    })
}

fn ctr_name(c: usize, g: &GenCtr) -> String {
    if g.keep_name {
        format!("keep-{c}")
    } else {
        format!("job-{c}")
    }
}

fn build(w: &World) -> (Policy, Snapshot) {
    let images: Vec<Img> = w
        .images
        .iter()
        .enumerate()
        .map(|(i, (tagged, layers))| {
            let mut im = img(&format!("i{i}"), 100 * HOUR);
            if *tagged {
                im = im.tags(&[&format!("repo/i{i}:1")]);
            }
            // A layer per pool slot, stacked in the order given (distinct
            // chains per image position keep the model a set of layers).
            let mut seen = HashSet::new();
            for &l in layers {
                if seen.insert(l) {
                    im = im.layer(&format!("l{l}"), 100 * (l as u64 + 1));
                }
            }
            im
        })
        .collect();
    let containers: Vec<Ctr> = w
        .containers
        .iter()
        .enumerate()
        .map(|(c, g)| {
            let mut x = ctr(&ctr_name(c, g), &format!("i{}", g.image), STATES[g.state])
                .id(&format!("{c:02}c0ffee"))
                .created(g.created_h * HOUR)
                .restart(RESTARTS[g.restart])
                .size_rw(g.size_rw);
            if STATES[g.state] != "created" {
                x = x.finished(g.finished_h * HOUR);
            }
            if g.keep_label {
                x = x.label("precious", "1");
            }
            if g.compose {
                x = x.label("com.docker.compose.project", "p");
            }
            if let Some(u) = g.uses.filter(|&u| u != c && u < w.containers.len()) {
                x = x.volumes_from(&ctr_name(u, &w.containers[u]));
            }
            if !g.details {
                x = x.no_details();
            }
            x
        })
        .collect();
    let mut containers_rules = vec![container_rule("jobs")
        .states(&StoppedState::ALL)
        .exited_for(secs(w.exited_for_h * HOUR))
        .build()];
    if w.select_compose {
        containers_rules.push(
            container_rule("compose")
                .states(&StoppedState::ALL)
                .labels(&["com.docker.compose.project"])
                .exited_for(secs(w.exited_for_h * HOUR))
                .build(),
        );
    }
    let mut p = policy_with_containers(
        vec![
            rule("old").older_than(secs(HOUR)).build(),
            rule("dangling")
                .dangling(true)
                .older_than(secs(HOUR))
                .build(),
        ],
        containers_rules,
    );
    p.safety.protect_containers = vec![glob("keep-*")];
    p.safety.protect_labels = vec![label("precious")];
    p.safety.min_age = secs(w.min_age_h * HOUR);
    p.safety.max_removals_per_run = w.max.and_then(NonZeroUsize::new);
    let snap = snapshot_with_containers(&images, &containers, None);
    (p, snap)
}

/// The model's answer: may container `c` be removed (safety and policy,
/// before any limit)?
fn model_removable(w: &World, c: usize) -> bool {
    let g = &w.containers[c];
    let state = STATES[g.state];
    let stopped = matches!(state, "exited" | "dead" | "created");
    let since_h = if state == "created" {
        g.created_h
    } else {
        g.finished_h
    };
    let used = w
        .containers
        .iter()
        .enumerate()
        .any(|(o, other)| o != c && other.details && other.uses == Some(c));
    g.details
        && stopped
        && !matches!(RESTARTS[g.restart], "always" | "unless-stopped")
        && !used
        && (!g.compose || w.select_compose)
        && !g.keep_name
        && !g.keep_label
        && since_h > w.exited_for_h
        && since_h >= w.min_age_h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn containers_removed_are_exactly_the_safe_selected_ones_and_images_only_after_every_user(
        w in arb_world()
    ) {
        let (p, snap) = build(&w);
        let planned = plan(&p, &snap, now());
        let gone: HashSet<usize> = planned.containers.iter().map(|c| c.container).collect();

        // Never an unsafe one; without a limit, every safe selected one.
        for &c in &gone {
            prop_assert!(model_removable(&w, c), "removed {c}: {:?}", w.containers[c]);
        }
        if w.max.is_none() {
            let want: HashSet<usize> =
                (0..w.containers.len()).filter(|&c| model_removable(&w, c)).collect();
            prop_assert_eq!(&gone, &want);
        }
        let total = planned.containers.len() + planned.removals.len() + planned.records.len();
        if let Some(max) = w.max {
            prop_assert!(total <= max, "{total} removals over max {max}");
        }

        // An image goes only once every container of it went earlier in
        // the same plan, and says which ones unpinned it.
        for r in &planned.removals {
            let users: Vec<usize> = (0..w.containers.len())
                .filter(|&c| w.containers[c].image == r.image)
                .collect();
            for c in &users {
                prop_assert!(gone.contains(c), "image {} removed while container {c} stays", r.image);
            }
            let mut names: Vec<String> = users.iter().map(|&c| ctr_name(c, &w.containers[c])).collect();
            names.sort();
            let mut said = r.unpinned_by.clone();
            said.sort();
            prop_assert_eq!(said, names);
        }
        // What each container removal unpins: its image, when it was the
        // last of its users in plan order.
        let mut left: HashMap<usize, usize> = HashMap::new();
        for g in &w.containers {
            *left.entry(g.image).or_default() += 1;
        }
        for cr in &planned.containers {
            let image = w.containers[cr.container].image;
            let n = left.get_mut(&image).expect("counted");
            *n -= 1;
            let want: Vec<usize> = if *n == 0 { vec![image] } else { vec![] };
            prop_assert_eq!(&cr.unpins, &want);
            prop_assert_eq!(cr.reclaim_bytes, w.containers[cr.container].size_rw.unwrap_or(0));
        }

        // Bytes, as a set model: writable layers of the removed containers
        // plus every layer no surviving image uses.
        let deleted: HashSet<usize> = (0..w.images.len())
            .filter(|&i| {
                let tagged = w.images[i].0;
                planned.removals.iter().any(|r| r.image == i && (tagged == r.reference.is_some()))
            })
            .collect();
        for r in &planned.removals {
            prop_assert_eq!(r.deletes_image, deleted.contains(&r.image));
        }
        let live_layers: HashSet<usize> = (0..w.images.len())
            .filter(|i| !deleted.contains(i))
            .flat_map(|i| w.images[i].1.iter().copied())
            .collect();
        let all_layers: HashSet<usize> =
            w.images.iter().flat_map(|(_, l)| l.iter().copied()).collect();
        let layer_bytes: u64 = all_layers
            .difference(&live_layers)
            .map(|&l| 100 * (l as u64 + 1))
            .sum();
        let rw: u64 = planned.containers.iter().map(|c| c.reclaim_bytes).sum();
        prop_assert_eq!(planned.reclaim_bytes, rw + layer_bytes);
    }
}
