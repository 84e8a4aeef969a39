//! Planner benchmark on synthetic snapshots of 1k, 10k and 100k images with
//! containers, parent chains and shared layers. Target: 10k images plan in
//! under 50 ms on one core; growth 10k → 100k near n log n.
//!
//! Run: `cargo bench --bench planner`. Figures go in BENCHMARKS.md.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use imagegc::accounting::Layer;
use imagegc::config;
use imagegc::engine::{Container, DiskUsage, ImageSummary};
use imagegc::plan::plan;
use imagegc::snapshot::{ImageFacts, ImageInput, Snapshot, Tracked};

const POLICY: &str = r#"
[safety]
min_age = "1h"
protect = ["base/*"]
protect_labels = ["keep"]
[[policy]]
name = "dangling"
dangling = true
older_than = "1h"
[[policy]]
name = "stale-ci"
repositories = ["ci/**"]
unused_for = "7d"
keep_most_recent = 3
[[policy]]
name = "pressure"
disk_high = "80%"
disk_low = "60%"
"#;

/// A deterministic pseudo-random sequence (xorshift), so runs compare.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn synthetic(n: usize, now: DateTime<Utc>) -> Snapshot {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
    let base_layers: Vec<Layer> = (0..(n / 50).max(4))
        .map(|i| Layer {
            chain_id: format!("sha256:base{i:060}"),
            size: 50_000_000 + rng.below(100_000_000),
        })
        .collect();
    let mut images = Vec::with_capacity(n);
    let mut total = 0u64;
    for i in 0..n {
        let base = &base_layers[rng.below(base_layers.len() as u64) as usize];
        let own = Layer {
            chain_id: format!("sha256:own{i:061}"),
            size: 1_000_000 + rng.below(20_000_000),
        };
        total += own.size;
        let parent =
            (i > 0 && rng.below(10) == 0).then(|| format!("sha256:img{:061}", rng.below(i as u64)));
        let tags = match rng.below(4) {
            0 => vec![],
            1 => vec![format!("ci/app{}:{}", rng.below(200), i)],
            2 => vec![format!("base/os{}:{}", rng.below(5), i)],
            _ => vec![
                format!("team/svc{}:{}", rng.below(500), i),
                format!("team/svc:{i}"),
            ],
        };
        let mut labels = BTreeMap::new();
        if rng.below(50) == 0 {
            labels.insert("keep".to_string(), "yes".to_string());
        }
        images.push(ImageInput {
            summary: ImageSummary {
                id: format!("sha256:img{i:061}"),
                parent_id: parent,
                tags,
                digests: vec![],
                created: now - TimeDelta::minutes(rng.below(60 * 24 * 90) as i64),
                labels,
            },
            facts: Arc::new(ImageFacts {
                layers: vec![base.clone(), own],
                sizes_exact: true,
                last_tag_time: None,
                blobs: Vec::new(),
            }),
            tracked: Tracked {
                first_seen: None,
                last_event: (rng.below(3) == 0)
                    .then(|| now - TimeDelta::hours(rng.below(24 * 30) as i64)),
                ..Tracked::default()
            },
        });
    }
    let containers = (0..n / 10)
        .map(|c| Container {
            image_ref: String::new(),
            labels: std::collections::BTreeMap::new(),
            id: format!("{c:064}"),
            names: vec![format!("c{c}")],
            image_id: format!("sha256:img{:061}", rng.below(n as u64)),
            state: if c % 3 == 0 { "running" } else { "exited" }.to_string(),
            created: now - TimeDelta::hours(rng.below(24 * 60) as i64),
        })
        .collect();
    let disk = DiskUsage {
        total_bytes: total * 2,
        used_bytes: total * 17 / 10,
        ..DiskUsage::default()
    };
    Snapshot::build(images, containers, Some(disk))
}

fn bench_plan(c: &mut Criterion) {
    let policy = config::parse(POLICY, "bench.toml").expect("bench policy is valid");
    let now: DateTime<Utc> = "2026-11-28T12:00:00Z".parse().expect("fixed time");
    let mut group = c.benchmark_group("plan");
    group.sample_size(10);
    for n in [1_000usize, 10_000, 100_000] {
        let snap = synthetic(n, now);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &snap, |b, snap| {
            b.iter(|| plan(&policy, snap, now));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
