//! imagegc: a garbage collector for container images on build hosts.
//!
//! # Layout
//! - [`config`]: policy file (raw TOML) → validated [`policy::Policy`], with
//!   `file:line:column` errors; stages around one table of keys
//!   ([`config::schema`]).
//! - [`policy`]: the validated policy types the rest of the crate reads.
//! - [`schedule`]: crontab expression → next fire time (pure).
//! - [`engine`]: the [`engine::Engine`] trait, its [`engine::Capabilities`]
//!   and the engine-neutral types (image facts, uses, errors).
//!   - `engine::docker` (also [`docker`]): `Engine` over bollard; the only
//!     module that knows the wire, Docker's layer heuristics and its event
//!     vocabulary.
//!   - `engine::fake` (also `fake`, `test-support` feature only): an
//!     in-memory engine for tests and benchmarks.
//! - [`host`]: facts about this machine: the disk under the engine's root dir
//!   ([`host::disk::DiskProbe`], statvfs).
//! - [`snapshot`]: one consistent view of the engine, with the per-image-ID
//!   inspect cache.
//! - [`accounting`]: the bytes a set of removals frees.
//! - [`plan`]: the pure planner, `plan(&Policy, &Snapshot, now) -> Plan`.
//! - [`execute`]: carries out a plan, children before parents, never forced.
//! - [`explain`]: everything imagegc knows and decides about one image.
//! - [`pass`]: one pass, snapshot → plan → execute → state; what started it
//!   (`Trigger`), how it ended (`PassOutcome`) and its `PassSummary`.
//! - [`state`]: first-seen / last-used store with atomic writes.
//! - [`events`]: the engine's event stream → last-use updates, with reconnects.
//! - [`metrics`]: Prometheus metrics in a registry of their own, and the
//!   `/metrics` and `/healthz` endpoint; the only module that knows the crate.
//! - [`daemon`]: the service loop (triggers, passes that never overlap,
//!   state upkeep, reload, shutdown) and `daemon::serve`, the wiring `run`
//!   uses; `daemon::{triggers, signals, clock, notify, reload}` hold its
//!   parts.
//! - [`sources`]: where the policy (`PolicySource`) and the engine
//!   (`EngineSpec`) come from; each precedence rule once.
//! - [`app`]: the composition root: a parsed command line → an exit code.
//! - [`cli`]: the command line (clap), shared by the binary and the manual
//!   page generator.
//! - [`output`]: plan and report as a table or JSON.
//! - [`logging`]: the log writer: stderr, with journald level prefixes.

pub mod accounting;
pub mod app;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub use engine::docker;
pub mod events;
pub mod execute;
pub mod explain;
#[cfg(feature = "test-support")]
pub use engine::fake;
pub mod host;
pub mod logging;
pub mod metrics;
pub mod output;
pub mod pass;
pub mod plan;
pub mod policy;
pub mod schedule;
pub mod snapshot;
pub mod sources;
pub mod state;
