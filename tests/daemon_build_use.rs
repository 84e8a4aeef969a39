//! The daemon counts a build as a use of its base when the build's result
//! appears: a `BuildKit` build emits only `image tag` for the new image, so
//! the daemon reads that image's layers and marks every image whose chain
//! they extend as used then, in the state file (issue 8).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use imagegc::config;
use imagegc::daemon::{Daemon, Notifier, TokioClock};
use imagegc::engine::{EngineEvent, Use};
use imagegc::fake::{self, FakeEngine};
use imagegc::metrics::Metrics;
use imagegc::state::State;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("test timestamp")
}

/// Says nothing back; the daemon only needs somewhere to send.
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

/// `base:1` (two layers), `lower:1` (its bottom layer) and `other:1`
/// (unrelated), all 10 days old.
fn engine(wall: DateTime<Utc>) -> Arc<FakeEngine> {
    let engine = Arc::new(FakeEngine::new());
    for (id, tag, layers) in [
        (
            "sha256:base",
            "base:1",
            &[("sha256:b1", 100), ("sha256:b2", 200)][..],
        ),
        ("sha256:lower", "lower:1", &[("sha256:b1", 100)][..]),
        ("sha256:other", "other:1", &[("sha256:o1", 100)][..]),
    ] {
        engine.add_image(fake::image(id, &[tag], wall - TimeDelta::days(10), layers));
    }
    engine
}

/// Starts the daemon (state at `state_path`, following events) and waits
/// for its start pass, which learns the images present (only dangling
/// images may go: none is), and for its event stream.
async fn start(
    engine: &Arc<FakeEngine>,
    state_path: &Path,
    wall: DateTime<Utc>,
    shutdown: &CancellationToken,
) -> (
    tokio::task::JoinHandle<()>,
    mpsc::UnboundedSender<imagegc::daemon::Control>,
) {
    let text = format!(
        "schedule = \"0 0 1 1 *\"\nrun_on_start = true\n[state]\npath = \"{}\"\n\
         [[policy]]\nname = \"dangling\"\ndangling = true\nolder_than = \"1h\"\n",
        state_path.display()
    );
    let policy = config::parse(&text, "test.toml").expect("valid test policy");
    let mut daemon = Daemon::new(Arc::clone(engine), None, policy, Arc::new(Metrics::new()));
    daemon.clock = Arc::new(TokioClock::starting_at(wall));
    daemon.notifier = Arc::new(Quiet);
    daemon.max_sleep = Duration::from_secs(3600);
    daemon.save_every = Duration::from_millis(100);
    let (tx, mut passes) = mpsc::unbounded_channel();
    daemon.on_pass = Some(tx);
    // Reloads are never asked for; the caller keeps the sender.
    let (controls, control_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(daemon.run(control_rx, shutdown.clone()));
    tokio::time::timeout(Duration::from_secs(600), passes.recv())
        .await
        .expect("the start pass within ten minutes")
        .expect("a pass record");
    for _ in 0..600 {
        if engine.open_event_streams() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(engine.open_event_streams(), 1, "the event stream is open");
    (task, controls)
}

#[tokio::test(start_paused = true)]
async fn a_tag_event_of_a_new_image_built_on_a_base_marks_the_base_used_in_the_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state_path = dir.path().join("state.json");
    let wall = t("2026-11-28T10:00:00Z");
    let engine = engine(wall);
    let shutdown = CancellationToken::new();
    let (task, _controls) = start(&engine, &state_path, wall, &shutdown).await;

    // A BuildKit build of `FROM base:1` finishes: only `image tag`.
    let built_at = t("2026-11-28T10:05:00Z");
    engine.add_image(fake::image(
        "sha256:child",
        &["app:1"],
        built_at,
        &[("sha256:b1", 100), ("sha256:b2", 200), ("sha256:c1", 10)],
    ));
    engine.push_event(EngineEvent {
        time: built_at,
        what: Use::ImageTagged {
            image: "sha256:child".to_owned(),
        },
    });
    // A retag of an image the state knows is no build of anything.
    engine.push_event(EngineEvent {
        time: built_at + TimeDelta::seconds(1),
        what: Use::ImageTagged {
            image: "sha256:other".to_owned(),
        },
    });
    // An event naming an image that is gone by now changes nothing.
    engine.push_event(EngineEvent {
        time: built_at + TimeDelta::seconds(2),
        what: Use::ImageLoaded {
            image: "sha256:gone".to_owned(),
        },
    });
    let read = || {
        State::load(&state_path, wall)
            .ok()
            .flatten()
            .and_then(|s| s.images.get("sha256:base").cloned())
    };
    for _ in 0..600 {
        if read().and_then(|r| r.last_used) == Some(built_at) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    task.await.expect("daemon task");

    let state = State::load(&state_path, wall)
        .expect("state readable")
        .expect("state file exists");
    for base in ["sha256:base", "sha256:lower"] {
        let rec = &state.images[base];
        assert_eq!(rec.last_used, Some(built_at), "{base}");
        assert_eq!(
            rec.last_used_by.as_deref(),
            Some("build of child"),
            "{base}"
        );
    }
    let other = &state.images["sha256:other"];
    assert_eq!(other.last_used_by.as_deref(), Some("tag"));
    let child = &state.images["sha256:child"];
    assert_eq!(
        child.last_used_by.as_deref(),
        Some("tag"),
        "the new image itself is used by its tag, not by a build"
    );
    // The pass after reads it back as a build, not an event.
    let tracked = state.tracked("sha256:base", wall);
    assert!(tracked.last_event_build.is_some(), "{tracked:?}");
}
