//! Every section and key of a policy file, once: what kind of value each key
//! takes, what to say when it has the wrong kind ("expected …"), and its row
//! in the README's policy reference (type, default, example, meaning).
//!
//! This table drives stage 1 ([`super::raw`]): unknown keys, values of the
//! wrong kind and "did you mean" hints all come from it, and the README's
//! reference tables are rendered from it ([`reference`]; `tests/
//! policy_reference.rs` fails when they differ). The raw serde structs must
//! have exactly these keys, in this order: a unit test in `raw.rs` pins them.
//!
//! A new section (`[[build_cache]]` was one, `[[containers]]` the next) is
//! a new [`Section`] here plus its key in [`TOP`], a raw struct and a
//! validation function.

use std::fmt::Write as _;

/// What a key's value must be.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Bool,
    /// A TOML integer that fits an `i64` (the checks on its range come later,
    /// with messages of their own).
    Integer,
    String,
    /// An array of strings; `element` completes "expected …" for an element
    /// of another kind.
    Strings {
        element: &'static str,
    },
    /// A table read with its own section, like `[safety]`.
    Table(&'static Section),
    /// An array of tables, each read with its own section, like `[[policy]]`.
    Tables(&'static Section),
}

/// One key of a section.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    /// Completes "expected …, found …" when the value has the wrong kind;
    /// empty for sections, which have messages of their own.
    pub expected: &'static str,
    /// Its entry in the README.
    pub doc: Doc,
}

/// A key's entry in the README's policy reference. The cells are Markdown.
#[derive(Debug)]
pub enum Doc {
    Row {
        /// `selector`, `condition` or `—` (policies only; empty elsewhere).
        role: &'static str,
        /// `string`, `bool`, `duration`, ….
        kind: &'static str,
        default: &'static str,
        example: &'static str,
        meaning: &'static str,
    },
    /// Shares the row of the key before it (`disk_low` with `disk_high`).
    WithPrevious,
    /// A section of its own (`[safety]`), not a row.
    Section,
}

/// A README column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Key,
    Role,
    Type,
    Default,
    Example,
    Meaning,
}

/// A table of the policy file and its keys.
#[derive(Debug)]
pub struct Section {
    /// The top-level key that holds it; empty for the top level itself.
    pub name: &'static str,
    /// Where its keys go, completing "belongs …".
    pub place: &'static str,
    /// Arrays of tables: what one element is called ("each policy must be
    /// a table").
    pub noun: &'static str,
    /// Its keys, in the order the README lists them.
    pub keys: &'static [Key],
    /// The columns of its README table.
    pub columns: &'static [Column],
}

impl Section {
    /// The key named `name`.
    pub fn key(&self, name: &str) -> Option<&'static Key> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// The names of its keys, in order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + Clone {
        self.keys.iter().map(|k| k.name)
    }
}

/// Every section; the top level first.
pub const SECTIONS: [&Section; 8] = [
    &TOP,
    &METRICS,
    &STATE,
    &PRESSURE,
    &SAFETY,
    &POLICY,
    &BUILD_CACHE,
    &CONTAINERS,
];

/// The error for a file with no `[[policy]]`, `[[build_cache]]` or
/// `[[containers]]` tables: it would never remove anything, which is almost
/// certainly not what its author meant.
pub(super) const NO_POLICIES: &str = "no [[policy]], [[build_cache]] or [[containers]] tables: \
                                      nothing to do; add at least one, such as [[policy]] \
                                      name = \"dangling\", dangling = true, older_than = \"1h\"";

const DURATION: &str = "a duration string, like \"90m\", \"12h\" or \"7d\"";
const BOOL: &str = "true or false";
const LABELS: &str = "an array of label strings, like [\"keep\", \"tier=prod\"]";
const LABEL: &str = "a label string, like \"keep\" or \"tier=prod\"";
const THRESHOLD: &str = "a percentage string like \"85%\" or a size string like \"200GiB\"";
const SIZE: &str = "a size string, like \"20GiB\"";
const PERCENT: &str = "a percentage string, like \"90%\"";

const WITH_EXAMPLE: &[Column] = &[
    Column::Key,
    Column::Type,
    Column::Default,
    Column::Example,
    Column::Meaning,
];
const WITHOUT_EXAMPLE: &[Column] = &[Column::Key, Column::Type, Column::Default, Column::Meaning];

/// The top level: global settings and the sections.
pub static TOP: Section = Section {
    name: "",
    place: "at the top level",
    noun: "",
    columns: WITH_EXAMPLE,
    keys: &[
        Key {
            name: "schedule",
            kind: Kind::String,
            expected: "a crontab expression string, like \"0 * * * *\" or \"@hourly\"",
            doc: Doc::Row {
                role: "",
                kind: "string",
                default: "`\"@hourly\"`",
                example: "`\"30 3 * * mon-fri\"`",
                meaning: "when the daemon runs passes: 5-field crontab (Vixie semantics), 6 \
                          fields with seconds first, or `@hourly`, `@daily`, `@weekly`, \
                          `@monthly`, `@yearly`",
            },
        },
        Key {
            name: "timezone",
            kind: Kind::String,
            expected: "an IANA time zone name string, like \"UTC\" or \"Europe/Berlin\"",
            doc: Doc::Row {
                role: "",
                kind: "string",
                default: "`\"UTC\"`",
                example: "`\"Europe/Berlin\"`",
                meaning: "IANA time zone the schedule is read in",
            },
        },
        Key {
            name: "run_on_start",
            kind: Kind::Bool,
            expected: BOOL,
            doc: Doc::Row {
                role: "",
                kind: "bool",
                default: "`true`",
                example: "`false`",
                meaning: "the daemon runs a pass right after it starts, then follows the \
                          schedule",
            },
        },
        Key {
            name: "engine",
            kind: Kind::String,
            expected: "an engine address string, like \"unix:///var/run/docker.sock\"",
            doc: Doc::Row {
                role: "",
                kind: "string",
                default: "none",
                example: "`\"unix:///var/run/docker.sock\"`",
                meaning: "engine address, used when neither `--engine` nor `DOCKER_HOST` is set",
            },
        },
        Key {
            name: "dry_run",
            kind: Kind::Bool,
            expected: BOOL,
            doc: Doc::Row {
                role: "",
                kind: "bool",
                default: "`false`",
                example: "`true`",
                meaning: "passes plan and report but remove nothing",
            },
        },
        Key {
            name: "metrics",
            kind: Kind::Table(&METRICS),
            expected: "",
            doc: Doc::Section,
        },
        Key {
            name: "state",
            kind: Kind::Table(&STATE),
            expected: "",
            doc: Doc::Section,
        },
        Key {
            name: "pressure",
            kind: Kind::Table(&PRESSURE),
            expected: "",
            doc: Doc::Section,
        },
        Key {
            name: "safety",
            kind: Kind::Table(&SAFETY),
            expected: "",
            doc: Doc::Section,
        },
        Key {
            name: "policy",
            kind: Kind::Tables(&POLICY),
            expected: "",
            doc: Doc::Section,
        },
        Key {
            name: "build_cache",
            kind: Kind::Tables(&BUILD_CACHE),
            expected: "",
            doc: Doc::Section,
        },
        Key {
            name: "containers",
            kind: Kind::Tables(&CONTAINERS),
            expected: "",
            doc: Doc::Section,
        },
    ],
};

/// `[metrics]`.
pub static METRICS: Section = Section {
    name: "metrics",
    place: "in [metrics]",
    noun: "",
    columns: WITHOUT_EXAMPLE,
    keys: &[
        Key {
            name: "enabled",
            kind: Kind::Bool,
            expected: BOOL,
            doc: Doc::Row {
                role: "",
                kind: "bool",
                default: "`true`",
                example: "",
                meaning: "serve Prometheus metrics (daemon mode)",
            },
        },
        Key {
            name: "listen",
            kind: Kind::String,
            expected: "an address string, like \"127.0.0.1:9317\"",
            doc: Doc::Row {
                role: "",
                kind: "string",
                default: "`\"127.0.0.1:9317\"`",
                example: "",
                meaning: "address of `/metrics` and `/healthz`; for a remote Prometheus see below",
            },
        },
    ],
};

/// `[state]`.
pub static STATE: Section = Section {
    name: "state",
    place: "in [state]",
    noun: "",
    columns: WITHOUT_EXAMPLE,
    keys: &[Key {
        name: "path",
        kind: Kind::String,
        expected: "a file path string, like \"/var/lib/imagegc/state.json\"",
        doc: Doc::Row {
            role: "",
            kind: "string",
            default: "`\"/var/lib/imagegc/state.json\"`",
            example: "",
            meaning: "first-seen and last-used times, written atomically; `plan` reads it, \
                      `once` reads and updates it",
        },
    }],
};

/// `[pressure]`.
pub static PRESSURE: Section = Section {
    name: "pressure",
    place: "in [pressure]",
    noun: "",
    columns: WITH_EXAMPLE,
    keys: &[
        Key {
            name: "interval",
            kind: Kind::String,
            expected: DURATION,
            doc: Doc::Row {
                role: "",
                kind: "duration",
                default: "`\"5s\"`",
                example: "`\"1s\"`",
                meaning: "while any policy sets a percentage `disk_high` or an `inodes_high`, \
                          the daemon samples the filesystem holding the engine's data this often \
                          (and at once after a pull, load, build or container create) and \
                          starts a pass as soon as usage or inode use is at or above a high \
                          mark; not zero",
            },
        },
        Key {
            name: "cooldown",
            kind: Kind::String,
            expected: DURATION,
            doc: Doc::Row {
                role: "",
                kind: "duration",
                default: "`\"1m\"`",
                example: "`\"10m\"`",
                meaning: "after a pressure pass that left usage above `disk_low` or inode use \
                          above `inodes_low` (nothing more it may remove, or the inode estimate \
                          fell short), no pressure pass before this has passed",
            },
        },
    ],
};

/// `[safety]`.
pub static SAFETY: Section = Section {
    name: "safety",
    place: "in [safety]",
    noun: "",
    columns: WITH_EXAMPLE,
    keys: &[
        Key {
            name: "min_age",
            kind: Kind::String,
            expected: DURATION,
            doc: Doc::Row {
                role: "",
                kind: "duration",
                default: "`\"1h\"`",
                example: "`\"6h\"`",
                meaning: "grace period from max(created, last tagged, first seen); after a \
                          state loss, from the restart",
            },
        },
        Key {
            name: "protect",
            kind: Kind::Strings {
                element: "a reference glob string, like \"base/*\"",
            },
            expected: "an array of reference globs, like [\"base/*\", \"**/release-*\"]",
            doc: Doc::Row {
                role: "",
                kind: "list of globs",
                default: "`[]`",
                example: "`[\"base/*\", \"**/release-*\"]`",
                meaning: "references never removed; matched against `repo:tag` and against \
                          `repo`",
            },
        },
        Key {
            name: "protect_labels",
            kind: Kind::Strings { element: LABEL },
            expected: LABELS,
            doc: Doc::Row {
                role: "",
                kind: "list",
                default: "`[]`",
                example: "`[\"keep\", \"tier=prod\"]`",
                meaning: "images and containers with any of these labels (`key` or \
                          `key=value`) are never removed",
            },
        },
        Key {
            name: "protect_containers",
            kind: Kind::Strings {
                element: "a container name glob string, like \"runner-helper*\"",
            },
            expected: "an array of container name globs, like [\"runner-helper*\"]",
            doc: Doc::Row {
                role: "",
                kind: "list of globs",
                default: "`[]`",
                example: "`[\"runner-helper*\", \"db-*\"]`",
                meaning: "containers never removed; matched against each of the container's \
                          names, without the leading `/`",
            },
        },
        Key {
            name: "max_removals_per_run",
            kind: Kind::Integer,
            expected: "a positive integer, like 500",
            doc: Doc::Row {
                role: "",
                kind: "integer ≥ 1",
                default: "unlimited",
                example: "`500`",
                meaning: "at most this many removals per pass; the rest waits for the next",
            },
        },
        Key {
            name: "max_parallel_removals",
            kind: Kind::Integer,
            expected: "a positive integer, like 4",
            doc: Doc::Row {
                role: "",
                kind: "integer ≥ 1",
                default: "`4`",
                example: "`8`",
                meaning: "at most this many image removals in flight at once (a parent only \
                          after its children, one reference of an image at a time); `1` \
                          removes one by one",
            },
        },
    ],
};

/// One `[[policy]]`.
pub static POLICY: Section = Section {
    name: "policy",
    place: "in a [[policy]] table",
    noun: "policy",
    columns: &[
        Column::Key,
        Column::Role,
        Column::Type,
        Column::Example,
        Column::Meaning,
    ],
    keys: &[
        Key {
            name: "name",
            kind: Kind::String,
            expected: "a non-empty string, like \"stale-ci\"",
            doc: Doc::Row {
                role: "—",
                kind: "string, required",
                default: "",
                example: "`\"stale-ci\"`",
                meaning: "unique, without control characters; appears with every removal and \
                          in metrics",
            },
        },
        Key {
            name: "dangling",
            kind: Kind::Bool,
            expected: BOOL,
            doc: Doc::Row {
                role: "selector",
                kind: "bool",
                default: "",
                example: "`true`",
                meaning: "`true`: untagged images only; `false`: tagged references only",
            },
        },
        Key {
            name: "repositories",
            kind: Kind::Strings {
                element: "a repository glob string, like \"ci/*\"",
            },
            expected: "an array of repository globs, like [\"ci/*\"]",
            doc: Doc::Row {
                role: "selector",
                kind: "list of globs",
                default: "",
                example: "`[\"ci/*\", \"**/build-*\"]`",
                meaning: "glob on the repository part of `repo:tag`; `*` does not cross `/`, \
                          `**` does. Untagged images never match",
            },
        },
        Key {
            name: "labels",
            kind: Kind::Strings { element: LABEL },
            expected: LABELS,
            doc: Doc::Row {
                role: "selector",
                kind: "list",
                default: "",
                example: "`[\"team=ci\", \"ephemeral\"]`",
                meaning: "image labels, all must match",
            },
        },
        Key {
            name: "unused_for",
            kind: Kind::String,
            expected: DURATION,
            doc: Doc::Row {
                role: "condition",
                kind: "duration",
                default: "",
                example: "`\"7d\"`",
                meaning: "last used longer ago than this",
            },
        },
        Key {
            name: "older_than",
            kind: Kind::String,
            expected: DURATION,
            doc: Doc::Row {
                role: "condition",
                kind: "duration",
                default: "",
                example: "`\"30d\"`",
                meaning: "created longer ago than this",
            },
        },
        Key {
            name: "keep_most_recent",
            kind: Kind::Integer,
            expected: "an integer of at least 1, like 3",
            doc: Doc::Row {
                role: "condition",
                kind: "integer ≥ 1",
                default: "",
                example: "`3`",
                meaning: "per repository, keep the N newest references this policy selects (by \
                          created time; on a tie the tag that sorts last counts as newer); \
                          untagged images are never removed by a policy with this condition",
            },
        },
        Key {
            name: "disk_high",
            kind: Kind::String,
            expected: THRESHOLD,
            doc: Doc::Row {
                role: "condition",
                kind: "percent or size, both or neither",
                default: "",
                example: "`\"85%\"`, `\"70%\"` / `\"200GiB\"`, `\"150GiB\"`",
                meaning: "act only while usage is at or above `disk_high`, then remove \
                          least-recently-used first until projected usage is at or below \
                          `disk_low`. Percentages are of the filesystem holding the Docker root \
                          dir, counted as `df` counts `Use%`: used / (used + available to \
                          unprivileged users), so the blocks reserved for root are left out \
                          (imagegc's figure matches `df -h`'s, not used / size); sizes are of \
                          image data (unique layer bytes)",
            },
        },
        Key {
            name: "disk_low",
            kind: Kind::String,
            expected: THRESHOLD,
            doc: Doc::WithPrevious,
        },
        Key {
            name: "inodes_high",
            kind: Kind::String,
            expected: PERCENT,
            doc: Doc::Row {
                role: "condition",
                kind: "percent, both or neither",
                default: "",
                example: "`\"90%\"`, `\"80%\"`",
                meaning: "act only while the share of inodes in use (`df -i`'s `IUse%`, of the \
                          filesystem holding the Docker root dir) is at or above `inodes_high`, \
                          then remove least-recently-used first until the estimated share is at \
                          or below `inodes_low`. No engine says how many inodes an image holds, \
                          so inodes are estimated to be freed in proportion to bytes: inodes used \
                          × (projected used bytes / used bytes); the daemon samples again, and \
                          if the estimate fell short the next sample starts another pass. May \
                          be set with or without `disk_high`/`disk_low`: either high mark starts \
                          the policy and it stops once every low mark is reached. Skipped, with \
                          a note, on a filesystem that reports no inode counts (btrfs, some FUSE)",
            },
        },
        Key {
            name: "inodes_low",
            kind: Kind::String,
            expected: PERCENT,
            doc: Doc::WithPrevious,
        },
    ],
};

/// One `[[build_cache]]`: which `BuildKit` build-cache records to remove.
pub static BUILD_CACHE: Section = Section {
    name: "build_cache",
    place: "in a [[build_cache]] table",
    noun: "build-cache policy",
    columns: &[
        Column::Key,
        Column::Role,
        Column::Type,
        Column::Example,
        Column::Meaning,
    ],
    keys: &[
        Key {
            name: "name",
            kind: Kind::String,
            expected: "a non-empty string, like \"build-cache\"",
            doc: Doc::Row {
                role: "—",
                kind: "string, required",
                default: "",
                example: "`\"build-cache\"`",
                meaning: "unique across `[[policy]]`, `[[build_cache]]` and `[[containers]]`, \
                          without control characters; appears with every removal and in metrics",
            },
        },
        Key {
            name: "types",
            kind: Kind::Strings {
                element: "a record type string, like \"regular\"",
            },
            expected: "an array of record types, like [\"regular\", \"source.local\"]",
            doc: Doc::Row {
                role: "selector",
                kind: "list",
                default: "",
                example: "`[\"regular\", \"source.local\"]`",
                meaning: "record types, any may match: `regular`, `source.local`, \
                          `exec.cachemount`, `internal`, `frontend`, `source.git.checkout`. \
                          None given: every record",
            },
        },
        Key {
            name: "unused_for",
            kind: Kind::String,
            expected: DURATION,
            doc: Doc::Row {
                role: "condition",
                kind: "duration",
                default: "",
                example: "`\"2d\"`",
                meaning: "last used (`LastUsedAt`, `CreatedAt` when never used) longer ago than \
                          this",
            },
        },
        Key {
            name: "older_than",
            kind: Kind::String,
            expected: DURATION,
            doc: Doc::Row {
                role: "condition",
                kind: "duration",
                default: "",
                example: "`\"14d\"`",
                meaning: "created (`CreatedAt`) longer ago than this",
            },
        },
        Key {
            name: "keep_storage",
            kind: Kind::String,
            expected: SIZE,
            doc: Doc::Row {
                role: "condition",
                kind: "size",
                default: "",
                example: "`\"20GiB\"`",
                meaning: "keep the most recently used records this policy selects up to this \
                          total of their engine-reported `Size` (shared records included), \
                          remove the rest (computed by imagegc, not handed to the engine)",
            },
        },
        Key {
            name: "disk_high",
            kind: Kind::String,
            expected: THRESHOLD,
            doc: Doc::Row {
                role: "condition",
                kind: "percent or size, both or neither",
                default: "",
                example: "`\"85%\"`, `\"70%\"` / `\"40GiB\"`, `\"30GiB\"`",
                meaning: "act only while usage is at or above `disk_high`, then remove \
                          least-recently-used records until projected usage is at or below \
                          `disk_low`. Percentages are of the disk, counted as for `[[policy]]`; \
                          sizes are of build-cache data (the records' sizes, without the bytes \
                          they share with image layers)",
            },
        },
        Key {
            name: "disk_low",
            kind: Kind::String,
            expected: THRESHOLD,
            doc: Doc::WithPrevious,
        },
        Key {
            name: "inodes_high",
            kind: Kind::String,
            expected: PERCENT,
            doc: Doc::Row {
                role: "condition",
                kind: "percent, both or neither",
                default: "",
                example: "`\"90%\"`, `\"80%\"`",
                meaning: "act only while the share of inodes in use is at or above \
                          `inodes_high`, then remove least-recently-used records until the \
                          estimated share is at or below `inodes_low`; counted and estimated as \
                          for `[[policy]]` (inodes freed in proportion to bytes freed)",
            },
        },
        Key {
            name: "inodes_low",
            kind: Kind::String,
            expected: PERCENT,
            doc: Doc::WithPrevious,
        },
    ],
};

/// One `[[containers]]`: which stopped containers to remove.
pub static CONTAINERS: Section = Section {
    name: "containers",
    place: "in a [[containers]] table",
    noun: "container policy",
    columns: &[
        Column::Key,
        Column::Role,
        Column::Type,
        Column::Example,
        Column::Meaning,
    ],
    keys: &[
        Key {
            name: "name",
            kind: Kind::String,
            expected: "a non-empty string, like \"finished-ci-jobs\"",
            doc: Doc::Row {
                role: "—",
                kind: "string, required",
                default: "",
                example: "`\"finished-ci-jobs\"`",
                meaning: "unique across `[[policy]]`, `[[build_cache]]` and `[[containers]]`, \
                          without control characters; appears with every removal and in metrics",
            },
        },
        Key {
            name: "states",
            kind: Kind::Strings {
                element: "a container state string, like \"exited\"",
            },
            expected: "an array of container states, like [\"exited\", \"dead\"]",
            doc: Doc::Row {
                role: "selector",
                kind: "list",
                default: "",
                example: "`[\"exited\", \"dead\", \"created\"]`",
                meaning: "container states, any may match: `exited`, `dead`, `created` (never \
                          started). None given: `exited` and `dead`, so never-started \
                          containers are removed only by a policy that names `created`. A \
                          running, paused, restarting or removing container is never removed",
            },
        },
        Key {
            name: "names",
            kind: Kind::Strings {
                element: "a container name glob string, like \"ci-*\"",
            },
            expected: "an array of container name globs, like [\"ci-*\", \"runner-*\"]",
            doc: Doc::Row {
                role: "selector",
                kind: "list of globs",
                default: "",
                example: "`[\"ci-*\", \"runner-*\"]`",
                meaning: "globs on the container's names (without the leading `/`); any name \
                          may match any glob",
            },
        },
        Key {
            name: "images",
            kind: Kind::Strings {
                element: "an image reference glob string, like \"ci/**\"",
            },
            expected: "an array of image reference globs, like [\"ci/**\"]",
            doc: Doc::Row {
                role: "selector",
                kind: "list of globs",
                default: "",
                example: "`[\"ci/**\"]`",
                meaning: "globs on the image reference the container was created from, as \
                          given to `docker run` (`ci/job:42`); `*` does not cross `/`, `**` does",
            },
        },
        Key {
            name: "labels",
            kind: Kind::Strings { element: LABEL },
            expected: LABELS,
            doc: Doc::Row {
                role: "selector",
                kind: "list",
                default: "",
                example: "`[\"com.gitlab.gitlab-runner.type=build\"]`",
                meaning: "container labels, all must match. Compose containers (label \
                          `com.docker.compose.project`) are removed only by a policy that \
                          lists that label here",
            },
        },
        Key {
            name: "exited_for",
            kind: Kind::String,
            expected: DURATION,
            doc: Doc::Row {
                role: "condition",
                kind: "duration",
                default: "",
                example: "`\"6h\"`",
                meaning: "finished (`State.FinishedAt`; `Created` for a never-started \
                          container) longer ago than this",
            },
        },
        Key {
            name: "older_than",
            kind: Kind::String,
            expected: DURATION,
            doc: Doc::Row {
                role: "condition",
                kind: "duration",
                default: "",
                example: "`\"2d\"`",
                meaning: "created (`Created`) longer ago than this",
            },
        },
    ],
};

/// The README table of `section`'s keys, one line per row, ending in a
/// newline.
pub fn reference(section: &Section) -> String {
    let header = |column: &Column| match column {
        Column::Key => "key",
        Column::Role => "kind",
        Column::Type => "type",
        Column::Default => "default",
        Column::Example => "example",
        Column::Meaning => "meaning",
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    for key in section.keys {
        match &key.doc {
            Doc::Row {
                role,
                kind,
                default,
                example,
                meaning,
            } => {
                let cells = section.columns.iter().map(|column| match column {
                    Column::Key => format!("`{}`", key.name),
                    Column::Role => (*role).to_string(),
                    Column::Type => (*kind).to_string(),
                    Column::Default => (*default).to_string(),
                    Column::Example => (*example).to_string(),
                    Column::Meaning => (*meaning).to_string(),
                });
                rows.push(cells.collect());
            }
            Doc::WithPrevious => {
                if let Some(cell) = rows.last_mut().and_then(|row| row.first_mut()) {
                    let _ = write!(cell, ", `{}`", key.name);
                }
            }
            Doc::Section => {}
        }
    }
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let headers: Vec<String> = section.columns.iter().map(|c| header(c).into()).collect();
    let rule: Vec<String> = section.columns.iter().map(|_| "---".into()).collect();
    let mut out = String::new();
    out.push_str(&line(&headers));
    let _ = writeln!(out, "|{}|", rule.join("|"));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults the README states are the ones validation applies.
    #[test]
    fn documented_defaults_are_the_defaults_in_force() {
        let default = |section: &Section, name: &str| match section.key(name).map(|k| &k.doc) {
            Some(Doc::Row { default, .. }) => default.trim_matches('`').to_string(),
            other => panic!("{name}: no row ({other:?})"),
        };
        let quoted = |text: &str| format!("{text:?}");
        assert_eq!(
            default(&TOP, "schedule"),
            quoted(crate::config::DEFAULT_SCHEDULE)
        );
        assert_eq!(
            default(&METRICS, "listen"),
            quoted(&crate::config::DEFAULT_LISTEN.to_string())
        );
        assert_eq!(
            default(&STATE, "path"),
            quoted(crate::config::DEFAULT_STATE_PATH)
        );
        let min_age = default(&SAFETY, "min_age");
        assert_eq!(
            humantime::parse_duration(min_age.trim_matches('"')).ok(),
            Some(crate::config::DEFAULT_MIN_AGE)
        );
    }

    #[test]
    fn every_section_is_a_key_of_the_top_level_and_every_key_has_its_text() {
        for section in SECTIONS.iter().skip(1) {
            let key = TOP.key(section.name).expect("a top-level key");
            assert!(
                matches!(key.kind, Kind::Table(s) | Kind::Tables(s) if std::ptr::eq(s, *section)),
                "{}",
                section.name
            );
        }
        for section in SECTIONS {
            for key in section.keys {
                let is_section = matches!(key.kind, Kind::Table(_) | Kind::Tables(_));
                assert_eq!(key.expected.is_empty(), is_section, "{}", key.name);
                assert_eq!(matches!(key.doc, Doc::Section), is_section, "{}", key.name);
            }
        }
    }
}
