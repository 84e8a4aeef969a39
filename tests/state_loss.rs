//! Losing the state file never turns off the grace period. An image created
//! 30 days ago that arrived (was pulled, loaded or tagged) a minute ago stays
//! through a pass with `min_age = "1h"` whatever happened to the state: a
//! corrupt, truncated, empty, newer-schema or extra-field file (moved aside),
//! or no writable state at all. A first install still cleans up at once, but
//! not what the engine says was tagged a minute ago.
//!
//! The fake engine covers every case; the last test shows it on the real
//! engine with `imagegc once` and a `docker load`ed image.

mod common;
mod support;

use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use imagegc::fake::{self, FakeEngine};
use imagegc::pass::{self, Memory, Mode};
use imagegc::policy::Policy;
use imagegc::state::State;
use support::{ago, now, policy, rule, secs, DAY, MINUTE};

/// Removes every tag older than a day (by created time) and every dangling
/// image; `min_age = 1h`.
fn cleanup_policy() -> Policy {
    policy(vec![
        rule("old-tags").older_than(secs(DAY)).build(),
        rule("dangling")
            .dangling(true)
            .older_than(secs(DAY))
            .build(),
    ])
}

/// `tagged`: created 30 days ago, tagged a minute ago (its `LastTagTime`).
/// `loaded`: created 30 days ago, loaded a minute ago (no `LastTagTime`, as
/// `docker load` and `docker pull` leave it on Docker 20.10).
fn engine() -> FakeEngine {
    let engine = FakeEngine::new();
    engine.add_image(fake::image(
        "sha256:tagged",
        &["app:1"],
        ago(30 * DAY),
        &[("sha256:d-tagged", 10)],
    ));
    engine.set_last_tag_time("sha256:tagged", ago(MINUTE));
    engine.add_image(fake::image(
        "sha256:loaded",
        &[],
        ago(30 * DAY),
        &[("sha256:d-loaded", 20)],
    ));
    engine
}

/// One `once` as `main` runs it: load the state, pass, save.
async fn once(engine: &FakeEngine, state_path: &Path, at: DateTime<Utc>) -> Vec<String> {
    let mut memory = Memory::new(State::load_or_fresh(state_path, at));
    pass::run(
        engine,
        &cleanup_policy(),
        None,
        &mut memory,
        Mode::Execute,
        at,
        &CancellationToken::new(),
    )
    .await
    .expect("the fake engine answers");
    // A failure to write is the no-writable-state case; `main` only warns.
    let _ = memory.state.save(state_path);
    engine.image_ids()
}

async fn a_lost_state_keeps_recent_images(contents: &[u8], what: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    std::fs::write(&path, contents).expect("write the state file");
    let engine = engine();

    let left = once(&engine, &path, now()).await;
    assert_eq!(
        left,
        vec!["sha256:tagged", "sha256:loaded"],
        "{what}: nothing the grace period protects was removed"
    );
    assert!(
        engine.removals().is_empty(),
        "{what}: {:?}",
        engine.removals()
    );
    // The restart is on disk: the next run, 59 minutes later, still keeps
    // both; once the grace period has run from the restart, they may go.
    let left = once(&engine, &path, now() + TimeDelta::minutes(59)).await;
    assert_eq!(left.len(), 2, "{what}: the grace period holds across runs");
    let left = once(&engine, &path, now() + TimeDelta::minutes(61)).await;
    assert!(left.is_empty(), "{what}: after min_age they go: {left:?}");
}

#[tokio::test]
async fn a_corrupt_state_file_does_not_make_a_recently_arrived_old_image_removable() {
    a_lost_state_keeps_recent_images(b"{not json", "corrupt").await;
}

#[tokio::test]
async fn a_truncated_state_file_does_not_make_a_recently_arrived_old_image_removable() {
    a_lost_state_keeps_recent_images(
        b"{\"version\": 1, \"tracking_since\": \"2026-01-01T00:00:00Z\", \"images\": {\"sha256:ta",
        "truncated",
    )
    .await;
}

#[tokio::test]
async fn an_empty_state_file_does_not_make_a_recently_arrived_old_image_removable() {
    a_lost_state_keeps_recent_images(b"", "empty").await;
}

#[tokio::test]
async fn a_state_file_from_a_newer_imagegc_does_not_make_a_recently_arrived_old_image_removable() {
    a_lost_state_keeps_recent_images(
        b"{\"version\": 99, \"tracking_since\": \"2026-01-01T00:00:00Z\", \"images\": {}}",
        "future version",
    )
    .await;
}

#[tokio::test]
async fn a_state_file_with_an_unknown_field_does_not_make_a_recently_arrived_old_image_removable() {
    a_lost_state_keeps_recent_images(
        b"{\"version\": 1, \"tracking_since\": \"2026-01-01T00:00:00Z\", \"images\": {}, \"extra\": 1}",
        "extra field",
    )
    .await;
}

/// After a state loss nothing says when an image was last used: an image
/// created 30 days ago and used yesterday must not look "unused since
/// created" once `min_age` has run from the restart. `unused_for` counts
/// from the restart at the earliest.
#[tokio::test]
async fn after_a_state_loss_unused_for_counts_from_the_restart_not_from_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    std::fs::write(&path, b"{not json").expect("write the state file");
    let engine = FakeEngine::new();
    engine.add_image(fake::image(
        "sha256:old",
        &["app:1"],
        ago(30 * DAY),
        &[("sha256:d-old", 10)],
    ));
    let idle = policy(vec![rule("idle").unused_for(secs(DAY)).build()]);
    let once = |at: DateTime<Utc>| {
        let (engine, path, idle) = (&engine, &path, &idle);
        async move {
            let mut memory = Memory::new(State::load_or_fresh(path, at));
            pass::run(
                engine,
                idle,
                None,
                &mut memory,
                Mode::Execute,
                at,
                &CancellationToken::new(),
            )
            .await
            .expect("the fake engine answers");
            memory.state.save(path).expect("save");
            engine.image_ids()
        }
    };

    assert_eq!(once(now()).await, vec!["sha256:old"], "min_age holds");
    assert_eq!(
        once(now() + TimeDelta::hours(2)).await,
        vec!["sha256:old"],
        "two hours after the loss it has not been unused for a day"
    );
    assert!(
        once(now() + TimeDelta::hours(25)).await.is_empty(),
        "a day after the restart with no use, it goes"
    );
}

#[tokio::test]
async fn without_a_writable_state_dir_no_once_removes_a_recently_arrived_old_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The state dir cannot be created: its parent is a regular file (the
    // tests run as root, who may write anywhere else).
    std::fs::write(dir.path().join("file"), b"").expect("write");
    let path = dir.path().join("file/imagegc/state.json");
    let engine = engine();
    for minutes in [0, 30, 90, 24 * 60] {
        let left = once(&engine, &path, now() + TimeDelta::minutes(minutes)).await;
        assert_eq!(
            left,
            vec!["sha256:tagged", "sha256:loaded"],
            "run {minutes} min later: imagegc cannot know how long they have been here"
        );
    }
    assert!(engine.removals().is_empty(), "{:?}", engine.removals());
}

#[tokio::test]
async fn a_first_install_cleans_up_at_once_but_keeps_what_was_tagged_a_minute_ago() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let engine = engine();

    let left = once(&engine, &path, now()).await;

    assert_eq!(
        left,
        vec!["sha256:tagged"],
        "the engine's LastTagTime counts"
    );
    assert_eq!(engine.removals(), vec!["sha256:loaded"]);
}

#[tokio::test]
async fn plan_after_a_state_loss_shows_what_the_next_once_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    std::fs::write(&path, b"{not json").expect("write");
    let engine = engine();
    let mut memory = Memory::new(State::peek(&path, now()));
    let outcome = pass::run(
        &engine,
        &cleanup_policy(),
        None,
        &mut memory,
        Mode::Plan,
        now(),
        &CancellationToken::new(),
    )
    .await
    .expect("the fake engine answers");
    assert!(
        outcome.plan.removals.is_empty(),
        "{:?}",
        outcome.plan.removals
    );
    assert_eq!(
        std::fs::read(&path).expect("untouched"),
        b"{not json",
        "plan writes nothing"
    );
}

/// On the real engine: `docker load` of an image created 30 days ago, then
/// `imagegc once` over a corrupt state file. `docker load` sets no
/// `LastTagTime` on Docker 20.10, so only the restart keeps it.
#[test]
fn on_the_engine_a_loaded_old_image_survives_a_once_over_a_corrupt_state_file() {
    let lab = common::Lab::new();
    let image = lab.load_image(
        &common::ImageSpec::new()
            .days_old(30)
            .tag(lab.reference("app", "v1")),
    );
    let dangling = lab.load_image(&common::ImageSpec::new().days_old(30).layer_bytes(5000));
    let state = lab.state_path();
    std::fs::write(&state, b"{\"version\": 1, \"images\": {trunc").expect("write corrupt state");
    let policy = lab.write_policy(&format!(
        "[state]\npath = \"{}\"\n[safety]\nmin_age = \"1h\"\n\
         [[policy]]\nname = \"old\"\n{sel}\nolder_than = \"1d\"\n\
         [[policy]]\nname = \"dangling\"\n{sel}\ndangling = true\nolder_than = \"1d\"\n",
        state.display(),
        sel = lab.selector()
    ));
    let out = common::imagegc(&["--config", policy.to_str().expect("utf-8"), "once"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("moved aside"), "{stderr}");
    assert!(
        common::image_exists(&image.id),
        "a 30-day-old image loaded a minute ago is not removed after a state loss"
    );
    assert!(common::image_exists(&dangling.id));
    assert!(common::references_of(&image.id).contains(&lab.reference("app", "v1")));

    // A second once (the state now says tracking restarted) keeps them too.
    let out = common::imagegc(&["--config", policy.to_str().expect("utf-8"), "once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(common::image_exists(&image.id) && common::image_exists(&dangling.id));
}

/// `explain` of an image created seconds ago, with no state file yet, says
/// what is true: not tracked yet, the grace period counts from its created
/// time (it used to say "first seen before tracking began"). Over a corrupt
/// state file it says tracking restarts now, as the next `once` would.
#[test]
fn explain_says_what_first_seen_means_with_no_state_and_after_a_loss() {
    let lab = common::Lab::new();
    let fresh = lab.load_image(
        &common::ImageSpec::new()
            .created(Utc::now() - TimeDelta::seconds(3))
            .tag(lab.reference("new", "v1")),
    );
    let state = lab.state_path();
    let policy = lab.write_policy(&format!(
        "[state]\npath = \"{}\"\n[safety]\nmin_age = \"1h\"\n\
         [[policy]]\nname = \"old\"\n{}\nolder_than = \"1s\"\n",
        state.display(),
        lab.selector()
    ));
    let policy = policy.to_str().expect("utf-8");
    let explain = |output: &str| {
        let out = common::imagegc(&["--config", policy, "explain", &fresh.id, "--output", output]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let text = explain("table");
    assert!(!text.contains("before tracking began"), "{text}");
    assert!(text.contains("not tracked yet"), "{text}");
    assert!(text.contains("younger than min_age"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&explain("json")).expect("JSON");
    assert_eq!(json["first_seen_basis"], "no_state_yet", "{json}");
    assert_eq!(json["first_seen"], serde_json::Value::Null, "{json}");

    std::fs::write(&state, b"{broken").expect("write corrupt state");
    let text = explain("table");
    assert!(text.contains("tracking restarted"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&explain("json")).expect("JSON");
    assert_eq!(json["first_seen_basis"], "tracking_restarted", "{json}");
    assert_eq!(
        std::fs::read(&state).expect("untouched"),
        b"{broken",
        "explain writes nothing"
    );
}

/// `imagegc run` over a corrupt state file: its start-up pass keeps a
/// 30-day-old image loaded just now (the daemon loads the state the same
/// way `once` does), and the state it writes records the restart.
#[test]
fn on_the_engine_the_daemon_over_a_corrupt_state_file_keeps_an_old_image_loaded_just_now() {
    use std::process::Stdio;
    use std::time::Duration;

    let lab = common::Lab::new();
    let image = lab.load_image(&common::ImageSpec::new().days_old(30).layer_bytes(6000));
    let state = lab.state_path();
    std::fs::write(&state, b"").expect("an empty state file");
    let port = common::free_port();
    let config = lab.write_policy(&format!(
        "schedule = \"*/2 * * * * *\"\nrun_on_start = true\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
         [state]\npath = \"{}\"\n[safety]\nmin_age = \"1h\"\n\
         [[policy]]\nname = \"dangling\"\n{}\ndangling = true\nolder_than = \"1d\"\n",
        state.display(),
        lab.selector()
    ));
    let child = common::imagegc_command()
        .args(["--config", config.to_str().expect("utf-8"), "run"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start imagegc run");
    let _daemon = common::DaemonProcess(child);
    // Two passes have run (the start-up one and a scheduled one).
    common::wait_for("two passes", Duration::from_secs(60), || {
        let (_, body) = common::http_get(port, "/metrics")?;
        // Summed over triggers (start, schedule).
        let n: f64 = body
            .lines()
            .filter(|l| l.starts_with("imagegc_passes_total{outcome=\"success\","))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (n >= 2.0).then_some(())
    });
    assert!(
        common::image_exists(&image.id),
        "the daemon removed an old image loaded a moment ago after a state loss"
    );
    let saved = State::load(&state, Utc::now())
        .expect("load")
        .expect("a state file");
    assert!(saved.tracking_restarted.is_some(), "{saved:?}");
}
