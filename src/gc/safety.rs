//! One evaluator per safety rule, each yielding the [`KeptBecause`] it
//! protects a target with.
//!
//! [`protections`] chains them lazily in a fixed order (containers, labels,
//! globs, `min_age`, and on an engine that deletes whole images, the other
//! references of the image): the planner takes the first, `explain` shows them all,
//! and both read the same code. `max_removals_per_run` is a limit on the
//! plan, not a property of a target, so the planner applies it itself.
//! Build-cache records have their own chain, [`record_protections`] (a
//! running build, `min_age` from `CreatedAt`), and so do stopped
//! containers, [`container_protections`] (not stopped, a restart policy,
//! used by another container, Compose, `protect_containers`,
//! `protect_labels`, `min_age` from the finish time).
//!
//! An image is in use while a container of it is left: the containers the
//! plan removes earlier in the same pass no longer pin it.

use chrono::{DateTime, Utc};

use super::conditions::{container_stopped_at, std_to_delta};
use super::plan::KeptBecause;
use super::Target;
use crate::inventory::{SnapContainer, Snapshot};
use crate::model::{as_written, repository_of};
use crate::policy::{LabelMatch, Safety, StoppedState};

/// Every safety rule that protects `target`, in order, evaluated lazily.
/// `removed[c]` is true for the containers the plan removes before any
/// image (those do not keep their image in use; an index past the end is
/// not removed).
pub(super) fn protections<'s>(
    safety: &'s Safety,
    snap: &'s Snapshot,
    now: DateTime<Utc>,
    target: Target,
    removed: &'s [bool],
) -> impl Iterator<Item = KeptBecause> + 's {
    in_use(snap, target, removed)
        .chain(protect_labels(safety, snap, target))
        .chain(protect_globs(safety, snap, target))
        .chain(std::iter::once_with(move || min_age(safety, snap, now, target)).flatten())
        .chain(whole_image(snap, target))
}

/// On an engine whose removal of one reference deletes the whole image
/// (`Capabilities::untags_single_reference` false), a tag of an image with
/// other references is kept: its removal would delete references that no
/// policy chose, or that safety keeps. Docker untags one reference at a time,
/// so there this never holds.
fn whole_image(snap: &Snapshot, target: Target) -> Option<KeptBecause> {
    let references = snap.images[target.image()].tags.len();
    let tag = matches!(target, Target::Tag(..));
    (tag && references > 1 && !snap.capabilities.untags_single_reference)
        .then_some(KeptBecause::WholeImage { references })
}

/// A container in any state, not removed earlier in the plan, uses the
/// image: one answer per container.
fn in_use<'s>(
    snap: &'s Snapshot,
    target: Target,
    removed: &'s [bool],
) -> impl Iterator<Item = KeptBecause> + 's {
    let left = move |c: &&usize| !removed.get(**c).copied().unwrap_or(false);
    snap.users[target.image()]
        .iter()
        .filter(left)
        .map(move |&c| {
            let c = &snap.containers[c].container;
            KeptBecause::InUse {
                container: c.id.clone(),
                state: c.state.clone(),
            }
        })
}

/// The image carries a protected label.
fn protect_labels<'s>(
    safety: &'s Safety,
    snap: &'s Snapshot,
    target: Target,
) -> impl Iterator<Item = KeptBecause> + 's {
    let labels = &snap.images[target.image()].labels;
    safety
        .protect_labels
        .iter()
        .filter(move |l| l.matches(labels))
        .map(|l| KeptBecause::ProtectLabel {
            label: l.to_string(),
        })
}

/// A reference this removal takes away matches a `protect` glob: the tag,
/// or, for an untagged image removed by ID, its digest references.
fn protect_globs<'s>(
    safety: &'s Safety,
    snap: &'s Snapshot,
    target: Target,
) -> impl Iterator<Item = KeptBecause> + 's {
    let img = &snap.images[target.image()];
    let references = match target {
        Target::Tag(_, t) => std::slice::from_ref(&img.tags[t]),
        Target::Untagged(_) => img.digests.as_slice(),
    };
    let qualified = snap.capabilities.qualifies_local_names;
    references.iter().flat_map(move |reference| {
        let repo = repository_of(reference);
        // On Podman `ci/app:1` lists as `localhost/ci/app:1`: a protect
        // glob matches what the user wrote as well as the engine's spelling.
        let written = qualified.then(|| as_written(reference)).flatten();
        safety
            .protect
            .iter()
            .filter(move |g| {
                g.is_match(reference)
                    || g.is_match(repo)
                    || written.is_some_and(|w| g.is_match(w) || g.is_match(repository_of(w)))
            })
            .map(|g| KeptBecause::ProtectGlob {
                pattern: g.pattern.clone(),
            })
    })
}

/// The image is younger than `min_age`, counted from its grace start.
fn min_age(
    safety: &Safety,
    snap: &Snapshot,
    now: DateTime<Utc>,
    target: Target,
) -> Option<KeptBecause> {
    let min_age = std_to_delta(safety.min_age);
    let (since, what) = snap.grace_start(target.image());
    let age = now - since;
    (age < min_age).then_some(KeptBecause::TooYoung {
        min_age,
        since: what,
        age,
    })
}

/// Every safety rule that protects build-cache record `record`, in order: a
/// running build holds it (`InUse`), then `min_age` counted from its
/// `CreatedAt` (records have no first-seen time). Protect globs and labels
/// name images and do not apply to records. Children before parents depends
/// on the plan, so the planner applies it itself
/// ([`KeptBecause::HasChildren`]), as it does `max_removals_per_run`.
pub(super) fn record_protections<'s>(
    safety: &'s Safety,
    snap: &'s Snapshot,
    now: DateTime<Utc>,
    record: usize,
) -> impl Iterator<Item = KeptBecause> + 's {
    let rec = &snap.cache.records[record];
    let in_use = rec.in_use.then_some(KeptBecause::BuildInUse);
    let min_age = std_to_delta(safety.min_age);
    let age = now - rec.created;
    let young = (age < min_age).then_some(KeptBecause::TooYoung {
        min_age,
        since: "created",
        age,
    });
    in_use.into_iter().chain(young)
}

/// The label key Compose puts on every container it manages.
pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";

/// Restart policies that bring a stopped container back.
const RESTARTING_POLICIES: [&str; 2] = ["always", "unless-stopped"];

/// Every safety rule that protects container `c` (index into the snapshot's
/// `containers`), in order, evaluated lazily: not stopped
/// ([`KeptBecause::ContainerActive`]: anything but `exited`, `dead`,
/// `created`), a restart policy that brings it back, another container that
/// uses it (`--volumes-from`, `network_mode: container:…`, by full ID,
/// unique ID prefix or name), Compose (unless `rule_labels`, the removing
/// policy's label selectors, name [`COMPOSE_PROJECT`]), a
/// `protect_containers` glob on a name, a `protect_labels` entry on its
/// labels, `min_age` from its finish (creation, if it never finished). An
/// index out of range gives nothing. `max_removals_per_run` is the
/// planner's.
pub(super) fn container_protections<'s>(
    safety: &'s Safety,
    snap: &'s Snapshot,
    now: DateTime<Utc>,
    c: usize,
    rule_labels: &'s [LabelMatch],
) -> impl Iterator<Item = KeptBecause> + 's {
    let one = snap.containers.get(c);
    one.into_iter().flat_map(move |sc| {
        let container = &sc.container;
        let active = StoppedState::from_engine(&container.state)
            .is_none()
            .then(|| KeptBecause::ContainerActive {
                state: container.state.clone(),
            });
        let restart = sc
            .details
            .as_ref()
            .map(|d| d.restart_policy.as_str())
            .filter(|p| RESTARTING_POLICIES.contains(p))
            .map(|p| KeptBecause::RestartPolicy {
                policy: p.to_owned(),
            });
        let compose = container
            .labels
            .get(COMPOSE_PROJECT)
            .filter(|_| !rule_labels.iter().any(|l| l.key == COMPOSE_PROJECT))
            .map(|project| KeptBecause::Compose {
                project: project.clone(),
            });
        let globs = safety.protect_containers.iter().filter(move |g| {
            container
                .names
                .iter()
                .any(|n| g.is_match(n.trim_start_matches('/')))
        });
        let labels = safety
            .protect_labels
            .iter()
            .filter(move |l| l.matches(&container.labels));
        active
            .into_iter()
            .chain(restart)
            .chain(used_by(snap, c))
            .chain(compose)
            .chain(globs.map(|g| KeptBecause::ProtectContainer {
                pattern: g.pattern.clone(),
            }))
            .chain(labels.map(|l| KeptBecause::ProtectLabel {
                label: l.to_string(),
            }))
            .chain(std::iter::once_with(move || container_min_age(safety, sc, now)).flatten())
    })
}

/// The other containers that use container `c`: one answer per use.
fn used_by(snap: &Snapshot, c: usize) -> impl Iterator<Item = KeptBecause> + '_ {
    snap.containers
        .iter()
        .enumerate()
        .filter(move |(o, _)| *o != c)
        .flat_map(move |(_, other)| {
            let details = other.details.as_ref();
            let volumes = details
                .into_iter()
                .flat_map(|d| d.volumes_from.iter())
                .map(|r| (r, "volumes_from"));
            let network = details
                .and_then(|d| d.network_container.as_ref())
                .map(|r| (r, "network"));
            volumes
                .chain(network)
                .filter(move |(r, _)| names_container(snap, c, r))
                .map(|(_, how)| KeptBecause::UsedByContainer {
                    container: other.container.id.clone(),
                    how,
                })
        })
}

/// True when `reference` (from another container's `volumes_from` or
/// network mode) names container `c`: its full ID, one of its names (a
/// leading `/` ignored), or a prefix of its ID no other container's ID
/// starts with.
pub(super) fn names_container(snap: &Snapshot, c: usize, reference: &str) -> bool {
    let Some(target) = snap.containers.get(c) else {
        return false;
    };
    let reference = reference.trim_start_matches('/');
    if reference.is_empty() {
        return false;
    }
    let id = target.container.id.as_str();
    if id == reference
        || target
            .container
            .names
            .iter()
            .any(|n| n.trim_start_matches('/') == reference)
    {
        return true;
    }
    id.starts_with(reference)
        && snap
            .containers
            .iter()
            .filter(|o| o.container.id.starts_with(reference))
            .count()
            == 1
}

/// The container stopped (or, never started, was created) less than
/// `min_age` ago.
fn container_min_age(
    safety: &Safety,
    c: &SnapContainer,
    now: DateTime<Utc>,
) -> Option<KeptBecause> {
    let min_age = std_to_delta(safety.min_age);
    let (since_at, since) = container_stopped_at(c);
    let age = now - since_at;
    (age < min_age).then_some(KeptBecause::TooYoung {
        min_age,
        since,
        age,
    })
}
