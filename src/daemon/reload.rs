//! What a policy reload changed, found by comparing values (the policy
//! types are `PartialEq`; globs compare by pattern), said in words for the
//! reload's log line.

use crate::policy::Policy;

/// What differs between two policies, in words.
pub fn describe_changes(old: &Policy, new: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    if old.schedule != new.schedule {
        out.push(format!("schedule {} -> {}", old.schedule, new.schedule));
    }
    if old.timezone != new.timezone {
        out.push(format!("timezone {} -> {}", old.timezone, new.timezone));
    }
    if old.dry_run != new.dry_run {
        out.push(format!("dry_run {} -> {}", old.dry_run, new.dry_run));
    }
    if old.safety != new.safety {
        out.push("[safety] changed".to_string());
    }
    let (was, is) = (old.pressure, new.pressure);
    if was.interval != is.interval {
        out.push(format!(
            "[pressure] interval {} -> {}",
            humantime::format_duration(was.interval),
            humantime::format_duration(is.interval)
        ));
    }
    if was.cooldown != is.cooldown {
        out.push(format!(
            "[pressure] cooldown {} -> {}",
            humantime::format_duration(was.cooldown),
            humantime::format_duration(is.cooldown)
        ));
    }
    describe_tables(&mut out, "policy", &old.rules, &new.rules, |r| &r.name);
    describe_tables(
        &mut out,
        "build-cache policy",
        &old.cache_rules,
        &new.cache_rules,
        |r| &r.name,
    );
    describe_tables(
        &mut out,
        "container policy",
        &old.container_rules,
        &new.container_rules,
        |r| &r.name,
    );
    // Disk-pressure policies of both kinds run in file order: moving a table
    // changes what a pass does even when no table changed.
    let old_names: Vec<&str> = old.names().collect();
    let new_names: Vec<&str> = new.names().collect();
    let mut old_sorted = old_names.clone();
    let mut new_sorted = new_names.clone();
    old_sorted.sort_unstable();
    new_sorted.sort_unstable();
    if old_sorted == new_sorted && old_names != new_names {
        out.push(format!(
            "policy order {} -> {}",
            old_names.join(", "),
            new_names.join(", ")
        ));
    }
    out
}

/// Added, removed and changed tables of one kind (`what`: `policy`,
/// `build-cache policy`, `container policy`), by name; names are unique
/// across the three kinds, so a
/// table that moved from one kind to the other is removed from one and added
/// to the other.
fn describe_tables<T: PartialEq>(
    out: &mut Vec<String>,
    what: &str,
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &str,
) {
    let find = |rules: &'_ [T], wanted: &str| rules.iter().position(|r| name(r) == wanted);
    for r in new {
        if find(old, name(r)).is_none() {
            out.push(format!("{what} {} added", name(r)));
        }
    }
    for r in old {
        if find(new, name(r)).is_none() {
            out.push(format!("{what} {} removed", name(r)));
        }
    }
    for r in new {
        if let Some(o) = find(old, name(r)) {
            if old[o] != *r {
                out.push(format!("{what} {} changed", name(r)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        crate::config::parse(text, "test.toml").expect("valid test policy")
    }

    const BASE: &str = r#"
[safety]
protect = ["registry.example/base/*"]
[[policy]]
name = "dangling"
dangling = true
older_than = "1h"
[[policy]]
name = "stale"
repositories = ["ci/*"]
unused_for = "7d"
"#;

    #[test]
    fn an_identical_file_changes_nothing() {
        assert_eq!(
            describe_changes(&policy(BASE), &policy(BASE)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_changed_glob_is_a_change_of_its_section_and_nothing_else() {
        let new = BASE
            .replace("registry.example/base/*", "registry.example/other/*")
            .replace("ci/*", "ci/**");
        assert_eq!(
            describe_changes(&policy(BASE), &policy(&new)),
            ["[safety] changed", "policy stale changed"]
        );
    }

    #[test]
    fn a_changed_pressure_interval_is_said_with_both_values() {
        let new = format!("[pressure]\ninterval = \"1s\"\ncooldown = \"1m\"\n{BASE}");
        assert_eq!(
            describe_changes(&policy(BASE), &policy(&new)),
            ["[pressure] interval 5s -> 1s"]
        );
    }

    const CACHE: &str = r#"
[[build_cache]]
name = "cache-stale"
types = ["regular"]
unused_for = "2d"
[[build_cache]]
name = "cache-pressure"
disk_high = "90%"
disk_low = "80%"
"#;

    #[test]
    fn build_cache_policies_added_removed_and_changed_are_named_as_such() {
        let old = policy(&format!("{BASE}{CACHE}"));
        assert_eq!(
            describe_changes(&policy(BASE), &old),
            [
                "build-cache policy cache-stale added",
                "build-cache policy cache-pressure added"
            ]
        );
        assert_eq!(
            describe_changes(&old, &policy(BASE)),
            [
                "build-cache policy cache-stale removed",
                "build-cache policy cache-pressure removed"
            ]
        );
        let changed = format!("{BASE}{CACHE}")
            .replace(
                "types = [\"regular\"]",
                "types = [\"regular\", \"source.local\"]",
            )
            .replace("\"cache-pressure\"", "\"cache-full\"");
        assert_eq!(
            describe_changes(&old, &policy(&changed)),
            [
                "build-cache policy cache-full added",
                "build-cache policy cache-pressure removed",
                "build-cache policy cache-stale changed"
            ]
        );
        let keep_storage =
            format!("{BASE}{CACHE}").replace("unused_for = \"2d\"", "keep_storage = \"20GiB\"");
        assert_eq!(
            describe_changes(&old, &policy(&keep_storage)),
            ["build-cache policy cache-stale changed"]
        );
    }

    #[test]
    fn a_name_moved_from_images_to_build_cache_is_removed_there_and_added_here() {
        let new = BASE.replace(
            "[[policy]]\nname = \"stale\"\nrepositories = [\"ci/*\"]\nunused_for = \"7d\"\n",
            "[[build_cache]]\nname = \"stale\"\nunused_for = \"7d\"\n",
        );
        assert_ne!(new, BASE);
        assert_eq!(
            describe_changes(&policy(BASE), &policy(&new)),
            ["policy stale removed", "build-cache policy stale added"]
        );
    }

    #[test]
    fn moving_a_table_changes_the_order_policies_run_in() {
        let old = policy(&format!("{BASE}{CACHE}"));
        let new = policy(&format!("{CACHE}{BASE}"));
        assert_eq!(
            describe_changes(&old, &new),
            [
                "policy order dangling, stale, cache-stale, cache-pressure -> cache-stale, \
              cache-pressure, dangling, stale"
            ]
        );
    }

    const CONTAINERS: &str = r#"
[[containers]]
name = "finished-ci-jobs"
names = ["ci-*"]
exited_for = "6h"
[[containers]]
name = "never-started"
states = ["created"]
older_than = "1d"
"#;

    #[test]
    fn container_policies_added_removed_and_changed_are_named_as_such() {
        let with = policy(&format!("{BASE}{CONTAINERS}"));
        assert_eq!(
            describe_changes(&policy(BASE), &with),
            [
                "container policy finished-ci-jobs added",
                "container policy never-started added"
            ]
        );
        assert_eq!(
            describe_changes(&with, &policy(BASE)),
            [
                "container policy finished-ci-jobs removed",
                "container policy never-started removed"
            ]
        );
        let changed = format!("{BASE}{CONTAINERS}")
            .replace("names = [\"ci-*\"]", "names = [\"ci-*\", \"runner-*\"]")
            .replace("\"never-started\"", "\"created-only\"");
        assert_eq!(
            describe_changes(&with, &policy(&changed)),
            [
                "container policy created-only added",
                "container policy never-started removed",
                "container policy finished-ci-jobs changed"
            ]
        );
        let protected =
            format!("[safety]\nprotect_containers = [\"runner-helper*\"]\n{CONTAINERS}");
        assert_eq!(
            describe_changes(&policy(CONTAINERS), &policy(&protected)),
            ["[safety] changed"]
        );
        let moved = policy(&format!("{CONTAINERS}{BASE}"));
        assert_eq!(
            describe_changes(&with, &moved),
            [
                "policy order dangling, stale, finished-ci-jobs, never-started -> \
                 finished-ci-jobs, never-started, dangling, stale"
            ]
        );
    }

    #[test]
    fn added_and_removed_policies_are_named() {
        let new = BASE.replace("name = \"stale\"", "name = \"old\"");
        assert_eq!(
            describe_changes(&policy(BASE), &policy(&new)),
            ["policy old added", "policy stale removed"]
        );
    }
}
