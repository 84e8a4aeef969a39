//! Absurd figures from the engine: sizes whose total does not fit in 64 bits
//! saturate instead of wrapping, and an image with an impossible time does
//! not fail the pass for every other image.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use imagegc::config;
use imagegc::fake::{self, FakeEngine};
use imagegc::metrics::Metrics;
use imagegc::pass::{self, Memory, Mode};
use imagegc::state::State;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("test timestamp")
}

const POLICY: &str = r#"
[state]
path = "/nonexistent/imagegc-test/state.json"
[safety]
min_age = "1h"
[[policy]]
name = "dangling"
dangling = true
older_than = "1h"
"#;

async fn pass_over(engine: &FakeEngine, mode: Mode) -> pass::Outcome {
    let policy = config::parse(POLICY, "test.toml").expect("valid policy");
    let mut memory = Memory::new(State::fresh(t("2026-01-01T00:00:00Z")));
    pass::run(
        engine,
        &policy,
        None,
        &mut memory,
        mode,
        t("2026-11-28T10:00:00Z"),
        &CancellationToken::new(),
    )
    .await
    .expect("the pass runs")
}

fn huge_images() -> FakeEngine {
    let engine = FakeEngine::new();
    for i in 0..3 {
        engine.add_image(fake::image(
            &format!("sha256:huge{i}"),
            &[],
            t("2026-10-01T00:00:00Z"),
            &[(&format!("sha256:layer{i}"), u64::MAX / 2)],
        ));
    }
    engine
}

#[tokio::test]
async fn totals_of_sizes_beyond_64_bits_saturate_instead_of_wrapping() {
    let engine = huge_images();
    let outcome = pass_over(&engine, Mode::Execute).await;

    assert_eq!(outcome.plan.removals.len(), 3);
    assert_eq!(outcome.snapshot.image_bytes(), u64::MAX);
    assert_eq!(outcome.plan.reclaim_bytes, u64::MAX);
    let report = outcome.report.as_ref().expect("executed");
    assert_eq!(report.removed.len(), 3);
    assert_eq!(report.reclaimed_bytes, u64::MAX);

    let metrics = Metrics::new();
    metrics.record_pass(
        imagegc::metrics::PassOutcome::Success,
        Some(report),
        std::time::Duration::from_secs(1),
        t("2026-11-28T10:00:01Z"),
    );
    // A second pass that frees as much again: the counter stays at the top.
    metrics.record_pass(
        imagegc::metrics::PassOutcome::Success,
        Some(report),
        std::time::Duration::from_secs(1),
        t("2026-11-28T10:00:02Z"),
    );
    let text = metrics.render();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("imagegc_reclaimed_bytes_total{kind=\"image\",policy=\"dangling\"}")
        })
        .expect("the counter is shown");
    let value: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    assert!(value >= 1.8e19, "saturated, not wrapped: {line}");
}

#[tokio::test]
async fn the_plan_of_sizes_beyond_64_bits_saturates_too() {
    let engine = huge_images();
    let outcome = pass_over(&engine, Mode::Plan).await;
    assert_eq!(outcome.plan.reclaim_bytes, u64::MAX);
    let metrics = Arc::new(Metrics::new());
    metrics.record_inventory(&outcome.snapshot, &outcome.plan);
    let text = metrics.render();
    let line = text
        .lines()
        .find(|l| l.starts_with("imagegc_image_bytes "))
        .expect("the gauge is shown");
    let value: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    // The largest a gauge holds (i64::MAX), not a wrapped small figure.
    assert!(value >= 9.2e18, "{line}");
}

#[tokio::test]
async fn images_created_at_the_ends_of_time_do_not_fail_the_pass() {
    let engine = FakeEngine::new();
    engine.add_image(fake::image(
        "sha256:future",
        &[],
        DateTime::<Utc>::MAX_UTC,
        &[("sha256:l1", 10)],
    ));
    engine.add_image(fake::image(
        "sha256:past",
        &[],
        DateTime::<Utc>::MIN_UTC,
        &[("sha256:l2", 10)],
    ));
    engine.add_image(fake::image(
        "sha256:old",
        &[],
        t("2026-10-01T00:00:00Z"),
        &[("sha256:l3", 10)],
    ));
    let outcome = pass_over(&engine, Mode::Execute).await;
    let removed: Vec<&str> = outcome
        .report
        .as_ref()
        .expect("executed")
        .removed
        .iter()
        .map(|r| r.image_id.as_str())
        .collect();
    assert!(removed.contains(&"sha256:old"), "{removed:?}");
    assert!(!removed.contains(&"sha256:future"), "{removed:?}");
}

/// A stand-in engine on a local TCP port: answers `/version`, `/info` (a
/// graph-driver Docker, read at connect time for the engine's flavor) and
/// `/images/json` (with `images` as the list), 404 to anything else.
async fn serve_images(images: serde_json::Value) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let address = format!("tcp://{}", listener.local_addr().expect("local address"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let images = images.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = if path.ends_with("/version") {
                    (
                        "200 OK",
                        serde_json::json!({"ApiVersion": "1.41", "Version": "20.10.24"}),
                    )
                } else if path.ends_with("/info") {
                    (
                        "200 OK",
                        serde_json::json!({"Driver": "overlay2", "DockerRootDir": "/var/lib/docker"}),
                    )
                } else if path.contains("/images/json") {
                    ("200 OK", images)
                } else {
                    (
                        "404 Not Found",
                        serde_json::json!({"message": "page not found"}),
                    )
                };
                let body = body.to_string();
                let reply = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    address
}

fn listed(id: &str, created: i64) -> serde_json::Value {
    serde_json::json!({
        "Id": id,
        "ParentId": "",
        "RepoTags": [],
        "RepoDigests": [],
        "Created": created,
        "Size": 10,
        "SharedSize": -1,
        "VirtualSize": 10,
        "Labels": {},
        "Containers": -1,
    })
}

#[tokio::test]
async fn an_image_the_engine_lists_with_an_impossible_created_time_is_left_out_alone() {
    use imagegc::engine::Engine;
    let address = serve_images(serde_json::json!([
        listed("sha256:good", 1_764_000_000),
        listed("sha256:absurd", i64::MAX),
        listed("sha256:also-good", 0),
    ]))
    .await;
    let engine = imagegc::docker::Docker::connect(&address)
        .await
        .expect("connect to the stand-in engine");
    let log = Log::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);

    let images = engine
        .list_images()
        .await
        .expect("one bad image does not fail the list");
    drop(guard);

    let ids: Vec<&str> = images.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, vec!["sha256:good", "sha256:also-good"]);
    let text = log.text();
    let line = text
        .lines()
        .find(|l| l.contains("sha256:absurd"))
        .unwrap_or_else(|| panic!("no line names the image: {text}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&i64::MAX.to_string()), "{line}");
}

/// Log lines written by a test's subscriber.
#[derive(Clone, Default)]
struct Log(Arc<std::sync::Mutex<Vec<u8>>>);

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
    }
}

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
