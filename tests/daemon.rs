//! The daemon loop with a fake engine and paused tokio time: when passes
//! fire, that they never overlap, that failures do not stop the schedule,
//! reload, and shutdown in the middle of a pass.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use imagegc::config;
use imagegc::daemon::{self, triggers, Control, Daemon, Notifier, PassRecord, TokioClock, Wiring};
use imagegc::engine::{Engine, EngineError};
use imagegc::fake::{self, FakeEngine};
use imagegc::metrics::Metrics;
use imagegc::pass::{PassOutcome, Trigger};
use imagegc::state::State;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("test timestamp")
}

/// Records what the daemon tells systemd.
#[derive(Default)]
struct Recorder {
    statuses: Mutex<Vec<String>>,
    watchdogs: AtomicUsize,
    readies: AtomicUsize,
}

impl Notifier for Recorder {
    fn ready(&self) {
        self.readies.fetch_add(1, Ordering::Relaxed);
    }
    fn status(&self, text: &str) {
        self.statuses.lock().expect("lock").push(text.to_string());
    }
    fn watchdog(&self) {
        self.watchdogs.fetch_add(1, Ordering::Relaxed);
    }
    fn stopping(&self) {}
    fn watchdog_interval(&self) -> Option<Duration> {
        None
    }
}

fn policy_text(dir: &Path, schedule: &str, timezone: &str, policy_name: &str) -> String {
    format!(
        r#"
schedule = "{schedule}"
timezone = "{timezone}"
run_on_start = false
[state]
path = "{state}"
[safety]
min_age = "1h"
[[policy]]
name = "{policy_name}"
dangling = true
older_than = "1h"
"#,
        state = dir.join("state.json").display()
    )
}

struct Rig<E: Engine + 'static> {
    daemon: Daemon<E>,
    passes: mpsc::UnboundedReceiver<PassRecord>,
    notifier: Arc<Recorder>,
    metrics: Arc<Metrics>,
}

fn rig<E: Engine + 'static>(
    engine: Arc<E>,
    text: &str,
    config_path: Option<PathBuf>,
    wall: DateTime<Utc>,
) -> Rig<E> {
    let policy = config::parse(text, "test.toml").expect("valid test policy");
    let metrics = Arc::new(Metrics::new());
    let notifier = Arc::new(Recorder::default());
    let (tx, passes) = mpsc::unbounded_channel();
    let mut daemon = Daemon::new(engine, config_path, policy, Arc::clone(&metrics));
    daemon.clock = Arc::new(TokioClock::starting_at(wall));
    daemon.notifier = Arc::clone(&notifier) as Arc<dyn Notifier>;
    daemon.max_sleep = Duration::from_secs(3600);
    daemon.follow_events = false;
    daemon.on_pass = Some(tx);
    Rig {
        daemon,
        passes,
        notifier,
        metrics,
    }
}

/// Start instants of the first `n` passes of `schedule` from `wall`.
async fn fire_times(schedule: &str, timezone: &str, wall: &str, n: usize) -> Vec<DateTime<Utc>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = policy_text(dir.path(), schedule, timezone, "dangling");
    let mut r = rig(Arc::new(FakeEngine::new()), &text, None, t(wall));
    let shutdown = CancellationToken::new();
    let (_controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(r.daemon.run(control_rx, shutdown.clone()));
    let mut out = Vec::new();
    while out.len() < n {
        let rec = r.passes.recv().await.expect("a pass");
        assert_eq!(rec.outcome, PassOutcome::Success);
        out.push(rec.started);
    }
    shutdown.cancel();
    task.await.expect("daemon task");
    out
}

fn assert_times(got: &[DateTime<Utc>], want: &[&str]) {
    let want: Vec<DateTime<Utc>> = want.iter().map(|w| t(w)).collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        let off = (*g - *w).num_milliseconds().abs();
        assert!(off <= 1000, "pass at {g}, expected {w}; all: {got:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn every_fifteen_minutes_fires_on_the_quarter_hours() {
    let got = fire_times("*/15 * * * *", "UTC", "2026-11-28T10:07:00Z", 4).await;
    assert_times(
        &got,
        &[
            "2026-11-28T10:15:00Z",
            "2026-11-28T10:30:00Z",
            "2026-11-28T10:45:00Z",
            "2026-11-28T11:00:00Z",
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn weekday_schedule_fires_monday_to_friday_only() {
    // 2026-11-28 is a Saturday.
    let got = fire_times("0 3 * * 1-5", "UTC", "2026-11-28T00:00:00Z", 6).await;
    assert_times(
        &got,
        &[
            "2026-11-30T03:00:00Z",
            "2026-12-01T03:00:00Z",
            "2026-12-02T03:00:00Z",
            "2026-12-03T03:00:00Z",
            "2026-12-04T03:00:00Z",
            "2026-12-07T03:00:00Z",
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn first_of_month_or_monday_fires_on_either() {
    let got = fire_times("0 0 1 * 1", "UTC", "2026-11-28T00:00:00Z", 4).await;
    assert_times(
        &got,
        &[
            "2026-11-30T00:00:00Z", // Monday
            "2026-12-01T00:00:00Z", // the 1st (a Tuesday)
            "2026-12-07T00:00:00Z", // Monday
            "2026-12-14T00:00:00Z", // Monday
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn six_field_expression_fires_on_seconds() {
    let got = fire_times("*/20 * * * * *", "UTC", "2026-11-28T10:00:05Z", 3).await;
    assert_times(
        &got,
        &[
            "2026-11-28T10:00:20Z",
            "2026-11-28T10:00:40Z",
            "2026-11-28T10:01:00Z",
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn daily_pass_in_a_dst_gap_fires_once_and_keeps_its_hour_after() {
    // Europe/Berlin springs forward at 02:00 on 2026-03-29: 02:30 does not exist.
    let got = fire_times("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 3).await;
    assert_times(
        &got,
        &[
            "2026-03-29T01:00:00Z", // 03:00 CEST, the end of the gap, once
            "2026-03-30T00:30:00Z", // 02:30 CEST
            "2026-03-31T00:30:00Z",
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn daily_pass_in_a_repeated_hour_fires_once() {
    // Europe/Berlin falls back at 03:00 CEST on 2026-10-25: 02:30 happens twice.
    let got = fire_times("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2).await;
    assert_times(
        &got,
        &[
            "2026-10-25T00:30:00Z", // the first 02:30 (CEST) only
            "2026-10-26T01:30:00Z", // 02:30 CET
        ],
    );
}

fn old_dangling(engine: &FakeEngine, n: usize) {
    for i in 0..n {
        engine.add_image(fake::image(
            &format!("sha256:{i:064}"),
            &[],
            t("2026-01-01T00:00:00Z"),
            &[(&format!("sha256:layer{i:059}"), 1000)],
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn passes_never_overlap_even_when_a_pass_outlasts_the_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slow = FakeEngine::new();
    slow.set_list_delay(Duration::from_millis(2500));
    let text = policy_text(dir.path(), "* * * * * *", "UTC", "dangling");
    let mut r = rig(Arc::new(slow), &text, None, t("2026-11-28T10:00:00Z"));
    let shutdown = CancellationToken::new();
    let (_controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(r.daemon.run(control_rx, shutdown.clone()));
    let mut records = Vec::new();
    while records.len() < 5 {
        records.push(r.passes.recv().await.expect("a pass"));
    }
    shutdown.cancel();
    task.await.expect("daemon task");
    for pair in records.windows(2) {
        assert!(
            pair[1].started >= pair[0].finished,
            "pass started at {} before the previous one finished at {}",
            pair[1].started,
            pair[0].finished
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_pass_does_not_stop_the_next_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(FakeEngine::new());
    old_dangling(&engine, 1);
    engine.fail_everything(Some(EngineError::Unavailable {
        address: "unix:///fake.sock".into(),
        reason: "down for the test".into(),
    }));
    let text = policy_text(dir.path(), "*/5 * * * *", "UTC", "dangling");
    let mut r = rig(Arc::clone(&engine), &text, None, t("2026-11-28T10:01:00Z"));
    let shutdown = CancellationToken::new();
    let (_controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(r.daemon.run(control_rx, shutdown.clone()));

    let first = r.passes.recv().await.expect("first pass");
    assert_eq!(first.outcome, PassOutcome::Failed);
    assert!(r.metrics.render().contains("imagegc_engine_up 0"));
    engine.fail_everything(None);
    let second = r.passes.recv().await.expect("second pass");
    assert_eq!(second.outcome, PassOutcome::Success);
    assert_eq!(
        (first.trigger, second.trigger),
        (Trigger::Schedule, Trigger::Schedule)
    );
    assert_eq!(
        second.removed, 1,
        "the image the failed pass missed goes now"
    );
    assert_eq!((second.started - first.started).num_minutes(), 5);
    shutdown.cancel();
    task.await.expect("daemon task");
    let text = r.metrics.render();
    assert!(
        text.contains(r#"imagegc_passes_total{outcome="failed",trigger="schedule"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"imagegc_passes_total{outcome="success",trigger="schedule"} 1"#),
        "{text}"
    );
    assert!(text.contains("imagegc_engine_up 1"), "{text}");
    let statuses = r.notifier.statuses.lock().expect("lock").clone();
    assert!(
        statuses.iter().any(|s| s.contains("removed 1 reference,")),
        "{statuses:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn reload_with_a_broken_file_keeps_the_old_policy_and_a_good_file_changes_the_next_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("imagegc.toml");
    let text = policy_text(dir.path(), "*/10 * * * *", "UTC", "first");
    std::fs::write(&path, &text).expect("write policy");
    let mut r = rig(
        Arc::new(FakeEngine::new()),
        &text,
        Some(path.clone()),
        t("2026-11-28T10:01:00Z"),
    );
    let shutdown = CancellationToken::new();
    let (controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(r.daemon.run(control_rx, shutdown.clone()));

    let p1 = r.passes.recv().await.expect("pass 1");
    assert_eq!(p1.policies, vec!["first"]);

    std::fs::write(
        &path,
        "schedule = \"*/10 * * * *\"\n[[policy]]\nname = \"x\"\nolder_than = \"soon\"\n",
    )
    .expect("write broken policy");
    controls.send(Control::Reload).expect("send reload");
    let p2 = r.passes.recv().await.expect("pass 2");
    assert_eq!(p2.policies, vec!["first"], "a broken file changes nothing");
    assert_eq!(
        p2.trigger,
        Trigger::Schedule,
        "a reload starts no pass of its own"
    );
    let m = r.metrics.render();
    assert!(
        m.contains(r#"imagegc_config_reloads_total{outcome="failed"} 1"#),
        "{m}"
    );
    assert!(m.contains("imagegc_config_last_reload_successful 0"), "{m}");

    std::fs::write(
        &path,
        policy_text(dir.path(), "*/10 * * * *", "UTC", "second"),
    )
    .expect("write good policy");
    controls.send(Control::Reload).expect("send reload");
    let p3 = r.passes.recv().await.expect("pass 3");
    assert_eq!(
        p3.policies,
        vec!["second"],
        "a good file applies from the next pass"
    );
    let m = r.metrics.render();
    assert!(
        m.contains(r#"imagegc_config_reloads_total{outcome="success"} 1"#),
        "{m}"
    );
    assert!(m.contains("imagegc_config_last_reload_successful 1"), "{m}");
    shutdown.cancel();
    task.await.expect("daemon task");
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_pass_stops_between_removals_and_leaves_a_valid_state_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let slow = FakeEngine::new();
    old_dangling(&slow, 6);
    slow.set_remove_delay(Duration::from_secs(1));
    let shutdown = CancellationToken::new();
    {
        let token = shutdown.clone();
        slow.on_remove(move |n| {
            if n == 2 {
                token.cancel(); // SIGTERM arrives as the second removal starts
            }
        });
    }
    let slow = Arc::new(slow);
    let mut text = policy_text(dir.path(), "0 0 1 1 *", "UTC", "dangling");
    text = text.replace("run_on_start = false", "run_on_start = true");
    let mut r = rig(Arc::clone(&slow), &text, None, t("2026-11-28T10:00:00Z"));
    let (_controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(r.daemon.run(control_rx, shutdown.clone()));
    let rec = r.passes.recv().await.expect("the pass");
    task.await.expect("daemon task");

    assert_eq!(rec.outcome, PassOutcome::Cancelled);
    // The default max_parallel_removals (4) started together; the signal
    // came while they were in flight.
    assert_eq!(
        rec.removed, 4,
        "the removals in flight finished, no new one started"
    );
    assert_eq!(slow.removals().len(), 4);
    assert_eq!(slow.image_ids().len(), 2);
    let state = State::load(&dir.path().join("state.json"), Utc::now())
        .expect("state readable")
        .expect("state file exists");
    assert_eq!(
        state.images.len(),
        2,
        "deleted images are dropped from the state"
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_pass_over_an_unchanged_engine_makes_no_inspect_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(FakeEngine::new());
    // Young images: planned for nothing, so they stay and are seen every pass.
    for i in 0..3 {
        engine.add_image(fake::image(
            &format!("sha256:{i:064}"),
            &["app:1"],
            t("2026-11-28T09:59:00Z") - TimeDelta::seconds(i),
            &[(&format!("sha256:layer{i:059}"), 1000)],
        ));
    }
    let text = policy_text(dir.path(), "*/5 * * * *", "UTC", "dangling");
    let mut r = rig(Arc::clone(&engine), &text, None, t("2026-11-28T10:00:00Z"));
    let shutdown = CancellationToken::new();
    let (_controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(r.daemon.run(control_rx, shutdown.clone()));
    r.passes.recv().await.expect("pass 1");
    let after_first = engine.calls.image_details.load(Ordering::Relaxed);
    assert_eq!(after_first, 3);
    r.passes.recv().await.expect("pass 2");
    r.passes.recv().await.expect("pass 3");
    assert_eq!(
        engine.calls.image_details.load(Ordering::Relaxed),
        after_first
    );
    shutdown.cancel();
    task.await.expect("daemon task");
}

/// A wall clock that follows tokio's, plus a jump the test can add (a
/// suspend, or an NTP step).
struct JumpingClock {
    base: TokioClock,
    jump: std::sync::Mutex<TimeDelta>,
}

impl imagegc::daemon::Clock for JumpingClock {
    fn now(&self) -> DateTime<Utc> {
        self.base.now() + *self.jump.lock().expect("lock")
    }
}

#[tokio::test(start_paused = true)]
async fn a_wall_clock_jump_is_noticed_within_one_sleep_slice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = policy_text(dir.path(), "0 * * * *", "UTC", "dangling");
    let mut r = rig(
        Arc::new(FakeEngine::new()),
        &text,
        None,
        t("2026-11-28T10:00:30Z"),
    );
    let clock = Arc::new(JumpingClock {
        base: TokioClock::starting_at(t("2026-11-28T10:00:30Z")),
        jump: std::sync::Mutex::new(TimeDelta::zero()),
    });
    r.daemon.clock = Arc::clone(&clock) as Arc<dyn imagegc::daemon::Clock>;
    r.daemon.max_sleep = Duration::from_secs(30);
    let shutdown = CancellationToken::new();
    let (_controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(r.daemon.run(control_rx, shutdown.clone()));

    // Ten minutes pass on both clocks: nothing is due before 11:00.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(r.passes.try_recv().is_err(), "no pass before 11:00");
    // The machine sleeps for 50 minutes: the monotonic clock does not see it.
    *clock.jump.lock().expect("lock") = TimeDelta::minutes(50);
    let rec = tokio::time::timeout(Duration::from_secs(31), r.passes.recv())
        .await
        .expect("the 11:00 pass runs within one 30 s slice of the jump")
        .expect("a pass");
    assert!(rec.started >= t("2026-11-28T11:00:00Z"), "{rec:?}");
    // And it ran once: the next is at 12:00.
    let again = tokio::time::timeout(Duration::from_secs(120), r.passes.recv()).await;
    assert!(again.is_err(), "the 11:00 pass ran only once");
    shutdown.cancel();
    task.await.expect("daemon task");
}

#[tokio::test(start_paused = true)]
async fn a_rejected_reload_shows_in_the_status_until_a_good_file_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("imagegc.toml");
    let text = policy_text(dir.path(), "*/10 * * * *", "UTC", "first");
    std::fs::write(&path, &text).expect("write policy");
    let mut r = rig(
        Arc::new(FakeEngine::new()),
        &text,
        Some(path.clone()),
        t("2026-11-28T10:01:00Z"),
    );
    let shutdown = CancellationToken::new();
    let (controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(r.daemon.run(control_rx, shutdown.clone()));
    r.passes.recv().await.expect("pass 1");
    let notifier = Arc::clone(&r.notifier);
    let last_status = || {
        notifier
            .statuses
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .unwrap_or_default()
    };
    assert!(!last_status().contains("rejected"), "{}", last_status());

    std::fs::write(
        &path,
        "schedule = \"*/10 * * * *\"\n[[policy]]\nname = \"x\"\nolder_than = \"soon\"\ndangling = maybe\n",
    )
    .expect("write broken policy");
    controls.send(Control::Reload).expect("send reload");
    // Told at once, not only at the next pass.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = last_status();
    assert!(status.contains("policy reload rejected"), "{status}");
    assert!(status.contains(&path.display().to_string()), "{status}");
    assert!(status.contains("running the previous policy"), "{status}");
    // Still there after the next pass.
    r.passes.recv().await.expect("pass 2");
    let status = last_status();
    assert!(status.contains("policy reload rejected"), "{status}");
    assert!(status.contains("last pass"), "{status}");

    std::fs::write(
        &path,
        policy_text(dir.path(), "*/10 * * * *", "UTC", "second"),
    )
    .expect("write good policy");
    controls.send(Control::Reload).expect("send reload");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!last_status().contains("rejected"), "{}", last_status());
    r.passes.recv().await.expect("pass 3");
    assert!(!last_status().contains("rejected"), "{}", last_status());
    shutdown.cancel();
    task.await.expect("daemon task");
}

/// Polls (in paused time) until `done` holds, for at most ten minutes.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..6000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within ten minutes: {what}");
}

#[tokio::test(start_paused = true)]
async fn container_uses_made_while_the_event_stream_is_down_all_reach_the_state() {
    use imagegc::engine::{Container, ContainerRef, ContainerTimes, EngineEvent, Use};
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(FakeEngine::new());
    let text = policy_text(dir.path(), "0 0 1 1 *", "UTC", "dangling");
    let mut r = rig(Arc::clone(&engine), &text, None, t("2026-11-28T10:00:00Z"));
    r.daemon.follow_events = true;
    r.daemon.save_every = Duration::from_millis(100);
    let shutdown = CancellationToken::new();
    let (_controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(r.daemon.run(control_rx, shutdown.clone()));
    wait_until("the event stream opens", || {
        engine.open_event_streams() == 1
    })
    .await;

    // One event before the break, so the stream resumes from its time.
    let t0 = t("2026-11-28T10:00:10Z");
    engine.push_event(EngineEvent {
        time: t0 - TimeDelta::seconds(1),
        what: Use::ImageLoaded {
            image: "sha256:loaded".to_owned(),
        },
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The stream breaks, and the engine refuses it for a few seconds.
    engine.close_event_stream();
    for _ in 0..5 {
        engine.fail_next_events(EngineError::Unavailable {
            address: "unix:///fake".to_owned(),
            reason: "connection refused".to_owned(),
        });
    }
    // Meanwhile 300 containers of 300 images are created and run: 600
    // events, more than the 256 the engine replays.
    let uses = 300;
    let image_of = |i: usize| format!("sha256:{i:064}");
    for i in 0..uses {
        let id = format!("c{i}");
        let created = t0 + TimeDelta::milliseconds(20 * i as i64);
        let started = created + TimeDelta::milliseconds(10);
        engine.add_container(Container {
            image_ref: String::new(),
            labels: std::collections::BTreeMap::new(),
            id: id.clone(),
            names: vec![id.clone()],
            image_id: image_of(i),
            state: "running".to_owned(),
            created,
        });
        engine.add_container_times(
            &id,
            ContainerTimes {
                image_id: image_of(i),
                created,
                started_at: Some(started),
                finished_at: None,
            },
        );
        let container = ContainerRef {
            id: id.clone(),
            image_as_typed: Some(image_of(i)),
        };
        for (what, at) in [
            (Use::ContainerCreated(container.clone()), created),
            (Use::ContainerStarted(container), started),
        ] {
            engine.push_event(EngineEvent { time: at, what });
        }
    }
    wait_until("the event stream is back", || {
        engine.event_requests().len() >= 7 && engine.open_event_streams() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.cancel();
    task.await.expect("daemon task");

    let state = State::load(&dir.path().join("state.json"), Utc::now())
        .expect("state readable")
        .expect("state file exists");
    let missing: Vec<usize> = (0..uses)
        .filter(|&i| {
            let started = t0 + TimeDelta::milliseconds(20 * i as i64 + 10);
            state.images.get(&image_of(i)).and_then(|rec| rec.last_used) != Some(started)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {uses} uses never reached the state (first: container c{})",
        missing.len(),
        missing.first().copied().unwrap_or_default()
    );
}

#[tokio::test(start_paused = true)]
async fn a_pass_stuck_on_the_engine_stops_the_watchdog_fails_and_healthz_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = FakeEngine::new();
    old_dangling(&engine, 1);
    // The removal hangs (an engine whose deadline machinery failed us).
    engine.set_remove_delay(Duration::from_secs(24 * 3600));
    let text = policy_text(dir.path(), "0 0 1 1 *", "UTC", "dangling")
        .replace("run_on_start = false", "run_on_start = true");
    let mut r = rig(Arc::new(engine), &text, None, t("2026-11-28T10:00:00Z"));
    r.daemon.max_sleep = Duration::from_secs(30);
    r.daemon.pass_stall = Duration::from_secs(600);
    let shutdown = CancellationToken::new();
    let (_controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(r.daemon.run(control_rx, shutdown.clone()));

    let rec = r.passes.recv().await.expect("the pass");
    let pings = r.notifier.watchdogs.load(Ordering::Relaxed);
    assert_eq!(rec.outcome, PassOutcome::Failed, "{rec:?}");
    let took = (rec.finished - rec.started).num_seconds();
    assert!((600..=630).contains(&took), "abandoned after {took} s");
    // One ping per 30 s while calls finished; none once the pass was stuck
    // for the bound (20 would include the moment of the bound itself).
    assert!(pings < 20, "{pings} watchdog pings during a stuck pass");
    let health = r.metrics.health();
    assert!(!health.ok);
    assert!(
        health.reason.contains("abandoned")
            && health.reason.contains("no engine call finished for 10m"),
        "{}",
        health.reason
    );
    shutdown.cancel();
    task.await.expect("daemon task");
}

#[tokio::test(start_paused = true)]
async fn a_long_pass_whose_calls_keep_finishing_keeps_the_watchdog_fed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = FakeEngine::new();
    old_dangling(&engine, 30);
    // 30 removals of four minutes each, four at a time (the default
    // max_parallel_removals): 30 minutes, three times the bound.
    engine.set_remove_delay(Duration::from_secs(240));
    let text = policy_text(dir.path(), "0 0 1 1 *", "UTC", "dangling")
        .replace("run_on_start = false", "run_on_start = true");
    let mut r = rig(Arc::new(engine), &text, None, t("2026-11-28T10:00:00Z"));
    r.daemon.max_sleep = Duration::from_secs(30);
    r.daemon.pass_stall = Duration::from_secs(600);
    let shutdown = CancellationToken::new();
    let (_controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(r.daemon.run(control_rx, shutdown.clone()));

    let rec = r.passes.recv().await.expect("the pass");
    let pings = r.notifier.watchdogs.load(Ordering::Relaxed);
    assert_eq!(rec.outcome, PassOutcome::Success, "{rec:?}");
    assert_eq!(rec.removed, 30);
    assert!(
        pings >= 55,
        "only {pings} watchdog pings in a 30-minute pass"
    );
    assert!(r.metrics.health().ok, "{}", r.metrics.health().reason);
    shutdown.cancel();
    task.await.expect("daemon task");
}

#[tokio::test(start_paused = true)]
async fn slow_start_up_reads_that_keep_finishing_keep_the_watchdog_fed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = FakeEngine::new();
    old_dangling(&engine, 1);
    // Every list takes 100 s: the start-up reads (images, containers,
    // orphans) take minutes, longer than a watchdog interval.
    engine.set_list_delay(Duration::from_secs(100));
    let text = policy_text(dir.path(), "0 0 1 1 *", "UTC", "dangling")
        .replace("run_on_start = false", "run_on_start = true");
    let mut r = rig(Arc::new(engine), &text, None, t("2026-11-28T10:00:00Z"));
    r.daemon.max_sleep = Duration::from_secs(30);
    r.daemon.pass_stall = Duration::from_secs(600);
    let shutdown = CancellationToken::new();
    let (_controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(r.daemon.run(control_rx, shutdown.clone()));
    // Before the first pass starts, start-up has read for at least 300 s.
    tokio::time::sleep(Duration::from_secs(250)).await;
    let pings = r.notifier.watchdogs.load(Ordering::Relaxed);
    assert!(
        pings >= 6,
        "only {pings} watchdog pings in 250 s of start-up reads"
    );
    shutdown.cancel();
    task.await.expect("daemon task");
}

#[tokio::test(start_paused = true)]
async fn run_on_start_passes_are_triggered_by_start_and_later_ones_by_the_schedule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = policy_text(dir.path(), "*/15 * * * *", "UTC", "dangling")
        .replace("run_on_start = false", "run_on_start = true");
    let mut r = rig(
        Arc::new(FakeEngine::new()),
        &text,
        None,
        t("2026-11-28T10:07:00Z"),
    );
    let shutdown = CancellationToken::new();
    let (_controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(r.daemon.run(control_rx, shutdown.clone()));
    let first = r.passes.recv().await.expect("the start pass");
    let second = r.passes.recv().await.expect("the first scheduled pass");
    shutdown.cancel();
    task.await.expect("daemon task");

    assert_eq!(first.trigger, Trigger::Start);
    assert_times(&[first.started], &["2026-11-28T10:07:00Z"]);
    assert_eq!(second.trigger, Trigger::Schedule);
    assert_times(&[second.started], &["2026-11-28T10:15:00Z"]);
    let m = r.metrics.render();
    for (trigger, n) in [("start", 1), ("schedule", 1), ("reload", 0)] {
        let series =
            format!(r#"imagegc_passes_total{{outcome="success",trigger="{trigger}"}} {n}"#);
        assert!(m.contains(&series), "{series} missing:\n{m}");
    }
}

#[tokio::test(start_paused = true)]
async fn triggers_sent_during_a_pass_start_one_pass_after_it_never_an_overlapping_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(FakeEngine::new());
    old_dangling(&engine, 1);
    engine.set_remove_delay(Duration::from_secs(20));
    let (sender, receiver) = triggers::channel();
    engine.on_remove(move |_| {
        for _ in 0..3 {
            assert!(sender.send(Trigger::Reload), "the daemon listens");
        }
    });
    let text = policy_text(dir.path(), "0 * * * *", "UTC", "dangling");
    let mut r = rig(Arc::clone(&engine), &text, None, t("2026-11-28T10:59:00Z"));
    r.daemon.triggers = Some(receiver);
    let shutdown = CancellationToken::new();
    let (_controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(r.daemon.run(control_rx, shutdown.clone()));

    let first = r.passes.recv().await.expect("the scheduled pass");
    let second = r
        .passes
        .recv()
        .await
        .expect("the pass the triggers asked for");
    let third = tokio::time::timeout(Duration::from_secs(50 * 60), r.passes.recv()).await;
    shutdown.cancel();
    task.await.expect("daemon task");

    assert_eq!((first.trigger, first.removed), (Trigger::Schedule, 1));
    assert_eq!(second.trigger, Trigger::Reload);
    assert!(
        second.started >= first.finished,
        "pass started at {} before the previous one finished at {}",
        second.started,
        first.finished
    );
    assert!(
        third.is_err(),
        "three triggers sent during one pass made more than one pass: {third:?}"
    );
}

/// A minimal HTTP/1.0 GET: the status code and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

#[tokio::test]
async fn serve_says_ready_retries_the_engine_runs_passes_serves_metrics_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = policy_text(dir.path(), "0 0 1 1 *", "UTC", "dangling")
        .replace("run_on_start = false", "run_on_start = true");
    let policy = config::parse(&text, "test.toml").expect("valid test policy");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("local address");
    let notifier = Arc::new(Recorder::default());
    let (_controls, control_rx) = mpsc::unbounded_channel();
    let wiring = Wiring {
        source: policy_source(None),
        policy,
        metrics: Arc::new(Metrics::new()),
        notifier: Arc::clone(&notifier) as Arc<dyn Notifier>,
        listener: Some(listener),
        controls: control_rx,
    };
    // The engine answers from the second attempt on.
    let attempts = Arc::new(AtomicUsize::new(0));
    let connect = {
        let attempts = Arc::clone(&attempts);
        move || {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    return Err(EngineError::Unavailable {
                        address: "unix:///fake.sock".into(),
                        reason: "not up yet".into(),
                    });
                }
                let engine = FakeEngine::new();
                old_dangling(&engine, 1);
                Ok(engine)
            }
        }
    };
    let (tx, mut passes) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daemon::serve(
        wiring,
        connect,
        move |mut d: Daemon<FakeEngine>| {
            d.follow_events = false;
            d.on_pass = Some(tx);
            d
        },
        shutdown.clone(),
    ));

    let pass = tokio::time::timeout(Duration::from_secs(30), passes.recv())
        .await
        .expect("a pass within 30 s")
        .expect("a pass record");
    assert_eq!(
        (pass.trigger, pass.outcome, pass.removed),
        (Trigger::Start, PassOutcome::Success, 1)
    );
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        2,
        "one retry after the failed connect"
    );
    assert_eq!(notifier.readies.load(Ordering::Relaxed), 1);
    let (status, body) = http_get(addr, "/metrics").await.expect("metrics answer");
    assert_eq!(status, 200, "{body}");
    for line in [
        r#"imagegc_passes_total{outcome="success",trigger="start"} 1"#,
        r#"imagegc_removed_references_total{policy="dangling"} 1"#,
        "imagegc_engine_up 1",
    ] {
        assert!(body.contains(line), "{line} missing:\n{body}");
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("serve returns after shutdown")
        .expect("serve task");
    assert!(
        http_get(addr, "/metrics").await.is_err(),
        "the endpoint stopped with serve"
    );
    let state = std::fs::read_to_string(dir.path().join("state.json")).expect("state written");
    assert!(state.contains("\"version\""), "{state}");
}

fn policy_source(path: Option<PathBuf>) -> imagegc::app::PolicySource {
    imagegc::app::PolicySource::from(path)
}

#[tokio::test(start_paused = true)]
async fn serve_feeds_the_watchdog_while_a_connect_attempt_waits_for_its_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = policy_text(dir.path(), "0 * * * *", "UTC", "dangling");
    let notifier = Arc::new(Recorder::default());
    let (_controls, control_rx) = mpsc::unbounded_channel();
    let wiring = Wiring {
        source: policy_source(None),
        policy: config::parse(&text, "test.toml").expect("valid test policy"),
        metrics: Arc::new(Metrics::new()),
        notifier: Arc::clone(&notifier) as Arc<dyn Notifier>,
        listener: None,
        controls: control_rx,
    };
    // An engine that accepts the connection and answers only at a 2-minute deadline.
    let connect = || async {
        tokio::time::sleep(Duration::from_secs(120)).await;
        Err::<FakeEngine, _>(EngineError::Unavailable {
            address: "unix:///fake.sock".into(),
            reason: "deadline".into(),
        })
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daemon::serve(wiring, connect, |d| d, shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(100)).await;
    let pings = notifier.watchdogs.load(Ordering::Relaxed);
    shutdown.cancel();
    task.await.expect("serve task");
    assert!(
        pings >= 3,
        "{pings} watchdog pings in 100 s of one connect attempt (every 30 s expected)"
    );
}
