//! Whole passes of the imagegc binary on a private Docker Engine with a `BuildKit` build cache
//! the test makes itself (raw `POST /build?version=2`, `FROM scratch` and `FROM` a loaded base):
//! an images-only pass, a cache-only pass and a pass doing both each free what the plan
//! predicted, what the pass reports, and what leaves the engine's data root on disk, within 1%
//! plus 64 KiB of filesystem metadata; builds count as use; a build running during a cache pass
//! finishes and its in-use records are kept.
//!
//! Build cache is global to an engine, so everything here runs on a private dockerd
//! (`common::private_engine`), never on the shared engine. The tests skip, saying why, only when
//! dockerd or fuse-overlayfs is missing (`.ci/run` installs them).
//!
//! JSON read here (`imagegc plan --output json` / `imagegc once --output json`): `removals`
//! (`image_id`, `reference`, `reclaim_bytes`), `records` beside it (`record_id`, `policy`,
//! `reclaim_bytes`), `kept_records` (`record_id`, `reason`), the plan's `reclaim_bytes` (images
//! and records together, in plan order) and the pass's `reclaimed_bytes` (the same, for what it
//! removed).

mod common;

use std::collections::BTreeSet;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use serde_json::Value;

use common::private_engine::{fill_binary, nap_binary, PrivateEngine};

const MB: usize = 1_000_000;

/// Filesystem metadata a pass may free or keep beyond the bytes it predicts.
const METADATA_SLACK: u64 = 64 * 1024;

/// A private engine and a directory for the policy and state files, or `None` (said on stderr)
/// when this machine cannot start one.
struct Scene {
    engine: PrivateEngine,
    dir: tempfile::TempDir,
}

impl Scene {
    fn start(test: &str) -> Option<Scene> {
        if let Some(why) = PrivateEngine::missing() {
            eprintln!("SKIPPED {test}: no private Docker Engine can start here: {why}");
            return None;
        }
        Some(Scene {
            engine: PrivateEngine::start(),
            dir: tempfile::tempdir().expect("a temporary directory"),
        })
    }

    /// Writes the policy file: `[state]` in the scene's directory, `min_age = "1s"`, then
    /// `tables`.
    fn policy(&self, tables: &str) -> String {
        let path = self.dir.path().join("policy.toml");
        let text = format!(
            "[state]\npath = \"{}\"\n[safety]\nmin_age = \"1s\"\n{tables}",
            self.dir.path().join("state.json").display()
        );
        std::fs::write(&path, text).expect("write the policy file");
        path.to_str().expect("a UTF-8 path").to_owned()
    }

    /// `imagegc --config POLICY --engine <private> ARGS… --output json`, as JSON.
    fn imagegc(&self, policy: &str, args: &[&str]) -> Value {
        let out: Output = common::imagegc_command()
            .args(["--config", policy, "--engine", &self.engine.address()])
            .args(args)
            .args(["--output", "json"])
            .env("DOCKER_HOST", self.engine.address())
            .stdin(Stdio::null())
            .output()
            .expect("run the imagegc binary");
        assert!(
            out.status.success(),
            "imagegc {args:?} failed: {}\nstdout: {}\nstderr: {}\ndockerd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.engine.log_text()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "imagegc {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Plans, then runs one pass, measuring the data root around the pass. Returns the plan,
    /// the pass, and the bytes that left the data root.
    fn plan_then_once(&self, policy: &str) -> (Value, Value, u64) {
        let plan = self.imagegc(policy, &["plan"]);
        let before = self.engine.data_root_bytes();
        let pass = self.imagegc(policy, &["once"]);
        // Let dockerd finish deleting what it answered for.
        std::thread::sleep(Duration::from_millis(500));
        let after = self.engine.data_root_bytes();
        (plan, pass, before.saturating_sub(after))
    }

    fn image_exists(&self, reference: &str) -> bool {
        matches!(
            self.engine
                .request("GET", &format!("/images/{reference}/json"), None, &[]),
            Ok((200, _))
        )
    }

    fn record_ids(&self) -> BTreeSet<String> {
        self.engine
            .records()
            .iter()
            .filter_map(|r| r["ID"].as_str().map(str::to_owned))
            .collect()
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    // Random data: the layer store keeps files as they are, so any bytes do; random ones keep
    // two builds' files apart.
    let mut data = vec![0u8; n];
    let mut x: u64 = rand_seed();
    for b in &mut data {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    data
}

fn rand_seed() -> u64 {
    let hex = common::random_hex(8);
    u64::from_str_radix(&hex, 16).unwrap_or(0x9e37_79b9_7f4a_7c15) | 1
}

fn as_u64(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not a byte count: {v}"))
}

fn list<'a>(doc: &'a Value, key: &str) -> &'a [Value] {
    doc[key]
        .as_array()
        .map_or_else(|| panic!("no {key:?} list in {doc:#}"), Vec::as_slice)
}

/// References (or image IDs for untagged removals) a plan removes.
fn removed_targets(plan: &Value) -> BTreeSet<String> {
    list(plan, "removals")
        .iter()
        .map(|r| {
            r["reference"]
                .as_str()
                .or_else(|| r["image_id"].as_str())
                .expect("reference or image_id")
                .to_owned()
        })
        .collect()
}

fn planned_records(plan: &Value) -> BTreeSet<String> {
    list(plan, "records")
        .iter()
        .map(|r| r["record_id"].as_str().expect("record_id").to_owned())
        .collect()
}

/// The plan's prediction equals the pass's report, and both equal the drop of the data root
/// within 1% plus the metadata slack.
fn assert_bytes_agree(plan: &Value, pass: &Value, disk_drop: u64) {
    let predicted = as_u64(&plan["reclaim_bytes"]);
    let reported = as_u64(&pass["reclaimed_bytes"]);
    assert_eq!(
        predicted, reported,
        "predicted {predicted} B, the pass reported {reported} B\nplan: {plan:#}\npass: {pass:#}"
    );
    let slack = predicted / 100 + METADATA_SLACK;
    eprintln!("predicted {predicted} B, reported {reported} B, data root dropped {disk_drop} B");
    assert!(
        disk_drop.abs_diff(predicted) <= slack,
        "predicted {predicted} B, the data root dropped {disk_drop} B (allowed ±{slack})\n\
         plan: {plan:#}\npass: {pass:#}"
    );
}

/// `FROM <base>` + `COPY big.bin`, tagged.
fn build_on(engine: &PrivateEngine, tag: &str, base: &str, bytes: usize) -> String {
    let dockerfile = format!("FROM {base}\nCOPY big.bin /big.bin\n");
    engine.build(
        tag,
        &[
            ("Dockerfile", dockerfile.as_bytes()),
            ("big.bin", &random_bytes(bytes)),
        ],
    )
}

/// `FROM scratch` + `COPY fill` + a `RUN --mount=type=cache` writing `bytes` into the cache
/// mount: an `exec.cachemount` record of that size.
fn build_cache_mount(engine: &PrivateEngine, tag: &str, bytes: usize) -> String {
    let dockerfile = format!(
        "FROM scratch\nCOPY fill /fill\n\
         RUN --mount=type=cache,target=/cache [\"/fill\", \"/cache/data\", \"{bytes}\"]\n"
    );
    engine.build(
        tag,
        &[
            ("Dockerfile", dockerfile.as_bytes()),
            ("fill", fill_binary()),
        ],
    )
}

fn days_ago(days: i64) -> chrono::DateTime<Utc> {
    Utc::now() - TimeDelta::days(days)
}

#[test]
fn an_images_only_pass_of_loaded_images_frees_on_disk_what_it_predicts() {
    let Some(scene) =
        Scene::start("an_images_only_pass_of_loaded_images_frees_on_disk_what_it_predicts")
    else {
        return;
    };
    let e = &scene.engine;
    e.load(
        "old:1",
        days_ago(30),
        &[random_bytes(8 * MB), random_bytes(2 * MB)],
    );
    e.load("base:1", days_ago(30), &[random_bytes(2 * MB)]);
    build_on(e, "app:1", "base:1", 4 * MB);
    std::thread::sleep(Duration::from_secs(2));

    let policy =
        scene.policy("[[policy]]\nname = \"old\"\nrepositories = [\"old\"]\nolder_than = \"7d\"\n");
    let (plan, pass, drop) = scene.plan_then_once(&policy);
    assert_eq!(
        removed_targets(&plan),
        BTreeSet::from(["old:1".to_owned()]),
        "{plan:#}"
    );
    assert!(as_u64(&plan["reclaim_bytes"]) >= 10 * MB as u64, "{plan:#}");
    assert_bytes_agree(&plan, &pass, drop);
    assert!(!scene.image_exists("old:1"));
    assert!(scene.image_exists("base:1") && scene.image_exists("app:1"));
}

#[test]
fn builds_count_as_use_and_built_images_free_nothing_while_their_records_hold_the_layers() {
    let Some(scene) = Scene::start(
        "builds_count_as_use_and_built_images_free_nothing_while_their_records_hold_the_layers",
    ) else {
        return;
    };
    let e = &scene.engine;
    e.load("base:1", days_ago(30), &[random_bytes(2 * MB)]);
    e.load("nobody:1", days_ago(30), &[random_bytes(8 * MB)]);
    for n in 1..=3 {
        build_on(e, &format!("app:{n}"), "base:1", 3 * MB);
        std::thread::sleep(Duration::from_millis(1100));
    }
    std::thread::sleep(Duration::from_secs(1));

    let policy = scene.policy(
        "[[policy]]\nname = \"unused\"\nunused_for = \"7d\"\n\
         [[policy]]\nname = \"keep-last\"\nrepositories = [\"app\"]\nkeep_most_recent = 1\n",
    );
    let (plan, pass, drop) = scene.plan_then_once(&policy);
    // The base every build used survives `unused_for`; the old one nobody built from goes; the
    // older builds go by keep_most_recent.
    assert_eq!(
        removed_targets(&plan),
        BTreeSet::from([
            "nobody:1".to_owned(),
            "app:1".to_owned(),
            "app:2".to_owned()
        ]),
        "{plan:#}"
    );
    for removal in list(&plan, "removals") {
        if removal["reference"] != "nobody:1" {
            // Its COPY layer is held by its build-cache record: removing the image frees
            // nothing until the record goes.
            assert_eq!(removal["reclaim_bytes"], 0, "{removal}");
        }
    }
    assert_bytes_agree(&plan, &pass, drop);
    assert!(scene.image_exists("base:1"), "a base builds use is kept");
    assert!(scene.image_exists("app:3"));
}

#[test]
fn a_cache_only_pass_frees_on_disk_what_it_predicts() {
    let Some(scene) = Scene::start("a_cache_only_pass_frees_on_disk_what_it_predicts") else {
        return;
    };
    let e = &scene.engine;
    e.load("base:1", days_ago(30), &[random_bytes(2 * MB)]);
    build_on(e, "app:1", "base:1", 20 * MB);
    build_cache_mount(e, "cm:1", 5 * MB);
    // The first read of the build cache after a cache mount is made moves
    // that record's LastUsedAt to the read (BuildKit sizes it then, and
    // counts that as a use; later reads do not): read first, then let the
    // records age past unused_for.
    let before: Vec<Value> = e.records();
    std::thread::sleep(Duration::from_secs(3));
    let non_shared: BTreeSet<String> = before
        .iter()
        .filter(|r| r["Shared"] == false)
        .filter_map(|r| r["ID"].as_str().map(str::to_owned))
        .collect();
    assert!(
        before.iter().any(|r| r["Type"] == "exec.cachemount"),
        "a cache-mount record: {before:#?}"
    );

    let policy = scene.policy("[[build_cache]]\nname = \"build-cache\"\nunused_for = \"2s\"\n");
    let (plan, pass, drop) = scene.plan_then_once(&policy);
    assert!(
        list(&plan, "removals").is_empty(),
        "no image policy: {plan:#}"
    );
    let planned = planned_records(&plan);
    assert!(
        non_shared.is_subset(&planned),
        "every unused non-shared record is planned: {non_shared:?} not within {planned:?}\n\
         records before: {before:#?}\nplan: {plan:#}"
    );
    for record in list(&plan, "records") {
        assert!(
            !record["policy"].as_str().unwrap_or("").is_empty(),
            "{record}"
        );
        assert!(record["reclaim_bytes"].is_u64(), "{record}");
    }
    // The non-shared records' sizes, nothing for the shared ones while their images stay.
    assert!(as_u64(&plan["reclaim_bytes"]) >= 45 * MB as u64, "{plan:#}");
    assert_bytes_agree(&plan, &pass, drop);
    let left = scene.record_ids();
    assert!(non_shared.is_disjoint(&left), "removed: {left:?}");
    for image in ["base:1", "app:1", "cm:1"] {
        assert!(
            scene.image_exists(image),
            "{image} stays: a cache pass removes no image"
        );
    }
}

#[test]
fn a_pass_removing_images_and_records_frees_on_disk_what_it_predicts() {
    let Some(scene) =
        Scene::start("a_pass_removing_images_and_records_frees_on_disk_what_it_predicts")
    else {
        return;
    };
    let e = &scene.engine;
    e.load("base:1", days_ago(30), &[random_bytes(2 * MB)]);
    e.load("old:1", days_ago(30), &[random_bytes(6 * MB)]);
    build_on(e, "app:1", "base:1", 8 * MB);
    std::thread::sleep(Duration::from_millis(1100));
    build_on(e, "app:2", "base:1", 8 * MB);
    std::thread::sleep(Duration::from_secs(3));

    let policy = scene.policy(
        "[[policy]]\nname = \"keep-last\"\nrepositories = [\"app\"]\nkeep_most_recent = 1\n\
         [[policy]]\nname = \"old\"\nrepositories = [\"old\"]\nolder_than = \"7d\"\n\
         [[build_cache]]\nname = \"build-cache\"\nunused_for = \"2s\"\n",
    );
    let (plan, pass, drop) = scene.plan_then_once(&policy);
    assert_eq!(
        removed_targets(&plan),
        BTreeSet::from(["app:1".to_owned(), "old:1".to_owned()]),
        "{plan:#}"
    );
    assert!(!planned_records(&plan).is_empty(), "{plan:#}");
    // old:1 (6 MB), app:1's own layer once its record goes too (8 MB), the two builds'
    // contexts and context copies (4 × 8 MB).
    assert!(as_u64(&plan["reclaim_bytes"]) >= 46 * MB as u64, "{plan:#}");
    assert_bytes_agree(&plan, &pass, drop);
    assert!(!scene.image_exists("app:1") && !scene.image_exists("old:1"));
    assert!(scene.image_exists("app:2") && scene.image_exists("base:1"));
}

#[test]
fn a_build_running_during_a_cache_pass_finishes_and_its_in_use_records_are_kept() {
    let Some(scene) = Scene::start(
        "a_build_running_during_a_cache_pass_finishes_and_its_in_use_records_are_kept",
    ) else {
        return;
    };
    let e = &scene.engine;
    build_on(e, "done:1", "scratch", MB);
    std::thread::scope(|s| {
        let running = s.spawn(|| {
            e.build(
                "running:1",
                &[
                    (
                        "Dockerfile",
                        b"FROM scratch\nCOPY nap /nap\nRUN [\"/nap\", \"20\"]\n",
                    ),
                    ("nap", nap_binary()),
                ],
            )
        });
        // Wait until the build's `RUN` step holds records.
        let deadline = Instant::now() + Duration::from_secs(60);
        let in_use = loop {
            let ids: BTreeSet<String> = e
                .records()
                .iter()
                .filter(|r| r["InUse"] == true)
                .filter_map(|r| r["ID"].as_str().map(str::to_owned))
                .collect();
            if !ids.is_empty() {
                break ids;
            }
            assert!(Instant::now() < deadline, "the build never held a record");
            std::thread::sleep(Duration::from_millis(200));
        };
        // Older than min_age, still in use.
        std::thread::sleep(Duration::from_secs(2));
        let policy = scene.policy("[[build_cache]]\nname = \"everything\"\nunused_for = \"1s\"\n");
        let pass = scene.imagegc(&policy, &["once"]);
        let still_in_use: BTreeSet<String> = e
            .records()
            .iter()
            .filter(|r| r["InUse"] == true)
            .filter_map(|r| r["ID"].as_str().map(str::to_owned))
            .collect();
        let held_throughout: BTreeSet<&String> = in_use.intersection(&still_in_use).collect();
        let planned = planned_records(&pass);
        assert!(
            held_throughout.iter().all(|id| !planned.contains(*id)),
            "in-use records were planned: {held_throughout:?} within {planned:?}"
        );
        let kept_in_use = list(&pass, "kept_records")
            .iter()
            .filter(|k| k["reason"].as_str().unwrap_or("").contains("in use"))
            .count();
        assert!(kept_in_use > 0, "in-use records kept, saying why: {pass:#}");
        assert!(
            !planned.is_empty(),
            "the finished build's records are removed: {pass:#}"
        );
        let image = running.join().expect("the running build finishes");
        assert!(image.starts_with("sha256:"), "{image}");
    });
    assert!(scene.image_exists("running:1"));
}
