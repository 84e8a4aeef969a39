//! The executor and the pass, pinned against the in-memory engine: what is
//! removed (exactly the plan, in order), how refusals and a lost engine are
//! reported, where cancellation stops, and what a pass costs and records.

mod support;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use imagegc::engine::{Capabilities, Container, Engine, EngineError};
use imagegc::execute::{execute, Report};
use imagegc::fake::{self, FakeEngine, FakeImage};
use imagegc::host::disk::{DiskProbe, FixedDisk};
use imagegc::pass::{self, Memory, Mode, Outcome};
use imagegc::plan::{plan, Plan, Removal};
use imagegc::policy::Policy;
use imagegc::snapshot::{collect, DetailsCache, Snapshot, Tracked};
use imagegc::state::State;
use support::{ago, glob, now, policy, rule, secs, DAY, HOUR};
use tokio_util::sync::CancellationToken;

fn image(id: &str, tags: &[&str], layers: &[(&str, u64)]) -> FakeImage {
    fake::image(id, tags, ago(30 * DAY), layers)
}

fn container_of(image_id: &str, state: &str) -> Container {
    Container {
        image_ref: String::new(),
        labels: std::collections::BTreeMap::new(),
        id: "c0ffee00c0ffee00c0ffee00".to_string(),
        names: vec!["web".to_string()],
        image_id: image_id.to_string(),
        state: state.to_string(),
        created: ago(30 * DAY),
    }
}

/// Removes everything older than a week that `[safety]` allows.
fn stale_policy() -> Policy {
    let mut p = policy(vec![rule("stale").older_than(secs(7 * DAY)).build()]);
    p.safety.protect = vec![glob("keep/**")];
    p
}

/// A parent and its child, a dangling image, an image with one protected tag
/// out of two, a protected image sharing the parent's base layer, and an
/// image an exited container uses.
fn stocked_engine() -> FakeEngine {
    let engine = FakeEngine::new();
    engine.add_image(image(
        "sha256:parent",
        &["base/os:1"],
        &[("sha256:d-base", 1000)],
    ));
    let mut child = image(
        "sha256:child",
        &["app:1"],
        &[("sha256:d-base", 1000), ("sha256:d-app", 200)],
    );
    child.summary.parent_id = Some("sha256:parent".to_string());
    engine.add_image(child);
    engine.add_image(image("sha256:dangling", &[], &[("sha256:d-dangling", 50)]));
    engine.add_image(image(
        "sha256:tool",
        &["tool:1", "keep/tool:1"],
        &[("sha256:d-tool", 70)],
    ));
    engine.add_image(image(
        "sha256:pinned",
        &["keep/os:2"],
        &[("sha256:d-base", 1000), ("sha256:d-pinned", 300)],
    ));
    engine.add_image(image("sha256:used", &["web:1"], &[("sha256:d-web", 400)]));
    engine.add_container(container_of("sha256:used", "exited"));
    engine
}

/// Three old unrelated images `a:1`, `b:1`, `c:1` of 100, 200 and 300 bytes.
fn three_images() -> FakeEngine {
    let engine = FakeEngine::new();
    engine.add_image(image("sha256:a", &["a:1"], &[("sha256:d-a", 100)]));
    engine.add_image(image("sha256:b", &["b:1"], &[("sha256:d-b", 200)]));
    engine.add_image(image("sha256:c", &["c:1"], &[("sha256:d-c", 300)]));
    engine
}

async fn snapshot_of<E: Engine>(engine: &E) -> Snapshot {
    let no_disk: Arc<dyn DiskProbe> = Arc::new(FixedDisk::new(None));
    collect(engine, &no_disk, None, &mut DetailsCache::new(), &|_| {
        Tracked::default()
    })
    .await
    .expect("the fake engine answers")
}

async fn plan_for<E: Engine>(engine: &E, p: &Policy) -> (Snapshot, Plan) {
    let snap = snapshot_of(engine).await;
    let planned = plan(p, &snap, now());
    (snap, planned)
}

fn targets(plan: &Plan) -> Vec<String> {
    plan.removals
        .iter()
        .map(|r| r.target().to_string())
        .collect()
}

fn done_targets(report: &Report) -> Vec<String> {
    report
        .removed
        .iter()
        .map(|r| r.reference.clone().unwrap_or_else(|| r.image_id.clone()))
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// Execution.

#[tokio::test]
async fn a_plan_runs_exactly_as_planned_in_order_and_reclaims_the_predicted_bytes() {
    let engine = stocked_engine();
    let (snap, planned) = plan_for(&engine, &stale_policy()).await;
    assert_eq!(
        targets(&planned),
        vec!["app:1", "base/os:1", "sha256:dangling", "tool:1"],
        "child before parent; protected and in-use images are not planned"
    );

    let report = execute(&engine, &snap, &planned, &CancellationToken::new()).await;

    assert_eq!(engine.removals(), targets(&planned));
    assert_eq!(done_targets(&report), targets(&planned));
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(
        (report.skipped, report.cancelled, report.engine_lost),
        (0, false, false)
    );
    // The child's own layer and the dangling image's; the base layer stays
    // with the protected image that shares it.
    assert_eq!(planned.reclaim_bytes, 250);
    assert_eq!(report.reclaimed_bytes, planned.reclaim_bytes);
    // Counted from the layers the engine said it deleted.
    assert!(report.reclaimed_exact);
    let per_removal: Vec<u64> = report.removed.iter().map(|r| r.reclaimed_bytes).collect();
    let predicted: Vec<u64> = planned.removals.iter().map(|r| r.reclaim_bytes).collect();
    assert_eq!(per_removal, predicted);
    assert_eq!(report.deleted_images(), 3);
    assert_eq!(
        sorted(engine.image_ids()),
        vec!["sha256:pinned", "sha256:tool", "sha256:used"]
    );
    assert_eq!(
        sorted(engine.tags()),
        vec!["keep/os:2", "keep/tool:1", "web:1"]
    );
}

/// An engine whose removal answers list nothing deleted (as CRI's).
fn silent_about_layers(engine: &FakeEngine) {
    engine.set_capabilities(Capabilities {
        reports_deleted_layers: false,
        ..engine.capabilities()
    });
}

#[tokio::test]
async fn on_an_engine_that_reports_no_deleted_layers_the_reclaimed_bytes_are_the_ledgers_estimate_and_say_so(
) {
    let engine = stocked_engine();
    silent_about_layers(&engine);
    let (snap, planned) = plan_for(&engine, &stale_policy()).await;

    let report = execute(&engine, &snap, &planned, &CancellationToken::new()).await;

    assert_eq!(done_targets(&report), targets(&planned));
    assert!(
        report.removed.iter().all(|r| r.untagged.len() <= 1),
        "the engine answered only untags: {:?}",
        report.removed
    );
    assert_eq!(report.reclaimed_bytes, 250);
    assert!(!report.reclaimed_exact, "an estimate must be marked");
    // The JSON of `once` says so too.
    let json = imagegc::output::pass_json(&planned, &snap, Some(&report), false);
    assert_eq!(json["reclaimed_exact"], serde_json::json!(false), "{json}");
    assert_eq!(json["reclaimed_bytes"], serde_json::json!(250), "{json}");
    let per_removal: Vec<u64> = report.removed.iter().map(|r| r.reclaimed_bytes).collect();
    let predicted: Vec<u64> = planned.removals.iter().map(|r| r.reclaim_bytes).collect();
    assert_eq!(per_removal, predicted);
    // The deleted images come from the ledger too, so the state drops them.
    assert_eq!(report.deleted_images(), 3);
    assert_eq!(
        sorted(engine.image_ids()),
        vec!["sha256:pinned", "sha256:tool", "sha256:used"]
    );
}

#[tokio::test]
async fn the_estimate_counts_only_the_removals_the_engine_carried_out() {
    let engine = three_images();
    silent_about_layers(&engine);
    let (snap, planned) = plan_for(&engine, &stale_policy()).await;
    engine.fail_removal_of(
        "b:1",
        EngineError::Conflict("image is being used by running container 0123".into()),
    );

    let report = execute(&engine, &snap, &planned, &CancellationToken::new()).await;

    assert_eq!(done_targets(&report), vec!["a:1", "c:1"]);
    assert_eq!(report.reclaimed_bytes, 400, "not b:1's 200 bytes");
    assert!(!report.reclaimed_exact);
    assert_eq!(report.deleted_images(), 2);
}

#[tokio::test]
async fn a_conflict_is_reported_as_conflict_and_the_pass_goes_on_with_the_next() {
    let engine = three_images();
    let (snap, planned) = plan_for(&engine, &stale_policy()).await;
    engine.fail_removal_of(
        "b:1",
        EngineError::Conflict("image is being used by running container 0123".into()),
    );

    let report = execute(&engine, &snap, &planned, &CancellationToken::new()).await;

    assert_eq!(engine.removals(), vec!["a:1", "b:1", "c:1"]);
    assert_eq!(done_targets(&report), vec!["a:1", "c:1"]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].reference.as_deref(), Some("b:1"));
    assert_eq!(report.failed[0].kind, "conflict");
    assert_eq!(report.failed[0].policy, "stale");
    assert_eq!((report.skipped, report.engine_lost), (0, false));
    assert_eq!(report.reclaimed_bytes, 400);
    assert_eq!(engine.image_ids(), vec!["sha256:b"]);
}

#[tokio::test]
async fn an_image_already_gone_is_reported_as_not_found_and_the_pass_goes_on() {
    let engine = three_images();
    let (snap, planned) = plan_for(&engine, &stale_policy()).await;
    // Someone removes b:1 between the snapshot and the removal.
    engine.remove_image("b:1").await.expect("removed by hand");

    let report = execute(&engine, &snap, &planned, &CancellationToken::new()).await;

    assert_eq!(done_targets(&report), vec!["a:1", "c:1"]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].reference.as_deref(), Some("b:1"));
    assert_eq!(report.failed[0].kind, "not_found");
    assert_eq!((report.skipped, report.engine_lost), (0, false));
    assert_eq!(report.reclaimed_bytes, 400);
    assert!(engine.image_ids().is_empty());
}

#[tokio::test]
async fn a_lost_engine_stops_the_pass_and_counts_the_rest_as_skipped() {
    let engine = three_images();
    let (snap, planned) = plan_for(&engine, &stale_policy()).await;
    engine.fail_removal_of(
        "b:1",
        EngineError::Unavailable {
            address: "unix:///var/run/docker.sock".into(),
            reason: "connection refused".into(),
        },
    );

    let report = execute(&engine, &snap, &planned, &CancellationToken::new()).await;

    assert_eq!(engine.removals(), vec!["a:1", "b:1"], "c:1 is never tried");
    assert_eq!(done_targets(&report), vec!["a:1"]);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].kind, "engine");
    assert!(report.engine_lost);
    assert_eq!(report.skipped, 1);
    assert_eq!(report.reclaimed_bytes, 100);
}

#[tokio::test]
async fn a_pass_cancelled_before_the_first_removal_removes_nothing() {
    let engine = three_images();
    let (snap, planned) = plan_for(&engine, &stale_policy()).await;
    let cancel = CancellationToken::new();
    cancel.cancel();

    let report = execute(&engine, &snap, &planned, &cancel).await;

    assert!(report.cancelled);
    assert_eq!(report.skipped, 3);
    assert!(report.removed.is_empty() && report.failed.is_empty());
    assert_eq!(report.reclaimed_bytes, 0);
    assert_eq!(engine.calls.remove_image.load(Ordering::Relaxed), 0);
    assert_eq!(engine.image_ids().len(), 3);
}

#[tokio::test]
async fn a_pass_cancelled_during_a_removal_finishes_it_and_stops_before_the_next() {
    let cancel = CancellationToken::new();
    // SIGTERM arrives while the second removal is in flight.
    let engine = three_images();
    let token = cancel.clone();
    engine.on_remove(move |n| {
        if n == 2 {
            token.cancel();
        }
    });
    let (snap, planned) = plan_for(&engine, &stale_policy()).await;

    let report = execute(&engine, &snap, &planned, &cancel).await;

    assert!(report.cancelled);
    assert_eq!(engine.removals(), vec!["a:1", "b:1"]);
    // The removal in flight when the signal came completed and is accounted.
    assert_eq!(done_targets(&report), vec!["a:1", "b:1"]);
    assert_eq!(report.removed[1].deleted_images, vec!["sha256:b"]);
    assert_eq!(report.removed[1].reclaimed_bytes, 200);
    assert_eq!(report.skipped, 1);
    assert_eq!(report.reclaimed_bytes, 300);
    assert_eq!(engine.image_ids(), vec!["sha256:c"]);
}

/// `Engine::remove_image` takes only a target: there is no force parameter
/// to pass, so the executor cannot force a removal (and `docker.rs` sends
/// `force=false`). What can go wrong is asking for something not planned,
/// such as retrying by image ID after a conflict or pruning a parent.
#[tokio::test]
async fn remove_image_is_only_ever_called_with_planned_targets_even_when_removals_fail() {
    let engine = stocked_engine();
    let (snap, planned) = plan_for(&engine, &stale_policy()).await;
    engine.fail_removal_of("app:1", EngineError::Conflict("in use now".into()));

    let report = execute(&engine, &snap, &planned, &CancellationToken::new()).await;

    assert_eq!(engine.removals(), targets(&planned));
    let planned_targets: HashSet<&str> = planned.removals.iter().map(Removal::target).collect();
    for target in engine.removals() {
        assert!(planned_targets.contains(target.as_str()), "{target}");
    }
    let failed: Vec<(Option<&str>, &str)> = report
        .failed
        .iter()
        .map(|f| (f.reference.as_deref(), f.kind))
        .collect();
    assert_eq!(failed, vec![(Some("app:1"), "conflict")]);
    // The child stayed, so removing its parent's tag only untags it; nothing
    // else (the parent's ID, say) is tried in its place.
    let parent = report
        .removed
        .iter()
        .find(|r| r.reference.as_deref() == Some("base/os:1"))
        .expect("the parent's tag was removed");
    assert!(parent.deleted_images.is_empty());
    assert_eq!(parent.reclaimed_bytes, 0);
    for kept in [
        "sha256:child",
        "sha256:parent",
        "sha256:used",
        "sha256:pinned",
    ] {
        assert!(engine.image_ids().contains(&kept.to_string()), "{kept}");
    }
}

// ---------------------------------------------------------------------------
// Whole passes.

async fn run_pass<E: Engine>(engine: &E, p: &Policy, memory: &mut Memory, mode: Mode) -> Outcome {
    pass::run(
        engine,
        p,
        None,
        memory,
        mode,
        now(),
        &CancellationToken::new(),
    )
    .await
    .expect("the fake engine answers")
}

fn dangling_policy() -> Policy {
    policy(vec![rule("dangling")
        .dangling(true)
        .older_than(secs(HOUR))
        .build()])
}

#[tokio::test]
async fn a_second_pass_over_an_unchanged_engine_makes_no_inspect_calls() {
    let engine = stocked_engine();
    // One memory (inspect cache and state) across passes, as the daemon keeps it.
    let mut memory = Memory::new(State::fresh(ago(DAY)));
    let p = dangling_policy();

    run_pass(&engine, &p, &mut memory, Mode::Plan).await;
    assert_eq!(engine.calls.image_details.load(Ordering::Relaxed), 6);

    let again = run_pass(&engine, &p, &mut memory, Mode::Plan).await;
    assert_eq!(engine.calls.image_details.load(Ordering::Relaxed), 6);
    assert_eq!(again.snapshot.images.len(), 6);
    assert_eq!(memory.cache.len(), 6);
    assert_eq!(
        again.snapshot.image_bytes(),
        2020,
        "cached facts still size the layers"
    );
}

#[tokio::test]
async fn a_new_image_between_passes_costs_exactly_one_inspect_call() {
    let engine = stocked_engine();
    let mut memory = Memory::new(State::fresh(ago(DAY)));
    let p = dangling_policy();
    run_pass(&engine, &p, &mut memory, Mode::Plan).await;
    let before = engine.calls.image_details.load(Ordering::Relaxed);

    engine.add_image(image("sha256:new", &["new:1"], &[("sha256:d-new", 5)]));
    run_pass(&engine, &p, &mut memory, Mode::Plan).await;

    assert_eq!(
        engine.calls.image_details.load(Ordering::Relaxed),
        before + 1
    );
}

/// An engine with a dangling image and a tagged one, both there when
/// tracking began a week ago, plus an old dangling image pulled since.
fn tracked_engine() -> (FakeEngine, State) {
    let engine = FakeEngine::new();
    engine.add_image(image("sha256:old", &[], &[("sha256:d-old", 10)]));
    engine.add_image(image(
        "sha256:keeper",
        &["app:1"],
        &[("sha256:d-keeper", 20)],
    ));
    let state = State::baseline(["sha256:old", "sha256:keeper"], ago(7 * DAY));
    engine.add_image(image("sha256:new", &[], &[("sha256:d-new", 30)]));
    (engine, state)
}

#[tokio::test]
async fn a_plan_pass_does_not_change_the_state() {
    let (engine, state) = tracked_engine();
    let before = state.clone();
    let mut memory = Memory::new(state);

    let outcome = run_pass(&engine, &dangling_policy(), &mut memory, Mode::Plan).await;

    assert_eq!(memory.state, before);
    assert_eq!(targets(&outcome.plan), vec!["sha256:old"]);
    assert!(outcome.report.is_none());
    assert_eq!(engine.calls.remove_image.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn an_execute_pass_records_first_seen_for_new_images_and_drops_deleted_ones() {
    let (engine, state) = tracked_engine();
    let mut memory = Memory::new(state);

    let outcome = run_pass(&engine, &dangling_policy(), &mut memory, Mode::Execute).await;

    // The new image is 30 days old but was first seen now: the grace period keeps it.
    assert_eq!(engine.removals(), vec!["sha256:old"]);
    assert!(outcome.plan.kept.iter().any(|k| k.image_id == "sha256:new"
        && matches!(k.reason, imagegc::plan::KeptBecause::TooYoung { .. })));
    let state = &memory.state;
    let ids: Vec<&str> = state.images.keys().map(String::as_str).collect();
    assert_eq!(ids, vec!["sha256:keeper", "sha256:new"]);
    assert_eq!(state.images["sha256:new"].first_seen, Some(now()));
    assert_eq!(state.images["sha256:keeper"].first_seen, None);
    assert_eq!(outcome.report.expect("executed").reclaimed_bytes, 10);
}

#[tokio::test]
async fn a_dry_run_pass_records_first_seen_but_removes_nothing() {
    let (engine, state) = tracked_engine();
    let mut memory = Memory::new(state);

    let outcome = run_pass(&engine, &dangling_policy(), &mut memory, Mode::DryRun).await;

    assert_eq!(targets(&outcome.plan), vec!["sha256:old"]);
    assert!(outcome.report.is_none());
    assert_eq!(engine.calls.remove_image.load(Ordering::Relaxed), 0);
    assert_eq!(memory.state.images["sha256:new"].first_seen, Some(now()));
    assert_eq!(memory.state.images.len(), 3);
}

#[tokio::test]
async fn a_pass_reads_the_engines_disk_and_relieves_pressure_down_to_the_low_watermark() {
    use imagegc::engine::DiskUsage;
    use imagegc::policy::Threshold;

    let engine = three_images();
    // 900 of 1000 bytes used: above 85 %; freeing a:1 (100) leaves 80 %,
    // freeing b:1 (200) too leaves 60 %, at or below 70 %.
    engine.set_capabilities(Capabilities {
        root_dir_on_host: true,
        ..engine.capabilities()
    });
    let disk = Arc::new(FixedDisk::new(Some(DiskUsage {
        total_bytes: 1000,
        used_bytes: 900,
        ..DiskUsage::default()
    })));
    let p = policy(vec![rule("pressure")
        .disk(Threshold::Ratio(0.85), Threshold::Ratio(0.70))
        .build()]);
    let mut memory = Memory::new(State::fresh(ago(DAY))).with_disk_probe(disk);
    let outcome = pass::run(
        &engine,
        &p,
        Some("/var/lib/docker"),
        &mut memory,
        Mode::Execute,
        now(),
        &CancellationToken::new(),
    )
    .await
    .expect("the fake engine answers");

    assert_eq!(targets(&outcome.plan), vec!["a:1", "b:1"]);
    let report = outcome.report.expect("executed");
    assert_eq!(report.reclaimed_bytes, 300);
    assert_eq!(engine.image_ids(), vec!["sha256:c"]);
}

#[tokio::test]
async fn a_pass_on_an_engine_whose_root_dir_is_not_on_this_host_probes_no_disk() {
    use imagegc::engine::DiskUsage;

    let engine = three_images();
    engine.set_capabilities(Capabilities {
        root_dir_on_host: false,
        ..engine.capabilities()
    });
    let disk = Arc::new(FixedDisk::new(Some(DiskUsage {
        total_bytes: 1000,
        used_bytes: 900,
        ..DiskUsage::default()
    })));
    let mut memory = Memory::new(State::fresh(ago(DAY))).with_disk_probe(disk);
    let outcome = pass::run(
        &engine,
        &dangling_policy(),
        Some("/var/lib/docker"),
        &mut memory,
        Mode::Plan,
        now(),
        &CancellationToken::new(),
    )
    .await
    .expect("the fake engine answers");

    assert_eq!(outcome.snapshot.disk, None);
    // The snapshot carries what the engine declared, for the planner.
    assert_eq!(outcome.snapshot.capabilities, engine.capabilities());
}

// ---------------------------------------------------------------------------
// Build-cache records. The planner's record part is written beside this, so
// these plans are made by hand: the executor runs whatever `plan.records`
// says, in order.

use imagegc::engine::{CacheRecord, CacheRemoval, DeleteItem, EngineInfo, ImageFacts};
use imagegc::gc::plan::{Reason, Reasons, RecordRemoval};

fn record(id: &str, parents: &[&str], size: u64) -> CacheRecord {
    fake::cache_record(id, parents, size, ago(30 * DAY))
}

/// Removal of record `id` of `snap` by policy `build-cache`.
fn record_removal(snap: &Snapshot, id: &str) -> RecordRemoval {
    RecordRemoval {
        record: snap.cache.by_id[id],
        record_id: id.to_string(),
        policy: "build-cache".to_string(),
        reason: Reasons(vec![Reason::OlderThan {
            age: chrono::TimeDelta::days(30),
            limit: chrono::TimeDelta::days(2),
        }]),
        reclaim_bytes: 0,
    }
}

/// The engine's images and build cache as one snapshot.
async fn snapshot_with_cache(engine: &FakeEngine) -> Snapshot {
    let records = engine
        .build_cache()
        .await
        .expect("the fake lists its cache");
    snapshot_of(engine).await.with_build_cache(records)
}

/// What the ledger says the record removals free, replayed in plan order
/// after the plan's image removals (all of which the engine carries out in
/// these tests): the prediction the report must equal.
fn ledger_bytes(snap: &Snapshot, plan: &Plan) -> Vec<u64> {
    let mut ledger = imagegc::accounting::Ledger::new(snap);
    for r in &plan.removals {
        if r.reference.is_some() {
            ledger.remove_reference(r.image);
        } else {
            ledger.remove_untagged(r.image);
        }
    }
    plan.records
        .iter()
        .map(|r| ledger.remove_record(r.record).freed)
        .collect()
}

#[tokio::test]
async fn record_removals_run_after_the_images_children_first_one_call_each_and_report_the_ledgers_bytes(
) {
    let engine = three_images();
    engine.add_cache_record(record("parentrecord0001", &[], 300));
    engine.add_cache_record(record("childrecord00002", &["parentrecord0001"], 200));
    engine.add_cache_record(record("otherrecord00003", &[], 999));
    let snap = snapshot_with_cache(&engine).await;
    let mut planned = plan(&stale_policy(), &snap, now());
    planned.records = vec![
        record_removal(&snap, "childrecord00002"),
        record_removal(&snap, "parentrecord0001"),
    ];

    let report = execute(&engine, &snap, &planned, &CancellationToken::new()).await;

    assert_eq!(engine.removals(), vec!["a:1", "b:1", "c:1"]);
    assert_eq!(
        engine.cache_removals(),
        vec!["childrecord00002", "parentrecord0001"],
        "one call per planned record, in plan order, nothing else"
    );
    assert_eq!(engine.cache_ids(), vec!["otherrecord00003"]);
    let removed: Vec<(&str, &str)> = report
        .records_removed
        .iter()
        .map(|r| (r.record_id.as_str(), r.policy.as_str()))
        .collect();
    assert_eq!(
        removed,
        vec![
            ("childrecord00002", "build-cache"),
            ("parentrecord0001", "build-cache")
        ]
    );
    assert_eq!(
        report
            .records_removed
            .iter()
            .map(|r| r.engine_reported_bytes)
            .collect::<Vec<_>>(),
        vec![200, 300],
        "the engine's own figure is kept, as information"
    );
    let per_record: Vec<u64> = report
        .records_removed
        .iter()
        .map(|r| r.reclaimed_bytes)
        .collect();
    assert_eq!(per_record, ledger_bytes(&snap, &planned));
    assert_eq!(
        report.reclaimed_bytes,
        600 + report.record_bytes(),
        "images' reported layers plus the records' ledger bytes"
    );
    assert!(report.records_not_deleted.is_empty() && report.records_failed.is_empty());
    assert_eq!(
        (report.skipped, report.engine_lost, report.cancelled),
        (0, false, false)
    );
}

#[tokio::test]
async fn a_record_the_engine_does_not_delete_is_counted_and_the_pass_goes_on() {
    let engine = FakeEngine::new();
    engine.add_cache_record(record("busyrecord000001", &[], 100));
    engine.add_cache_record(record("freerecord000002", &[], 50));
    let snap = snapshot_with_cache(&engine).await;
    // A build started using it after the snapshot.
    engine.set_cache_in_use("busyrecord000001", true);
    let planned = Plan {
        records: vec![
            record_removal(&snap, "busyrecord000001"),
            record_removal(&snap, "freerecord000002"),
        ],
        ..Plan::default()
    };

    let report = execute(&engine, &snap, &planned, &CancellationToken::new()).await;

    // Asked again once after a round that deleted another record, then
    // reported once.
    assert_eq!(
        engine.cache_removals(),
        vec!["busyrecord000001", "freerecord000002", "busyrecord000001"]
    );
    assert_eq!(report.records_not_deleted.len(), 1);
    assert_eq!(report.records_not_deleted[0].record_id, "busyrecord000001");
    assert_eq!(report.records_not_deleted[0].policy, "build-cache");
    assert_eq!(report.records_removed.len(), 1);
    assert_eq!(report.records_removed[0].record_id, "freerecord000002");
    assert!(report.records_failed.is_empty() && report.failed.is_empty());
    assert!(!report.engine_lost, "not deleted is a normal outcome");
    assert_eq!(engine.cache_ids(), vec!["busyrecord000001"]);
    let json = imagegc::output::pass_json(&planned, &snap, Some(&report), false);
    assert_eq!(
        json["records_not_deleted"],
        serde_json::json!([{"record_id": "busyrecord000001", "policy": "build-cache"}]),
        "{json}"
    );
}

#[tokio::test]
async fn an_engine_without_build_cache_stops_the_record_removals_after_one_call_and_is_no_failure()
{
    let engine = three_images();
    engine.add_cache_record(record("onerecord0000001", &[], 100));
    engine.add_cache_record(record("tworecord0000002", &[], 100));
    let snap = snapshot_with_cache(&engine).await;
    engine.set_capabilities(Capabilities {
        build_cache: false,
        ..engine.capabilities()
    });
    let mut planned = plan(&stale_policy(), &snap, now());
    planned.records = vec![
        record_removal(&snap, "onerecord0000001"),
        record_removal(&snap, "tworecord0000002"),
    ];

    let report = execute(&engine, &snap, &planned, &CancellationToken::new()).await;

    assert_eq!(done_targets(&report), vec!["a:1", "b:1", "c:1"]);
    assert_eq!(engine.calls.remove_cache_record.load(Ordering::Relaxed), 1);
    assert_eq!(report.records_unsupported, 2);
    assert!(report.records_removed.is_empty() && report.records_failed.is_empty());
    assert!(!report.engine_lost && !report.cancelled);
    assert_eq!(report.skipped, 0);
    assert_eq!(report.reclaimed_bytes, 600);
    let summary = pass::PassSummary::of(
        pass::Trigger::Schedule,
        &Outcome {
            snapshot: snap.clone(),
            plan: planned.clone(),
            report: Some(report),
            orphans: None,
        },
        now(),
        now(),
        std::time::Duration::from_secs(1),
    );
    assert_eq!(summary.outcome, pass::PassOutcome::Success);
}

/// A fake engine that cancels `token` while its `n`th record removal is in
/// flight (the removal still completes).
struct CancelOnRecord<'a> {
    inner: &'a FakeEngine,
    token: CancellationToken,
    n: usize,
}

impl Engine for CancelOnRecord<'_> {
    async fn info(&self) -> Result<EngineInfo, EngineError> {
        self.inner.info().await
    }
    async fn list_images(&self) -> Result<Vec<imagegc::engine::ImageSummary>, EngineError> {
        self.inner.list_images().await
    }
    async fn list_containers(&self) -> Result<Vec<Container>, EngineError> {
        self.inner.list_containers().await
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn image_details(&self, image_id: &str) -> Result<ImageFacts, EngineError> {
        self.inner.image_details(image_id).await
    }
    async fn remove_image(&self, target: &str) -> Result<Vec<DeleteItem>, EngineError> {
        self.inner.remove_image(target).await
    }
    async fn remove_cache_record(&self, id: &str) -> Result<CacheRemoval, EngineError> {
        let answer = self.inner.remove_cache_record(id).await;
        if self.inner.calls.remove_cache_record.load(Ordering::Relaxed) == self.n {
            self.token.cancel();
        }
        answer
    }
}

#[tokio::test]
async fn a_pass_cancelled_during_a_record_removal_finishes_it_and_stops_before_the_next() {
    let engine = FakeEngine::new();
    for id in ["arecord000000001", "brecord000000002", "crecord000000003"] {
        engine.add_cache_record(record(id, &[], 10));
    }
    let snap = snapshot_with_cache(&engine).await;
    let planned = Plan {
        records: ["arecord000000001", "brecord000000002", "crecord000000003"]
            .iter()
            .map(|id| record_removal(&snap, id))
            .collect(),
        ..Plan::default()
    };
    let cancel = CancellationToken::new();
    let wrapped = CancelOnRecord {
        inner: &engine,
        token: cancel.clone(),
        n: 2,
    };

    let report = execute(&wrapped, &snap, &planned, &cancel).await;

    assert!(report.cancelled);
    assert_eq!(
        engine.cache_removals(),
        vec!["arecord000000001", "brecord000000002"]
    );
    assert_eq!(
        report.records_removed.len(),
        2,
        "the one in flight is accounted"
    );
    assert_eq!(report.skipped, 1);
    assert_eq!(engine.cache_ids(), vec!["crecord000000003"]);
}

#[tokio::test]
async fn a_pass_cancelled_during_the_last_image_removal_attempts_no_record() {
    let cancel = CancellationToken::new();
    let engine = three_images();
    let token = cancel.clone();
    engine.on_remove(move |n| {
        if n == 3 {
            token.cancel();
        }
    });
    engine.add_cache_record(record("onerecord0000001", &[], 100));
    let snap = snapshot_with_cache(&engine).await;
    let mut planned = plan(&stale_policy(), &snap, now());
    planned.records = vec![record_removal(&snap, "onerecord0000001")];

    let report = execute(&engine, &snap, &planned, &cancel).await;

    assert!(report.cancelled);
    assert_eq!(done_targets(&report), vec!["a:1", "b:1", "c:1"]);
    assert_eq!(engine.calls.remove_cache_record.load(Ordering::Relaxed), 0);
    assert_eq!(report.skipped, 1, "the record counts as skipped");
}

#[tokio::test]
async fn a_lost_engine_during_record_removals_stops_the_pass() {
    let engine = FakeEngine::new();
    engine.add_cache_record(record("onerecord0000001", &[], 100));
    engine.add_cache_record(record("tworecord0000002", &[], 100));
    let snap = snapshot_with_cache(&engine).await;
    let planned = Plan {
        records: vec![
            record_removal(&snap, "onerecord0000001"),
            record_removal(&snap, "tworecord0000002"),
        ],
        ..Plan::default()
    };
    engine.fail_everything(Some(EngineError::Unavailable {
        address: "unix:///var/run/docker.sock".into(),
        reason: "connection refused".into(),
    }));

    let report = execute(&engine, &snap, &planned, &CancellationToken::new()).await;

    assert!(report.engine_lost);
    assert_eq!(report.records_failed.len(), 1);
    assert_eq!(report.records_failed[0].kind, "engine");
    assert_eq!(report.skipped, 1);
    assert_eq!(engine.calls.remove_cache_record.load(Ordering::Relaxed), 1);
}

/// A shared record holding an image's layer: the engine (this fake knows no
/// sharing) lists the layer as deleted with the image, so the image removal
/// reports it, and the record removal that released it to the disk must not
/// count it again: every byte once, whichever removal the ledger gives it.
#[tokio::test]
async fn bytes_of_a_layer_a_record_holds_are_counted_once_across_the_image_and_the_record() {
    let engine = FakeEngine::new();
    engine.add_image(image(
        "sha256:built",
        &["app:1"],
        &[("sha256:d-built", 4000)],
    ));
    let mut shared = record("sharedrecord0001", &[], 4000);
    shared.shared = true;
    engine.add_cache_record(shared);
    engine.add_cache_record(record("ownrecord0000002", &[], 0));
    let mut snap = snapshot_with_cache(&engine).await;
    let r = snap.cache.by_id["sharedrecord0001"];
    let layer = snap.images[0].layers[0];
    // The inventory's mapping: the record shares the image's only layer,
    // and frees nothing by itself.
    snap.cache.holds[r] = vec![layer];
    snap.cache.own_bytes[r] = 0;
    let mut planned = plan(&stale_policy(), &snap, now());
    assert_eq!(targets(&planned), vec!["app:1"]);
    planned.records = vec![record_removal(&snap, "sharedrecord0001")];

    let report = execute(&engine, &snap, &planned, &CancellationToken::new()).await;

    assert_eq!(
        report.removed[0].reclaimed_bytes, 4000,
        "the engine listed the layer"
    );
    assert_eq!(report.records_removed.len(), 1);
    assert_eq!(
        report.records_removed[0].reclaimed_bytes, 0,
        "already counted with the image removal"
    );
    assert_eq!(report.reclaimed_bytes, 4000);
}

mod common;

/// On a private engine (removals change the engine's global build cache):
/// a plan that names a parent record before its child: the engine refuses
/// the parent while the child exists (`CachesDeleted` without it, a normal
/// outcome), deletes the child, and deletes the parent when the pass asks
/// again after that round. The real engine agrees with the fake on what
/// `not_deleted` means and on what a second ask does.
#[tokio::test]
async fn on_a_real_engine_a_parent_named_before_its_child_is_refused_then_removed_after_it() {
    let private = common::private_engine::PrivateEngine::start();
    let a = common::random_hex(30_000);
    let b = common::random_hex(20_000);
    private.build(
        "imagegc-executor-cache:1",
        &[
            (
                "Dockerfile",
                b"FROM scratch\nCOPY a.bin /a.bin\nCOPY b.bin /b.bin\n",
            ),
            ("a.bin", a.as_bytes()),
            ("b.bin", b.as_bytes()),
        ],
    );
    let docker = imagegc::docker::Docker::connect(&private.address())
        .await
        .unwrap_or_else(|e| panic!("connect to the private engine: {e}\n{}", private.log_text()));
    let records = docker.build_cache().await.expect("list the build cache");
    let child = records
        .iter()
        .find(|r| !r.parents.is_empty())
        .unwrap_or_else(|| panic!("a record with a parent after the build: {records:?}"))
        .clone();
    let parent = child.parents[0].clone();
    let snap = snapshot_of(&docker).await.with_build_cache(records);
    let wrong_order = Plan {
        records: vec![
            record_removal(&snap, &parent),
            record_removal(&snap, &child.id),
        ],
        ..Plan::default()
    };

    let report = execute(&docker, &snap, &wrong_order, &CancellationToken::new()).await;

    let removed: Vec<&str> = report
        .records_removed
        .iter()
        .map(|r| r.record_id.as_str())
        .collect();
    assert_eq!(
        removed,
        vec![child.id.as_str(), parent.as_str()],
        "{report:?}"
    );
    assert!(report.records_not_deleted.is_empty(), "{report:?}");
    assert!(report.records_failed.is_empty() && !report.engine_lost);
    let left = docker.build_cache().await.expect("list the build cache");
    assert!(
        !left.iter().any(|r| r.id == parent || r.id == child.id),
        "{left:?}"
    );
}

// ---------------------------------------------------------------------------
// Stopped containers (issue 9). The in-memory engine here is wrapped so each
// container removal can be scripted (a 409, a 404, a lost engine) and every
// removal call, container or image, lands in one log in call order.

mod containers {
    use super::*;
    use imagegc::engine::{DeleteItem, EngineInfo};
    use imagegc::gc::plan::{ContainerRemoval, Reason, Reasons};
    use imagegc::snapshot::ImageFacts;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A [`FakeEngine`] whose container removals follow a script.
    struct Host {
        inner: FakeEngine,
        /// Container ID → the error its removal fails with.
        script: Mutex<HashMap<String, EngineError>>,
        /// `container <id>` / `image <target>`, in call order.
        log: Mutex<Vec<String>>,
        /// Cancelled right after the first container removal, when set.
        cancel_after_first: Option<CancellationToken>,
    }

    impl Host {
        fn new(inner: FakeEngine) -> Self {
            Self {
                inner,
                script: Mutex::new(HashMap::new()),
                log: Mutex::new(Vec::new()),
                cancel_after_first: None,
            }
        }

        fn fail(&self, id: &str, err: EngineError) {
            self.script
                .lock()
                .expect("script")
                .insert(id.to_string(), err);
        }

        fn log(&self) -> Vec<String> {
            self.log.lock().expect("log").clone()
        }
    }

    impl Engine for Host {
        async fn info(&self) -> Result<EngineInfo, EngineError> {
            self.inner.info().await
        }
        async fn list_images(&self) -> Result<Vec<imagegc::engine::ImageSummary>, EngineError> {
            self.inner.list_images().await
        }
        async fn list_containers(&self) -> Result<Vec<Container>, EngineError> {
            self.inner.list_containers().await
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        async fn image_details(&self, image_id: &str) -> Result<ImageFacts, EngineError> {
            self.inner.image_details(image_id).await
        }
        async fn remove_image(&self, target: &str) -> Result<Vec<DeleteItem>, EngineError> {
            self.log
                .lock()
                .expect("log")
                .push(format!("image {target}"));
            self.inner.remove_image(target).await
        }
        async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
            self.log
                .lock()
                .expect("log")
                .push(format!("container {id}"));
            let scripted = self.script.lock().expect("script").remove(id);
            if let Some(cancel) = &self.cancel_after_first {
                cancel.cancel();
            }
            if let Some(err) = scripted {
                return Err(err);
            }
            self.inner.remove_container(id);
            Ok(())
        }
    }

    fn stopped(id: &str, name: &str, image_id: &str) -> Container {
        Container {
            image_ref: "ci/job".to_string(),
            labels: std::collections::BTreeMap::new(),
            id: id.to_string(),
            names: vec![name.to_string()],
            image_id: image_id.to_string(),
            state: "exited".to_string(),
            created: ago(3 * DAY),
        }
    }

    /// `ci/job:1` (500 bytes) pinned by `ci-job-1`, `ci/job:2` (700) pinned by
    /// `ci-job-2`, and the unused `a:1` (100).
    fn ci_host() -> Host {
        let engine = FakeEngine::new();
        engine.add_image(image("sha256:ci1", &["ci/job:1"], &[("sha256:d-ci1", 500)]));
        engine.add_image(image("sha256:ci2", &["ci/job:2"], &[("sha256:d-ci2", 700)]));
        engine.add_image(image("sha256:a", &["a:1"], &[("sha256:d-a", 100)]));
        engine.add_container(stopped("c1c1c1c1c1c1", "ci-job-1", "sha256:ci1"));
        engine.add_container(stopped("c2c2c2c2c2c2", "ci-job-2", "sha256:ci2"));
        Host::new(engine)
    }

    /// The snapshot of `host` with the details collect would read (finish
    /// times, writable layers of 40 and 60 bytes, or none for `no_size`), and
    /// the plan the planner makes of it: both containers, then the images they
    /// unpin, then `a:1`.
    async fn planned(host: &Host, no_size: Option<&str>) -> (Snapshot, Plan) {
        let mut snap = snapshot_of(host).await;
        for c in &mut snap.containers {
            let size = if Some(c.container.id.as_str()) == no_size {
                None
            } else if c.container.id.starts_with("c1") {
                Some(40)
            } else {
                Some(60)
            };
            c.details = Some(imagegc::engine::ContainerDetails {
                started_at: Some(ago(2 * DAY)),
                finished_at: Some(ago(DAY)),
                restart_policy: "no".to_string(),
                size_rw: size,
                ..imagegc::engine::ContainerDetails::default()
            });
        }
        let index = |id: &str| {
            snap.containers
                .iter()
                .position(|c| c.container.id == id)
                .expect("listed")
        };
        let image = |id: &str| snap.images.iter().position(|i| i.id == id).expect("listed");
        let container = |id: &str, name: &str, bytes: u64, unpins: usize| ContainerRemoval {
            container: index(id),
            container_id: id.to_string(),
            name: name.to_string(),
            policy: "finished-ci-jobs".to_string(),
            reason: Reasons(vec![Reason::ExitedFor {
                idle: chrono::TimeDelta::days(1),
                limit: chrono::TimeDelta::hours(6),
                since: "finished",
            }]),
            reclaim_bytes: bytes,
            unpins: vec![unpins],
        };
        let removal = |id: &str, tag: &str, bytes: u64, by: &[&str]| Removal {
            image: image(id),
            image_id: id.to_string(),
            reference: Some(tag.to_string()),
            policy: "stale".to_string(),
            reason: Reasons(vec![Reason::OlderThan {
                age: chrono::TimeDelta::days(30),
                limit: chrono::TimeDelta::days(7),
            }]),
            reclaim_bytes: bytes,
            deletes_image: true,
            unpinned_by: by.iter().map(ToString::to_string).collect(),
        };
        let plan = Plan {
            containers: vec![
                container("c1c1c1c1c1c1", "ci-job-1", 40, image("sha256:ci1")),
                container("c2c2c2c2c2c2", "ci-job-2", 60, image("sha256:ci2")),
            ],
            removals: vec![
                removal("sha256:ci1", "ci/job:1", 500, &["ci-job-1"]),
                removal("sha256:ci2", "ci/job:2", 700, &["ci-job-2"]),
                removal("sha256:a", "a:1", 100, &[]),
            ],
            reclaim_bytes: 40 + 60 + 500 + 700 + 100,
            ..Plan::default()
        };
        (snap, plan)
    }

    #[tokio::test]
    async fn containers_are_removed_first_one_call_each_then_the_images_they_unpinned() {
        let host = ci_host();
        let (snap, plan) = planned(&host, None).await;

        let report = execute(&host, &snap, &plan, &CancellationToken::new()).await;

        assert_eq!(
            host.log(),
            vec![
                "container c1c1c1c1c1c1",
                "container c2c2c2c2c2c2",
                "image ci/job:1",
                "image ci/job:2",
                "image a:1"
            ]
        );
        let removed: Vec<(&str, u64)> = report
            .containers_removed
            .iter()
            .map(|c| (c.name.as_str(), c.reclaimed_bytes))
            .collect();
        assert_eq!(removed, vec![("ci-job-1", 40), ("ci-job-2", 60)]);
        assert_eq!(report.containers_removed[0].policy, "finished-ci-jobs");
        assert_eq!(done_targets(&report), vec!["ci/job:1", "ci/job:2", "a:1"]);
        assert_eq!(report.container_bytes(), 100);
        assert_eq!(report.reclaimed_bytes, 100 + 500 + 700 + 100);
        assert!(report.reclaimed_exact, "SizeRw is the engine's own figure");
        assert!(report.failed.is_empty() && report.pinned_skipped.is_empty());
        assert!(host.inner.image_ids().is_empty());
    }

    #[tokio::test]
    async fn a_conflict_on_a_container_is_normal_and_the_image_it_pins_waits_for_the_next_pass() {
        let host = ci_host();
        let (snap, plan) = planned(&host, None).await;
        host.fail(
            "c2c2c2c2c2c2",
            EngineError::Conflict("container is running again".into()),
        );

        let report = execute(&host, &snap, &plan, &CancellationToken::new()).await;

        assert_eq!(
            host.log(),
            vec![
                "container c1c1c1c1c1c1",
                "container c2c2c2c2c2c2",
                "image ci/job:1",
                "image a:1"
            ],
            "ci/job:2 is not even tried"
        );
        assert_eq!(report.containers_removed.len(), 1);
        assert_eq!(report.containers_not_removed.len(), 1);
        let not = &report.containers_not_removed[0];
        assert_eq!(
            (not.name.as_str(), not.kind, not.policy.as_str()),
            ("ci-job-2", "conflict", "finished-ci-jobs")
        );
        assert_eq!(report.pinned_skipped.len(), 1);
        let pinned = &report.pinned_skipped[0];
        assert_eq!(
            (pinned.reference.as_deref(), pinned.container.as_str()),
            (Some("ci/job:2"), "ci-job-2")
        );
        assert!(report.failed.is_empty(), "a pinned image is no failure");
        assert!(report.containers_failed.is_empty());
        assert_eq!((report.skipped, report.engine_lost), (0, false));
        assert_eq!(report.reclaimed_bytes, 40 + 500 + 100);
        assert_eq!(host.inner.image_ids(), vec!["sha256:ci2"]);
    }

    #[tokio::test]
    async fn a_container_already_gone_is_not_found_and_its_image_waits_too() {
        let host = ci_host();
        let (snap, plan) = planned(&host, None).await;
        host.fail(
            "c1c1c1c1c1c1",
            EngineError::NotFound("no such container".into()),
        );

        let report = execute(&host, &snap, &plan, &CancellationToken::new()).await;

        assert_eq!(report.containers_not_removed[0].kind, "not_found");
        assert_eq!(
            report.pinned_skipped[0].reference.as_deref(),
            Some("ci/job:1")
        );
        assert_eq!(done_targets(&report), vec!["ci/job:2", "a:1"]);
        assert_eq!(report.reclaimed_bytes, 60 + 700 + 100);
    }

    #[tokio::test]
    async fn a_lost_engine_at_a_container_stops_the_pass_before_any_image() {
        let host = ci_host();
        let (snap, plan) = planned(&host, None).await;
        host.fail(
            "c1c1c1c1c1c1",
            EngineError::Unavailable {
                address: "unix:///var/run/docker.sock".into(),
                reason: "connection refused".into(),
            },
        );

        let report = execute(&host, &snap, &plan, &CancellationToken::new()).await;

        assert_eq!(host.log(), vec!["container c1c1c1c1c1c1"]);
        assert!(report.engine_lost);
        assert_eq!(report.containers_failed.len(), 1);
        assert_eq!(report.containers_failed[0].kind, "engine");
        assert_eq!(report.skipped, 1 + 3, "one container and three images");
        assert_eq!(report.reclaimed_bytes, 0);
    }

    #[tokio::test]
    async fn a_pass_cancelled_during_a_container_removal_finishes_it_and_stops_before_the_next() {
        let mut host = ci_host();
        let cancel = CancellationToken::new();
        host.cancel_after_first = Some(cancel.clone());
        let (snap, plan) = planned(&host, None).await;

        let report = execute(&host, &snap, &plan, &cancel).await;

        assert_eq!(host.log(), vec!["container c1c1c1c1c1c1"]);
        assert!(report.cancelled);
        assert_eq!(report.containers_removed.len(), 1);
        assert_eq!(report.skipped, 1 + 3);
        assert_eq!(report.reclaimed_bytes, 40);
        assert_eq!(host.inner.image_ids().len(), 3);
    }

    #[tokio::test]
    async fn a_container_whose_size_the_engine_did_not_report_makes_the_bytes_an_estimate() {
        let host = ci_host();
        let (snap, plan) = planned(&host, Some("c2c2c2c2c2c2")).await;

        let report = execute(&host, &snap, &plan, &CancellationToken::new()).await;

        assert_eq!(report.containers_removed.len(), 2);
        assert!(!report.reclaimed_exact);
    }
}

/// Docker 26.1 lists build-cache records without their parents but refuses
/// a parent while a child exists: the plan's order is then a guess, and a
/// parent planned before its child is asked again once the child went.
#[tokio::test]
async fn a_parent_refused_before_its_child_is_removed_after_it_in_the_same_pass() {
    let engine = FakeEngine::new();
    engine.add_cache_record(record("rootrecord000001", &[], 100));
    engine.add_cache_record(record("midrecord0000002", &["rootrecord000001"], 50));
    engine.add_cache_record(record("leafrecord000003", &["midrecord0000002"], 20));
    engine.hide_cache_parents(true);
    let snap = snapshot_with_cache(&engine).await;
    // Parents first: the worst order a guess can give.
    let planned = Plan {
        records: vec![
            record_removal(&snap, "rootrecord000001"),
            record_removal(&snap, "midrecord0000002"),
            record_removal(&snap, "leafrecord000003"),
        ],
        ..Plan::default()
    };

    let report = execute(&engine, &snap, &planned, &CancellationToken::new()).await;

    assert_eq!(
        engine.cache_removals(),
        vec![
            "rootrecord000001",
            "midrecord0000002",
            "leafrecord000003",
            "rootrecord000001",
            "midrecord0000002",
            "rootrecord000001",
        ],
        "one round per record at most, each as long as the last deleted something"
    );
    let removed: Vec<&str> = report
        .records_removed
        .iter()
        .map(|r| r.record_id.as_str())
        .collect();
    assert_eq!(
        removed,
        vec!["leafrecord000003", "midrecord0000002", "rootrecord000001"]
    );
    assert!(
        report.records_not_deleted.is_empty(),
        "{:?}",
        report.records_not_deleted
    );
    assert_eq!(report.reclaimed_bytes, 170);
    assert_eq!(report.reclaimed_bytes, report.record_bytes());
    assert!(engine.cache_ids().is_empty());
}

#[tokio::test]
async fn a_pass_cancelled_between_rounds_reports_the_refused_records_not_deleted_not_skipped() {
    let engine = FakeEngine::new();
    engine.add_cache_record(record("rootrecord000001", &[], 100));
    engine.add_cache_record(record("leafrecord000003", &["rootrecord000001"], 20));
    engine.hide_cache_parents(true);
    let snap = snapshot_with_cache(&engine).await;
    let planned = Plan {
        records: vec![
            record_removal(&snap, "rootrecord000001"),
            record_removal(&snap, "leafrecord000003"),
        ],
        ..Plan::default()
    };
    let cancel = CancellationToken::new();
    // The first round ends with the leaf's removal; cancel then.
    let report = {
        let engine = &engine;
        let watch = async {
            while engine.cache_removals().len() < 2 {
                tokio::task::yield_now().await;
            }
            cancel.cancel();
        };
        let (report, ()) = tokio::join!(execute(engine, &snap, &planned, &cancel), watch);
        report
    };
    if engine.cache_removals().len() == 2 {
        assert!(report.cancelled);
        assert_eq!(report.skipped, 0, "every record was asked once");
        assert_eq!(report.records_not_deleted.len(), 1);
        assert_eq!(report.records_not_deleted[0].record_id, "rootrecord000001");
    } else {
        // The executor won the race: the root went in the second round.
        assert_eq!(report.records_removed.len(), 2);
    }
}
