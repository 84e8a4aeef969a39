//! The `Engine` trait and the engine-neutral types every other module speaks.
//!
//! This module owns the boundary between imagegc and a container engine: what
//! an image, a container, a use and a removal outcome look like, what an
//! engine can and cannot do ([`Capabilities`]), and which errors a caller can
//! branch on. It knows nothing about any engine's wire or quirks: each
//! adapter ([`docker`] over bollard; `fake` in memory, for tests) turns its
//! engine's answers into these types, computing image facts (sized layers,
//! exactness) and event meanings ([`Use`]) its own way. The disk is not the
//! engine's: [`crate::host::disk`] probes it where [`EngineInfo::root_dir`]
//! says the engine keeps its data.

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use futures_util::stream::BoxStream;

pub mod docker;
#[cfg(feature = "test-support")]
pub mod fake;

pub use crate::host::disk::DiskUsage;

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

/// One layer of an image, identified by its chain ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Layer {
    /// `sha256:<hex>` chain ID: the layer store's key, and what removal answers
    /// list as `Deleted` on engines that report deleted layers.
    pub chain_id: String,
    /// The layer's own bytes (its diff size).
    pub size: u64,
}

/// Content an image holds on disk besides its layers' unpacked bytes: a
/// content-addressed blob (the containerd store's compressed layer blobs,
/// config and manifest; Podman's config and manifest). The ledger frees it
/// when no live image holds it any more, like a layer, but it is no part of
/// the layer chain: chain prefixes (parents, builds) never see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Blob {
    /// What identifies the blob across images: a content digest, or a
    /// stand-in for one the API does not give (see
    /// `engine::docker::store`). Two images naming the same key hold one
    /// blob.
    pub key: String,
    /// Bytes the blob takes.
    pub size: u64,
    /// False when `size` is the adapter's share of a total the engine gives
    /// only for the whole image (the containerd store's per-layer blobs on
    /// API < 1.47); exact when it is the engine's own figure.
    pub exact: bool,
}

/// What the engine knows about one image beyond its list entry, as its
/// adapter computes it. Immutable for a given image ID except
/// `last_tag_time`, which only tag events change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFacts {
    /// Sized layers, bottom first.
    pub layers: Vec<Layer>,
    /// False when the adapter could only guess some layer sizes (Docker: the
    /// history could not be matched to the layers one to one); the byte
    /// figures of such an image may then be off and are flagged.
    pub sizes_exact: bool,
    /// When a reference was last put on the image (pull, tag, load), if the
    /// engine says; a last-used time.
    pub last_tag_time: Option<DateTime<Utc>>,
    /// Content the image holds besides its layers (none on a graph-driver
    /// store, whose layers are all it holds), freed when no live image
    /// holds it. Empty by default, so facts cached before this field
    /// existed read as a graph driver's.
    pub blobs: Vec<Blob>,
}

/// What an engine can and cannot do, where engines differ. The planner and
/// the executor read these instead of assuming Docker 20.10, so that an
/// engine which deletes whole images or reports no layers stays exact and
/// safe. [`Capabilities::DOCKER_20_10`] is today's engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::struct_excessive_bools)] // independent yes/no facts, one each
pub struct Capabilities {
    /// Removing `repo:tag` removes only that reference; the image goes with
    /// its last one. False for engines that delete the whole image whatever
    /// reference names it (CRI's `RemoveImage`).
    pub untags_single_reference: bool,
    /// A removal's answer lists the layer chain IDs it deleted, so reclaimed
    /// bytes can be counted from them; otherwise they are the prediction.
    pub reports_deleted_layers: bool,
    /// Images can have parent images (the classic builder's chains), which
    /// hold their parents until they go.
    pub has_parents: bool,
    /// A removal also deletes the parents it leaves dangling (`podman rmi`).
    /// imagegc asks Docker not to (`noprune`) and plans parents itself.
    pub prunes_parents: bool,
    /// The event stream reports image events (pull, tag, load, …), not only
    /// container ones.
    pub image_events: bool,
    /// The engine keeps a build cache besides images.
    pub build_cache: bool,
    /// The engine refuses to remove an image a container uses (without
    /// force), so a container created after the snapshot still protects it.
    pub protects_in_use: bool,
    /// The engine runs on this machine, so the filesystem at
    /// [`EngineInfo::root_dir`] can be probed here; false for a remote one.
    pub root_dir_on_host: bool,
    /// The engine lists a reference loaded or tagged without a registry
    /// under `localhost/` (Podman: `foo:1` lists as `localhost/foo:1`).
    /// Policies still match what the user wrote
    /// ([`crate::model::as_written`]); removals name the engine's spelling.
    pub qualifies_local_names: bool,
    /// Where removals list no deleted layers, the adapter's facts still
    /// model every byte a removal frees on this store from the engine's own
    /// figures (the containerd store: snapshot usage and content sizes), so
    /// the ledger's prediction is the report and is exact wherever the
    /// facts are ([`ImageFacts::sizes_exact`], [`Blob::exact`]). False: the
    /// prediction is an estimate (an engine that lists nothing and is not
    /// modelled).
    pub models_removed_bytes: bool,
    /// What a build-cache record frees is its own model's figure
    /// (`inventory::build_cache::map_records`, measured on the graph-driver
    /// stores: a shared record frees nothing while an image uses its layer).
    /// False on the containerd store, where a record keeps snapshots of its
    /// own beside the image's (docs/ENGINES.md, "Build cache"): record
    /// bytes there are estimates.
    pub models_cache_records: bool,
}

impl Capabilities {
    /// The Docker Engine 20.10 (API 1.41) on this machine, as imagegc drives
    /// it: never forced, never pruning parents.
    pub const DOCKER_20_10: Self = Self {
        untags_single_reference: true,
        reports_deleted_layers: true,
        has_parents: true,
        prunes_parents: false,
        image_events: true,
        build_cache: true,
        protects_in_use: true,
        root_dir_on_host: true,
        qualifies_local_names: false,
        models_removed_bytes: false,
        models_cache_records: true,
    };
}

impl Default for Capabilities {
    /// [`Capabilities::DOCKER_20_10`].
    fn default() -> Self {
        Self::DOCKER_20_10
    }
}

/// What kind of build-cache record this is: the engine's record `Type`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheRecordKind {
    /// `regular`: a layer a build step made (`COPY`, `RUN`, a base's layers).
    Regular,
    /// `source.local`: a build context or local source sent by a client.
    SourceLocal,
    /// `exec.cachemount`: a `RUN --mount=type=cache` directory.
    ExecCacheMount,
    /// `internal`: the builder's own records.
    Internal,
    /// `frontend`: a frontend's (Dockerfile parser image) records.
    Frontend,
    /// `source.git.checkout`: a git checkout a build fetched.
    SourceGitCheckout,
    /// A type this version of imagegc does not know, as the engine spells it.
    Other(String),
}

impl CacheRecordKind {
    /// The kind of the engine's `Type` text.
    pub fn from_type(text: &str) -> Self {
        match text {
            "regular" => Self::Regular,
            "source.local" => Self::SourceLocal,
            "exec.cachemount" => Self::ExecCacheMount,
            "internal" => Self::Internal,
            "frontend" => Self::Frontend,
            "source.git.checkout" => Self::SourceGitCheckout,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The engine's `Type` text for this kind (also what policies name).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Regular => "regular",
            Self::SourceLocal => "source.local",
            Self::ExecCacheMount => "exec.cachemount",
            Self::Internal => "internal",
            Self::Frontend => "frontend",
            Self::SourceGitCheckout => "source.git.checkout",
            Self::Other(text) => text,
        }
    }
}

impl std::fmt::Display for CacheRecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One record of the engine's build cache (`BuildKit`), engine-neutral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRecord {
    /// The record ID (`BuildKit`: 25 lowercase letters and digits); what
    /// [`Engine::remove_cache_record`] takes.
    pub id: String,
    /// The records this one was made on top of (API 1.41 names at most one,
    /// 1.42+ a list); a record goes only after every record naming it here.
    pub parents: Vec<String>,
    /// The record's type.
    pub kind: CacheRecordKind,
    /// What made it, as the engine describes it (`fileop target`,
    /// `local source for context`, `mount / from exec …`).
    pub description: String,
    /// A running build holds it; the engine will not remove it.
    pub in_use: bool,
    /// Its data is shared with image layers (or other records): removing
    /// it frees nothing while those remain.
    pub shared: bool,
    /// Its bytes as the engine counts them (shared bytes included).
    pub size: u64,
    /// When it was made.
    pub created: DateTime<Utc>,
    /// When a build last used it; `None` if never (the engine's zero time).
    pub last_used: Option<DateTime<Utc>>,
    /// How many builds used it.
    pub usage_count: u64,
}

/// The engine's answer to the removal of one build-cache record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheRemoval {
    /// The engine says it deleted this record. False is a normal outcome:
    /// the record was in use, still had children, or was gone already.
    pub deleted: bool,
    /// The bytes the engine says it reclaimed (Docker: `SpaceReclaimed`,
    /// shared bytes included, so information only: not what the disk gained).
    pub reported_bytes: u64,
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
    /// The image reference it was created from, as given (`ci/app:1`, or
    /// an image ID); what `[[containers]] images` globs match.
    pub image_ref: String,
    /// Container labels (Compose's `com.docker.compose.project`, a CI
    /// runner's job labels).
    pub labels: BTreeMap<String, String>,
}

/// What the container list does not say about a container: read (one
/// inspect each) only when a `[[containers]]` policy exists; the
/// writable-layer size only for the stopped containers a policy selects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerDetails {
    /// `State.StartedAt`; `None` if never started (the engine's zero time).
    pub started_at: Option<DateTime<Utc>>,
    /// `State.FinishedAt`; `None` if it never stopped.
    pub finished_at: Option<DateTime<Utc>>,
    /// `HostConfig.RestartPolicy.Name`: `no` (or empty), `always`,
    /// `unless-stopped`, `on-failure`.
    pub restart_policy: String,
    /// `HostConfig.VolumesFrom`: containers (names or IDs, `:ro`/`:rw`
    /// suffix stripped) whose volumes this one mounts.
    pub volumes_from: Vec<String>,
    /// `HostConfig.NetworkMode` `container:<name or ID>`: the container
    /// whose network stack this one joins.
    pub network_container: Option<String>,
    /// `SizeRw`: bytes of its writable layer; `None` when the engine did not
    /// say.
    pub size_rw: Option<u64>,
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
    /// How the engine stores images, for logs and reports (`graph driver`,
    /// `containerd image store`, `podman`).
    pub store: String,
}

/// One line of the engine's answer to an image removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteItem {
    /// A reference was removed from an image.
    Untagged(String),
    /// An image ID or a layer chain ID was deleted.
    Deleted(String),
}

/// A container an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// The container ID.
    pub id: String,
    /// The image as typed when the container was created (`app:1`, a short
    /// ID), which may name another image by now; the fallback for naming
    /// the image of a container that is gone.
    pub image_as_typed: Option<String>,
}

/// What an engine event means for last-use tracking, mapped from the
/// engine's own vocabulary by its adapter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Use {
    /// A container was created: a use of its image.
    ContainerCreated(ContainerRef),
    /// A container started.
    ContainerStarted(ContainerRef),
    /// A container stopped (exited or was killed).
    ContainerDied(ContainerRef),
    /// A container was removed; its image ID must be known from before.
    ContainerDestroyed(ContainerRef),
    /// An image was pulled; `reference` is what was pulled
    /// (`busybox:latest`), never an ID.
    ImagePulled {
        /// The reference pulled.
        reference: String,
    },
    /// A reference was put on an image.
    ImageTagged {
        /// The image ID (or a name for it).
        image: String,
    },
    /// A reference was taken off an image.
    ImageUntagged {
        /// The image ID (or a name for it).
        image: String,
    },
    /// An image was loaded from an archive.
    ImageLoaded {
        /// The image ID (or a name for it).
        image: String,
    },
    /// An image was imported from a root filesystem.
    ImageImported {
        /// The image ID (or a name for it).
        image: String,
    },
    /// An image was deleted: no use, but an event all the same (it moves
    /// the point the stream resumes from).
    ImageDeleted {
        /// The image ID.
        image: String,
    },
}

/// One engine event, reduced to what imagegc needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    /// When the engine logged the event; also the `since` to resume from
    /// after the stream breaks.
    pub time: DateTime<Utc>,
    /// What happened.
    pub what: Use,
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
    /// The engine has no such feature (a build cache on Podman, which
    /// answers 404 on `/build/prune`). Skipped with a warning, not a failure.
    #[error("not supported by this engine: {0}")]
    Unsupported(String),
    /// Any other answer from the engine.
    #[error("engine error: {0}")]
    Other(String),
}

impl EngineError {
    /// Stable label for metrics and JSON: `conflict`, `not_found`,
    /// `unsupported` or `engine`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Conflict(_) => "conflict",
            Self::NotFound(_) => "not_found",
            Self::Unsupported(_) => "unsupported",
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

    /// What this engine can do where engines differ. Cheap: no round trip.
    fn capabilities(&self) -> Capabilities;

    /// Sized layers, exactness and last tag time of one image, computed by
    /// the adapter from whatever its engine reports.
    fn image_details(
        &self,
        image_id: &str,
    ) -> impl Future<Output = Result<ImageFacts, EngineError>> + Send;

    /// Remove one reference (`repo:tag`, `repo@digest`) or one image by ID.
    /// Never forced. What else goes with it (the whole image, pruned
    /// parents) and what the answer lists are the engine's
    /// [`Capabilities`].
    fn remove_image(
        &self,
        target: &str,
    ) -> impl Future<Output = Result<Vec<DeleteItem>, EngineError>> + Send;

    /// Container and image events as [`Use`]s, replaying the engine's
    /// buffered events with a time at or after `since`, then following live
    /// ones. The stream ends when the engine
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

    /// Every record of the engine's build cache.
    ///
    /// The default implementation is for engines without a build cache
    /// (their [`Capabilities::build_cache`] is false):
    /// [`EngineError::Unsupported`].
    fn build_cache(&self) -> impl Future<Output = Result<Vec<CacheRecord>, EngineError>> + Send {
        async { Err(no_build_cache()) }
    }

    /// Remove one build-cache record, exactly the one named by `id` and no
    /// other. A record the engine does not delete (in use, still has
    /// children, gone already) is `Ok` with `deleted: false`, not an error.
    /// An `id` that is not a plain record ID is refused before any call.
    ///
    /// The default implementation is for engines without a build cache:
    /// [`EngineError::Unsupported`].
    fn remove_cache_record(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<CacheRemoval, EngineError>> + Send {
        let _ = id;
        async { Err(no_build_cache()) }
    }

    /// Inspect one container; with `size`, also its writable-layer size
    /// (`size=1`, expensive on large hosts: asked only for removal
    /// candidates). A container that is gone is [`EngineError::NotFound`].
    ///
    /// The default implementation is for engines that cannot:
    /// [`EngineError::Unsupported`].
    fn container_details(
        &self,
        id: &str,
        size: bool,
    ) -> impl Future<Output = Result<ContainerDetails, EngineError>> + Send {
        let _ = (id, size);
        async {
            Err(EngineError::Unsupported(
                "container details: not implemented for this engine".to_owned(),
            ))
        }
    }

    /// Remove one stopped container: never forced, never its volumes
    /// (`v=false`), named or anonymous. A 409 (running again, being removed)
    /// is [`EngineError::Conflict`], a 404 [`EngineError::NotFound`]: normal
    /// outcomes.
    ///
    /// The default implementation is for engines that cannot:
    /// [`EngineError::Unsupported`].
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<(), EngineError>> + Send {
        let _ = id;
        async {
            Err(EngineError::Unsupported(
                "container removal: not implemented for this engine".to_owned(),
            ))
        }
    }
}

/// The error of an engine without a build cache.
pub fn no_build_cache() -> EngineError {
    EngineError::Unsupported("this engine has no build cache".to_owned())
}

/// Whether `id` is a full container ID as Docker makes them: exactly 64
/// lowercase hex digits. The Docker adapter inspects and removes only such
/// IDs, so a hostile name (`../images/x`, `a?force=1`) never reaches a URL.
pub fn is_full_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `id` is a plain build-cache record ID (ASCII letters and digits,
/// 1 to 128 of them), the only IDs imagegc puts into a removal filter: the
/// engine matches that filter as a regular expression.
pub fn is_plain_record_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}
