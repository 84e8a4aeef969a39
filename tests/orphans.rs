//! Containers whose image is gone: a container create racing the delete of
//! its image (both succeed on Docker's graph-driver store), or anyone's
//! forced removal. imagegc cannot prevent either; it must name each one at
//! warning level, with the removal of ours that deleted the image, and
//! count them in `imagegc_orphaned_containers`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use imagegc::config;
use imagegc::daemon::{Daemon, Notifier, PassRecord, TokioClock};
use imagegc::engine::Container;
use imagegc::fake::{self, FakeEngine};
use imagegc::metrics::Metrics;
use imagegc::pass::{self, Memory, Mode, Orphan};
use imagegc::state::State;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("test timestamp")
}

const NOW: &str = "2026-11-28T10:00:00Z";

fn policy_text(dir: &std::path::Path) -> String {
    format!(
        r#"
schedule = "0 0 1 1 *"
run_on_start = true
[state]
path = "{state}"
[safety]
min_age = "1h"
[[policy]]
name = "dangling"
dangling = true
older_than = "1h"
"#,
        state = dir.join("state.json").display()
    )
}

fn container(id: &str, image_id: &str) -> Container {
    Container {
        image_ref: String::new(),
        labels: std::collections::BTreeMap::new(),
        id: id.to_owned(),
        names: vec![format!("name-{id}")],
        image_id: image_id.to_owned(),
        state: "created".to_owned(),
        created: t(NOW),
    }
}

/// An old dangling image the policy removes, and a tagged one it keeps.
fn engine() -> Arc<FakeEngine> {
    let engine = FakeEngine::new();
    engine.add_image(fake::image(
        "sha256:old",
        &[],
        t("2026-10-01T00:00:00Z"),
        &[("sha256:l-old", 1000)],
    ));
    engine.add_image(fake::image(
        "sha256:kept",
        &["app:1"],
        t("2026-10-01T00:00:00Z"),
        &[("sha256:l-kept", 1000)],
    ));
    Arc::new(engine)
}

async fn run_pass(engine: &FakeEngine, dir: &std::path::Path, mode: Mode) -> pass::Outcome {
    let policy = config::parse(&policy_text(dir), "test.toml").expect("valid policy");
    let mut memory = Memory::new(State::fresh(t("2026-10-01T00:00:00Z")));
    pass::run(
        engine,
        &policy,
        None,
        &mut memory,
        mode,
        t(NOW),
        &CancellationToken::new(),
    )
    .await
    .expect("the fake engine answers")
}

#[tokio::test]
async fn a_container_created_while_its_image_is_deleted_is_reported_with_the_removal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine();
    engine.create_racing_delete(container("racer", "sha256:old"));

    let outcome = run_pass(&engine, dir.path(), Mode::Execute).await;

    assert_eq!(engine.removals(), vec!["sha256:old".to_owned()]);
    assert_eq!(
        outcome.orphans,
        Some(vec![Orphan {
            container_id: "racer".to_owned(),
            container_name: "name-racer".to_owned(),
            image_id: "sha256:old".to_owned(),
            removed_by: Some(("dangling".to_owned(), "sha256:old".to_owned())),
        }])
    );
}

#[tokio::test]
async fn a_container_left_by_someone_elses_forced_removal_is_reported_by_a_dry_run_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine();
    engine.add_container(container("user", "sha256:kept"));
    engine.force_remove_image("sha256:kept");
    engine.add_container(container("fine", "sha256:old"));

    let outcome = run_pass(&engine, dir.path(), Mode::DryRun).await;

    assert_eq!(
        outcome.orphans,
        Some(vec![Orphan {
            container_id: "user".to_owned(),
            container_name: "name-user".to_owned(),
            image_id: "sha256:kept".to_owned(),
            removed_by: None,
        }])
    );
}

#[tokio::test]
async fn containers_whose_images_exist_are_no_orphans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine();
    engine.add_container(container("user", "sha256:kept"));
    let outcome = run_pass(&engine, dir.path(), Mode::Execute).await;
    assert_eq!(engine.removals(), vec!["sha256:old".to_owned()]);
    assert_eq!(outcome.orphans, Some(Vec::new()));
}

struct Quiet;

impl Notifier for Quiet {
    fn ready(&self) {}
    fn status(&self, _text: &str) {}
    fn watchdog(&self) {}
    fn stopping(&self) {}
    fn watchdog_interval(&self) -> Option<Duration> {
        None
    }
}

fn gauge(metrics: &Metrics) -> Option<String> {
    metrics
        .render()
        .lines()
        .find(|l| l.starts_with("imagegc_orphaned_containers "))
        .map(ToOwned::to_owned)
}

#[tokio::test(start_paused = true)]
async fn the_daemon_counts_orphans_at_start_and_after_each_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine();
    // Before start: someone's `docker rmi -f` left one orphan.
    engine.add_image(fake::image(
        "sha256:forced",
        &["tool:1"],
        t("2026-10-01T00:00:00Z"),
        &[("sha256:l-forced", 1000)],
    ));
    engine.add_container(container("left", "sha256:forced"));
    engine.force_remove_image("sha256:forced");
    // During the start-up pass: a create races our delete.
    engine.create_racing_delete(container("racer", "sha256:old"));

    let policy = config::parse(&policy_text(dir.path()), "test.toml").expect("valid policy");
    let metrics = Arc::new(Metrics::new());
    let mut daemon = Daemon::new(Arc::clone(&engine), None, policy, Arc::clone(&metrics));
    daemon.clock = Arc::new(TokioClock::starting_at(t(NOW)));
    daemon.notifier = Arc::new(Quiet);
    daemon.follow_events = false;
    // Hold the start-up pass until the start-up check has been looked at.
    engine.set_list_delay(Duration::from_secs(60));
    let (tx, mut passes) = mpsc::unbounded_channel::<PassRecord>();
    daemon.on_pass = Some(tx);
    let shutdown = CancellationToken::new();
    let (_controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(daemon.run(control_rx, shutdown.clone()));

    // The start-up check lists images once (after the baseline's list).
    tokio::time::sleep(Duration::from_secs(150)).await;
    assert_eq!(
        gauge(&metrics).as_deref(),
        Some("imagegc_orphaned_containers 1")
    );

    let rec = passes.recv().await.expect("the start-up pass");
    assert_eq!(rec.removed, 1);
    assert_eq!(
        gauge(&metrics).as_deref(),
        Some("imagegc_orphaned_containers 2")
    );
    shutdown.cancel();
    task.await.expect("daemon task");
}

/// Against the real engine: `docker rmi -f` of a stopped container's image
/// leaves the container with a dangling `ImageID`; `once` names it.
#[test]
fn once_names_a_container_whose_image_was_forcibly_removed() {
    let _lock = common::engine_lock();
    let lab = common::Lab::new();
    let image = lab.load_image(
        &common::ImageSpec::new()
            .tag(lab.reference("orphan", "1"))
            .created(Utc::now() - TimeDelta::minutes(5)),
    );
    let container = lab.create_container(&image.id);
    let out = common::docker(&["rmi", "-f", &image.id]);
    assert!(
        out.status.success(),
        "docker rmi -f: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!common::image_exists(&image.id), "the image is gone");
    assert!(common::container_exists(&container), "the container stays");

    let policy = lab.write_policy(&format!(
        r#"
[state]
path = "{state}"
[[policy]]
name = "lab"
{sel}
dangling = true
older_than = "30d"
"#,
        state = lab.state_path().display(),
        sel = lab.selector(),
    ));
    let policy = policy.to_str().expect("utf-8 path");
    let out = common::imagegc(&["--config", policy, "once", "--output", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "imagegc once failed: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains(&container) && l.contains("image is gone"))
        .unwrap_or_else(|| panic!("no warning names container {container}:\n{stderr}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&image.id), "{line}");
}
