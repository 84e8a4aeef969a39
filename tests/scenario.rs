//! The whole of one pass against the real Docker Engine: what stays, what
//! goes, and that the bytes imagegc reports are the engine's own to the byte.

mod common;

use std::collections::BTreeSet;

use chrono::{TimeDelta, Utc};
use serde_json::Value;

use common::{engine_lock, image_exists, imagegc, layers_size, references_of, ImageSpec, Lab};

fn json_of(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "imagegc failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn as_u64(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not a byte count: {v}"))
}

/// (image ID, reference) pairs of a JSON list.
fn targets(list: &Value) -> BTreeSet<(String, Option<String>)> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .map(|r| {
            (
                r["image_id"].as_str().expect("image_id").to_string(),
                r["reference"].as_str().map(ToString::to_string),
            )
        })
        .collect()
}

#[test]
#[allow(clippy::too_many_lines)]
fn one_pass_removes_exactly_what_policy_allows_and_reports_the_engines_own_bytes() {
    let _lock = engine_lock();
    let lab = Lab::new();
    let keep_label = format!("imagegc.keep-{}", lab.id());

    // Dangling images of several ages, one inside the grace period.
    let d40 = lab.load_image(&ImageSpec::new().days_old(40).layer_bytes(300_000));
    let d10 = lab.load_image(&ImageSpec::new().days_old(10).layer_bytes(200_000));
    let d2 = lab.load_image(&ImageSpec::new().days_old(2).layer_bytes(100_000));
    let young = lab.load_image(
        &ImageSpec::new()
            .created(Utc::now() - TimeDelta::minutes(10))
            .layer_bytes(50_000),
    );

    // One repository, six tags of different ages; keep the two newest.
    let app: Vec<_> = (1..=6)
        .map(|n| {
            lab.load_image(
                &ImageSpec::new()
                    .tag(lab.reference("app", &format!("v{n}")))
                    .days_old(20 - n)
                    .layer_bytes(10_000 * n as usize),
            )
        })
        .collect();

    // Old dangling images used by containers: one exited, one running.
    let used_exited = lab.load_image(&ImageSpec::new().days_old(30).layer_bytes(70_000));
    let used_running = lab.load_image(&ImageSpec::new().days_old(30).layer_bytes(80_000));
    let exited = lab.exited_container(&used_exited.id);
    let running = lab.running_container(&used_running.id);

    // Parent/child chain: untagged parent, stale tagged child.
    let chain = lab.load_chain(&[
        ImageSpec::new().days_old(25).layer_bytes(120_000),
        ImageSpec::new()
            .tag(lab.reference("chain", "old"))
            .days_old(20)
            .layer_bytes(60_000),
    ]);
    let (parent, child) = (&chain[0], &chain[1]);

    // Tagged twice, only one tag matches a policy: untagged, not deleted.
    let multi = lab.load_image(
        &ImageSpec::new()
            .tag(lab.reference("multi", "ci"))
            .tag(lab.reference("keepme", "v1"))
            .days_old(30)
            .layer_bytes(90_000),
    );

    // Saved by a protect glob and by a protect label.
    let base = lab.load_image(
        &ImageSpec::new()
            .tag(lab.reference("base", "1"))
            .days_old(60)
            .layer_bytes(40_000),
    );
    let labelled = lab.load_image(
        &ImageSpec::new()
            .tag(lab.reference("labelled", "1"))
            .days_old(60)
            .label(&keep_label, "yes")
            .layer_bytes(30_000),
    );

    let policy = lab.write_policy(&format!(
        r#"
[state]
path = "{state}"
[safety]
min_age = "1h"
protect = ["{base_repo}"]
protect_labels = ["{keep_label}=yes"]
[[policy]]
name = "dangling"
{sel}
dangling = true
older_than = "1m"
[[policy]]
name = "keep-last-2"
{sel}
repositories = ["{app_repo}"]
keep_most_recent = 2
[[policy]]
name = "stale"
{sel}
repositories = ["imagegc-test-{id}/chain", "imagegc-test-{id}/multi", "imagegc-test-{id}/base", "imagegc-test-{id}/labelled"]
older_than = "7d"
"#,
        state = lab.state_path().display(),
        base_repo = lab.repo("base"),
        app_repo = lab.repo("app"),
        sel = lab.selector(),
        id = lab.id(),
    ));
    let policy = policy.to_str().expect("utf-8 path");

    let plan = json_of(&imagegc(&["--config", policy, "plan", "--output", "json"]));
    let expected_removals: BTreeSet<(String, Option<String>)> = [
        (d40.id.clone(), None),
        (d10.id.clone(), None),
        (d2.id.clone(), None),
        (app[0].id.clone(), Some(lab.reference("app", "v1"))),
        (app[1].id.clone(), Some(lab.reference("app", "v2"))),
        (app[2].id.clone(), Some(lab.reference("app", "v3"))),
        (app[3].id.clone(), Some(lab.reference("app", "v4"))),
        (child.id.clone(), Some(lab.reference("chain", "old"))),
        (parent.id.clone(), None),
        (multi.id.clone(), Some(lab.reference("multi", "ci"))),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        targets(&plan["removals"]),
        expected_removals,
        "plan: {plan:#}"
    );

    // Children before parents.
    let order: Vec<&str> = plan["removals"]
        .as_array()
        .expect("removals")
        .iter()
        .map(|r| r["image_id"].as_str().expect("id"))
        .collect();
    let pos = |id: &str| order.iter().position(|o| *o == id).expect("planned");
    assert!(pos(&child.id) < pos(&parent.id), "child first: {order:?}");

    // Every removal names its policy and a reason.
    for r in plan["removals"].as_array().expect("removals") {
        assert!(!r["policy"].as_str().unwrap_or("").is_empty(), "{r}");
        assert!(!r["reason"].as_str().unwrap_or("").is_empty(), "{r}");
        if r["reference"] == lab.reference("multi", "ci").as_str() {
            assert_eq!(r["reclaim_bytes"], 0, "untagging frees nothing: {r}");
            assert_eq!(r["policy"], "stale");
        }
    }

    // Kept by safety, with the rule named.
    let kept_reason = |id: &str| -> String {
        plan["kept"]
            .as_array()
            .expect("kept")
            .iter()
            .find(|k| k["image_id"] == id)
            .and_then(|k| k["reason"].as_str())
            .unwrap_or_else(|| panic!("{id} not in kept: {plan:#}"))
            .to_string()
    };
    assert!(kept_reason(&young.id).contains("younger than min_age"));
    assert!(
        kept_reason(&used_exited.id).contains(&format!("in use by container {}", &exited[..12]))
    );
    assert!(kept_reason(&used_exited.id).contains("exited"));
    assert!(
        kept_reason(&used_running.id).contains(&format!("in use by container {}", &running[..12]))
    );
    assert!(kept_reason(&used_running.id).contains("running"));
    assert!(kept_reason(&base.id).contains("protected by glob"));
    assert!(kept_reason(&labelled.id).contains("protected by label"));

    let predicted = as_u64(&plan["reclaim_bytes"]);
    assert!(predicted > 0);

    // The pass itself.
    let before = layers_size();
    let report = json_of(&imagegc(&["--config", policy, "once", "--output", "json"]));
    let after = layers_size();

    assert_eq!(
        targets(&report["removed"]),
        expected_removals,
        "report: {report:#}"
    );
    assert_eq!(
        report["failed"].as_array().map(Vec::len),
        Some(0),
        "{report:#}"
    );
    let reclaimed = as_u64(&report["reclaimed_bytes"]);
    assert_eq!(
        reclaimed,
        before - after,
        "reported bytes = drop in the engine's LayersSize"
    );
    assert_eq!(reclaimed, predicted, "result = prediction");
    assert_eq!(
        as_u64(&report["reclaim_bytes"]),
        predicted,
        "once plans what plan planned"
    );

    // What remains on the engine.
    for gone in [
        &d40, &d10, &d2, &app[0], &app[1], &app[2], &app[3], child, parent,
    ] {
        assert!(!image_exists(&gone.id), "{} should be gone", gone.id);
    }
    for stays in [
        &young,
        &app[4],
        &app[5],
        &used_exited,
        &used_running,
        &multi,
        &base,
        &labelled,
    ] {
        assert!(image_exists(&stays.id), "{} should remain", stays.id);
    }
    assert_eq!(
        references_of(&multi.id),
        vec![lab.reference("keepme", "v1")]
    );
    assert_eq!(references_of(&app[4].id), vec![lab.reference("app", "v5")]);
    assert_eq!(references_of(&app[5].id), vec![lab.reference("app", "v6")]);
    assert_eq!(references_of(&base.id), vec![lab.reference("base", "1")]);

    // A second pass finds nothing more to do.
    let again = json_of(&imagegc(&["--config", policy, "once", "--output", "json"]));
    assert_eq!(
        again["removed"].as_array().map(Vec::len),
        Some(0),
        "{again:#}"
    );
    assert_eq!(again["reclaimed_bytes"], 0);
}
