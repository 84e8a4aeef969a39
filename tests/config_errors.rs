//! The policy file as an operator meets it: the built-in default, a full
//! file with every key, and every mistake we expect people to make, each
//! reported with the file, line, column, key path and what would be valid.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Duration;

use imagegc::config::{self, ConfigError, ConfigErrors};
use imagegc::policy::{LabelMatch, Threshold};
use proptest::prelude::*;

const FILE: &str = "/etc/imagegc/test-policy.toml";

/// A valid policy to append where a case is about something else.
const POLICY: &str = "[[policy]]\nname = \"p\"\nolder_than = \"1d\"\n";

fn errors_of(text: &str) -> Vec<ConfigError> {
    match config::parse(text, FILE) {
        Ok(_) => panic!("expected errors, but this parsed:\n{text}"),
        Err(ConfigErrors { errors }) => errors,
    }
}

/// All errors rendered as the operator sees them, for assertion messages.
fn show(errors: &[ConfigError]) -> String {
    ConfigErrors {
        errors: errors.to_vec(),
    }
    .to_string()
}

fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

fn days(n: u64) -> Duration {
    hours(24 * n)
}

#[test]
fn the_builtin_policy_removes_dangling_images_older_than_an_hour_every_hour() {
    let policy = config::builtin();
    assert_eq!(policy.source, "<built-in>");
    assert_eq!(policy.schedule.to_string(), "@hourly");
    assert_eq!(policy.timezone, chrono_tz::Tz::UTC);
    assert_eq!(policy.engine, None);
    assert!(!policy.dry_run);
    assert!(policy.metrics.enabled);
    assert_eq!(
        policy.metrics.listen,
        "127.0.0.1:9317".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(policy.state.path, Path::new("/var/lib/imagegc/state.json"));
    assert_eq!(policy.safety.min_age, hours(1));
    assert!(policy.safety.protect.is_empty());
    assert!(policy.safety.protect_labels.is_empty());
    assert_eq!(policy.safety.max_removals_per_run, None);
    assert_eq!(
        policy.safety.max_parallel_removals,
        NonZeroUsize::new(4).unwrap()
    );

    assert_eq!(policy.rules.len(), 1);
    let rule = &policy.rules[0];
    assert_eq!(rule.name, "dangling");
    assert_eq!(rule.selectors.dangling, Some(true));
    assert!(rule.selectors.repositories.is_empty());
    assert!(rule.selectors.labels.is_empty());
    assert_eq!(rule.conditions.older_than, Some(hours(1)));
    assert_eq!(rule.conditions.unused_for, None);
    assert_eq!(rule.conditions.keep_most_recent, None);
    assert_eq!(rule.conditions.disk, None);
    // The build-cache example is commented out: the default removes no record.
    assert!(policy.cache_rules.is_empty());
    // So is the container example: the default removes no container.
    assert!(policy.container_rules.is_empty());
    assert!(policy.safety.protect_containers.is_empty());
}

#[test]
fn the_builtin_policy_text_is_the_shipped_config_file() {
    let shipped = include_str!("../config/imagegc.toml");
    assert_eq!(config::DEFAULT_POLICY_TEXT, shipped);
    assert_eq!(config::DEFAULT_CONFIG_PATH, "/etc/imagegc/imagegc.toml");
}

#[test]
fn the_commented_examples_in_the_builtin_policy_are_valid_when_uncommented() {
    // Operators uncomment lines from the default file; each must parse.
    let uncommented: String = config::DEFAULT_POLICY_TEXT
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_toml_line(rest) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let policy = config::parse(&uncommented, "uncommented").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.safety.protect.len(), 2);
    assert_eq!(policy.safety.max_removals_per_run, NonZeroUsize::new(500));
    assert_eq!(
        policy.safety.max_parallel_removals,
        NonZeroUsize::new(4).unwrap()
    );
    let names: Vec<&str> = policy.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["dangling", "stale-ci", "ci-disk-pressure"]);
    let caches: Vec<&str> = policy.cache_rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(caches, ["build-cache"]);
    let containers: Vec<&str> = policy
        .container_rules
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(containers, ["finished-ci-jobs"]);
    assert_eq!(policy.safety.protect_containers.len(), 1);
    assert_eq!(
        policy.cache_rules[0].conditions.keep_storage,
        Some(20 * 1024 * 1024 * 1024)
    );
    let inodes = policy.rules[2].conditions.inodes.expect("inode watermarks");
    assert_eq!((inodes.high, inodes.low), (0.9, 0.8));
}

/// A commented-out key or table header, as opposed to prose.
fn is_toml_line(text: &str) -> bool {
    text.starts_with('[')
        || text
            .split_once(" = ")
            .is_some_and(|(key, _)| !key.contains(' '))
}

/// One broken file and the single error it must produce.
struct Case {
    what: &'static str,
    text: String,
    line: usize,
    column: usize,
    key: &'static str,
    fragment: &'static str,
}

fn case(
    what: &'static str,
    text: impl Into<String>,
    (line, column): (usize, usize),
    key: &'static str,
    fragment: &'static str,
) -> Case {
    Case {
        what,
        text: text.into(),
        line,
        column,
        key,
        fragment,
    }
}

fn with_policy(text: &str) -> String {
    format!("{text}{POLICY}")
}

#[allow(clippy::too_many_lines)]
fn broken_files() -> Vec<Case> {
    vec![
        case(
            "unknown top-level key",
            with_policy("shedule = \"@daily\"\n"),
            (1, 1),
            "shedule",
            "unknown key `shedule`, expected one of `schedule`",
        ),
        case(
            "typo in [safety] suggests the right key",
            with_policy("[safety]\nmin_agee = \"1h\"\n"),
            (2, 1),
            "safety.min_agee",
            "did you mean `min_age`?",
        ),
        case(
            "unknown key in a policy",
            "[[policy]]\nname = \"p\"\nolder_than = \"1d\"\ncolour = \"red\"\n",
            (4, 1),
            "policy \"p\".colour",
            "unknown key `colour`, expected one of `name`, `dangling`",
        ),
        case(
            "truncated key in a policy suggests the full key",
            "[[policy]]\nname = \"p\"\nunused = \"1d\"\n",
            (3, 1),
            "policy \"p\".unused",
            "did you mean `unused_for`?",
        ),
        case(
            "a safety key at the top level",
            with_policy("min_age = \"1h\"\n"),
            (1, 1),
            "min_age",
            "`min_age` belongs in [safety]",
        ),
        case(
            "a top-level key written below a [[policy]] header",
            format!("{POLICY}schedule = \"@daily\"\n"),
            (4, 1),
            "policy \"p\".schedule",
            "`schedule` is a top-level key: move it above the first [table] header",
        ),
        case(
            "bad duration",
            "[[policy]]\nname = \"p\"\nolder_than = \"7 dayz\"\n",
            (3, 14),
            "policy \"p\".older_than",
            "invalid duration \"7 dayz\"",
        ),
        case(
            "negative duration",
            with_policy("[safety]\nmin_age = \"-1h\"\n"),
            (2, 11),
            "safety.min_age",
            "expected a number and a unit, like \"90m\", \"12h\" or \"7d\"",
        ),
        case(
            "garbage duration",
            "[[policy]]\nname = \"p\"\nunused_for = \"a week\"\n",
            (3, 14),
            "policy \"p\".unused_for",
            "invalid duration \"a week\"",
        ),
        case(
            "zero duration for a condition",
            "[[policy]]\nname = \"p\"\nolder_than = \"0s\"\n",
            (3, 14),
            "policy \"p\".older_than",
            "must be longer than zero",
        ),
        case(
            "bad size",
            "[[policy]]\nname = \"p\"\ndisk_high = \"200GiX\"\ndisk_low = \"100GiB\"\n",
            (3, 13),
            "policy \"p\".disk_high",
            "invalid size \"200GiX\"",
        ),
        case(
            "percentage above 100",
            "[[policy]]\nname = \"p\"\ndisk_high = \"185%\"\ndisk_low = \"70%\"\n",
            (3, 13),
            "policy \"p\".disk_high",
            "must be more than 0% and at most 100%",
        ),
        case(
            "threshold without a unit",
            "[[policy]]\nname = \"p\"\ndisk_high = \"85\"\ndisk_low = \"70%\"\n",
            (3, 13),
            "policy \"p\".disk_high",
            "has no unit",
        ),
        case(
            "bad glob",
            "[[policy]]\nname = \"p\"\nolder_than = \"1d\"\nrepositories = [\"ci/*\", \"ci/[abc\"]\n",
            (4, 25),
            "policy \"p\".repositories[1]",
            "invalid glob \"ci/[abc\"",
        ),
        case(
            "empty repositories list",
            "[[policy]]\nname = \"p\"\nolder_than = \"1d\"\nrepositories = []\n",
            (4, 16),
            "policy \"p\".repositories",
            "would select every repository",
        ),
        case(
            "label with an empty key",
            with_policy("[safety]\nprotect_labels = [\"=x\"]\n"),
            (2, 19),
            "safety.protect_labels[0]",
            "the key is empty",
        ),
        case(
            "label with spaces around the equals sign",
            "[[policy]]\nname = \"p\"\nolder_than = \"1d\"\nlabels = [\"tier = dev\"]\n",
            (4, 11),
            "policy \"p\".labels[0]",
            "without spaces",
        ),
        case(
            "disk_low not below disk_high",
            "[[policy]]\nname = \"p\"\ndisk_high = \"70%\"\ndisk_low = \"85%\"\n",
            (4, 12),
            "policy \"p\".disk_low",
            "disk_low (85%) must be below disk_high (70%)",
        ),
        case(
            "equal sizes for disk_low and disk_high",
            "[[policy]]\nname = \"p\"\ndisk_high = \"100GiB\"\ndisk_low = \"100 GiB\"\n",
            (4, 12),
            "policy \"p\".disk_low",
            "must be below disk_high",
        ),
        case(
            "inodes_low not below inodes_high",
            "[[policy]]\nname = \"p\"\ninodes_high = \"80%\"\ninodes_low = \"90%\"\n",
            (4, 14),
            "policy \"p\".inodes_low",
            "inodes_low (90%) must be below inodes_high (80%): imagegc starts removing at \
             inodes_high and stops at inodes_low",
        ),
        case(
            "an inode watermark written as a size",
            "[[policy]]\nname = \"p\"\ninodes_high = \"200GiB\"\ninodes_low = \"80%\"\n",
            (3, 15),
            "policy \"p\".inodes_high",
            "\"200GiB\" is a size, but inode watermarks are percentages of the filesystem's \
             inodes (as `df -i` counts IUse%): write a percentage like \"90%\"",
        ),
        case(
            "an inode watermark above 100%",
            "[[policy]]\nname = \"p\"\ninodes_high = \"120%\"\ninodes_low = \"80%\"\n",
            (3, 15),
            "policy \"p\".inodes_high",
            "invalid percentage \"120%\": must be more than 0% and at most 100%",
        ),
        case(
            "inodes_high without inodes_low",
            "[[policy]]\nname = \"p\"\ninodes_high = \"90%\"\n",
            (3, 15),
            "policy \"p\".inodes_high",
            "inodes_high is set without inodes_low: set both, like inodes_high = \"90%\" and \
             inodes_low = \"80%\"",
        ),
        case(
            "an inode watermark as a number",
            "[[policy]]\nname = \"p\"\ninodes_high = 90\ninodes_low = \"80%\"\n",
            (3, 15),
            "policy \"p\".inodes_high",
            "expected a percentage string, like \"90%\", found the integer 90",
        ),
        case(
            "build-cache inodes_low without inodes_high",
            "[[build_cache]]\nname = \"c\"\ninodes_low = \"80%\"\n",
            (3, 14),
            "build_cache \"c\".inodes_low",
            "inodes_low is set without inodes_high: set both",
        ),
        case(
            "build-cache inodes_low equal to inodes_high",
            "[[build_cache]]\nname = \"c\"\ninodes_high = \"90%\"\ninodes_low = \"90%\"\n",
            (4, 14),
            "build_cache \"c\".inodes_low",
            "inodes_low (90%) must be below inodes_high (90%)",
        ),
        case(
            "disk_high without disk_low",
            "[[policy]]\nname = \"p\"\ndisk_high = \"85%\"\n",
            (3, 13),
            "policy \"p\".disk_high",
            "disk_high is set without disk_low",
        ),
        case(
            "disk_low without disk_high",
            "[[policy]]\nname = \"p\"\ndisk_low = \"85%\"\n",
            (3, 12),
            "policy \"p\".disk_low",
            "disk_low is set without disk_high",
        ),
        case(
            "percentage and size mixed",
            "[[policy]]\nname = \"p\"\ndisk_high = \"85%\"\ndisk_low = \"100GiB\"\n",
            (4, 12),
            "policy \"p\".disk_low",
            "disk_low is a size but disk_high is a percentage: use the same kind for both",
        ),
        case(
            "duplicate policy names",
            format!("{POLICY}\n[[policy]]\nname = \"p\"\nunused_for = \"1d\"\n"),
            (6, 8),
            "policy[1].name",
            "duplicate policy name \"p\": the [[policy]] at line 1 already uses it",
        ),
        case(
            "empty policy name",
            "[[policy]]\nname = \"\"\nolder_than = \"1d\"\n",
            (2, 8),
            "policy[0].name",
            "the policy name must not be empty",
        ),
        case(
            "a policy name with an ANSI escape",
            "[[policy]]\nname = \"ci\\u001b[2J\"\nolder_than = \"1d\"\n",
            (2, 8),
            "policy[0].name",
            "the policy name \"ci\\u{1b}[2J\" contains the control character '\\u{1b}'",
        ),
        case(
            "missing policy name",
            format!("{POLICY}[[policy]]\nolder_than = \"1d\"\n"),
            (4, 1),
            "policy[1]",
            "missing `name`",
        ),
        case(
            "policy without a condition",
            "[[policy]]\nname = \"ci\"\nrepositories = [\"ci/*\"]\n",
            (1, 1),
            "policy \"ci\"",
            "policy \"ci\" has no condition: set at least one of unused_for, older_than, \
             keep_most_recent, disk_high/disk_low",
        ),
        case(
            "no policies at all",
            "schedule = \"@daily\"\n[safety]\nmin_age = \"2h\"\n",
            (1, 1),
            "policy",
            "no [[policy]], [[build_cache]] or [[containers]] tables: nothing to do",
        ),
        case(
            "an empty policy array",
            "policy = []\n",
            (1, 10),
            "policy",
            "no [[policy]], [[build_cache]] or [[containers]] tables: nothing to do",
        ),
        case(
            "policy written as a table instead of an array of tables",
            "[policy]\nname = \"p\"\nolder_than = \"1d\"\n",
            (1, 1),
            "policy",
            "`policy` must be an array of tables: write [[policy]], with two brackets",
        ),
        case(
            "a policy that is not a table",
            "policy = [\"dangling\"]\n",
            (1, 11),
            "policy[0]",
            "each policy must be a table",
        ),
        case(
            "a section that is not a table",
            with_policy("safety = \"strict\"\n"),
            (1, 10),
            "safety",
            "`safety` must be a table: write a [safety] section",
        ),
        case(
            "string where an integer is expected",
            with_policy("[safety]\nmax_removals_per_run = \"lots\"\n"),
            (2, 24),
            "safety.max_removals_per_run",
            "expected a positive integer, like 500, found the string \"lots\"",
        ),
        case(
            "integer where a string is expected",
            "[[policy]]\nname = \"p\"\nolder_than = 7\n",
            (3, 14),
            "policy \"p\".older_than",
            "expected a duration string, like \"90m\", \"12h\" or \"7d\", found the integer 7",
        ),
        case(
            "array where a string is expected",
            with_policy("schedule = [\"@hourly\"]\n"),
            (1, 12),
            "schedule",
            "expected a crontab expression string, like \"0 * * * *\" or \"@hourly\", found an array",
        ),
        case(
            "string where a boolean is expected",
            with_policy("dry_run = \"yes\"\n"),
            (1, 11),
            "dry_run",
            "expected true or false, found the string \"yes\"",
        ),
        case(
            "float where an integer is expected",
            "[[policy]]\nname = \"p\"\nkeep_most_recent = 2.5\n",
            (3, 20),
            "policy \"p\".keep_most_recent",
            "expected an integer of at least 1, like 3, found the number 2.5",
        ),
        case(
            "integer inside a list of globs",
            with_policy("[safety]\nprotect = [\"base/*\", 7]\n"),
            (2, 22),
            "safety.protect[1]",
            "expected a reference glob string, like \"base/*\", found the integer 7",
        ),
        case(
            "name that is not a string",
            "[[policy]]\nname = 5\nolder_than = \"1d\"\n",
            (2, 8),
            "policy[0].name",
            "expected a non-empty string",
        ),
        case(
            "unclosed string",
            with_policy("schedule = \"@hourly\n"),
            (1, 20),
            "schedule",
            "invalid TOML: invalid basic string",
        ),
        case(
            "duplicate key",
            with_policy("dry_run = true\ndry_run = false\n"),
            (2, 1),
            "",
            "duplicate key `dry_run`",
        ),
        case(
            "a [policy] table after [[policy]] tables",
            format!("{POLICY}[policy]\nname = \"q\"\n"),
            (4, 2),
            "policy",
            "policies are written [[policy]], with two brackets each",
        ),
        case(
            "keep_most_recent of zero",
            "[[policy]]\nname = \"p\"\nkeep_most_recent = 0\n",
            (3, 20),
            "policy \"p\".keep_most_recent",
            "must be at least 1, not 0",
        ),
        case(
            "negative keep_most_recent",
            "[[policy]]\nname = \"p\"\nkeep_most_recent = -3\n",
            (3, 20),
            "policy \"p\".keep_most_recent",
            "must be at least 1, not -3",
        ),
        case(
            "max_removals_per_run of zero",
            with_policy("[safety]\nmax_removals_per_run = 0\n"),
            (2, 24),
            "safety.max_removals_per_run",
            "must be a positive integer, like 500, not 0; remove the key for no limit",
        ),
        case(
            "max_parallel_removals of zero",
            with_policy("[safety]\nmax_parallel_removals = 0\n"),
            (2, 25),
            "safety.max_parallel_removals",
            "must be a positive integer, like 4, not 0; 1 removes one image at a time",
        ),
        case(
            "negative max_parallel_removals",
            with_policy("[safety]\nmax_parallel_removals = -2\n"),
            (2, 25),
            "safety.max_parallel_removals",
            "must be a positive integer, like 4, not -2; 1 removes one image at a time",
        ),
        case(
            "string where max_parallel_removals expects an integer",
            with_policy("[safety]\nmax_parallel_removals = \"many\"\n"),
            (2, 25),
            "safety.max_parallel_removals",
            "expected a positive integer, like 4, found the string \"many\"",
        ),
        case(
            "listen address with a host name",
            with_policy("[metrics]\nlisten = \"localhost:9317\"\n"),
            (2, 10),
            "metrics.listen",
            "expected an IP address and a port, like \"127.0.0.1:9317\"",
        ),
        case(
            "listen address without a port",
            with_policy("[metrics]\nlisten = \"127.0.0.1\"\n"),
            (2, 10),
            "metrics.listen",
            "invalid listen address \"127.0.0.1\"",
        ),
        case(
            "unknown time zone",
            with_policy("timezone = \"Mars/Olympus\"\n"),
            (1, 12),
            "timezone",
            "unknown time zone \"Mars/Olympus\": expected an IANA name",
        ),
        case(
            "time zone in the wrong case suggests the right one",
            with_policy("timezone = \"europe/berlin\"\n"),
            (1, 12),
            "timezone",
            "did you mean \"Europe/Berlin\"?",
        ),
        case(
            "empty engine address",
            with_policy("engine = \"\"\n"),
            (1, 10),
            "engine",
            "must not be empty",
        ),
        case(
            "empty state path",
            with_policy("[state]\npath = \"\"\n"),
            (2, 8),
            "state.path",
            "must not be empty",
        ),
        case(
            "dangling together with repositories",
            "[[policy]]\nname = \"p\"\ndangling = true\nrepositories = [\"ci/*\"]\nolder_than = \"1d\"\n",
            (4, 16),
            "policy \"p\".repositories",
            "cannot be combined with `dangling = true`: untagged images have no repository",
        ),
        // [[build_cache]] tables: the same checks, the same style.
        case(
            "unknown build-cache record type",
            "[[build_cache]]\nname = \"c\"\ntypes = [\"regular\", \"source.locl\"]\nunused_for = \"2d\"\n",
            (3, 21),
            "build_cache \"c\".types[1]",
            "unknown build-cache record type \"source.locl\": expected one of regular, \
             source.local, exec.cachemount, internal, frontend, source.git.checkout; did you \
             mean \"source.local\"?",
        ),
        case(
            "an empty list of record types",
            "[[build_cache]]\nname = \"c\"\ntypes = []\nunused_for = \"2d\"\n",
            (3, 9),
            "build_cache \"c\".types",
            "an empty list would select every record",
        ),
        case(
            "a record type that is not a string",
            "[[build_cache]]\nname = \"c\"\ntypes = [\"regular\", 3]\nunused_for = \"2d\"\n",
            (3, 21),
            "build_cache \"c\".types[1]",
            "expected a record type string, like \"regular\", found the integer 3",
        ),
        case(
            "record types as one string",
            "[[build_cache]]\nname = \"c\"\ntypes = \"regular\"\nunused_for = \"2d\"\n",
            (3, 9),
            "build_cache \"c\".types",
            "expected an array of record types, like [\"regular\", \"source.local\"], found the \
             string \"regular\"",
        ),
        case(
            "keep_storage that is not a size",
            "[[build_cache]]\nname = \"c\"\nkeep_storage = \"20 gigs\"\n",
            (3, 16),
            "build_cache \"c\".keep_storage",
            "invalid size \"20 gigs\": expected a size like \"20GiB\" or \"500MB\"",
        ),
        case(
            "keep_storage without a unit",
            "[[build_cache]]\nname = \"c\"\nkeep_storage = \"20\"\n",
            (3, 16),
            "build_cache \"c\".keep_storage",
            "\"20\" has no unit: write a size like \"20GiB\"",
        ),
        case(
            "keep_storage as a percentage",
            "[[build_cache]]\nname = \"c\"\nkeep_storage = \"15%\"\n",
            (3, 16),
            "build_cache \"c\".keep_storage",
            "\"15%\" is a percentage, but this is a size of build-cache data",
        ),
        case(
            "keep_storage of zero",
            "[[build_cache]]\nname = \"c\"\nkeep_storage = \"0GiB\"\n",
            (3, 16),
            "build_cache \"c\".keep_storage",
            "invalid size \"0GiB\": must be more than zero",
        ),
        case(
            "keep_storage as a number",
            "[[build_cache]]\nname = \"c\"\nkeep_storage = 20\n",
            (3, 16),
            "build_cache \"c\".keep_storage",
            "expected a size string, like \"20GiB\", found the integer 20",
        ),
        case(
            "unused_for as a number in a build-cache policy",
            "[[build_cache]]\nname = \"c\"\nunused_for = 2\n",
            (3, 14),
            "build_cache \"c\".unused_for",
            "expected a duration string, like \"90m\", \"12h\" or \"7d\", found the integer 2",
        ),
        case(
            "a bad duration in a build-cache policy",
            "[[build_cache]]\nname = \"c\"\nolder_than = \"2 weeks ago\"\n",
            (3, 14),
            "build_cache \"c\".older_than",
            "invalid duration \"2 weeks ago\"",
        ),
        case(
            "build-cache disk_low above disk_high",
            "[[build_cache]]\nname = \"c\"\ndisk_high = \"70%\"\ndisk_low = \"85%\"\n",
            (4, 12),
            "build_cache \"c\".disk_low",
            "disk_low (85%) must be below disk_high (70%)",
        ),
        case(
            "build-cache disk_low equal to disk_high",
            "[[build_cache]]\nname = \"c\"\ndisk_high = \"40GiB\"\ndisk_low = \"40GiB\"\n",
            (4, 12),
            "build_cache \"c\".disk_low",
            "disk_low (40.0 GiB) must be below disk_high (40.0 GiB)",
        ),
        case(
            "build-cache disk watermarks of two kinds",
            "[[build_cache]]\nname = \"c\"\ndisk_high = \"85%\"\ndisk_low = \"30GiB\"\n",
            (4, 12),
            "build_cache \"c\".disk_low",
            "disk_low is a size but disk_high is a percentage: use the same kind for both",
        ),
        case(
            "build-cache disk_high without disk_low",
            "[[build_cache]]\nname = \"c\"\ndisk_high = \"85%\"\n",
            (3, 13),
            "build_cache \"c\".disk_high",
            "disk_high is set without disk_low: set both",
        ),
        case(
            "a bad build-cache watermark names build-cache data",
            "[[build_cache]]\nname = \"c\"\ndisk_high = \"lots\"\ndisk_low = \"10GiB\"\n",
            (3, 13),
            "build_cache \"c\".disk_high",
            "or a size of build-cache data like \"200GiB\"",
        ),
        case(
            "build-cache policy without a condition",
            "[[build_cache]]\nname = \"c\"\ntypes = [\"regular\"]\n",
            (1, 1),
            "build_cache \"c\"",
            "build_cache \"c\" has no condition: set at least one of unused_for, older_than, \
             keep_storage, disk_high/disk_low",
        ),
        case(
            "build-cache policy without a name",
            "[[build_cache]]\nunused_for = \"2d\"\n",
            (1, 1),
            "build_cache[0]",
            "missing `name`: every [[build_cache]] needs a unique name",
        ),
        case(
            "a [[build_cache]] reusing a [[policy]] name",
            format!("{POLICY}\n[[build_cache]]\nname = \"p\"\nunused_for = \"2d\"\n"),
            (6, 8),
            "build_cache[0].name",
            "duplicate policy name \"p\": the [[policy]] at line 1 already uses it; names must \
             be unique across [[policy]], [[build_cache]] and [[containers]] tables",
        ),
        case(
            "a [[policy]] reusing a [[build_cache]] name",
            format!("[[build_cache]]\nname = \"p\"\nunused_for = \"2d\"\n\n{POLICY}"),
            (6, 8),
            "policy[0].name",
            "duplicate policy name \"p\": the [[build_cache]] at line 1 already uses it; names \
             must be unique across [[policy]], [[build_cache]] and [[containers]] tables",
        ),
        case(
            "two [[build_cache]] tables with one name",
            "[[build_cache]]\nname = \"c\"\nunused_for = \"2d\"\n[[build_cache]]\nname = \"c\"\n\
             older_than = \"9d\"\n",
            (5, 8),
            "build_cache[1].name",
            "duplicate policy name \"c\": the [[build_cache]] at line 1 already uses it; names \
             must be unique",
        ),
        case(
            "a misspelt build-cache key",
            "[[build_cache]]\nname = \"c\"\nunused_fr = \"2d\"\n",
            (3, 1),
            "build_cache \"c\".unused_fr",
            "unknown key `unused_fr`, expected one of `name`, `types`, `unused_for`, \
             `older_than`, `keep_storage`, `disk_high`, `disk_low`, `inodes_high`, \
             `inodes_low`; did you mean `unused_for`?",
        ),
        case(
            "keep_storge in a build-cache policy",
            "[[build_cache]]\nname = \"c\"\nkeep_storge = \"20GiB\"\n",
            (3, 1),
            "build_cache \"c\".keep_storge",
            "did you mean `keep_storage`?",
        ),
        case(
            "an image key in a build-cache policy",
            "[[build_cache]]\nname = \"c\"\nunused_for = \"2d\"\nrepositories = [\"ci/*\"]\n",
            (4, 1),
            "build_cache \"c\".repositories",
            "`repositories` belongs in a [[policy]] table",
        ),
        case(
            "a build-cache key in an image policy",
            "[[policy]]\nname = \"p\"\nolder_than = \"1d\"\nkeep_storage = \"20GiB\"\n",
            (4, 1),
            "policy \"p\".keep_storage",
            "`keep_storage` belongs in a [[build_cache]] table",
        ),
        case(
            "build_cache written as a table instead of an array of tables",
            "[build_cache]\nname = \"c\"\nunused_for = \"2d\"\n",
            (1, 1),
            "build_cache",
            "`build_cache` must be an array of tables: write [[build_cache]], with two brackets",
        ),
        case(
            "an empty build_cache array and no policies",
            "build_cache = []\n",
            (1, 15),
            "build_cache",
            "no [[policy]], [[build_cache]] or [[containers]] tables: nothing to do",
        ),
    ]
}

#[test]
fn each_broken_file_gets_one_error_at_the_right_place_saying_what_is_valid() {
    let cases = broken_files();
    assert!(cases.len() >= 28, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let errors = errors_of(&case.text);
        let [found] = errors.as_slice() else {
            failures.push(format!(
                "{}: expected one error, got {}:\n{}",
                case.what,
                errors.len(),
                show(&errors)
            ));
            continue;
        };
        let right = found.file == FILE
            && (found.line, found.column) == (case.line, case.column)
            && found.key == case.key
            && found.message.contains(case.fragment);
        if !right {
            failures.push(format!(
                "{}: expected {}:{} `{}` containing {:?}\n  got {found}",
                case.what, case.line, case.column, case.key, case.fragment
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_unparseable_schedule_is_reported_at_its_line() {
    let errors = errors_of(&with_policy("schedule = \"every tuesday\"\n"));
    assert_eq!(errors.len(), 1, "{}", ConfigErrors { errors });
    assert_eq!((errors[0].line, errors[0].key.as_str()), (1, "schedule"));
    assert!(errors[0].message.contains("\"every tuesday\""));
}

#[test]
fn every_error_line_names_the_file_and_the_summary_counts_them() {
    for case in broken_files() {
        let err = config::parse(&case.text, FILE).expect_err(case.what);
        let rendered = err.to_string();
        let mut lines: Vec<&str> = rendered.lines().collect();
        let summary = lines.pop().unwrap_or_default();
        assert_eq!(lines.len(), err.errors.len());
        for line in lines {
            assert!(line.starts_with(&format!("{FILE}:")), "{line}");
        }
        let plural = if err.errors.len() == 1 {
            "error"
        } else {
            "errors"
        };
        assert_eq!(summary, format!("{} {plural}", err.errors.len()));
    }
}

#[test]
fn an_error_renders_as_file_line_column_key_and_message() {
    let err = config::parse(&with_policy("[safety]\nmin_age = \"soon\"\n"), FILE).unwrap_err();
    let first = err
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        first.starts_with(&format!(
            "{FILE}:2:11: safety.min_age: invalid duration \"soon\""
        )),
        "{first}"
    );
}

#[test]
fn errors_in_three_sections_are_all_reported_in_file_order() {
    let text = "\
schedule = 5

[safety]
min_age = \"one hour\"

[[policy]]
name = \"a\"
older_than = \"1d\"

[[policy]]
name = \"b\"
older_than = \"1d\"

[[policy]]
name = \"c\"
repositories = [\"ci/[abc\"]
older_than = \"1d\"
";
    let errors = errors_of(text);
    let found: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (1, "schedule"),
            (4, "safety.min_age"),
            (16, "policy \"c\".repositories[0]"),
        ],
        "{}",
        show(&errors)
    );
}

#[test]
fn two_bad_keys_in_one_table_are_both_reported() {
    let text = "\
[safety]
min_age = 3
protect = \"base/*\"
max_removals_per_run = 0
colour = \"red\"
";
    let errors = errors_of(&with_policy(text));
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "safety.min_age",
            "safety.protect",
            "safety.max_removals_per_run",
            "safety.colour"
        ],
        "{}",
        show(&errors)
    );
}

#[test]
fn inode_watermarks_stand_alone_or_beside_disk_watermarks_in_both_kinds_of_table() {
    let text = "[[policy]]\nname = \"inodes-only\"\ninodes_high = \"90%\"\ninodes_low = \"80%\"\n\
                [[policy]]\nname = \"both\"\ndisk_high = \"85%\"\ndisk_low = \"70%\"\n\
                inodes_high = \" 95 %\"\ninodes_low = \"75%\"\n\
                [[build_cache]]\nname = \"cache\"\ninodes_high = \"90%\"\ninodes_low = \"60%\"\n";
    let policy = config::parse(text, FILE).unwrap_or_else(|e| panic!("{e}"));
    let inodes = |c: Option<imagegc::policy::InodePressure>| c.map(|i| (i.high, i.low));
    assert_eq!(inodes(policy.rules[0].conditions.inodes), Some((0.9, 0.8)));
    assert_eq!(policy.rules[0].conditions.disk, None);
    assert!(policy.rules[0].conditions.is_pressure());
    assert_eq!(
        inodes(policy.rules[1].conditions.inodes),
        Some((0.95, 0.75))
    );
    assert!(policy.rules[1].conditions.disk.is_some());
    assert_eq!(
        inodes(policy.cache_rules[0].conditions.inodes),
        Some((0.9, 0.6))
    );
    assert_eq!(
        policy.inode_marks(),
        [
            ("inodes-only".to_string(), 0.9, 0.8),
            ("both".to_string(), 0.95, 0.75),
            ("cache".to_string(), 0.9, 0.6),
        ]
    );
}

#[test]
fn a_table_without_conditions_is_told_the_inode_watermarks_are_one() {
    let errors = errors_of("[[policy]]\nname = \"p\"\nrepositories = [\"ci/*\"]\n");
    let [error] = errors.as_slice() else {
        panic!("one error: {}", show(&errors));
    };
    assert!(
        error
            .message
            .ends_with("disk_high/disk_low, inodes_high/inodes_low"),
        "{error}"
    );
}

#[test]
fn a_refused_condition_is_not_also_reported_as_a_missing_condition() {
    let text = "[[policy]]\nname = \"p\"\nolder_than = 30\n[[policy]]\nname = \"q\"\ndisk_high = \"85%\"\ndisk_low = 70\n";
    let errors = errors_of(text);
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        ["policy \"p\".older_than", "policy \"q\".disk_low"],
        "{}",
        show(&errors)
    );
}

#[test]
fn a_table_full_of_unknown_keys_is_reported_up_to_a_bound_without_follow_on_errors() {
    let keys = (0..100).fold(String::new(), |mut text, i| {
        let _ = writeln!(text, "junk{i} = 1");
        text
    });
    let errors = errors_of(&format!("[[policy]]\nname = \"p\"\n{keys}"));
    assert_eq!(errors.len(), 33, "{}", show(&errors));
    let last = &errors[0];
    assert_eq!((last.line, last.key.as_str()), (1, "policy \"p\""));
    assert!(last.message.contains("stopped checking"), "{last}");
    assert!(errors[1..]
        .iter()
        .all(|e| e.message.starts_with("unknown key `junk")));
}

#[test]
fn all_syntax_errors_are_reported_and_nothing_else() {
    let text = "schedule = \"@hourly\nbogus = 1\n[safety\nmin_age = \"1h\"\n";
    let errors = errors_of(text);
    assert!(errors.len() >= 2, "{}", ConfigErrors { errors });
    assert!(errors.iter().all(|e| e.message.starts_with("invalid TOML")));
    assert_eq!(errors[0].line, 1);
    assert!(errors.iter().any(|e| e.line == 3));
}

#[test]
fn columns_count_characters_not_bytes() {
    let errors = errors_of(&with_policy(
        "engine = \"\" # é\n[safety]\n  min_age = \"ß\"\n",
    ));
    let found: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(found, [(1, 10), (3, 13)], "{}", ConfigErrors { errors });
}

#[test]
fn loading_a_missing_file_names_the_path_and_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("absent.toml");
    let err = config::load(&path).unwrap_err();
    assert_eq!(err.errors.len(), 1);
    let error = &err.errors[0];
    assert_eq!(error.file, path.display().to_string());
    assert_eq!((error.line, error.column), (0, 0));
    let rendered = err.to_string();
    assert!(
        rendered.starts_with(&format!(
            "{}: cannot read the policy file: No such file or directory",
            path.display()
        )),
        "{rendered}"
    );
}

#[test]
fn loading_a_file_reports_errors_against_its_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("imagegc.toml");
    std::fs::write(&path, "[[policy]]\nname = \"p\"\n").expect("write policy");
    let err = config::load(&path).unwrap_err();
    assert_eq!(err.errors[0].file, path.display().to_string());
    std::fs::write(&path, POLICY).expect("write policy");
    let policy = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.source, path.display().to_string());
}

#[test]
fn loading_a_file_that_is_not_utf8_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("binary.toml");
    std::fs::write(&path, b"name = \"\xff\"\n").expect("write policy");
    let err = config::load(&path).unwrap_err();
    assert!(err.to_string().contains("not valid UTF-8"), "{err}");
}

#[test]
fn loading_a_file_that_is_not_utf8_names_the_line_and_column_of_the_first_bad_byte() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"[[policy]]\nname = \"caf\xe9\"\nbad = \"\xff\"\n").expect("write");
    let err = config::load(&path).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    let error = &err.errors[0];
    // `é` in Latin-1 is the byte 0xE9, the 12th character of line 2.
    assert_eq!((error.line, error.column), (2, 12), "{err}");
    let rendered = err.to_string();
    assert!(
        rendered.starts_with(&format!(
            "{}:2:12: cannot read the policy file: it is not valid UTF-8 text (the byte 0xe9",
            path.display()
        )),
        "{rendered}"
    );
}

/// `config::load` on another thread, given up after a generous bound so a
/// blocking read fails the test instead of hanging it.
fn load_within_30s(path: &Path) -> Result<imagegc::policy::Policy, ConfigErrors> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(config::load(&owned));
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("config::load({}) did not return", path.display()))
}

#[test]
fn a_fifo_is_refused_at_once_instead_of_waiting_for_a_writer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.toml");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let err = load_within_30s(&path).unwrap_err();
    assert_eq!(
        err.errors[0].to_string(),
        format!(
            "{}: cannot read the policy file: it is a FIFO (named pipe), not a regular file; \
             point imagegc at a TOML file",
            path.display()
        )
    );
}

#[test]
fn dev_zero_is_refused_as_a_device_without_reading_it() {
    let err = load_within_30s(Path::new("/dev/zero")).unwrap_err();
    let rendered = err.to_string();
    assert!(
        rendered.starts_with(
            "/dev/zero: cannot read the policy file: it is a character device, not a regular file"
        ),
        "{rendered}"
    );
}

#[test]
fn a_directory_is_refused_as_not_a_regular_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = config::load(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("it is a directory, not a regular file"),
        "{err}"
    );
}

#[test]
fn a_policy_file_over_one_mebibyte_is_refused_with_its_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("huge.toml");
    // Valid TOML all the way, so only the size can be the problem.
    let line = "# padding padding padding padding padding padding padding padding\n";
    let text = format!("{}{POLICY}", line.repeat(2 * 1024 * 1024 / line.len()));
    std::fs::write(&path, &text).expect("write");
    let err = config::load(&path).unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert_eq!(
        err.errors[0].to_string(),
        format!(
            "{}: cannot read the policy file: it is 2.0 MiB ({} bytes), more than the 1.0 MiB \
             a policy file may have",
            path.display(),
            text.len()
        )
    );
    // Exactly at the limit is still read.
    let text = format!("{POLICY}{}", "#".repeat(1024 * 1024 - POLICY.len()));
    std::fs::write(&path, &text).expect("write");
    config::load(&path).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn eighty_errors_print_the_first_fifty_and_count_the_other_thirty() {
    let keys = (0..80).fold(String::new(), |mut text, i| {
        let _ = writeln!(text, "junk{i} = 1");
        text
    });
    let err = config::parse(&with_policy(&keys), FILE).unwrap_err();
    assert_eq!(err.errors.len(), 80);
    let rendered = err.to_string();
    let lines: Vec<&str> = rendered.lines().collect();
    assert_eq!(lines.len(), 52, "{rendered}");
    assert!(lines[..50]
        .iter()
        .all(|l| l.starts_with(&format!("{FILE}:"))));
    assert!(lines[49].starts_with(&format!("{FILE}:50:1: junk49: unknown key")));
    assert_eq!(lines[50], "… and 30 more errors");
    assert_eq!(lines[51], "80 errors");
}

#[test]
fn thousands_of_keys_and_thousands_of_syntax_errors_are_all_reported_with_their_keys() {
    // The shape that took 15.6 s at 16,000 + 16,000 lines; a tenth of it here.
    let n = 1600;
    let mut text = (0..n).fold(String::new(), |mut text, i| {
        let _ = writeln!(text, "k{i} = 1");
        text
    });
    text.push_str("[safety]\nmin_age = [1, \"2\" 3]\n");
    text.push_str(&"=\n".repeat(n));
    let err = config::parse(&text, FILE).unwrap_err();
    assert!(err.errors.len() >= n, "{} errors", err.errors.len());
    assert!(err
        .errors
        .iter()
        .all(|e| e.message.starts_with("invalid TOML") || e.message.starts_with("duplicate key")));
    let first = &err.errors[0];
    assert_eq!(
        (first.line, first.key.as_str()),
        (n + 2, "safety.min_age[2]"),
        "{first}"
    );
    assert!(
        err.errors[1..].iter().all(|e| e.line > n + 2),
        "{}",
        err.errors[1]
    );
    assert!(err.to_string().ends_with(&format!(
        "… and {} more errors\n{} errors",
        err.errors.len() - 50,
        err.errors.len()
    )));
}

#[test]
fn a_long_line_full_of_errors_gets_every_column_right() {
    // An error per comma, all on line 1, after a two-byte character.
    let n = 20_000;
    let text = format!("\"é\" = [{}]\n{POLICY}", ",".repeat(n));
    let err = config::parse(&text, FILE).unwrap_err();
    assert_eq!(err.errors.len(), n, "{}", err.errors[0]);
    let columns: Vec<usize> = err.errors.iter().map(|e| e.column).collect();
    assert_eq!(columns, (8..8 + n).collect::<Vec<_>>());
    assert!(err.errors.iter().all(|e| e.line == 1 && e.key == "é"));
}

#[test]
fn a_file_of_nothing_but_equals_signs_is_checked_and_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("equals.toml");
    std::fs::write(&path, "=\n".repeat(20_000)).expect("write");
    let err = load_within_30s(&path).unwrap_err();
    assert!(err.errors.len() >= 20_000, "{}", err.errors.len());
    assert_eq!(err.errors.last().map(|e| e.line), Some(20_000));
    assert_eq!(err.to_string().lines().count(), 52);
}

#[test]
fn control_characters_in_keys_and_values_are_escaped_in_every_message() {
    let texts = [
        // An unknown top-level key that clears the screen.
        "\"\\u001b[2J\" = 1\n".to_string(),
        // One in [safety] (serde's message) and one in a policy.
        "[safety]\n\"min_age\\u001b[31m\" = \"1h\"\n".to_string(),
        "[[policy]]\nname = \"p\"\nolder_than = \"1d\"\n\"\\u001b]0;owned\\u0007\" = 1\n"
            .to_string(),
        // Values quoted back in messages.
        "schedule = \"\\u001b[31m\"\ntimezone = \"\\r\\u001b[K\"\n".to_string(),
        "[metrics]\nlisten = \"\\u001b\"\n".to_string(),
        "[[policy]]\nname = \"p\"\nolder_than = \"\\u001b[1m\"\ndisk_high = \"\\u009b2J\"\n"
            .to_string(),
        "[[policy]]\nname = \"p\"\nrepositories = [\"\\u001b[\"]\nolder_than = \"1d\"\n"
            .to_string(),
        // A bidirectional override that would reverse the rest of the line.
        "\"\u{202e}evil\" = 1\n".to_string(),
    ];
    for text in texts {
        let text = with_policy(&text);
        let rendered = config::parse(&text, FILE).unwrap_err().to_string();
        assert!(
            !rendered.contains(|c: char| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{text:?} gave {rendered:?}"
        );
        assert!(rendered.contains("\\u{"), "{text:?} gave {rendered:?}");
    }
}

#[test]
fn an_unknown_key_with_an_escape_is_shown_escaped_and_still_found() {
    let errors = errors_of(&with_policy("\"\\u001b[2Jschedule\" = 1\n"));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key, "\\u{1b}[2Jschedule");
    assert!(
        errors[0]
            .message
            .starts_with("unknown key `\\u{1b}[2Jschedule`, expected one of"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_file_name_with_control_characters_is_shown_escaped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("red\u{1b}[31m.toml");
    std::fs::write(&path, "bogus = 1\n").expect("write");
    let rendered = config::load(&path).unwrap_err().to_string();
    assert!(!rendered.contains('\u{1b}'), "{rendered:?}");
    assert!(
        rendered.contains("red\\u{1b}[31m.toml:1:1: bogus"),
        "{rendered:?}"
    );
}

const FULL: &str = r#"
schedule = "0 */6 * * *"
timezone = "Europe/Berlin"
engine = "tcp://127.0.0.1:2375"
dry_run = true

[metrics]
enabled = false
listen = "0.0.0.0:9400"

[state]
path = "/srv/imagegc/state.json"

[safety]
min_age = "0s"
protect = ["base/*", "**/release-*"]
protect_labels = ["keep", "tier=prod"]
protect_containers = ["runner-helper*"]
max_removals_per_run = 50

[[policy]]
name = "dangling"
dangling = true
older_than = "90m"

[[policy]]
name = "stale-ci"
dangling = false
repositories = ["ci/*", "**/build-*"]
labels = ["ci", "team=web"]
unused_for = "7d"
older_than = "30d"
keep_most_recent = 3

[[policy]]
name = "pressure"
disk_high = "85%"
disk_low = "70.5%"

[[policy]]
name = "budget"
disk_high = "200GiB"
disk_low = "150 GB"

[[build_cache]]
name = "cache"
types = ["regular", "exec.cachemount"]
unused_for = "2d"
older_than = "14d"
keep_storage = "20GiB"
disk_high = "90%"
disk_low = "80%"

[[containers]]
name = "finished-ci-jobs"
states = ["exited", "dead", "created"]
names = ["ci-*", "runner-*"]
images = ["ci/**"]
labels = ["com.gitlab.gitlab-runner.type=build"]
exited_for = "6h"
older_than = "2d"
"#;

#[test]
fn a_file_with_every_key_parses_to_the_values_written() {
    let policy = config::parse(FULL, FILE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.source, FILE);
    assert_eq!(policy.schedule.to_string(), "0 */6 * * *");
    assert_eq!(policy.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(policy.engine.as_deref(), Some("tcp://127.0.0.1:2375"));
    assert!(policy.dry_run);
    assert!(!policy.metrics.enabled);
    assert_eq!(policy.metrics.listen.to_string(), "0.0.0.0:9400");
    assert_eq!(policy.state.path, Path::new("/srv/imagegc/state.json"));

    let safety = &policy.safety;
    assert_eq!(safety.min_age, Duration::ZERO);
    assert_eq!(safety.max_removals_per_run, NonZeroUsize::new(50));
    let protect: Vec<&str> = safety.protect.iter().map(|g| g.pattern.as_str()).collect();
    assert_eq!(protect, ["base/*", "**/release-*"]);
    assert!(safety.protect[0].is_match("base/debian"));
    assert!(!safety.protect[0].is_match("base/debian/slim"));
    assert!(safety.protect[1].is_match("registry.local/app/release-1.2"));
    assert_eq!(
        safety.protect_labels,
        [
            LabelMatch {
                key: "keep".into(),
                value: None
            },
            LabelMatch {
                key: "tier".into(),
                value: Some("prod".into())
            },
        ]
    );

    let names: Vec<&str> = policy.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["dangling", "stale-ci", "pressure", "budget"]);

    let dangling = &policy.rules[0];
    assert_eq!(dangling.selectors.dangling, Some(true));
    assert_eq!(
        dangling.conditions.older_than,
        Some(Duration::from_secs(90 * 60))
    );

    let ci = &policy.rules[1];
    assert_eq!(ci.selectors.dangling, Some(false));
    let repos = &ci.selectors.repositories;
    assert!(repos[0].is_match("ci/app"));
    assert!(!repos[0].is_match("ci/x/app"));
    assert!(repos[1].is_match("a/b/build-1"));
    assert!(repos[1].is_match("build-1"));
    assert!(!repos[1].is_match("a/b/rebuild-1"));
    assert_eq!(ci.selectors.labels.len(), 2);
    assert_eq!(ci.conditions.unused_for, Some(days(7)));
    assert_eq!(ci.conditions.older_than, Some(days(30)));
    assert_eq!(ci.conditions.keep_most_recent, Some(3));
    assert_eq!(ci.conditions.disk, None);

    let pressure = policy.rules[2].conditions.disk.expect("disk watermarks");
    assert_eq!(pressure.high, Threshold::Ratio(0.85));
    assert_eq!(pressure.low, Threshold::Ratio(0.705));

    let budget = policy.rules[3].conditions.disk.expect("disk watermarks");
    assert_eq!(budget.high, Threshold::Bytes(200 * 1024 * 1024 * 1024));
    assert_eq!(budget.low, Threshold::Bytes(150_000_000_000));

    let [cache] = policy.cache_rules.as_slice() else {
        panic!("one [[build_cache]]: {:?}", policy.cache_rules);
    };
    assert_eq!(cache.name, "cache");
    assert_eq!(cache.selectors.types, ["regular", "exec.cachemount"]);
    assert_eq!(cache.conditions.unused_for, Some(days(2)));
    assert_eq!(cache.conditions.older_than, Some(days(14)));
    assert_eq!(cache.conditions.keep_storage, Some(20 * 1024 * 1024 * 1024));
    let watermarks = cache.conditions.disk.expect("disk watermarks");
    assert_eq!(watermarks.high, Threshold::Ratio(0.9));
    assert_eq!(watermarks.low, Threshold::Ratio(0.8));
    let [containers] = policy.container_rules.as_slice() else {
        panic!("one [[containers]]: {:?}", policy.container_rules);
    };
    assert_eq!(containers.name, "finished-ci-jobs");
    assert_eq!(
        containers.selectors.states,
        imagegc::policy::StoppedState::ALL
    );
    assert_eq!(containers.selectors.names.len(), 2);
    assert!(containers.selectors.images[0].is_match("ci/app/test:42"));
    assert_eq!(containers.selectors.labels.len(), 1);
    assert_eq!(containers.conditions.exited_for, Some(hours(6)));
    assert_eq!(containers.conditions.older_than, Some(days(2)));
    assert!(safety.protect_containers[0].is_match("runner-helper-1"));
    assert_eq!(policy.order.len(), 6);
    assert_eq!(
        policy.order[4..],
        [
            imagegc::policy::RuleRef::Cache(0),
            imagegc::policy::RuleRef::Container(0)
        ]
    );
}

#[test]
fn inline_tables_are_policies_too() {
    let text =
        "policy = [{ name = \"a\", older_than = \"1d\" }, { name = \"b\", unused_for = \"2d\" }]\n";
    let policy = config::parse(text, FILE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.rules.len(), 2);
}

/// Edits applied to a valid file by the fuzz test below.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, char),
    Delete(usize),
    Replace(usize, char),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let interesting = prop::sample::select(vec![
        '"', '\'', '[', ']', '=', '\n', '#', ',', '{', '}', '.', '%', '*', '-', '0', 'a', 'é', '\\',
    ]);
    prop_oneof![
        (any::<usize>(), interesting.clone()).prop_map(|(at, c)| Edit::Insert(at, c)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), interesting).prop_map(|(at, c)| Edit::Replace(at, c)),
        (any::<usize>(), 1..40usize).prop_map(|(at, len)| Edit::Duplicate(at, len)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let n = chars.len().max(1);
        match *edit {
            Edit::Insert(at, c) => chars.insert(at % (chars.len() + 1), c),
            Edit::Delete(at) if !chars.is_empty() => {
                chars.remove(at % n);
            }
            Edit::Replace(at, c) if !chars.is_empty() => chars[at % n] = c,
            Edit::Duplicate(at, len) if !chars.is_empty() => {
                let start = at % n;
                let end = (start + len).min(chars.len());
                let copy: Vec<char> = chars[start..end].to_vec();
                chars.splice(end..end, copy);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

fn assert_well_formed(result: &Result<imagegc::policy::Policy, ConfigErrors>, text: &str) {
    if let Err(err) = result {
        assert!(!err.errors.is_empty());
        let lines = text.split('\n').count();
        for error in &err.errors {
            assert_eq!(error.file, FILE);
            assert!(error.line >= 1 && error.line <= lines, "{error}");
            assert!(error.column >= 1, "{error}");
            assert!(!error.message.is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_text_never_panics(text in ".{0,300}") {
        let result = config::parse(&text, FILE);
        assert_well_formed(&result, &text);
    }

    #[test]
    fn random_edits_of_a_valid_file_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        let text = apply(FULL, &edits);
        let result = config::parse(&text, FILE);
        assert_well_formed(&result, &text);
    }

    #[test]
    fn random_edits_of_the_builtin_policy_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        let text = apply(config::DEFAULT_POLICY_TEXT, &edits);
        let result = config::parse(&text, FILE);
        assert_well_formed(&result, &text);
    }
}

#[test]
fn max_parallel_removals_is_read_from_safety_and_one_means_one_by_one() {
    let policy = config::parse(&with_policy("[safety]\nmax_parallel_removals = 1\n"), "t")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.safety.max_parallel_removals, NonZeroUsize::MIN);
    let policy = config::parse(&with_policy("[safety]\nmax_parallel_removals = 16\n"), "t")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.safety.max_parallel_removals.get(), 16);
}
