//! An in-memory [`Engine`] for tests and benchmarks (`test-support` feature:
//! not in the release library).
//!
//! It behaves like the Docker Engine where imagegc depends on it: removing a
//! tag untags, removing the last tag deletes the image unless a container or
//! a child holds it, deleting an image releases the layers no other image
//! uses and reports their chain IDs as `Deleted`. Its [`Capabilities`] are
//! settable: with `reports_deleted_layers` off, its removal answers list no
//! `Deleted` lines at all, as CRI's `RemoveImage` answers nothing. (The
//! other capabilities are declared, for code that reads them; the removal
//! semantics stay Docker's.) Unless told, it is not on this host
//! (`root_dir_on_host` off), so no pass probes a disk for it. Failures can be
//! scripted per target, and every method counts its calls so tests can
//! assert, for example, that a second pass makes no inspect calls.
//!
//! Its build cache ([`FakeEngine::add_cache_record`]) removes records as
//! Docker 20.10 does (measured on a private engine, `tests/engine_contract.rs`):
//! exactly the record named, never one in use (measured during a running build), never one that another
//! record still names as a parent, shared ones too (imagegc's removals ask
//! for them); a record it does not delete, or one that is gone, is a normal
//! answer (`deleted: false`), not an error; `reported_bytes` is the record's
//! `Size`, as `SpaceReclaimed` is. Without the `build_cache` capability both
//! build-cache calls fail with `EngineError::Unsupported`, as on Podman.
//!
//! Containers have settable inspect details
//! ([`FakeEngine::set_container_details`]); `container_details` without
//! `size` leaves `size_rw` out, as the engine leaves `SizeRw` out. The
//! trait's `remove_container` answers as Docker 20.10 does (measured,
//! docs/ENGINES.md): 409 for a running, paused, restarting or removing
//! container, 404 for an unknown one, otherwise the container goes (never
//! its volumes: the fake has none) and its image is no longer in use. It
//! accepts any ID (tests name containers `c1`); the Docker adapter sends only
//! full IDs. The inherent [`FakeEngine::remove_container`] is a test's own
//! `docker rm -f`, which neither counts nor checks.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::engine::docker::layers::chain_ids;
use crate::engine::{
    is_plain_record_id, no_build_cache, CacheRecord, CacheRecordKind, CacheRemoval, Capabilities,
    Container, ContainerDetails, ContainerTimes, DeleteItem, Engine, EngineError, EngineEvent,
    EngineInfo, EventStream, ImageFacts, ImageSummary, Layer,
};

/// How many of the newest events the fake replays to `events(since)`, as
/// the Docker Engine does (its event log keeps the last 256).
pub const EVENT_REPLAY_LIMIT: usize = 256;

/// One image in the fake engine.
#[derive(Debug, Clone)]
pub struct FakeImage {
    /// As listed.
    pub summary: ImageSummary,
    /// Diff IDs with their sizes, bottom first.
    pub layers: Vec<(String, u64)>,
}

struct Inner {
    capabilities: Capabilities,
    images: Vec<FakeImage>,
    containers: Vec<Container>,
    fail_remove: HashMap<String, EngineError>,
    fail_all: Option<EngineError>,
    removals: Vec<String>,
    container_times: HashMap<String, ContainerTimes>,
    /// Every event pushed, for replays to later `events(since)` calls.
    event_log: Vec<EngineEvent>,
    /// The open event streams.
    event_streams: Vec<mpsc::UnboundedSender<Result<EngineEvent, EngineError>>>,
    /// Errors the next `events` calls fail with, first first.
    event_failures: VecDeque<EngineError>,
    event_requests: Vec<EventRequest>,
    /// How long `list_images` takes.
    list_delay: std::time::Duration,
    /// How long each `remove_image` takes.
    remove_delay: std::time::Duration,
    /// Called with the 1-based number of each removal as it starts.
    remove_hook: Option<RemoveHook>,
    /// Containers still listed but gone by the time they are inspected.
    vanished: std::collections::HashSet<String>,
    /// Containers created at the same moment as the delete of their image,
    /// by image ID: both succeed, as on Docker's graph-driver store.
    racing_creates: HashMap<String, Container>,
    /// `LastTagTime` of images, by ID (none when absent, as after a load).
    last_tag_times: HashMap<String, DateTime<Utc>>,
    /// The build cache, in the order added.
    cache: Vec<CacheRecord>,
    /// IDs passed to `remove_cache_record`, in order.
    cache_removals: Vec<String>,
    /// What `build_cache` fails with, when set (the other calls answer).
    fail_build_cache: Option<EngineError>,
    /// List records without their parents (Docker 26.1), still refusing a
    /// parent while a child exists.
    hide_cache_parents: bool,
    /// Inspect details of containers, by ID (defaults when absent).
    container_details: HashMap<String, ContainerDetails>,
    /// IDs passed to the trait's `remove_container`, in order.
    container_removals: Vec<String>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            capabilities: Capabilities {
                root_dir_on_host: false,
                ..Capabilities::DOCKER_20_10
            },
            images: Vec::new(),
            containers: Vec::new(),
            fail_remove: HashMap::new(),
            fail_all: None,
            removals: Vec::new(),
            container_times: HashMap::new(),
            event_log: Vec::new(),
            event_streams: Vec::new(),
            event_failures: VecDeque::new(),
            event_requests: Vec::new(),
            list_delay: std::time::Duration::ZERO,
            remove_delay: std::time::Duration::ZERO,
            remove_hook: None,
            vanished: std::collections::HashSet::new(),
            racing_creates: HashMap::new(),
            last_tag_times: HashMap::new(),
            cache: Vec::new(),
            cache_removals: Vec::new(),
            fail_build_cache: None,
            hide_cache_parents: false,
            container_details: HashMap::new(),
            container_removals: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("images", &self.images.len())
            .field("containers", &self.containers.len())
            .field("removals", &self.removals)
            .finish_non_exhaustive()
    }
}

/// A hook on removals: gets the 1-based number of each removal as it starts.
pub type RemoveHook = std::sync::Arc<dyn Fn(usize) + Send + Sync>;

/// One call of `events` on the fake engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRequest {
    /// The `since` asked for.
    pub since: Option<DateTime<Utc>>,
    /// When (tokio time, so paused-time tests can check reconnect delays).
    pub at: tokio::time::Instant,
}

/// Call counters.
#[derive(Debug, Default)]
pub struct Calls {
    /// `list_images` calls.
    pub list_images: AtomicUsize,
    /// `list_containers` calls.
    pub list_containers: AtomicUsize,
    /// `image_details` calls (inspect + history).
    pub image_details: AtomicUsize,
    /// `remove_image` calls.
    pub remove_image: AtomicUsize,
    /// `events` calls (stream openings).
    pub events: AtomicUsize,
    /// `container_times` calls (container inspect).
    pub container_times: AtomicUsize,
    /// `resolve_image` calls (image inspect by name).
    pub resolve_image: AtomicUsize,
    /// `build_cache` calls.
    pub build_cache: AtomicUsize,
    /// `remove_cache_record` calls.
    pub remove_cache_record: AtomicUsize,
    /// `container_details` calls, with or without size.
    pub container_details: AtomicUsize,
    /// `container_details` calls that asked for the size (`size=1`).
    pub container_details_sized: AtomicUsize,
    /// Calls of the trait's `remove_container`.
    pub remove_container: AtomicUsize,
}

/// The fake engine.
#[derive(Debug, Default)]
pub struct FakeEngine {
    inner: Mutex<Inner>,
    /// Call counters, readable at any time.
    pub calls: Calls,
}

impl FakeEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock only happens in a failing test.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Add an image; returns its ID.
    pub fn add_image(&self, image: FakeImage) -> String {
        let id = image.summary.id.clone();
        self.lock().images.push(image);
        id
    }

    /// Set the `LastTagTime` image inspect reports for an image.
    pub fn set_last_tag_time(&self, image_id: &str, at: DateTime<Utc>) {
        self.lock().last_tag_times.insert(image_id.to_string(), at);
    }

    /// Add a container.
    pub fn add_container(&self, container: Container) {
        self.lock().containers.push(container);
    }

    /// Declare these capabilities from now on (see the module doc for
    /// which ones change the fake's behaviour).
    pub fn set_capabilities(&self, capabilities: Capabilities) {
        self.lock().capabilities = capabilities;
    }

    /// Make removals of `target` fail with `error`: an image reference or ID
    /// for `remove_image`, a container ID for `remove_container`.
    pub fn fail_removal_of(&self, target: &str, error: EngineError) {
        self.lock().fail_remove.insert(target.to_string(), error);
    }

    /// Make `list_images` take this long (tokio time, so tests can pause it).
    pub fn set_list_delay(&self, delay: std::time::Duration) {
        self.lock().list_delay = delay;
    }

    /// Make each `remove_image` take this long.
    pub fn set_remove_delay(&self, delay: std::time::Duration) {
        self.lock().remove_delay = delay;
    }

    /// Call `hook` with the 1-based number of each removal as it starts, e.g.
    /// to cancel a pass while a removal is in flight.
    pub fn on_remove(&self, hook: impl Fn(usize) + Send + Sync + 'static) {
        self.lock().remove_hook = Some(std::sync::Arc::new(hook));
    }

    /// Keep `container_id` in the container list but answer its inspect with
    /// 404, as when `docker rm` races a listing.
    pub fn vanish_container(&self, container_id: &str) {
        self.lock().vanished.insert(container_id.to_string());
    }

    /// When the image `container.image_id` is deleted, `container` is
    /// created at the same moment and both succeed: the container remains,
    /// its image gone, as Docker's graph-driver store allows.
    pub fn create_racing_delete(&self, container: Container) {
        self.lock()
            .racing_creates
            .insert(container.image_id.clone(), container);
    }

    /// Delete an image whatever uses it, as `docker rmi -f` does for a
    /// stopped container: the container stays with its image gone.
    pub fn force_remove_image(&self, image_id: &str) {
        self.lock().images.retain(|i| i.summary.id != image_id);
    }

    /// Make every call fail with `error` (or succeed again with `None`).
    pub fn fail_everything(&self, error: Option<EngineError>) {
        self.lock().fail_all = error;
    }

    /// Make `build_cache` fail with `error` (or answer again with `None`),
    /// as an engine that declares a build cache and then answers 404.
    pub fn fail_build_cache(&self, error: Option<EngineError>) {
        self.lock().fail_build_cache = error;
    }

    /// Targets passed to `remove_image`, in order.
    pub fn removals(&self) -> Vec<String> {
        self.lock().removals.clone()
    }

    /// IDs of the images present.
    pub fn image_ids(&self) -> Vec<String> {
        self.lock()
            .images
            .iter()
            .map(|i| i.summary.id.clone())
            .collect()
    }

    /// Tags present on all images.
    pub fn tags(&self) -> Vec<String> {
        self.lock()
            .images
            .iter()
            .flat_map(|i| i.summary.tags.clone())
            .collect()
    }

    /// Remove a container as a test's own `docker rm -f` would, whatever
    /// its state, without counting a call; its times and details go too.
    /// (The engine call imagegc makes is the trait's
    /// [`Engine::remove_container`]: `Engine::remove_container(&fake, id)`.)
    pub fn remove_container(&self, id: &str) {
        let mut inner = self.lock();
        inner.containers.retain(|c| c.id != id);
        inner.container_times.remove(id);
        inner.container_details.remove(id);
    }

    /// Set what `container_details` answers for a container (its
    /// `size_rw` only when asked with `size`). Without this a listed
    /// container has default details: never started or finished, restart
    /// policy `no`, no mounts from others, a writable layer of 0 bytes.
    pub fn set_container_details(&self, container_id: &str, details: ContainerDetails) {
        self.lock()
            .container_details
            .insert(container_id.to_string(), details);
    }

    /// Set the state of a listed container (`running`, `exited`, …), as a
    /// restart or a stop between two calls would.
    pub fn set_container_state(&self, container_id: &str, state: &str) {
        if let Some(c) = self
            .lock()
            .containers
            .iter_mut()
            .find(|c| c.id == container_id)
        {
            state.clone_into(&mut c.state);
        }
    }

    /// IDs passed to the trait's `remove_container`, in order (refused and
    /// failed ones included).
    pub fn container_removals(&self) -> Vec<String> {
        self.lock().container_removals.clone()
    }

    /// IDs of the containers present.
    pub fn container_ids(&self) -> Vec<String> {
        self.lock()
            .containers
            .iter()
            .map(|c| c.id.clone())
            .collect()
    }

    /// Set the times `container_times` reports for a container. Without
    /// this, a container added with [`FakeEngine::add_container`] reports its
    /// `created` time and was never started. Works for IDs not listed, too.
    pub fn add_container_times(&self, container_id: &str, times: ContainerTimes) {
        self.lock()
            .container_times
            .insert(container_id.to_string(), times);
    }

    /// Send an event to every open event stream, and keep it for replays
    /// to later `events(since)` calls.
    pub fn push_event(&self, event: EngineEvent) {
        let mut inner = self.lock();
        inner
            .event_streams
            .retain(|tx| tx.send(Ok(event.clone())).is_ok());
        inner.event_log.push(event);
    }

    /// End every open event stream, as an engine restart does. Events already
    /// sent on a stream are still delivered before its end.
    pub fn close_event_stream(&self) {
        self.lock().event_streams.clear();
    }

    /// Make the next `events` call return a stream that yields `error` and
    /// ends; call it N times for N failures.
    pub fn fail_next_events(&self, error: EngineError) {
        self.lock().event_failures.push_back(error);
    }

    /// The `events` calls so far, in order.
    pub fn event_requests(&self) -> Vec<EventRequest> {
        self.lock().event_requests.clone()
    }

    /// How many event streams are open (and still read by someone).
    pub fn open_event_streams(&self) -> usize {
        let mut inner = self.lock();
        inner.event_streams.retain(|tx| !tx.is_closed());
        inner.event_streams.len()
    }

    /// List build-cache records without their parents from now on, as
    /// Docker 26.1 does (docs/ENGINES.md); removals still refuse a parent
    /// while a child exists.
    pub fn hide_cache_parents(&self, hide: bool) {
        self.lock().hide_cache_parents = hide;
    }

    /// Add a build-cache record (see [`cache_record`]).
    pub fn add_cache_record(&self, record: CacheRecord) {
        self.lock().cache.push(record);
    }

    /// Mark a record in use by a running build, or not.
    pub fn set_cache_in_use(&self, id: &str, in_use: bool) {
        if let Some(r) = self.lock().cache.iter_mut().find(|r| r.id == id) {
            r.in_use = in_use;
        }
    }

    /// Mark a record shared with image layers, or not.
    pub fn set_cache_shared(&self, id: &str, shared: bool) {
        if let Some(r) = self.lock().cache.iter_mut().find(|r| r.id == id) {
            r.shared = shared;
        }
    }

    /// IDs of the build-cache records present, in the order added.
    pub fn cache_ids(&self) -> Vec<String> {
        self.lock().cache.iter().map(|r| r.id.clone()).collect()
    }

    /// IDs passed to `remove_cache_record`, in order.
    pub fn cache_removals(&self) -> Vec<String> {
        self.lock().cache_removals.clone()
    }

    fn check(&self) -> Result<(), EngineError> {
        match &self.lock().fail_all {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

/// A simple image for tests: `id` is any unique string; layers are
/// `(diff_id, size)` pairs.
pub fn image(id: &str, tags: &[&str], created: DateTime<Utc>, layers: &[(&str, u64)]) -> FakeImage {
    FakeImage {
        summary: ImageSummary {
            id: id.to_string(),
            parent_id: None,
            tags: tags.iter().map(ToString::to_string).collect(),
            digests: Vec::new(),
            created,
            labels: std::collections::BTreeMap::new(),
        },
        layers: layers.iter().map(|(d, s)| ((*d).to_string(), *s)).collect(),
    }
}

/// A simple build-cache record for tests: `regular`, not in use, not
/// shared, created and last used at `created`, used once.
pub fn cache_record(id: &str, parents: &[&str], size: u64, created: DateTime<Utc>) -> CacheRecord {
    CacheRecord {
        id: id.to_string(),
        parents: parents.iter().map(ToString::to_string).collect(),
        kind: CacheRecordKind::Regular,
        description: "fileop target".to_string(),
        in_use: false,
        shared: false,
        size,
        created,
        last_used: Some(created),
        usage_count: 1,
    }
}

impl Engine for FakeEngine {
    fn capabilities(&self) -> Capabilities {
        self.lock().capabilities
    }

    async fn info(&self) -> Result<EngineInfo, EngineError> {
        self.check()?;
        Ok(EngineInfo {
            server_version: "fake".into(),
            api_version: "1.41".into(),
            root_dir: "/var/lib/docker".into(),
            store: "fake".into(),
        })
    }

    async fn list_images(&self) -> Result<Vec<ImageSummary>, EngineError> {
        self.calls.list_images.fetch_add(1, Ordering::Relaxed);
        let delay = self.lock().list_delay;
        tokio::time::sleep(delay).await;
        self.check()?;
        Ok(self
            .lock()
            .images
            .iter()
            .map(|i| i.summary.clone())
            .collect())
    }

    async fn list_containers(&self) -> Result<Vec<Container>, EngineError> {
        self.calls.list_containers.fetch_add(1, Ordering::Relaxed);
        self.check()?;
        Ok(self.lock().containers.clone())
    }

    /// Exact sizes, as given: the fake knows each layer's bytes.
    async fn image_details(&self, image_id: &str) -> Result<ImageFacts, EngineError> {
        self.calls.image_details.fetch_add(1, Ordering::Relaxed);
        self.check()?;
        let inner = self.lock();
        let img = inner
            .images
            .iter()
            .find(|i| i.summary.id == image_id)
            .ok_or_else(|| EngineError::NotFound(format!("no such image: {image_id}")))?;
        let diffs: Vec<String> = img.layers.iter().map(|(d, _)| d.clone()).collect();
        Ok(ImageFacts {
            layers: chain_ids(&diffs)
                .into_iter()
                .zip(img.layers.iter().map(|(_, size)| *size))
                .map(|(chain_id, size)| Layer { chain_id, size })
                .collect(),
            sizes_exact: true,
            last_tag_time: inner.last_tag_times.get(image_id).copied(),
            blobs: Vec::new(),
        })
    }

    async fn remove_image(&self, target: &str) -> Result<Vec<DeleteItem>, EngineError> {
        let n = self.calls.remove_image.fetch_add(1, Ordering::SeqCst) + 1;
        let (hook, delay) = {
            let inner = self.lock();
            (inner.remove_hook.clone(), inner.remove_delay)
        };
        if let Some(hook) = hook {
            hook(n);
        }
        tokio::time::sleep(delay).await;
        self.check()?;
        let mut inner = self.lock();
        inner.removals.push(target.to_string());
        if let Some(e) = inner.fail_remove.get(target) {
            return Err(e.clone());
        }
        let by_tag = inner
            .images
            .iter()
            .position(|i| i.summary.tags.iter().any(|t| t == target));
        let by_id = inner.images.iter().position(|i| i.summary.id == target);
        let (idx, untag) = match (by_tag, by_id) {
            (Some(i), _) => (i, true),
            (None, Some(i)) => (i, false),
            (None, None) => return Err(EngineError::NotFound(format!("No such image: {target}"))),
        };
        let id = inner.images[idx].summary.id.clone();
        let used = inner.containers.iter().any(|c| c.image_id == id);
        let has_child = inner
            .images
            .iter()
            .any(|i| i.summary.parent_id.as_deref() == Some(id.as_str()));
        let mut items = Vec::new();
        if untag {
            if used && inner.images[idx].summary.tags.len() == 1 {
                return Err(EngineError::Conflict(format!(
                    "unable to remove repository reference {target} (must force) - container is using its referenced image"
                )));
            }
            inner.images[idx].summary.tags.retain(|t| t != target);
            items.push(DeleteItem::Untagged(target.to_string()));
            if !inner.images[idx].summary.tags.is_empty() {
                return Ok(items);
            }
            if has_child {
                // Like the engine: the tag goes, the image stays for its children.
                return Ok(items);
            }
        } else if used || has_child || inner.images[idx].summary.tags.len() > 1 {
            return Err(EngineError::Conflict(format!(
                "conflict: unable to delete {id}"
            )));
        }
        if used {
            return Ok(items);
        }
        for t in std::mem::take(&mut inner.images[idx].summary.tags) {
            items.push(DeleteItem::Untagged(t));
        }
        let removed = inner.images.remove(idx);
        if let Some(racer) = inner.racing_creates.remove(&id) {
            inner.containers.push(racer);
        }
        items.push(DeleteItem::Deleted(id));
        let diffs: Vec<String> = removed.layers.iter().map(|(d, _)| d.clone()).collect();
        let still_used: std::collections::HashSet<String> = inner
            .images
            .iter()
            .flat_map(|i| chain_ids(&i.layers.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>()))
            .collect();
        for chain in chain_ids(&diffs).into_iter().rev() {
            if !still_used.contains(&chain) {
                items.push(DeleteItem::Deleted(chain));
            }
        }
        if !inner.capabilities.reports_deleted_layers {
            items.retain(|item| !matches!(item, DeleteItem::Deleted(_)));
        }
        Ok(items)
    }

    /// Like the engine: replays the events pushed with a time at or after
    /// `since` (none without `since`) among the last
    /// [`EVENT_REPLAY_LIMIT`] pushed, then follows live ones until
    /// [`FakeEngine::close_event_stream`].
    fn events(&self, since: Option<DateTime<Utc>>) -> EventStream {
        self.calls.events.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        inner.event_requests.push(EventRequest {
            since,
            at: tokio::time::Instant::now(),
        });
        let failure = inner
            .event_failures
            .pop_front()
            .or_else(|| inner.fail_all.clone());
        if let Some(error) = failure {
            return Box::pin(futures_util::stream::iter([Err(error)]));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(since) = since {
            let kept = inner.event_log.len().saturating_sub(EVENT_REPLAY_LIMIT);
            let replayable = &inner.event_log[kept..];
            for event in replayable.iter().filter(|e| e.time >= since) {
                // The receiver is in hand: sending cannot fail.
                let _ = tx.send(Ok(event.clone()));
            }
        }
        inner.event_streams.push(tx);
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    async fn container_times(&self, container_id: &str) -> Result<ContainerTimes, EngineError> {
        self.calls.container_times.fetch_add(1, Ordering::Relaxed);
        self.check()?;
        let inner = self.lock();
        if inner.vanished.contains(container_id) {
            return Err(EngineError::NotFound(format!(
                "No such container: {container_id}"
            )));
        }
        if let Some(times) = inner.container_times.get(container_id) {
            return Ok(times.clone());
        }
        inner
            .containers
            .iter()
            .find(|c| c.id == container_id)
            .map(|c| ContainerTimes {
                image_id: c.image_id.clone(),
                created: c.created,
                started_at: None,
                finished_at: None,
            })
            .ok_or_else(|| EngineError::NotFound(format!("No such container: {container_id}")))
    }

    /// By image ID, or by reference (`name` alone means `name:latest`).
    async fn resolve_image(&self, reference: &str) -> Result<String, EngineError> {
        self.calls.resolve_image.fetch_add(1, Ordering::Relaxed);
        self.check()?;
        let tagged = if reference.contains(':') || reference.contains('@') {
            reference.to_string()
        } else {
            format!("{reference}:latest")
        };
        self.lock()
            .images
            .iter()
            .find(|i| {
                i.summary.id == reference
                    || i.summary.tags.contains(&tagged)
                    || i.summary.digests.contains(&tagged)
            })
            .map(|i| i.summary.id.clone())
            .ok_or_else(|| EngineError::NotFound(format!("No such image: {reference}")))
    }
    /// The details set for the container (defaults otherwise), `size_rw`
    /// only with `size`; 404 for an unknown or vanished container.
    async fn container_details(
        &self,
        id: &str,
        size: bool,
    ) -> Result<ContainerDetails, EngineError> {
        self.calls.container_details.fetch_add(1, Ordering::Relaxed);
        if size {
            self.calls
                .container_details_sized
                .fetch_add(1, Ordering::Relaxed);
        }
        self.check()?;
        let inner = self.lock();
        if inner.vanished.contains(id) || !inner.containers.iter().any(|c| c.id == id) {
            return Err(EngineError::NotFound(format!("No such container: {id}")));
        }
        let mut details =
            inner
                .container_details
                .get(id)
                .cloned()
                .unwrap_or_else(|| ContainerDetails {
                    restart_policy: "no".to_owned(),
                    size_rw: Some(0),
                    ..ContainerDetails::default()
                });
        if !size {
            details.size_rw = None;
        }
        Ok(details)
    }

    /// As Docker 20.10 answers `DELETE /containers/{id}?v=false&force=false`.
    async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        self.calls.remove_container.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        let mut inner = self.lock();
        inner.container_removals.push(id.to_string());
        if let Some(e) = inner.fail_remove.get(id) {
            return Err(e.clone());
        }
        let Some(idx) = inner.containers.iter().position(|c| c.id == id) else {
            return Err(EngineError::NotFound(format!("No such container: {id}")));
        };
        let state = inner.containers[idx].state.clone();
        if matches!(
            state.as_str(),
            "running" | "paused" | "restarting" | "removing"
        ) {
            return Err(EngineError::Conflict(format!(
                "You cannot remove a {state} container {id}. Stop the container before \
                 attempting removal or force remove"
            )));
        }
        inner.containers.remove(idx);
        inner.container_times.remove(id);
        inner.container_details.remove(id);
        Ok(())
    }

    async fn build_cache(&self) -> Result<Vec<CacheRecord>, EngineError> {
        self.calls.build_cache.fetch_add(1, Ordering::Relaxed);
        self.check()?;
        let inner = self.lock();
        if !inner.capabilities.build_cache {
            return Err(no_build_cache());
        }
        if let Some(e) = &inner.fail_build_cache {
            return Err(e.clone());
        }
        let mut records = inner.cache.clone();
        if inner.hide_cache_parents {
            for r in &mut records {
                r.parents.clear();
            }
        }
        Ok(records)
    }

    /// As Docker 20.10 answers an anchored `id` filter with `all`: only
    /// that record, and not while in use or while another record names it
    /// as a parent.
    async fn remove_cache_record(&self, id: &str) -> Result<CacheRemoval, EngineError> {
        self.calls
            .remove_cache_record
            .fetch_add(1, Ordering::Relaxed);
        self.check()?;
        let mut inner = self.lock();
        if !inner.capabilities.build_cache {
            return Err(no_build_cache());
        }
        if !is_plain_record_id(id) {
            return Err(EngineError::Other(format!(
                "refusing to remove build-cache record {id:?}: not a plain record ID \
                 (letters and digits only)"
            )));
        }
        inner.cache_removals.push(id.to_string());
        let not_deleted = CacheRemoval {
            deleted: false,
            reported_bytes: 0,
        };
        let Some(idx) = inner.cache.iter().position(|r| r.id == id) else {
            return Ok(not_deleted);
        };
        let has_child = inner
            .cache
            .iter()
            .any(|r| r.parents.iter().any(|p| p == id));
        if inner.cache[idx].in_use || has_child {
            return Ok(not_deleted);
        }
        let removed = inner.cache.remove(idx);
        Ok(CacheRemoval {
            deleted: true,
            reported_bytes: removed.size,
        })
    }
}
