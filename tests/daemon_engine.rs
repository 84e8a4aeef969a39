//! `imagegc run` as a subprocess against the real engine: it removes on
//! schedule, its metrics report the engine's own bytes, engine events make an
//! image's last use fresh, SIGHUP reloads, and SIGTERM stops it cleanly.

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    docker, engine_lock, free_port, http_get, image_exists, imagegc_command, layers_size, wait_for,
    DaemonProcess, ImageSpec, Lab,
};

/// Sum of a metric's samples whose line starts with `prefix`.
fn metric_sum(text: &str, prefix: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

fn policy(lab: &Lab, port: u16, state: &Path, with_stale: bool) -> String {
    let mut text = format!(
        r#"
schedule = "*/2 * * * * *"
run_on_start = true
[metrics]
listen = "127.0.0.1:{port}"
[state]
path = "{state}"
[safety]
min_age = "1h"
[[policy]]
name = "dangling"
{sel}
dangling = true
older_than = "1h"
"#,
        state = state.display(),
        sel = lab.selector(),
    );
    if with_stale {
        let _ = write!(
            text,
            r#"
[[policy]]
name = "stale"
{sel}
repositories = ["{repo}"]
unused_for = "7d"
"#,
            sel = lab.selector(),
            repo = lab.repo("stale"),
        );
    }
    text
}

#[test]
#[allow(clippy::too_many_lines)]
fn daemon_reclaims_on_schedule_and_reports_the_engines_bytes_and_tracks_use_from_events() {
    let _lock = engine_lock();
    let lab = Lab::new();
    let port = free_port();
    let state = lab.state_path();

    let dangling: Vec<_> = (0..3)
        .map(|i| {
            lab.load_image(
                &ImageSpec::new()
                    .days_old(10 + i)
                    .layer_bytes(100_000 + 1000 * i as usize),
            )
        })
        .collect();
    let used = lab.load_image(
        &ImageSpec::new()
            .tag(lab.reference("stale", "used"))
            .days_old(30)
            .layer_bytes(50_000),
    );
    let unused = lab.load_image(
        &ImageSpec::new()
            .tag(lab.reference("stale", "unused"))
            .days_old(30)
            .layer_bytes(60_000),
    );

    let config = lab.write_policy(&policy(&lab, port, &state, false));
    let before = layers_size();
    let child = imagegc_command()
        .args(["--config", config.to_str().expect("utf-8"), "run"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start imagegc run");
    let mut daemon = DaemonProcess(child);

    // The dangling images go, and the metrics say how many bytes that freed.
    let reclaimed = wait_for(
        "imagegc_reclaimed_bytes_total to cover the dangling images",
        Duration::from_secs(60),
        || {
            let (_, body) = http_get(port, "/metrics")?;
            let v = metric_sum(
                &body,
                "imagegc_reclaimed_bytes_total{kind=\"image\",policy=\"dangling\"}",
            )?;
            (v > 0.0 && dangling.iter().all(|d| !image_exists(&d.id))).then_some(v)
        },
    );
    let after = layers_size();
    assert_eq!(
        reclaimed as u64,
        before - after,
        "metric = drop in the engine's LayersSize"
    );

    let (status, body) = http_get(port, "/healthz").expect("healthz answers");
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = http_get(port, "/metrics").expect("metrics");
    for name in [
        "imagegc_passes_total{outcome=\"success\",trigger=\"start\"}",
        "imagegc_engine_up 1",
        "imagegc_images{state=\"in_use\"}",
        "imagegc_image_bytes",
        "imagegc_last_success_timestamp_seconds",
        "imagegc_build_info{version=",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }

    // A container of `used` comes and goes while the daemon watches.
    let container = lab.exited_container(&used.id);
    let out = docker(&["rm", &container]);
    assert!(
        out.status.success(),
        "docker rm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the state file to record the container's use",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&state).ok()?;
            let json: serde_json::Value = serde_json::from_str(&text).ok()?;
            json["images"][&used.id]["last_used"]
                .as_str()
                .map(ToString::to_string)
        },
    );

    // Now a stale policy: `unused` goes, `used` was used minutes ago and stays.
    std::fs::write(&config, policy(&lab, port, &state, true)).expect("rewrite policy");
    let pid = daemon.0.id().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    wait_for(
        "the stale policy to remove `unused`",
        Duration::from_secs(60),
        || (!image_exists(&unused.id)).then_some(()),
    );
    let (_, metrics) = http_get(port, "/metrics").expect("metrics");
    assert!(
        metrics.contains("imagegc_config_reloads_total{outcome=\"success\"} 1"),
        "{metrics}"
    );
    // Two more passes, and `used` is still there.
    let passes =
        |m: &str| metric_sum(m, "imagegc_passes_total{outcome=\"success\",").unwrap_or(0.0);
    let now = passes(&metrics);
    wait_for("two more passes", Duration::from_secs(30), || {
        let (_, m) = http_get(port, "/metrics")?;
        (passes(&m) >= now + 2.0).then_some(())
    });
    assert!(
        image_exists(&used.id),
        "an image used minutes ago survives unused_for 7d"
    );

    let (_, metrics) = http_get(port, "/metrics").expect("metrics");
    let total = metric_sum(&metrics, "imagegc_reclaimed_bytes_total{").expect("reclaimed total");
    assert_eq!(
        total as u64,
        before - layers_size(),
        "all reclaimed bytes = drop in LayersSize"
    );

    // SIGTERM: exit 0 well within 10 s, state on disk.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let started = Instant::now();
    let status = wait_for("the daemon to exit", Duration::from_secs(10), || {
        daemon.0.try_wait().ok().flatten()
    });
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let text = std::fs::read_to_string(&state).expect("state file");
    let _: serde_json::Value = serde_json::from_str(&text).expect("state file parses");
}
