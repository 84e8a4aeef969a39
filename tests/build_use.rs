//! Builds count as use (issue 8): a `BuildKit` build emits only `image tag`
//! for its result, so the base a `FROM` names shows only in the layers the
//! new image shares with it, or in the build-cache records made from it.
//! - The prefix rule: an image whose layer chain is a proper prefix of a
//!   newer image's is used when that image appeared.
//! - The record rule: an image whose top layer a used record holds is used
//!   at the record's `LastUsedAt`.
//! - Both survive in the state (the built image may go, the record be
//!   pruned), and `explain` says "last used by a build".
//! - On the real engine: a base loaded 10 days old, a child built on it by
//!   `BuildKit` now, and a `unused_for = "7d"` policy keeps the base, also
//!   after the child is gone.

mod common;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use imagegc::explain::explain;
use imagegc::fake::{self, FakeEngine};
use imagegc::pass::{self, Memory, Mode};
use imagegc::plan::plan;
use imagegc::policy::Policy;
use imagegc::snapshot::{BuildUser, LastUsedSource, Snapshot};
use imagegc::state::State;
use support::{ago, id, img, now, policy, rule, secs, snapshot, Img, DAY, HOUR, MINUTE};

/// `base:1`, created 10 days ago, two layers, there before tracking began.
fn base() -> Img {
    img("base", 10 * DAY)
        .tags(&["base:1"])
        .layer("b1", 100)
        .layer("b2", 200)
}

/// An image built on `base` (its two layers plus one), first seen `seen_ago`.
fn child(name: &str, seen_ago: u64) -> Img {
    img(name, 10 * DAY)
        .tags(&[&format!("{name}:1")])
        .layer("b1", 100)
        .layer("b2", 200)
        .layer(&format!("own-{name}"), 10)
        .first_seen(ago(seen_ago))
}

fn index(snap: &Snapshot, name: &str) -> usize {
    snap.by_id[&id(name)]
}

/// `unused_for = "7d"` on every tag.
fn unused_7d() -> Policy {
    policy(vec![rule("unused").unused_for(secs(7 * DAY)).build()])
}

fn removed(p: &Policy, snap: &Snapshot) -> Vec<String> {
    plan(p, snap, now())
        .removals
        .iter()
        .map(|r| snap.images[r.image].id.clone())
        .collect()
}

#[test]
fn an_image_built_on_a_base_makes_the_base_used_when_it_appeared() {
    let alone = snapshot(&[base()], vec![]);
    assert_eq!(alone.last_used(0), (ago(10 * DAY), LastUsedSource::Created));
    assert_eq!(
        removed(&unused_7d(), &alone),
        vec![id("base")],
        "control: unused for 10 days, nothing built on it, it goes"
    );

    let snap = snapshot(&[base(), child("app", HOUR)], vec![]);
    let b = index(&snap, "base");
    assert_eq!(snap.last_used(b), (ago(HOUR), LastUsedSource::Build));
    let u = snap.build_use(b).expect("a build use");
    assert_eq!(u.image, Some(index(&snap, "app")));
    assert_eq!(u.by.state_text(), "build of app");
    assert!(
        !removed(&unused_7d(), &snap).contains(&id("base")),
        "the base a build used an hour ago is not unused for 7d"
    );
    // The child is not used by its base.
    assert_eq!(snap.build_use(index(&snap, "app")), None);
}

#[test]
fn an_equal_chain_is_not_a_use_nor_is_an_unrelated_image() {
    // Same layers, another ID (another config): not built on it.
    let twin = img("twin", 10 * DAY)
        .tags(&["twin:1"])
        .layer("b1", 100)
        .layer("b2", 200)
        .first_seen(ago(MINUTE));
    // Shares the bottom layer only: a sibling, not a child of `base`.
    let sibling = img("sibling", 10 * DAY)
        .tags(&["sibling:1"])
        .layer("b1", 100)
        .layer("other", 5)
        .layer("more", 5)
        .first_seen(ago(MINUTE));
    let unrelated = img("unrelated", 10 * DAY)
        .tags(&["unrelated:1"])
        .layer("u1", 100)
        .layer("u2", 100)
        .layer("u3", 100)
        .first_seen(ago(MINUTE));
    let snap = snapshot(&[base(), twin, sibling, unrelated], vec![]);
    let b = index(&snap, "base");
    assert_eq!(snap.build_use(b), None);
    assert_eq!(snap.last_used(b), (ago(10 * DAY), LastUsedSource::Created));
    assert_eq!(removed(&unused_7d(), &snap), vec![id("base")]);
}

#[test]
fn every_image_under_a_deeper_chain_is_used_and_the_newest_child_wins() {
    // os ← runtime ← {app (2 days ago), tool (5 days ago)}, and os ← web (3 days ago).
    let os = img("os", 30 * DAY).tags(&["os:1"]).layer("os", 100);
    let runtime = img("runtime", 20 * DAY)
        .tags(&["runtime:1"])
        .layer("os", 100)
        .layer("rt", 100)
        .first_seen(ago(20 * DAY));
    let on_runtime = |name: &str, seen: u64| {
        img(name, 30 * DAY)
            .tags(&[&format!("{name}:1")])
            .layer("os", 100)
            .layer("rt", 100)
            .layer(&format!("own-{name}"), 1)
            .first_seen(ago(seen))
    };
    let web = img("web", 30 * DAY)
        .tags(&["web:1"])
        .layer("os", 100)
        .layer("own-web", 1)
        .first_seen(ago(3 * DAY));
    let snap = snapshot(
        &[
            os,
            runtime,
            on_runtime("tool", 5 * DAY),
            on_runtime("app", 2 * DAY),
            web,
        ],
        vec![],
    );
    let use_of = |name: &str| snap.build_use(index(&snap, name)).expect(name);
    assert_eq!(use_of("runtime").at, ago(2 * DAY));
    assert_eq!(use_of("runtime").image, Some(index(&snap, "app")));
    assert_eq!(use_of("os").at, ago(2 * DAY), "app is built on os too");
    assert_eq!(use_of("os").image, Some(index(&snap, "app")));
    for leaf in ["tool", "app", "web"] {
        assert_eq!(snap.build_use(index(&snap, leaf)), None, "{leaf}");
    }
}

#[test]
fn an_image_there_before_tracking_appeared_at_its_newest_of_created_and_last_tagged() {
    let mut built = img("app", 3 * DAY)
        .tags(&["app:1"])
        .layer("b1", 100)
        .layer("b2", 200)
        .layer("own", 1);
    built.tracked.basis = imagegc::snapshot::FirstSeenBasis::Baseline;
    built.last_tag_time = Some(ago(DAY));
    let snap = snapshot(&[base(), built.clone()], vec![]);
    assert_eq!(
        snap.last_used(index(&snap, "base")),
        (ago(DAY), LastUsedSource::Build)
    );
    // First seen only at a restart of tracking: that is no appearance.
    built.last_tag_time = None;
    built = built.restarted(ago(HOUR));
    let snap = snapshot(&[base(), built], vec![]);
    assert_eq!(
        snap.build_use(index(&snap, "base")).map(|u| u.at),
        Some(ago(3 * DAY))
    );
}

#[test]
fn a_used_build_cache_record_holding_an_images_top_layer_is_a_use_of_that_image() {
    let other = img("other", 10 * DAY).tags(&["other:1"]).layer("o1", 100);
    let mut used = fake::cache_record("recused0000000000000000000", &[], 0, ago(9 * DAY));
    used.last_used = Some(ago(2 * HOUR));
    used.shared = true;
    // Made 9 days ago and never used since: no use.
    let mut idle = fake::cache_record("recidle0000000000000000000", &[], 0, ago(HOUR));
    idle.shared = true;
    let mut snap = snapshot(&[base(), other], vec![]).with_build_cache(vec![used, idle]);
    let b = index(&snap, "base");
    let o = index(&snap, "other");
    let top = |i: usize| *snap.images[i].layers.last().expect("a layer");
    let (base_top, other_top) = (top(b), top(o));
    snap.cache.holds[0] = vec![base_top];
    snap.cache.holds[1] = vec![other_top];
    assert_eq!(snap.last_used(b), (ago(2 * HOUR), LastUsedSource::Build));
    let u = snap.build_use(b).expect("a record use");
    assert_eq!(u.record, Some(0));
    assert_eq!(
        u.by.state_text(),
        "build cache record recused0000000000000000000"
    );
    assert_eq!(
        snap.last_used(o),
        (ago(10 * DAY), LastUsedSource::Created),
        "a record created an hour ago and never used is no use"
    );
    assert_eq!(removed(&unused_7d(), &snap), vec![id("other")]);
    let p = unused_7d();
    let text = explain(&p, &snap, &plan(&p, &snap, now()), now(), b).to_text();
    assert!(
        text.contains("last used    by a build at")
            && text.contains(
                "build-cache record recused0000000000000000000 (fileop target) made from it was used"
            ),
        "{text}"
    );

    // A record holding only a lower layer says nothing of the image on top.
    let mut used = fake::cache_record("recused0000000000000000000", &[], 0, ago(9 * DAY));
    used.last_used = Some(ago(2 * HOUR));
    let mut snap = snapshot(&[base()], vec![]).with_build_cache(vec![used]);
    let lower = snap.images[0].layers[0];
    snap.cache.holds[0] = vec![lower];
    assert_eq!(snap.build_use(0), None);
}

#[test]
fn explain_says_last_used_by_a_build_and_names_the_image() {
    let snap = snapshot(&[base(), child("app", HOUR)], vec![]);
    let p = unused_7d();
    let planned = plan(&p, &snap, now());
    let explained = explain(&p, &snap, &planned, now(), index(&snap, "base"));
    let json = explained.to_json();
    assert_eq!(json["last_used_source"], "build", "{json}");
    assert_eq!(
        json["last_used_by_build"], "image app (app:1) was built on it",
        "{json}"
    );
    let text = explained.to_text();
    assert!(
        text.contains("last used    by a build at")
            && text.contains("image app (app:1) was built on it"),
        "{text}"
    );
    assert!(
        text.contains("last used by a build 1h ago; unused_for 7d"),
        "{text}"
    );
}

/// One `once` as `main` runs it, with `unused_for = "7d"`: load the state,
/// pass, save. Returns the image IDs left.
async fn once(engine: &FakeEngine, state_path: &Path, at: DateTime<Utc>) -> Vec<String> {
    let mut memory = Memory::new(State::load_or_fresh(state_path, at));
    pass::run(
        engine,
        &unused_7d(),
        None,
        &mut memory,
        Mode::Execute,
        at,
        &CancellationToken::new(),
    )
    .await
    .expect("the fake engine answers");
    memory.state.save(state_path).expect("save the state");
    engine.image_ids()
}

#[tokio::test]
async fn a_build_use_is_recorded_in_the_state_and_outlives_the_child_and_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let engine = FakeEngine::new();
    engine.add_image(fake::image(
        "sha256:base",
        &["base:1"],
        ago(10 * DAY),
        &[("sha256:b1", 100), ("sha256:b2", 200)],
    ));
    engine.add_image(fake::image(
        "sha256:old",
        &["old:1"],
        ago(10 * DAY),
        &[("sha256:o1", 100)],
    ));
    // Built on base two hours ago, by BuildKit: no parent link.
    engine.add_image(fake::image(
        "sha256:child",
        &["app:1"],
        ago(2 * HOUR),
        &[("sha256:b1", 100), ("sha256:b2", 200), ("sha256:c1", 10)],
    ));

    let left = once(&engine, &path, now()).await;
    assert_eq!(
        left,
        vec!["sha256:base", "sha256:child"],
        "the old image nobody built from goes, the base stays"
    );
    let state = State::load(&path, now()).expect("load").expect("saved");
    let rec = &state.images["sha256:base"];
    assert_eq!(rec.last_used, Some(ago(2 * HOUR)));
    assert_eq!(rec.last_used_by.as_deref(), Some("build of child"));
    assert_eq!(
        state.tracked("sha256:base", now()).last_event_build,
        Some(BuildUser::from_state_text("build of child").expect("a build"))
    );

    // The child goes (a CI job removes its result); the use stays, across
    // a restart (a new `once` loads the file) and a day later too.
    engine.force_remove_image("sha256:child");
    let later = now() + TimeDelta::days(1);
    let left = once(&engine, &path, later).await;
    assert_eq!(left, vec!["sha256:base"], "the base is still used 1d ago");
    let mut memory = Memory::new(State::load_or_fresh(&path, later));
    let outcome = pass::run(
        &engine,
        &unused_7d(),
        None,
        &mut memory,
        Mode::Plan,
        later,
        &CancellationToken::new(),
    )
    .await
    .expect("plan");
    let b = outcome.snapshot.by_id["sha256:base"];
    assert_eq!(
        outcome.snapshot.last_used(b),
        (ago(2 * HOUR), LastUsedSource::Build),
        "a tracked build use is a build, not an event"
    );
    let text = explain(&unused_7d(), &outcome.snapshot, &outcome.plan, later, b).to_text();
    assert!(
        text.contains("last used    by a build at") && text.contains("image child was built on it"),
        "{text}"
    );

    // Once 7 days have passed since that build, the base may go.
    let left = once(&engine, &path, now() + TimeDelta::days(8)).await;
    assert!(left.is_empty(), "{left:?}");
}

// ---------------------------------------------------------------------------------------------
// The real engine
// ---------------------------------------------------------------------------------------------

/// `DOCKER_BUILDKIT=1 docker build` (Debian's 20.10 CLI, which builds with
/// `BuildKit` and no registry) of `FROM <base>` plus one file, labelled for
/// the lab, tagged `reference`. Returns the new image's ID. Held under the
/// engine lock: the harness does not cover a raw `docker` command.
fn buildkit_build(lab: &common::Lab, base: &str, reference: &str) -> String {
    let context = lab.dir().join("context");
    std::fs::create_dir_all(&context).expect("context dir");
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {base}\nCOPY built /built\n"),
    )
    .expect("Dockerfile");
    std::fs::write(context.join("built"), common::random_hex(64)).expect("a file");
    let label = lab.label();
    let _lock = common::engine_lock();
    let out = Command::new("/usr/bin/docker")
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "-q", "--label", &label, "-t", reference])
        .arg(&context)
        .stdin(Stdio::null())
        .output()
        .expect("run docker build");
    assert!(
        out.status.success(),
        "BuildKit build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn on_the_engine_a_base_a_buildkit_build_used_survives_unused_for_and_explain_says_why() {
    let lab = common::Lab::new();
    let base_ref = lab.reference("base", "1");
    let base = lab.load_image(&common::ImageSpec::new().days_old(10).tag(base_ref.clone()));
    // An old image nobody builds from: the control, it goes.
    let unused = lab.load_image(
        &common::ImageSpec::new()
            .days_old(10)
            .tag(lab.reference("unused", "1")),
    );
    let child_ref = lab.reference("app", "1");
    let child = buildkit_build(&lab, &base_ref, &child_ref);
    assert_eq!(
        common::parent_of(&child),
        None,
        "a BuildKit build records no parent: only the layers show the base"
    );
    let policy = lab.write_policy(&format!(
        "[state]\npath = \"{}\"\n[safety]\nmin_age = \"1h\"\n\
         [[policy]]\nname = \"unused\"\n{}\nunused_for = \"7d\"\n",
        lab.state_path().display(),
        lab.selector()
    ));
    let policy = policy.to_str().expect("utf-8");
    let once = || {
        let out = common::imagegc(&["--config", policy, "once"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let explain_base = || {
        let out = common::imagegc(&["--config", policy, "explain", &base_ref]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    once();
    assert!(
        !common::image_exists(&unused.id),
        "the old image nobody built from was removed"
    );
    assert!(
        common::references_of(&base.id).contains(&base_ref),
        "the base the build used is kept"
    );
    let short = child.trim_start_matches("sha256:")[..12].to_owned();
    let text = explain_base();
    // The build shows twice: the child's appearance, and the base's
    // `from local` build-cache records' LastUsedAt (a moment later, so
    // usually the newer); explain names whichever is newest.
    assert!(
        text.contains("last used    by a build at")
            && (text.contains(&format!("image {short} ({child_ref}) was built on it"))
                || text.contains("(from local ) made from it was used")),
        "{text}"
    );
    let state = State::load(&lab.state_path(), Utc::now())
        .expect("load")
        .expect("once wrote the state");
    let by = state.images[&base.id]
        .last_used_by
        .clone()
        .unwrap_or_default();
    assert!(
        by == format!("build of {short}") || by.starts_with("build cache record "),
        "the state keeps the build as the base's last use: {by:?}"
    );

    // The CI job removes its result: the base stays used by that build.
    let out = common::docker(&["rmi", &child_ref]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!common::image_exists(&child));
    once();
    assert!(common::references_of(&base.id).contains(&base_ref));
    let text = explain_base();
    assert!(
        text.contains("last used    by a build at")
            && (text.contains(&format!("image {short} was built on it"))
                || text.contains("(from local ) made from it was used")),
        "{text}"
    );
}

#[test]
fn the_disk_pressure_order_counts_a_build_as_the_bases_last_use() {
    use imagegc::engine::DiskUsage;
    use imagegc::policy::Threshold;
    let p = policy(vec![rule("pressure")
        .disk(Threshold::Ratio(0.85), Threshold::Ratio(0.75))
        .build()]);
    let old = img("old", 5 * DAY).tags(&["old:1"]).layer("o1", 1200);
    // 87% used: removing old (1200 bytes) lands on 75%.
    let disk = DiskUsage {
        total_bytes: 10_000,
        used_bytes: 8_700,
        ..DiskUsage::default()
    };
    let targets = |snap: &Snapshot| -> Vec<String> {
        plan(&p, snap, now())
            .removals
            .iter()
            .map(|r| r.reference.clone().unwrap_or_default())
            .collect()
    };
    let without_build = support::snapshot_on_disk(&[base(), old.clone()], vec![], disk);
    assert_eq!(
        targets(&without_build).first().map(String::as_str),
        Some("base:1"),
        "control: unused for 10 days, the base is the least recently used"
    );
    // Built an hour ago (created then, as a build's result is).
    let mut built = child("app", HOUR);
    built.created = ago(HOUR);
    let snap = support::snapshot_on_disk(&[base(), old, built], vec![], disk);
    assert_eq!(
        targets(&snap),
        vec!["old:1"],
        "the base was used an hour ago"
    );
}
