//! `inventory::collect_with` and the build cache, on the fake engine: read
//! when the pass needs it and the engine has one, `Unsupported` when it has
//! none (not an error), any other error failing the collection; and what
//! `CollectNeeds::for_policy` asks for.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use imagegc::engine::{Capabilities, EngineError};
use imagegc::fake::{self, FakeEngine};
use imagegc::host::disk::{DiskProbe, FixedDisk};
use imagegc::policy::{CacheConditions, CacheRule, CacheSelectors, RuleRef, Threshold};
use imagegc::snapshot::{
    collect, collect_with, CacheAvailability, CollectNeeds, DetailsCache, Snapshot, Tracked,
};
use support::{ago, policy, rule, secs, DAY};

/// One image with two layers, and its two shared layer records plus a
/// non-shared context record, as a `FROM scratch` build with two `COPY`s
/// leaves them.
fn built_engine() -> FakeEngine {
    let engine = FakeEngine::new();
    engine.add_image(fake::image(
        "sha256:app",
        &["app:1"],
        ago(2 * DAY),
        &[("sha256:d-a", 1_000_000), ("sha256:d-b", 500_000)],
    ));
    let mut a = fake::cache_record("reca", &[], 1_000_000, ago(2 * DAY));
    a.shared = true;
    let mut b = fake::cache_record("recb", &["reca"], 500_000, ago(2 * DAY));
    b.shared = true;
    let ctx = fake::cache_record("recctx", &[], 1_505_280, ago(2 * DAY));
    engine.add_cache_record(a);
    engine.add_cache_record(b);
    engine.add_cache_record(ctx);
    engine
}

async fn collect_needing<E: imagegc::engine::Engine>(
    engine: &E,
    needs: CollectNeeds,
) -> Result<Snapshot, EngineError> {
    let no_disk: Arc<dyn DiskProbe> = Arc::new(FixedDisk::new(None));
    collect_with(
        engine,
        &no_disk,
        None,
        &mut DetailsCache::new(),
        &|_| Tracked::default(),
        needs,
    )
    .await
}

#[tokio::test]
async fn the_build_cache_is_read_and_mapped_when_the_pass_needs_it() {
    let engine = built_engine();
    let snap = collect_needing(&engine, CollectNeeds::ALL)
        .await
        .expect("the fake answers");
    assert_eq!(engine.calls.build_cache.load(Ordering::Relaxed), 1);
    assert_eq!(snap.cache.availability, CacheAvailability::Listed);
    assert_eq!(snap.cache.len(), 3);
    let a = snap.cache.by_id["reca"];
    let b = snap.cache.by_id["recb"];
    let ctx = snap.cache.by_id["recctx"];
    assert_eq!(snap.cache.children[a], vec![b]);
    let app = snap.by_id["sha256:app"];
    assert_eq!(snap.cache.holds[a], vec![snap.images[app].layers[0]]);
    assert_eq!(snap.cache.holds[b], vec![snap.images[app].layers[1]]);
    assert!(snap.cache.holds[ctx].is_empty());
    assert_eq!(snap.cache.own_bytes, vec![0, 0, 1_505_280]);
}

#[tokio::test]
async fn the_build_cache_is_not_read_when_the_pass_does_not_need_it() {
    let engine = built_engine();
    let snap = collect_needing(&engine, CollectNeeds::IMAGES_ONLY)
        .await
        .expect("the fake answers");
    assert_eq!(engine.calls.build_cache.load(Ordering::Relaxed), 0);
    assert_eq!(snap.cache.availability, CacheAvailability::NotRead);
    assert!(snap.cache.is_empty());
    // `collect` is the images-only shorthand.
    let no_disk: Arc<dyn DiskProbe> = Arc::new(FixedDisk::new(None));
    let snap = collect(&engine, &no_disk, None, &mut DetailsCache::new(), &|_| {
        Tracked::default()
    })
    .await
    .expect("the fake answers");
    assert_eq!(engine.calls.build_cache.load(Ordering::Relaxed), 0);
    assert_eq!(snap.cache.availability, CacheAvailability::NotRead);
}

#[tokio::test]
async fn an_engine_without_a_build_cache_is_not_asked_and_not_an_error() {
    let engine = built_engine();
    engine.set_capabilities(Capabilities {
        build_cache: false,
        ..imagegc::engine::Engine::capabilities(&engine)
    });
    let snap = collect_needing(&engine, CollectNeeds::ALL)
        .await
        .expect("no build cache is not a failed pass");
    assert_eq!(engine.calls.build_cache.load(Ordering::Relaxed), 0);
    assert_eq!(snap.cache.availability, CacheAvailability::Unsupported);
    assert!(snap.cache.is_empty());
    assert_eq!(snap.images.len(), 1, "the images are still collected");
}

#[tokio::test]
async fn an_engine_that_answers_unsupported_gives_unsupported_not_an_error() {
    let engine = built_engine();
    engine.fail_build_cache(Some(EngineError::Unsupported("404 on /build/prune".into())));
    for _ in 0..2 {
        // Twice: the warning is logged once per process, the answer is the same.
        let snap = collect_needing(&engine, CollectNeeds::ALL)
            .await
            .expect("no build cache is not a failed pass");
        assert_eq!(snap.cache.availability, CacheAvailability::Unsupported);
        assert_eq!(snap.images.len(), 1);
    }
    assert_eq!(engine.calls.build_cache.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn any_other_build_cache_error_fails_the_collection() {
    let engine = built_engine();
    engine.fail_build_cache(Some(EngineError::Other("500: boom".into())));
    let err = collect_needing(&engine, CollectNeeds::ALL)
        .await
        .expect_err("an engine error fails the pass");
    assert!(
        matches!(err, EngineError::Other(ref m) if m.contains("boom")),
        "{err:?}"
    );
}

#[test]
fn the_build_cache_is_needed_by_cache_rules_and_by_rules_that_use_last_use() {
    // No [[containers]] table here: no container inspects (`CollectNeeds::ALL` has them).
    let with_cache = CollectNeeds {
        build_cache: true,
        ..CollectNeeds::IMAGES_ONLY
    };
    let old_only = policy(vec![rule("old").older_than(secs(30 * DAY)).build()]);
    assert_eq!(
        CollectNeeds::for_policy(&old_only),
        CollectNeeds::IMAGES_ONLY
    );

    let unused = policy(vec![rule("unused").unused_for(secs(7 * DAY)).build()]);
    assert_eq!(CollectNeeds::for_policy(&unused), with_cache);

    let pressure = policy(vec![rule("pressure")
        .disk(Threshold::Ratio(0.9), Threshold::Ratio(0.8))
        .build()]);
    assert_eq!(CollectNeeds::for_policy(&pressure), with_cache);

    let mut cache_only = policy(Vec::new());
    cache_only.cache_rules.push(CacheRule {
        name: "build-cache".into(),
        selectors: CacheSelectors::default(),
        conditions: CacheConditions {
            older_than: Some(secs(14 * DAY)),
            ..CacheConditions::default()
        },
    });
    cache_only.order = vec![RuleRef::Cache(0)];
    assert_eq!(CollectNeeds::for_policy(&cache_only), with_cache);
}
