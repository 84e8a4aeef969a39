//! `[[containers]]` tables and `[safety] protect_containers` in the policy
//! file: what a good one becomes, how they are ordered with the other two
//! kinds of table, and that every mistake in them is reported at once, with
//! its line and column.

use std::time::Duration;

use imagegc::config::{self, ConfigError, ConfigErrors};
use imagegc::policy::{
    ContainerConditions, ContainerRule, ContainerSelectors, LabelMatch, RuleRef, StoppedState,
};

const FILE: &str = "/etc/imagegc/ci-runner.toml";

fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

fn parse(text: &str) -> imagegc::policy::Policy {
    config::parse(text, FILE).unwrap_or_else(|e| panic!("{e}"))
}

fn errors_of(text: &str) -> Vec<ConfigError> {
    match config::parse(text, FILE) {
        Ok(_) => panic!("expected errors, but this parsed:\n{text}"),
        Err(ConfigErrors { errors }) => errors,
    }
}

/// The issue's example table, and one for never-started containers.
const GOOD: &str = r#"
[safety]
protect_containers = ["runner-helper*", "db-?"]
protect_labels = ["keep"]

[[containers]]
name = "finished-ci-jobs"
states = ["exited", "dead"]
names = ["ci-*", "runner-*"]
images = ["ci/**"]
labels = ["com.gitlab.gitlab-runner.type=build"]
exited_for = "6h"
older_than = "2d"

[[containers]]
name = "never-started"
states = ["created", "created"]
older_than = "1d"
"#;

#[test]
fn a_good_file_becomes_the_container_rules_written() {
    let policy = parse(GOOD);
    assert!(policy.rules.is_empty());
    assert!(policy.cache_rules.is_empty());
    let [ci, created] = policy.container_rules.as_slice() else {
        panic!("two [[containers]] tables: {:?}", policy.container_rules);
    };
    assert_eq!(ci.name, "finished-ci-jobs");
    assert_eq!(
        ci.selectors.states,
        [StoppedState::Exited, StoppedState::Dead]
    );
    let names: Vec<&str> = ci
        .selectors
        .names
        .iter()
        .map(|g| g.pattern.as_str())
        .collect();
    assert_eq!(names, ["ci-*", "runner-*"]);
    assert!(ci.selectors.names[0].is_match("ci-job-4812"));
    assert!(!ci.selectors.names[0].is_match("build-ci-1"));
    assert!(ci.selectors.images[0].is_match("ci/app/test:42"));
    assert!(!ci.selectors.images[0].is_match("base/debian:12"));
    assert_eq!(
        ci.selectors.labels,
        [LabelMatch {
            key: "com.gitlab.gitlab-runner.type".into(),
            value: Some("build".into()),
        }]
    );
    assert_eq!(
        ci.conditions,
        ContainerConditions {
            exited_for: Some(hours(6)),
            older_than: Some(hours(48)),
        }
    );
    assert_eq!(
        *created,
        ContainerRule {
            name: "never-started".into(),
            selectors: ContainerSelectors {
                states: vec![StoppedState::Created],
                ..ContainerSelectors::default()
            },
            conditions: ContainerConditions {
                exited_for: None,
                older_than: Some(hours(24)),
            },
        }
    );
    assert_eq!(policy.order, [RuleRef::Container(0), RuleRef::Container(1)]);
    let protect: Vec<&str> = policy
        .safety
        .protect_containers
        .iter()
        .map(|g| g.pattern.as_str())
        .collect();
    assert_eq!(protect, ["runner-helper*", "db-?"]);
    assert!(policy.safety.protect_containers[0].is_match("runner-helper-abc"));
    assert!(policy.safety.protect_containers[1].is_match("db-1"));
    assert!(!policy.safety.protect_containers[1].is_match("db-12"));
}

#[test]
fn a_table_without_selectors_leaves_states_empty_which_means_exited_and_dead() {
    let policy = parse("[[containers]]\nname = \"all\"\nexited_for = \"1h\"\n");
    let rule = &policy.container_rules[0];
    assert_eq!(rule.selectors, ContainerSelectors::default());
    assert!(rule.selectors.states.is_empty());
    assert_eq!(rule.conditions.exited_for, Some(hours(1)));
    // Without [safety] protect_containers nothing is protected by name.
    assert!(policy.safety.protect_containers.is_empty());
}

#[test]
fn order_interleaves_the_three_kinds_of_table_in_file_order() {
    let text = r#"
[[containers]]
name = "finished"
exited_for = "6h"

[[policy]]
name = "dangling"
dangling = true
older_than = "1h"

[[build_cache]]
name = "cache"
unused_for = "2d"

[[containers]]
name = "created"
states = ["created"]
older_than = "1d"

[[policy]]
name = "pressure"
disk_high = "85%"
disk_low = "70%"
"#;
    let policy = parse(text);
    assert_eq!(
        policy.order,
        [
            RuleRef::Container(0),
            RuleRef::Image(0),
            RuleRef::Cache(0),
            RuleRef::Container(1),
            RuleRef::Image(1),
        ]
    );
    let names: Vec<&str> = policy.names().collect();
    assert_eq!(
        names,
        ["finished", "dangling", "cache", "created", "pressure"]
    );
}

/// One broken `[[containers]]` file and the single error it must produce.
struct Case {
    what: &'static str,
    text: &'static str,
    at: (usize, usize),
    key: &'static str,
    fragment: &'static str,
}

const CASES: &[Case] = &[
    Case {
        what: "unknown state, close to a known one",
        text:
            "[[containers]]\nname = \"c\"\nstates = [\"exited\", \"deadd\"]\nexited_for = \"1h\"\n",
        at: (3, 21),
        key: "containers \"c\".states[1]",
        fragment: "unknown container state \"deadd\": expected one of exited, dead, created; \
                   did you mean \"dead\"?",
    },
    Case {
        what: "a state in capitals",
        text: "[[containers]]\nname = \"c\"\nstates = [\"Exited\"]\nexited_for = \"1h\"\n",
        at: (3, 11),
        key: "containers \"c\".states[0]",
        fragment: "did you mean \"exited\"?",
    },
    Case {
        what: "a state no policy may select",
        text: "[[containers]]\nname = \"c\"\nstates = [\"running\"]\nexited_for = \"1h\"\n",
        at: (3, 11),
        key: "containers \"c\".states[0]",
        fragment: "a running container is never removed, whatever a policy says",
    },
    Case {
        what: "an empty states list",
        text: "[[containers]]\nname = \"c\"\nstates = []\nexited_for = \"1h\"\n",
        at: (3, 10),
        key: "containers \"c\".states",
        fragment: "an empty list would select every stopped container",
    },
    Case {
        what: "states as a string",
        text: "[[containers]]\nname = \"c\"\nstates = \"exited\"\nexited_for = \"1h\"\n",
        at: (3, 10),
        key: "containers \"c\".states",
        fragment: "expected an array of container states, like [\"exited\", \"dead\"], found the \
                   string \"exited\"",
    },
    Case {
        what: "bad name glob",
        text: "[[containers]]\nname = \"c\"\nnames = [\"ci-[\"]\nexited_for = \"1h\"\n",
        at: (3, 10),
        key: "containers \"c\".names[0]",
        fragment: "invalid glob \"ci-[\"",
    },
    Case {
        what: "a name glob with the engine's leading slash",
        text: "[[containers]]\nname = \"c\"\nnames = [\"/ci-*\"]\nexited_for = \"1h\"\n",
        at: (3, 10),
        key: "containers \"c\".names[0]",
        fragment: "matched without their leading `/`, so \"/ci-*\" would never match: write \
                   \"ci-*\"",
    },
    Case {
        what: "bad image glob",
        text: "[[containers]]\nname = \"c\"\nimages = [\"ci/{a\"]\nexited_for = \"1h\"\n",
        at: (3, 11),
        key: "containers \"c\".images[0]",
        fragment: "invalid glob \"ci/{a\"",
    },
    Case {
        what: "an image glob of the wrong type",
        text: "[[containers]]\nname = \"c\"\nimages = [\"ci/**\", 7]\nexited_for = \"1h\"\n",
        at: (3, 20),
        key: "containers \"c\".images[1]",
        fragment: "expected an image reference glob string, like \"ci/**\", found the integer 7",
    },
    Case {
        what: "bad label",
        text: "[[containers]]\nname = \"c\"\nlabels = [\"=build\"]\nexited_for = \"1h\"\n",
        at: (3, 11),
        key: "containers \"c\".labels[0]",
        fragment: "invalid label \"=build\": the key is empty",
    },
    Case {
        what: "no condition",
        text: "[[containers]]\nname = \"c\"\nnames = [\"ci-*\"]\n",
        at: (1, 1),
        key: "containers \"c\"",
        fragment: "containers \"c\" has no condition: set at least one of exited_for, older_than",
    },
    Case {
        what: "bad duration",
        text: "[[containers]]\nname = \"c\"\nexited_for = \"6 hourz\"\n",
        at: (3, 14),
        key: "containers \"c\".exited_for",
        fragment: "invalid duration \"6 hourz\"",
    },
    Case {
        what: "a zero duration",
        text: "[[containers]]\nname = \"c\"\nolder_than = \"0s\"\n",
        at: (3, 14),
        key: "containers \"c\".older_than",
        fragment: "must be longer than zero",
    },
    Case {
        what: "a duration as a number",
        text: "[[containers]]\nname = \"c\"\nexited_for = 6\n",
        at: (3, 14),
        key: "containers \"c\".exited_for",
        fragment:
            "expected a duration string, like \"90m\", \"12h\" or \"7d\", found the integer 6",
    },
    Case {
        what: "a typo of a condition suggests it and is not also a missing condition",
        text: "[[containers]]\nname = \"c\"\nexited_fr = \"6h\"\n",
        at: (3, 1),
        key: "containers \"c\".exited_fr",
        fragment: "unknown key `exited_fr`, expected one of `name`, `states`, `names`, `images`, \
                   `labels`, `exited_for`, `older_than`; did you mean `exited_for`?",
    },
    Case {
        what: "an image-policy key in a container policy",
        text: "[[containers]]\nname = \"c\"\nexited_for = \"6h\"\nrepositories = [\"ci/*\"]\n",
        at: (4, 1),
        key: "containers \"c\".repositories",
        fragment: "`repositories` belongs in a [[policy]] table",
    },
    Case {
        what: "a container key in an image policy",
        text: "[[policy]]\nname = \"p\"\nolder_than = \"1d\"\nexited_for = \"6h\"\n",
        at: (4, 1),
        key: "policy \"p\".exited_for",
        fragment: "`exited_for` belongs in a [[containers]] table",
    },
    Case {
        what: "missing name",
        text: "[[containers]]\nexited_for = \"6h\"\n",
        at: (1, 1),
        key: "containers[0]",
        fragment: "missing `name`: every [[containers]] needs a unique name, like \
                   name = \"finished-ci-jobs\"",
    },
    Case {
        what: "a container policy named like an image policy",
        text: "[[policy]]\nname = \"ci\"\nolder_than = \"1d\"\n\
               [[containers]]\nname = \"ci\"\nexited_for = \"6h\"\n",
        at: (5, 8),
        key: "containers[0].name",
        fragment: "duplicate policy name \"ci\": the [[policy]] at line 1 already uses it; \
                   names must be unique across [[policy]], [[build_cache]] and [[containers]] \
                   tables",
    },
    Case {
        what: "a build-cache policy named like a container policy",
        text: "[[containers]]\nname = \"ci\"\nexited_for = \"6h\"\n\
               [[build_cache]]\nname = \"ci\"\nunused_for = \"1d\"\n",
        at: (5, 8),
        key: "build_cache[0].name",
        fragment: "the [[containers]] at line 1 already uses it; names must be unique across",
    },
    Case {
        what: "two container policies with one name",
        text: "[[containers]]\nname = \"ci\"\nexited_for = \"6h\"\n\
               [[containers]]\nname = \"ci\"\nolder_than = \"1d\"\n",
        at: (5, 8),
        key: "containers[1].name",
        fragment: "the [[containers]] at line 1 already uses it; names must be unique",
    },
    Case {
        what: "containers written as a table",
        text: "[containers]\nname = \"c\"\nexited_for = \"6h\"\n",
        at: (1, 1),
        key: "containers",
        fragment: "`containers` must be an array of tables: write [[containers]], with two \
                   brackets, before each container policy",
    },
    Case {
        what: "an empty containers array and nothing else",
        text: "containers = []\n",
        at: (1, 14),
        key: "containers",
        fragment: "no [[policy]], [[build_cache]] or [[containers]] tables: nothing to do",
    },
    Case {
        what: "bad protect_containers glob",
        text: "[safety]\nprotect_containers = [\"runner-[\"]\n\
               [[containers]]\nname = \"c\"\nexited_for = \"6h\"\n",
        at: (2, 23),
        key: "safety.protect_containers[0]",
        fragment: "invalid glob \"runner-[\"",
    },
    Case {
        what: "protect_containers as a string",
        text: "[safety]\nprotect_containers = \"runner-*\"\n\
               [[containers]]\nname = \"c\"\nexited_for = \"6h\"\n",
        at: (2, 22),
        key: "safety.protect_containers",
        fragment: "expected an array of container name globs, like [\"runner-helper*\"], found \
                   the string \"runner-*\"",
    },
    Case {
        what: "a typo of protect_containers",
        text: "[safety]\nprotect_container = [\"runner-*\"]\n\
               [[containers]]\nname = \"c\"\nexited_for = \"6h\"\n",
        at: (2, 1),
        key: "safety.protect_container",
        fragment: "did you mean `protect_containers`?",
    },
];

#[test]
fn each_broken_container_table_gets_one_error_at_its_line_and_column_saying_what_is_valid() {
    let mut failures = Vec::new();
    for case in CASES {
        let errors = errors_of(case.text);
        let [found] = errors.as_slice() else {
            failures.push(format!(
                "{}: expected one error, got {}:\n{}",
                case.what,
                errors.len(),
                ConfigErrors { errors }
            ));
            continue;
        };
        let right = found.file == FILE
            && (found.line, found.column) == case.at
            && found.key == case.key
            && found.message.contains(case.fragment);
        if !right {
            failures.push(format!(
                "{}: expected {}:{} `{}` containing {:?}\n  got {found}",
                case.what, case.at.0, case.at.1, case.key, case.fragment
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_mistake_in_container_tables_is_reported_at_once_in_file_order() {
    let text = r#"[safety]
protect_containers = ["ok-*", "bad-["]

[[containers]]
name = "first"
states = ["exitted", "created"]
names = ["ci-*", "{x"]
exited_for = "soon"

[[containers]]
name = "second"
images = ["ci/**"]

[[policy]]
name = "first"
older_than = "1d"

[[containers]]
name = "third"
older_than = "2d"
bogus = true
"#;
    let errors = errors_of(text);
    let found: Vec<(usize, usize, &str)> = errors
        .iter()
        .map(|e| (e.line, e.column, e.key.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (2, 31, "safety.protect_containers[1]"),
            (6, 11, "containers \"first\".states[0]"),
            (7, 18, "containers \"first\".names[1]"),
            (8, 14, "containers \"first\".exited_for"),
            (10, 1, "containers \"second\""),
            (15, 8, "policy[0].name"),
            (21, 1, "containers \"third\".bogus"),
        ],
        "{}",
        ConfigErrors {
            errors: errors.clone()
        }
    );
    assert!(errors[1].message.contains("did you mean \"exited\"?"));
    assert!(errors[4].message.contains("has no condition"));
    assert!(errors[5]
        .message
        .contains("the [[containers]] at line 4 already uses it"));
    let rendered = ConfigErrors { errors }.to_string();
    assert!(rendered.starts_with(&format!("{FILE}:2:31: safety.protect_containers[1]: ")));
    assert!(rendered.ends_with("7 errors"), "{rendered}");
}

#[test]
fn check_config_counts_container_policies_and_accepts_a_file_of_only_those() {
    let dir = std::env::temp_dir().join(format!("imagegc-container-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    let only = dir.join("only-containers.toml");
    std::fs::write(&only, GOOD).expect("write a policy file");
    let one = dir.join("one-of-each.toml");
    std::fs::write(
        &one,
        "[[policy]]\nname = \"p\"\nolder_than = \"1d\"\n[[build_cache]]\nname = \"b\"\n\
         unused_for = \"1d\"\n[[containers]]\nname = \"c\"\nexited_for = \"1h\"\n",
    )
    .expect("write a policy file");
    let check = |path: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_imagegc"))
            .arg("check-config")
            .arg(path)
            .output()
            .expect("run imagegc check-config");
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), said)
    };
    let (code, said) = check(&only);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("ok (0 policies, 2 container policies)"),
        "{said}"
    );
    let (code, said) = check(&one);
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("ok (1 policy, 1 build-cache policy, 1 container policy)"),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
