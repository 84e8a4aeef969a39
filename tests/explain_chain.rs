//! `explain` of an image built by the classic builder: its layers are its
//! untagged intermediate parents' too, so deleting it alone frees nothing,
//! while `docker rmi` (which deletes the untagged parents only it holds)
//! frees them all. explain says both.

mod common;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use imagegc::config;
use imagegc::explain;
use imagegc::fake::{self, FakeEngine, FakeImage};
use imagegc::pass::{self, Memory, Mode};
use imagegc::state::State;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("test timestamp")
}

fn with_parent(mut image: FakeImage, parent: &str) -> FakeImage {
    image.summary.parent_id = Some(parent.to_owned());
    image
}

async fn explain_in(engine: &FakeEngine, target: &str) -> explain::Explanation {
    let text = "[[policy]]\nname = \"dangling\"\ndangling = true\nolder_than = \"3650d\"\n";
    let policy = config::parse(text, "test.toml").expect("valid policy");
    let now = t("2026-11-28T10:00:00Z");
    let mut memory = Memory::new(State::fresh(now));
    let outcome = pass::run(
        engine,
        &policy,
        None,
        &mut memory,
        Mode::Plan,
        now,
        &CancellationToken::new(),
    )
    .await
    .expect("the fake engine answers");
    let i = explain::find(&outcome.snapshot, target).expect("the image is there");
    explain::explain(&policy, &outcome.snapshot, &outcome.plan, now, i)
}

/// base (untagged, 7000 B) ← step (untagged, +3000 B) ← app:1 (a metadata
/// step: no layer of its own), as the classic builder leaves them.
fn classic_build(engine: &FakeEngine) {
    let created = t("2026-11-01T00:00:00Z");
    let a = ("sha256:layer-a", 7000);
    let b = ("sha256:layer-b", 3000);
    engine.add_image(fake::image("sha256:base", &[], created, &[a]));
    engine.add_image(with_parent(
        fake::image("sha256:step", &[], created, &[a, b]),
        "sha256:base",
    ));
    engine.add_image(with_parent(
        fake::image("sha256:app", &["app:1"], created, &[a, b]),
        "sha256:step",
    ));
}

#[tokio::test]
async fn explain_counts_the_untagged_parents_only_the_image_holds() {
    let engine = FakeEngine::new();
    classic_build(&engine);

    let e = explain_in(&engine, "app:1").await;

    assert_eq!(e.unique_bytes, 0, "alone it frees nothing");
    assert_eq!(e.parents_freed, 2);
    assert_eq!(e.with_parents_bytes, 10_000);
    let text = e.to_text();
    assert!(
        text.contains(
            "0 B freed if deleted alone; 9.8 KiB with the 2 untagged parents only it holds"
        ),
        "{text}"
    );
    assert_eq!(e.to_json()["with_parents_bytes"], 10_000);
}

#[tokio::test]
async fn a_parent_another_image_still_needs_is_not_counted() {
    let engine = FakeEngine::new();
    classic_build(&engine);
    // A second build from the same intermediate `step`.
    engine.add_image(with_parent(
        fake::image(
            "sha256:other",
            &["other:1"],
            t("2026-11-01T00:00:00Z"),
            &[
                ("sha256:layer-a", 7000),
                ("sha256:layer-b", 3000),
                ("sha256:layer-c", 500),
            ],
        ),
        "sha256:step",
    ));

    let e = explain_in(&engine, "app:1").await;

    assert_eq!(e.unique_bytes, 0);
    assert_eq!(e.parents_freed, 0, "step still has a child, base holds it");
    assert_eq!(e.with_parents_bytes, 0);
    assert!(e.to_text().contains("(0 B freed if deleted alone)\n"));
}

#[tokio::test]
async fn a_tagged_parent_stays_and_stops_the_chain() {
    let engine = FakeEngine::new();
    let created = t("2026-11-01T00:00:00Z");
    let a = ("sha256:layer-a", 7000);
    let b = ("sha256:layer-b", 3000);
    engine.add_image(fake::image("sha256:base", &[], created, &[a]));
    engine.add_image(with_parent(
        fake::image("sha256:step", &["step:1"], created, &[a, b]),
        "sha256:base",
    ));
    engine.add_image(with_parent(
        fake::image("sha256:app", &["app:1"], created, &[a, b]),
        "sha256:step",
    ));
    let e = explain_in(&engine, "app:1").await;
    assert_eq!((e.parents_freed, e.with_parents_bytes), (0, 0));
}

/// Against the real engine: a chain loaded with parent links, whose tagged
/// child adds an empty layer. explain's figure with the parents is what
/// `docker rmi` of the child then frees, by the engine's own count.
#[test]
fn explain_of_a_chain_on_the_real_engine_matches_what_docker_rmi_frees() {
    let _lock = common::engine_lock();
    let lab = common::Lab::new();
    let chain = lab.load_chain(&[
        common::ImageSpec::new().days_old(3).layer_bytes(40_000),
        common::ImageSpec::new().days_old(3).layer_bytes(20_000),
        common::ImageSpec::new()
            .days_old(3)
            .layer_bytes(0)
            .tag(lab.reference("classic", "1")),
    ]);
    let policy = lab.write_policy(&format!(
        "[state]\npath = \"{}\"\n[[policy]]\nname = \"dangling\"\n{}\ndangling = true\nolder_than = \"3650d\"\n",
        lab.state_path().display(),
        lab.selector()
    ));
    let policy = policy.to_str().expect("utf-8 path");
    let reference = lab.reference("classic", "1");
    let out = common::imagegc(&[
        "--config", policy, "explain", &reference, "--output", "json",
    ]);
    assert!(
        out.status.success(),
        "explain: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).expect("explain prints JSON");
    assert_eq!(e["image_id"], chain[2].id.as_str());
    assert_eq!(e["unique_bytes"].as_u64(), Some(chain[2].own_content_bytes));
    assert_eq!(e["parents_freed"], 2, "{e:#}");
    let predicted = e["with_parents_bytes"].as_u64().expect("a byte count");
    let own: u64 = chain.iter().map(|i| i.own_content_bytes).sum();
    assert_eq!(predicted, own, "{e:#}");

    let before = common::layers_size();
    let out = common::docker(&["rmi", &reference]);
    assert!(
        out.status.success(),
        "docker rmi: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = common::layers_size();
    for image in &chain {
        assert!(!common::image_exists(&image.id), "{} is gone", image.id);
    }
    assert_eq!(
        before - after,
        predicted,
        "the engine freed what explain said"
    );
}
