//! Builders shared by the planner and executor tests: a fixed `now`, policies
//! built from the validated types, and snapshots built with `Snapshot::build`.
//!
//! Everything here is in memory; no test using it talks to an engine.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use imagegc::accounting::Layer;
use imagegc::engine::{
    CacheRecord, CacheRecordKind, Container, ContainerDetails, DiskUsage, ImageSummary,
};
use imagegc::policy::{
    CacheConditions, CacheRule, CacheSelectors, Conditions, ContainerConditions, ContainerRule,
    ContainerSelectors, DiskPressure, Glob, InodePressure, LabelMatch, Policy, Rule, RuleRef,
    Selectors, StoppedState, Threshold,
};
use imagegc::snapshot::{ImageFacts, ImageInput, Snapshot, Tracked};

pub const MINUTE: u64 = 60;
pub const HOUR: u64 = 60 * MINUTE;
pub const DAY: u64 = 24 * HOUR;

/// The instant every test plans at.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .expect("a valid fixed date")
}

/// `secs` seconds before [`now`].
pub fn ago(secs: u64) -> DateTime<Utc> {
    now() - TimeDelta::seconds(i64::try_from(secs).expect("test durations fit i64"))
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A glob compiled the way `config::values` compiles them (`*` stays in a segment).
pub fn glob(pattern: &str) -> Glob {
    let matcher = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .expect("test globs are valid")
        .compile_matcher();
    Glob {
        pattern: pattern.to_string(),
        matcher,
    }
}

/// `key` or `key=value`.
pub fn label(text: &str) -> LabelMatch {
    match text.split_once('=') {
        Some((k, v)) => LabelMatch {
            key: k.to_string(),
            value: Some(v.to_string()),
        },
        None => LabelMatch {
            key: text.to_string(),
            value: None,
        },
    }
}

/// A policy with the given rules and the default safety (`min_age = 1h`,
/// nothing protected, no limit). It starts from the built-in policy so that
/// settings the planner does not read keep their defaults.
pub fn policy(rules: Vec<Rule>) -> Policy {
    let mut p = imagegc::config::builtin();
    p.source = "test.toml".to_string();
    p.dry_run = false;
    p.metrics.enabled = false;
    p.safety.min_age = secs(HOUR);
    p.safety.protect = Vec::new();
    p.safety.protect_labels = Vec::new();
    p.safety.protect_containers = Vec::new();
    p.safety.max_removals_per_run = None;
    p.order = (0..rules.len()).map(RuleRef::Image).collect();
    p.rules = rules;
    p.cache_rules = Vec::new();
    p
}

/// [`policy`] with `[[build_cache]]` rules too; the file order is every
/// `[[policy]]` table, then every `[[build_cache]]` table (set
/// `Policy::order` to say otherwise).
pub fn policy_with_cache(rules: Vec<Rule>, cache_rules: Vec<CacheRule>) -> Policy {
    let mut p = policy(rules);
    p.order.extend((0..cache_rules.len()).map(RuleRef::Cache));
    p.cache_rules = cache_rules;
    p
}

/// Builds a [`CacheRule`]; start with [`cache_rule`].
#[derive(Debug, Clone)]
pub struct CacheRuleBuilder(CacheRule);

/// A `[[build_cache]]` rule with no selector and no condition yet.
pub fn cache_rule(name: &str) -> CacheRuleBuilder {
    CacheRuleBuilder(CacheRule {
        name: name.to_string(),
        selectors: CacheSelectors::default(),
        conditions: CacheConditions::default(),
    })
}

impl CacheRuleBuilder {
    pub fn types(mut self, types: &[&str]) -> Self {
        self.0.selectors.types = types.iter().map(ToString::to_string).collect();
        self
    }
    pub fn unused_for(mut self, d: Duration) -> Self {
        self.0.conditions.unused_for = Some(d);
        self
    }
    pub fn older_than(mut self, d: Duration) -> Self {
        self.0.conditions.older_than = Some(d);
        self
    }
    pub fn keep_storage(mut self, bytes: u64) -> Self {
        self.0.conditions.keep_storage = Some(bytes);
        self
    }
    pub fn disk(mut self, high: Threshold, low: Threshold) -> Self {
        self.0.conditions.disk = Some(DiskPressure { high, low });
        self
    }
    pub fn inodes(mut self, high: f64, low: f64) -> Self {
        self.0.conditions.inodes = Some(InodePressure { high, low });
        self
    }
    pub fn build(self) -> CacheRule {
        self.0
    }
}

/// One build-cache record of a test snapshot; start with [`rec`].
#[derive(Debug, Clone)]
pub struct Rec(pub CacheRecord);

/// A `regular` record `name` of 100 bytes, created `created_ago` seconds
/// before [`now`], never used, not in use, not shared, no parent.
pub fn rec(name: &str, created_ago: u64) -> Rec {
    Rec(CacheRecord {
        id: name.to_string(),
        parents: Vec::new(),
        kind: CacheRecordKind::Regular,
        description: format!("test record {name}"),
        in_use: false,
        shared: false,
        size: 100,
        created: ago(created_ago),
        last_used: None,
        usage_count: 0,
    })
}

impl Rec {
    pub fn parents(mut self, parents: &[&str]) -> Self {
        self.0.parents = parents.iter().map(ToString::to_string).collect();
        self
    }
    pub fn kind(mut self, kind: &str) -> Self {
        self.0.kind = CacheRecordKind::from_type(kind);
        self
    }
    pub fn size(mut self, size: u64) -> Self {
        self.0.size = size;
        self
    }
    pub fn in_use(mut self) -> Self {
        self.0.in_use = true;
        self
    }
    /// Last used by a build `secs` seconds before [`now`].
    pub fn used(mut self, secs: u64) -> Self {
        self.0.last_used = Some(ago(secs));
        self.0.usage_count += 1;
        self
    }
}

/// `snap` with `records` as its build cache (each record's own bytes its
/// size, holding no layer until [`hold`] says so).
pub fn with_records(snap: Snapshot, records: &[Rec]) -> Snapshot {
    snap.with_build_cache(records.iter().map(|r| r.0.clone()).collect())
}

/// Record `record` shares its data with the image layers named `chains`
/// (as [`Img::layer`] names them): it holds them and has no bytes of its own.
pub fn hold(snap: &mut Snapshot, record: &str, chains: &[&str]) {
    let r = snap.cache.by_id[record];
    let held = chains
        .iter()
        .map(|c| {
            let chain = format!("sha256:{c}");
            let l = snap
                .layers
                .iter()
                .position(|l| l.chain_id == chain)
                .unwrap_or_else(|| panic!("no layer {chain} in the snapshot"));
            u32::try_from(l).expect("test layer indices fit u32")
        })
        .collect();
    snap.cache.holds[r] = held;
    snap.cache.own_bytes[r] = 0;
    snap.cache.records[r].shared = true;
}

/// Builds a [`Rule`]; start with [`rule`].
#[derive(Debug, Clone)]
pub struct RuleBuilder(Rule);

/// A rule with no selector and no condition yet (add at least one condition).
pub fn rule(name: &str) -> RuleBuilder {
    RuleBuilder(Rule {
        name: name.to_string(),
        selectors: Selectors::default(),
        conditions: Conditions::default(),
    })
}

impl RuleBuilder {
    pub fn dangling(mut self, dangling: bool) -> Self {
        self.0.selectors.dangling = Some(dangling);
        self
    }
    pub fn repositories(mut self, patterns: &[&str]) -> Self {
        self.0.selectors.repositories = patterns.iter().map(|p| glob(p)).collect();
        self
    }
    pub fn labels(mut self, labels: &[&str]) -> Self {
        self.0.selectors.labels = labels.iter().map(|l| label(l)).collect();
        self
    }
    pub fn unused_for(mut self, d: Duration) -> Self {
        self.0.conditions.unused_for = Some(d);
        self
    }
    pub fn older_than(mut self, d: Duration) -> Self {
        self.0.conditions.older_than = Some(d);
        self
    }
    pub fn keep_most_recent(mut self, n: usize) -> Self {
        self.0.conditions.keep_most_recent = Some(n);
        self
    }
    pub fn disk(mut self, high: Threshold, low: Threshold) -> Self {
        self.0.conditions.disk = Some(DiskPressure { high, low });
        self
    }
    pub fn inodes(mut self, high: f64, low: f64) -> Self {
        self.0.conditions.inodes = Some(InodePressure { high, low });
        self
    }
    pub fn build(self) -> Rule {
        self.0
    }
}

/// One image of a test snapshot; start with [`img`].
#[derive(Debug, Clone)]
pub struct Img {
    pub id: String,
    pub tags: Vec<String>,
    /// `repo@sha256:…` references.
    pub digests: Vec<String>,
    pub parent: Option<String>,
    pub created: DateTime<Utc>,
    pub labels: BTreeMap<String, String>,
    /// `(chain_id, size)`, bottom first; equal chain IDs are one shared layer.
    pub layers: Vec<(String, u64)>,
    pub tracked: Tracked,
    pub last_tag_time: Option<DateTime<Utc>>,
}

/// An image with ID `sha256:<name>`, created `created_ago` seconds before [`now`].
pub fn img(name: &str, created_ago: u64) -> Img {
    Img {
        id: id(name),
        tags: Vec::new(),
        digests: Vec::new(),
        parent: None,
        created: ago(created_ago),
        labels: BTreeMap::new(),
        layers: Vec::new(),
        tracked: Tracked::default(),
        last_tag_time: None,
    }
}

/// The image ID test images named `name` get.
pub fn id(name: &str) -> String {
    format!("sha256:{name}")
}

impl Img {
    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(ToString::to_string).collect();
        self
    }
    pub fn digests(mut self, digests: &[&str]) -> Self {
        self.digests = digests.iter().map(ToString::to_string).collect();
        self
    }
    pub fn parent(mut self, name: &str) -> Self {
        self.parent = Some(id(name));
        self
    }
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }
    /// Adds a layer on top; `chain` names it, so equal names are one shared layer.
    pub fn layer(mut self, chain: &str, size: u64) -> Self {
        self.layers.push((format!("sha256:{chain}"), size));
        self
    }
    pub fn first_seen(mut self, at: DateTime<Utc>) -> Self {
        self.tracked.first_seen = Some(at);
        self
    }
    /// Present when tracking restarted `at` (a lost state): first seen
    /// then, and no use before then is known.
    pub fn restarted(mut self, at: DateTime<Utc>) -> Self {
        self.tracked.first_seen = Some(at);
        self.tracked.basis = imagegc::snapshot::FirstSeenBasis::Restarted;
        self.tracked.restarted = Some(at);
        self
    }
    pub fn last_event(mut self, at: DateTime<Utc>) -> Self {
        self.tracked.last_event = Some(at);
        self
    }
    pub fn input(&self) -> ImageInput {
        ImageInput {
            summary: ImageSummary {
                id: self.id.clone(),
                parent_id: self.parent.clone(),
                tags: self.tags.clone(),
                digests: self.digests.clone(),
                created: self.created,
                labels: self.labels.clone(),
            },
            facts: Arc::new(ImageFacts {
                layers: self
                    .layers
                    .iter()
                    .map(|(chain_id, size)| Layer {
                        chain_id: chain_id.clone(),
                        size: *size,
                    })
                    .collect(),
                sizes_exact: true,
                last_tag_time: self.last_tag_time,
                blobs: Vec::new(),
            }),
            tracked: self.tracked,
        }
    }
}

/// A container `name` of image `image_name` in `state`, created a day ago.
pub fn container(name: &str, image_name: &str, state: &str) -> Container {
    Container {
        image_ref: String::new(),
        labels: std::collections::BTreeMap::new(),
        id: format!("{name}0123456789abcdef"),
        names: vec![name.to_string()],
        image_id: id(image_name),
        state: state.to_string(),
        created: ago(DAY),
    }
}

/// A snapshot of `images` and `containers` with unknown disk usage.
pub fn snapshot(images: &[Img], containers: Vec<Container>) -> Snapshot {
    Snapshot::build(images.iter().map(Img::input).collect(), containers, None)
}

/// A snapshot with a known disk.
pub fn snapshot_on_disk(images: &[Img], containers: Vec<Container>, disk: DiskUsage) -> Snapshot {
    Snapshot::build(
        images.iter().map(Img::input).collect(),
        containers,
        Some(disk),
    )
}

/// [`policy`] with `[[containers]]` rules too (listed after the image
/// tables in `Policy::order`).
pub fn policy_with_containers(rules: Vec<Rule>, container_rules: Vec<ContainerRule>) -> Policy {
    let mut p = policy(rules);
    p.order
        .extend((0..container_rules.len()).map(RuleRef::Container));
    p.container_rules = container_rules;
    p
}

/// Builds a [`ContainerRule`]; start with [`container_rule`].
#[derive(Debug, Clone)]
pub struct ContainerRuleBuilder(ContainerRule);

/// A `[[containers]]` rule with no selector and no condition yet.
pub fn container_rule(name: &str) -> ContainerRuleBuilder {
    ContainerRuleBuilder(ContainerRule {
        name: name.to_string(),
        selectors: ContainerSelectors::default(),
        conditions: ContainerConditions::default(),
    })
}

impl ContainerRuleBuilder {
    pub fn states(mut self, states: &[StoppedState]) -> Self {
        self.0.selectors.states = states.to_vec();
        self
    }
    pub fn names(mut self, patterns: &[&str]) -> Self {
        self.0.selectors.names = patterns.iter().map(|p| glob(p)).collect();
        self
    }
    pub fn images(mut self, patterns: &[&str]) -> Self {
        self.0.selectors.images = patterns.iter().map(|p| glob(p)).collect();
        self
    }
    pub fn labels(mut self, labels: &[&str]) -> Self {
        self.0.selectors.labels = labels.iter().map(|l| label(l)).collect();
        self
    }
    pub fn exited_for(mut self, d: Duration) -> Self {
        self.0.conditions.exited_for = Some(d);
        self
    }
    pub fn older_than(mut self, d: Duration) -> Self {
        self.0.conditions.older_than = Some(d);
        self
    }
    pub fn build(self) -> ContainerRule {
        self.0
    }
}

/// One container of a test snapshot with its inspect facts; start with
/// [`ctr`].
#[derive(Debug, Clone)]
pub struct Ctr {
    pub container: Container,
    /// `None`: the snapshot has no inspect facts for it.
    pub details: Option<ContainerDetails>,
}

/// A container `name` of image `image_name` (reference `image_name`) in
/// `state`, created two days ago; stopped ones started then and finished a
/// day ago (a `created` one never started), restart policy `no`, 1,000
/// bytes in its writable layer.
pub fn ctr(name: &str, image_name: &str, state: &str) -> Ctr {
    let mut container = container(name, image_name, state);
    container.created = ago(2 * DAY);
    container.image_ref = image_name.to_string();
    let started = state != "created";
    let finished = matches!(state, "exited" | "dead");
    Ctr {
        container,
        details: Some(ContainerDetails {
            started_at: started.then(|| ago(2 * DAY)),
            finished_at: finished.then(|| ago(DAY)),
            restart_policy: "no".to_string(),
            volumes_from: Vec::new(),
            network_container: None,
            size_rw: Some(1_000),
        }),
    }
}

impl Ctr {
    fn details(&mut self) -> &mut ContainerDetails {
        self.details.get_or_insert_with(ContainerDetails::default)
    }
    pub fn created(mut self, secs_ago: u64) -> Self {
        self.container.created = ago(secs_ago);
        self
    }
    pub fn finished(mut self, secs_ago: u64) -> Self {
        self.details().finished_at = Some(ago(secs_ago));
        self
    }
    /// The engine gave no readable finish time.
    pub fn finish_unknown(mut self) -> Self {
        self.details().finished_at = None;
        self
    }
    pub fn size_rw(mut self, bytes: Option<u64>) -> Self {
        self.details().size_rw = bytes;
        self
    }
    pub fn restart(mut self, policy: &str) -> Self {
        self.details().restart_policy = policy.to_string();
        self
    }
    pub fn volumes_from(mut self, other: &str) -> Self {
        self.details().volumes_from.push(other.to_string());
        self
    }
    pub fn network_of(mut self, other: &str) -> Self {
        self.details().network_container = Some(other.to_string());
        self
    }
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.container
            .labels
            .insert(key.to_string(), value.to_string());
        self
    }
    pub fn image_ref(mut self, reference: &str) -> Self {
        self.container.image_ref = reference.to_string();
        self
    }
    pub fn id(mut self, id: &str) -> Self {
        self.container.id = id.to_string();
        self
    }
    /// Without inspect facts (collect did not read them).
    pub fn no_details(mut self) -> Self {
        self.details = None;
        self
    }
}

/// A snapshot of `images` and `containers` (with their inspect facts), on
/// `disk` when given.
pub fn snapshot_with_containers(
    images: &[Img],
    containers: &[Ctr],
    disk: Option<DiskUsage>,
) -> Snapshot {
    let mut snap = Snapshot::build(
        images.iter().map(Img::input).collect(),
        containers.iter().map(|c| c.container.clone()).collect(),
        disk,
    );
    for (sc, c) in snap.containers.iter_mut().zip(containers) {
        sc.details.clone_from(&c.details);
    }
    snap
}
