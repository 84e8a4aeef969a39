//! What `/metrics` and `/healthz` say: series and values after a snapshot, a
//! plan and a pass; per-policy series following the policy file; health
//! transitions; and the HTTP endpoint itself, served on `127.0.0.1:0`.
//!
//! Everything is in memory; no test here talks to an engine.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use imagegc::accounting::Layer;
use imagegc::engine::{Container, DiskUsage, ImageSummary};
use imagegc::execute::{Failed, Removed, Report};
use imagegc::metrics::{serve, Metrics, PassOutcome};
use imagegc::pass::{PassSummary, Trigger};
use imagegc::plan::{plan, Plan};
use imagegc::policy::Policy;
use imagegc::snapshot::{ImageFacts, ImageInput, Snapshot, Tracked};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Three policies: one by age, one by use, one under disk pressure with
/// percentage watermarks.
const POLICY: &str = r#"
[safety]
min_age = "1h"

[[policy]]
name = "dangling"
dangling = true
older_than = "1h"

[[policy]]
name = "stale-ci"
repositories = ["ci/**"]
unused_for = "7d"

[[policy]]
name = "ci-disk-pressure"
repositories = ["ci/**"]
disk_high = "85%"
disk_low = "70%"
"#;

/// The same file after an edit: only the dangling policy is left.
const POLICY_AFTER_EDIT: &str = r#"
[[policy]]
name = "dangling"
dangling = true
older_than = "1h"
"#;

fn parse(text: &str) -> Policy {
    imagegc::config::parse(text, "t.toml").unwrap_or_else(|e| panic!("test policy parses: {e}"))
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("a valid fixed date")
}

fn ago(hours: i64) -> DateTime<Utc> {
    now() - TimeDelta::hours(hours)
}

fn id(name: &str) -> String {
    format!("sha256:{name:0>64}")
}

fn image(
    name: &str,
    tags: &[&str],
    parent: Option<&str>,
    created: DateTime<Utc>,
    layers: &[(&str, u64)],
) -> ImageInput {
    ImageInput {
        summary: ImageSummary {
            id: id(name),
            parent_id: parent.map(id),
            tags: tags.iter().map(ToString::to_string).collect(),
            digests: Vec::new(),
            created,
            labels: BTreeMap::new(),
        },
        facts: Arc::new(ImageFacts {
            layers: layers
                .iter()
                .map(|&(chain, size)| Layer {
                    chain_id: id(chain),
                    size,
                })
                .collect(),
            sizes_exact: true,
            last_tag_time: None,
            blobs: Vec::new(),
        }),
        tracked: Tracked::default(),
    }
}

/// Five images, 3950 unique layer bytes, on a disk half full:
/// - `a`: untagged, childless, two days old: dangling; the `dangling` policy
///   frees its 1000-byte layer.
/// - `b`: `ci/app:1`, a month old and unused: `stale-ci` frees 2000 bytes (its
///   500-byte base layer is shared with `c`).
/// - `c`: `web:1`, used by a running container.
/// - `d` (untagged) and its child `e` (`web:2`): ten minutes old, kept by
///   `min_age`; `d` has a child, so it is not dangling.
fn snapshot() -> Snapshot {
    let images = vec![
        image("a", &[], None, ago(48), &[("a1", 1000)]),
        image(
            "b",
            &["ci/app:1"],
            None,
            ago(30 * 24),
            &[("base", 500), ("b1", 2000)],
        ),
        image(
            "c",
            &["web:1"],
            None,
            ago(30 * 24),
            &[("base", 500), ("c1", 300)],
        ),
        image(
            "d",
            &[],
            None,
            now() - TimeDelta::minutes(10),
            &[("d1", 100)],
        ),
        image(
            "e",
            &["web:2"],
            Some("d"),
            now() - TimeDelta::minutes(10),
            &[("d1", 100), ("e1", 50)],
        ),
    ];
    let containers = vec![Container {
        id: id("c0"),
        names: vec!["web".to_string()],
        image_id: id("c"),
        state: "running".to_string(),
        created: ago(1),
        image_ref: String::new(),
        labels: std::collections::BTreeMap::new(),
    }];
    let disk = DiskUsage {
        total_bytes: 1000,
        used_bytes: 500,
        ..DiskUsage::default()
    };
    Snapshot::build(images, containers, Some(disk))
}

/// The value of the series written exactly as `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        Some(
            rest.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{line:?}: {e}")),
        )
    })
}

#[track_caller]
fn assert_value(text: &str, series: &str, expected: f64) {
    match value(text, series) {
        Some(v) => assert!(
            (v - expected).abs() < 1e-9,
            "{series} is {v}, expected {expected}\n{text}"
        ),
        None => panic!("{series} is missing\n{text}"),
    }
}

fn removed(policy: &str, bytes: u64, deleted_images: usize) -> Removed {
    Removed {
        image_id: id("x"),
        reference: Some("ci/app:1".to_string()),
        policy: policy.to_string(),
        reclaimed_bytes: bytes,
        deleted_images: vec![id("x"); deleted_images],
        untagged: vec!["ci/app:1".to_string()],
    }
}

fn failed(kind: &'static str) -> Failed {
    Failed {
        image_id: id("y"),
        reference: None,
        policy: "dangling".to_string(),
        kind,
        message: "test".to_string(),
    }
}

#[test]
fn inventory_shows_image_counts_bytes_disk_and_what_each_policy_would_free() {
    let policy = parse(POLICY);
    let snap = snapshot();
    let plan = plan(&policy, &snap, now());
    let metrics = Metrics::new();
    metrics.set_policy(&policy);
    metrics.record_inventory(&snap, &plan);
    let text = metrics.render();

    assert_value(&text, r#"imagegc_images{state="dangling"}"#, 1.0);
    assert_value(&text, r#"imagegc_images{state="in_use"}"#, 1.0);
    assert_value(&text, r#"imagegc_images{state="other"}"#, 3.0);
    assert_value(&text, "imagegc_image_bytes", 3950.0);
    assert_value(
        &text,
        r#"imagegc_reclaimable_bytes{kind="image",policy="dangling"}"#,
        1000.0,
    );
    assert_value(
        &text,
        r#"imagegc_reclaimable_bytes{kind="image",policy="stale-ci"}"#,
        2000.0,
    );
    assert_value(
        &text,
        r#"imagegc_reclaimable_bytes{kind="image",policy="ci-disk-pressure"}"#,
        0.0,
    );
    assert_value(&text, "imagegc_disk_used_ratio", 0.5);
    assert_value(
        &text,
        r#"imagegc_policy_disk_high_ratio{policy="ci-disk-pressure"}"#,
        0.85,
    );
    assert_value(
        &text,
        r#"imagegc_policy_disk_low_ratio{policy="ci-disk-pressure"}"#,
        0.70,
    );
    assert!(
        !text.contains(r#"imagegc_policy_disk_high_ratio{policy="stale-ci"}"#),
        "only policies with percentage watermarks have watermark gauges\n{text}"
    );
    assert!(
        !text.contains("sha256:"),
        "no image IDs in label values\n{text}"
    );
    assert!(
        !text.contains("ci/app"),
        "no references in label values\n{text}"
    );
}

#[test]
fn reclaimable_bytes_drop_to_zero_when_the_next_plan_frees_nothing() {
    let policy = parse(POLICY);
    let snap = snapshot();
    let metrics = Metrics::new();
    metrics.set_policy(&policy);
    metrics.record_inventory(&snap, &plan(&policy, &snap, now()));
    metrics.record_inventory(&snap, &Plan::default());
    let text = metrics.render();
    assert_value(
        &text,
        r#"imagegc_reclaimable_bytes{kind="image",policy="dangling"}"#,
        0.0,
    );
    assert_value(
        &text,
        r#"imagegc_reclaimable_bytes{kind="image",policy="stale-ci"}"#,
        0.0,
    );
}

#[test]
fn kept_counts_the_last_plan_by_safety_rule_and_shows_every_rule_at_zero() {
    use imagegc::plan::{Kept, KeptBecause};
    let metrics = Metrics::new();
    let snap = snapshot();
    let kept = |reason: KeptBecause| Kept {
        image: 0,
        image_id: id("a"),
        reference: None,
        policy: "dangling".into(),
        reason,
    };
    let in_use = || {
        kept(KeptBecause::InUse {
            container: id("c"),
            state: "exited".into(),
        })
    };
    let planned = Plan {
        kept: vec![
            in_use(),
            in_use(),
            kept(KeptBecause::TooYoung {
                min_age: TimeDelta::hours(1),
                since: "created",
                age: TimeDelta::minutes(5),
            }),
        ],
        ..Plan::default()
    };
    let fresh = metrics.render();
    for word in KeptBecause::WORDS {
        assert_value(&fresh, &format!("imagegc_kept{{reason=\"{word}\"}}"), 0.0);
    }
    metrics.record_inventory(&snap, &planned);
    let text = metrics.render();
    assert_value(&text, r#"imagegc_kept{reason="in_use"}"#, 2.0);
    assert_value(&text, r#"imagegc_kept{reason="min_age"}"#, 1.0);
    assert_value(&text, r#"imagegc_kept{reason="protect_glob"}"#, 0.0);
    metrics.record_inventory(&snap, &Plan::default());
    assert_value(&metrics.render(), r#"imagegc_kept{reason="in_use"}"#, 0.0);
}

#[test]
fn disk_used_ratio_is_absent_while_the_disk_is_unknown() {
    let policy = parse(POLICY);
    let metrics = Metrics::new();
    assert!(value(&metrics.render(), "imagegc_disk_used_ratio").is_none());
    let snap = snapshot();
    metrics.record_inventory(&snap, &plan(&policy, &snap, now()));
    assert_value(&metrics.render(), "imagegc_disk_used_ratio", 0.5);
    let remote = Snapshot::build(Vec::new(), Vec::new(), None);
    metrics.record_inventory(&remote, &Plan::default());
    assert!(value(&metrics.render(), "imagegc_disk_used_ratio").is_none());
}

#[test]
fn inode_use_and_inode_watermarks_are_exported_and_inode_use_is_absent_without_inode_counts() {
    let policy = parse(&format!(
        "{POLICY}\n[[policy]]\nname = \"ci-inodes\"\nrepositories = [\"ci/**\"]\n\
         inodes_high = \"90%\"\ninodes_low = \"80%\"\n\
         [[build_cache]]\nname = \"cache-inodes\"\ninodes_high = \"95%\"\ninodes_low = \"50%\"\n"
    ));
    let metrics = Metrics::new();
    metrics.set_policy(&policy);
    let mut snap = snapshot();
    snap.disk = snap.disk.map(|d| d.with_inodes(1000, 250));
    metrics.record_inventory(&snap, &plan(&policy, &snap, now()));
    let text = metrics.render();
    assert_value(&text, "imagegc_inodes_used_ratio", 0.75);
    for (series, want) in [
        (
            r#"imagegc_policy_inodes_high_ratio{policy="ci-inodes"}"#,
            0.9,
        ),
        (
            r#"imagegc_policy_inodes_low_ratio{policy="ci-inodes"}"#,
            0.8,
        ),
        (
            r#"imagegc_policy_inodes_high_ratio{policy="cache-inodes"}"#,
            0.95,
        ),
        (
            r#"imagegc_policy_inodes_low_ratio{policy="cache-inodes"}"#,
            0.5,
        ),
    ] {
        assert_value(&text, series, want);
    }
    assert!(
        !text.contains(r#"imagegc_policy_inodes_high_ratio{policy="ci-disk-pressure"}"#),
        "only policies with inode watermarks have inode watermark gauges\n{text}"
    );
    // btrfs (no inode counts), then a remote engine: no inode-use series.
    let btrfs = snapshot();
    metrics.record_inventory(&btrfs, &plan(&policy, &btrfs, now()));
    assert!(value(&metrics.render(), "imagegc_inodes_used_ratio").is_none());
    // A reload without the inode policies drops their gauges.
    metrics.set_policy(&parse(POLICY));
    assert!(!metrics
        .render()
        .contains("imagegc_policy_inodes_high_ratio"));
}

#[test]
fn free_disk_bytes_are_exported_like_df_avail_and_absent_while_unknown() {
    let policy = parse(POLICY);
    let metrics = Metrics::new();
    assert!(value(&metrics.render(), "imagegc_disk_free_bytes").is_none());
    let snap = snapshot();
    metrics.record_inventory(&snap, &plan(&policy, &snap, now()));
    // used 500 of the 1000 bytes used + available: 500 still available.
    assert_value(&metrics.render(), "imagegc_disk_free_bytes", 500.0);
    let remote = Snapshot::build(Vec::new(), Vec::new(), None);
    metrics.record_inventory(&remote, &Plan::default());
    assert!(value(&metrics.render(), "imagegc_disk_free_bytes").is_none());
}

#[test]
fn a_pass_abandoned_as_stuck_makes_health_say_why_until_a_pass_succeeds() {
    let metrics = Metrics::new();
    metrics.set_engine_up(true);
    metrics.record_pass(PassOutcome::Failed, None, Duration::from_secs(600), now());
    metrics.record_stall("the last pass was abandoned: no engine call finished for 10m");
    let health = metrics.health();
    assert!(!health.ok);
    assert!(
        health.reason.contains("no engine call finished for 10m"),
        "{}",
        health.reason
    );
    metrics.record_pass(PassOutcome::Success, None, Duration::from_secs(1), now());
    assert!(metrics.health().ok, "{}", metrics.health().reason);
}

#[test]
fn a_fresh_registry_shows_every_labelled_series_at_zero_and_the_build() {
    let metrics = Metrics::new();
    let text = metrics.render();
    for kind in ["conflict", "not_found", "engine"] {
        assert_value(
            &text,
            &format!(r#"imagegc_removal_failures_total{{kind="{kind}"}}"#),
            0.0,
        );
    }
    for outcome in ["success", "failed", "cancelled"] {
        for trigger in ["start", "schedule", "reload"] {
            assert_value(
                &text,
                &format!(r#"imagegc_passes_total{{outcome="{outcome}",trigger="{trigger}"}}"#),
                0.0,
            );
        }
    }
    for outcome in ["success", "failed"] {
        assert_value(
            &text,
            &format!(r#"imagegc_config_reloads_total{{outcome="{outcome}"}}"#),
            0.0,
        );
    }
    assert_value(
        &text,
        &format!(
            r#"imagegc_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        ),
        1.0,
    );
    assert_value(&text, "imagegc_engine_up", 0.0);
    assert_value(&text, "imagegc_config_last_reload_successful", 1.0);
    for line in text.lines().filter(|l| l.starts_with("# HELP ")) {
        let help = line.splitn(4, ' ').nth(3).unwrap_or_default();
        assert!(help.len() > 20, "HELP says what the metric is: {line}");
    }
}

#[test]
fn per_policy_counters_start_at_zero_once_the_policy_is_set() {
    let metrics = Metrics::new();
    metrics.set_policy(&parse(POLICY));
    let text = metrics.render();
    for policy in ["dangling", "stale-ci", "ci-disk-pressure"] {
        for name in [
            "imagegc_removed_references_total",
            "imagegc_deleted_images_total",
        ] {
            assert_value(&text, &format!(r#"{name}{{policy="{policy}"}}"#), 0.0);
        }
        assert_value(
            &text,
            &format!(r#"imagegc_reclaimed_bytes_total{{kind="image",policy="{policy}"}}"#),
            0.0,
        );
    }
}

#[test]
fn a_removed_policy_loses_its_gauges_but_keeps_its_totals() {
    let policy = parse(POLICY);
    let snap = snapshot();
    let metrics = Metrics::new();
    metrics.set_policy(&policy);
    metrics.record_inventory(&snap, &plan(&policy, &snap, now()));
    metrics.set_policy(&parse(POLICY_AFTER_EDIT));
    let text = metrics.render();

    assert!(
        !text.contains(r#"imagegc_reclaimable_bytes{kind="image",policy="stale-ci"}"#),
        "{text}"
    );
    assert!(
        !text.contains(r#"policy="ci-disk-pressure"} 0.85"#),
        "watermarks of a removed policy disappear\n{text}"
    );
    assert!(
        !text.contains("imagegc_policy_disk_high_ratio"),
        "no policy has watermarks any more\n{text}"
    );
    assert_value(
        &text,
        r#"imagegc_reclaimable_bytes{kind="image",policy="dangling"}"#,
        1000.0,
    );
    assert_value(
        &text,
        r#"imagegc_reclaimed_bytes_total{kind="image",policy="stale-ci"}"#,
        0.0,
    );
}

#[test]
fn a_pass_adds_what_it_removed_per_policy_and_what_failed_per_kind() {
    let metrics = Metrics::new();
    metrics.set_policy(&parse(POLICY));
    let report = Report {
        removed: vec![
            removed("stale-ci", 2000, 1),
            removed("stale-ci", 0, 0),
            removed("dangling", 1000, 1),
        ],
        failed: vec![failed("conflict"), failed("conflict"), failed("not_found")],
        ..Report::default()
    };
    let finished = now();
    let summary = PassSummary {
        trigger: Trigger::Start,
        outcome: PassOutcome::Success,
        started: finished - TimeDelta::milliseconds(1500),
        finished,
        duration: Duration::from_millis(1500),
        work: None,
    };
    metrics.record_summary(&summary, Some(&report));
    let text = metrics.render();

    assert_value(
        &text,
        r#"imagegc_reclaimed_bytes_total{kind="image",policy="stale-ci"}"#,
        2000.0,
    );
    assert_value(
        &text,
        r#"imagegc_reclaimed_bytes_total{kind="image",policy="dangling"}"#,
        1000.0,
    );
    assert_value(
        &text,
        r#"imagegc_removed_references_total{policy="stale-ci"}"#,
        2.0,
    );
    assert_value(
        &text,
        r#"imagegc_deleted_images_total{policy="stale-ci"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"imagegc_reclaimed_bytes_total{kind="image",policy="ci-disk-pressure"}"#,
        0.0,
    );
    assert_value(
        &text,
        r#"imagegc_removal_failures_total{kind="conflict"}"#,
        2.0,
    );
    assert_value(
        &text,
        r#"imagegc_removal_failures_total{kind="not_found"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"imagegc_removal_failures_total{kind="engine"}"#,
        0.0,
    );
    assert_value(
        &text,
        r#"imagegc_passes_total{outcome="success",trigger="start"}"#,
        1.0,
    );
    assert_value(&text, "imagegc_pass_duration_seconds_count", 1.0);
    assert_value(&text, "imagegc_pass_duration_seconds_sum", 1.5);
    assert_value(
        &text,
        r#"imagegc_pass_duration_seconds_bucket{le="1"}"#,
        0.0,
    );
    assert_value(
        &text,
        r#"imagegc_pass_duration_seconds_bucket{le="2.5"}"#,
        1.0,
    );
    let at = finished.timestamp() as f64;
    assert_value(&text, "imagegc_last_pass_timestamp_seconds", at);
    assert_value(&text, "imagegc_last_success_timestamp_seconds", at);

    metrics.record_pass(
        PassOutcome::Failed,
        None,
        Duration::from_secs(1),
        finished + TimeDelta::hours(1),
    );
    let text = metrics.render();
    assert_value(
        &text,
        r#"imagegc_passes_total{outcome="failed",trigger="schedule"}"#,
        1.0,
    );
    assert_value(&text, "imagegc_last_pass_timestamp_seconds", at + 3600.0);
    assert_value(&text, "imagegc_last_success_timestamp_seconds", at);
}

#[test]
fn reloads_are_counted_and_the_last_one_decides_the_gauge() {
    let metrics = Metrics::new();
    metrics.record_reload(false);
    let text = metrics.render();
    assert_value(
        &text,
        r#"imagegc_config_reloads_total{outcome="failed"}"#,
        1.0,
    );
    assert_value(&text, "imagegc_config_last_reload_successful", 0.0);
    metrics.record_reload(true);
    let text = metrics.render();
    assert_value(
        &text,
        r#"imagegc_config_reloads_total{outcome="success"}"#,
        1.0,
    );
    assert_value(&text, "imagegc_config_last_reload_successful", 1.0);
}

#[test]
fn health_follows_the_engine_and_the_last_pass_that_ran_to_an_end() {
    let metrics = Metrics::new();
    let health = metrics.health();
    assert!(!health.ok, "the engine has not been reached yet");
    assert!(health.reason.contains("engine"), "{}", health.reason);

    metrics.set_engine_up(true);
    assert!(metrics.health().ok, "engine up and no pass yet is healthy");

    metrics.record_pass(PassOutcome::Failed, None, Duration::from_secs(1), now());
    let health = metrics.health();
    assert!(!health.ok);
    assert!(
        health.reason.contains("last pass failed"),
        "{}",
        health.reason
    );

    metrics.record_pass(PassOutcome::Cancelled, None, Duration::from_secs(1), now());
    assert!(
        !metrics.health().ok,
        "a cancelled pass does not clear a failure"
    );

    metrics.record_pass(PassOutcome::Success, None, Duration::from_secs(1), now());
    assert!(metrics.health().ok);

    metrics.record_pass(PassOutcome::Cancelled, None, Duration::from_secs(1), now());
    assert!(
        metrics.health().ok,
        "a cancelled pass does not make it unhealthy"
    );

    metrics.set_engine_up(false);
    let health = metrics.health();
    assert!(!health.ok);
    assert!(health.reason.contains("engine"), "{}", health.reason);
}

/// One HTTP/1.0 request; returns the status code, the headers (lowercase
/// names) and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("send the request");
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .await
        .expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

#[tokio::test]
async fn the_endpoint_serves_metrics_and_health_until_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("a local address");
    let metrics = Arc::new(Metrics::new());
    metrics.set_policy(&parse(POLICY));
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, Arc::clone(&metrics), shutdown.clone()));

    let (status, headers, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        "text/plain; version=0.0.4"
    );
    assert_value(
        &body,
        r#"imagegc_reclaimed_bytes_total{kind="image",policy="stale-ci"}"#,
        0.0,
    );

    let (status, headers, body) = get(addr, "/healthz").await;
    assert_eq!(status, 503);
    assert_eq!(header(&headers, "content-type"), "application/json");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["status"], "unhealthy");
    assert!(
        json["reason"]
            .as_str()
            .is_some_and(|r| r.contains("engine")),
        "{body}"
    );

    metrics.set_engine_up(true);
    let (status, _, body) = get(addr, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON"),
        serde_json::json!({ "status": "ok" })
    );

    let (status, _, _) = get(addr, "/").await;
    assert_eq!(status, 404);
    let (status, _, _) = get(addr, "/metrics/extra").await;
    assert_eq!(status, 404);

    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops soon after shutdown")
        .expect("the server task does not panic");
    assert!(result.is_ok(), "{result:?}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port is closed after shutdown"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_does_not_hold_up_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("a local address");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, Arc::new(Metrics::new()), shutdown.clone()));

    let mut stalled = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stalled
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("send half a request");
    // Let the server take the connection before shutdown is asked for.
    let (status, _, _) = get(addr, "/metrics").await;
    assert_eq!(status, 200);

    let asked = std::time::Instant::now();
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(8), server)
        .await
        .expect("the server stops within the daemon's 10 s stop budget")
        .expect("the server task does not panic");
    assert!(result.is_ok(), "{result:?}");
    assert!(asked.elapsed() < Duration::from_secs(8));
    drop(stalled);
}

#[test]
fn promtool_finds_no_problem_in_the_rendered_metrics() {
    let policy = parse(POLICY);
    let snap = snapshot();
    let metrics = Metrics::new();
    metrics.set_policy(&policy);
    metrics.set_engine_up(true);
    metrics.record_inventory(&snap, &plan(&policy, &snap, now()));
    let report = Report {
        removed: vec![removed("stale-ci", 2000, 1)],
        failed: vec![failed("conflict")],
        ..Report::default()
    };
    metrics.record_pass(
        PassOutcome::Success,
        Some(&report),
        Duration::from_secs(2),
        now(),
    );
    metrics.record_reload(true);
    let text = metrics.render();

    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("note: promtool is not installed; skipping `promtool check metrics`");
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(text.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool finishes");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

/// Reads from `stream` until the server closes it (EOF or reset), or gives
/// up after `limit`; true when the server closed it.
async fn closed_by_server(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read_until_closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_until_closed).await.is_ok()
}

#[tokio::test]
async fn two_hundred_idle_connections_neither_block_scrapes_nor_stay_open_past_the_bound() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("a local address");
    let metrics = Arc::new(Metrics::new());
    metrics.set_engine_up(true);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, Arc::clone(&metrics), shutdown.clone()));

    let opened = std::time::Instant::now();
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    // Scrapes still get in at once, though every slot was taken.
    for path in ["/healthz", "/metrics"] {
        let (status, _, _) = tokio::time::timeout(Duration::from_secs(3), get(addr, path))
            .await
            .unwrap_or_else(|_| panic!("{path} did not answer within 3 s"));
        assert_eq!(status, 200, "{path}");
    }
    // Beyond the cap, connections are closed at once, not held.
    let mut closed_at_once = 0;
    for stream in &mut idle {
        if closed_by_server(stream, Duration::from_millis(20)).await {
            closed_at_once += 1;
        }
    }
    assert!(
        closed_at_once >= 200 - imagegc::metrics::MAX_CONNECTIONS,
        "only {closed_at_once} of 200 idle connections were closed at once"
    );
    // And the rest are closed once the request deadline passes.
    let bound = imagegc::metrics::REQUEST_TIMEOUT + Duration::from_secs(10);
    for (i, stream) in idle.iter_mut().enumerate() {
        let left = bound.saturating_sub(opened.elapsed());
        assert!(
            closed_by_server(stream, left).await,
            "idle connection {i} still open {:?} after it was opened",
            opened.elapsed()
        );
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(8), server).await;
}

#[tokio::test]
async fn a_client_sending_one_header_byte_a_second_is_cut_off_at_the_request_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("a local address");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, Arc::new(Metrics::new()), shutdown.clone()));

    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let started = std::time::Instant::now();
    // Headers that never end: one byte a second, for up to a minute.
    let loris = tokio::spawn(async move {
        let mut request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n".to_vec();
        request.extend(std::iter::repeat_n(b'x', 60));
        for byte in request {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    loris.abort();
    assert!(
        closed.is_ok(),
        "a slow-loris connection was still open after 30 s"
    );
    assert!(
        started.elapsed() < imagegc::metrics::REQUEST_TIMEOUT + Duration::from_secs(10),
        "closed only after {:?}",
        started.elapsed()
    );
    // The endpoint still serves.
    let (status, _, _) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(8), server).await;
}

#[tokio::test]
async fn a_kept_alive_connection_serves_several_scrapes_then_closes_when_idle() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let addr = listener.local_addr().expect("a local address");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, Arc::new(Metrics::new()), shutdown.clone()));

    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    for _ in 0..3 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("send a request");
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        // The 503 body is JSON ending in `}`.
        while !got.ends_with(b"}") {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("an answer within 5 s")
                .expect("read");
            assert!(
                n > 0,
                "closed before answering: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 503"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    let idle_since = std::time::Instant::now();
    assert!(
        closed_by_server(
            &mut stream,
            imagegc::metrics::REQUEST_TIMEOUT + Duration::from_secs(10)
        )
        .await,
        "an idle kept-alive connection stayed open"
    );
    assert!(
        idle_since.elapsed()
            >= imagegc::metrics::REQUEST_TIMEOUT.saturating_sub(Duration::from_millis(500))
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(8), server).await;
}

/// The metrics policy with one `[[build_cache]]` table added by hand (the
/// table's parsing is the config part's; the metrics only read the names).
fn with_cache_policy() -> Policy {
    let mut p = parse(POLICY);
    p.cache_rules.push(imagegc::policy::CacheRule {
        name: "build-cache".to_string(),
        selectors: imagegc::policy::CacheSelectors::default(),
        conditions: imagegc::policy::CacheConditions {
            unused_for: Some(Duration::from_secs(2 * 86_400)),
            ..imagegc::policy::CacheConditions::default()
        },
    });
    p.order
        .push(imagegc::policy::RuleRef::Cache(p.cache_rules.len() - 1));
    p
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
fn build_cache_shows_its_bytes_by_sharing_its_records_and_what_its_policies_reclaim() {
    use imagegc::fake::cache_record;
    use imagegc::gc::plan::{KeptBecause, KeptRecord, Reason, Reasons, RecordRemoval};
    use imagegc::run::execute::{FailedRecord, RecordNotDeleted, RemovedRecord};

    let policy = with_cache_policy();
    let metrics = Metrics::new();
    metrics.set_policy(&policy);
    let text = metrics.render();
    assert_value(
        &text,
        r#"imagegc_reclaimed_bytes_total{kind="build_cache",policy="build-cache"}"#,
        0.0,
    );
    assert_value(
        &text,
        r#"imagegc_removed_build_cache_records_total{policy="build-cache"}"#,
        0.0,
    );
    assert!(
        !text.contains(r#"imagegc_reclaimed_bytes_total{kind="build_cache",policy="dangling"}"#),
        "an image policy has no build_cache series\n{text}"
    );

    let created = now() - TimeDelta::days(10);
    let mut shared = cache_record("sharedrecord0001", &[], 500, created);
    shared.shared = true;
    let records = vec![
        shared,
        cache_record("ownrecord0000002", &[], 300, created),
        cache_record("busyrecord000003", &[], 40, created),
    ];
    let snap = snapshot().with_build_cache(records);
    let mut plan = plan(&policy, &snap, now());
    let reason = Reasons(vec![Reason::OlderThan {
        age: TimeDelta::days(10),
        limit: TimeDelta::days(2),
    }]);
    plan.records = vec![RecordRemoval {
        record: 1,
        record_id: "ownrecord0000002".to_string(),
        policy: "build-cache".to_string(),
        reason,
        reclaim_bytes: 300,
    }];
    plan.kept_records = vec![KeptRecord {
        record: 2,
        record_id: "busyrecord000003".to_string(),
        policy: "build-cache".to_string(),
        reason: KeptBecause::BuildInUse,
    }];
    metrics.record_inventory(&snap, &plan);
    let text = metrics.render();
    assert_value(&text, r#"imagegc_build_cache_bytes{shared="true"}"#, 500.0);
    assert_value(&text, r#"imagegc_build_cache_bytes{shared="false"}"#, 340.0);
    assert_value(&text, "imagegc_build_cache_records", 3.0);
    assert_value(
        &text,
        r#"imagegc_reclaimable_bytes{kind="build_cache",policy="build-cache"}"#,
        300.0,
    );
    assert_value(&text, r#"imagegc_kept{reason="build_in_use"}"#, 1.0);
    assert_value(&text, r#"imagegc_kept{reason="has_children"}"#, 0.0);

    let report = Report {
        removed: vec![removed("stale-ci", 2000, 1)],
        records_removed: vec![RemovedRecord {
            record_id: "ownrecord0000002".to_string(),
            policy: "build-cache".to_string(),
            reclaimed_bytes: 300,
            engine_reported_bytes: 300,
        }],
        records_not_deleted: vec![RecordNotDeleted {
            record_id: "sharedrecord0001".to_string(),
            policy: "build-cache".to_string(),
        }],
        records_failed: vec![FailedRecord {
            record_id: "busyrecord000003".to_string(),
            policy: "build-cache".to_string(),
            kind: "engine",
            message: "boom".to_string(),
        }],
        ..Report::default()
    };
    metrics.record_pass(
        PassOutcome::Success,
        Some(&report),
        Duration::from_secs(1),
        now(),
    );
    let text = metrics.render();
    assert_value(
        &text,
        r#"imagegc_reclaimed_bytes_total{kind="build_cache",policy="build-cache"}"#,
        300.0,
    );
    assert_value(
        &text,
        r#"imagegc_reclaimed_bytes_total{kind="image",policy="stale-ci"}"#,
        2000.0,
    );
    assert_value(
        &text,
        r#"imagegc_removed_build_cache_records_total{policy="build-cache"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"imagegc_build_cache_records_not_deleted_total{policy="build-cache"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"imagegc_removal_failures_total{kind="engine"}"#,
        1.0,
    );
}

// ---------------------------------------------------------------------------
// Stopped containers (issue 9).

/// [`POLICY`] with a `[[containers]]` table `old-jobs` (built from the
/// validated types: the policy file's `[[containers]]` is another part's).
fn policy_with_containers() -> Policy {
    let mut policy = parse(POLICY);
    policy.container_rules.push(imagegc::policy::ContainerRule {
        name: "old-jobs".to_string(),
        selectors: imagegc::policy::ContainerSelectors::default(),
        conditions: imagegc::policy::ContainerConditions {
            exited_for: Some(Duration::from_secs(3600)),
            older_than: None,
        },
    });
    policy
}

/// [`snapshot`] plus: `ci-1` (exited, 700-byte writable layer) the only user
/// of `ci/app:1` (2500 layer bytes), `ci-2` (exited, size not read) the only
/// user of `a` (1000), a dead container with 30 bytes on `web:1` (which the
/// running `web` also uses, so it is not pinned by stopped containers only),
/// and one in a state this imagegc does not know.
fn snapshot_with_containers() -> Snapshot {
    let base = snapshot();
    let mut containers: Vec<Container> = base
        .containers
        .iter()
        .map(|c| c.container.clone())
        .collect();
    let mut add = |name: &str, image: &str, state: &str| {
        containers.push(Container {
            id: id(name),
            names: vec![name.to_string()],
            image_id: id(image),
            state: state.to_string(),
            created: ago(30),
            image_ref: String::new(),
            labels: BTreeMap::new(),
        });
    };
    add("ci-1", "b", "exited");
    add("ci-2", "a", "exited");
    add("zombie", "c", "dead");
    add("odd", "e", "hibernating");
    let images = vec![
        image("a", &[], None, ago(48), &[("a1", 1000)]),
        image(
            "b",
            &["ci/app:1"],
            None,
            ago(30 * 24),
            &[("base", 500), ("b1", 2000)],
        ),
        image(
            "c",
            &["web:1"],
            None,
            ago(30 * 24),
            &[("base", 500), ("c1", 300)],
        ),
        image(
            "d",
            &[],
            None,
            now() - TimeDelta::minutes(10),
            &[("d1", 100)],
        ),
        image(
            "e",
            &["web:2"],
            Some("d"),
            now() - TimeDelta::minutes(10),
            &[("d1", 100), ("e1", 50)],
        ),
    ];
    let mut snap = Snapshot::build(images, containers, base.disk);
    for c in &mut snap.containers {
        let size = match c.container.names[0].as_str() {
            "ci-1" => Some(700),
            "zombie" => Some(30),
            "web" => Some(5),
            _ => None,
        };
        c.details = Some(imagegc::engine::ContainerDetails {
            size_rw: size,
            ..imagegc::engine::ContainerDetails::default()
        });
    }
    snap
}

#[test]
fn containers_are_counted_by_state_with_the_bytes_stopped_ones_hold_and_the_images_they_pin() {
    use imagegc::gc::plan::{ContainerRemoval, KeptBecause, KeptContainer, Reasons};
    let metrics = Metrics::new();
    metrics.set_policy(&policy_with_containers());
    let snap = snapshot_with_containers();
    let index = |name: &str| {
        snap.containers
            .iter()
            .position(|c| c.container.names[0] == name)
            .expect("listed")
    };
    let plan = Plan {
        containers: vec![ContainerRemoval {
            container: index("ci-1"),
            container_id: id("ci-1"),
            name: "ci-1".to_string(),
            policy: "old-jobs".to_string(),
            reason: Reasons(Vec::new()),
            reclaim_bytes: 700,
            unpins: vec![1],
        }],
        kept_containers: vec![KeptContainer {
            container: index("web"),
            container_id: id("c0"),
            name: "web".to_string(),
            policy: "old-jobs".to_string(),
            reason: KeptBecause::ContainerActive {
                state: "running".to_string(),
            },
        }],
        ..Plan::default()
    };
    metrics.record_inventory(&snap, &plan);
    let text = metrics.render();
    for (state, n) in [
        ("running", 1.0),
        ("exited", 2.0),
        ("dead", 1.0),
        ("other", 1.0),
        ("created", 0.0),
        ("paused", 0.0),
        ("restarting", 0.0),
        ("removing", 0.0),
    ] {
        assert_value(
            &text,
            &format!(r#"imagegc_containers{{state="{state}"}}"#),
            n,
        );
    }
    // 700 (ci-1) + 30 (zombie); web runs, ci-2's size was not read.
    assert_value(&text, "imagegc_stopped_container_bytes", 730.0);
    // ci/app:1 (500 + 2000) and a (1000); web:1 has a running user.
    assert_value(&text, "imagegc_pinned_image_bytes", 3500.0);
    assert_value(
        &text,
        r#"imagegc_reclaimable_bytes{kind="container",policy="old-jobs"}"#,
        700.0,
    );
    assert_value(&text, r#"imagegc_kept{reason="container_active"}"#, 1.0);
}

#[test]
fn a_pass_counts_containers_removed_refused_and_failed_with_their_bytes_as_kind_container() {
    use imagegc::execute::{ContainerNotRemoved, RemovedContainer};
    let metrics = Metrics::new();
    metrics.set_policy(&policy_with_containers());
    let text = metrics.render();
    assert_value(
        &text,
        r#"imagegc_removed_containers_total{policy="old-jobs"}"#,
        0.0,
    );
    assert_value(
        &text,
        r#"imagegc_containers_not_removed_total{policy="old-jobs"}"#,
        0.0,
    );
    assert_value(
        &text,
        r#"imagegc_reclaimed_bytes_total{kind="container",policy="old-jobs"}"#,
        0.0,
    );
    let not = |kind: &'static str| ContainerNotRemoved {
        container_id: id("ci-9"),
        name: "ci-9".to_string(),
        policy: "old-jobs".to_string(),
        kind,
        message: "test".to_string(),
    };
    let report = Report {
        containers_removed: vec![RemovedContainer {
            container_id: id("ci-1"),
            name: "ci-1".to_string(),
            policy: "old-jobs".to_string(),
            reclaimed_bytes: 700,
        }],
        containers_not_removed: vec![not("conflict")],
        containers_failed: vec![not("engine")],
        reclaimed_bytes: 700,
        ..Report::default()
    };
    metrics.record_pass(
        PassOutcome::Success,
        Some(&report),
        Duration::from_millis(5),
        now(),
    );
    let text = metrics.render();
    assert_value(
        &text,
        r#"imagegc_removed_containers_total{policy="old-jobs"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"imagegc_containers_not_removed_total{policy="old-jobs"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"imagegc_reclaimed_bytes_total{kind="container",policy="old-jobs"}"#,
        700.0,
    );
    assert_value(
        &text,
        r#"imagegc_removal_failures_total{kind="engine"}"#,
        1.0,
    );
    assert_value(
        &text,
        r#"imagegc_removal_failures_total{kind="conflict"}"#,
        0.0,
    );
}
