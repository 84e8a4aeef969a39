//! One garbage-collection pass: snapshot → plan → (execute) → state.
//!
//! The glue the `plan` and `once` commands and the daemon loop share. It owns
//! the order of steps, not any decision: the planner decides, the executor
//! acts, the state records.

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::engine::{Engine, EngineError};
use crate::execute::{execute, Report};
use crate::plan::{plan, Plan};
use crate::policy::Policy;
use crate::snapshot::{collect, DetailsCache, Snapshot};
use crate::state::State;

/// What a pass is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plan only; the state is read but not changed.
    Plan,
    /// Plan and record first-seen times, remove nothing.
    DryRun,
    /// Plan, remove, record.
    Execute,
}

/// Everything a pass produced.
#[derive(Debug)]
pub struct Outcome {
    /// The snapshot the plan was made from.
    pub snapshot: Snapshot,
    /// The plan.
    pub plan: Plan,
    /// What execution did, in [`Mode::Execute`].
    pub report: Option<Report>,
}

/// What passes remember between them.
#[derive(Debug)]
pub struct Memory {
    /// Inspect results by image ID.
    pub cache: DetailsCache,
    /// First-seen and last-used times; saving it is the caller's job.
    pub state: State,
}

impl Memory {
    /// Start with an empty cache and the given state.
    pub fn new(state: State) -> Self {
        Self {
            cache: DetailsCache::new(),
            state,
        }
    }
}

/// Run one pass. `root_dir` is the engine's root dir (for disk usage). The
/// state is updated in memory in every mode but [`Mode::Plan`].
pub async fn run<E: Engine>(
    engine: &E,
    policy: &Policy,
    root_dir: Option<&str>,
    memory: &mut Memory,
    mode: Mode,
    now: DateTime<Utc>,
    cancel: &CancellationToken,
) -> Result<Outcome, EngineError> {
    let Memory { cache, state } = memory;
    let snapshot = {
        let st = &*state;
        collect(engine, root_dir, cache, &|id| st.tracked(id, now)).await?
    };
    if mode != Mode::Plan {
        state.observe(snapshot.images.iter().map(|i| i.id.as_str()), now);
    }
    let plan = plan(policy, &snapshot, now);
    for note in &plan.notes {
        info!(note = %note, "plan");
    }
    let report = if mode == Mode::Execute {
        let report = execute(engine, &snapshot, &plan, cancel).await;
        let gone: Vec<&str> = report
            .removed
            .iter()
            .flat_map(|r| r.deleted_images.iter().map(String::as_str))
            .collect();
        for id in gone {
            state.images.remove(id);
        }
        Some(report)
    } else {
        None
    };
    Ok(Outcome {
        snapshot,
        plan,
        report,
    })
}
