//! imagegc: a garbage collector for container images on build hosts.
//!
//! # Layout
//!
//! One entry per module of `src/`, in the order of the tree; a folder is a
//! concern with several files, and its entry names them.
//! - [`app`] (`app.rs`): the composition root: a parsed command line → an exit code.
//! - [`cli`] (`cli/`): the command line (clap), shared by the binary and the
//!   manual page generator; `cli::logging` (also [`logging`]), the log
//!   writer: stderr, with journald level prefixes.
//! - [`config`] (`config/`): policy file (raw TOML) → validated
//!   [`policy::Policy`], with `file:line:column` errors; stages around one
//!   table of keys ([`config::schema`]): `config::raw` (stage 1: keys checked
//!   against the table), `config::validate` (stage 2: raw → policy types),
//!   `config::values` (durations, sizes, globs, labels) and
//!   `config::diagnostics` (errors, positions, did-you-mean).
//! - [`daemon`] (`daemon/`): the service loop (triggers, passes that never
//!   overlap, state upkeep, reload, shutdown) and `daemon::serve`, the wiring
//!   `run` uses; `daemon::{triggers, signals, clock, notify, reload, build_use,
//!   pressure}` hold its parts (`build_use`: a new image an event names counts
//!   as a use of the images it was built on; `pressure`: the disk and inode
//!   sampler that starts a pass above a high watermark).
//! - [`engine`] (`engine/`): the [`engine::Engine`] trait, its
//!   [`engine::Capabilities`] and the engine-neutral types (image facts, uses,
//!   build-cache records, errors); `engine::docker` (also [`docker`]): `Engine`
//!   over bollard, the only module that knows the wire, with
//!   `engine::docker::flavor` (which engine is behind the API, and its
//!   capabilities), `engine::docker::store` (what a removal frees on each
//!   store), `engine::docker::layers` (Docker's layer heuristics),
//!   `engine::docker::events` (its event vocabulary) and
//!   `engine::docker::build_cache` (its build cache); `engine::fake` (also
//!   `fake`, `test-support` feature only): an in-memory engine for tests and
//!   benchmarks.
//! - [`events`] (`events.rs`): the engine's event stream → last-use updates, with reconnects.
//! - [`gc`] (`gc/`): the pure planner, `plan(&Policy, &Snapshot, now) -> Plan`:
//!   `gc::ledger` (the bytes a set of removals frees, across containers,
//!   images and build cache), `gc::conditions` (one evaluator per condition),
//!   `gc::safety` (one per safety rule), `gc::containers` (the `[[containers]]`
//!   phase, first), `gc::records` (the `[[build_cache]]` phases), `gc::plan`
//!   (the plan as data: typed reasons), `gc::targets` (removal candidates,
//!   sets of them as bits, each tag's repository).
//! - [`host`] (`host/`): facts about this machine: the disk under the
//!   engine's root dir ([`host::disk::DiskProbe`], statvfs).
//! - [`inventory`] (`inventory/`): one consistent view of the engine
//!   (`Snapshot`, the one definition of dangling, the engine's capabilities,
//!   containers with their inspect facts and `container_selected`),
//!   `inventory::build_cache` (the build-cache records and the image layers
//!   they hold), with the per-image-ID inspect cache.
//! - [`model`] (`model/`): engine-neutral helpers: references (`repository_of`, `short_id`).
//! - [`policy`] (`policy.rs`): the validated policy types the rest of the crate reads.
//! - [`report`] (`report/`): the edge where plans become words:
//!   `report::table`, `report::text` (`Display` of reasons, durations),
//!   `report::json` (the typed JSON contract, `schema_version`),
//!   `report::explain` (everything imagegc knows and decides about one image).
//! - [`run`] (`run/`): one pass, snapshot → plan → execute → state; what
//!   started it (`Trigger`), how it ended (`PassOutcome`) and its
//!   `PassSummary`; `run::execute` carries out a plan, children before
//!   parents, never forced; `run::state` is the first-seen / last-used store
//!   with atomic writes.
//! - [`schedule`] (`schedule.rs`): crontab expression → next fire time (pure).
//! - [`sources`] (`sources.rs`): where the policy (`PolicySource`) and the
//!   engine (`EngineSpec`) come from; each precedence rule once.
//! - [`telemetry`] (`telemetry/`): Prometheus metrics in a registry of their
//!   own ([`telemetry::Metrics`]), and `telemetry::http`, the `/metrics` and
//!   `/healthz` endpoint; the only module that knows the `prometheus` and
//!   `axum` crates.
//! - [`snapshot`], [`plan`], [`accounting`], [`output`], [`explain`],
//!   [`pass`], [`execute`], [`state`], [`metrics`], [`logging`]: old paths,
//!   re-exported so existing code keeps compiling.

pub mod app;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub use engine::docker;
pub mod events;
#[cfg(feature = "test-support")]
pub use engine::fake;
pub mod gc;
pub mod host;
pub mod inventory;
pub mod model;
pub mod policy;
pub mod report;
pub mod run;
pub mod schedule;
pub mod sources;
pub mod telemetry;

/// The old path of [`inventory`].
pub mod snapshot {
    pub use crate::inventory::*;
}

/// The old paths of the layer and ledger types.
pub mod accounting {
    pub use crate::engine::docker::layers::{chain_ids, image_layers, ImageLayers};
    pub use crate::engine::Layer;
    pub use crate::gc::ledger::{Effect, Ledger};
}

/// The old path of [`gc`], with the text helpers that used to live there.
pub mod plan {
    pub use crate::gc::*;
    pub use crate::model::{repository_of, short_id};
    pub use crate::report::text::human_duration;
}

/// The old path of [`report::table`] and [`report::json`].
pub mod output {
    pub use crate::report::json::{pass_json, plan_json};
    pub use crate::report::table::*;
}

/// The old path of [`report::explain`].
pub mod explain {
    pub use crate::report::explain::*;
}

/// The old path of [`cli::logging`].
pub mod logging {
    pub use crate::cli::logging::*;
}

/// The old path of [`telemetry`] and its endpoint, [`telemetry::http`].
pub mod metrics {
    pub use crate::run::PassOutcome;
    pub use crate::telemetry::http::{serve, Health, MAX_CONNECTIONS, REQUEST_TIMEOUT};
    pub use crate::telemetry::*;
}

/// The old path of [`run`], one pass.
pub mod pass {
    pub use crate::run::*;
}

/// The old path of [`run::execute`].
pub mod execute {
    pub use crate::run::execute::*;
}

/// The old path of [`run::state`].
pub mod state {
    pub use crate::run::state::*;
}
