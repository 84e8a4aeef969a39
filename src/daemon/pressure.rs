//! The disk-pressure sampler: between scheduled passes, a task looks at the
//! filesystem holding the engine's data every `[pressure] interval` (and at
//! once when the daemon sees an event that adds data) and asks for a pass
//! as soon as usage is at or above any policy's percentage `disk_high`, or
//! inode use (`df -i`'s share) at or above any policy's `inodes_high`.
//!
//! It owns when to look and when to ask; the daemon loop owns the passes.
//! The two share a [`Gate`]: the sampler asks at most once until the pass
//! it asked for has run (so samples taken during a long pass do not queue
//! a second one), and after a pressure pass that left usage above a
//! triggering policy's `disk_low` (or inode use above its `inodes_low`) the
//! loop closes the gate for `[pressure] cooldown`, so a disk full of
//! protected images does not spin the collector. The planner can only
//! estimate the inodes a pass frees (in proportion to bytes); the samples
//! after it measure them, so an estimate that fell short makes the next
//! sample ask again, once the cooldown has passed. Each look goes through [`crate::host::disk::usage_of`]: a
//! blocking thread under a deadline, never the runtime's.
//!
//! Size watermarks (`disk_high = "200GiB"`) count image or cache bytes,
//! which a statvfs cannot tell: passes check them, the sampler does not.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::triggers::{Trigger, TriggerSender};
use crate::host::disk::{self, DiskProbe, DiskUsage};
use crate::policy::Policy;

/// What the sampler watches; `None` in its channel while nothing is
/// (no percentage watermarks, or no engine root dir on this host yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    /// The engine's root dir, on this host.
    pub root_dir: String,
    /// The watermarks a sample is compared with.
    pub marks: Vec<Mark>,
    /// `[pressure] interval`.
    pub interval: Duration,
    /// `[pressure] cooldown`.
    pub cooldown: Duration,
}

impl Watch {
    /// What `policy` asks to watch at `root_dir`; `None` when it sets no
    /// percentage disk watermark and no inode watermark.
    pub fn of(policy: &Policy, root_dir: &str) -> Option<Self> {
        let mark = |measure| {
            move |(policy, high, low)| Mark {
                policy,
                measure,
                high,
                low,
            }
        };
        let marks: Vec<Mark> = policy
            .disk_ratio_marks()
            .into_iter()
            .map(mark(Measure::Disk))
            .chain(policy.inode_marks().into_iter().map(mark(Measure::Inodes)))
            .collect();
        (!marks.is_empty()).then(|| Self {
            root_dir: root_dir.to_owned(),
            marks,
            interval: policy.pressure.interval,
            cooldown: policy.pressure.cooldown,
        })
    }

    /// The policies one of whose high marks `usage` is at or above, each
    /// once, in the order of their first mark.
    pub fn above_high(&self, usage: &DiskUsage) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for m in &self.marks {
            let reached = m.measure.of(usage).is_some_and(|v| v >= m.high);
            if reached && !out.contains(&m.policy.as_str()) {
                out.push(&m.policy);
            }
        }
        out
    }

    /// Whether `usage` is above a low mark (disk or inodes) of any of
    /// `policies`: the pass they asked for did not reach every low mark.
    pub fn above_low_of(&self, usage: &DiskUsage, policies: &[String]) -> bool {
        self.marks
            .iter()
            .any(|m| policies.contains(&m.policy) && m.measure.of(usage).is_some_and(|v| v > m.low))
    }
}

/// What a mark is a share of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// The filesystem's bytes, as `df` counts `Use%` (`disk_high`).
    Disk,
    /// The filesystem's inodes, as `df -i` counts `IUse%` (`inodes_high`).
    Inodes,
}

impl Measure {
    /// The share of `usage` this measure reads; `None` for inodes on a
    /// filesystem that reports no inode counts.
    pub fn of(self, usage: &DiskUsage) -> Option<f64> {
        match self {
            Self::Disk => Some(usage.used_ratio()),
            Self::Inodes => usage.inodes_used_ratio(),
        }
    }
}

/// One policy's percentage watermarks of one measure (a policy with both
/// pairs has two marks).
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// The policy's name, for log lines.
    pub policy: String,
    /// Disk or inodes.
    pub measure: Measure,
    /// `disk_high` or `inodes_high`, a share 0.0..=1.0.
    pub high: f64,
    /// `disk_low` or `inodes_low`.
    pub low: f64,
}

/// What the sampler and the daemon loop share.
#[derive(Debug, Default)]
pub struct Gate(Mutex<GateState>);

#[derive(Debug, Default)]
struct GateState {
    /// A pressure trigger was sent and its pass has not finished.
    asked: bool,
    /// When the first sample at or above a high mark was taken, since the
    /// last pressure pass and outside a cooldown: where
    /// `imagegc_pressure_reaction_seconds` counts from.
    crossed_at: Option<Instant>,
    /// The policies whose high mark the sample that asked was at or above.
    crossed: Vec<String>,
    /// No pressure pass before this.
    cooling_until: Option<Instant>,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        // Plain values: a poisoned lock still holds good ones.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a pressure pass must wait at `now`.
    pub fn cooling(&self, now: Instant) -> bool {
        self.lock().cooling_until.is_some_and(|until| now < until)
    }

    /// A sample at `at` is at or above the high marks of `policies`: true
    /// when a pressure pass should be asked for now (none asked yet, not
    /// cooling down). Remembers the first such sample.
    fn crossed(&self, at: Instant, policies: &[&str]) -> bool {
        let mut g = self.lock();
        // A cooldown holds passes back on purpose: the reaction counts from
        // the first sample that could ask for one.
        if g.cooling_until.is_some_and(|until| at < until) {
            return false;
        }
        if g.crossed_at.is_none() {
            g.crossed_at = Some(at);
        }
        if g.asked {
            return false;
        }
        g.asked = true;
        g.crossed = policies.iter().map(|p| (*p).to_owned()).collect();
        true
    }

    /// The pass a pressure trigger asked for has finished (or was dropped):
    /// returns when the first sample at or above high was taken and which
    /// policies it crossed, and forgets both.
    pub fn served(&self) -> (Option<Instant>, Vec<String>) {
        let mut g = self.lock();
        g.asked = false;
        (g.crossed_at.take(), std::mem::take(&mut g.crossed))
    }

    /// No pressure pass before `until`.
    pub fn cool_until(&self, until: Instant) {
        self.lock().cooling_until = Some(until);
    }
}

/// Why the sampler looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Interval,
    Event,
}

/// The sampler task: runs until `shutdown`, looking at the disk `watch`
/// says every interval and whenever `poke` is notified, and sending
/// [`Trigger::Pressure`] (or [`Trigger::Event`] for a look an event asked
/// for) through `triggers` when a sample is at or above a high mark.
pub async fn sample(
    probe: Arc<dyn DiskProbe>,
    mut watch: watch::Receiver<Option<Watch>>,
    poke: Arc<Notify>,
    gate: Arc<Gate>,
    triggers: TriggerSender,
    shutdown: CancellationToken,
) {
    let mut next = Instant::now();
    loop {
        let current = watch.borrow_and_update().clone();
        let Some(current) = current else {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = watch.changed() => if changed.is_err() { return },
            }
            next = Instant::now();
            continue;
        };
        let cause = tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(next) => Cause::Interval,
            () = poke.notified() => Cause::Event,
            changed = watch.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let usage = disk::usage_of(&probe, &current.root_dir).await;
        let at = Instant::now();
        next = at + current.interval;
        let Some(usage) = usage else {
            continue;
        };
        let above = current.above_high(&usage);
        if above.is_empty() {
            continue;
        }
        if gate.crossed(at, &above) {
            let trigger = match cause {
                Cause::Interval => Trigger::Pressure,
                Cause::Event => Trigger::Event,
            };
            info!(
                trigger = trigger.label(),
                used_ratio = usage.used_ratio(),
                inodes_used_ratio = usage.inodes_used_ratio(),
                policies = %above.join(", "),
                "disk at or above a high watermark; asking for a pass"
            );
            if !triggers.send(trigger) {
                return;
            }
        } else {
            debug!(
                used_ratio = usage.used_ratio(),
                inodes_used_ratio = usage.inodes_used_ratio(),
                "disk above a high watermark; a pass is asked for already or cooling down"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        Watch {
            root_dir: "/var/lib/docker".into(),
            marks: vec![
                Mark {
                    policy: "a".into(),
                    measure: Measure::Disk,
                    high: 0.85,
                    low: 0.70,
                },
                Mark {
                    policy: "b".into(),
                    measure: Measure::Disk,
                    high: 0.95,
                    low: 0.90,
                },
            ],
            interval: Duration::from_secs(5),
            cooldown: Duration::from_secs(60),
        }
    }

    fn used(percent: u64) -> DiskUsage {
        DiskUsage {
            total_bytes: 100,
            used_bytes: percent,
            ..DiskUsage::default()
        }
    }

    #[test]
    fn a_sample_is_above_the_high_marks_it_reaches_and_no_others() {
        let w = watch();
        assert!(w.above_high(&used(84)).is_empty());
        assert_eq!(w.above_high(&used(85)), ["a"]);
        assert_eq!(w.above_high(&used(97)), ["a", "b"]);
    }

    #[test]
    fn only_the_low_marks_of_the_policies_that_crossed_count_after_a_pass() {
        let w = watch();
        // 80%: above a's low (70%), below b's (90%).
        assert!(w.above_low_of(&used(80), &["a".into()]));
        assert!(!w.above_low_of(&used(80), &["b".into()]));
        assert!(!w.above_low_of(&used(70), &["a".into()]));
    }

    /// `a`'s disk marks as above, and `a` again and `i` on inodes.
    fn watch_with_inodes() -> Watch {
        let mut w = watch();
        w.marks.truncate(1);
        for (policy, high, low) in [("a", 0.9, 0.8), ("i", 0.8, 0.5)] {
            w.marks.push(Mark {
                policy: policy.into(),
                measure: Measure::Inodes,
                high,
                low,
            });
        }
        w
    }

    fn inodes(disk_percent: u64, inode_percent: u64) -> DiskUsage {
        used(disk_percent).with_inodes(100, 100 - inode_percent)
    }

    #[test]
    fn an_inode_sample_at_or_above_inodes_high_reaches_that_policy_whatever_the_bytes() {
        let w = watch_with_inodes();
        assert!(w.above_high(&inodes(10, 79)).is_empty());
        assert_eq!(w.above_high(&inodes(10, 80)), ["i"]);
        assert_eq!(w.above_high(&inodes(10, 95)), ["a", "i"]);
        assert_eq!(
            w.above_high(&inodes(90, 95)),
            ["a", "i"],
            "a policy crossing both pairs is named once"
        );
        // A filesystem without inode counts reaches no inode mark.
        assert!(w.above_high(&used(10).with_inodes(0, 0)).is_empty());
    }

    #[test]
    fn after_a_pass_any_low_mark_of_a_crossed_policy_left_above_counts() {
        let w = watch_with_inodes();
        // Disk down to 60% (a's disk_low 70%), inodes still 85% (a's 80%).
        assert!(w.above_low_of(&inodes(60, 85), &["a".into()]));
        assert!(!w.above_low_of(&inodes(60, 80), &["a".into()]));
        assert!(w.above_low_of(&inodes(10, 51), &["i".into()]));
        assert!(!w.above_low_of(&inodes(10, 50), &["i".into()]));
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_asks_once_until_served_and_not_while_cooling() {
        let gate = Gate::default();
        let t0 = Instant::now();
        assert!(gate.crossed(t0, &["a"]));
        assert!(
            !gate.crossed(t0 + Duration::from_secs(5), &["a"]),
            "asked already"
        );
        let (crossed_at, policies) = gate.served();
        assert_eq!(crossed_at, Some(t0), "the first sample at or above high");
        assert_eq!(policies, ["a"]);
        gate.cool_until(t0 + Duration::from_secs(60));
        assert!(gate.cooling(t0 + Duration::from_secs(59)));
        assert!(!gate.crossed(t0 + Duration::from_secs(59), &["a"]));
        assert!(!gate.cooling(t0 + Duration::from_secs(60)));
        assert!(gate.crossed(t0 + Duration::from_secs(60), &["a"]));
        let (crossed_at, _) = gate.served();
        assert_eq!(
            crossed_at,
            Some(t0 + Duration::from_secs(60)),
            "samples during the cooldown do not count towards the reaction"
        );
    }
}
