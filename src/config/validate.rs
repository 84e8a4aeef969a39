//! Stage 2: raw values → the validated types of [`crate::policy`], one
//! function per section. Each check reports what is wrong and what would be
//! valid; a check that depends on a key stage 1 refused stays quiet, so one
//! mistake is never reported twice.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;

use super::diagnostics::{closest, Checker};
use super::raw::{
    Raw, RawCache, RawContainer, RawEntry, RawMetrics, RawPolicy, RawPressure, RawSafety, RawState,
};
use super::schema::{BUILD_CACHE, CONTAINERS, NO_POLICIES, POLICY};
use super::values::{
    compile_glob, parse_duration, parse_label, parse_percentage, parse_size, parse_threshold,
};
use super::{
    DEFAULT_LISTEN, DEFAULT_MIN_AGE, DEFAULT_PRESSURE_COOLDOWN, DEFAULT_PRESSURE_INTERVAL,
    DEFAULT_SCHEDULE, DEFAULT_STATE_PATH,
};
use crate::policy::{
    CacheConditions, CacheRule, CacheSelectors, Conditions, ContainerConditions, ContainerRule,
    ContainerSelectors, DiskPressure, Glob, InodePressure, LabelMatch, MetricsSettings, Policy,
    PressureSettings, Rule, RuleRef, Safety, Selectors, StateSettings, StoppedState, Threshold,
    CACHE_RECORD_TYPES, DEFAULT_MAX_PARALLEL_REMOVALS,
};
use crate::schedule::Schedule;

type Entry = RawEntry<RawPolicy>;
type CacheEntry = RawEntry<RawCache>;
type ContainerEntry = RawEntry<RawContainer>;

/// Which kind of table a name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    /// `[[policy]]` (images).
    Policy,
    /// `[[build_cache]]`.
    Cache,
    /// `[[containers]]`.
    Container,
}

impl Table {
    /// Its key in the file, its header and an example name.
    fn words(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Policy => ("policy", "[[policy]]", "stale-ci"),
            Self::Cache => ("build_cache", "[[build_cache]]", "build-cache"),
            Self::Container => ("containers", "[[containers]]", "finished-ci-jobs"),
        }
    }
}

/// What the name check needs of a table of either kind.
struct NameOf<'r> {
    index: usize,
    span: &'r std::ops::Range<usize>,
    name: Option<&'r Spanned<String>>,
    /// `name` was written but refused by stage 1 (reported already).
    refused: bool,
}

impl<'r> NameOf<'r> {
    fn of<T>(entry: &'r RawEntry<T>, name: impl Fn(&'r T) -> Option<&'r Spanned<String>>) -> Self {
        Self {
            index: entry.index,
            span: &entry.span,
            name: name(&entry.raw),
            refused: entry.refused_as("name"),
        }
    }
}

impl Checker<'_> {
    pub(super) fn validate(&mut self, raw: &Raw) -> Option<Policy> {
        let file = &raw.file;
        let schedule = self.schedule(file.schedule.as_ref());
        let timezone = file
            .timezone
            .as_ref()
            .and_then(|tz| self.timezone(tz))
            .unwrap_or(chrono_tz::Tz::UTC);
        let engine = file.engine.as_ref().and_then(|engine| {
            let text = engine.get_ref().trim();
            if text.is_empty() {
                self.error(
                    &engine.span(),
                    "engine",
                    "must not be empty: write an address like \"unix:///var/run/docker.sock\", \
                     or remove the key to use DOCKER_HOST or the local socket",
                );
                None
            } else {
                Some(text.to_string())
            }
        });
        let metrics = self.metrics(&file.metrics);
        let state = self.state(&file.state);
        let pressure = self.pressure(&file.pressure);
        let safety = self.safety(&file.safety);
        let (rules, cache_rules, container_rules, order) = self.tables(raw);
        Some(Policy {
            source: self.file.to_string(),
            schedule: schedule?,
            timezone,
            engine,
            dry_run: file.dry_run.as_ref().is_some_and(|d| *d.get_ref()),
            run_on_start: file.run_on_start.as_ref().is_none_or(|r| *r.get_ref()),
            metrics,
            state,
            pressure,
            safety,
            rules,
            cache_rules,
            container_rules,
            order,
        })
    }

    fn schedule(&mut self, raw: Option<&Spanned<String>>) -> Option<Schedule> {
        let Some(raw) = raw else {
            return match Schedule::parse(DEFAULT_SCHEDULE) {
                Ok(schedule) => Some(schedule),
                Err(error) => {
                    let message =
                        format!("the default schedule {DEFAULT_SCHEDULE:?} was refused: {error}");
                    self.error(&(0..0), "schedule", message);
                    None
                }
            };
        };
        match Schedule::parse(raw.get_ref()) {
            Ok(schedule) => Some(schedule),
            Err(error) => {
                // The scheduler's message says what is valid.
                let message = format!("invalid schedule {:?}: {error}", raw.get_ref());
                self.error(&raw.span(), "schedule", message);
                None
            }
        }
    }

    fn timezone(&mut self, raw: &Spanned<String>) -> Option<chrono_tz::Tz> {
        let name = raw.get_ref();
        if let Ok(tz) = chrono_tz::Tz::from_str(name) {
            return Some(tz);
        }
        let mut message = format!(
            "unknown time zone {name:?}: expected an IANA name like \"UTC\" or \"Europe/Berlin\""
        );
        let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
        if let Some(close) = closest(name, names) {
            let _ = write!(message, "; did you mean {close:?}?");
        }
        self.error(&raw.span(), "timezone", message);
        None
    }

    fn metrics(&mut self, raw: &RawMetrics) -> MetricsSettings {
        let listen = raw.listen.as_ref().and_then(|listen| {
            let addr = SocketAddr::from_str(listen.get_ref().trim()).ok();
            if addr.is_none() {
                let message = format!(
                    "invalid listen address {:?}: expected an IP address and a port, like \
                     \"127.0.0.1:9317\", \"0.0.0.0:9317\" or \"[::1]:9317\" (host names are \
                     not resolved)",
                    listen.get_ref()
                );
                self.error(&listen.span(), "metrics.listen", message);
            }
            addr
        });
        MetricsSettings {
            enabled: raw.enabled.as_ref().is_none_or(|e| *e.get_ref()),
            listen: listen.unwrap_or(DEFAULT_LISTEN),
        }
    }

    fn state(&mut self, raw: &RawState) -> StateSettings {
        let path = match &raw.path {
            Some(path) if path.get_ref().trim().is_empty() => {
                self.error(
                    &path.span(),
                    "state.path",
                    format!(
                        "must not be empty: write a file path, or remove the key to use \
                         {DEFAULT_STATE_PATH:?}"
                    ),
                );
                PathBuf::from(DEFAULT_STATE_PATH)
            }
            Some(path) => PathBuf::from(path.get_ref()),
            None => PathBuf::from(DEFAULT_STATE_PATH),
        };
        StateSettings { path }
    }

    fn pressure(&mut self, raw: &RawPressure) -> PressureSettings {
        PressureSettings {
            interval: self
                .duration(raw.interval.as_ref(), "pressure.interval", false)
                .unwrap_or(DEFAULT_PRESSURE_INTERVAL),
            cooldown: self
                .duration(raw.cooldown.as_ref(), "pressure.cooldown", true)
                .unwrap_or(DEFAULT_PRESSURE_COOLDOWN),
        }
    }

    fn safety(&mut self, raw: &RawSafety) -> Safety {
        let min_age = self
            .duration(raw.min_age.as_ref(), "safety.min_age", true)
            .unwrap_or(DEFAULT_MIN_AGE);
        let protect = self.globs(raw.protect.as_deref().unwrap_or_default(), "safety.protect");
        let protect_labels = self.labels(
            raw.protect_labels.as_deref().unwrap_or_default(),
            "safety.protect_labels",
        );
        let protect_containers = self.name_globs(
            raw.protect_containers.as_deref().unwrap_or_default(),
            "safety.protect_containers",
        );
        let max_removals_per_run = raw.max_removals_per_run.as_ref().and_then(|max| {
            let n = usize::try_from(*max.get_ref())
                .ok()
                .and_then(NonZeroUsize::new);
            if n.is_none() {
                self.error(
                    &max.span(),
                    "safety.max_removals_per_run",
                    format!(
                        "must be a positive integer, like 500, not {}; remove the key for no limit",
                        max.get_ref()
                    ),
                );
            }
            n
        });
        let max_parallel_removals = raw
            .max_parallel_removals
            .as_ref()
            .and_then(|max| {
                let n = usize::try_from(*max.get_ref())
                    .ok()
                    .and_then(NonZeroUsize::new);
                if n.is_none() {
                    self.error(
                        &max.span(),
                        "safety.max_parallel_removals",
                        format!(
                            "must be a positive integer, like 4, not {}; 1 removes one image at a time",
                            max.get_ref()
                        ),
                    );
                }
                n
            })
            .unwrap_or(DEFAULT_MAX_PARALLEL_REMOVALS);
        Safety {
            min_age,
            protect,
            protect_labels,
            protect_containers,
            max_removals_per_run,
            max_parallel_removals,
        }
    }

    /// Every `[[policy]]`, `[[build_cache]]` and `[[containers]]` table,
    /// checked and put in file order: the rules of the three kinds and
    /// [`Policy::order`].
    fn tables(
        &mut self,
        raw: &Raw,
    ) -> (Vec<Rule>, Vec<CacheRule>, Vec<ContainerRule>, Vec<RuleRef>) {
        let any = |section: &str| raw.written.iter().any(|w| w.section == section && !w.empty);
        if !any(POLICY.name) && !any(BUILD_CACHE.name) && !any(CONTAINERS.name) {
            // At an empty array (`policy = []`) if there is one, else at the top.
            let (span, key) = raw
                .written
                .first()
                .map_or((0..0, POLICY.name), |w| (w.span.clone(), w.section));
            self.error(&span, key, NO_POLICIES);
        }
        let (policy_names, cache_names, container_names) = self.names(raw);
        let mut placed: Vec<(usize, RuleRef)> = Vec::new();
        let mut rules = Vec::new();
        for (entry, name) in raw.policies.iter().zip(policy_names) {
            let selectors = self.selectors(entry);
            let conditions = self.conditions(entry);
            if let (Some(name), Some(conditions)) = (name, conditions) {
                placed.push((entry.span.start, RuleRef::Image(rules.len())));
                rules.push(Rule {
                    name,
                    selectors,
                    conditions,
                });
            }
        }
        let mut cache_rules = Vec::new();
        for (entry, name) in raw.caches.iter().zip(cache_names) {
            let selectors = self.cache_selectors(entry);
            let conditions = self.cache_conditions(entry);
            if let (Some(name), Some(selectors), Some(conditions)) = (name, selectors, conditions) {
                placed.push((entry.span.start, RuleRef::Cache(cache_rules.len())));
                cache_rules.push(CacheRule {
                    name,
                    selectors,
                    conditions,
                });
            }
        }
        let mut container_rules = Vec::new();
        for (entry, name) in raw.containers.iter().zip(container_names) {
            let selectors = self.container_selectors(entry);
            let conditions = self.container_conditions(entry);
            if let (Some(name), Some(selectors), Some(conditions)) = (name, selectors, conditions) {
                placed.push((entry.span.start, RuleRef::Container(container_rules.len())));
                container_rules.push(ContainerRule {
                    name,
                    selectors,
                    conditions,
                });
            }
        }
        placed.sort_by_key(|(start, _)| *start);
        let order = placed.into_iter().map(|(_, rule)| rule).collect();
        (rules, cache_rules, container_rules, order)
    }

    /// The names of the `[[policy]]`, `[[build_cache]]` and `[[containers]]`
    /// tables (`None` where missing or refused, already reported), checked in
    /// file order so that a duplicate is reported where it repeats a name,
    /// naming the line (and the kind of table) that used it first.
    #[allow(clippy::type_complexity)]
    fn names(
        &mut self,
        raw: &Raw,
    ) -> (
        Vec<Option<String>>,
        Vec<Option<String>>,
        Vec<Option<String>>,
    ) {
        let policies = raw
            .policies
            .iter()
            .enumerate()
            .map(|(i, e)| (Table::Policy, i, NameOf::of(e, |r| r.name.as_ref())));
        let caches = raw
            .caches
            .iter()
            .enumerate()
            .map(|(i, e)| (Table::Cache, i, NameOf::of(e, |r| r.name.as_ref())));
        let containers = raw
            .containers
            .iter()
            .enumerate()
            .map(|(i, e)| (Table::Container, i, NameOf::of(e, |r| r.name.as_ref())));
        let mut all: Vec<(Table, usize, NameOf<'_>)> =
            policies.chain(caches).chain(containers).collect();
        all.sort_by_key(|(_, _, n)| n.span.start);
        // Name → kind and line of the table that used it first.
        let mut seen: HashMap<&str, (Table, usize)> = HashMap::new();
        let mut policy_names = vec![None; raw.policies.len()];
        let mut cache_names = vec![None; raw.caches.len()];
        let mut container_names = vec![None; raw.containers.len()];
        for (table, i, of) in all {
            let name = self.table_name(table, &of, &mut seen);
            match table {
                Table::Policy => policy_names[i] = name,
                Table::Cache => cache_names[i] = name,
                Table::Container => container_names[i] = name,
            }
        }
        (policy_names, cache_names, container_names)
    }

    fn table_name<'r>(
        &mut self,
        table: Table,
        of: &NameOf<'r>,
        seen: &mut HashMap<&'r str, (Table, usize)>,
    ) -> Option<String> {
        let (section, header, example) = table.words();
        let key = format!("{section}[{}].name", of.index);
        let Some(name) = of.name else {
            if !of.refused {
                self.error(
                    of.span,
                    format!("{section}[{}]", of.index),
                    format!(
                        "missing `name`: every {header} needs a unique name, like \
                         name = \"{example}\"; it labels each removal and metric"
                    ),
                );
            }
            return None;
        };
        if let Some(message) = Rule::name_problem(name.get_ref()) {
            self.error(&name.span(), key, message);
            return None;
        }
        let line = self.line_of(of.span.start);
        if let Some((first_table, first)) = seen.get(name.get_ref().as_str()) {
            let (_, first_header, _) = first_table.words();
            let across = if *first_table == table {
                ""
            } else {
                " across [[policy]], [[build_cache]] and [[containers]] tables"
            };
            let message = format!(
                "duplicate policy name {:?}: the {first_header} at line {first} already uses it; \
                 names must be unique{across}",
                name.get_ref()
            );
            self.error(&name.span(), key, message);
            return None;
        }
        seen.insert(name.get_ref(), (table, line));
        Some(name.get_ref().clone())
    }

    fn selectors(&mut self, entry: &Entry) -> Selectors {
        let raw = &entry.raw;
        let path = &entry.path;
        let dangling = raw.dangling.as_ref().map(|d| *d.get_ref());
        let mut repositories = Vec::new();
        if let Some(list) = &raw.repositories {
            let key = format!("{path}.repositories");
            if list.get_ref().is_empty() {
                self.error(
                    &list.span(),
                    key,
                    "an empty list would select every repository: list at least one glob, \
                     like [\"ci/*\"], or remove the key",
                );
            } else if dangling == Some(true) {
                self.error(
                    &list.span(),
                    key,
                    "cannot be combined with `dangling = true`: untagged images have no \
                     repository, so the policy would select nothing; split it into two policies",
                );
            } else {
                repositories = self.globs(list.get_ref(), &key);
            }
        }
        let mut labels = Vec::new();
        if let Some(list) = &raw.labels {
            let key = format!("{path}.labels");
            if list.get_ref().is_empty() {
                self.error(
                    &list.span(),
                    key,
                    "an empty list would select every image: list at least one label, \
                     like [\"ci\"] or [\"tier=dev\"], or remove the key",
                );
            } else {
                labels = self.labels(list.get_ref(), &key);
            }
        }
        Selectors {
            dangling,
            repositories,
            labels,
        }
    }

    /// `None` when the policy's conditions are unusable (already reported).
    fn conditions(&mut self, entry: &Entry) -> Option<Conditions> {
        let raw = &entry.raw;
        let path = &entry.path;
        let before = self.count();
        let unused_for = self.duration(
            raw.unused_for.as_ref(),
            &format!("{path}.unused_for"),
            false,
        );
        let older_than = self.duration(
            raw.older_than.as_ref(),
            &format!("{path}.older_than"),
            false,
        );
        let keep_most_recent = raw.keep_most_recent.as_ref().and_then(|keep| {
            let n = usize::try_from(*keep.get_ref()).ok().filter(|n| *n >= 1);
            if n.is_none() {
                self.error(
                    &keep.span(),
                    format!("{path}.keep_most_recent"),
                    format!(
                        "must be at least 1, not {}: it keeps the N newest references of each \
                         repository; to remove by age alone, use older_than or unused_for",
                        keep.get_ref()
                    ),
                );
            }
            n
        });
        let disk = self.disk(
            path,
            raw.disk_high.as_ref(),
            raw.disk_low.as_ref(),
            |key| entry.refused_as(key),
            "image data",
        );
        let inodes = self.inodes(
            path,
            raw.inodes_high.as_ref(),
            raw.inodes_low.as_ref(),
            |key| entry.refused_as(key),
        );
        self.require_a_condition(
            &entry.span,
            path,
            &[
                ("unused_for", raw.unused_for.is_some()),
                ("older_than", raw.older_than.is_some()),
                ("keep_most_recent", raw.keep_most_recent.is_some()),
                ("disk_high", raw.disk_high.is_some()),
                ("disk_low", raw.disk_low.is_some()),
                ("inodes_high", raw.inodes_high.is_some()),
                ("inodes_low", raw.inodes_low.is_some()),
            ],
            |key| entry.refused_as(key),
            "unused_for, older_than, keep_most_recent, disk_high/disk_low, \
             inodes_high/inodes_low",
        );
        (self.count() == before).then_some(Conditions {
            unused_for,
            older_than,
            keep_most_recent,
            disk,
            inodes,
        })
    }

    /// `None` when `types` is unusable (already reported): a rule with a
    /// type dropped would select more than its author wrote.
    /// Reports a table that sets none of its conditions. `set` pairs each
    /// condition key with whether the table gives it a value; a key written
    /// but refused (or a typo of one) counts as set, as its own error already
    /// tells the author. `choices` lists what to set, for the message.
    fn require_a_condition(
        &mut self,
        span: &Range<usize>,
        path: &str,
        set: &[(&str, bool)],
        refused: impl Fn(&str) -> bool,
        choices: &str,
    ) {
        if set.iter().any(|&(key, given)| given || refused(key)) {
            return;
        }
        self.error(
            span,
            path.to_owned(),
            format!("{path} has no condition: set at least one of {choices}"),
        );
    }

    fn cache_selectors(&mut self, entry: &CacheEntry) -> Option<CacheSelectors> {
        let Some(list) = &entry.raw.types else {
            return Some(CacheSelectors::default());
        };
        let key = format!("{}.types", entry.path);
        if list.get_ref().is_empty() {
            self.error(
                &list.span(),
                key,
                "an empty list would select every record: list at least one record type, like \
                 [\"regular\"], or remove the key",
            );
            return None;
        }
        let before = self.count();
        let mut types: Vec<String> = Vec::new();
        for (i, item) in list.get_ref().iter().enumerate() {
            let text = item.get_ref();
            if !CACHE_RECORD_TYPES.contains(&text.as_str()) {
                let known = CACHE_RECORD_TYPES.join(", ");
                let mut message =
                    format!("unknown build-cache record type {text:?}: expected one of {known}");
                if let Some(close) = closest(text, CACHE_RECORD_TYPES.iter().copied()) {
                    let _ = write!(message, "; did you mean {close:?}?");
                }
                self.error(&item.span(), format!("{key}[{i}]"), message);
            } else if !types.contains(text) {
                types.push(text.clone());
            }
        }
        (self.count() == before).then_some(CacheSelectors { types })
    }

    /// `None` when the rule's conditions are unusable (already reported).
    fn cache_conditions(&mut self, entry: &CacheEntry) -> Option<CacheConditions> {
        let raw = &entry.raw;
        let path = &entry.path;
        let before = self.count();
        let unused_for = self.duration(
            raw.unused_for.as_ref(),
            &format!("{path}.unused_for"),
            false,
        );
        let older_than = self.duration(
            raw.older_than.as_ref(),
            &format!("{path}.older_than"),
            false,
        );
        let keep_storage =
            raw.keep_storage
                .as_ref()
                .and_then(|size| match parse_size(size.get_ref()) {
                    Ok(bytes) => Some(bytes),
                    Err(message) => {
                        self.error(&size.span(), format!("{path}.keep_storage"), message);
                        None
                    }
                });
        let disk = self.disk(
            path,
            raw.disk_high.as_ref(),
            raw.disk_low.as_ref(),
            |key| entry.refused_as(key),
            "build-cache data",
        );
        let inodes = self.inodes(
            path,
            raw.inodes_high.as_ref(),
            raw.inodes_low.as_ref(),
            |key| entry.refused_as(key),
        );
        self.require_a_condition(
            &entry.span,
            path,
            &[
                ("unused_for", raw.unused_for.is_some()),
                ("older_than", raw.older_than.is_some()),
                ("keep_storage", raw.keep_storage.is_some()),
                ("disk_high", raw.disk_high.is_some()),
                ("disk_low", raw.disk_low.is_some()),
                ("inodes_high", raw.inodes_high.is_some()),
                ("inodes_low", raw.inodes_low.is_some()),
            ],
            |key| entry.refused_as(key),
            "unused_for, older_than, keep_storage, disk_high/disk_low, inodes_high/inodes_low \
             (a build-cache policy without one would remove every record it selects)",
        );
        (self.count() == before).then_some(CacheConditions {
            unused_for,
            older_than,
            keep_storage,
            disk,
            inodes,
        })
    }

    /// `None` when a selector is unusable (already reported): a rule with a
    /// selector dropped would select more containers than its author wrote.
    fn container_selectors(&mut self, entry: &ContainerEntry) -> Option<ContainerSelectors> {
        let raw = &entry.raw;
        let path = &entry.path;
        let before = self.count();
        let empty = |what: &str, example: &str| {
            format!(
                "an empty list would select every stopped container: list at least one \
                 {what}, like {example}, or remove the key"
            )
        };
        let mut states = Vec::new();
        if let Some(list) = &raw.states {
            let key = format!("{path}.states");
            if list.get_ref().is_empty() {
                self.error(&list.span(), key, empty("state", "[\"exited\"]"));
            } else {
                for (i, item) in list.get_ref().iter().enumerate() {
                    match StoppedState::from_engine(item.get_ref()) {
                        Some(state) if !states.contains(&state) => states.push(state),
                        Some(_) => {}
                        None => {
                            let message = unknown_state_message(item.get_ref());
                            self.error(&item.span(), format!("{key}[{i}]"), message);
                        }
                    }
                }
            }
        }
        let mut names = Vec::new();
        if let Some(list) = &raw.names {
            let key = format!("{path}.names");
            if list.get_ref().is_empty() {
                self.error(&list.span(), key, empty("name glob", "[\"ci-*\"]"));
            } else {
                names = self.name_globs(list.get_ref(), &key);
            }
        }
        let mut images = Vec::new();
        if let Some(list) = &raw.images {
            let key = format!("{path}.images");
            if list.get_ref().is_empty() {
                self.error(&list.span(), key, empty("image glob", "[\"ci/**\"]"));
            } else {
                images = self.globs(list.get_ref(), &key);
            }
        }
        let mut labels = Vec::new();
        if let Some(list) = &raw.labels {
            let key = format!("{path}.labels");
            if list.get_ref().is_empty() {
                self.error(
                    &list.span(),
                    key,
                    empty("label", "[\"ci\"] or [\"tier=dev\"]"),
                );
            } else {
                labels = self.labels(list.get_ref(), &key);
            }
        }
        (self.count() == before).then_some(ContainerSelectors {
            states,
            names,
            images,
            labels,
        })
    }

    /// `None` when the rule's conditions are unusable (already reported).
    fn container_conditions(&mut self, entry: &ContainerEntry) -> Option<ContainerConditions> {
        let raw = &entry.raw;
        let path = &entry.path;
        let before = self.count();
        let exited_for = self.duration(
            raw.exited_for.as_ref(),
            &format!("{path}.exited_for"),
            false,
        );
        let older_than = self.duration(
            raw.older_than.as_ref(),
            &format!("{path}.older_than"),
            false,
        );
        self.require_a_condition(
            &entry.span,
            path,
            &[
                ("exited_for", raw.exited_for.is_some()),
                ("older_than", raw.older_than.is_some()),
            ],
            |key| entry.refused_as(key),
            "exited_for, older_than (a container policy without one would remove every \
             stopped container it selects the moment it stops)",
        );
        (self.count() == before).then_some(ContainerConditions {
            exited_for,
            older_than,
        })
    }

    /// `disk_high`/`disk_low` of the table at `path`, with the same rules
    /// for both kinds of table; `refused_as` tells which keys stage 1
    /// refused, `data` what a size counts (`image data`).
    fn disk(
        &mut self,
        path: &str,
        high: Option<&Spanned<String>>,
        low: Option<&Spanned<String>>,
        refused_as: impl Fn(&str) -> bool,
        data: &str,
    ) -> Option<DiskPressure> {
        let high_key = format!("{path}.disk_high");
        let low_key = format!("{path}.disk_low");
        let high = high.map(|v| (v.span(), self.threshold(v, &high_key, data)));
        let low = low.map(|v| (v.span(), self.threshold(v, &low_key, data)));
        match (high, low) {
            (Some((_, Some(high))), Some((low_span, Some(low)))) => {
                let ordered = match (high, low) {
                    (Threshold::Ratio(h), Threshold::Ratio(l)) => l < h,
                    (Threshold::Bytes(h), Threshold::Bytes(l)) => l < h,
                    (Threshold::Ratio(_), Threshold::Bytes(_))
                    | (Threshold::Bytes(_), Threshold::Ratio(_)) => {
                        let (low_kind, high_kind) = match low {
                            Threshold::Ratio(_) => ("a percentage", "a size"),
                            Threshold::Bytes(_) => ("a size", "a percentage"),
                        };
                        self.error(
                            &low_span,
                            low_key,
                            format!(
                                "disk_low is {low_kind} but disk_high is {high_kind}: use the \
                                 same kind for both, like \"85%\"/\"70%\" or \"200GiB\"/\"150GiB\""
                            ),
                        );
                        return None;
                    }
                };
                if ordered {
                    Some(DiskPressure { high, low })
                } else {
                    self.error(
                        &low_span,
                        low_key,
                        format!(
                            "disk_low ({low}) must be below disk_high ({high}): imagegc starts \
                             removing at disk_high and stops at disk_low"
                        ),
                    );
                    None
                }
            }
            (Some((span, _)), None) if !refused_as("disk_low") => {
                self.error(
                    &span,
                    high_key,
                    "disk_high is set without disk_low: set both, like disk_high = \"85%\" \
                     and disk_low = \"70%\"",
                );
                None
            }
            (None, Some((span, _))) if !refused_as("disk_high") => {
                self.error(
                    &span,
                    low_key,
                    "disk_low is set without disk_high: set both, like disk_high = \"85%\" \
                     and disk_low = \"70%\"",
                );
                None
            }
            _ => None,
        }
    }

    /// `inodes_high`/`inodes_low` of the table at `path`: percentages only,
    /// both or neither, low below high, worded like the disk pair.
    fn inodes(
        &mut self,
        path: &str,
        high: Option<&Spanned<String>>,
        low: Option<&Spanned<String>>,
        refused_as: impl Fn(&str) -> bool,
    ) -> Option<InodePressure> {
        let high_key = format!("{path}.inodes_high");
        let low_key = format!("{path}.inodes_low");
        let high = high.map(|v| (v.span(), self.percentage(v, &high_key)));
        let low = low.map(|v| (v.span(), self.percentage(v, &low_key)));
        match (high, low) {
            (Some((_, Some(high))), Some((low_span, Some(low)))) => {
                if low < high {
                    return Some(InodePressure { high, low });
                }
                self.error(
                    &low_span,
                    low_key,
                    format!(
                        "inodes_low ({}) must be below inodes_high ({}): imagegc starts \
                         removing at inodes_high and stops at inodes_low",
                        Threshold::Ratio(low),
                        Threshold::Ratio(high)
                    ),
                );
                None
            }
            (Some((span, _)), None) if !refused_as("inodes_low") => {
                self.error(
                    &span,
                    high_key,
                    "inodes_high is set without inodes_low: set both, like inodes_high = \
                     \"90%\" and inodes_low = \"80%\"",
                );
                None
            }
            (None, Some((span, _))) if !refused_as("inodes_high") => {
                self.error(
                    &span,
                    low_key,
                    "inodes_low is set without inodes_high: set both, like inodes_high = \
                     \"90%\" and inodes_low = \"80%\"",
                );
                None
            }
            _ => None,
        }
    }

    fn percentage(&mut self, raw: &Spanned<String>, key: &str) -> Option<f64> {
        match parse_percentage(raw.get_ref()) {
            Ok(ratio) => Some(ratio),
            Err(message) => {
                self.error(&raw.span(), key, message);
                None
            }
        }
    }

    fn threshold(&mut self, raw: &Spanned<String>, key: &str, data: &str) -> Option<Threshold> {
        match parse_threshold(raw.get_ref(), data) {
            Ok(threshold) => Some(threshold),
            Err(message) => {
                self.error(&raw.span(), key, message);
                None
            }
        }
    }

    fn duration(
        &mut self,
        raw: Option<&Spanned<String>>,
        key: &str,
        allow_zero: bool,
    ) -> Option<Duration> {
        let raw = raw?;
        match parse_duration(raw.get_ref(), allow_zero) {
            Ok(d) => Some(d),
            Err(message) => {
                self.error(&raw.span(), key, message);
                None
            }
        }
    }

    fn globs(&mut self, raw: &[Spanned<String>], key: &str) -> Vec<Glob> {
        let mut globs = Vec::new();
        for (i, pattern) in raw.iter().enumerate() {
            match compile_glob(pattern.get_ref()) {
                Ok(glob) => globs.push(glob),
                Err(message) => self.error(&pattern.span(), format!("{key}[{i}]"), message),
            }
        }
        globs
    }

    /// Globs on container names, which the engine reports with a leading
    /// `/` that matching leaves out: a glob written with one would never
    /// match, so it is refused.
    fn name_globs(&mut self, raw: &[Spanned<String>], key: &str) -> Vec<Glob> {
        let mut globs = Vec::new();
        for (i, pattern) in raw.iter().enumerate() {
            let text = pattern.get_ref();
            let result = match text.strip_prefix('/') {
                Some(rest) => Err(format!(
                    "container names are matched without their leading `/`, so {text:?} would \
                     never match: write {rest:?}"
                )),
                None => compile_glob(text),
            };
            match result {
                Ok(glob) => globs.push(glob),
                Err(message) => self.error(&pattern.span(), format!("{key}[{i}]"), message),
            }
        }
        globs
    }

    fn labels(&mut self, raw: &[Spanned<String>], key: &str) -> Vec<LabelMatch> {
        let mut labels = Vec::new();
        for (i, label) in raw.iter().enumerate() {
            match parse_label(label.get_ref()) {
                Ok(label) => labels.push(label),
                Err(message) => self.error(&label.span(), format!("{key}[{i}]"), message),
            }
        }
        labels
    }
}

/// What to say of a `states` entry that is not a stopped state, with a hint
/// where it is close to one or is a state no policy may select.
fn unknown_state_message(text: &str) -> String {
    let known: Vec<&str> = StoppedState::ALL.iter().map(|s| s.as_str()).collect();
    let mut message = format!(
        "unknown container state {text:?}: expected one of {}",
        known.join(", ")
    );
    let lower = text.trim().to_ascii_lowercase();
    if let Some(state) = StoppedState::from_engine(&lower) {
        let _ = write!(message, "; did you mean {:?}?", state.as_str());
    } else if ["running", "paused", "restarting", "removing"].contains(&lower.as_str()) {
        let _ = write!(
            message,
            "; a {lower} container is never removed, whatever a policy says"
        );
    } else if let Some(close) = closest(text, known.iter().copied()) {
        let _ = write!(message, "; did you mean {close:?}?");
    }
    message
}
