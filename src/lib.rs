//! imagegc: a garbage collector for container images on build hosts.
//!
//! # Layout
//! - [`config`]: policy file (raw TOML) → validated [`policy::Policy`], with
//!   `file:line:column` errors; stages around one table of keys
//!   ([`config::schema`]).
//! - [`policy`]: the validated policy types the rest of the crate reads.
//! - [`schedule`]: crontab expression → next fire time (pure).
//! - [`engine`]: the [`engine::Engine`] trait and domain types.
//! - [`docker`]: `Engine` over bollard; the only module that knows the wire.
//! - [`snapshot`]: one consistent view of the engine, with the per-image-ID
//!   inspect cache.
//! - [`accounting`]: chain IDs, layer sizes, and the bytes a set of removals frees.
//! - [`plan`]: the pure planner, `plan(&Policy, &Snapshot, now) -> Plan`.
//! - [`execute`]: carries out a plan, children before parents, never forced.
//! - [`explain`]: everything imagegc knows and decides about one image.
//! - [`pass`]: one pass, snapshot → plan → execute → state.
//! - [`state`]: first-seen / last-used store with atomic writes.
//! - [`events`]: the engine's event stream → last-use updates, with reconnects.
//! - [`metrics`]: Prometheus metrics in a registry of their own, and the
//!   `/metrics` and `/healthz` endpoint; the only module that knows the crate.
//! - [`daemon`]: the schedule loop, state upkeep, reload and shutdown.
//! - [`cli`]: the command line (clap), shared by the binary and the manual
//!   page generator.
//! - [`fake`]: an in-memory engine for tests and benchmarks.
//! - [`output`]: plan and report as a table or JSON.
//! - [`logging`]: the log writer: stderr, with journald level prefixes.

pub mod accounting;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod docker;
pub mod engine;
pub mod events;
pub mod execute;
pub mod explain;
pub mod fake;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod pass;
pub mod plan;
pub mod policy;
pub mod schedule;
pub mod snapshot;
pub mod state;
