//! `imagegc explain RECORD-ID` on the in-memory engine: a target that names
//! no image is looked up among the build-cache records (full ID or a unique
//! prefix of at least 4 characters), an ambiguous prefix lists the
//! candidates, and the record's view says what the next pass does with it.
//! `explain IMAGE` says when build-cache records hold its bytes.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use imagegc::engine::Engine;
use imagegc::explain::{explain, explain_record, find_target, LookupError, Target};
use imagegc::fake::{self, FakeEngine};
use imagegc::gc::plan::{KeptBecause, KeptRecord, Plan, Reason, Reasons, RecordRemoval};
use imagegc::host::disk::{DiskProbe, FixedDisk};
use imagegc::policy::Policy;
use imagegc::snapshot::{collect, DetailsCache, Snapshot, Tracked};

async fn snapshot(engine: &FakeEngine) -> Snapshot {
    let no_disk: Arc<dyn DiskProbe> = Arc::new(FixedDisk::new(None));
    let records = engine
        .build_cache()
        .await
        .expect("the fake lists its cache");
    collect(engine, &no_disk, None, &mut DetailsCache::new(), &|_| {
        Tracked::default()
    })
    .await
    .expect("the fake engine answers")
    .with_build_cache(records)
}

fn policy() -> Policy {
    imagegc::config::parse(
        "[[policy]]\nname = \"stale\"\nolder_than = \"7d\"\n",
        "t.toml",
    )
    .expect("a policy")
}

/// An image `app:1` (one 4000-byte layer) a shared record holds, two
/// records with a common prefix, and one more.
async fn host() -> (FakeEngine, Snapshot) {
    let engine = FakeEngine::new();
    let old = Utc::now() - TimeDelta::days(30);
    engine.add_image(fake::image(
        "sha256:ab12",
        &["app:1"],
        old,
        &[("sha256:d-app", 4000)],
    ));
    let mut shared = fake::cache_record("sharedrec0000001", &[], 4000, old);
    shared.shared = true;
    shared.description = "pulled from docker.io/library/debian\u{1b}[2J".to_string();
    engine.add_cache_record(shared);
    engine.add_cache_record(fake::cache_record("twinrec000000001", &[], 10, old));
    engine.add_cache_record(fake::cache_record(
        "twinrec000000002",
        &["twinrec000000001"],
        20,
        old,
    ));
    let mut snap = snapshot(&engine).await;
    let r = snap.cache.by_id["sharedrec0000001"];
    snap.cache.holds[r] = vec![snap.images[0].layers[0]];
    snap.cache.own_bytes[r] = 0;
    (engine, snap)
}

#[tokio::test]
async fn a_record_is_found_by_full_id_or_unique_prefix_and_an_ambiguous_prefix_lists_the_candidates(
) {
    let (_engine, snap) = host().await;
    let shared = snap.cache.by_id["sharedrec0000001"];
    assert_eq!(
        find_target(&snap, "sharedrec0000001"),
        Ok(Target::Record(shared))
    );
    assert_eq!(find_target(&snap, "shar"), Ok(Target::Record(shared)));
    assert_eq!(
        find_target(&snap, "twinrec000000002"),
        Ok(Target::Record(snap.cache.by_id["twinrec000000002"]))
    );
    // An image wins: its ID prefix is looked up first.
    assert_eq!(find_target(&snap, "ab12"), Ok(Target::Image(0)));
    assert_eq!(find_target(&snap, "app:1"), Ok(Target::Image(0)));
    let err = find_target(&snap, "twin").expect_err("two records start with twin");
    assert_eq!(
        err,
        LookupError::AmbiguousRecord {
            target: "twin".into(),
            candidates: vec!["twinrec000000001".into(), "twinrec000000002".into()],
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("matches 2 build-cache records: twinrec000000001, twinrec000000002"),
        "{text}"
    );
    // Too short to be a prefix, or not an ID at all.
    assert!(matches!(
        find_target(&snap, "sha"),
        Err(LookupError::NotFound(_))
    ));
    assert!(matches!(
        find_target(&snap, "shar*"),
        Err(LookupError::NotFound(_))
    ));
    let text = find_target(&snap, "nothing1")
        .expect_err("no match")
        .to_string();
    assert!(text.contains("build-cache record ID"), "{text}");
}

#[tokio::test]
async fn explain_of_a_record_shows_it_its_family_and_what_the_next_pass_does() {
    let (_engine, snap) = host().await;
    let parent = snap.cache.by_id["twinrec000000001"];
    let child = snap.cache.by_id["twinrec000000002"];
    let reason = Reasons(vec![Reason::OlderThan {
        age: TimeDelta::days(30),
        limit: TimeDelta::days(2),
    }]);
    let plan = Plan {
        records: vec![RecordRemoval {
            record: child,
            record_id: "twinrec000000002".into(),
            policy: "build-cache".into(),
            reason,
            reclaim_bytes: 20,
        }],
        kept_records: vec![KeptRecord {
            record: parent,
            record_id: "twinrec000000001".into(),
            policy: "build-cache".into(),
            reason: KeptBecause::HasChildren { children: 1 },
        }],
        ..Plan::default()
    };
    let now = Utc::now();

    let text = explain_record(&policy(), &snap, &plan, now, child).to_text();
    assert!(
        text.starts_with("build-cache record  twinrec000000002\n"),
        "{text}"
    );
    assert!(text.contains("type         regular\n"), "{text}");
    assert!(text.contains("last used    "), "{text}");
    assert!(text.contains("1 use)"), "{text}");
    assert!(text.contains("in use       no\n"), "{text}");
    assert!(text.contains("parents      twinrec00000"), "{text}");
    assert!(
        text.contains("remove (policy build-cache, frees 20 B): created 30d ago (older_than 2d)"),
        "{text}"
    );
    assert!(
        text.contains("=> the next pass would remove it (policy build-cache, frees 20 B)"),
        "{text}"
    );

    let text = explain_record(&policy(), &snap, &plan, now, parent).to_text();
    assert!(
        text.contains("children     twinrec00000 (it goes only after them)"),
        "{text}"
    );
    assert!(
        text.contains("=> kept: policy build-cache would remove it, but it is 1 record made on top of it is kept"),
        "{text}"
    );

    let shared = snap.cache.by_id["sharedrec0000001"];
    let text = explain_record(&policy(), &snap, &Plan::default(), now, shared).to_text();
    assert!(
        text.contains("shared       yes: its data is shared with 3.9 KiB of image layers"),
        "{text}"
    );
    assert!(
        text.contains("description  pulled from docker.io/library/debian\\u{1b}[2J"),
        "the escape sequence is shown escaped, not sent to the terminal: {text}"
    );
    assert!(
        text.contains("=> kept: no build_cache policy selects it"),
        "{text}"
    );
}

#[tokio::test]
async fn explain_of_an_image_says_when_build_cache_holds_its_bytes() {
    let (_engine, snap) = host().await;
    let plan = imagegc::plan::plan(&policy(), &snap, Utc::now());
    let e = explain(&policy(), &snap, &plan, Utc::now(), 0);
    assert_eq!(e.held_by_cache_bytes, 4000);
    assert_eq!(e.held_by_records, vec!["sharedrec0000001"]);
    let text = e.to_text();
    assert!(
        text.contains(
            "build cache  4000 bytes of its layers are held by build-cache records sharedrec000; \
             removing it frees them only after those records go"
        ),
        "{text}"
    );
    let json = e.to_json();
    assert_eq!(json["kind"], "image");
    assert_eq!(json["held_by_cache_bytes"], 4000);
    assert_eq!(
        json["held_by_records"],
        serde_json::json!(["sharedrec0000001"])
    );
}
