//! The `Engine` trait and the domain types every other module speaks.
//!
//! This module owns the boundary between imagegc and a container engine: what
//! an image, a container and a removal outcome look like, and which errors a
//! caller can branch on. It knows nothing about the wire; `docker.rs`
//! implements the trait over bollard, and tests implement it in memory.

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use futures_util::stream::BoxStream;

/// One image as the engine's image list reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Full image ID, `sha256:<hex>`; immutable, so it keys every cache.
    pub id: String,
    /// Parent image ID for images made by the classic builder or loaded with a
    /// parent link; `None` otherwise. Drives children-before-parents.
    pub parent_id: Option<String>,
    /// `repository:tag` references, with `<none>:<none>` placeholders removed.
    pub tags: Vec<String>,
    /// `repository@sha256:…` references, with `<none>@<none>` placeholders removed.
    pub digests: Vec<String>,
    /// The image's `created` time from its config.
    pub created: DateTime<Utc>,
    /// Image labels, matched by `labels` selectors and `protect_labels`.
    pub labels: BTreeMap<String, String>,
}

/// One entry of an image's history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Bytes of the layer this step made (the layer store's diff size), 0 for
    /// metadata-only steps.
    pub size: u64,
    /// The command that made the step; used only to tell empty steps from
    /// zero-byte layers when the two cannot be told apart by count.
    pub created_by: String,
}

/// What inspect and history say about one image. Immutable for a given image
/// ID except `last_tag_time`, which only tag events change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDetails {
    /// `RootFS.Layers`: the diff IDs of the image's layers, bottom first.
    pub diff_ids: Vec<String>,
    /// The image history, oldest first.
    pub history: Vec<HistoryEntry>,
    /// When a reference was last put on the image (pull, tag, load), if ever.
    pub last_tag_time: Option<DateTime<Utc>>,
}

/// One container, in any state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Full container ID.
    pub id: String,
    /// Container names without the leading slash, for log lines.
    pub names: Vec<String>,
    /// ID of the image the container was created from: that image is in use.
    pub image_id: String,
    /// Engine state: created, running, paused, restarting, removing, exited, dead.
    pub state: String,
    /// When the container was created; a last-used time for its image.
    pub created: DateTime<Utc>,
}

/// Facts about the engine itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// Engine version string, for logs.
    pub server_version: String,
    /// API version negotiated with the engine.
    pub api_version: String,
    /// The engine's root directory (`/var/lib/docker`), whose filesystem
    /// disk-pressure policies watch.
    pub root_dir: String,
}

/// Size and use of the filesystem holding the engine's root directory, as
/// `df` counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    /// The bytes `df`'s `Use%` is a share of: used plus available to
    /// unprivileged users. The blocks reserved for root are left out, so
    /// this is less than the filesystem's size.
    pub total_bytes: u64,
    /// Bytes in use (size minus free), as `df` counts them.
    pub used_bytes: u64,
}

impl DiskUsage {
    /// Bytes unprivileged users (dockerd's writes count as such once the
    /// root reserve is gone) may still write: `df`'s `Avail`.
    pub fn free_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.used_bytes)
    }

    /// Fraction of the filesystem in use, 0.0 to 1.0: `df`'s `Use%`.
    pub fn used_ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        self.used_bytes as f64 / self.total_bytes as f64
    }
}

/// One line of the engine's answer to an image removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteItem {
    /// A reference was removed from an image.
    Untagged(String),
    /// An image ID or a layer chain ID was deleted.
    Deleted(String),
}

/// What kind of object an [`EngineEvent`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventScope {
    /// A container: `Actor.ID` is the container ID.
    Container,
    /// An image: `Actor.ID` is the image ID, or the reference for `pull`.
    Image,
    /// Anything else (networks, volumes, …); imagegc ignores these.
    Other,
}

/// One engine event, reduced to what imagegc needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    /// When the engine logged the event (`timeNano`); also the `since` to
    /// resume from after the stream breaks.
    pub time: DateTime<Utc>,
    /// The kind of object the event is about.
    pub scope: EventScope,
    /// The event name: `create`, `start`, `die`, `destroy`, `pull`, `tag`, …
    pub action: String,
    /// `Actor.ID`: a container ID, an image ID, or for `pull` the reference
    /// pulled (`busybox:latest`).
    pub actor_id: String,
    /// `Actor.Attributes`: for containers `image` (the image as typed at
    /// create time, not necessarily an ID) and `name`; for images `name`;
    /// plus the object's labels.
    pub attributes: BTreeMap<String, String>,
}

/// The boxed stream [`Engine::events`] returns. It ends (`None`) when the
/// engine closes it, for example when dockerd restarts.
pub type EventStream = BoxStream<'static, Result<EngineEvent, EngineError>>;

/// The times of one container that count as uses of its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerTimes {
    /// ID of the image the container was created from.
    pub image_id: String,
    /// When the container was created.
    pub created: DateTime<Utc>,
    /// When it last started; `None` if never (the engine's zero time).
    pub started_at: Option<DateTime<Utc>>,
    /// When it last stopped; `None` if it never has (the engine's zero time).
    pub finished_at: Option<DateTime<Utc>>,
}

impl ContainerTimes {
    /// The newest of the three times, with the event that stands for it
    /// (`container create`, `container start`, `container die`).
    pub fn last_use(&self) -> (DateTime<Utc>, &'static str) {
        let mut newest = (self.created, "container create");
        for (time, by) in [
            (self.started_at, "container start"),
            (self.finished_at, "container die"),
        ] {
            if let Some(time) = time.filter(|t| *t > newest.0) {
                newest = (time, by);
            }
        }
        newest
    }
}

/// Errors callers branch on. `kind()` is the metric label and the JSON `kind`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// 409: the image is in use, has children, or needs force. A normal outcome.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 404: already gone. A normal outcome.
    #[error("not found: {0}")]
    NotFound(String),
    /// The engine did not answer at its address.
    #[error("cannot reach the Docker Engine at {address}: {reason}. Is dockerd running, and is DOCKER_HOST or --engine right?")]
    Unavailable {
        /// Where we tried to connect.
        address: String,
        /// What went wrong, from the transport.
        reason: String,
    },
    /// The socket exists but we may not open it.
    #[error("permission denied on the Docker Engine socket {address}: run as root or add this user to the `docker` group")]
    PermissionDenied {
        /// The socket path or URL.
        address: String,
    },
    /// Any other answer from the engine.
    #[error("engine error: {0}")]
    Other(String),
}

impl EngineError {
    /// Stable label for metrics and JSON: `conflict`, `not_found` or `engine`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Conflict(_) => "conflict",
            Self::NotFound(_) => "not_found",
            Self::Unavailable { .. } | Self::PermissionDenied { .. } | Self::Other(_) => "engine",
        }
    }

    /// True when the engine cannot be talked to at all, so a pass should stop.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::PermissionDenied { .. }
        )
    }
}

/// A container engine as imagegc needs it. Implementations must be cheap to
/// share; every method is one engine round trip (or a few), with no caching:
/// caching lives in `snapshot.rs` so it can be tested with a fake engine.
pub trait Engine: Send + Sync {
    /// Engine version, API version and root directory.
    fn info(&self) -> impl Future<Output = Result<EngineInfo, EngineError>> + Send;

    /// Every image, intermediate parents included.
    fn list_images(&self) -> impl Future<Output = Result<Vec<ImageSummary>, EngineError>> + Send;

    /// Every container in every state.
    fn list_containers(&self) -> impl Future<Output = Result<Vec<Container>, EngineError>> + Send;

    /// Inspect and history of one image.
    fn image_details(
        &self,
        image_id: &str,
    ) -> impl Future<Output = Result<ImageDetails, EngineError>> + Send;

    /// Size and use of the filesystem at `root_dir`, when the engine runs on
    /// this machine; `Ok(None)` for a remote engine.
    fn disk_usage(
        &self,
        root_dir: &str,
    ) -> impl Future<Output = Result<Option<DiskUsage>, EngineError>> + Send;

    /// Remove one reference (`repo:tag`, `repo@digest`) or one image by ID.
    /// Never forced; never prunes untagged parents (the planner decides those).
    fn remove_image(
        &self,
        target: &str,
    ) -> impl Future<Output = Result<Vec<DeleteItem>, EngineError>> + Send;

    /// Container and image events (container `create`, `start`, `die`,
    /// `destroy`; image `pull`, `tag`, `untag`, `delete`, `load`, `import`),
    /// replaying the engine's buffered events with a time at or after
    /// `since`, then following live ones. The stream ends when the engine
    /// closes it (an engine restart); a failure is an `Err` item, after which
    /// the stream is over.
    ///
    /// The default implementation is for engines without events (test
    /// doubles): one `Err` item, then the end.
    fn events(&self, since: Option<DateTime<Utc>>) -> EventStream {
        let _ = since;
        Box::pin(futures_util::stream::iter([Err(EngineError::Other(
            "this engine does not report events".to_owned(),
        ))]))
    }

    /// Created, started and finished times of one container, and its image
    /// ID (container inspect). `NotFound` when the container is gone.
    ///
    /// The default implementation (engines without inspect) fails.
    fn container_times(
        &self,
        container_id: &str,
    ) -> impl Future<Output = Result<ContainerTimes, EngineError>> + Send {
        let error = EngineError::Other(format!(
            "this engine cannot inspect container {container_id}"
        ));
        async move { Err(error) }
    }

    /// The ID of the image a reference (`repo:tag`, `repo@digest`, a short or
    /// full ID) names now (image inspect). `NotFound` when there is none.
    ///
    /// The default implementation (engines without inspect) fails.
    fn resolve_image(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<String, EngineError>> + Send {
        let error = EngineError::Other(format!("this engine cannot resolve {reference}"));
        async move { Err(error) }
    }
}
