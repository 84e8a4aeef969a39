//! Stage 2: raw values → the validated types of [`crate::policy`], one
//! function per section. Each check reports what is wrong and what would be
//! valid; a check that depends on a key stage 1 refused stays quiet, so one
//! mistake is never reported twice.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;

use super::diagnostics::{closest, Checker};
use super::raw::{Raw, RawEntry, RawMetrics, RawPolicy, RawSafety, RawState};
use super::schema::{NO_POLICIES, POLICY};
use super::values::{compile_glob, parse_duration, parse_label, parse_threshold};
use super::{DEFAULT_LISTEN, DEFAULT_MIN_AGE, DEFAULT_SCHEDULE, DEFAULT_STATE_PATH};
use crate::policy::{
    Conditions, DiskPressure, Glob, LabelMatch, MetricsSettings, Policy, Rule, RuleRef, Safety,
    Selectors, StateSettings, Threshold,
};
use crate::schedule::Schedule;

type Entry = RawEntry<RawPolicy>;

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
        let safety = self.safety(&file.safety);
        let rules = self.rules(raw);
        // `[[build_cache]]` tables come with the config part of issue 8;
        // until then the order is the `[[policy]]` tables'.
        let order = (0..rules.len()).map(RuleRef::Image).collect();
        Some(Policy {
            source: self.file.to_string(),
            schedule: schedule?,
            timezone,
            engine,
            dry_run: file.dry_run.as_ref().is_some_and(|d| *d.get_ref()),
            run_on_start: file.run_on_start.as_ref().is_none_or(|r| *r.get_ref()),
            metrics,
            state,
            safety,
            rules,
            cache_rules: Vec::new(),
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

    fn safety(&mut self, raw: &RawSafety) -> Safety {
        let min_age = self
            .duration(raw.min_age.as_ref(), "safety.min_age", true)
            .unwrap_or(DEFAULT_MIN_AGE);
        let protect = self.globs(raw.protect.as_deref().unwrap_or_default(), "safety.protect");
        let protect_labels = self.labels(
            raw.protect_labels.as_deref().unwrap_or_default(),
            "safety.protect_labels",
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
        Safety {
            min_age,
            protect,
            protect_labels,
            max_removals_per_run,
        }
    }

    fn rules(&mut self, raw: &Raw) -> Vec<Rule> {
        if !raw.has(&POLICY) {
            self.error(&(0..0), "policy", NO_POLICIES);
        }
        // Name → line of the policy that used it first.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut rules = Vec::new();
        for entry in &raw.policies {
            let name = self.rule_name(entry, &mut seen);
            let selectors = self.selectors(entry);
            let conditions = self.conditions(entry);
            if let (Some(name), Some(conditions)) = (name, conditions) {
                rules.push(Rule {
                    name,
                    selectors,
                    conditions,
                });
            }
        }
        rules
    }

    fn rule_name<'r>(
        &mut self,
        entry: &'r Entry,
        seen: &mut HashMap<&'r str, usize>,
    ) -> Option<String> {
        let key = format!("policy[{}].name", entry.index);
        let Some(name) = &entry.raw.name else {
            if !entry.refused_as("name") {
                self.error(
                    &entry.span,
                    format!("policy[{}]", entry.index),
                    "missing `name`: every [[policy]] needs a unique name, like \
                     name = \"stale-ci\"; it labels each removal and metric",
                );
            }
            return None;
        };
        if let Some(message) = Rule::name_problem(name.get_ref()) {
            self.error(&name.span(), key, message);
            return None;
        }
        let line = self.line_of(entry.span.start);
        if let Some(first) = seen.get(name.get_ref().as_str()) {
            let message = format!(
                "duplicate policy name {:?}: the [[policy]] at line {first} already uses it; \
                 names must be unique",
                name.get_ref()
            );
            self.error(&name.span(), key, message);
            return None;
        }
        seen.insert(name.get_ref(), line);
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
        let disk = self.disk(entry);
        let condition_keys = [
            "unused_for",
            "older_than",
            "keep_most_recent",
            "disk_high",
            "disk_low",
        ];
        let any_written = raw.unused_for.is_some()
            || raw.older_than.is_some()
            || raw.keep_most_recent.is_some()
            || raw.disk_high.is_some()
            || raw.disk_low.is_some()
            || condition_keys.iter().any(|k| entry.refused_as(k));
        if !any_written {
            self.error(
                &entry.span,
                path.clone(),
                format!(
                    "{path} has no condition: set at least one of unused_for, older_than, \
                     keep_most_recent, disk_high/disk_low"
                ),
            );
        }
        (self.count() == before).then_some(Conditions {
            unused_for,
            older_than,
            keep_most_recent,
            disk,
        })
    }

    fn disk(&mut self, entry: &Entry) -> Option<DiskPressure> {
        let path = &entry.path;
        let raw = &entry.raw;
        let high_key = format!("{path}.disk_high");
        let low_key = format!("{path}.disk_low");
        let high = raw
            .disk_high
            .as_ref()
            .map(|v| (v.span(), self.threshold(v, &high_key)));
        let low = raw
            .disk_low
            .as_ref()
            .map(|v| (v.span(), self.threshold(v, &low_key)));
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
            (Some((span, _)), None) if !entry.refused_as("disk_low") => {
                self.error(
                    &span,
                    high_key,
                    "disk_high is set without disk_low: set both, like disk_high = \"85%\" \
                     and disk_low = \"70%\"",
                );
                None
            }
            (None, Some((span, _))) if !entry.refused_as("disk_high") => {
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

    fn threshold(&mut self, raw: &Spanned<String>, key: &str) -> Option<Threshold> {
        match parse_threshold(raw.get_ref()) {
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
