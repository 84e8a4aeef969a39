//! `imagegc explain` against the real engine: the answer to "why did (or
//! didn't) imagegc delete this?" matches what a pass then does.

mod common;

use serde_json::Value;

use common::{image_exists, imagegc, ImageSpec, Lab};

fn explain_json(policy: &str, target: &str) -> Value {
    let out = imagegc(&["--config", policy, "explain", target, "--output", "json"]);
    assert!(
        out.status.success(),
        "explain {target}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("explain prints JSON")
}

fn policy_for(lab: &Lab, keep_label: &str) -> String {
    format!(
        r#"
[state]
path = "{state}"
[safety]
min_age = "1h"
protect_labels = ["{keep_label}"]
[[policy]]
name = "dangling"
{sel}
dangling = true
older_than = "1d"
[[policy]]
name = "stale"
{sel}
repositories = ["{repo}"]
unused_for = "7d"
"#,
        state = lab.state_path().display(),
        sel = lab.selector(),
        repo = lab.repo("app"),
    )
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn explain_says_why_each_image_goes_or_stays_and_the_pass_agrees() {
    let lab = Lab::new();
    let keep_label = format!("imagegc.keep-{}", lab.id());
    let dangling = lab.load_image(&ImageSpec::new().days_old(12).layer_bytes(77_777));
    let protected = lab.load_image(
        &ImageSpec::new()
            .tag(lab.reference("app", "old"))
            .days_old(30)
            .label(&keep_label, "yes")
            .layer_bytes(10_000),
    );
    let used = lab.load_image(&ImageSpec::new().days_old(30).layer_bytes(20_000));
    let container = lab.exited_container(&used.id);
    let fresh = lab.load_image(
        &ImageSpec::new()
            .tag(lab.reference("app", "new"))
            .days_old(1)
            .layer_bytes(5_000),
    );
    let path = lab.write_policy(&policy_for(&lab, &keep_label));
    let policy = path.to_str().expect("utf-8 path");

    // A dangling image: selected, conditions hold, nothing protects it, the
    // next pass removes it and frees exactly its own layer.
    let e = explain_json(policy, &dangling.id);
    assert_eq!(e["image_id"], dangling.id.as_str());
    assert_eq!(e["references"], serde_json::json!([]));
    assert_eq!(e["unique_bytes"].as_u64(), Some(dangling.own_content_bytes));
    assert_eq!(e["last_used_source"], "created");
    let d = e["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .find(|p| p["policy"] == "dangling")
        .expect("dangling verdict");
    assert_eq!(d["selected"], true);
    assert_eq!(d["conditions_hold"], true);
    assert_eq!(e["safety"], serde_json::json!([]));
    assert_eq!(e["next_pass"]["removals"][0]["policy"], "dangling");
    assert!(
        e["summary"]
            .as_str()
            .expect("summary")
            .contains("would remove"),
        "{e:#}"
    );

    // A protected image: the stale policy's conditions hold, the label keeps it.
    let e = explain_json(policy, &lab.reference("app", "old"));
    assert_eq!(e["image_id"], protected.id.as_str());
    let s = e["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .find(|p| p["policy"] == "stale")
        .expect("stale verdict");
    assert_eq!(s["conditions_hold"], true, "{e:#}");
    assert!(
        e["safety"][0]["rule"]
            .as_str()
            .expect("rule")
            .contains("protected by label"),
        "{e:#}"
    );
    assert!(e["next_pass"]["kept"][0]["reason"]
        .as_str()
        .expect("reason")
        .contains("protected by label"));
    assert_eq!(e["next_pass"]["removals"], serde_json::json!([]));

    // An image a stopped container uses: named, with its state.
    let short = &used.id["sha256:".len().."sha256:".len() + 12];
    let e = explain_json(policy, short);
    assert_eq!(
        e["image_id"],
        used.id.as_str(),
        "an ID prefix finds the image"
    );
    assert_eq!(e["containers"][0]["id"], &container[..12]);
    assert_eq!(e["containers"][0]["state"], "exited");
    assert!(e["safety"][0]["rule"]
        .as_str()
        .expect("rule")
        .contains(&container[..12]));
    assert_eq!(e["last_used_source"], "container");

    // A recent image: selected, but unused_for does not hold.
    let e = explain_json(policy, &lab.reference("app", "new"));
    let s = e["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .find(|p| p["policy"] == "stale")
        .expect("stale verdict");
    assert_eq!(s["conditions_hold"], false);
    assert_eq!(s["conditions"][0]["condition"], "unused_for");
    assert!(e["summary"]
        .as_str()
        .expect("summary")
        .contains("conditions that do not hold"));

    // Text output says the same in words.
    let out = imagegc(&["--config", policy, "explain", &lab.reference("app", "old")]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("protected by label"), "{text}");
    assert!(text.contains("stale on"), "{text}");

    // Unknown targets are a clear error with exit code 2.
    let out = imagegc(&[
        "--config",
        policy,
        "explain",
        &lab.reference("app", "missing"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no image, container or build-cache record matches"));

    // And the pass does what explain said.
    let out = imagegc(&["--config", policy, "once", "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!image_exists(&dangling.id));
    assert!(image_exists(&protected.id));
    assert!(image_exists(&used.id));
    assert!(image_exists(&fresh.id));
}
