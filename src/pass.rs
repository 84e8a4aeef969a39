//! One garbage-collection pass: snapshot → plan → (execute) → state.
//!
//! The glue the `plan` and `once` commands and the daemon loop share. It owns
//! the order of steps, not any decision: the planner decides, the executor
//! acts, the state records.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::engine::{Engine, EngineError, EngineEvent};
use crate::execute::{execute, Report};
use crate::plan::{plan, Plan};
use crate::policy::Policy;
use crate::snapshot::{collect, DetailsCache, FirstSeenBasis, Snapshot};
use crate::state::State;

/// How long a first install waits for the engine's recent image events.
const PAST_EVENTS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
    let mut snapshot = {
        let st = &*state;
        collect(engine, root_dir, cache, &|id| st.tracked(id, now)).await?
    };
    // A first install: what the engine remembers of recent arrivals keeps
    // them out of the baseline (in every mode, so `plan` shows it too).
    let arrivals = if state.baseline_pending {
        let refs = snapshot
            .images
            .iter()
            .map(|i| (i.id.as_str(), i.tags.as_slice(), i.digests.as_slice()));
        recent_arrivals(engine, refs, policy.safety.min_age, now).await
    } else {
        HashMap::new()
    };
    for img in &mut snapshot.images {
        if let Some(&at) = arrivals.get(&img.id) {
            img.tracked.first_seen = Some(at);
            img.tracked.basis = FirstSeenBasis::Arrived;
        }
    }
    if mode != Mode::Plan {
        state.observe(snapshot.images.iter().map(|i| i.id.as_str()), now);
        for (id, at) in &arrivals {
            state.arrived(id, *at);
        }
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

/// Take the baseline of a first install (see [`State::observe`]) from the
/// images listed: they count as old, except those the engine's recent
/// events show arriving within `min_age` (see [`recent_arrivals`]), which
/// count as first seen then. Returns how many arrived.
pub async fn take_baseline<E: Engine>(
    engine: &E,
    state: &mut State,
    images: &[crate::engine::ImageSummary],
    min_age: std::time::Duration,
    now: DateTime<Utc>,
) -> usize {
    let refs = images
        .iter()
        .map(|i| (i.id.as_str(), i.tags.as_slice(), i.digests.as_slice()));
    let arrivals = recent_arrivals(engine, refs, min_age, now).await;
    state.observe(images.iter().map(|i| i.id.as_str()), now);
    for (id, at) in &arrivals {
        state.arrived(id, *at);
    }
    arrivals.len()
}

/// Images (ID, tags, digest references) that the engine's buffered events
/// show being pulled, loaded, imported or tagged since `now - min_age`, with
/// the time of the newest such event. Docker 20.10 sets no `LastTagTime` on
/// pull or load, so without a state file this is all there is to tell an
/// old image pulled a minute ago from one that has been here for months;
/// the engine holds only its last 256 events. Best effort: an engine that
/// cannot say gives nothing.
pub async fn recent_arrivals<'a, E: Engine>(
    engine: &E,
    images: impl IntoIterator<Item = (&'a str, &'a [String], &'a [String])>,
    min_age: std::time::Duration,
    now: DateTime<Utc>,
) -> HashMap<String, DateTime<Utc>> {
    let Some(since) = chrono::TimeDelta::from_std(min_age)
        .ok()
        .filter(|d| !d.is_zero())
        .and_then(|d| now.checked_sub_signed(d))
    else {
        return HashMap::new();
    };
    // An engine whose clock is behind ours would wait for `until`: bounded.
    let asked = engine.past_image_events(since, now);
    let events = match tokio::time::timeout(PAST_EVENTS_TIMEOUT, asked).await {
        Ok(Ok(events)) => events,
        Ok(Err(e)) => {
            debug!(error = %e, "cannot read the engine's recent image events");
            return HashMap::new();
        }
        Err(_) => {
            debug!(
                "the engine's recent image events took too long; taking the baseline without them"
            );
            return HashMap::new();
        }
    };
    arrivals(&events, images)
}

/// [`recent_arrivals`] once the events are in hand. `pull` names the
/// reference pulled; `load`, `import` and `tag` name the image ID.
fn arrivals<'a>(
    events: &[EngineEvent],
    images: impl IntoIterator<Item = (&'a str, &'a [String], &'a [String])>,
) -> HashMap<String, DateTime<Utc>> {
    let mut by_name: HashMap<&str, &str> = HashMap::new();
    for (id, tags, digests) in images {
        by_name.insert(id, id);
        for r in tags.iter().chain(digests) {
            by_name.insert(r.as_str(), id);
        }
    }
    let mut out: HashMap<String, DateTime<Utc>> = HashMap::new();
    for e in events {
        if !matches!(e.action.as_str(), "pull" | "load" | "import" | "tag") {
            continue;
        }
        if let Some(&id) = by_name.get(e.actor_id.as_str()) {
            let at = out.entry(id.to_owned()).or_insert(e.time);
            *at = (*at).max(e.time);
        }
    }
    out
}
