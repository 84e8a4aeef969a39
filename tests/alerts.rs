//! The Prometheus alert rules in `config/prometheus/imagegc-alerts.yml`: promtool accepts
//! them (`promtool check rules`), their unit tests pass (`promtool test rules
//! config/prometheus/imagegc-alerts.test.yml`), and every alert has severity, summary and
//! description, and unit tests where it fires and where it must not.
//!
//! That the metrics the rules use exist in a live scrape is checked in `tests/dashboard.rs`.
//! promtool comes with Debian's `prometheus` package; `.ci/run` installs it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const RULES: &str = "config/prometheus/imagegc-alerts.yml";
const RULE_TESTS: &str = "config/prometheus/imagegc-alerts.test.yml";

/// The alerts the operations kit promises.
const ALERTS: [&str; 8] = [
    "ImagegcConfigReloadFailed",
    "ImagegcDiskAboveHighWatermark",
    "ImagegcEngineDown",
    "ImagegcImageDataAboveHighWatermark",
    "ImagegcNoSuccessfulPass",
    "ImagegcOrphanedContainers",
    "ImagegcPassesFailing",
    "ImagegcTargetDown",
];

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Runs promtool in the crate root; panics with what to do when it is not installed.
fn promtool(args: &[&str]) -> Output {
    match Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed, and this test needs it: install Debian's `prometheus` \
             package (`apt-get install -y --no-install-recommends prometheus`; stop the \
             prometheus server it may start) or run .ci/run, which does that"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    }
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn promtool_check_rules_accepts_the_alert_rules() {
    let out = promtool(&["check", "rules", RULES]);
    let text = said(&out);
    assert!(
        out.status.success(),
        "promtool check rules {RULES}:\n{text}"
    );
    let expected = format!("SUCCESS: {} rules found", ALERTS.len());
    assert!(text.contains(&expected), "expected {expected:?}:\n{text}");
}

#[test]
fn promtool_test_rules_passes_the_alert_unit_tests() {
    let out = promtool(&["test", "rules", RULE_TESTS]);
    let text = said(&out);
    assert!(
        out.status.success(),
        "promtool test rules {RULE_TESTS}:\n{text}"
    );
    assert!(text.contains("SUCCESS"), "{text}");
}

/// The value of a `key: value` line, if the trimmed line (after an optional `- `) has that key.
fn value_of<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let line = line.trim();
    let line = line.strip_prefix("- ").unwrap_or(line);
    line.strip_prefix(key)?.strip_prefix(':').map(str::trim)
}

#[test]
fn every_alert_has_severity_annotations_and_firing_and_quiet_tests() {
    // Rule blocks: from one `- alert:` line to the next.
    let rules = read(RULES);
    let mut blocks: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in rules.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if let Some(name) = value_of(line, "alert") {
            current = Some(name.to_string());
        }
        if let Some(name) = &current {
            let block = blocks.entry(name.clone()).or_default();
            block.push_str(line);
            block.push('\n');
        }
    }
    let names: Vec<&str> = blocks.keys().map(String::as_str).collect();
    assert_eq!(names, ALERTS, "the alerts in {RULES}");
    for (name, block) in &blocks {
        for key in ["expr", "for", "severity", "summary", "description"] {
            assert!(
                block.lines().any(|l| value_of(l, key).is_some()),
                "{name} has no {key}:\n{block}"
            );
        }
        let severity = block.lines().find_map(|l| value_of(l, "severity"));
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity {severity:?}"
        );
    }

    // Unit tests: for each alert, an evaluation that expects it and one that expects none.
    let tests = read(RULE_TESTS);
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let mut alert: Option<String> = None;
    for line in tests.lines() {
        if let Some(name) = value_of(line, "alertname") {
            alert = Some(name.to_string());
        } else if let (Some(value), Some(name)) = (value_of(line, "exp_alerts"), &alert) {
            if value == "[]" {
                quiet.insert(name.clone());
            } else {
                firing.insert(name.clone());
            }
        }
    }
    for name in ALERTS {
        assert!(firing.contains(name), "no unit test where {name} fires");
        assert!(
            quiet.contains(name),
            "no unit test where {name} must not fire"
        );
    }
}
