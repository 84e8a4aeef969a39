//! The disk-pressure trigger with a fake engine, a `FixedDisk` and paused
//! tokio time: the daemon samples the disk every `[pressure] interval`,
//! starts a pass as soon as usage crosses a policy's `disk_high` (or inode
//! use its `inodes_high`) between scheduled passes, looks at once after an event that adds data, never
//! overlaps passes, and after a pressure pass that could not reach
//! `disk_low` waits `[pressure] cooldown` before the next; and the
//! `[pressure]` table's errors.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use imagegc::config;
use imagegc::daemon::{Daemon, PassRecord, TokioClock};
use imagegc::engine::{Capabilities, EngineEvent, Use};
use imagegc::fake::{self, FakeEngine};
use imagegc::host::disk::{DiskUsage, FixedDisk};
use imagegc::metrics::Metrics;
use imagegc::pass::{PassOutcome, Trigger};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("test timestamp")
}

const WALL: &str = "2026-11-28T10:00:00Z";

fn used(percent: u64) -> DiskUsage {
    DiskUsage {
        total_bytes: 100_000,
        used_bytes: percent * 1000,
        ..DiskUsage::default()
    }
}

fn policy(dir: &Path, pressure: &str) -> String {
    format!(
        r#"
schedule = "@yearly"
run_on_start = false
[state]
path = "{state}"
[pressure]
{pressure}
[safety]
min_age = "1h"
[[policy]]
name = "lab-pressure"
repositories = ["lab/*"]
disk_high = "85%"
disk_low = "70%"
"#,
        state = dir.join("state.json").display()
    )
}

/// An engine whose root dir is on this host, with `n` old lab images of
/// 10% of the disk each (so the plan's projection matches what the
/// `on_remove` hooks make the disk say).
fn engine(n: usize) -> Arc<FakeEngine> {
    let engine = FakeEngine::new();
    engine.set_capabilities(Capabilities {
        root_dir_on_host: true,
        ..Capabilities::DOCKER_20_10
    });
    for i in 0..n {
        engine.add_image(fake::image(
            &format!("sha256:{i:064}"),
            &[&format!("lab/app:{i}")],
            t("2026-01-01T00:00:00Z"),
            &[(&format!("sha256:layer{i:059}"), 10_000)],
        ));
    }
    Arc::new(engine)
}

struct Rig {
    passes: mpsc::UnboundedReceiver<PassRecord>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(engine: &Arc<FakeEngine>, disk: &Arc<FixedDisk>, text: &str, follow: bool) -> Rig {
    let policy = config::parse(text, "test.toml").expect("valid test policy");
    let metrics = Arc::new(Metrics::new());
    let (tx, passes) = mpsc::unbounded_channel();
    let mut daemon = Daemon::new(Arc::clone(engine), None, policy, Arc::clone(&metrics));
    daemon.clock = Arc::new(TokioClock::starting_at(t(WALL)));
    daemon.max_sleep = Duration::from_secs(3600);
    daemon.follow_events = follow;
    daemon.on_pass = Some(tx);
    daemon.disk = Arc::clone(disk) as _;
    let shutdown = CancellationToken::new();
    let (_controls, control_rx) = mpsc::unbounded_channel();
    // The control sender is dropped: no reloads in these tests.
    let task = tokio::spawn(daemon.run(control_rx, shutdown.clone()));
    Rig {
        passes,
        metrics,
        shutdown,
        task,
    }
}

impl Rig {
    async fn next_pass_within(&mut self, wait: Duration) -> Option<PassRecord> {
        tokio::time::timeout(wait, self.passes.recv())
            .await
            .ok()
            .flatten()
    }

    async fn stop(self) -> Arc<Metrics> {
        self.shutdown.cancel();
        self.task.await.expect("daemon task");
        self.metrics
    }
}

fn seconds_after_start(at: DateTime<Utc>) -> f64 {
    (at - t(WALL)).num_milliseconds() as f64 / 1000.0
}

#[tokio::test(start_paused = true)]
async fn a_disk_that_crosses_disk_high_between_scheduled_passes_starts_a_pressure_pass_within_one_interval(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(3);
    let disk = Arc::new(FixedDisk::new(Some(used(50))));
    let mut rig = start(
        &engine,
        &disk,
        &policy(dir.path(), r#"interval = "5s""#),
        false,
    );

    assert!(
        rig.next_pass_within(Duration::from_secs(60))
            .await
            .is_none(),
        "no pass while the disk is at 50% and the schedule is @yearly"
    );
    // Each removal frees 10% of the disk.
    let after = Arc::clone(&disk);
    engine.on_remove(move |n| after.set(Some(used(90 - 10 * n as u64))));
    disk.set(Some(used(90)));
    let crossed_at = 60.0;
    let pass = rig
        .next_pass_within(Duration::from_secs(60))
        .await
        .expect("a pressure pass");
    let metrics = rig.stop().await;

    assert_eq!(pass.trigger, Trigger::Pressure);
    assert_eq!(pass.outcome, PassOutcome::Success);
    let started = seconds_after_start(pass.started) - crossed_at;
    assert!(
        (0.0..=5.0).contains(&started),
        "started {started} s after the disk crossed disk_high; the interval is 5 s"
    );
    // 90% → 80% → 70%: two removals reach disk_low.
    assert_eq!(pass.removed, 2, "removed until disk_low, LRU first");
    let m = metrics.render();
    assert!(
        m.contains(r#"imagegc_passes_total{outcome="success",trigger="pressure"} 1"#),
        "{m}"
    );
    assert!(
        m.contains("imagegc_pressure_reaction_seconds_count 1"),
        "{m}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_sampler_looks_every_interval_and_not_more_often() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(1);
    let disk = Arc::new(FixedDisk::new(Some(used(50))));
    let mut rig = start(
        &engine,
        &disk,
        &policy(dir.path(), r#"interval = "10s""#),
        false,
    );
    // Cross at 61 s: the looks are at 0, 10, …, 60, 70 s, so the pass starts
    // at the 70 s look, not before.
    tokio::time::sleep(Duration::from_secs(61)).await;
    disk.set(Some(used(95)));
    let pass = rig
        .next_pass_within(Duration::from_secs(60))
        .await
        .expect("a pressure pass");
    rig.stop().await;
    let at = seconds_after_start(pass.started);
    assert!(
        (69.0..=71.0).contains(&at),
        "pass at {at} s, expected at the 70 s look"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pressure_pass_that_cannot_reach_disk_low_is_not_repeated_before_the_cooldown() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing to remove: the disk stays full whatever the passes do.
    let engine = engine(0);
    let disk = Arc::new(FixedDisk::new(Some(used(95))));
    let mut rig = start(
        &engine,
        &disk,
        &policy(dir.path(), "interval = \"5s\"\ncooldown = \"2m\""),
        false,
    );
    let mut starts = Vec::new();
    while let Some(pass) = rig.next_pass_within(Duration::from_secs(400)).await {
        assert!(triggers_by_pressure(pass.trigger), "{:?}", pass.trigger);
        starts.push(seconds_after_start(pass.started));
        if starts.len() == 3 {
            break;
        }
    }
    rig.stop().await;
    assert_eq!(starts.len(), 3, "passes at {starts:?}");
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (120.0..=126.0).contains(&gap),
            "pressure passes at {starts:?}: {gap} s apart, the cooldown is 2 min and the interval 5 s"
        );
    }
}

/// `policy` with inode watermarks instead of disk ones.
fn inode_policy(dir: &Path, pressure: &str) -> String {
    policy(dir, pressure).replace(
        "disk_high = \"85%\"\ndisk_low = \"70%\"",
        "inodes_high = \"90%\"\ninodes_low = \"80%\"",
    )
}

/// Bytes at `percent`% of the disk, inodes at `inode_percent`%.
fn with_inodes(percent: u64, inode_percent: u64) -> DiskUsage {
    used(percent).with_inodes(1000, 1000 - 10 * inode_percent)
}

#[tokio::test(start_paused = true)]
async fn inodes_that_cross_inodes_high_start_a_pressure_pass_though_the_bytes_are_far_below_any_mark(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(3);
    let disk = Arc::new(FixedDisk::new(Some(with_inodes(50, 50))));
    let mut rig = start(
        &engine,
        &disk,
        &inode_policy(dir.path(), r#"interval = "5s""#),
        false,
    );
    assert!(
        rig.next_pass_within(Duration::from_secs(60))
            .await
            .is_none(),
        "no pass while inodes are at 50%"
    );
    // Each removal frees 10% of the disk's bytes, 20% of the 50% used: the
    // estimate and the disk agree (95% → 76%) after one removal.
    let after = Arc::clone(&disk);
    engine.on_remove(move |n| after.set(Some(with_inodes(50 - 10 * n as u64, 76))));
    disk.set(Some(with_inodes(50, 95)));
    let crossed_at = 60.0;
    let pass = rig
        .next_pass_within(Duration::from_secs(60))
        .await
        .expect("a pressure pass");
    let metrics = rig.stop().await;

    assert_eq!(pass.trigger, Trigger::Pressure);
    assert_eq!(pass.outcome, PassOutcome::Success);
    let started = seconds_after_start(pass.started) - crossed_at;
    assert!(
        (0.0..=5.0).contains(&started),
        "started {started} s after inodes crossed inodes_high; the interval is 5 s"
    );
    assert_eq!(pass.removed, 1, "removed until the estimated inodes_low");
    let m = metrics.render();
    assert!(
        m.contains(r#"imagegc_passes_total{outcome="success",trigger="pressure"} 1"#),
        "{m}"
    );
    assert!(
        m.contains("imagegc_pressure_reaction_seconds_count 1"),
        "{m}"
    );
}

#[tokio::test(start_paused = true)]
async fn when_the_inode_estimate_falls_short_the_next_pass_waits_for_the_cooldown_then_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(4);
    let disk = Arc::new(FixedDisk::new(Some(with_inodes(50, 95))));
    // The images held few of the inodes: removing them frees bytes, but
    // inodes stay at 95%, above inodes_low, whatever the estimate said.
    let after = Arc::clone(&disk);
    engine.on_remove(move |n| after.set(Some(with_inodes(50 - 10 * n as u64, 95))));
    let mut rig = start(
        &engine,
        &disk,
        &inode_policy(dir.path(), "interval = \"5s\"\ncooldown = \"2m\""),
        false,
    );
    let first = rig
        .next_pass_within(Duration::from_secs(30))
        .await
        .expect("a first pressure pass");
    let second = rig
        .next_pass_within(Duration::from_secs(400))
        .await
        .expect("a second pressure pass after the cooldown");
    rig.stop().await;
    assert_eq!(first.removed, 1, "the estimate said one removal was enough");
    assert!(second.removed >= 1, "the next pass removes more");
    let gap = seconds_after_start(second.started) - seconds_after_start(first.started);
    assert!(
        (120.0..=126.0).contains(&gap),
        "{gap} s between the passes; the cooldown is 2 min and the interval 5 s"
    );
}

fn triggers_by_pressure(trigger: Trigger) -> bool {
    matches!(trigger, Trigger::Pressure | Trigger::Event)
}

#[tokio::test(start_paused = true)]
async fn a_pressure_pass_that_reaches_disk_low_leaves_the_next_crossing_free_to_start_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(4);
    let disk = Arc::new(FixedDisk::new(Some(used(90))));
    let low = Arc::clone(&disk);
    // Each pass's first removal takes the disk to 80%, its second to 70%.
    engine.on_remove(move |n| low.set(Some(used(90 - 10 * ((n as u64 - 1) % 2 + 1)))));
    let mut rig = start(
        &engine,
        &disk,
        &policy(dir.path(), "interval = \"5s\"\ncooldown = \"1h\""),
        false,
    );
    let first = rig
        .next_pass_within(Duration::from_secs(30))
        .await
        .expect("the first pressure pass");
    // 90% → 80% → 70%: disk_low reached. The disk fills again a minute
    // later: no cooldown holds it back.
    tokio::time::sleep(Duration::from_secs(60)).await;
    disk.set(Some(used(90)));
    let second = rig
        .next_pass_within(Duration::from_secs(30))
        .await
        .expect("a second pressure pass");
    rig.stop().await;
    assert_eq!((first.trigger, first.removed), (Trigger::Pressure, 2));
    assert_eq!((second.trigger, second.removed), (Trigger::Pressure, 2));
}

#[tokio::test(start_paused = true)]
async fn samples_during_a_long_pressure_pass_never_start_an_overlapping_or_a_queued_second_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(3);
    // Each removal takes 30 s (six intervals) and frees 10%.
    engine.set_remove_delay(Duration::from_secs(30));
    let disk = Arc::new(FixedDisk::new(Some(used(90))));
    let after = Arc::clone(&disk);
    engine.on_remove(move |n| after.set(Some(used(90 - 10 * n as u64))));
    let mut rig = start(
        &engine,
        &disk,
        &policy(dir.path(), r#"interval = "5s""#),
        false,
    );
    let first = rig
        .next_pass_within(Duration::from_secs(120))
        .await
        .expect("a pressure pass");
    let second = rig.next_pass_within(Duration::from_secs(600)).await;
    rig.stop().await;
    assert_eq!((first.trigger, first.removed), (Trigger::Pressure, 2));
    assert!(
        second.is_none(),
        "the disk is at disk_low after the first pass; a second started: {second:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_event_that_adds_data_makes_the_sampler_look_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(2);
    let disk = Arc::new(FixedDisk::new(Some(used(50))));
    // An hour between periodic looks: only the event can explain a pass.
    let mut rig = start(
        &engine,
        &disk,
        &policy(dir.path(), r#"interval = "1h""#),
        true,
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    disk.set(Some(used(95)));
    engine.push_event(EngineEvent {
        time: Utc::now(),
        what: Use::ImageLoaded {
            image: "lab/app:1".into(),
        },
    });
    let pass = rig
        .next_pass_within(Duration::from_secs(120))
        .await
        .expect("a pass the event's look started");
    rig.stop().await;
    assert_eq!(pass.trigger, Trigger::Event);
    assert!(seconds_after_start(pass.started) < 60.0);
}

#[tokio::test(start_paused = true)]
async fn a_policy_without_percentage_watermarks_is_never_sampled_into_a_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(2);
    let disk = Arc::new(FixedDisk::new(Some(used(99))));
    let text = policy(dir.path(), r#"interval = "1s""#).replace(
        "disk_high = \"85%\"\ndisk_low = \"70%\"",
        "older_than = \"1d\"",
    );
    let mut rig = start(&engine, &disk, &text, false);
    let pass = rig.next_pass_within(Duration::from_secs(120)).await;
    rig.stop().await;
    assert!(pass.is_none(), "{pass:?}");
}

fn errors_of(text: &str) -> String {
    config::parse(text, "test.toml")
        .expect_err("the file is refused")
        .to_string()
}

const MINIMAL: &str = "[[policy]]\nname = \"d\"\ndangling = true\nolder_than = \"1h\"\n";

#[test]
fn pressure_settings_default_to_five_seconds_and_one_minute() {
    let policy = config::parse(MINIMAL, "test.toml").expect("valid");
    assert_eq!(policy.pressure.interval, Duration::from_secs(5));
    assert_eq!(policy.pressure.cooldown, Duration::from_secs(60));
    let set = config::parse(
        &format!("[pressure]\ninterval = \"1s\"\ncooldown = \"0s\"\n{MINIMAL}"),
        "test.toml",
    )
    .expect("valid");
    assert_eq!(set.pressure.interval, Duration::from_secs(1));
    assert_eq!(set.pressure.cooldown, Duration::ZERO);
}

#[test]
fn a_zero_interval_is_refused_with_its_line_and_column() {
    let said = errors_of(&format!("[pressure]\ninterval = \"0s\"\n{MINIMAL}"));
    assert!(said.contains("test.toml:2:12"), "{said}");
    assert!(said.contains("pressure.interval"), "{said}");
    assert!(said.contains("longer than zero"), "{said}");
}

#[test]
fn a_misspelt_pressure_key_gets_a_did_you_mean() {
    let said = errors_of(&format!("[pressure]\nintervall = \"5s\"\n{MINIMAL}"));
    assert!(said.contains("test.toml:2:1"), "{said}");
    assert!(said.contains("did you mean `interval`?"), "{said}");
}

#[test]
fn a_cooldown_that_is_not_a_duration_says_what_would_be() {
    let said = errors_of(&format!("[pressure]\ncooldown = 60\n{MINIMAL}"));
    assert!(said.contains("pressure.cooldown"), "{said}");
    assert!(said.contains("a duration string"), "{said}");
}
