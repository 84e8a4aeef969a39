//! Validated policy: the only configuration type the planner and daemon see.
//!
//! `config` (`src/config/`) turns a policy file into these types; everything here has
//! already been checked (durations parsed, globs compiled, watermarks ordered),
//! so consumers never re-validate.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use globset::GlobMatcher;

/// A whole validated policy file. Compared by value: a reload describes
/// what changed from these comparisons.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Where the policy came from (a path, or `<built-in>`), for log lines.
    pub source: String,
    /// When daemon passes run. Default `@hourly`.
    pub schedule: crate::schedule::Schedule,
    /// IANA time zone the schedule is read in. Default UTC.
    pub timezone: chrono_tz::Tz,
    /// Engine address from the file; `--engine` and `DOCKER_HOST` take precedence
    /// in that order over nothing, and this over the local default.
    pub engine: Option<String>,
    /// When true, passes plan and report but remove nothing. Default false.
    pub dry_run: bool,
    /// Run a pass right after the daemon starts, before the first scheduled
    /// one. Default true.
    pub run_on_start: bool,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsSettings,
    /// `[state]`: where first-seen and last-used times are kept.
    pub state: StateSettings,
    /// `[pressure]`: how the daemon watches the disk between passes.
    pub pressure: PressureSettings,
    /// `[safety]`: rules that win over every policy.
    pub safety: Safety,
    /// The `[[policy]]` tables, in file order (earlier ones name a removal first).
    pub rules: Vec<Rule>,
    /// The `[[build_cache]]` tables, in file order.
    pub cache_rules: Vec<CacheRule>,
    /// The `[[containers]]` tables, in file order.
    pub container_rules: Vec<ContainerRule>,
    /// Every `[[policy]]`, `[[build_cache]]` and `[[containers]]` table in
    /// file order, so disk-pressure policies run in the order they are
    /// written (container policies have no watermarks: their phase runs
    /// first, before any image policy).
    pub order: Vec<RuleRef>,
}

/// One table of the policy file, by kind and index into [`Policy::rules`],
/// [`Policy::cache_rules`] or [`Policy::container_rules`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleRef {
    /// `Policy::rules[i]`, a `[[policy]]` table (images).
    Image(usize),
    /// `Policy::cache_rules[i]`, a `[[build_cache]]` table.
    Cache(usize),
    /// `Policy::container_rules[i]`, a `[[containers]]` table.
    Container(usize),
}

impl Policy {
    /// Every policy name of the three kinds, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.order.iter().map(|r| match *r {
            RuleRef::Image(i) => self.rules[i].name.as_str(),
            RuleRef::Cache(i) => self.cache_rules[i].name.as_str(),
            RuleRef::Container(i) => self.container_rules[i].name.as_str(),
        })
    }
}

/// `[metrics]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Serve `/metrics` and `/healthz`. Default true.
    pub enabled: bool,
    /// Listen address. Default `127.0.0.1:9317`.
    pub listen: SocketAddr,
}

/// `[state]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    /// State file path. Default `/var/lib/imagegc/state.json`.
    pub path: PathBuf,
}

/// `[pressure]` settings: the daemon's disk sampler, which runs while any
/// policy sets percentage disk watermarks or inode watermarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PressureSettings {
    /// How often the filesystem holding the engine's data is sampled.
    /// Never zero. Default 5 s.
    pub interval: Duration,
    /// After a pressure pass that could not bring usage down to `disk_low`
    /// or `inodes_low`, no pressure pass before this has passed, so a
    /// disk full of what no policy may remove does not spin the collector.
    /// Default 1 min.
    pub cooldown: Duration,
}

impl Policy {
    /// The percentage watermarks of every table that sets them, as
    /// `(policy, high, low)` shares of the filesystem: what the disk sampler
    /// compares a sample with. Size watermarks count image or cache bytes,
    /// which a statvfs cannot tell; passes check those.
    pub fn disk_ratio_marks(&self) -> Vec<(String, f64, f64)> {
        let image = self.rules.iter().map(|r| (&r.name, r.conditions.disk));
        let cache = self
            .cache_rules
            .iter()
            .map(|r| (&r.name, r.conditions.disk));
        image
            .chain(cache)
            .filter_map(|(name, disk)| match disk? {
                DiskPressure {
                    high: Threshold::Ratio(high),
                    low: Threshold::Ratio(low),
                } => Some((name.clone(), high, low)),
                _ => None,
            })
            .collect()
    }

    /// The inode watermarks of every table that sets them, as `(policy,
    /// high, low)` shares of the filesystem's inodes: what the sampler
    /// compares a sample's `df -i` share with.
    pub fn inode_marks(&self) -> Vec<(String, f64, f64)> {
        let image = self.rules.iter().map(|r| (&r.name, r.conditions.inodes));
        let cache = self
            .cache_rules
            .iter()
            .map(|r| (&r.name, r.conditions.inodes));
        image
            .chain(cache)
            .filter_map(|(name, inodes)| inodes.map(|i| (name.clone(), i.high, i.low)))
            .collect()
    }
}

/// `[safety]`: protections no policy can override.
#[derive(Debug, Clone, PartialEq)]
pub struct Safety {
    /// Grace period counted from max(created, last tagged, first seen). Default 1h.
    pub min_age: Duration,
    /// Reference globs never removed (matched against `repo:tag` and `repo`).
    pub protect: Vec<Glob>,
    /// Labels (`key` or `key=value`) whose images and containers are never
    /// removed.
    pub protect_labels: Vec<LabelMatch>,
    /// Container name globs never removed (matched against each name,
    /// without the leading `/`).
    pub protect_containers: Vec<Glob>,
    /// Upper bound on removals in one pass; unlimited when `None`.
    pub max_removals_per_run: Option<NonZeroUsize>,
    /// Image removals in flight at once ([`crate::run::execute`] keeps a
    /// parent after its children and one image's references in turn).
    /// Default 4 ([`DEFAULT_MAX_PARALLEL_REMOVALS`]); 1 removes one by one.
    pub max_parallel_removals: NonZeroUsize,
}

/// `[safety] max_parallel_removals` when the file does not set it.
pub const DEFAULT_MAX_PARALLEL_REMOVALS: NonZeroUsize = NonZeroUsize::new(4).unwrap();

/// A compiled glob with the text the user wrote, so reasons can quote it.
#[derive(Debug, Clone)]
pub struct Glob {
    /// The pattern as written.
    pub pattern: String,
    /// Compiled with `literal_separator`, so `*` stays within one `/` segment.
    pub matcher: GlobMatcher,
}

/// Two globs are equal when their patterns are: the matcher is compiled
/// from the pattern with fixed options.
impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for Glob {}

impl Glob {
    /// True when `text` matches.
    pub fn is_match(&self, text: &str) -> bool {
        self.matcher.is_match(text)
    }
}

/// `key` (label present) or `key=value` (label has that value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMatch {
    /// Label key.
    pub key: String,
    /// Required value; any value when `None`.
    pub value: Option<String>,
}

impl LabelMatch {
    /// True when the labels satisfy this match.
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        match (labels.get(&self.key), &self.value) {
            (Some(_), None) => true,
            (Some(have), Some(want)) => have == want,
            (None, _) => false,
        }
    }
}

impl std::fmt::Display for LabelMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

/// One `[[policy]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique name; every removal carries it.
    pub name: String,
    /// Which references and untagged images the rule looks at.
    pub selectors: Selectors,
    /// Which of those it removes. At least one is set.
    pub conditions: Conditions,
}

impl Rule {
    /// Why `name` cannot name a policy, if it cannot. A name labels every
    /// removal log line and metric, so it must be visible text: not empty,
    /// and without control characters (an ANSI escape in a name would
    /// recolour or rewrite the operator's terminal each time it is logged).
    pub fn name_problem(name: &str) -> Option<String> {
        if name.trim().is_empty() {
            return Some(
                "the policy name must not be empty: write a short unique name, like \"stale-ci\""
                    .to_string(),
            );
        }
        let control = name.chars().find(|c| c.is_control())?;
        Some(format!(
            "the policy name {name:?} contains the control character {control:?}: names are \
             shown in logs and metric labels; use visible text, like \"stale-ci\""
        ))
    }
}

/// Selectors: all given must match. None given selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    /// `Some(true)`: untagged images only; `Some(false)`: tagged references only.
    pub dangling: Option<bool>,
    /// Globs on the repository part of a reference; any may match. Untagged
    /// images never match a rule that sets this.
    pub repositories: Vec<Glob>,
    /// Image labels; all must match.
    pub labels: Vec<LabelMatch>,
}

/// Conditions: all given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions {
    /// Last used longer ago than this.
    pub unused_for: Option<Duration>,
    /// Created longer ago than this.
    pub older_than: Option<Duration>,
    /// Per repository, keep this many newest selected references.
    pub keep_most_recent: Option<usize>,
    /// Act only under disk pressure, least recently used first.
    pub disk: Option<DiskPressure>,
    /// Act only under inode pressure, least recently used first; with
    /// `disk` too, either high mark starts it and it stops once every low
    /// mark is reached.
    pub inodes: Option<InodePressure>,
}

impl Conditions {
    /// Whether the table sets a pair of watermarks (disk or inodes): it
    /// runs in the disk phase, least recently used first.
    pub fn is_pressure(&self) -> bool {
        self.disk.is_some() || self.inodes.is_some()
    }
}

/// `inodes_high` / `inodes_low` watermarks: shares 0.0..=1.0 of the inodes of
/// the filesystem holding the engine's root dir, as `df -i` counts `IUse%`.
/// Percentages only: no engine says how many inodes an image holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InodePressure {
    /// Start removing at or above this share of inodes in use.
    pub high: f64,
    /// Stop once the estimated share is at or below this (below `high`).
    pub low: f64,
}

/// `disk_high` / `disk_low` watermarks, both of the same kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskPressure {
    /// Start removing at or above this.
    pub high: Threshold,
    /// Stop once the projected usage is at or below this.
    pub low: Threshold,
}

/// A watermark: a share of the filesystem holding the engine's root dir, or an
/// absolute amount of image data (unique layer bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// Fraction 0.0..=1.0 of the filesystem in use.
    Ratio(f64),
    /// Bytes of image layer data on the engine.
    Bytes(u64),
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ratio(r) => write!(f, "{}%", (r * 1000.0).round() / 10.0),
            Self::Bytes(b) => write!(f, "{}", bytesize::ByteSize::b(*b).display().iec()),
        }
    }
}

/// One `[[build_cache]]` table: which `BuildKit` build-cache records to remove.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheRule {
    /// Unique name across `[[policy]]`, `[[build_cache]]` and
    /// `[[containers]]`; every removal carries it.
    pub name: String,
    /// Which records the rule looks at.
    pub selectors: CacheSelectors,
    /// Which of those it removes. At least one is set.
    pub conditions: CacheConditions,
}

/// The build-cache record types the engine reports (`Type` in
/// `/system/df`'s `BuildCache`), the values `[[build_cache]] types` accepts.
pub const CACHE_RECORD_TYPES: [&str; 6] = [
    "regular",
    "source.local",
    "exec.cachemount",
    "internal",
    "frontend",
    "source.git.checkout",
];

/// Build-cache selectors: all given must match. None given selects every record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheSelectors {
    /// Record types (`regular`, `source.local`, `exec.cachemount`, …), as the
    /// engine spells them; any may match. Empty: every type.
    pub types: Vec<String>,
}

/// Build-cache conditions: all given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CacheConditions {
    /// `LastUsedAt` (`CreatedAt` when never used) longer ago than this.
    pub unused_for: Option<Duration>,
    /// `CreatedAt` longer ago than this.
    pub older_than: Option<Duration>,
    /// Keep the most recently used selected records up to this many bytes
    /// in all; the rest are candidates. Computed by the planner.
    pub keep_storage: Option<u64>,
    /// Act only under disk pressure, least recently used first. A
    /// [`Threshold::Bytes`] watermark here counts build-cache bytes: every
    /// record's own bytes plus the layers records hold that no image uses
    /// (held layers an image uses count as image bytes).
    pub disk: Option<DiskPressure>,
    /// Act only under inode pressure, as for [`Conditions::inodes`].
    pub inodes: Option<InodePressure>,
}

impl CacheConditions {
    /// Whether the table sets a pair of watermarks (disk or inodes).
    pub fn is_pressure(&self) -> bool {
        self.disk.is_some() || self.inodes.is_some()
    }
}

/// One `[[containers]]` table: which stopped containers to remove.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRule {
    /// Unique name across every table kind; every removal carries it.
    pub name: String,
    /// Which containers the rule looks at.
    pub selectors: ContainerSelectors,
    /// Which of those it removes. At least one is set.
    pub conditions: ContainerConditions,
}

/// A stopped container state a `[[containers]]` table may select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoppedState {
    /// `exited`: it ran and stopped.
    Exited,
    /// `dead`: the engine failed to remove or stop it.
    Dead,
    /// `created`: never started.
    Created,
}

impl StoppedState {
    /// Every state, in the order the policy reference lists them.
    pub const ALL: [Self; 3] = [Self::Exited, Self::Dead, Self::Created];

    /// The engine's word for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exited => "exited",
            Self::Dead => "dead",
            Self::Created => "created",
        }
    }

    /// The state the engine's word names, if it is a stopped one.
    pub fn from_engine(state: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == state)
    }
}

/// Container selectors: all given must match. None given selects every
/// stopped container (`exited`, `dead`; `created` only when `states` names it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSelectors {
    /// States; any may match. Empty: `exited` and `dead`.
    pub states: Vec<StoppedState>,
    /// Globs on the container's names; any name may match any glob.
    pub names: Vec<Glob>,
    /// Globs on the image reference the container was created from.
    pub images: Vec<Glob>,
    /// Container labels; all must match. Naming `com.docker.compose.project`
    /// here is what lets a rule remove Compose-managed containers.
    pub labels: Vec<LabelMatch>,
}

/// Container conditions: all given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerConditions {
    /// Finished (`State.FinishedAt`; `Created` for never-started
    /// containers) longer ago than this.
    pub exited_for: Option<Duration>,
    /// Created longer ago than this.
    pub older_than: Option<Duration>,
}
