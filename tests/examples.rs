//! The policy cookbook in `config/examples/`: every file parses as the
//! daemon would read it, each does what its comments and the README say, and
//! none is left out of the README.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use imagegc::config;
use imagegc::policy::{
    CacheRule, ContainerRule, Glob, LabelMatch, Policy, Rule, RuleRef, StoppedState, Threshold,
};

const EXAMPLES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples");

/// The files the README and the Debian package promise.
const EXPECTED: [&str; 5] = [
    "ci-build-host.toml",
    "ci-runner.toml",
    "conservative.toml",
    "disk-pressure-only.toml",
    "keep-last-n.toml",
];

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Every file in `config/examples/`, sorted by name.
fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(EXAMPLES_DIR)
        .unwrap_or_else(|e| panic!("cannot list {EXAMPLES_DIR}: {e}"))
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Loads an example the way `imagegc --config FILE` does.
fn load(name: &str) -> Policy {
    let path = Path::new(EXAMPLES_DIR).join(name);
    config::load(&path).unwrap_or_else(|errors| panic!("{name} does not load:\n{errors}"))
}

fn rule<'p>(policy: &'p Policy, name: &str) -> &'p Rule {
    policy
        .rules
        .iter()
        .find(|rule| rule.name == name)
        .unwrap_or_else(|| panic!("no policy named {name:?} in {}", policy.source))
}

fn cache_rule<'p>(policy: &'p Policy, name: &str) -> &'p CacheRule {
    policy
        .cache_rules
        .iter()
        .find(|rule| rule.name == name)
        .unwrap_or_else(|| panic!("no build-cache policy named {name:?} in {}", policy.source))
}

fn container_rule<'p>(policy: &'p Policy, name: &str) -> &'p ContainerRule {
    policy
        .container_rules
        .iter()
        .find(|rule| rule.name == name)
        .unwrap_or_else(|| panic!("no container policy named {name:?} in {}", policy.source))
}

fn any_match(globs: &[Glob], text: &str) -> bool {
    globs.iter().any(|glob| glob.is_match(text))
}

fn ratio(threshold: Threshold) -> f64 {
    match threshold {
        Threshold::Ratio(r) => r,
        Threshold::Bytes(b) => panic!("expected a percentage, found {b} bytes"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn every_example_policy_loads_without_errors() {
    let files = example_files();
    let names: Vec<String> = files
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in EXPECTED {
        assert!(
            names.iter().any(|name| name == expected),
            "config/examples/{expected} is missing; found {names:?}"
        );
    }
    let mut failures = String::new();
    for path in &files {
        assert_eq!(
            path.extension().and_then(|e| e.to_str()),
            Some("toml"),
            "{} is not a .toml policy file; the cookbook holds only policies",
            path.display()
        );
        if let Err(errors) = config::load(path) {
            writeln!(failures, "{errors}").expect("writing to a String cannot fail");
        }
    }
    assert!(failures.is_empty(), "examples with errors:\n{failures}");
}

#[test]
fn no_example_is_a_dry_run_so_a_copied_file_cleans() {
    for name in EXPECTED {
        let policy = load(name);
        assert!(!policy.dry_run, "{name} sets dry_run = true");
        assert!(!policy.rules.is_empty(), "{name} has no policies");
    }
}

#[test]
fn ci_build_host_cleans_dangling_and_stale_ci_images_but_keeps_the_last_3() {
    let policy = load("ci-build-host.toml");
    assert_eq!(policy.rules.len(), 3);

    let dangling = rule(&policy, "dangling");
    assert_eq!(dangling.selectors.dangling, Some(true));
    assert!(dangling.conditions.older_than.is_some());

    let stale = rule(&policy, "stale-ci");
    assert_eq!(stale.conditions.keep_most_recent, Some(3));
    assert!(stale.conditions.unused_for.is_some());
    let repos = &stale.selectors.repositories;
    assert!(any_match(repos, "ci/app"));
    assert!(any_match(repos, "ci/team/app"));
    assert!(any_match(repos, "registry.example.com:5000/ci/app"));
    assert!(!any_match(repos, "debian"));
    assert!(!any_match(repos, "base/debian"));

    let pressure = policy
        .rules
        .iter()
        .find_map(|rule| rule.conditions.disk)
        .expect("a disk-pressure policy");
    assert!(close(ratio(pressure.high), 0.85));
    assert!(close(ratio(pressure.low), 0.70));

    let protect = &policy.safety.protect;
    assert!(any_match(protect, "base/debian:12"));
    assert!(any_match(protect, "ci/app:release-1.2"));
    assert!(any_match(protect, "app:release-1.2"));
    assert!(!any_match(protect, "ci/app:main"));
    assert!(policy.safety.min_age >= Duration::from_secs(2 * 60 * 60));
    assert!(policy.safety.max_removals_per_run.is_some());
}

#[test]
fn ci_build_host_collects_unused_build_cache_and_keeps_cache_mounts_longer() {
    let policy = load("ci-build-host.toml");
    assert_eq!(policy.cache_rules.len(), 4);

    let stale = cache_rule(&policy, "build-cache-stale");
    assert_eq!(stale.selectors.types, ["regular", "source.local"]);
    assert_eq!(stale.conditions.unused_for, Some(2 * DAY));

    let mounts = cache_rule(&policy, "build-cache-mounts");
    assert_eq!(mounts.selectors.types, ["exec.cachemount"]);
    let kept_longer = mounts.conditions.unused_for.expect("unused_for");
    assert!(kept_longer > 2 * DAY, "cache mounts kept {kept_longer:?}");

    let budget = cache_rule(&policy, "build-cache-budget");
    assert!(
        budget.selectors.types.is_empty(),
        "the budget counts every record"
    );
    assert_eq!(budget.conditions.keep_storage, Some(20 << 30));

    let pressure = cache_rule(&policy, "build-cache-pressure");
    let disk = pressure.conditions.disk.expect("disk watermarks");
    assert!(close(ratio(disk.high), 0.85));
    assert!(close(ratio(disk.low), 0.70));

    // Under pressure the build cache goes before images: the file says so,
    // and disk-pressure policies run in file order.
    let at = |wanted: &str| policy.names().position(|name| name == wanted);
    assert!(at("build-cache-pressure") < at("disk-pressure"));
    assert_eq!(policy.order.len(), 7);
    assert!(matches!(policy.order.last(), Some(RuleRef::Image(_))));
}

#[test]
fn ci_runner_removes_finished_build_containers_then_the_images_they_pinned() {
    let policy = load("ci-runner.toml");
    let hour = Duration::from_secs(3600);

    let finished = container_rule(&policy, "finished-ci-jobs");
    assert_eq!(
        finished.selectors.states,
        [StoppedState::Exited, StoppedState::Dead]
    );
    assert_eq!(finished.conditions.exited_for, Some(6 * hour));
    assert_eq!(finished.conditions.older_than, None);
    let names = &finished.selectors.names;
    assert!(any_match(
        names,
        "runner-abc123-project-42-concurrent-0-build-1"
    ));
    assert!(!any_match(names, "postgres"));
    assert_eq!(
        finished.selectors.labels,
        [LabelMatch {
            key: "com.gitlab.gitlab-runner.type".into(),
            value: Some("build".into()),
        }]
    );
    // Compose containers are left alone: no policy names the label.
    let compose = "com.docker.compose.project";
    assert!(policy.container_rules.iter().all(|r| r
        .selectors
        .labels
        .iter()
        .all(|l| l.key != compose)));

    let created = container_rule(&policy, "never-started");
    assert_eq!(created.selectors.states, [StoppedState::Created]);
    assert_eq!(created.conditions.older_than, Some(DAY));

    let protected = &policy.safety.protect_containers;
    assert!(any_match(protected, "runner-helper"));
    assert!(any_match(protected, "runner-helper-7f3a"));
    assert!(!any_match(
        protected,
        "runner-abc123-project-42-concurrent-0-build-1"
    ));
    assert!(any_match(
        &policy.safety.protect,
        "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper"
    ));

    // Their images afterwards: image policies beside the container ones.
    assert_eq!(rule(&policy, "dangling").selectors.dangling, Some(true));
    let jobs = rule(&policy, "job-images");
    assert_eq!(jobs.conditions.unused_for, Some(2 * DAY));
    assert!(rule(&policy, "disk-pressure").conditions.disk.is_some());
    // Container tables come first in the file, as they run first.
    assert!(matches!(
        policy.order.as_slice(),
        [RuleRef::Container(0), RuleRef::Container(1), ..]
    ));
    assert_eq!(policy.order.len(), 5);
}

#[test]
fn disk_pressure_only_acts_only_above_a_size_budget_on_every_image() {
    let policy = load("disk-pressure-only.toml");
    assert_eq!(policy.rules.len(), 1);
    let only = &policy.rules[0];
    assert_eq!(only.selectors.dangling, None);
    assert!(only.selectors.repositories.is_empty());
    assert!(only.selectors.labels.is_empty());
    assert_eq!(only.conditions.unused_for, None);
    assert_eq!(only.conditions.older_than, None);
    assert_eq!(only.conditions.keep_most_recent, None);
    let disk = only.conditions.disk.expect("disk_high and disk_low");
    match (disk.high, disk.low) {
        (Threshold::Bytes(high), Threshold::Bytes(low)) => {
            assert_eq!(high, 50 << 30);
            assert_eq!(low, 40 << 30);
        }
        other => panic!("expected size watermarks (docuum-style), found {other:?}"),
    }
}

#[test]
fn conservative_removes_only_dangling_images_after_a_long_grace_period() {
    let policy = load("conservative.toml");
    assert_eq!(policy.rules.len(), 1);
    let only = &policy.rules[0];
    assert_eq!(only.selectors.dangling, Some(true));
    assert!(only.selectors.repositories.is_empty());
    assert!(only.selectors.labels.is_empty());
    assert_eq!(only.conditions.keep_most_recent, None);
    assert_eq!(only.conditions.disk, None);
    assert!(policy.safety.min_age >= DAY, "min_age is under 24h");
    let older_than = only.conditions.older_than.expect("older_than");
    assert!(older_than >= policy.safety.min_age);
    assert!(policy.safety.max_removals_per_run.is_some());
}

#[test]
fn keep_last_n_trims_only_the_selected_repositories_and_spares_latest() {
    let policy = load("keep-last-n.toml");
    let keep = policy
        .rules
        .iter()
        .find(|rule| rule.conditions.keep_most_recent.is_some())
        .expect("a keep_most_recent policy");
    assert_eq!(keep.conditions.keep_most_recent, Some(5));
    let repos = &keep.selectors.repositories;
    assert!(any_match(repos, "apps/web"));
    assert!(any_match(repos, "apps/team/api"));
    assert!(any_match(repos, "registry.example.com/apps/web"));
    assert!(!any_match(repos, "postgres"));
    let protect = &policy.safety.protect;
    assert!(any_match(protect, "apps/web:latest"));
    assert!(any_match(protect, "apps/team/api:stable"));
    assert!(any_match(protect, "registry.example.com/apps/web:latest"));
    assert!(any_match(protect, "postgres:latest"));
    assert!(!any_match(protect, "apps/web:1.4"));
    assert_eq!(rule(&policy, "dangling").selectors.dangling, Some(true));
}

#[test]
fn every_example_is_described_in_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable");
    let undocumented: Vec<String> = example_files()
        .iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            format!("config/examples/{name}")
        })
        .filter(|path| !readme.contains(path.as_str()))
        .collect();
    assert!(
        undocumented.is_empty(),
        "README.md, \"Example policies\", does not mention {undocumented:?}"
    );
}
