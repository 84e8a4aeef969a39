//! Last-use tracking from the engine: container times on start, events after.
//!
//! This module owns turning what the engine says about containers and images
//! into [`Update`]s, "image X was used at T by Y", for the state file.
//! [`reconcile`] reads the containers present once; [`follow`] then follows
//! the event stream, resolves every event to an image ID, and reconnects with
//! backoff when the stream ends (an engine restart) or fails, resuming from
//! the last event seen. The engine replays only its last 256 events, so each
//! reconnect also re-reads the containers' times: what the replay misses,
//! the newest use of each container still tells.
//!
//! Events arrive as engine-neutral [`Use`]s (each adapter maps its own
//! vocabulary), and each becomes an image ID:
//! - a container use names the container; the image ID comes from container
//!   inspect, remembered per container so that a destroy (the container is
//!   gone by then) still resolves, with the image as typed at create time
//!   (which may name another image by now) as the last resort.
//! - a tag, untag, load or import names the image (its ID, or a name that is
//!   resolved with image inspect).
//! - a pull names the reference pulled, resolved with image inspect.
//!
//! A delete makes no update: the image is gone, and passes drop vanished IDs.
//!
//! A `BuildKit` build emits only `image tag` for its result, nothing naming
//! the base it was built on: the daemon turns the update for an image it has
//! not seen into uses of the images under it (`daemon::build_use`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::{Container, ContainerRef, Engine, EngineError, EngineEvent, Use};

/// The first reconnect delay.
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);

/// The longest reconnect delay: an engine that is down for hours costs one
/// attempt every 30 s. A stream that stayed open this long also resets the
/// delay, so an engine restart a day later is retried quickly again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long a new stream must stay open without failing (or deliver an
/// event) to count as open: the engine answers a refused `GET /events` at
/// once, so a stream still quiet after this is following.
const OPEN_GRACE: Duration = Duration::from_secs(1);

/// How long an open stream may stay silent before it is reopened, unless
/// [`IDLE_TIMEOUT_ENV`] says otherwise. dockerd sends nothing while nothing
/// happens, so silence alone proves nothing; but a hung engine (or a proxy
/// that dropped the connection without closing it) is silent too. Reopening
/// with `since` loses nothing, and the reopen's container list, which has a
/// deadline, shows whether the engine still answers.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The environment variable that sets the idle bound of the event stream, as
/// a duration (`5m`).
pub const IDLE_TIMEOUT_ENV: &str = "IMAGEGC_EVENTS_IDLE_TIMEOUT";

/// [`DEFAULT_IDLE_TIMEOUT`], or what [`IDLE_TIMEOUT_ENV`] says (an unusable
/// value is logged and ignored).
fn idle_timeout() -> Duration {
    let Ok(text) = std::env::var(IDLE_TIMEOUT_ENV) else {
        return DEFAULT_IDLE_TIMEOUT;
    };
    match humantime::parse_duration(text.trim()) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            tracing::warn!(
                value = %text,
                default = %humantime::format_duration(DEFAULT_IDLE_TIMEOUT),
                "{IDLE_TIMEOUT_ENV} is not a duration above zero; using the default"
            );
            DEFAULT_IDLE_TIMEOUT
        }
    }
}

/// A use or sighting of an image, for the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The image ID (`sha256:…`) the use counts for.
    pub image_id: String,
    /// When the use happened, by the engine's clock.
    pub at: DateTime<Utc>,
    /// What the use was, kept in the state file as `last_used_by`:
    /// `container create`, `container start`, `container die`,
    /// `container destroy`, `pull`, `tag`, `untag`, `load` or `import`.
    pub by: &'static str,
}

/// Last uses from the containers present now: for every container, its
/// image was used at the newest of its created, started and finished times.
/// One update per image (the newest), sorted by image ID. Containers that
/// vanish between the list and their inspect are skipped.
pub async fn reconcile<E: Engine>(engine: &E) -> Result<Vec<Update>, EngineError> {
    let containers = engine.list_containers().await?;
    reconcile_containers(engine, containers).await
}

/// [`reconcile`] over containers already listed.
async fn reconcile_containers<E: Engine>(
    engine: &E,
    containers: Vec<Container>,
) -> Result<Vec<Update>, EngineError> {
    let mut newest: BTreeMap<String, Update> = BTreeMap::new();
    for container in containers {
        let times = match engine.container_times(&container.id).await {
            Ok(times) => times,
            Err(EngineError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let (at, by) = times.last_use();
        let image_id = if times.image_id.is_empty() {
            container.image_id
        } else {
            times.image_id
        };
        if image_id.is_empty() {
            continue;
        }
        let update = Update {
            image_id: image_id.clone(),
            at,
            by,
        };
        newest
            .entry(image_id)
            .and_modify(|u| {
                if update.at > u.at {
                    *u = update.clone();
                }
            })
            .or_insert(update);
    }
    Ok(newest.into_values().collect())
}

/// Follows the engine's events until `shutdown` is cancelled (or the
/// receiver of `updates` is gone), sending one [`Update`] per event that is a
/// use of an image.
///
/// When the stream ends or fails, reports `health(false)` and reconnects
/// after 250 ms, doubling up to 30 s while attempts keep failing, asking for
/// the events since the last one seen (or since `follow` started, when none
/// was): nothing is missed, and the one or two events the engine sends again
/// are dropped. Every reconnect also re-reads the containers' created,
/// started and finished times, as [`reconcile`] does at start-up, because
/// the engine replays only its last 256 events. Reports `health(true)` once
/// a stream is open again (it delivered an event, or stayed open for a
/// second without failing).
/// `health` is called on changes only.
pub async fn follow<E: Engine + 'static>(
    engine: Arc<E>,
    updates: UnboundedSender<Update>,
    shutdown: CancellationToken,
    health: impl Fn(bool) + Send + 'static,
) {
    let mut follower = Follower {
        engine,
        updates,
        health: Box::new(health),
        healthy: None,
        containers: HashMap::new(),
        resume: Resume::new(Utc::now()),
        reconnecting: false,
        idle: idle_timeout(),
    };
    // Cancellation may drop the follower at any await, even mid-inspect:
    // updates are sent whole or not at all, and nothing else is left behind.
    shutdown.run_until_cancelled(follower.run()).await;
}

/// Where to resume the stream, and what was seen there already.
struct Resume {
    /// The time of the last event seen, or when `follow` started.
    since: DateTime<Utc>,
    /// Events seen with exactly the time `since`: the engine sends them again
    /// (its `since` is inclusive), and they are skipped then.
    seen_at_since: HashSet<Use>,
}

impl Resume {
    fn new(start: DateTime<Utc>) -> Self {
        Self {
            since: start,
            seen_at_since: HashSet::new(),
        }
    }

    /// Records `event`; false when it was seen already.
    fn is_new(&mut self, event: &EngineEvent) -> bool {
        let key = event.what.clone();
        if event.time == self.since {
            return self.seen_at_since.insert(key);
        }
        // The last event received, even if the engine's clock stepped back.
        self.since = event.time;
        self.seen_at_since.clear();
        self.seen_at_since.insert(key);
        true
    }
}

/// The follower's state between events.
struct Follower<E> {
    /// Where events come from, and inspects to name their images.
    engine: Arc<E>,
    /// Where updates go (the daemon applies them to the state).
    updates: UnboundedSender<Update>,
    /// Told whether a stream is open (the daemon's `engine_up`).
    health: Box<dyn Fn(bool) + Send>,
    /// What `health` was last told.
    healthy: Option<bool>,
    /// Container ID → image ID, for the containers present at the last
    /// (re)connect and those created since; `destroy` events resolve here.
    containers: HashMap<String, String>,
    /// Where the next stream starts.
    resume: Resume,
    /// A connect was tried before: the next one is a reconnect, and
    /// re-reads the containers' times first.
    reconnecting: bool,
    /// Silence after which an open stream is reopened.
    idle: Duration,
}

/// Why one stream stopped.
enum Stopped {
    /// The engine could not be reached or the stream failed.
    Failed(EngineError),
    /// The engine closed the stream (an engine restart).
    Ended,
    /// Nobody receives updates any more.
    NoReceiver,
    /// The stream said nothing for the idle bound.
    Idle,
}

impl<E: Engine + 'static> Follower<E> {
    async fn run(&mut self) {
        let mut delay = INITIAL_BACKOFF;
        loop {
            let opened = Instant::now();
            let (stopped, delivered) = self.follow_one_stream().await;
            let reason = match stopped {
                Stopped::NoReceiver => {
                    tracing::debug!("nobody receives last-use updates; event follower stops");
                    return;
                }
                Stopped::Idle => {
                    // Not an outage: reopen at once, health unchanged. A hung
                    // engine fails the reopen's container list instead.
                    tracing::debug!(
                        idle = %humantime::format_duration(self.idle),
                        "engine event stream silent; reopening it"
                    );
                    delay = INITIAL_BACKOFF;
                    continue;
                }
                Stopped::Ended => None,
                Stopped::Failed(e) => Some(e),
            };
            self.report(false);
            // A stream that delivered or stayed up a while was a success: the
            // next outage starts over at the shortest delay.
            if delivered || opened.elapsed() >= MAX_BACKOFF {
                delay = INITIAL_BACKOFF;
            }
            let retry_in = humantime::format_duration(delay);
            match reason {
                None => tracing::info!(
                    %retry_in,
                    "engine event stream ended; reconnecting in {retry_in}"
                ),
                Some(error) => tracing::info!(
                    %retry_in,
                    %error,
                    "engine event stream failed; reconnecting in {retry_in}"
                ),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }

    /// Opens one stream and follows it until it stops. The flag says whether
    /// it delivered at least one new event.
    async fn follow_one_stream(&mut self) -> (Stopped, bool) {
        // Every attempt but the first is a reconnect (the daemon reads the
        // containers itself at start-up), even when the first one failed.
        let reread = std::mem::replace(&mut self.reconnecting, true);
        // Who uses what now; the stream then tells what changes. Refreshed
        // on every connect, so containers made while disconnected are known.
        let containers = match self.engine.list_containers().await {
            Ok(containers) => containers,
            Err(e) => return (Stopped::Failed(e), false),
        };
        self.containers = containers
            .iter()
            .filter(|c| !c.image_id.is_empty())
            .map(|c| (c.id.clone(), c.image_id.clone()))
            .collect();
        if reread {
            if let Err(stopped) = self.reread_uses(containers).await {
                return (stopped, false);
            }
        }
        let mut stream = self.engine.events(Some(self.resume.since));
        let mut open = false;
        let mut delivered = false;
        loop {
            let next = if open {
                match tokio::time::timeout(self.idle, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => return (Stopped::Idle, delivered),
                }
            } else if let Ok(next) = tokio::time::timeout(OPEN_GRACE, stream.next()).await {
                next
            } else {
                open = true;
                self.report(true);
                continue;
            };
            let event = match next {
                None => return (Stopped::Ended, delivered),
                Some(Err(e)) => return (Stopped::Failed(e), delivered),
                Some(Ok(event)) => event,
            };
            if !open {
                open = true;
                self.report(true);
            }
            if !self.resume.is_new(&event) {
                continue;
            }
            delivered = true;
            let Some(update) = self.update_for(&event).await else {
                continue;
            };
            tracing::debug!(
                image = %update.image_id,
                by = update.by,
                at = %update.at,
                "image used"
            );
            if self.updates.send(update).is_err() {
                return (Stopped::NoReceiver, delivered);
            }
        }
    }

    /// After a reconnect: the uses the containers' own times show, as at
    /// start-up. The engine replays only its last 256 events, so a busy host
    /// makes more uses during an outage than the stream can give back; the
    /// created, started and finished times of each container still hold
    /// the newest of them. All are sent, not only those after the resume
    /// point: that point is the engine's clock or ours, and the state keeps
    /// the newest use anyway.
    async fn reread_uses(&mut self, containers: Vec<Container>) -> Result<(), Stopped> {
        let updates = reconcile_containers(&*self.engine, containers)
            .await
            .map_err(Stopped::Failed)?;
        let mut sent = 0usize;
        for update in updates {
            if self.updates.send(update).is_err() {
                return Err(Stopped::NoReceiver);
            }
            sent += 1;
        }
        tracing::debug!(
            updates = sent,
            "last-use times re-read from containers after a reconnect"
        );
        Ok(())
    }

    fn report(&mut self, healthy: bool) {
        if self.healthy != Some(healthy) {
            self.healthy = Some(healthy);
            (self.health)(healthy);
        }
    }

    /// The use `event` stands for, if it is one and its image can be named.
    async fn update_for(&mut self, event: &EngineEvent) -> Option<Update> {
        let (image_id, by) = match &event.what {
            Use::ContainerCreated(c) => (self.container_image(c, false).await?, "container create"),
            Use::ContainerStarted(c) => (self.container_image(c, false).await?, "container start"),
            Use::ContainerDied(c) => (self.container_image(c, false).await?, "container die"),
            Use::ContainerDestroyed(c) => {
                (self.container_image(c, true).await?, "container destroy")
            }
            // The reference pulled, never an ID.
            Use::ImagePulled { reference } => (resolve(&*self.engine, reference).await?, "pull"),
            Use::ImageTagged { image } => (image_id_of(&*self.engine, image).await?, "tag"),
            Use::ImageUntagged { image } => (image_id_of(&*self.engine, image).await?, "untag"),
            Use::ImageLoaded { image } => (image_id_of(&*self.engine, image).await?, "load"),
            Use::ImageImported { image } => (image_id_of(&*self.engine, image).await?, "import"),
            Use::ImageDeleted { .. } => return None,
        };
        Some(Update {
            image_id,
            at: event.time,
            by,
        })
    }

    /// The image ID of the container an event is about. `destroyed`: the
    /// container is gone, so only what was remembered (or typed) names it.
    async fn container_image(
        &mut self,
        container: &ContainerRef,
        destroyed: bool,
    ) -> Option<String> {
        let id = &container.id;
        let known = if destroyed {
            self.containers.remove(id)
        } else {
            self.containers.get(id).cloned()
        };
        if known.is_some() {
            return known;
        }
        if !destroyed {
            match self.engine.container_times(id).await {
                Ok(times) => {
                    self.containers.insert(id.clone(), times.image_id.clone());
                    return Some(times.image_id);
                }
                Err(EngineError::NotFound(_)) => {}
                Err(error) => {
                    tracing::debug!(container = %id, %error, "cannot inspect the container of an event");
                    return None;
                }
            }
        }
        // Gone already (an event replayed after a reconnect, a short-lived
        // `docker run --rm`): fall back to the image as typed at create.
        let typed = container.image_as_typed.as_deref()?;
        image_id_of(&*self.engine, typed).await
    }
}

/// `name` itself when it is an image ID, else the image it names now.
async fn image_id_of<E: Engine>(engine: &E, name: &str) -> Option<String> {
    if name.starts_with("sha256:") {
        Some(name.to_owned())
    } else {
        resolve(engine, name).await
    }
}

/// The image `reference` names now; `None` (logged) when it names none.
async fn resolve<E: Engine>(engine: &E, reference: &str) -> Option<String> {
    match engine.resolve_image(reference).await {
        Ok(id) => Some(id),
        Err(error) => {
            // NotFound is normal: pulled and removed again since.
            tracing::debug!(%reference, %error, "cannot resolve the image of an event");
            None
        }
    }
}
