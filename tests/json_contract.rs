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
    records: Vec<RecordOut>,
    kept_records: Vec<KeptRecordOut>,
    build_cache_records: usize,
    containers: Vec<ContainerRemovalOut>,
    kept_containers: Vec<KeptContainerOut>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerRemovalOut {
    container_id: String,
    name: String,
    state: String,
    finished: Option<DateTime<Utc>>,
    size_rw_bytes: Option<u64>,
    reclaim_bytes: u64,
    policy: String,
    reason: String,
    why: Vec<Why>,
    unpins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeptContainerOut {
    container_id: String,
    name: String,
    state: String,
    policy: String,
    reason: String,
    why: Why,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemovedContainerOut {
    container_id: String,
    name: String,
    policy: String,
    reclaimed_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContainerNotRemovedOut {
    container_id: String,
    name: String,
    policy: String,
    kind: String,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinnedSkippedOut {
    image_id: String,
    reference: Option<String>,
    policy: String,
    container: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordOut {
    record_id: String,
    #[serde(rename = "type")]
    kind: String,
    description: String,
    size_bytes: u64,
    reclaim_bytes: u64,
    sizes_exact: bool,
    policy: String,
    reason: String,
    why: Vec<Why>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeptRecordOut {
    record_id: String,
    #[serde(rename = "type")]
    kind: String,
    description: String,
    policy: String,
    reason: String,
    why: Why,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemovedRecordOut {
    record_id: String,
    policy: String,
    reclaimed_bytes: u64,
    engine_reported_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordNotDeletedOut {
    record_id: String,
    policy: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailedRecordOut {
    record_id: String,
    policy: String,
    kind: String,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainRecordOut {
    schema_version: u32,
    kind: String,
    record_id: String,
    #[serde(rename = "type")]
    record_type: String,
    description: String,
    size_bytes: u64,
    frees_bytes: u64,
    held_layer_bytes: u64,
    created: DateTime<Utc>,
    last_used: Option<DateTime<Utc>>,
    usage_count: u64,
    in_use: bool,
    shared: bool,
    parents: Vec<String>,
    children: Vec<String>,
    policies: Vec<PolicyOut>,
    safety: Vec<SafetyOut>,
    next_pass: NextPassOut,
    summary: String,
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
    unpinned_by: Vec<String>,
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
    records: Vec<RecordOut>,
    kept_records: Vec<KeptRecordOut>,
    build_cache_records: usize,
    records_removed: Vec<RemovedRecordOut>,
    records_not_deleted: Vec<RecordNotDeletedOut>,
    records_failed: Vec<FailedRecordOut>,
    records_unsupported: usize,
    containers: Vec<ContainerRemovalOut>,
    kept_containers: Vec<KeptContainerOut>,
    containers_removed: Vec<RemovedContainerOut>,
    containers_not_removed: Vec<ContainerNotRemovedOut>,
    containers_failed: Vec<ContainerNotRemovedOut>,
    pinned_skipped: Vec<PinnedSkippedOut>,
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
    kind: String,
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
    last_used_by_build: Option<String>,
    containers: Vec<ContainerOut>,
    parent: Option<String>,
    children: usize,
    held_by_cache_bytes: u64,
    held_by_records: Vec<String>,
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
    removed_by: Option<String>,
    kept_because: Option<Why>,
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
    assert_eq!(e.last_used_by_build, None, "a container use names no build");
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

// ---------------------------------------------------------------------------
// Build cache. The shared engine's build cache is not this suite's to make
// records in, so the record documents are checked on the in-memory engine:
// the same structs, serialized, read back into the strict mirrors.

mod build_cache {
    use super::*;
    use imagegc::engine::Engine;
    use imagegc::fake::{self, FakeEngine};
    use imagegc::gc::plan::{KeptBecause, KeptRecord, Reason, Reasons, RecordRemoval};
    use imagegc::host::disk::{DiskProbe, FixedDisk};
    use imagegc::run::execute::{FailedRecord, RecordNotDeleted, RemovedRecord, Report};
    use imagegc::snapshot::{collect, DetailsCache, Snapshot, Tracked};
    use std::sync::Arc;

    fn strict<T: DeserializeOwned>(value: &Value) -> T {
        serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("the documented JSON: {e}\n{value:#}"))
    }

    async fn snapshot() -> Snapshot {
        let engine = FakeEngine::new();
        let created = Utc::now() - TimeDelta::days(9);
        let mut busy = fake::cache_record("busyrecord000002", &["piperecord000001"], 70, created);
        busy.in_use = true;
        busy.description = "mount / from exec /bin/sh -c make\n\u{1b}[31m".to_string();
        engine.add_cache_record(fake::cache_record("piperecord000001", &[], 300, created));
        engine.add_cache_record(busy);
        let no_disk: Arc<dyn DiskProbe> = Arc::new(FixedDisk::new(None));
        let records = engine
            .build_cache()
            .await
            .expect("the fake lists its cache");
        collect(&engine, &no_disk, None, &mut DetailsCache::new(), &|_| {
            Tracked::default()
        })
        .await
        .expect("the fake engine answers")
        .with_build_cache(records)
    }

    fn plan_with_records(snap: &Snapshot) -> imagegc::plan::Plan {
        imagegc::plan::Plan {
            records: vec![RecordRemoval {
                record: snap.cache.by_id["piperecord000001"],
                record_id: "piperecord000001".to_string(),
                policy: "build-cache".to_string(),
                reason: Reasons(vec![Reason::KeepStorage {
                    keep: 100,
                    newer: 70,
                }]),
                reclaim_bytes: 300,
            }],
            kept_records: vec![KeptRecord {
                record: snap.cache.by_id["busyrecord000002"],
                record_id: "busyrecord000002".to_string(),
                policy: "build-cache".to_string(),
                reason: KeptBecause::BuildInUse,
            }],
            reclaim_bytes: 300,
            ..imagegc::plan::Plan::default()
        }
    }

    #[tokio::test]
    async fn plan_and_pass_json_carry_records_kept_records_and_record_outcomes() {
        let snap = snapshot().await;
        let plan = plan_with_records(&snap);
        let out: PlanOut = strict(&imagegc::output::plan_json(&plan, &snap));
        assert_eq!(out.schema_version, 1);
        assert_eq!(out.build_cache_records, 2);
        assert_eq!(out.records.len(), 1);
        let r = &out.records[0];
        assert_eq!(
            (
                r.record_id.as_str(),
                r.kind.as_str(),
                r.size_bytes,
                r.reclaim_bytes
            ),
            ("piperecord000001", "regular", 300, 300)
        );
        assert!(r.sizes_exact, "the record model holds on Docker 20.10");
        let on_containerd_store = snap
            .clone()
            .with_capabilities(imagegc::engine::Capabilities {
                models_cache_records: false,
                ..snap.capabilities
            });
        let estimated: PlanOut = strict(&imagegc::output::plan_json(&plan, &on_containerd_store));
        assert!(!estimated.records[0].sizes_exact);
        assert_eq!(kind(&r.why[0]), "keep_storage");
        assert_eq!(out.kept_records[0].record_id, "busyrecord000002");
        assert_eq!(kind(&out.kept_records[0].why), "build_in_use");
        assert_eq!(out.kept_records[0].reason, "in use by a running build");

        let report = Report {
            records_removed: vec![RemovedRecord {
                record_id: "piperecord000001".to_string(),
                policy: "build-cache".to_string(),
                reclaimed_bytes: 300,
                engine_reported_bytes: 300,
            }],
            records_not_deleted: vec![RecordNotDeleted {
                record_id: "busyrecord000002".to_string(),
                policy: "build-cache".to_string(),
            }],
            records_failed: vec![FailedRecord {
                record_id: "gonerecord000003".to_string(),
                policy: "build-cache".to_string(),
                kind: "engine",
                message: "boom".to_string(),
            }],
            reclaimed_bytes: 300,
            ..Report::default()
        };
        let out: PassOut = strict(&imagegc::output::pass_json(
            &plan,
            &snap,
            Some(&report),
            false,
        ));
        assert_eq!(out.records_removed[0].reclaimed_bytes, 300);
        assert_eq!(out.records_not_deleted[0].record_id, "busyrecord000002");
        assert_eq!(out.records_failed[0].kind, "engine");
        assert_eq!(out.records_unsupported, 0);
        assert_eq!(out.reclaimed_bytes, 300);
        // A dry run has the same fields, empty.
        let out: PassOut = strict(&imagegc::output::pass_json(&plan, &snap, None, true));
        assert!(out.records_removed.is_empty() && out.records.len() == 1);
    }

    #[tokio::test]
    async fn explain_of_a_record_prints_the_documented_json() {
        let snap = snapshot().await;
        let plan = plan_with_records(&snap);
        let policy = imagegc::config::parse(
            "[[policy]]\nname = \"d\"\ndangling = true\nolder_than = \"1h\"\n",
            "t.toml",
        )
        .expect("a policy");
        let now = Utc::now();
        let found = imagegc::explain::find_target(&snap, "busy").expect("a unique prefix");
        let imagegc::explain::Target::Record(r) = found else {
            panic!("{found:?} is no record");
        };
        let e = imagegc::explain::explain_record(&policy, &snap, &plan, now, r);
        let out: ExplainRecordOut = strict(&e.to_json());
        assert_eq!(out.kind, "build_cache_record");
        assert_eq!(out.record_id, "busyrecord000002");
        assert_eq!(out.record_type, "regular");
        assert!(out.in_use && !out.shared);
        assert_eq!(out.parents, vec!["piperecord000001"]);
        assert!(
            out.description.contains('\n'),
            "JSON keeps the engine's text"
        );
        assert_eq!(out.next_pass.kept.len(), 1);
        assert_eq!(kind(&out.next_pass.kept[0].why), "build_in_use");
        assert!(
            out.summary.starts_with("kept: policy build-cache"),
            "{}",
            out.summary
        );

        let parent = imagegc::explain::find_target(&snap, "piperecord000001").expect("full ID");
        let imagegc::explain::Target::Record(p) = parent else {
            panic!("{parent:?} is no record");
        };
        let e = imagegc::explain::explain_record(&policy, &snap, &plan, now, p);
        let out: ExplainRecordOut = strict(&e.to_json());
        assert_eq!(out.children, vec!["busyrecord000002"]);
        assert_eq!(out.next_pass.removals.len(), 1);
        assert_eq!(out.next_pass.removals[0].reclaim_bytes, 300);
    }
}

// ---------------------------------------------------------------------------
// Stopped containers: the plan's container removals and kept containers, the
// pass's container outcomes, checked on the in-memory engine (the shared
// engine's containers are c9-engine's real-engine tests).

mod containers {
    use super::*;
    use imagegc::engine::{Container, ContainerDetails};
    use imagegc::fake::{self, FakeEngine};
    use imagegc::gc::plan::{
        ContainerRemoval, KeptBecause, KeptContainer, Reason, Reasons, Removal,
    };
    use imagegc::host::disk::{DiskProbe, FixedDisk};
    use imagegc::run::execute::{ContainerNotRemoved, PinnedSkipped, RemovedContainer, Report};
    use imagegc::snapshot::{collect, DetailsCache, Snapshot, Tracked};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn strict<T: DeserializeOwned>(value: &Value) -> T {
        serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("the documented JSON: {e}\n{value:#}"))
    }

    fn finished() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T06:00:00Z")
            .expect("a time")
            .with_timezone(&Utc)
    }

    async fn snapshot() -> Snapshot {
        let engine = FakeEngine::new();
        let created = Utc::now() - TimeDelta::days(9);
        engine.add_image(fake::image(
            "sha256:ci1",
            &["ci/job:1"],
            created,
            &[("sha256:d1", 500)],
        ));
        for (id, name, state) in [
            ("c1c1c1c1c1c1", "ci-job-1", "exited"),
            ("c2c2c2c2c2c2", "web", "running"),
        ] {
            engine.add_container(Container {
                id: id.to_string(),
                names: vec![name.to_string()],
                image_id: "sha256:ci1".to_string(),
                image_ref: "ci/job:1".to_string(),
                labels: BTreeMap::new(),
                state: state.to_string(),
                created,
            });
        }
        let no_disk: Arc<dyn DiskProbe> = Arc::new(FixedDisk::new(None));
        let mut snap = collect(&engine, &no_disk, None, &mut DetailsCache::new(), &|_| {
            Tracked::default()
        })
        .await
        .expect("the fake engine answers");
        snap.containers[0].details = Some(ContainerDetails {
            finished_at: Some(finished()),
            size_rw: Some(4096),
            ..ContainerDetails::default()
        });
        snap
    }

    fn plan_with_containers(snap: &Snapshot) -> imagegc::plan::Plan {
        imagegc::plan::Plan {
            containers: vec![ContainerRemoval {
                container: 0,
                container_id: "c1c1c1c1c1c1".to_string(),
                name: "ci-job-1".to_string(),
                policy: "finished-ci-jobs".to_string(),
                reason: Reasons(vec![Reason::ExitedFor {
                    idle: TimeDelta::hours(8),
                    limit: TimeDelta::hours(6),
                    since: "finished",
                }]),
                reclaim_bytes: 4096,
                unpins: vec![0],
            }],
            kept_containers: vec![KeptContainer {
                container: 1,
                container_id: "c2c2c2c2c2c2".to_string(),
                name: "web".to_string(),
                policy: "finished-ci-jobs".to_string(),
                reason: KeptBecause::ContainerActive {
                    state: "running".to_string(),
                },
            }],
            removals: vec![Removal {
                image: 0,
                image_id: snap.images[0].id.clone(),
                reference: Some("ci/job:1".to_string()),
                policy: "stale".to_string(),
                reason: Reasons(vec![Reason::OlderThan {
                    age: TimeDelta::days(9),
                    limit: TimeDelta::days(7),
                }]),
                reclaim_bytes: 500,
                deletes_image: true,
                unpinned_by: vec!["ci-job-1".to_string()],
            }],
            reclaim_bytes: 4096 + 500,
            ..imagegc::plan::Plan::default()
        }
    }

    #[tokio::test]
    async fn plan_and_pass_json_carry_container_removals_kept_containers_and_their_outcomes() {
        let snap = snapshot().await;
        let plan = plan_with_containers(&snap);
        let out: PlanOut = strict(&imagegc::output::plan_json(&plan, &snap));
        assert_eq!(out.containers.len(), 1);
        let c = &out.containers[0];
        assert_eq!(
            (c.container_id.as_str(), c.name.as_str(), c.state.as_str()),
            ("c1c1c1c1c1c1", "ci-job-1", "exited")
        );
        assert_eq!(c.finished, Some(finished()));
        assert_eq!((c.size_rw_bytes, c.reclaim_bytes), (Some(4096), 4096));
        assert_eq!(c.unpins, vec!["sha256:ci1".to_string()]);
        assert_eq!(kind(&c.why[0]), "exited_for");
        assert_eq!(c.reason, "exited for 8h (exited_for 6h)");
        assert_eq!(out.kept_containers[0].state, "running");
        assert_eq!(kind(&out.kept_containers[0].why), "container_active");
        assert_eq!(out.removals[0].unpinned_by, vec!["ci-job-1".to_string()]);

        let report = Report {
            containers_removed: vec![RemovedContainer {
                container_id: "c1c1c1c1c1c1".to_string(),
                name: "ci-job-1".to_string(),
                policy: "finished-ci-jobs".to_string(),
                reclaimed_bytes: 4096,
            }],
            containers_not_removed: vec![ContainerNotRemoved {
                container_id: "c3c3c3c3c3c3".to_string(),
                name: "ci-job-3".to_string(),
                policy: "finished-ci-jobs".to_string(),
                kind: "conflict",
                message: "running again".to_string(),
            }],
            pinned_skipped: vec![PinnedSkipped {
                image_id: "sha256:ci3".to_string(),
                reference: Some("ci/job:3".to_string()),
                policy: "stale".to_string(),
                container: "ci-job-3".to_string(),
            }],
            reclaimed_bytes: 4096,
            ..Report::default()
        };
        let out: PassOut = strict(&imagegc::output::pass_json(
            &plan,
            &snap,
            Some(&report),
            false,
        ));
        assert_eq!(out.containers_removed[0].reclaimed_bytes, 4096);
        assert_eq!(out.containers_not_removed[0].kind, "conflict");
        assert_eq!(out.pinned_skipped[0].container, "ci-job-3");
        assert!(out.containers_failed.is_empty());
        // A dry run has the same fields, empty.
        let out: PassOut = strict(&imagegc::output::pass_json(&plan, &snap, None, true));
        assert!(out.containers_removed.is_empty() && out.containers.len() == 1);
    }
}
