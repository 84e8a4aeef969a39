//! `[[build_cache]]` tables in the policy file: what a good one becomes, how
//! they are ordered with the `[[policy]]` tables, and that every mistake in
//! them is reported at once, with its line and column. One-error cases (each
//! mistake on its own) are in `tests/config_errors.rs` beside the others.

use std::time::Duration;

use imagegc::config::{self, ConfigErrors};
use imagegc::policy::{
    CacheConditions, CacheRule, CacheSelectors, DiskPressure, RuleRef, Threshold,
    CACHE_RECORD_TYPES,
};

const FILE: &str = "/etc/imagegc/build-host.toml";

const GIB: u64 = 1024 * 1024 * 1024;

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 3600)
}

fn parse(text: &str) -> imagegc::policy::Policy {
    config::parse(text, FILE).unwrap_or_else(|e| panic!("{e}"))
}

/// The issue's example table, and a second one with the other conditions.
const GOOD: &str = r#"
[[build_cache]]
name = "build-cache"
types = ["regular", "source.local", "exec.cachemount"]
unused_for = "2d"
older_than = "14d"
keep_storage = "20GiB"
disk_high = "85%"
disk_low = "70%"

[[build_cache]]
name = "cache-budget"
disk_high = "40GiB"
disk_low = "30 GB"
"#;

#[test]
fn a_good_file_becomes_the_cache_rules_written() {
    let policy = parse(GOOD);
    assert!(policy.rules.is_empty(), "no [[policy]] tables were written");
    assert_eq!(
        policy.cache_rules,
        [
            CacheRule {
                name: "build-cache".into(),
                selectors: CacheSelectors {
                    types: vec![
                        "regular".into(),
                        "source.local".into(),
                        "exec.cachemount".into()
                    ],
                },
                conditions: CacheConditions {
                    unused_for: Some(days(2)),
                    older_than: Some(days(14)),
                    keep_storage: Some(20 * GIB),
                    disk: Some(DiskPressure {
                        high: Threshold::Ratio(0.85),
                        low: Threshold::Ratio(0.7),
                    }),
                    inodes: None,
                },
            },
            CacheRule {
                name: "cache-budget".into(),
                selectors: CacheSelectors::default(),
                conditions: CacheConditions {
                    disk: Some(DiskPressure {
                        high: Threshold::Bytes(40 * GIB),
                        low: Threshold::Bytes(30_000_000_000),
                    }),
                    ..CacheConditions::default()
                },
            },
        ]
    );
    assert_eq!(policy.order, [RuleRef::Cache(0), RuleRef::Cache(1)]);
    let names: Vec<&str> = policy.names().collect();
    assert_eq!(names, ["build-cache", "cache-budget"]);
}

#[test]
fn every_known_record_type_is_accepted_and_a_repeated_one_counts_once() {
    let listed: Vec<String> = CACHE_RECORD_TYPES
        .iter()
        .chain(&["regular"])
        .map(|t| format!("{t:?}"))
        .collect();
    let text = format!(
        "[[build_cache]]\nname = \"all\"\ntypes = [{}]\nolder_than = \"1d\"\n",
        listed.join(", ")
    );
    let policy = parse(&text);
    assert_eq!(policy.cache_rules[0].selectors.types, CACHE_RECORD_TYPES);
}

#[test]
fn order_holds_both_kinds_of_table_in_file_order() {
    let text = r#"
[[policy]]
name = "dangling"
dangling = true
older_than = "1h"

[[build_cache]]
name = "cache-stale"
unused_for = "2d"

[[policy]]
name = "image-pressure"
disk_high = "85%"
disk_low = "70%"

[[build_cache]]
name = "cache-pressure"
disk_high = "90%"
disk_low = "80%"

[[build_cache]]
name = "cache-budget"
keep_storage = "20GiB"

[[policy]]
name = "last"
older_than = "30d"
"#;
    let policy = parse(text);
    assert_eq!(
        policy.order,
        [
            RuleRef::Image(0),
            RuleRef::Cache(0),
            RuleRef::Image(1),
            RuleRef::Cache(1),
            RuleRef::Cache(2),
            RuleRef::Image(2),
        ]
    );
    let names: Vec<&str> = policy.names().collect();
    assert_eq!(
        names,
        [
            "dangling",
            "cache-stale",
            "image-pressure",
            "cache-pressure",
            "cache-budget",
            "last"
        ]
    );
    let images: Vec<&str> = policy.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(images, ["dangling", "image-pressure", "last"]);
}

#[test]
fn inline_build_cache_tables_are_ordered_by_where_they_are_written() {
    // Inline arrays come before any [[table]] header; the order is still
    // the file's.
    let text = "build_cache = [{ name = \"c\", unused_for = \"2d\" }]\n\
                policy = [{ name = \"p\", older_than = \"1d\" }]\n";
    let policy = parse(text);
    assert_eq!(policy.order, [RuleRef::Cache(0), RuleRef::Image(0)]);
}

#[test]
fn every_mistake_in_build_cache_tables_is_reported_at_once_with_line_and_column() {
    let text = r#"[[policy]]
name = "shared"
older_than = "1d"

[[build_cache]]
name = "shared"
types = ["regular", "exec.cachmount"]
keep_storage = "lots"

[[build_cache]]
name = "second"
types = ["frontend"]

[[build_cache]]
name = "third"
unused_for = 7
disk_high = "60%"
disk_low = "60%"
older_tham = "3d"
"#;
    let Err(ConfigErrors { errors }) = config::parse(text, FILE) else {
        panic!("this file has errors");
    };
    let found: Vec<(usize, usize, &str)> = errors
        .iter()
        .map(|e| (e.line, e.column, e.key.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (6, 8, "build_cache[0].name"),
            (7, 21, "build_cache \"shared\".types[1]"),
            (8, 16, "build_cache \"shared\".keep_storage"),
            (10, 1, "build_cache \"second\""),
            (16, 14, "build_cache \"third\".unused_for"),
            (18, 12, "build_cache \"third\".disk_low"),
            (19, 1, "build_cache \"third\".older_tham"),
        ],
        "{}",
        ConfigErrors {
            errors: errors.clone()
        }
    );
    assert!(errors[0]
        .message
        .contains("the [[policy]] at line 1 already uses it"));
    assert!(errors[1]
        .message
        .contains("did you mean \"exec.cachemount\"?"));
    assert!(errors[3].message.contains("has no condition"));
    assert!(errors[6].message.contains("did you mean `older_than`?"));
    let rendered = ConfigErrors { errors }.to_string();
    assert!(rendered.starts_with(&format!("{FILE}:6:8: build_cache[0].name: ")));
    assert!(rendered.ends_with("7 errors"), "{rendered}");
}

#[test]
fn a_file_with_build_cache_tables_beside_policies_keeps_every_image_rule() {
    let text =
        format!("{GOOD}\n[[policy]]\nname = \"dangling\"\ndangling = true\nolder_than = \"1h\"\n");
    let policy = parse(&text);
    assert_eq!(policy.rules.len(), 1);
    assert_eq!(policy.cache_rules.len(), 2);
    assert_eq!(
        policy.order,
        [RuleRef::Cache(0), RuleRef::Cache(1), RuleRef::Image(0)]
    );
}

#[test]
fn an_empty_policy_array_is_fine_beside_build_cache_tables() {
    let text = "policy = []\n[[build_cache]]\nname = \"c\"\nunused_for = \"2d\"\n";
    let policy = parse(text);
    assert!(policy.rules.is_empty());
    assert_eq!(policy.order, [RuleRef::Cache(0)]);
}

#[test]
fn check_config_counts_build_cache_policies_and_accepts_a_file_of_only_those() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/examples/ci-build-host.toml"
    );
    let dir = std::env::temp_dir().join(format!("imagegc-cache-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    let only = dir.join("only-cache.toml");
    std::fs::write(&only, GOOD).expect("write a policy file");
    let check = |path: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_imagegc"))
            .args(["check-config", path])
            .output()
            .expect("run imagegc check-config");
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), said)
    };
    let (code, said) = check(example);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("ok (3 policies, 4 build-cache policies)"),
        "{said}"
    );
    let (code, said) = check(only.to_str().expect("a UTF-8 path"));
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("ok (0 policies, 2 build-cache policies)"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
