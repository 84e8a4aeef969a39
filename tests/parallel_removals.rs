//! Image removals with bounded concurrency (`[safety] max_parallel_removals`,
//! issue 11 part 2), pinned against the in-memory engine under tokio's paused
//! clock: each removal takes the fake's `remove_delay`, so when removals start
//! (the fake's remove hook reads the clock) says exactly how many were in
//! flight at once. A parent is never removed while a child planned before it
//! is still there (the fake refuses it with a 409, as Docker does), the report
//! is the same entry for entry and byte for byte whatever the bound, and
//! cancellation lets the removals in flight finish and starts no other.

mod support;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imagegc::engine::Engine;
use imagegc::execute::{execute_with, Report};
use imagegc::fake::{self, FakeEngine, FakeImage};
use imagegc::host::disk::{DiskProbe, FixedDisk};
use imagegc::plan::{plan, Plan};
use imagegc::snapshot::{collect, DetailsCache, Snapshot, Tracked};
use support::{ago, now, policy, rule, secs, DAY};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const DELAY: Duration = Duration::from_millis(100);

fn image(id: &str, tags: &[&str], layers: &[(&str, u64)]) -> FakeImage {
    fake::image(id, tags, ago(30 * DAY), layers)
}

fn bound(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("a bound above 0")
}

/// `n` old dangling images, each with a layer of its own.
fn dangling(n: usize) -> FakeEngine {
    let engine = FakeEngine::new();
    for i in 0..n {
        engine.add_image(image(
            &format!("sha256:d{i:02}"),
            &[],
            &[(&format!("sha256:l{i:02}"), 100 + i as u64)],
        ));
    }
    engine
}

/// A chain `base` ← `mid` ← `top` (`ParentId` links, shared layers), an image
/// with two tags, two images sharing a layer, and independent ones.
fn mixed() -> FakeEngine {
    let engine = FakeEngine::new();
    engine.add_image(image("sha256:base", &["os:1"], &[("sha256:b", 1000)]));
    let mut mid = image(
        "sha256:mid",
        &["mid:1"],
        &[("sha256:b", 1000), ("sha256:m", 200)],
    );
    mid.summary.parent_id = Some("sha256:base".to_owned());
    engine.add_image(mid);
    let mut top = image(
        "sha256:top",
        &["top:1"],
        &[("sha256:b", 1000), ("sha256:m", 200), ("sha256:t", 30)],
    );
    top.summary.parent_id = Some("sha256:mid".to_owned());
    engine.add_image(top);
    engine.add_image(image(
        "sha256:twotags",
        &["tool:1", "tool:latest"],
        &[("sha256:tt", 70)],
    ));
    engine.add_image(image("sha256:s1", &["s:1"], &[("sha256:shared", 500)]));
    engine.add_image(image(
        "sha256:s2",
        &["s:2"],
        &[("sha256:shared", 500), ("sha256:s2", 5)],
    ));
    for i in 0..6 {
        engine.add_image(image(
            &format!("sha256:free{i}"),
            &[],
            &[(&format!("sha256:f{i}"), 10 + i)],
        ));
    }
    engine
}

async fn snapshot_and_plan<E: Engine>(engine: &E) -> (Snapshot, Plan) {
    let no_disk: Arc<dyn DiskProbe> = Arc::new(FixedDisk::new(None));
    let snap = collect(engine, &no_disk, None, &mut DetailsCache::new(), &|_| {
        Tracked::default()
    })
    .await
    .expect("the fake engine answers");
    let p = policy(vec![rule("all").older_than(secs(DAY)).build()]);
    let planned = plan(&p, &snap, now());
    (snap, planned)
}

/// The instants removals started at, recorded by the fake's remove hook.
fn record_starts(engine: &FakeEngine) -> Arc<Mutex<Vec<Instant>>> {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&starts);
    engine.on_remove(move |_| sink.lock().expect("lock").push(Instant::now()));
    engine.set_remove_delay(DELAY);
    starts
}

/// The most removals in flight at once: each runs for `DELAY` from its
/// start.
fn most_in_flight(starts: &[Instant]) -> usize {
    starts
        .iter()
        .map(|&t| starts.iter().filter(|&&s| s <= t && t < s + DELAY).count())
        .max()
        .unwrap_or(0)
}

/// What a report says, without the timing: removals in plan order with
/// their targets, outcomes and bytes.
fn outcome(report: &Report) -> String {
    format!(
        "removed {:?}\nfailed {:?}\nbytes {} exact {} skipped {} cancelled {}",
        report
            .removed
            .iter()
            .map(|r| (
                r.image_id.clone(),
                r.reference.clone(),
                r.reclaimed_bytes,
                r.deleted_images.clone()
            ))
            .collect::<Vec<_>>(),
        report.failed,
        report.reclaimed_bytes,
        report.reclaimed_exact,
        report.skipped,
        report.cancelled
    )
}

#[tokio::test(start_paused = true)]
async fn removals_run_up_to_the_bound_at_once_and_never_more() {
    for (max, most, took) in [(1, 1, 12), (4, 4, 3), (16, 12, 1)] {
        let engine = dangling(12);
        let (snap, planned) = snapshot_and_plan(&engine).await;
        assert_eq!(planned.removals.len(), 12);
        let starts = record_starts(&engine);
        let began = Instant::now();

        let report = execute_with(
            &engine,
            &snap,
            &planned,
            &CancellationToken::new(),
            bound(max),
        )
        .await;

        assert_eq!(report.removed.len(), 12, "bound {max}: {report:?}");
        let starts = starts.lock().expect("lock").clone();
        assert_eq!(starts.len(), 12);
        assert_eq!(most_in_flight(&starts), most, "bound {max}");
        assert_eq!(
            began.elapsed(),
            DELAY * took,
            "bound {max}: {took} rounds of removals"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_report_is_the_same_whatever_the_bound_and_parents_go_after_their_children() {
    let mut seen = Vec::new();
    for max in [1, 2, 4, 8] {
        let engine = mixed();
        let (snap, planned) = snapshot_and_plan(&engine).await;
        let starts = record_starts(&engine);

        let report = execute_with(
            &engine,
            &snap,
            &planned,
            &CancellationToken::new(),
            bound(max),
        )
        .await;

        assert!(report.failed.is_empty(), "bound {max}: {:?}", report.failed);
        assert!(
            engine.image_ids().is_empty(),
            "bound {max}: left {:?}",
            engine.image_ids()
        );
        // The engine took them in an order it accepts: each parent after
        // every child (else a 409 above), the tags of one image one by one.
        let done = engine.removals();
        let at = |t: &str| done.iter().position(|r| r == t).expect("removed");
        assert!(
            at("top:1") < at("mid:1") && at("mid:1") < at("os:1"),
            "{done:?}"
        );
        if max > 1 {
            let starts = starts.lock().expect("lock").clone();
            assert!(
                most_in_flight(&starts) > 1,
                "bound {max}: nothing ran at once"
            );
            assert!(most_in_flight(&starts) <= max);
        }
        seen.push(outcome(&report));
    }
    for (max, other) in [2, 4, 8].iter().zip(&seen[1..]) {
        assert_eq!(&seen[0], other, "bound {max} against bound 1");
    }
}

#[tokio::test(start_paused = true)]
async fn after_cancellation_the_removals_in_flight_finish_and_no_other_starts() {
    let engine = dangling(12);
    let (snap, planned) = snapshot_and_plan(&engine).await;
    let cancel = CancellationToken::new();
    engine.set_remove_delay(DELAY);
    let signal = cancel.clone();
    // The signal arrives as the first removal starts.
    engine.on_remove(move |n| {
        if n == 1 {
            signal.cancel();
        }
    });

    let report = execute_with(&engine, &snap, &planned, &cancel, bound(4)).await;

    let started = engine.removals().len();
    assert!(
        (1..=4).contains(&started),
        "at most the bound in flight when the signal came: {started}"
    );
    assert!(report.cancelled);
    assert_eq!(
        report.removed.len(),
        started,
        "each one in flight finished and is reported"
    );
    assert_eq!(report.skipped, 12 - started);
    assert_eq!(engine.image_ids().len(), 12 - started);
    let planned_first: Vec<&str> = planned.removals[..started]
        .iter()
        .map(|r| r.image_id.as_str())
        .collect();
    let removed: Vec<&str> = report.removed.iter().map(|r| r.image_id.as_str()).collect();
    assert_eq!(
        removed, planned_first,
        "a prefix of the plan, in plan order"
    );
}
