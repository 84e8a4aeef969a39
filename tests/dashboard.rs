//! The Grafana dashboard `config/grafana/imagegc-dashboard.json` and the alert rules
//! `config/prometheus/imagegc-alerts.yml` against what imagegc really exports.
//!
//! - The dashboard imports anywhere: a data source variable (no `__inputs`), an `instance`
//!   variable for a fleet, every query on the data source variable and filtered by
//!   `instance=~"$instance"`, units that fit the metrics, and valid `PromQL` (promtool).
//! - Every metric name the dashboard or the alert rules use, and every label they group by,
//!   is in a live scrape of `imagegc run` against the real engine (policies scoped to the
//!   test's lab, one of them with percentage disk watermarks), and `promtool check metrics`
//!   finds nothing to say about that scrape.
//!
//! promtool comes with Debian's `prometheus` package; `.ci/run` installs it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{free_port, http_get, imagegc_command, wait_for, DaemonProcess, Lab};
use serde_json::Value;

const DASHBOARD: &str = "config/grafana/imagegc-dashboard.json";
const ALERTS: &str = "config/prometheus/imagegc-alerts.yml";

/// The data source every panel and query must use: the dashboard's variable.
const DATASOURCE_UID: &str = "${datasource}";

/// The filter every metric selector must carry.
const INSTANCE_FILTER: &str = "instance=~\"$instance\"";

/// The one query that is not of an imagegc metric: whether Prometheus can scrape the daemon,
/// with the job matcher of the alert `ImagegcTargetDown`.
const UP_QUERY: &str = "up{job=~\".*imagegc.*\", instance=~\"$instance\"}";

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn dashboard() -> Value {
    let path = repo_path(DASHBOARD);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// Every panel, rows included, with the panels of collapsed rows.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("`panels` is a list") {
        out.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

fn title(panel: &Value) -> &str {
    panel["title"].as_str().unwrap_or("<untitled>")
}

fn variable<'a>(dashboard: &'a Value, name: &str) -> &'a Value {
    dashboard["templating"]["list"]
        .as_array()
        .expect("`templating.list` is a list")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("the dashboard has no `{name}` variable"))
}

/// The query text of a query variable (a string, or `{"query": "..."}` as Grafana 9+ saves it).
fn variable_query(var: &Value) -> &str {
    var["query"]
        .as_str()
        .or_else(|| var["query"]["query"].as_str())
        .unwrap_or_else(|| panic!("variable {} has no query", var["name"]))
}

/// `(panel title, expr)` of every query of every panel.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in all_panels(dashboard).into_iter().filter(|p| !is_row(p)) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default().to_string();
            out.push((title(panel).to_string(), expr));
        }
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Every metric name in a `PromQL` expression: identifiers that start with `imagegc_`, each
/// with its byte offset just past the name.
fn metric_names(expr: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = expr[from..].find("imagegc_") {
        let start = from + found;
        let end = expr[start..]
            .find(|c: char| !is_ident_char(c))
            .map_or(expr.len(), |n| start + n);
        let preceded_by_ident = expr[..start].chars().next_back().is_some_and(is_ident_char);
        if !preceded_by_ident {
            out.push((expr[start..end].to_string(), end));
        }
        from = end;
    }
    out
}

/// The labels of every `by (...)` clause in an expression.
fn grouping_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("by (") {
        rest = &rest[at + 4..];
        let close = rest.find(')').expect("`by (` is closed");
        out.extend(
            rest[..close]
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
        rest = &rest[close..];
    }
    out
}

/// The unit a panel must have, from the base name of a metric it shows.
fn unit_for(metric: &str) -> Option<&'static str> {
    let base = ["_bucket", "_sum", "_count", "_total"]
        .iter()
        .find_map(|s| metric.strip_suffix(s))
        .unwrap_or(metric);
    if base.ends_with("_bytes") {
        Some("bytes")
    } else if base.ends_with("_ratio") {
        Some("percentunit")
    } else if base.ends_with("_seconds") {
        Some("s")
    } else {
        None
    }
}

/// Runs promtool; panics with what to do when it is not installed.
fn promtool(args: &[&str], stdin: Option<&str>) -> Output {
    let child = Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed, and this test needs it: install Debian's `prometheus` \
             package (`apt-get install -y --no-install-recommends prometheus`; stop the \
             prometheus server it may start) or run .ci/run, which does that"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(text.as_bytes()).expect("write to promtool");
    }
    child.wait_with_output().expect("promtool finishes")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn dashboard_imports_anywhere_with_a_datasource_and_a_multi_select_instance_variable() {
    let d = dashboard();
    assert!(
        d.get("__inputs").is_none(),
        "the dashboard uses a data source variable, not import-time __inputs"
    );
    assert!(
        d["title"].is_string() && d["uid"].is_string(),
        "title and uid"
    );
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "a Grafana 9+ JSON model"
    );

    let ds = variable(&d, "datasource");
    assert_eq!(ds["type"], "datasource", "{ds}");
    assert_eq!(ds["query"], "prometheus", "{ds}");

    let instance = variable(&d, "instance");
    assert_eq!(instance["type"], "query", "{instance}");
    assert_eq!(instance["datasource"]["uid"], DATASOURCE_UID, "{instance}");
    assert_eq!(
        variable_query(instance).replace(' ', ""),
        "label_values(imagegc_build_info,instance)"
    );
    assert_eq!(instance["multi"], true, "instance is multi-select");
    assert_eq!(instance["includeAll"], true, "instance offers All");
    assert_eq!(instance["allValue"], ".*", "All matches every instance");
}

#[test]
fn every_query_uses_the_datasource_variable_and_is_filtered_by_instance_and_units_fit() {
    let d = dashboard();
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for panel in all_panels(&d) {
        let t = title(panel);
        let id = panel["id"].as_u64().unwrap_or_else(|| panic!("{t}: no id"));
        assert!(ids.insert(id), "{t}: duplicate panel id {id}");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24)
                && grid["h"].as_u64().is_some()
                && grid["y"].as_u64().is_some(),
            "{t}: gridPos {grid}"
        );
        if is_row(panel) {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], DATASOURCE_UID,
            "{t}: panel data source"
        );
        assert_eq!(panel["datasource"]["type"], "prometheus", "{t}");
        let targets = panel["targets"]
            .as_array()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| panic!("{t}: no queries"));
        let mut ref_ids = BTreeSet::new();
        let mut units = BTreeSet::new();
        for target in targets {
            queries += 1;
            assert_eq!(target["datasource"]["uid"], DATASOURCE_UID, "{t}: {target}");
            assert!(
                ref_ids.insert(target["refId"].as_str().unwrap_or_default()),
                "{t}: duplicate or missing refId"
            );
            let expr = target["expr"].as_str().unwrap_or_default();
            let names = metric_names(expr);
            if names.is_empty() {
                // Prometheus's own `up`, for a daemon that cannot be scraped: only with the
                // alert's job matcher and the instance filter.
                assert_eq!(expr, UP_QUERY, "{t}: queries no imagegc metric");
                continue;
            }
            for (name, end) in names {
                let selector = expr[end..]
                    .strip_prefix('{')
                    .and_then(|s| s.split_once('}'))
                    .map(|(inside, _)| inside);
                assert!(
                    selector.is_some_and(|s| s.contains(INSTANCE_FILTER)),
                    "{t}: {name} in {expr:?} is not filtered by {INSTANCE_FILTER}"
                );
                units.extend(unit_for(&name));
            }
        }
        let unit = panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default();
        assert!(!unit.is_empty(), "{t}: no unit");
        if let [expected] = units.iter().collect::<Vec<_>>()[..] {
            assert_eq!(unit, *expected, "{t}: unit");
        }
    }
    assert!(queries > 0);
}

#[test]
fn dashboard_has_the_promised_panels() {
    // Each panel by what it queries: all of its queries' text, by title.
    let mut by_panel: BTreeMap<String, String> = BTreeMap::new();
    for (t, expr) in panel_queries(&dashboard()) {
        by_panel.entry(t).or_default().push_str(&expr);
    }
    let panel_with = |fragments: &[&str]| {
        assert!(
            by_panel
                .values()
                .any(|text| fragments.iter().all(|f| text.contains(f))),
            "no panel queries all of {fragments:?}"
        );
    };
    panel_with(&["sum by (policy) (increase(imagegc_reclaimed_bytes_total{"]);
    panel_with(&["sum by (policy) (increase(imagegc_removed_references_total{"]);
    panel_with(&["sum by (state) (imagegc_images{"]);
    panel_with(&[
        "imagegc_disk_used_ratio{",
        "imagegc_policy_disk_high_ratio{",
        "imagegc_policy_disk_low_ratio{",
    ]);
    panel_with(&[
        "imagegc_inodes_used_ratio{",
        "imagegc_policy_inodes_high_ratio{",
        "imagegc_policy_inodes_low_ratio{",
    ]);
    panel_with(&[
        "histogram_quantile(",
        "imagegc_pass_duration_seconds_bucket{",
    ]);
    panel_with(&["sum by (kind) (increase(imagegc_removal_failures_total{"]);
    panel_with(&["time() - imagegc_last_success_timestamp_seconds{"]);
    panel_with(&["sum by (policy) (imagegc_reclaimable_bytes{"]);
    panel_with(&[
        "imagegc_image_bytes{",
        "imagegc_policy_disk_high_bytes{",
        "imagegc_policy_disk_low_bytes{",
    ]);
    panel_with(&["sum by (policy) (imagegc_reclaimed_bytes_total{"]);
    panel_with(&["sum by (kind) (increase(imagegc_reclaimed_bytes_total{"]);
    panel_with(&["sum by (kind) (imagegc_reclaimable_bytes{"]);
    panel_with(&[
        "imagegc_image_bytes{",
        "sum by (shared) (imagegc_build_cache_bytes{",
    ]);
    panel_with(&["imagegc_build_cache_records{"]);
    panel_with(&["imagegc_engine_up{"]);
    panel_with(&[UP_QUERY]);
    panel_with(&["sum by (outcome) (increase(imagegc_passes_total{"]);
    panel_with(&["imagegc_config_last_reload_successful{"]);
    panel_with(&["imagegc_config_reloads_total{"]);
    panel_with(&["sum by (state) (imagegc_containers{"]);
    panel_with(&[
        "imagegc_stopped_container_bytes{",
        "imagegc_pinned_image_bytes{",
    ]);
    panel_with(&["sum by (policy) (increase(imagegc_reclaimed_bytes_total{kind=\"container\""]);
    panel_with(&["sum by (policy) (imagegc_reclaimable_bytes{kind=\"container\""]);
    panel_with(&[
        "sum by (policy) (increase(imagegc_removed_build_cache_records_total{",
        "sum by (policy) (increase(imagegc_build_cache_records_not_deleted_total{",
        "sum by (policy) (increase(imagegc_removed_containers_total{",
        "sum by (policy) (increase(imagegc_containers_not_removed_total{",
    ]);
}

/// `(title, description, all query text)` of every panel but rows.
fn panel_texts(dashboard: &Value) -> Vec<(String, String, String)> {
    all_panels(dashboard)
        .into_iter()
        .filter(|p| !is_row(p))
        .map(|p| {
            let queries: String = p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str())
                .collect();
            let description = p["description"].as_str().unwrap_or_default().to_string();
            (title(p).to_string(), description, queries)
        })
        .collect()
}

#[test]
fn panel_descriptions_say_what_reclaimable_bytes_and_increase_really_show() {
    for (t, description, queries) in panel_texts(&dashboard()) {
        assert!(!description.is_empty(), "{t}: no description");
        // The gauge is measured after each pass's removals, so it reads 0 after a pass that
        // did what it planned; it never "keeps rising" between passes.
        if queries.contains("imagegc_reclaimable_bytes") {
            assert!(
                description.contains("right after each pass")
                    && description.contains("reads 0")
                    && !description.contains("keeps rising"),
                "{t}: {description}"
            );
        }
        // increase() of the reclaimed bytes is an estimate that misses a start-up pass.
        if queries.contains("increase(imagegc_reclaimed_bytes_total") {
            assert!(
                description.contains("extrapolates") && description.contains("start-up pass"),
                "{t}: {description}"
            );
        }
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let d = dashboard();
    let dir = tempfile::tempdir().expect("temp dir");
    // Each query as a recording rule, so `promtool check rules` parses it.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut exprs: Vec<String> = panel_queries(&d).into_iter().map(|(_, e)| e).collect();
    // `label_values(metric, label)` is Grafana's; the same selection in PromQL.
    let var = variable_query(variable(&d, "instance"));
    let (metric, label) = var
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .and_then(|s| s.split_once(','))
        .unwrap_or_else(|| panic!("instance variable query {var:?}"));
    exprs.push(format!("group by ({}) ({})", label.trim(), metric.trim()));
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr.replace("$instance", ".*");
        let quoted = serde_json::to_string(&expr).expect("JSON string");
        let _ = write!(
            rules,
            "      - record: dashboard:query{i}\n        expr: {quoted}\n"
        );
    }
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(&path, &rules).expect("write the rules file");
    let out = promtool(
        &["check", "rules", path.to_str().expect("utf-8 path")],
        None,
    );
    assert!(out.status.success(), "promtool: {}\n{rules}", said(&out));
}

// ---------------------------------------------------------------------------------------------
// Against a live `imagegc run`
// ---------------------------------------------------------------------------------------------

/// Sample name → the label names its samples carry, from an exposition.
fn samples(exposition: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in exposition.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_string()).or_default();
        if let Some(inside) = line[name_end..]
            .strip_prefix('{')
            .and_then(|s| s.split_once('}'))
            .map(|(inside, _)| inside)
        {
            // Label values here are policy names and fixed words: no `,` or `=` inside.
            labels.extend(
                inside
                    .split(',')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(k, _)| k.trim().to_string()),
            );
        }
    }
    out
}

/// Metrics imagegc exports that no panel or alert shows, and why.
const NOT_ON_THE_DASHBOARD: &[&str] = &[
    // When the daemon started: the "Time since" panels and `up` cover a restart.
    "imagegc_start_time_seconds",
];

/// Every `imagegc_` metric name in the alert rules file.
fn alert_rule_metrics() -> BTreeSet<String> {
    let path = repo_path(ALERTS);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| metric_names(l).into_iter().map(|(name, _)| name))
        .collect()
}

fn policy(lab: &Lab, port: u16, state: &Path) -> String {
    format!(
        r#"
schedule = "*/2 * * * * *"
run_on_start = true
[metrics]
listen = "127.0.0.1:{port}"
[state]
path = "{state}"
[safety]
min_age = "1h"
[[policy]]
name = "dangling"
{sel}
dangling = true
older_than = "1h"
[[policy]]
name = "stale"
{sel}
unused_for = "30d"
[[policy]]
name = "disk-pressure"
{sel}
disk_high = "99%"
disk_low = "98%"
[[policy]]
name = "size-pressure"
{sel}
disk_high = "900TiB"
disk_low = "800TiB"
[[policy]]
name = "inode-pressure"
{sel}
inodes_high = "99%"
inodes_low = "98%"
# Tables of the other kinds, so their per-policy series are exported. The
# shared engine's build cache is not this test's: its condition never holds
# (no record is 270 years old), so it removes nothing.
[[build_cache]]
name = "ancient-cache"
older_than = "100000d"
[[containers]]
name = "finished"
labels = ["{label}"]
exited_for = "100000d"
"#,
        state = state.display(),
        sel = lab.selector(),
        label = lab.label(),
    )
}

/// Every metric imagegc exports is on a panel or in an alert rule (histogram series count as
/// their base name), but for the few that are deliberately left off.
fn every_exported_metric_is_shown(
    exported: &BTreeMap<String, BTreeSet<String>>,
    queries: &[(String, String)],
) {
    let mut shown: BTreeSet<String> = queries
        .iter()
        .flat_map(|(_, expr)| metric_names(expr).into_iter().map(|(n, _)| n))
        .collect();
    shown.extend(alert_rule_metrics());
    let base = |name: &str| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name)
            .to_string()
    };
    let shown: BTreeSet<String> = shown.iter().map(|n| base(n)).collect();
    let unshown: Vec<String> = exported
        .keys()
        .map(|n| base(n))
        .filter(|n| !shown.contains(n) && !NOT_ON_THE_DASHBOARD.contains(&n.as_str()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        unshown.is_empty(),
        "exported but on no panel of {DASHBOARD} and in no rule of {ALERTS} \
         (add a panel, or list the metric in NOT_ON_THE_DASHBOARD with why): {unshown:?}"
    );
}

/// One word for each outcome across the counters that have an `outcome` label.
fn outcome_words_agree(scrape: &str) {
    let mut outcomes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in scrape.lines().filter(|l| !l.starts_with('#')) {
        if let Some((name, rest)) = line.split_once("{outcome=\"") {
            if let Some((value, _)) = rest.split_once('"') {
                outcomes
                    .entry(name.to_string())
                    .or_default()
                    .insert(value.to_string());
            }
        }
    }
    let passes = &outcomes["imagegc_passes_total"];
    let reloads = &outcomes["imagegc_config_reloads_total"];
    assert!(
        reloads.is_subset(passes),
        "reload outcomes {reloads:?} use words pass outcomes {passes:?} do not"
    );
}

#[test]
fn every_metric_the_dashboard_and_alerts_use_is_in_a_live_scrape_that_promtool_accepts() {
    // Every policy is scoped to the lab, which loads no image: the daemon removes nothing, so
    // the engine lock is not needed.
    let lab = Lab::new();
    let port = free_port();
    let config = lab.write_policy(&policy(&lab, port, &lab.state_path()));
    let child = imagegc_command()
        .args(["--config", config.to_str().expect("utf-8 path"), "run"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start imagegc run");
    let mut daemon = DaemonProcess(child);

    // After the first successful pass, with the disk known.
    let scrape = wait_for(
        "a scrape after the first successful pass",
        Duration::from_secs(60),
        || {
            let (status, body) = http_get(port, "/metrics")?;
            let s = samples(&body);
            let passed = body
                .lines()
                .filter(|l| l.starts_with("imagegc_passes_total{outcome=\"success\","))
                .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
                .sum::<f64>()
                >= 1.0;
            (status == 200 && passed && s.contains_key("imagegc_disk_used_ratio")).then_some(body)
        },
    );
    let exported = samples(&scrape);

    // Every metric the dashboard queries (panels and variables) and every label it groups by.
    let d = dashboard();
    let mut queries = panel_queries(&d);
    queries.push((
        "variable instance".to_string(),
        variable_query(variable(&d, "instance")).to_string(),
    ));
    let mut missing = Vec::new();
    for (t, expr) in &queries {
        let names: Vec<String> = metric_names(expr).into_iter().map(|(n, _)| n).collect();
        for name in &names {
            if !exported.contains_key(name) {
                missing.push(format!("{t}: metric {name}"));
            }
        }
        for label in grouping_labels(expr) {
            let carried = names.iter().any(|n| {
                exported
                    .get(n)
                    .is_some_and(|labels| labels.contains(&label))
            });
            if !carried {
                missing.push(format!("{t}: label {label} of {names:?}"));
            }
        }
    }
    for name in alert_rule_metrics() {
        if !exported.contains_key(&name) {
            missing.push(format!("{ALERTS}: metric {name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "not in the scrape of `imagegc run`:\n  {}\n\nscrape:\n{scrape}",
        missing.join("\n  ")
    );
    // The watermark gauges exist for the percentage policy and the size policy.
    for gauge in [
        "imagegc_policy_disk_high_ratio{policy=\"disk-pressure\"} 0.99",
        "imagegc_policy_disk_low_ratio{policy=\"disk-pressure\"} 0.98",
        "imagegc_policy_disk_high_bytes{policy=\"size-pressure\"} 989560464998400",
        "imagegc_policy_disk_low_bytes{policy=\"size-pressure\"} 879609302220800",
        "imagegc_policy_inodes_high_ratio{policy=\"inode-pressure\"} 0.99",
        "imagegc_policy_inodes_low_ratio{policy=\"inode-pressure\"} 0.98",
    ] {
        assert!(scrape.contains(gauge), "{gauge} missing:\n{scrape}");
    }

    every_exported_metric_is_shown(&exported, &queries);
    outcome_words_agree(&scrape);

    // promtool's linter has nothing to say about the live exposition.
    let out = promtool(&["check", "metrics"], Some(&scrape));
    let text = said(&out);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "promtool check metrics: {text}\n{scrape}"
    );

    // SIGTERM stops it cleanly.
    let pid = daemon.0.id().to_string();
    let term = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = wait_for("the daemon to exit", Duration::from_secs(10), || {
        daemon.0.try_wait().ok().flatten()
    });
    assert!(status.success(), "exit status {status}");
}
