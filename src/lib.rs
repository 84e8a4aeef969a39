//! imagegc: a garbage collector for container images on build hosts.
//!
//! # Layout
//! - [`config`]: policy file (raw TOML) → validated [`policy::Policy`], with
//!   `file:line:column` errors.
//! - [`policy`]: the validated policy types the rest of the crate reads.
//! - [`schedule`]: crontab expression → next fire time (pure).
//! - [`engine`]: the [`engine::Engine`] trait and domain types.
//! - [`docker`]: `Engine` over bollard; the only module that knows the wire.
//! - [`model`]: engine-neutral helpers: references (`repository_of`, `short_id`).
//! - [`inventory`]: one consistent view of the engine (`Snapshot`, the one
//!   definition of dangling), with the per-image-ID inspect cache.
//! - [`accounting`]: chain IDs and layer sizes from inspect and history.
//! - [`gc`]: the pure planner, `plan(&Policy, &Snapshot, now) -> Plan`:
//!   `gc::ledger` (the bytes a set of removals frees), `gc::conditions` (one
//!   evaluator per condition), `gc::safety` (one per safety rule),
//!   `gc::plan` (the plan as data: typed reasons).
//! - [`execute`]: carries out a plan, children before parents, never forced.
//! - [`report`]: the edge where plans become words: `report::table`,
//!   `report::text` (`Display` of reasons, durations), `report::json` (the
//!   typed JSON contract, `schema_version`), `report::explain` (everything
//!   imagegc knows and decides about one image).
//! - [`snapshot`], [`plan`], [`output`], [`explain`]: the old paths of
//!   `inventory`, `gc`, `report::table`/`report::json` and `report::explain`,
//!   re-exported so existing code keeps compiling.
//! - [`pass`]: one pass, snapshot → plan → execute → state.
//! - [`state`]: first-seen / last-used store with atomic writes.
//! - [`events`]: the engine's event stream → last-use updates, with reconnects.
//! - [`metrics`]: Prometheus metrics in a registry of their own, and the
//!   `/metrics` and `/healthz` endpoint; the only module that knows the crate.
//! - [`daemon`]: the schedule loop, state upkeep, reload and shutdown.
//! - [`cli`]: the command line (clap), shared by the binary and the manual
//!   page generator.
//! - [`fake`]: an in-memory engine for tests and benchmarks.
//! - [`logging`]: the log writer: stderr, with journald level prefixes.

pub mod accounting;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod docker;
pub mod engine;
pub mod events;
pub mod execute;
pub mod fake;
pub mod gc;
pub mod inventory;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod pass;
pub mod policy;
pub mod report;
pub mod schedule;
pub mod state;

/// The old path of [`inventory`].
pub mod snapshot {
    pub use crate::inventory::*;
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
