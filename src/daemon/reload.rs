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
    let has = |p: &Policy, name: &str| p.rules.iter().any(|r| r.name == name);
    for r in &new.rules {
        if !has(old, &r.name) {
            out.push(format!("policy {} added", r.name));
        }
    }
    for r in &old.rules {
        if !has(new, &r.name) {
            out.push(format!("policy {} removed", r.name));
        }
    }
    for r in &new.rules {
        if let Some(o) = old.rules.iter().find(|o| o.name == r.name) {
            if o != r {
                out.push(format!("policy {} changed", r.name));
            }
        }
    }
    out
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
    fn added_and_removed_policies_are_named() {
        let new = BASE.replace("name = \"stale\"", "name = \"old\"");
        assert_eq!(
            describe_changes(&policy(BASE), &policy(&new)),
            ["policy old added", "policy stale removed"]
        );
    }
}
