//! Image facts kept in the state file (issue 11, part 3): a process that
//! starts from a state file a pass wrote (`once` from cron, a restarted
//! daemon, a `plan` after a `once`) makes no inspect call for an image the
//! file knows, reads again an image whose references changed or that a tag
//! event named, and `plan` writes nothing. Counted with the fake engine's
//! call counters; each "process" is a fresh `Memory` loaded from the file.

mod support;

use std::sync::atomic::Ordering;

use imagegc::engine::Engine;
use imagegc::fake::{self, FakeEngine, FakeImage};
use imagegc::pass::{self, Memory, Mode, Outcome};
use imagegc::policy::Policy;
use imagegc::state::State;
use support::{ago, now, policy, rule, secs, DAY, HOUR};
use tokio_util::sync::CancellationToken;

fn image(id: &str, tags: &[&str], layers: &[(&str, u64)]) -> FakeImage {
    fake::image(id, tags, ago(30 * DAY), layers)
}

/// Four images sharing a base layer, one dangling; the fake reports a last
/// tag time for `app:1`.
fn engine_with(app_tags: &[&str]) -> FakeEngine {
    let engine = FakeEngine::new();
    engine.add_image(image(
        "sha256:base",
        &["base:1"],
        &[("sha256:d-base", 1000)],
    ));
    engine.add_image(image(
        "sha256:app",
        app_tags,
        &[("sha256:d-base", 1000), ("sha256:d-app", 200)],
    ));
    engine.add_image(image("sha256:tool", &["tool:1"], &[("sha256:d-tool", 70)]));
    engine.add_image(image("sha256:old", &[], &[("sha256:d-old", 50)]));
    engine.set_last_tag_time("sha256:app", ago(2 * DAY));
    engine
}

/// Keeps everything but the dangling image, which it removes.
fn dangling_policy() -> Policy {
    policy(vec![rule("dangling")
        .dangling(true)
        .older_than(secs(HOUR))
        .build()])
}

async fn pass_of<E: Engine>(engine: &E, memory: &mut Memory, mode: Mode) -> Outcome {
    pass::run(
        engine,
        &dangling_policy(),
        None,
        memory,
        mode,
        now(),
        &CancellationToken::new(),
    )
    .await
    .expect("the fake engine answers")
}

fn inspects(engine: &FakeEngine) -> usize {
    engine.calls.image_details.load(Ordering::Relaxed)
}

/// A `once` in a new process: load the file, run, save, as `app.rs` does.
async fn once(engine: &FakeEngine, path: &std::path::Path) -> Outcome {
    let mut memory = Memory::new(State::load_or_fresh(path, now()));
    let outcome = pass_of(engine, &mut memory, Mode::Execute).await;
    memory.state.save(path).expect("save the state");
    outcome
}

#[tokio::test]
async fn a_once_after_a_once_makes_no_inspect_call_for_images_it_already_knows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let engine = engine_with(&["app:1"]);

    let first = once(&engine, &path).await;
    assert_eq!(inspects(&engine), 4, "a cold run reads every image");
    assert_eq!(engine.removals(), vec!["sha256:old"]);

    let second = once(&engine, &path).await;
    assert_eq!(inspects(&engine), 4, "the state file knew all three left");
    assert_eq!(second.snapshot.images.len(), 3);
    assert_eq!(
        second.snapshot.image_bytes(),
        first.snapshot.image_bytes() - 50,
        "facts from the file size the layers as inspect did"
    );
    let app = &second.snapshot.images[second.snapshot.by_id["sha256:app"]];
    assert_eq!(app.last_tag_time, Some(ago(2 * DAY)));
    assert!(app.sizes_exact);
}

#[tokio::test]
async fn a_plan_after_a_once_reads_the_facts_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let engine = engine_with(&["app:1"]);
    once(&engine, &path).await;
    let before = std::fs::read(&path).expect("state file");
    engine.add_image(image("sha256:new", &["new:1"], &[("sha256:d-new", 5)]));
    let calls = inspects(&engine);

    let mut memory = Memory::new(State::peek(&path, now()));
    let plan = pass_of(&engine, &mut memory, Mode::Plan).await;

    assert_eq!(inspects(&engine), calls + 1, "only the new image is read");
    assert_eq!(plan.snapshot.images.len(), 4);
    assert_eq!(std::fs::read(&path).expect("state file"), before);
}

#[tokio::test]
async fn a_restarted_daemon_inspects_only_what_changed_since_its_last_save() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let engine = engine_with(&["app:1"]);
    // The daemon: one memory across passes, saved after each.
    let mut memory = Memory::new(State::load_or_fresh(&path, now()));
    pass_of(&engine, &mut memory, Mode::DryRun).await;
    pass_of(&engine, &mut memory, Mode::DryRun).await;
    memory.state.save(&path).expect("save");
    assert_eq!(inspects(&engine), 4);
    drop(memory);

    let mut restarted = Memory::new(State::load_or_fresh(&path, now()));
    assert_eq!(restarted.cache.len(), 4, "the cache starts from the file");
    pass_of(&engine, &mut restarted, Mode::DryRun).await;
    assert_eq!(inspects(&engine), 4);
}

#[tokio::test]
async fn an_image_whose_references_changed_is_read_again_for_its_last_tag_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    once(&engine_with(&["app:1"]), &path).await;

    // `docker tag app:1 app:2` between two cron runs: a new reference, a
    // new last tag time.
    let retagged = engine_with(&["app:1", "app:2"]);
    retagged.force_remove_image("sha256:old"); // the first run removed it
    retagged.set_last_tag_time("sha256:app", ago(HOUR));
    let outcome = once(&retagged, &path).await;

    assert_eq!(inspects(&retagged), 1, "only the retagged image");
    let app = &outcome.snapshot.images[outcome.snapshot.by_id["sha256:app"]];
    assert_eq!(app.last_tag_time, Some(ago(HOUR)));
}

#[tokio::test]
async fn a_tag_event_makes_the_next_pass_read_the_image_again() {
    let engine = engine_with(&["app:1"]);
    let mut memory = Memory::new(State::fresh(ago(DAY)));
    pass_of(&engine, &mut memory, Mode::DryRun).await;
    assert_eq!(inspects(&engine), 4);

    // The same reference put on the same image again (a rebuild that made
    // an identical image): the references are unchanged, the event says it.
    engine.set_last_tag_time("sha256:app", ago(HOUR));
    memory.state.touch("sha256:app", ago(HOUR), "tag");
    let outcome = pass_of(&engine, &mut memory, Mode::DryRun).await;

    assert_eq!(inspects(&engine), 5);
    let app = &outcome.snapshot.images[outcome.snapshot.by_id["sha256:app"]];
    assert_eq!(app.last_tag_time, Some(ago(HOUR)));
    pass_of(&engine, &mut memory, Mode::DryRun).await;
    assert_eq!(inspects(&engine), 5, "read once, then known again");
}

#[tokio::test]
async fn facts_of_images_gone_are_not_kept_in_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let engine = engine_with(&["app:1"]);
    once(&engine, &path).await;
    let text = std::fs::read_to_string(&path).expect("state file");
    let file: serde_json::Value = serde_json::from_str(&text).expect("json");
    let mut ids: Vec<&str> = file["facts"]
        .as_object()
        .expect("a facts table")
        .keys()
        .map(String::as_str)
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["sha256:app", "sha256:base", "sha256:tool"]);
}

#[tokio::test]
async fn a_facts_entry_that_does_not_parse_costs_one_inspect_not_the_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let engine = engine_with(&["app:1"]);
    once(&engine, &path).await;
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    file["facts"]["sha256:tool"] = serde_json::json!({"layers": "not a list"});
    file["facts"]["sha256:base"]["refs"] = serde_json::json!("not hex");
    std::fs::write(&path, serde_json::to_vec(&file).expect("json")).expect("write");
    let tracked_since = State::peek(&path, now()).tracking_since;

    let outcome = once(&engine, &path).await;

    assert_eq!(
        inspects(&engine),
        4 + 2,
        "the two bad entries are read again"
    );
    assert_eq!(outcome.snapshot.images.len(), 3);
    let after = State::peek(&path, now());
    assert_eq!(after.tracking_since, tracked_since, "the state was kept");
    assert_eq!(after.facts.len(), 3, "and the entries written good again");
    assert!(dir.path().read_dir().expect("dir").all(|e| !e
        .expect("entry")
        .file_name()
        .to_string_lossy()
        .contains("corrupt")));
}

#[tokio::test]
async fn snapshot_order_is_the_list_order_whatever_order_inspects_finish_in() {
    let engine = FakeEngine::new();
    let ids: Vec<String> = (0..40)
        .map(|i| {
            engine.add_image(image(
                &format!("sha256:{i:02}"),
                &[],
                &[(&format!("sha256:d-{i}"), 1)],
            ))
        })
        .collect();
    let mut memory = Memory::new(State::fresh(ago(DAY)));
    let outcome = pass_of(&engine, &mut memory, Mode::Plan).await;
    let got: Vec<&str> = outcome
        .snapshot
        .images
        .iter()
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
}
