//! Last-use tracking from the engine's events: each event becomes an update
//! for the right image ID, and the follower survives the stream ending or
//! failing without losing events, busy-looping, or outliving shutdown.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use imagegc::engine::{
    Capabilities, Container, ContainerRef, ContainerTimes, Engine, EngineError, EngineEvent, Use,
};
use imagegc::events::{follow, reconcile, Update};
use imagegc::fake::{image, FakeEngine};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("test timestamp")
}

fn event(what: Use, at: &str) -> EngineEvent {
    EngineEvent { time: t(at), what }
}

/// A container event as the engine sends it: the image as typed at create.
fn container_event(
    what: fn(ContainerRef) -> Use,
    container: &str,
    typed_image: &str,
    at: &str,
) -> EngineEvent {
    event(
        what(ContainerRef {
            id: container.to_owned(),
            image_as_typed: Some(typed_image.to_owned()),
        }),
        at,
    )
}

fn container(id: &str, image_id: &str, created: &str) -> Container {
    Container {
        image_ref: String::new(),
        labels: std::collections::BTreeMap::new(),
        id: id.to_owned(),
        names: vec![format!("name-{id}")],
        image_id: image_id.to_owned(),
        state: "exited".to_owned(),
        created: t(created),
    }
}

/// An engine with `app:1` on `sha256:app` and `tool:latest` on `sha256:tool`.
fn engine() -> Arc<FakeEngine> {
    let engine = FakeEngine::new();
    engine.add_image(image(
        "sha256:app",
        &["app:1"],
        t("2026-01-01T00:00:00Z"),
        &[("sha256:l1", 10)],
    ));
    engine.add_image(image(
        "sha256:tool",
        &["tool:latest"],
        t("2026-01-01T00:00:00Z"),
        &[("sha256:l2", 10)],
    ));
    Arc::new(engine)
}

/// A running `follow` and what it reports.
struct Follower {
    updates: UnboundedReceiver<Update>,
    health: UnboundedReceiver<bool>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Follower {
    fn start<E: Engine + 'static>(engine: &Arc<E>) -> Self {
        let (tx, updates) = unbounded_channel();
        let (health_tx, health) = unbounded_channel();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(follow(
            Arc::clone(engine),
            tx,
            shutdown.clone(),
            move |up| {
                let _ = health_tx.send(up);
            },
        ));
        Self {
            updates,
            health,
            shutdown,
            task,
        }
    }

    /// Starts and waits until the first stream is open.
    async fn open<E: Engine + 'static>(engine: &Arc<E>) -> Self {
        let mut follower = Self::start(engine);
        assert!(follower.next_health().await, "the first stream opens");
        follower
    }

    async fn next_update(&mut self) -> Update {
        tokio::time::timeout(Duration::from_secs(60), self.updates.recv())
            .await
            .expect("an update within a minute")
            .expect("the follower is running")
    }

    async fn next_health(&mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(300), self.health.recv())
            .await
            .expect("a health change within five minutes")
            .expect("the follower is running")
    }

    /// No update is pending once the follower has caught up.
    async fn assert_no_update(&mut self) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(self.updates.try_recv().ok(), None);
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), self.task)
            .await
            .expect("follow stops within a second of shutdown")
            .expect("follow does not panic");
    }
}

fn update(image_id: &str, at: &str, by: &'static str) -> Update {
    Update {
        image_id: image_id.to_owned(),
        at: t(at),
        by,
    }
}

#[tokio::test(start_paused = true)]
async fn a_container_start_event_is_a_use_of_the_image_the_container_was_created_from() {
    let engine = engine();
    engine.add_container_times(
        "c1",
        ContainerTimes {
            image_id: "sha256:app".to_owned(),
            created: t("2026-02-01T00:00:00Z"),
            started_at: None,
            finished_at: None,
        },
    );
    let mut follower = Follower::open(&engine).await;

    // Typed as a tag that has moved on since: the container's image counts.
    engine.push_event(container_event(
        Use::ContainerStarted,
        "c1",
        "tool:latest",
        "2026-02-01T00:00:05Z",
    ));

    assert_eq!(
        follower.next_update().await,
        update("sha256:app", "2026-02-01T00:00:05Z", "container start")
    );
    follower.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_destroy_event_resolves_through_the_container_seen_at_create_after_it_is_gone() {
    let engine = engine();
    engine.add_container_times(
        "c2",
        ContainerTimes {
            image_id: "sha256:app".to_owned(),
            created: t("2026-02-01T00:00:00Z"),
            started_at: None,
            finished_at: None,
        },
    );
    let mut follower = Follower::open(&engine).await;
    engine.push_event(container_event(
        Use::ContainerCreated,
        "c2",
        "tool:latest",
        "2026-02-01T00:00:00Z",
    ));
    assert_eq!(
        follower.next_update().await,
        update("sha256:app", "2026-02-01T00:00:00Z", "container create")
    );

    engine.remove_container("c2");
    engine.push_event(container_event(
        Use::ContainerDied,
        "c2",
        "tool:latest",
        "2026-02-01T00:01:00Z",
    ));
    engine.push_event(container_event(
        Use::ContainerDestroyed,
        "c2",
        "tool:latest",
        "2026-02-01T00:01:01Z",
    ));

    assert_eq!(
        follower.next_update().await,
        update("sha256:app", "2026-02-01T00:01:00Z", "container die")
    );
    assert_eq!(
        follower.next_update().await,
        update("sha256:app", "2026-02-01T00:01:01Z", "container destroy")
    );
    assert_eq!(
        engine.calls.container_times.load(Ordering::Relaxed),
        1,
        "one inspect, at create"
    );
    follower.stop().await;
}

#[tokio::test(start_paused = true)]
async fn containers_present_when_following_starts_resolve_without_an_inspect() {
    let engine = engine();
    engine.add_container(container("c3", "sha256:app", "2026-01-10T00:00:00Z"));
    let mut follower = Follower::open(&engine).await;

    engine.remove_container("c3");
    engine.push_event(container_event(
        Use::ContainerDestroyed,
        "c3",
        "tool:latest",
        "2026-02-01T00:00:00Z",
    ));

    assert_eq!(
        follower.next_update().await,
        update("sha256:app", "2026-02-01T00:00:00Z", "container destroy")
    );
    assert_eq!(engine.calls.container_times.load(Ordering::Relaxed), 0);
    follower.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_container_gone_before_its_first_event_is_read_falls_back_to_the_image_as_typed() {
    let engine = engine();
    let mut follower = Follower::open(&engine).await;

    // `docker run --rm` that ended before its create event was handled.
    engine.push_event(container_event(
        Use::ContainerCreated,
        "c4",
        "tool",
        "2026-02-01T00:00:00Z",
    ));

    assert_eq!(
        follower.next_update().await,
        update("sha256:tool", "2026-02-01T00:00:00Z", "container create")
    );
    follower.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_tag_event_is_a_use_of_the_image_it_names_by_id() {
    let engine = engine();
    let mut follower = Follower::open(&engine).await;

    let tag = event(
        Use::ImageTagged {
            image: "sha256:app".to_owned(),
        },
        "2026-02-02T00:00:00Z",
    );
    engine.push_event(tag);

    assert_eq!(
        follower.next_update().await,
        update("sha256:app", "2026-02-02T00:00:00Z", "tag")
    );
    assert_eq!(engine.calls.resolve_image.load(Ordering::Relaxed), 0);
    follower.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_pull_event_resolves_the_reference_pulled_and_a_delete_event_is_no_use() {
    let engine = engine();
    let mut follower = Follower::open(&engine).await;

    engine.push_event(event(
        Use::ImageDeleted {
            image: "sha256:gone".to_owned(),
        },
        "2026-02-03T00:00:00Z",
    ));
    // Pulled and removed again before the event was read: nothing to name.
    engine.push_event(event(
        Use::ImagePulled {
            reference: "vanished:1".to_owned(),
        },
        "2026-02-03T00:00:01Z",
    ));
    engine.push_event(event(
        Use::ImagePulled {
            reference: "tool:latest".to_owned(),
        },
        "2026-02-03T00:00:02Z",
    ));

    assert_eq!(
        follower.next_update().await,
        update("sha256:tool", "2026-02-03T00:00:02Z", "pull")
    );
    follower.assert_no_update().await;
    follower.stop().await;
}

#[tokio::test(start_paused = true)]
async fn when_the_engine_closes_the_stream_follow_reconnects_since_the_last_event_seen() {
    let engine = engine();
    let mut follower = Follower::open(&engine).await;
    let first = event(
        Use::ImageLoaded {
            image: "sha256:app".to_owned(),
        },
        "2026-02-04T00:00:00Z",
    );
    engine.push_event(first.clone());
    assert_eq!(
        follower.next_update().await,
        update("sha256:app", "2026-02-04T00:00:00Z", "load")
    );

    let closed_at = tokio::time::Instant::now();
    engine.close_event_stream();
    assert!(
        !follower.next_health().await,
        "unhealthy while reconnecting"
    );
    assert!(follower.next_health().await, "healthy once reconnected");

    let requests = engine.event_requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].since, Some(first.time));
    assert_eq!(
        (requests[1].at - closed_at).as_millis(),
        250,
        "the first retry comes after 250 ms"
    );
    // The engine's `since` is inclusive: it sent `first` again, and follow
    // dropped it. The next update is the next event.
    engine.push_event(event(
        Use::ImageImported {
            image: "sha256:tool".to_owned(),
        },
        "2026-02-04T00:00:01Z",
    ));
    assert_eq!(
        follower.next_update().await,
        update("sha256:tool", "2026-02-04T00:00:01Z", "import")
    );
    follower.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_silent_for_five_minutes_is_reopened_since_the_last_event_without_an_outage() {
    let engine = engine();
    let mut follower = Follower::open(&engine).await;
    let seen = event(
        Use::ImageLoaded {
            image: "sha256:app".to_owned(),
        },
        "2026-02-06T00:00:00Z",
    );
    engine.push_event(seen.clone());
    follower.next_update().await;
    let quiet_from = tokio::time::Instant::now();

    // dockerd sends nothing while nothing happens; a hung one neither.
    tokio::time::sleep(imagegc::events::DEFAULT_IDLE_TIMEOUT + Duration::from_secs(1)).await;
    let requests = engine.event_requests();
    assert_eq!(requests.len(), 2, "reopened once after the idle bound");
    assert_eq!(
        requests[1].since,
        Some(seen.time),
        "resumes since the last event"
    );
    assert_eq!(
        (requests[1].at - quiet_from).as_secs(),
        imagegc::events::DEFAULT_IDLE_TIMEOUT.as_secs(),
        "at the bound, with no reconnect delay"
    );
    assert!(
        follower.health.try_recv().is_err(),
        "a silent stream is not an outage"
    );
    engine.push_event(event(
        Use::ImageTagged {
            image: "sha256:tool".to_owned(),
        },
        "2026-02-06T00:10:00Z",
    ));
    assert_eq!(
        follower.next_update().await,
        update("sha256:tool", "2026-02-06T00:10:00Z", "tag")
    );

    // A hung engine: the reopen's container list fails, and that is an outage.
    engine.fail_everything(Some(EngineError::Unavailable {
        address: "unix:///fake".to_owned(),
        reason: "no complete answer".to_owned(),
    }));
    tokio::time::sleep(imagegc::events::DEFAULT_IDLE_TIMEOUT + Duration::from_secs(1)).await;
    assert!(
        !follower.next_health().await,
        "unhealthy once the reopen fails"
    );
    follower.stop().await;
}

#[tokio::test(start_paused = true)]
async fn events_sent_while_disconnected_arrive_after_the_reconnect() {
    let engine = engine();
    let mut follower = Follower::open(&engine).await;
    engine.push_event(event(
        Use::ImageTagged {
            image: "sha256:app".to_owned(),
        },
        "2026-02-05T00:00:00Z",
    ));
    follower.next_update().await;

    engine.close_event_stream();
    engine.fail_next_events(EngineError::Unavailable {
        address: "unix:///fake".to_owned(),
        reason: "connection refused".to_owned(),
    });
    engine.push_event(event(
        Use::ImageUntagged {
            image: "sha256:tool".to_owned(),
        },
        "2026-02-05T00:00:01Z",
    ));

    assert_eq!(
        follower.next_update().await,
        update("sha256:tool", "2026-02-05T00:00:01Z", "untag")
    );
    follower.stop().await;
}

#[tokio::test(start_paused = true)]
async fn reconnect_delays_double_from_250_ms_and_never_exceed_30_s() {
    let engine = engine();
    let failures = 12;
    for _ in 0..failures {
        engine.fail_next_events(EngineError::Other("HTTP 500: boom".to_owned()));
    }
    let mut follower = Follower::start(&engine);

    assert!(!follower.next_health().await);
    assert!(follower.next_health().await, "open after the failures");

    let requests = engine.event_requests();
    assert_eq!(requests.len(), failures + 1);
    let delays: Vec<u128> = requests
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect();
    assert_eq!(
        delays,
        vec![250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000]
    );
    follower.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_engine_is_retried_with_backoff_and_reported_unhealthy() {
    let engine = engine();
    engine.fail_everything(Some(EngineError::Unavailable {
        address: "unix:///fake".to_owned(),
        reason: "connection refused".to_owned(),
    }));
    let mut follower = Follower::start(&engine);
    assert!(!follower.next_health().await);

    tokio::time::sleep(Duration::from_secs(600)).await;
    let attempts = engine.calls.list_containers.load(Ordering::Relaxed);
    // 0.25 + 0.5 + … + 16 s, then one every 30 s: 8 + 18 in ten minutes.
    assert!(
        (20..=30).contains(&attempts),
        "{attempts} attempts in ten minutes"
    );
    assert_eq!(
        engine.calls.events.load(Ordering::Relaxed),
        0,
        "no stream is asked for while the engine does not answer"
    );

    engine.fail_everything(None);
    assert!(
        follower.next_health().await,
        "healthy once the engine is back"
    );
    follower.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_follow_promptly_while_following_and_while_waiting_to_reconnect() {
    let engine = engine();
    let follower = Follower::open(&engine).await;
    let asked = tokio::time::Instant::now();
    follower.stop().await;
    assert_eq!(asked.elapsed(), Duration::ZERO);
    assert_eq!(engine.open_event_streams(), 0, "the stream is dropped");

    engine.fail_everything(Some(EngineError::Other("down".to_owned())));
    let mut follower = Follower::start(&engine);
    assert!(!follower.next_health().await);
    tokio::time::sleep(Duration::from_secs(100)).await; // deep into the backoff
    let asked = tokio::time::Instant::now();
    follower.stop().await;
    assert_eq!(asked.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn follow_stops_when_nobody_receives_updates() {
    let engine = engine();
    let mut follower = Follower::open(&engine).await;
    follower.updates.close();
    engine.push_event(event(
        Use::ImageTagged {
            image: "sha256:app".to_owned(),
        },
        "2026-02-06T00:00:00Z",
    ));
    tokio::time::timeout(Duration::from_secs(1), follower.task)
        .await
        .expect("follow ends")
        .expect("follow does not panic");
}

#[tokio::test]
async fn reconcile_counts_each_image_used_at_its_containers_newest_time() {
    let engine = FakeEngine::new();
    engine.vanish_container("gone");
    // Two containers of `app`: the newest time of either wins.
    engine.add_container(container("old", "sha256:app", "2026-01-01T00:00:00Z"));
    engine.add_container_times(
        "old",
        ContainerTimes {
            image_id: "sha256:app".to_owned(),
            created: t("2026-01-01T00:00:00Z"),
            started_at: Some(t("2026-01-02T00:00:00Z")),
            finished_at: Some(t("2026-01-03T00:00:00Z")),
        },
    );
    engine.add_container(container("new", "sha256:app", "2026-01-04T00:00:00Z"));
    engine.add_container_times(
        "new",
        ContainerTimes {
            image_id: "sha256:app".to_owned(),
            created: t("2026-01-04T00:00:00Z"),
            started_at: Some(t("2026-01-05T00:00:00Z")),
            finished_at: None,
        },
    );
    // Never started: created is the use.
    engine.add_container(container("fresh", "sha256:tool", "2026-01-06T00:00:00Z"));
    engine.add_container(container("gone", "sha256:other", "2026-01-07T00:00:00Z"));

    let updates = reconcile(&engine).await.expect("reconcile");

    assert_eq!(
        updates,
        vec![
            update("sha256:app", "2026-01-05T00:00:00Z", "container start"),
            update("sha256:tool", "2026-01-06T00:00:00Z", "container create"),
        ]
    );
}

#[tokio::test]
async fn reconcile_fails_when_the_engine_does() {
    let engine = engine();
    engine.fail_everything(Some(EngineError::Other("down".to_owned())));
    assert_eq!(
        reconcile(&*engine).await,
        Err(EngineError::Other("down".to_owned()))
    );
}

/// Against the real engine: a container made from an image the test loaded
/// is reported as a use of that image, by ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_reports_a_container_created_on_the_real_engine() {
    let lab = common::Lab::new();
    let loaded = lab.load_image(&common::ImageSpec::new().tag(lab.reference("events", "1")));
    let engine = Arc::new(
        imagegc::docker::Docker::connect(&common::engine_address())
            .await
            .expect("connect to the engine"),
    );
    let mut follower = Follower::start(&engine);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), follower.health.recv())
            .await
            .expect("the stream opens within 10 s")
            .expect("follow is running"),
        "the stream opens"
    );

    // By reference, so the image ID must come from the engine.
    let reference = loaded.tags[0].clone();
    let container = tokio::task::block_in_place(|| lab.create_container(&reference));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let found = loop {
        let got = tokio::time::timeout_at(deadline, follower.updates.recv())
            .await
            .unwrap_or_else(|_| panic!("no create update for container {container} in 10 s"))
            .expect("follow is running");
        if got.image_id == loaded.id && got.by == "container create" {
            break got;
        }
    };
    let age = Utc::now() - found.at;
    assert!(
        age < chrono::TimeDelta::seconds(30) && age > chrono::TimeDelta::seconds(-5),
        "the use is stamped with the event time: {}",
        found.at
    );
    follower.stop().await;
}

/// Against the real engine: container inspect gives the image ID and the
/// engine's zero times ("never") as `None`; image inspect resolves a tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_engine_reports_container_times_and_resolves_references() {
    let lab = common::Lab::new();
    let loaded = lab.load_image(&common::ImageSpec::new().tag(lab.reference("times", "1")));
    let reference = loaded.tags[0].clone();
    let (created, exited) = tokio::task::block_in_place(|| {
        (
            lab.create_container(&reference),
            lab.exited_container(&reference),
        )
    });
    let engine = imagegc::docker::Docker::connect(&common::engine_address())
        .await
        .expect("connect to the engine");

    let never_started = engine
        .container_times(&created)
        .await
        .expect("inspect the created container");
    assert_eq!(never_started.image_id, loaded.id);
    assert_eq!(never_started.started_at, None);
    assert_eq!(never_started.finished_at, None);
    assert!(Utc::now() - never_started.created < chrono::TimeDelta::minutes(5));

    let ran = engine
        .container_times(&exited)
        .await
        .expect("inspect the exited container");
    assert_eq!(ran.image_id, loaded.id);
    let started = ran.started_at.expect("the exited container started");
    let finished = ran.finished_at.expect("the exited container finished");
    assert!(ran.created <= started && ran.created <= finished, "{ran:?}");
    // A process that exits at once can be reaped before the engine stamps
    // StartedAt, so FinishedAt may be the earlier one: the newest counts.
    assert_eq!(ran.last_use().0, started.max(finished), "{ran:?}");

    assert_eq!(
        engine.resolve_image(&reference).await,
        Ok(loaded.id.clone())
    );
    assert!(matches!(
        engine.container_times("imagegc-no-such-container").await,
        Err(EngineError::NotFound(_))
    ));
    assert!(matches!(
        engine.resolve_image(&lab.reference("missing", "1")).await,
        Err(EngineError::NotFound(_))
    ));
}

/// The real engine behind a stream that breaks on demand, and that replays
/// nothing after the break: the worst case of the engine's 256-event replay.
struct BreakingStream {
    inner: imagegc::docker::Docker,
    first: std::sync::atomic::AtomicBool,
    cut: Arc<tokio::sync::Notify>,
}

impl Engine for BreakingStream {
    async fn info(&self) -> Result<imagegc::engine::EngineInfo, EngineError> {
        self.inner.info().await
    }
    async fn list_images(&self) -> Result<Vec<imagegc::engine::ImageSummary>, EngineError> {
        self.inner.list_images().await
    }
    async fn list_containers(&self) -> Result<Vec<Container>, EngineError> {
        self.inner.list_containers().await
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn image_details(
        &self,
        image_id: &str,
    ) -> Result<imagegc::engine::ImageFacts, EngineError> {
        self.inner.image_details(image_id).await
    }
    async fn remove_image(
        &self,
        target: &str,
    ) -> Result<Vec<imagegc::engine::DeleteItem>, EngineError> {
        self.inner.remove_image(target).await
    }
    fn events(&self, _since: Option<DateTime<Utc>>) -> imagegc::engine::EventStream {
        if self.first.swap(false, Ordering::SeqCst) {
            // Quiet until cut, then over: the engine went away.
            let cut = Arc::clone(&self.cut);
            return Box::pin(futures_util::stream::unfold(Some(cut), |cut| async move {
                cut?.notified().await;
                None
            }));
        }
        self.inner.events(None)
    }
    async fn container_times(&self, container_id: &str) -> Result<ContainerTimes, EngineError> {
        self.inner.container_times(container_id).await
    }
    async fn resolve_image(&self, reference: &str) -> Result<String, EngineError> {
        self.inner.resolve_image(reference).await
    }
}

/// Against the real engine: a container created while the stream is down,
/// whose events are never replayed, still reaches the follower after the
/// reconnect, from the containers' times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_created_while_the_stream_is_down_is_reported_after_the_reconnect() {
    let lab = common::Lab::new();
    let loaded = lab.load_image(&common::ImageSpec::new().tag(lab.reference("outage", "1")));
    let cut = Arc::new(tokio::sync::Notify::new());
    let engine = Arc::new(BreakingStream {
        inner: imagegc::docker::Docker::connect(&common::engine_address())
            .await
            .expect("connect to the engine"),
        first: std::sync::atomic::AtomicBool::new(true),
        cut: Arc::clone(&cut),
    });
    let mut follower = Follower::start(&engine);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), follower.health.recv())
            .await
            .expect("the stream opens within 10 s")
            .expect("follow is running"),
        "the stream opens"
    );
    let reference = loaded.tags[0].clone();
    let container = tokio::task::block_in_place(|| lab.create_container(&reference));
    cut.notify_one();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = tokio::time::timeout_at(deadline, follower.updates.recv())
            .await
            .unwrap_or_else(|_| panic!("container {container} was not reported in 10 s"))
            .expect("follow is running");
        if got.image_id == loaded.id && got.by == "container create" {
            break;
        }
    }
    follower.stop().await;
}
