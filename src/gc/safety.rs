//! One evaluator per safety rule, each yielding the [`KeptBecause`] it
//! protects a target with.
//!
//! [`protections`] chains them lazily in a fixed order (containers, labels,
//! globs, `min_age`, and on an engine that deletes whole images, the other
//! references of the image): the planner takes the first, `explain` shows them all,
//! and both read the same code. `max_removals_per_run` is a limit on the
//! plan, not a property of a target, so the planner applies it itself.
//! Build-cache records have their own chain, [`record_protections`] (a
//! running build, `min_age` from `CreatedAt`).

use chrono::{DateTime, Utc};

use super::conditions::std_to_delta;
use super::plan::KeptBecause;
use super::Target;
use crate::inventory::Snapshot;
use crate::model::repository_of;
use crate::policy::Safety;

/// Every safety rule that protects `target`, in order, evaluated lazily.
pub(super) fn protections<'s>(
    safety: &'s Safety,
    snap: &'s Snapshot,
    now: DateTime<Utc>,
    target: Target,
) -> impl Iterator<Item = KeptBecause> + 's {
    in_use(snap, target)
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

/// A container in any state uses the image: one answer per container.
fn in_use(snap: &Snapshot, target: Target) -> impl Iterator<Item = KeptBecause> + '_ {
    snap.users[target.image()].iter().map(move |&c| {
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
    references.iter().flat_map(move |reference| {
        let repo = repository_of(reference);
        safety
            .protect
            .iter()
            .filter(move |g| g.is_match(reference) || g.is_match(repo))
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
