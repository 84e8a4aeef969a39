//! One suite of engine behaviours, run against every `Engine` imagegc has (the in-memory fake
//! under each capability set it emulates, and the real Docker Engine): each must do what its
//! declared `Capabilities` promise, since the planner and the executor rely on them instead of
//! assuming Docker 20.10.

mod common;

use std::collections::BTreeSet;

use chrono::Utc;
use imagegc::engine::{Capabilities, DeleteItem, Engine, EngineError};
use imagegc::fake::{self, FakeEngine};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// An image with two tags, no children, no containers and layers no other image shares.
struct Subject {
    image_id: String,
    tags: [String; 2],
    /// Its layers' chain IDs, oldest first, computed here and not by the adapter.
    chain_ids: Vec<String>,
}

/// `C0 = D0`, `Cn = sha256(C(n-1) + " " + Dn)`: the layer store's naming.
fn chain_ids(diff_ids: &[&str]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    for diff in diff_ids {
        let next = match chain.last() {
            None => (*diff).to_owned(),
            Some(prev) => format!("sha256:{:x}", Sha256::digest(format!("{prev} {diff}"))),
        };
        chain.push(next);
    }
    chain
}

fn deleted(items: &[DeleteItem]) -> Vec<String> {
    items
        .iter()
        .filter_map(|item| match item {
            DeleteItem::Deleted(id) => Some(id.clone()),
            DeleteItem::Untagged(_) => None,
        })
        .collect()
}

async fn is_listed<E: Engine>(engine: &E, image_id: &str) -> Option<Vec<String>> {
    let images = engine.list_images().await.expect("list images");
    images
        .into_iter()
        .find(|i| i.id == image_id)
        .map(|i| i.tags)
}

/// The contract: image facts name the layers as the layer store does, with exact sizes; a
/// removal by tag untags only that tag where `untags_single_reference` says so; the image goes
/// with its last tag; the answer lists the image and its layers where
/// `reports_deleted_layers` says so, and nothing deleted otherwise; then the image is gone.
async fn behaves_as_declared<E: Engine>(engine: &E, subject: &Subject) {
    let capabilities = engine.capabilities();
    let facts = engine
        .image_details(&subject.image_id)
        .await
        .expect("image facts");
    let layers: Vec<&str> = facts.layers.iter().map(|l| l.chain_id.as_str()).collect();
    assert_eq!(layers, subject.chain_ids, "{facts:?}");
    assert!(facts.sizes_exact, "{facts:?}");
    assert!(facts.layers.iter().all(|l| l.size > 0), "{facts:?}");

    let [first, second] = &subject.tags;
    let mut answers = engine
        .remove_image(first)
        .await
        .expect("remove the first tag");
    if capabilities.untags_single_reference {
        assert_eq!(answers, vec![DeleteItem::Untagged(first.clone())]);
        assert_eq!(
            is_listed(engine, &subject.image_id).await,
            Some(vec![second.clone()]),
            "the image stays with its other tag"
        );
        let last = engine
            .remove_image(second)
            .await
            .expect("remove the last tag");
        assert!(
            last.contains(&DeleteItem::Untagged(second.clone())),
            "{last:?}"
        );
        answers.extend(last);
    }

    let reported = deleted(&answers);
    if capabilities.reports_deleted_layers {
        assert!(reported.contains(&subject.image_id), "{answers:?}");
        for chain_id in &subject.chain_ids {
            assert!(reported.contains(chain_id), "{chain_id} in {answers:?}");
        }
    } else {
        assert!(reported.is_empty(), "declared to report none: {answers:?}");
    }
    assert_eq!(is_listed(engine, &subject.image_id).await, None);
    let gone = engine.image_details(&subject.image_id).await;
    assert!(matches!(gone, Err(EngineError::NotFound(_))), "{gone:?}");
}

fn fake_subject(engine: &FakeEngine) -> Subject {
    let diffs = ["sha256:contract-a", "sha256:contract-b"];
    let image_id = engine.add_image(fake::image(
        "sha256:contract",
        &["contract:1", "contract:2"],
        Utc::now(),
        &[(diffs[0], 100), (diffs[1], 200)],
    ));
    Subject {
        image_id,
        tags: ["contract:1".to_owned(), "contract:2".to_owned()],
        chain_ids: chain_ids(&diffs),
    }
}

#[tokio::test]
async fn the_fake_with_docker_capabilities_behaves_as_it_declares() {
    let engine = FakeEngine::new();
    let subject = fake_subject(&engine);
    assert!(engine.capabilities().reports_deleted_layers);
    behaves_as_declared(&engine, &subject).await;
}

#[tokio::test]
async fn the_fake_that_reports_no_deleted_layers_behaves_as_it_declares() {
    let engine = FakeEngine::new();
    engine.set_capabilities(Capabilities {
        reports_deleted_layers: false,
        ..engine.capabilities()
    });
    let subject = fake_subject(&engine);
    behaves_as_declared(&engine, &subject).await;
}

#[tokio::test]
async fn the_docker_engine_behaves_as_it_declares() {
    let lab = common::Lab::new();
    let first = lab.reference("contract", "1");
    let second = lab.reference("contract", "2");
    let loaded = lab.load_image(&common::ImageSpec::new().tag(first.clone()));
    lab.tag(&loaded.id, &second);
    let docker = imagegc::docker::Docker::connect(&common::engine_address())
        .await
        .expect("these tests need the Docker Engine");
    let subject = Subject {
        image_id: loaded.id.clone(),
        tags: [first, second],
        chain_ids: loaded.chain_ids(),
    };
    behaves_as_declared(&docker, &subject).await;
}

// ---------------------------------------------------------------------------------------------
// Build cache
// ---------------------------------------------------------------------------------------------

/// Two build-cache records made by one build: `child` names `parent` as its only parent, and
/// no other record names either. Nothing else about the cache is assumed.
struct CacheSubject {
    child: String,
    parent: String,
}

async fn cache_ids<E: Engine>(engine: &E) -> BTreeSet<String> {
    engine
        .build_cache()
        .await
        .expect("list the build cache")
        .into_iter()
        .map(|r| r.id)
        .collect()
}

/// The contract of `remove_cache_record`, as Docker 20.10 behaves (measured on a private
/// engine, `the_docker_build_cache_behaves_as_the_contract_says`): exactly the record named
/// goes, and only when nothing names it as a parent; a prefix of an ID removes nothing (the
/// filter is anchored); an ID that is not a plain record ID is refused; a record gone already,
/// or one the engine will not delete, is `deleted: false` without an error.
async fn cache_behaves_as_docker_does<E: Engine>(engine: &E, subject: &CacheSubject) {
    assert!(engine.capabilities().build_cache);
    let records = engine.build_cache().await.expect("list the build cache");
    let child = records
        .iter()
        .find(|r| r.id == subject.child)
        .expect("the child is listed");
    assert_eq!(child.parents, vec![subject.parent.clone()], "{child:?}");
    let before = cache_ids(engine).await;
    assert!(before.contains(&subject.parent), "{before:?}");

    // A prefix of an ID names no record: with `id` a regular expression, an unanchored filter
    // would delete the record it starts.
    let prefix = &subject.child[..4];
    let removal = engine
        .remove_cache_record(prefix)
        .await
        .expect("remove a prefix");
    assert!(!removal.deleted, "{removal:?}");
    assert_eq!(
        cache_ids(engine).await,
        before,
        "a prefix removed something"
    );

    // IDs that are not plain record IDs never reach the engine's regular expression.
    for bad in [
        "",
        ".*",
        &format!("{prefix}.*"),
        &format!("^{}$", subject.child),
    ] {
        let refused = engine.remove_cache_record(bad).await;
        assert!(
            matches!(&refused, Err(EngineError::Other(m)) if m.contains("not a plain record ID")),
            "{bad:?}: {refused:?}"
        );
    }
    assert_eq!(
        cache_ids(engine).await,
        before,
        "a refused ID removed something"
    );

    // A record another record names as its parent stays, and that is no error.
    let removal = engine
        .remove_cache_record(&subject.parent)
        .await
        .expect("remove the parent first");
    assert!(!removal.deleted, "a parent with a child went: {removal:?}");
    assert_eq!(cache_ids(engine).await, before);

    // The child goes, and nothing else.
    let removal = engine
        .remove_cache_record(&subject.child)
        .await
        .expect("remove the child");
    assert!(removal.deleted, "{removal:?}");
    let mut expected = before.clone();
    expected.remove(&subject.child);
    assert_eq!(cache_ids(engine).await, expected, "exactly the child went");

    // Removed again: not deleted, not an error.
    let again = engine
        .remove_cache_record(&subject.child)
        .await
        .expect("remove the child again");
    assert!(!again.deleted, "{again:?}");

    // With its child gone, the parent goes, and nothing else.
    let removal = engine
        .remove_cache_record(&subject.parent)
        .await
        .expect("remove the parent");
    assert!(removal.deleted, "{removal:?}");
    expected.remove(&subject.parent);
    assert_eq!(cache_ids(engine).await, expected, "exactly the parent went");
}

fn fake_cache_subject(engine: &FakeEngine) -> CacheSubject {
    let now = Utc::now();
    // A shared child, as a build's `COPY` layer kept by the image it built.
    let mut child = fake::cache_record(
        "g9m9j2vaii5shk3sgokpqefpf",
        &["95cmtkpz0oyzzmecvfejjm73b"],
        50_000,
        now,
    );
    child.shared = true;
    engine.add_cache_record(fake::cache_record(
        "95cmtkpz0oyzzmecvfejjm73b",
        &[],
        100_000,
        now,
    ));
    engine.add_cache_record(child);
    engine.add_cache_record(fake::cache_record(
        "v54x1ylxtbn1sp5t589q363o7",
        &[],
        150_049,
        now,
    ));
    CacheSubject {
        child: "g9m9j2vaii5shk3sgokpqefpf".to_owned(),
        parent: "95cmtkpz0oyzzmecvfejjm73b".to_owned(),
    }
}

#[tokio::test]
async fn the_fake_build_cache_behaves_as_docker_does() {
    let engine = FakeEngine::new();
    let subject = fake_cache_subject(&engine);
    cache_behaves_as_docker_does(&engine, &subject).await;
    assert_eq!(engine.cache_ids(), vec!["v54x1ylxtbn1sp5t589q363o7"]);
}

#[tokio::test]
async fn the_fake_keeps_a_record_in_use_until_the_build_lets_go() {
    let engine = FakeEngine::new();
    let subject = fake_cache_subject(&engine);
    engine.set_cache_in_use(&subject.child, true);
    let removal = engine.remove_cache_record(&subject.child).await.unwrap();
    assert!(!removal.deleted, "{removal:?}");
    assert!(engine.cache_ids().contains(&subject.child));
    engine.set_cache_in_use(&subject.child, false);
    let removal = engine.remove_cache_record(&subject.child).await.unwrap();
    assert!(
        removal.deleted && removal.reported_bytes == 50_000,
        "{removal:?}"
    );
}

#[tokio::test]
async fn an_engine_without_build_cache_says_so_with_a_typed_error() {
    let engine = FakeEngine::new();
    fake_cache_subject(&engine);
    engine.set_capabilities(Capabilities {
        build_cache: false,
        ..engine.capabilities()
    });
    let listed = engine.build_cache().await;
    assert!(
        matches!(listed, Err(EngineError::Unsupported(_))),
        "{listed:?}"
    );
    let removed = engine
        .remove_cache_record("v54x1ylxtbn1sp5t589q363o7")
        .await;
    assert!(
        matches!(&removed, Err(e) if e.kind() == "unsupported"),
        "{removed:?}"
    );
    assert_eq!(engine.cache_ids().len(), 3, "nothing removed");
}

/// A build with two `COPY` steps on a private engine: the second layer's record names the
/// first's as its parent (both shared with the image they built).
fn build_on_private_engine(engine: &common::private_engine::PrivateEngine) -> CacheSubject {
    let a = common::random_hex(50_000);
    let b = common::random_hex(25_000);
    engine.build(
        "imagegc-cache-contract:1",
        &[
            (
                "Dockerfile",
                b"FROM scratch\nCOPY a.bin /a.bin\nCOPY b.bin /b.bin\n",
            ),
            ("a.bin", a.as_bytes()),
            ("b.bin", b.as_bytes()),
        ],
    );
    let df = engine.get("/system/df");
    let records = df["BuildCache"]
        .as_array()
        .expect("BuildCache after a build");
    let parent_of = |r: &Value| r["Parent"].as_str().unwrap_or_default().to_owned();
    let child = records
        .iter()
        .find(|r| !parent_of(r).is_empty())
        .unwrap_or_else(|| panic!("no record with a parent after the build: {df}"));
    let parent = parent_of(child);
    let children_of_either = records
        .iter()
        .filter(|r| parent_of(r) == parent || parent_of(r) == child["ID"].as_str().unwrap())
        .count();
    assert_eq!(children_of_either, 1, "one child only: {df}");
    CacheSubject {
        child: child["ID"].as_str().unwrap().to_owned(),
        parent,
    }
}

/// On a private engine only (removals change the engine's global build cache): the records
/// imagegc lists are those of the raw `/system/df`, field by field; a shared record is not
/// removed by a prune without `all` even when its anchored ID is the filter (which is why the
/// adapter sends `all` beside the ID); then the contract above.
#[tokio::test]
async fn the_docker_build_cache_behaves_as_the_contract_says() {
    let private = std::sync::Arc::new(common::private_engine::PrivateEngine::start());
    let subject = build_on_private_engine(&private);
    let docker = imagegc::docker::Docker::connect(&private.address())
        .await
        .unwrap_or_else(|e| panic!("connect to the private engine: {e}\n{}", private.log_text()));

    let raw = private.get("/system/df");
    let raw = raw["BuildCache"].as_array().unwrap();
    let listed = docker.build_cache().await.expect("list the build cache");
    assert_eq!(listed.len(), raw.len(), "{listed:?} vs {raw:?}");
    for entry in raw {
        let id = entry["ID"].as_str().unwrap();
        let record = listed
            .iter()
            .find(|r| r.id == id)
            .expect("every raw record listed");
        let parent = entry["Parent"].as_str().unwrap_or_default();
        let parents: Vec<&str> = [parent].into_iter().filter(|p| !p.is_empty()).collect();
        assert_eq!(record.parents, parents, "{id}");
        assert_eq!(
            record.kind.as_str(),
            entry["Type"].as_str().unwrap(),
            "{id}"
        );
        assert_eq!(
            record.description,
            entry["Description"].as_str().unwrap(),
            "{id}"
        );
        assert_eq!(Some(record.size), entry["Size"].as_u64(), "{id}");
        assert_eq!(Some(record.shared), entry["Shared"].as_bool(), "{id}");
        assert_eq!(Some(record.in_use), entry["InUse"].as_bool(), "{id}");
        assert_eq!(
            Some(record.usage_count),
            entry["UsageCount"].as_u64(),
            "{id}"
        );
        assert!(record.last_used.is_some(), "{id}");
    }
    let child = listed.iter().find(|r| r.id == subject.child).unwrap();
    assert!(
        child.shared,
        "a COPY layer of a tagged image is shared: {child:?}"
    );

    // The CLI's view agrees on the IDs (it prints them in full with -v).
    let cli = private.docker(&["system", "df", "-v"]);
    assert!(cli.status.success(), "{cli:?}");
    let cli = String::from_utf8_lossy(&cli.stdout);
    for record in &listed {
        assert!(
            cli.contains(&record.id[..12]),
            "{} not in:\n{cli}",
            record.id
        );
    }

    // Without `all`, the engine skips a shared record even when the filter names only it.
    let filters = format!("%7B%22id%22%3A%5B%22%5E{}%24%22%5D%7D", subject.child);
    let answer = private.post(&format!("/build/prune?filters={filters}"));
    assert!(answer["CachesDeleted"].is_null(), "{answer}");
    assert!(cache_ids(&docker).await.contains(&subject.child));

    cache_behaves_as_docker_does(&docker, &subject).await;

    in_use_records_are_not_removed_while_a_build_runs(&private, &docker).await;
}

/// On the private engine: a record a running build holds is not removed (no error either), and
/// the build finishes.
async fn in_use_records_are_not_removed_while_a_build_runs(
    private: &std::sync::Arc<common::private_engine::PrivateEngine>,
    docker: &imagegc::docker::Docker,
) {
    // Joined also when an assertion below fails, so that the private engine (which the build
    // thread holds too) is dropped, stopped and removed before the test process ends.
    let mut building = JoinOnDrop(Some({
        let private = std::sync::Arc::clone(private);
        std::thread::spawn(move || {
            private.build(
                "imagegc-cache-contract:busy",
                &[
                    (
                        "Dockerfile",
                        b"FROM scratch\nCOPY nap /nap\nRUN [\"/nap\", \"6\"]\n".as_slice(),
                    ),
                    ("nap", common::private_engine::nap_binary()),
                ],
            )
        })
    }));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let in_use = loop {
        let records = docker.build_cache().await.expect("list during the build");
        let in_use: Vec<String> = records
            .into_iter()
            .filter(|r| r.in_use)
            .map(|r| r.id)
            .collect();
        if !in_use.is_empty() {
            break in_use;
        }
        assert!(
            !building.is_finished() && std::time::Instant::now() < deadline,
            "no record was in use while the build ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for id in &in_use {
        let removal = docker
            .remove_cache_record(id)
            .await
            .expect("remove an in-use record");
        assert!(!removal.deleted, "{id} was in use: {removal:?}");
    }
    // (The records of a running build come and go as its steps commit, so whether an in-use
    // record is still listed later says nothing; the answer above does.)
    let image = building
        .0
        .take()
        .expect("joined once")
        .join()
        .expect("the build finishes");
    assert!(image.starts_with("sha256:"), "{image}");
}

/// A thread joined when this drops (also while a failed assertion unwinds).
struct JoinOnDrop<T>(Option<std::thread::JoinHandle<T>>);

impl<T> JoinOnDrop<T> {
    fn is_finished(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(std::thread::JoinHandle::is_finished)
    }
}

impl<T> Drop for JoinOnDrop<T> {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.join();
        }
    }
}

/// On a private engine: what `docs/ENGINES.md` "Build cache and image layers" measured and
/// `Snapshot::with_build_cache` rests on, re-checked through the Docker adapter and
/// `inventory::collect_with`. A `FROM scratch` build's shared records hold its layers bottom
/// first along the `Parent` chain, with `Size` = the layer's size; a build `FROM` a loaded base
/// makes `from local` records of `Size` 0 for the base's layers, placed by the layer built on
/// them; a second build from the base moves their `LastUsedAt`; after `rmi` the image's records
/// are no longer `Shared`, hold nothing and own their `Size`.
#[tokio::test]
#[allow(clippy::too_many_lines)]
async fn the_docker_snapshot_maps_shared_records_to_the_layers_they_hold() {
    use std::sync::Arc;

    use imagegc::host::disk::{DiskProbe, FixedDisk};
    use imagegc::snapshot::{collect_with, CollectNeeds, DetailsCache, Snapshot, Tracked};

    async fn snapshot(docker: &imagegc::docker::Docker) -> Snapshot {
        let no_disk: Arc<dyn DiskProbe> = Arc::new(FixedDisk::new(None));
        collect_with(
            docker,
            &no_disk,
            None,
            &mut DetailsCache::new(),
            &|_| Tracked::default(),
            CollectNeeds::ALL,
        )
        .await
        .expect("collect from the private engine")
    }
    fn image_layers(snap: &Snapshot, tag: &str) -> Vec<u32> {
        let i = snap
            .images
            .iter()
            .position(|i| i.tags.iter().any(|t| t == tag))
            .unwrap_or_else(|| panic!("{tag} in the snapshot"));
        snap.images[i].layers.clone()
    }
    fn depth(snap: &Snapshot, mut r: usize) -> usize {
        let mut d = 0;
        while let Some(&p) = snap.cache.parents[r].first() {
            d += 1;
            r = p;
            assert!(d <= snap.cache.len(), "a parent cycle");
        }
        d
    }

    let private = common::private_engine::PrivateEngine::start();
    let random = |n: usize| common::random_hex(n / 2).into_bytes();
    private.load(
        "contract-base:1",
        Utc::now() - chrono::TimeDelta::days(3),
        &[random(800_000), random(300_000)],
    );
    private.build(
        "contract-app:1",
        &[
            ("Dockerfile", b"FROM contract-base:1\nCOPY c.bin /c.bin\n"),
            ("c.bin", &random(200_000)),
        ],
    );
    private.build(
        "contract-scratch:1",
        &[
            (
                "Dockerfile",
                b"FROM scratch\nCOPY a.bin /a.bin\nCOPY b.bin /b.bin\n",
            ),
            ("a.bin", &random(1_000_000)),
            ("b.bin", &random(500_000)),
        ],
    );
    let docker = imagegc::docker::Docker::connect(&private.address())
        .await
        .unwrap_or_else(|e| panic!("connect to the private engine: {e}\n{}", private.log_text()));

    let snap = snapshot(&docker).await;
    let base = image_layers(&snap, "contract-base:1");
    let app = image_layers(&snap, "contract-app:1");
    let scratch = image_layers(&snap, "contract-scratch:1");
    assert_eq!(&app[..2], &base[..], "app is built on base's layers");
    let size = |l: u32| snap.layers[l as usize].size;
    assert_eq!(
        scratch.iter().map(|&l| size(l)).collect::<Vec<_>>(),
        [1_000_000, 500_000]
    );
    let cache = &snap.cache;
    let mut from_records = 0;
    for (r, record) in cache.records.iter().enumerate() {
        let d = depth(&snap, r);
        if !record.shared {
            assert!(cache.holds[r].is_empty(), "{record:?}");
            assert_eq!(cache.own_bytes[r], record.size, "{record:?}");
            continue;
        }
        assert_eq!(
            cache.own_bytes[r], 0,
            "a shared record owns nothing: {record:?}"
        );
        if record.description.starts_with("from ") {
            // The base's layers: Size 0, whatever the layer's size.
            from_records += 1;
            assert_eq!(record.size, 0, "{record:?}");
            assert_eq!(cache.holds[r], vec![base[d]], "{record:?} at depth {d}");
        } else if record.size == 200_000 {
            assert_eq!(d, 2, "the COPY on the base's two layers: {record:?}");
            assert_eq!(cache.holds[r], vec![app[2]], "{record:?}");
        } else {
            assert_eq!(record.size, size(scratch[d]), "{record:?} at depth {d}");
            assert_eq!(cache.holds[r], vec![scratch[d]], "{record:?}");
        }
    }
    assert_eq!(
        from_records, 2,
        "one record per base layer: {:#?}",
        cache.records
    );

    // A second build from the base, all of it cached, still uses the base's records.
    let last_used = |snap: &Snapshot| {
        snap.cache
            .records
            .iter()
            .filter(|r| r.description.starts_with("from "))
            .map(|r| r.last_used)
            .max()
            .flatten()
            .expect("the from records were used")
    };
    let before = last_used(&snap);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    private.build(
        "contract-app:2",
        &[
            ("Dockerfile", b"FROM contract-base:1\nCOPY d.bin /d.bin\n"),
            ("d.bin", &random(1000)),
        ],
    );
    let snap = snapshot(&docker).await;
    assert!(
        last_used(&snap) > before,
        "LastUsedAt moves with a build FROM the base"
    );

    // `rmi` deletes no layer while records hold them, and the records stop being shared.
    let answer = private.request("DELETE", "/images/contract-scratch:1", None, &[]);
    let (status, body) = answer.expect("DELETE the image");
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(status, 200, "{body}");
    let deleted: Vec<&Value> = body
        .as_array()
        .expect("a list")
        .iter()
        .filter(|i| i.get("Deleted").is_some())
        .collect();
    assert_eq!(deleted.len(), 1, "only the image, no layer: {body}");
    let snap = snapshot(&docker).await;
    let mut unshared = 0;
    for (r, record) in snap.cache.records.iter().enumerate() {
        if record.size == 1_000_000 || record.size == 500_000 {
            unshared += 1;
            assert!(!record.shared, "{record:?}");
            assert!(snap.cache.holds[r].is_empty(), "{record:?}");
            assert_eq!(snap.cache.own_bytes[r], record.size, "{record:?}");
        }
    }
    assert_eq!(unshared, 2, "{:#?}", snap.cache.records);

    // With the images built on it gone, the base's records are still the base's layers: their
    // chain ends where the base does.
    for tag in ["contract-app:1", "contract-app:2"] {
        let (status, body) = private
            .request("DELETE", &format!("/images/{tag}"), None, &[])
            .expect("DELETE the image");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let snap = snapshot(&docker).await;
    let base = image_layers(&snap, "contract-base:1");
    let mut from_records = 0;
    for (r, record) in snap.cache.records.iter().enumerate() {
        if record.description.starts_with("from ") {
            from_records += 1;
            assert!(record.shared, "the base still uses it: {record:?}");
            assert_eq!(
                snap.cache.holds[r],
                vec![base[depth(&snap, r)]],
                "{record:?}"
            );
        } else if record.size == 200_000 {
            assert!(!record.shared, "its image is gone: {record:?}");
        }
    }
    assert_eq!(from_records, 2, "{:#?}", snap.cache.records);
}

// ---------------------------------------------------------------------------------------------
// Containers
// ---------------------------------------------------------------------------------------------

/// Three containers of one image (no other container uses it): one `exited`, one `running`,
/// one `paused`; and an ID no container has.
struct ContainerSubject {
    image_id: String,
    exited: String,
    running: String,
    paused: String,
    unknown: String,
}

/// The contract (Docker 20.10, measured in `tests/containers_engine.rs`): inspect says when a
/// container started and finished and, only when asked, the bytes of its writable layer; a
/// running or paused container is not removed (409), an unknown one is 404; the exited one
/// goes, and with it the last user of its image, which can then be removed.
async fn containers_behave_as_docker_does<E: Engine>(engine: &E, s: &ContainerSubject) {
    let exited = engine
        .container_details(&s.exited, true)
        .await
        .expect("inspect the exited container");
    assert!(
        exited.started_at.is_some() && exited.finished_at.is_some(),
        "{exited:?}"
    );
    assert!(exited.size_rw.is_some(), "size asked: {exited:?}");
    let unsized_ = engine
        .container_details(&s.exited, false)
        .await
        .expect("inspect without size");
    assert_eq!(unsized_.size_rw, None, "size not asked: {unsized_:?}");
    let running = engine
        .container_details(&s.running, false)
        .await
        .expect("inspect the running container");
    assert!(
        running.started_at.is_some() && running.finished_at.is_none(),
        "{running:?}"
    );
    assert!(matches!(
        engine.container_details(&s.unknown, true).await,
        Err(EngineError::NotFound(_))
    ));

    for (what, id) in [("running", &s.running), ("paused", &s.paused)] {
        match engine.remove_container(id).await {
            Err(EngineError::Conflict(message)) => {
                assert!(message.contains(what), "{what}: {message}");
            }
            other => panic!("removing the {what} container: {other:?}"),
        }
    }
    assert!(matches!(
        engine.remove_container(&s.unknown).await,
        Err(EngineError::NotFound(_))
    ));
    let listed = |containers: Vec<imagegc::engine::Container>| -> BTreeSet<String> {
        containers.into_iter().map(|c| c.id).collect()
    };
    let before = listed(engine.list_containers().await.expect("list containers"));
    assert!(before.contains(&s.running) && before.contains(&s.paused));
    engine
        .remove_container(&s.exited)
        .await
        .expect("the exited container goes");
    let after = listed(engine.list_containers().await.expect("list containers"));
    assert!(!after.contains(&s.exited), "{after:?}");
    assert!(after.contains(&s.running) && after.contains(&s.paused));
    assert!(matches!(
        engine.remove_container(&s.exited).await,
        Err(EngineError::NotFound(_))
    ));
    assert!(
        matches!(
            engine.remove_image(&s.image_id).await,
            Err(EngineError::Conflict(_))
        ),
        "the running and paused containers still use the image"
    );
}

fn fake_container(id: &str, image_id: &str, state: &str) -> imagegc::engine::Container {
    imagegc::engine::Container {
        id: id.to_owned(),
        names: vec![format!("name-{id}")],
        image_id: image_id.to_owned(),
        state: state.to_owned(),
        created: Utc::now(),
        image_ref: "contract:1".to_owned(),
        labels: std::collections::BTreeMap::new(),
    }
}

#[tokio::test]
async fn the_fake_containers_behave_as_docker_does() {
    let engine = FakeEngine::new();
    let image_id = fake_subject(&engine).image_id;
    for (id, state) in [
        ("c-exited", "exited"),
        ("c-running", "running"),
        ("c-paused", "paused"),
    ] {
        engine.add_container(fake_container(id, &image_id, state));
    }
    let now = Utc::now();
    engine.set_container_details(
        "c-exited",
        imagegc::engine::ContainerDetails {
            started_at: Some(now - chrono::TimeDelta::seconds(5)),
            finished_at: Some(now - chrono::TimeDelta::seconds(4)),
            restart_policy: "no".to_owned(),
            size_rw: Some(3_000_000),
            ..imagegc::engine::ContainerDetails::default()
        },
    );
    engine.set_container_details(
        "c-running",
        imagegc::engine::ContainerDetails {
            started_at: Some(now),
            ..imagegc::engine::ContainerDetails::default()
        },
    );
    let subject = ContainerSubject {
        image_id: image_id.clone(),
        exited: "c-exited".to_owned(),
        running: "c-running".to_owned(),
        paused: "c-paused".to_owned(),
        unknown: "c-unknown".to_owned(),
    };
    containers_behave_as_docker_does(&engine, &subject).await;
    assert_eq!(
        engine.container_removals(),
        ["c-running", "c-paused", "c-unknown", "c-exited", "c-exited"]
    );
    assert_eq!(
        engine
            .calls
            .remove_container
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
    // Once its last users go, the image can be removed.
    engine.remove_container("c-running");
    engine.remove_container("c-paused");
    for tag in ["contract:1", "contract:2"] {
        engine
            .remove_image(tag)
            .await
            .expect("the image is unpinned");
    }
    assert!(engine.image_ids().is_empty());
}

#[tokio::test]
async fn the_fake_fails_a_container_removal_as_told() {
    let engine = FakeEngine::new();
    engine.add_container(fake_container("c1", "sha256:i", "exited"));
    engine.fail_removal_of(
        "c1",
        EngineError::Conflict("restarted meanwhile".to_owned()),
    );
    assert!(matches!(
        Engine::remove_container(&engine, "c1").await,
        Err(EngineError::Conflict(_))
    ));
    assert_eq!(engine.container_ids(), ["c1"]);
    engine.fail_everything(Some(EngineError::Other("down".to_owned())));
    assert!(matches!(
        engine.container_details("c1", false).await,
        Err(EngineError::Other(_))
    ));
}

#[tokio::test]
async fn the_docker_containers_behave_as_the_contract_says() {
    let lab = common::Lab::new();
    let loaded = lab.load_image(&common::ImageSpec::new().tag(lab.reference("contract-c", "1")));
    let subject = ContainerSubject {
        image_id: loaded.id.clone(),
        exited: lab.exited_container(&loaded.id),
        running: lab.running_container(&loaded.id),
        paused: lab.paused_container(&loaded.id),
        unknown: "0123456789abcdef".repeat(4),
    };
    let docker = imagegc::docker::Docker::connect(&common::engine_address())
        .await
        .expect("these tests need the Docker Engine");
    containers_behave_as_docker_does(&docker, &subject).await;
}

/// `collect_for` inspects every container once, asks the size only for the stopped ones a
/// rule selects, and leaves a container that vanished between list and inspect without
/// details; a failing inspect fails the collection.
#[tokio::test]
#[allow(clippy::too_many_lines)] // one scene, three collections of it
async fn collect_sizes_only_the_candidates_and_survives_a_vanished_container() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use imagegc::host::disk::{DiskProbe, FixedDisk};
    use imagegc::snapshot::{collect_for, CollectNeeds, DetailsCache, Tracked};

    use imagegc::policy::{ContainerConditions, ContainerRule, ContainerSelectors, Glob};

    let rules = vec![ContainerRule {
        name: "ci".to_owned(),
        selectors: ContainerSelectors {
            names: vec![Glob {
                pattern: "ci-*".to_owned(),
                matcher: globset::Glob::new("ci-*")
                    .expect("a glob")
                    .compile_matcher(),
            }],
            ..ContainerSelectors::default()
        },
        conditions: ContainerConditions {
            exited_for: Some(std::time::Duration::from_secs(1)),
            older_than: None,
        },
    }];
    let engine = FakeEngine::new();
    let image_id = fake_subject(&engine).image_id;
    let mut ci_running = fake_container("c-run", &image_id, "running");
    ci_running.names = vec!["ci-run".to_owned()];
    let mut ci_exited = fake_container("c-ci", &image_id, "exited");
    ci_exited.names = vec!["ci-7".to_owned()];
    let mut ci_gone = fake_container("c-gone", &image_id, "exited");
    ci_gone.names = vec!["ci-8".to_owned()];
    let other = fake_container("c-web", &image_id, "exited");
    for c in [ci_running, ci_exited, ci_gone, other] {
        engine.add_container(c);
    }
    engine.set_container_details(
        "c-ci",
        imagegc::engine::ContainerDetails {
            size_rw: Some(4096),
            ..imagegc::engine::ContainerDetails::default()
        },
    );
    engine.vanish_container("c-gone");
    let no_disk: Arc<dyn DiskProbe> = Arc::new(FixedDisk::new(None));
    let needs = CollectNeeds {
        container_details: true,
        ..CollectNeeds::IMAGES_ONLY
    };
    let snap = collect_for(
        &engine,
        &no_disk,
        None,
        &mut DetailsCache::new(),
        &|_| Tracked::default(),
        needs,
        &rules,
    )
    .await
    .expect("collect");
    let details = |id: &str| {
        snap.containers
            .iter()
            .find(|c| c.container.id == id)
            .and_then(|c| c.details.clone())
    };
    assert_eq!(details("c-ci").and_then(|d| d.size_rw), Some(4096));
    assert_eq!(
        details("c-web").map(|d| d.size_rw),
        Some(None),
        "not selected: no size"
    );
    assert_eq!(
        details("c-run").map(|d| d.size_rw),
        Some(None),
        "running: no size"
    );
    assert_eq!(details("c-gone"), None, "vanished: unknown");
    assert_eq!(engine.calls.container_details.load(Ordering::Relaxed), 4);
    assert_eq!(
        engine.calls.container_details_sized.load(Ordering::Relaxed),
        2
    );

    // Without a [[containers]] table nothing is inspected.
    let before = engine.calls.container_details.load(Ordering::Relaxed);
    collect_for(
        &engine,
        &no_disk,
        None,
        &mut DetailsCache::new(),
        &|_| Tracked::default(),
        CollectNeeds::IMAGES_ONLY,
        &rules,
    )
    .await
    .expect("collect");
    assert_eq!(
        engine.calls.container_details.load(Ordering::Relaxed),
        before
    );

    engine.fail_everything(Some(EngineError::Other("inspect failed".to_owned())));
    assert!(collect_for(
        &engine,
        &no_disk,
        None,
        &mut DetailsCache::new(),
        &|_| Tracked::default(),
        needs,
        &rules,
    )
    .await
    .is_err());
}
