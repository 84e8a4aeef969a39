//! The JSON of `plan`, `once` and `explain` (`--output json`) against the
//! real engine, read back into mirrors of the structs in `src/report/json.rs`
//! that refuse unknown fields and require every known one: a field added,
//! renamed or dropped on either side fails here, and so does a
//! `schema_version` that moved without this file.

// The mirrors' fields are there to be required when reading, not all to be read.
#![allow(dead_code)]

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use common::{imagegc, ImageSpec, Lab};

/// A typed reason: its `kind` and its figures.
type Why = Map<String, Value>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanOut {
    schema_version: u32,
    removals: Vec<RemovalOut>,
    kept: Vec<KeptOut>,
    reclaim_bytes: u64,
    notes: Vec<String>,
    images: usize,
    image_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemovalOut {
    image_id: String,
    reference: Option<String>,
    policy: String,
    reason: String,
    why: Vec<Why>,
    reclaim_bytes: u64,
    deletes_image: bool,
    sizes_exact: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeptOut {
    image_id: String,
    reference: Option<String>,
    policy: String,
    reason: String,
    why: Why,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PassOut {
    schema_version: u32,
    removals: Vec<RemovalOut>,
    kept: Vec<KeptOut>,
    reclaim_bytes: u64,
    notes: Vec<String>,
    images: usize,
    image_bytes: u64,
    dry_run: bool,
    removed: Vec<RemovedOut>,
    failed: Vec<FailedOut>,
    reclaimed_bytes: u64,
    reclaimed_exact: bool,
    deleted_images: usize,
    skipped: usize,
    cancelled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemovedOut {
    image_id: String,
    reference: Option<String>,
    policy: String,
    reclaimed_bytes: u64,
    deleted_images: Vec<String>,
    untagged: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailedOut {
    image_id: String,
    reference: Option<String>,
    policy: String,
    kind: String,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainOut {
    schema_version: u32,
    image_id: String,
    references: Vec<String>,
    digests: Vec<String>,
    size_bytes: u64,
    unique_bytes: u64,
    with_parents_bytes: u64,
    parents_freed: usize,
    created: DateTime<Utc>,
    first_seen: Option<DateTime<Utc>>,
    first_seen_basis: String,
    last_tagged: Option<DateTime<Utc>>,
    last_used: DateTime<Utc>,
    last_used_source: String,
    containers: Vec<ContainerOut>,
    parent: Option<String>,
    children: usize,
    policies: Vec<PolicyOut>,
    safety: Vec<SafetyOut>,
    next_pass: NextPassOut,
    summary: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerOut {
    id: String,
    name: String,
    state: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyOut {
    policy: String,
    reference: Option<String>,
    selected: bool,
    conditions: Vec<ConditionOut>,
    conditions_hold: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionOut {
    condition: String,
    holds: bool,
    detail: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SafetyOut {
    reference: Option<String>,
    rule: String,
    why: Why,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NextPassOut {
    removals: Vec<NextRemovalOut>,
    kept: Vec<NextKeptOut>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NextRemovalOut {
    reference: Option<String>,
    policy: String,
    reason: String,
    why: Vec<Why>,
    reclaim_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NextKeptOut {
    reference: Option<String>,
    policy: String,
    reason: String,
    why: Why,
}

fn run<T: DeserializeOwned>(args: &[&str]) -> T {
    let out = imagegc(args);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} prints the documented JSON: {e}\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn kind(why: &Why) -> &str {
    why["kind"].as_str().expect("every typed reason has a kind")
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn plan_once_and_explain_print_the_documented_json_with_schema_version_1() {
    let lab = Lab::new();
    let dangling = lab.load_image(&ImageSpec::new().days_old(12).layer_bytes(33_333));
    let used = lab.load_image(
        &ImageSpec::new()
            .tag(lab.reference("app", "used"))
            .days_old(30)
            .layer_bytes(20_000),
    );
    let container = lab.exited_container(&used.id);
    let fresh = lab.load_image(
        &ImageSpec::new()
            .tag(lab.reference("app", "fresh"))
            .created(Utc::now() - TimeDelta::minutes(10))
            .layer_bytes(5_000),
    );
    let path = lab.write_policy(&format!(
        r#"
[state]
path = "{state}"
[safety]
min_age = "1h"
[[policy]]
name = "dangling"
{sel}
dangling = true
older_than = "1d"
[[policy]]
name = "old"
{sel}
repositories = ["{repo}"]
older_than = "1m"
"#,
        state = lab.state_path().display(),
        sel = lab.selector(),
        repo = lab.repo("app"),
    ));
    let policy = path.to_str().expect("utf-8 path");

    let plan: PlanOut = run(&["--config", policy, "plan", "--output", "json"]);
    assert_eq!(plan.schema_version, 1);
    assert!(plan.images >= 3 && plan.image_bytes > 0, "{plan:?}");
    assert!(plan.notes.is_empty(), "{plan:?}");
    let [removal] = plan.removals.as_slice() else {
        panic!("one removal: {plan:?}");
    };
    assert_eq!(removal.image_id, dangling.id);
    assert_eq!(removal.reference, None);
    assert_eq!(removal.policy, "dangling");
    assert!(removal.deletes_image && removal.sizes_exact, "{removal:?}");
    assert_eq!(removal.reclaim_bytes, plan.reclaim_bytes);
    assert!(
        removal
            .reason
            .starts_with("created 12d ago (older_than 1d)"),
        "{removal:?}"
    );
    let [older] = removal.why.as_slice() else {
        panic!("one typed reason: {removal:?}");
    };
    assert_eq!(kind(older), "older_than");
    assert_eq!(older["limit_seconds"], 86_400);
    assert!(
        older["age_seconds"].as_i64() >= Some(12 * 86_400),
        "{older:?}"
    );

    let kept_kind = |image: &str| -> (String, String, &Why) {
        let k = plan
            .kept
            .iter()
            .find(|k| k.image_id == image)
            .unwrap_or_else(|| panic!("{image} is kept: {plan:?}"));
        (k.policy.clone(), k.reason.clone(), &k.why)
    };
    let (policy_name, reason, why) = kept_kind(&used.id);
    assert_eq!(policy_name, "old");
    assert_eq!(kind(why), "in_use");
    assert_eq!(why["container"], container.as_str());
    assert_eq!(why["state"], "exited");
    assert_eq!(
        reason,
        format!("in use by container {} (exited)", &container[..12])
    );
    let (_, reason, why) = kept_kind(&fresh.id);
    assert_eq!(kind(why), "min_age");
    assert_eq!(why["since"], "created");
    assert_eq!(why["min_age_seconds"], 3600);
    assert!(
        reason.starts_with("younger than min_age 1h (created "),
        "{reason}"
    );
    assert!(plan.kept.iter().all(|k| k.reference.is_some()), "{plan:?}");

    let pass: PassOut = run(&["--config", policy, "once", "--dry-run", "--output", "json"]);
    assert_eq!(pass.schema_version, 1);
    assert!(pass.dry_run);
    assert!(
        pass.removed.is_empty() && pass.failed.is_empty(),
        "{pass:?}"
    );
    assert_eq!((pass.reclaimed_bytes, pass.deleted_images), (0, 0));
    assert!(pass.reclaimed_exact, "Docker reports what it deleted");
    assert_eq!((pass.skipped, pass.cancelled), (0, false));
    assert_eq!(pass.removals.len(), 1);
    assert_eq!(pass.removals[0].image_id, dangling.id);
    assert_eq!(pass.kept.len(), plan.kept.len());
    assert_eq!(pass.reclaim_bytes, plan.reclaim_bytes);
    assert_eq!(
        (pass.images, pass.image_bytes),
        (plan.images, plan.image_bytes)
    );
    assert!(pass.notes.is_empty());

    let e: ExplainOut = run(&[
        "--config",
        policy,
        "explain",
        &lab.reference("app", "used"),
        "--output",
        "json",
    ]);
    assert_eq!(e.schema_version, 1);
    assert_eq!(e.image_id, used.id);
    assert_eq!(e.references, vec![lab.reference("app", "used")]);
    assert!(e.digests.is_empty());
    assert!(e.size_bytes >= e.unique_bytes && e.with_parents_bytes >= e.unique_bytes);
    assert_eq!((e.parents_freed, e.children), (0, 0));
    assert_eq!(e.parent, None);
    assert!(e.created < e.last_used, "{e:?}");
    assert_eq!(e.first_seen, None);
    // The dry run wrote the state file, taking the image into its baseline.
    assert_eq!(e.first_seen_basis, "baseline");
    assert_eq!(e.last_tagged, None);
    assert_eq!(e.last_used_source, "container");
    let [c] = e.containers.as_slice() else {
        panic!("one container: {e:?}");
    };
    assert_eq!(c.id, &container[..12]);
    assert!(!c.name.is_empty());
    assert_eq!(c.state, "exited");
    let old = e
        .policies
        .iter()
        .find(|p| p.policy == "old")
        .expect("the old policy's verdict");
    assert_eq!(old.reference.as_deref(), Some(e.references[0].as_str()));
    assert!(old.selected && old.conditions_hold, "{old:?}");
    let [older] = old.conditions.as_slice() else {
        panic!("one condition: {old:?}");
    };
    assert_eq!(older.condition, "older_than");
    assert!(older.holds);
    assert_eq!(older.detail, "created 30d ago; older_than 1m");
    let dangling_verdict = e
        .policies
        .iter()
        .find(|p| p.policy == "dangling")
        .expect("the dangling policy's verdict");
    assert!(!dangling_verdict.selected && dangling_verdict.conditions.is_empty());
    let [safety] = e.safety.as_slice() else {
        panic!("one safety rule: {e:?}");
    };
    assert_eq!(safety.reference, e.references.first().cloned());
    assert_eq!(kind(&safety.why), "in_use");
    assert_eq!(safety.rule, plan_reason_of(&plan, &used.id));
    assert!(e.next_pass.removals.is_empty());
    let [next] = e.next_pass.kept.as_slice() else {
        panic!("one kept: {e:?}");
    };
    assert_eq!(next.policy, "old");
    assert_eq!(next.reference, e.references.first().cloned());
    assert_eq!(next.reason, safety.rule);
    assert_eq!(kind(&next.why), "in_use");
    assert_eq!(
        e.summary,
        format!(
            "kept: policy old would remove it, but it is {}",
            next.reason
        )
    );

    let e: ExplainOut = run(&[
        "--config",
        policy,
        "explain",
        &dangling.id,
        "--output",
        "json",
    ]);
    let [next] = e.next_pass.removals.as_slice() else {
        panic!("one removal: {e:?}");
    };
    assert_eq!(next.reference, None);
    assert_eq!(next.policy, "dangling");
    assert_eq!(next.reason, removal.reason);
    assert_eq!(next.reclaim_bytes, removal.reclaim_bytes);
    assert_eq!(kind(&next.why[0]), "older_than");
}

/// The words the plan gives for keeping `image`.
fn plan_reason_of(plan: &PlanOut, image: &str) -> String {
    plan.kept
        .iter()
        .find(|k| k.image_id == image)
        .map(|k| k.reason.clone())
        .unwrap_or_default()
}
