//! The planner and the executor on engines that differ from Docker 20.10 where it matters
//! (measured by the matrix's `api` scenario, `docs/ENGINES.md` "API differences"): no
//! `ParentId` (the containerd store, `BuildKit` images), Podman's `localhost/` names, and
//! Podman deleting the dangling parents of what it removes.

mod support;

use imagegc::engine::{Capabilities, Engine, EngineError};
use imagegc::execute::execute;
use imagegc::fake::{self, FakeEngine};
use imagegc::host::disk::{DiskProbe, FixedDisk};
use imagegc::plan::{plan, Plan};
use imagegc::snapshot::{collect, DetailsCache, Snapshot, Tracked};
use std::sync::Arc;

use support::{ago, glob, img, now, policy, rule, secs, snapshot, DAY};
use tokio_util::sync::CancellationToken;

fn targets(plan: &Plan) -> Vec<String> {
    plan.removals
        .iter()
        .map(|r| r.target().to_string())
        .collect()
}

async fn snapshot_of<E: Engine>(engine: &E) -> Snapshot {
    let no_disk: Arc<dyn DiskProbe> = Arc::new(FixedDisk::new(None));
    collect(engine, &no_disk, None, &mut DetailsCache::new(), &|_| {
        Tracked::default()
    })
    .await
    .expect("the fake engine answers")
}

/// The containerd store's capabilities, as `Flavor::ContainerdStore` declares them.
fn without_parents() -> Capabilities {
    Capabilities {
        has_parents: false,
        reports_deleted_layers: false,
        ..Capabilities::DOCKER_20_10
    }
}

/// Podman's, as `Flavor::Podman` declares them.
fn podman() -> Capabilities {
    Capabilities {
        reports_deleted_layers: false,
        prunes_parents: true,
        build_cache: false,
        qualifies_local_names: true,
        ..Capabilities::DOCKER_20_10
    }
}

#[test]
fn without_parent_ids_an_image_built_on_another_is_removed_before_it() {
    let p = policy(vec![rule("all").older_than(secs(DAY)).build()]);
    // The base is listed first and nothing links the two but their layers.
    let snap = snapshot(
        &[
            img("base", 20 * DAY).tags(&["base/p:1"]).layer("p", 1000),
            img("mid", 15 * DAY)
                .tags(&["mid:1"])
                .layer("p", 1000)
                .layer("m", 100),
            img("app", 10 * DAY)
                .tags(&["app:1"])
                .layer("p", 1000)
                .layer("m", 100)
                .layer("a", 10),
        ],
        vec![],
    )
    .with_capabilities(without_parents());

    let planned = plan(&p, &snap, now());

    assert_eq!(targets(&planned), vec!["app:1", "mid:1", "base/p:1"]);
    assert_eq!(planned.reclaim_bytes, 1110);
}

#[test]
fn images_with_the_same_layers_are_not_each_others_parents() {
    let snap = snapshot(
        &[
            img("one", 20 * DAY).tags(&["a:1"]).layer("p", 1000),
            img("two", 20 * DAY).tags(&["b:1"]).layer("p", 1000),
        ],
        vec![],
    );
    assert_eq!((snap.depth(0), snap.depth(1)), (0, 0));
    assert!(!snap.is_ancestor(0, 1) && !snap.is_ancestor(1, 0));
}

#[test]
fn on_podman_repository_globs_match_the_name_the_user_wrote_and_removals_name_the_engines() {
    let mut p = policy(vec![rule("ci").repositories(&["ci/*"]).build()]);
    p.safety.protect = vec![glob("ci/keep:*")];
    let images = [
        img("app", 10 * DAY)
            .tags(&["localhost/ci/app:1"])
            .layer("a", 10),
        img("keep", 10 * DAY)
            .tags(&["localhost/ci/keep:1"])
            .layer("k", 10),
        img("other", 10 * DAY)
            .tags(&["localhost/other/app:1"])
            .layer("o", 10),
    ];

    let on_podman = plan(
        &p,
        &snapshot(&images, vec![]).with_capabilities(podman()),
        now(),
    );
    assert_eq!(targets(&on_podman), vec!["localhost/ci/app:1"]);
    assert!(
        on_podman
            .kept
            .iter()
            .any(|k| k.reference.as_deref() == Some("localhost/ci/keep:1")),
        "the protect glob as written holds: {:?}",
        on_podman.kept
    );

    // On Docker `localhost/` is a registry the user typed: `ci/*` does not name it.
    let on_docker = plan(&p, &snapshot(&images, vec![]), now());
    assert!(targets(&on_docker).is_empty(), "{:?}", targets(&on_docker));
}

#[test]
fn on_podman_explain_finds_an_image_by_the_reference_the_user_wrote() {
    let images = [img("app", 10 * DAY)
        .tags(&["localhost/ci/app:1", "localhost/ci/app:latest"])
        .layer("a", 10)];
    let on_podman = snapshot(&images, vec![]).with_capabilities(podman());
    for written in ["ci/app:1", "ci/app", "localhost/ci/app:1"] {
        assert_eq!(
            imagegc::explain::find(&on_podman, written),
            Ok(0),
            "{written}"
        );
    }
    // On Docker `localhost/` is a registry: `ci/app:1` is another name.
    let on_docker = snapshot(&images, vec![]);
    assert!(imagegc::explain::find(&on_docker, "ci/app:1").is_err());
}

#[tokio::test]
async fn a_parent_podman_already_deleted_with_its_child_counts_as_removed_once() {
    let engine = FakeEngine::new();
    engine.set_capabilities(Capabilities {
        root_dir_on_host: false,
        ..podman()
    });
    engine.add_image(fake::image(
        "sha256:parent",
        &[],
        ago(30 * DAY),
        &[("sha256:d-base", 1000)],
    ));
    let mut child = fake::image(
        "sha256:child",
        &["localhost/app:1"],
        ago(20 * DAY),
        &[("sha256:d-base", 1000), ("sha256:d-app", 10)],
    );
    child.summary.parent_id = Some("sha256:parent".to_string());
    engine.add_image(child);
    // What Podman does: removing the child takes the dangling parent with it, so the
    // planned removal of the parent finds nothing.
    engine.fail_removal_of(
        "sha256:parent",
        EngineError::NotFound("image not known".to_string()),
    );
    let p = policy(vec![rule("old").older_than(secs(7 * DAY)).build()]);
    let snap = snapshot_of(&engine).await;
    let planned = plan(&p, &snap, now());
    assert_eq!(targets(&planned), vec!["localhost/app:1", "sha256:parent"]);

    let report = execute(&engine, &snap, &planned, &CancellationToken::new()).await;

    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.removed.len(), 2);
    assert_eq!(report.reclaimed_bytes, planned.reclaim_bytes);
    assert_eq!(report.reclaimed_bytes, 1010, "each layer counted once");
    assert_eq!(report.deleted_images(), 2);
    assert!(!report.reclaimed_exact);
}

#[tokio::test]
async fn on_docker_a_missing_parent_is_still_a_normal_not_found() {
    let engine = FakeEngine::new();
    engine.add_image(fake::image(
        "sha256:parent",
        &[],
        ago(30 * DAY),
        &[("sha256:d-base", 1000)],
    ));
    let mut child = fake::image(
        "sha256:child",
        &["app:1"],
        ago(20 * DAY),
        &[("sha256:d-base", 1000), ("sha256:d-app", 10)],
    );
    child.summary.parent_id = Some("sha256:parent".to_string());
    engine.add_image(child);
    engine.fail_removal_of(
        "sha256:parent",
        EngineError::NotFound("No such image".to_string()),
    );
    let p = policy(vec![rule("old").older_than(secs(7 * DAY)).build()]);
    let snap = snapshot_of(&engine).await;
    let planned = plan(&p, &snap, now());

    let report = execute(&engine, &snap, &planned, &CancellationToken::new()).await;

    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].kind, "not_found");
    assert_eq!(report.removed.len(), 1);
}

#[test]
fn parent_links_and_layer_chains_add_up_to_one_depth() {
    // A ParentId link, then a chain prefix without one, then a ParentId link again (a classic
    // build on a BuildKit image on a loaded base).
    let snap = snapshot(
        &[
            img("d", 1)
                .tags(&["d:1"])
                .parent("c")
                .layer("a", 1)
                .layer("b", 1)
                .layer("c", 1)
                .layer("d", 1),
            img("a", 4).tags(&["a:1"]).layer("a", 1),
            img("c", 2)
                .tags(&["c:1"])
                .layer("a", 1)
                .layer("b", 1)
                .layer("c", 1),
            img("b", 3)
                .tags(&["b:1"])
                .parent("a")
                .layer("a", 1)
                .layer("b", 1),
        ],
        vec![],
    );
    let depth = |name: &str| snap.depth(snap.by_id[&support::id(name)]);
    assert_eq!(
        (depth("a"), depth("b"), depth("c"), depth("d")),
        (0, 1, 2, 3)
    );
    let at = |name: &str| snap.by_id[&support::id(name)];
    assert!(snap.is_ancestor(at("a"), at("d")));
    assert!(!snap.is_ancestor(at("d"), at("a")));
}
