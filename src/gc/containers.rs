//! Stopped containers in the plan (`[[containers]]` policies): which rule
//! selects a container, its conditions, and the container phase, which
//! runs before every image policy so that the images those removals unpin
//! are candidates in the same pass.
//!
//! A container is removed only when the snapshot holds its inspect facts
//! ([`SnapContainer::details`]): without them its finish time, restart
//! policy and users are unknown, and unknown facts keep it.

use super::conditions::{check_container, Check, ContainerCondition};
use super::plan::{KeptBecause, KeptContainer, Reason, Reasons};
use super::{safety, Planner};
use crate::inventory::SnapContainer;
use crate::policy::ContainerRule;

/// Selectors: the container's state is one of the rule's `states` (none
/// given: `exited`, `dead`), any name matches any `names` glob, its image
/// reference matches an `images` glob, and every `labels` entry matches.
///
/// The rule's selectors pick the container: `inventory::container_selected`,
/// the one collect uses to decide which containers to size, so the two agree.
pub(super) fn container_selected(rule: &ContainerRule, c: &SnapContainer) -> bool {
    crate::inventory::container_selected(rule, c)
}

/// The container's inspect facts are known, and so is when it stopped: a
/// container that ran (`exited`, `dead`) without a readable `FinishedAt`
/// stopped at an unknown time, maybe a minute ago, so it is kept like one
/// without inspect facts; a never-started one counts from its creation.
fn finish_known(sc: &SnapContainer) -> bool {
    sc.details
        .as_ref()
        .is_some_and(|d| d.finished_at.is_some() || sc.container.state == "created")
}

/// The rule's label selectors name Compose's project label.
fn selects_compose(rule: &ContainerRule) -> bool {
    rule.selectors
        .labels
        .iter()
        .any(|l| l.key == safety::COMPOSE_PROJECT)
}

/// A container's first name without the `/`, or its short ID when it has
/// none.
pub(super) fn display_name(c: &SnapContainer) -> String {
    c.container.names.first().map_or_else(
        || crate::model::short_id(&c.container.id).to_owned(),
        |n| n.trim_start_matches('/').to_owned(),
    )
}

/// Every condition of a container rule, checked against `c`.
pub(super) fn container_checks<'k>(
    rule: &'k ContainerRule,
    now: chrono::DateTime<chrono::Utc>,
    c: &'k SnapContainer,
) -> impl Iterator<Item = Check<'static>> + 'k {
    ContainerCondition::of(&rule.conditions).map(move |k| check_container(now, k, c))
}

/// True when the rule sets a condition and every one holds (a rule without
/// conditions, which the policy file refuses, removes nothing).
fn container_conditions_met(
    rule: &ContainerRule,
    now: chrono::DateTime<chrono::Utc>,
    c: &SnapContainer,
) -> bool {
    let mut any = false;
    let all = container_checks(rule, now, c).all(|k| {
        any = true;
        k.holds
    });
    any && all
}

/// The rule that names the removal of `c`: the first (file order) whose
/// selectors and conditions hold; when Compose manages `c` and a later such
/// rule selects the Compose label, that one (it is the rule allowed to
/// remove it).
pub(super) fn naming_rule(
    rules: &[ContainerRule],
    now: chrono::DateTime<chrono::Utc>,
    c: &SnapContainer,
) -> Option<usize> {
    let hits = || {
        rules
            .iter()
            .enumerate()
            .filter(move |(_, r)| container_selected(r, c) && container_conditions_met(r, now, c))
    };
    let first = hits().next()?.0;
    if c.container.labels.contains_key(safety::COMPOSE_PROJECT) {
        if let Some((i, _)) = hits().find(|(_, r)| selects_compose(r)) {
            return Some(i);
        }
    }
    Some(first)
}

impl Planner<'_> {
    fn keep_container(&mut self, c: usize, rule: usize, reason: KeptBecause) {
        let sc = &self.snap.containers[c];
        self.kept_containers.push(KeptContainer {
            container: c,
            container_id: sc.container.id.clone(),
            name: display_name(sc),
            policy: self.policy.container_rules[rule].name.clone(),
            reason,
        });
    }

    /// Every `[[containers]]` rule, before any image policy: each stopped
    /// container with inspect facts is named by [`naming_rule`], then
    /// safety, then the removal limit, then the ledger (which unpins its
    /// image for the image phases).
    pub(super) fn container_phase(&mut self) {
        let rules = &self.policy.container_rules;
        if rules.is_empty() {
            return;
        }
        for c in 0..self.snap.containers.len() {
            let sc = &self.snap.containers[c];
            if !finish_known(sc) {
                continue;
            }
            let Some(r) = naming_rule(rules, self.now, sc) else {
                continue;
            };
            let rule = &rules[r];
            let first = safety::container_protections(
                &self.policy.safety,
                self.snap,
                self.now,
                c,
                &rule.selectors.labels,
            )
            .next();
            if let Some(why) = first {
                self.keep_container(c, r, why);
                continue;
            }
            if let Some(why) = self.limit_reached() {
                self.keep_container(c, r, why);
                continue;
            }
            let reason: Vec<Reason> = container_checks(rule, self.now, sc)
                .filter(|k| k.holds)
                .filter_map(|k| k.fact.reason())
                .collect();
            self.removed_containers[c] = true;
            self.selected_containers.push((c, r, Reasons(reason)));
            self.ledger.remove_container(c);
        }
    }
}
