//! What starts a pass. The daemon asks [`Triggers`] for the next one: the
//! policy's schedule (and `run_on_start`) are computed here from the wall
//! clock; every other source (a disk-pressure poller, later engine events)
//! sends through a [`TriggerSender`]. Passes never overlap: triggers that a
//! source sends while a pass runs are coalesced into one pass after it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::policy::Policy;
pub use crate::run::Trigger;

/// The sending half a trigger source holds (a poller task, a test).
#[derive(Debug, Clone)]
pub struct TriggerSender(mpsc::UnboundedSender<Trigger>);

impl TriggerSender {
    /// Asks for a pass. False when the daemon has stopped.
    pub fn send(&self, trigger: Trigger) -> bool {
        self.0.send(trigger).is_ok()
    }
}

/// The receiving half, given to the daemon.
#[derive(Debug)]
pub struct TriggerReceiver(mpsc::UnboundedReceiver<Trigger>);

impl TriggerReceiver {
    /// The next trigger sent; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Trigger> {
        self.0.recv().await
    }
}

/// A channel for a trigger source outside the daemon.
pub fn channel() -> (TriggerSender, TriggerReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (TriggerSender(tx), TriggerReceiver(rx))
}

/// A trigger the disk-pressure sampler sends.
pub fn is_pressure(trigger: Trigger) -> bool {
    matches!(trigger, Trigger::Pressure | Trigger::Event)
}

/// Where the daemon's passes come from.
#[derive(Debug)]
pub struct Triggers {
    /// The next timed trigger: the schedule's next fire time (or `Start`,
    /// now, once); `None` when the schedule never fires again.
    next: Option<(DateTime<Utc>, Trigger)>,
    /// A trigger a source sent, not yet served.
    pending: Option<Trigger>,
    /// Triggers from outside; `None` once every sender is gone (or there
    /// never was one).
    pushed: Option<TriggerReceiver>,
}

impl Triggers {
    /// The triggers of a daemon starting at `now` under `policy`: `Start` at
    /// once when it says `run_on_start`, else its first fire time.
    pub fn new(policy: &Policy, now: DateTime<Utc>, pushed: Option<TriggerReceiver>) -> Self {
        let mut triggers = Self {
            next: None,
            pending: None,
            pushed,
        };
        if policy.run_on_start {
            triggers.next = Some((now, Trigger::Start));
        } else {
            triggers.rearm(policy, now);
        }
        triggers
    }

    /// Sets the timed trigger to the schedule's first fire time after
    /// `after` (after a pass, or when a reload changed the schedule). Fire
    /// times that passed while a pass ran are skipped, not made up.
    pub fn rearm(&mut self, policy: &Policy, after: DateTime<Utc>) {
        self.next = policy
            .schedule
            .next_after(after, policy.timezone)
            .map(|at| (at, Trigger::Schedule));
        match self.next {
            Some((at, _)) => debug!(next = %at, "next pass"),
            None => {
                warn!(schedule = %policy.schedule, "schedule never fires again; no further passes");
            }
        }
    }

    /// The trigger due at `now`, if any, taken: a sent one first, then the
    /// timed one.
    pub fn due(&mut self, now: DateTime<Utc>) -> Option<Trigger> {
        if let Some(trigger) = self.pending.take() {
            return Some(trigger);
        }
        match self.next {
            Some((at, trigger)) if now >= at => {
                self.next = None;
                Some(trigger)
            }
            _ => None,
        }
    }

    /// How long from `now` until the timed trigger; `None` when there is
    /// none.
    pub fn until_next(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.next
            .map(|(at, _)| (at - now).to_std().unwrap_or(Duration::ZERO))
    }

    /// Waits for a source to send a trigger, and keeps it for [`Self::due`].
    /// Never returns once every sender is gone.
    pub async fn recv(&mut self) {
        let Some(pushed) = &mut self.pushed else {
            return std::future::pending().await;
        };
        match pushed.0.recv().await {
            Some(trigger) => self.pending = Some(trigger),
            None => self.pushed = None,
        }
    }

    /// Called after a pass: what sources sent while it ran becomes one
    /// pending trigger, so the pass it asks for still runs, once. The one
    /// kept is the first, unless a disk-pressure trigger is among them: one
    /// pass serves them all, and it is told as the pressure pass, which the
    /// sampler waits for before it asks again.
    pub fn coalesce(&mut self) {
        let Some(pushed) = &mut self.pushed else {
            return;
        };
        let mut merged = 0usize;
        while let Ok(trigger) = pushed.0.try_recv() {
            match self.pending {
                None => self.pending = Some(trigger),
                Some(kept) => {
                    if is_pressure(trigger) && !is_pressure(kept) {
                        self.pending = Some(trigger);
                    }
                    merged += 1;
                }
            }
        }
        if merged > 0 {
            debug!(merged, "triggers sent during a pass: one pass follows");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        crate::config::parse(
            "schedule = \"@yearly\"\nrun_on_start = false\n[[policy]]\nname = \"d\"\n\
             dangling = true\nolder_than = \"1h\"\n",
            "test.toml",
        )
        .expect("valid test policy")
    }

    #[test]
    fn triggers_sent_during_a_pass_become_one_told_as_pressure_when_one_of_them_is() {
        let (tx, rx) = channel();
        let now = Utc::now();
        let mut triggers = Triggers::new(&policy(), now, Some(rx));
        for t in [Trigger::Reload, Trigger::Pressure, Trigger::Reload] {
            assert!(tx.send(t));
        }
        triggers.coalesce();
        assert_eq!(triggers.due(now), Some(Trigger::Pressure));
        assert_eq!(triggers.due(now), None, "one pass, not three");
    }

    #[test]
    fn without_a_pressure_trigger_the_first_sent_is_kept() {
        let (tx, rx) = channel();
        let now = Utc::now();
        let mut triggers = Triggers::new(&policy(), now, Some(rx));
        for t in [Trigger::Reload, Trigger::Start] {
            assert!(tx.send(t));
        }
        triggers.coalesce();
        assert_eq!(triggers.due(now), Some(Trigger::Reload));
        assert_eq!(triggers.due(now), None);
    }
}
