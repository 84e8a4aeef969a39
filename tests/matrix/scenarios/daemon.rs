//! Scenario `daemon`: a use the engine reports as an event while `imagegc run` watches survives
//! a restart of the daemon.
//!
//! Two images of the same age (created 30 days ago) are loaded; daemon A runs (passes every
//! 2 s, a policy that removes nothing yet: `unused_for = "365d"`) while a container of `used` is
//! created, and until its state file records that use; the container is then removed (so that
//! after the restart no container tells of the use: only the state file does), and daemon A is
//! stopped with SIGTERM. Then, with `unused_for = 30s`, `plan` and a restarted daemon B must
//! remove `unused` (its last use is its created time, or on the containerd store its load, which
//! is more than 30 s ago by then) and keep `used` (used seconds ago, as only the state file
//! knows). A lost state would restart tracking and keep both: `unused` going shows the state
//! was read, `used` staying shows the use was in it.
//!
//! The engine's own events in the window are printed (stderr) so that an engine whose events
//! differ (Podman) can be checked against the adapter's mapping.

use std::fs::File;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use serde_json::{json, Value};

use super::Finding;
use crate::common::{free_port, http_get};
use crate::engine::MatrixEngine;
use crate::lab::{list, random_bytes, url_encode, wait_for, Lab, Spec};

/// `unused_for` of the second phase: shorter than the time since the images were loaded,
/// longer than the time since the use when daemon B decides.
const UNUSED_FOR: Duration = Duration::from_secs(30);

/// How long after the load the use is made: more than [`UNUSED_FOR`], so that on the
/// containerd store (whose load sets `LastTagTime`, a use) the unused image is stale by then.
const USE_AFTER_LOAD: Duration = Duration::from_secs(34);

/// `imagegc run` as a child; killed on drop if it is still running.
struct Daemon {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(lab: &Lab<'_>, policy: &str, name: &str, port: u16) -> Result<Daemon, String> {
        let log = lab.path(&format!("{name}.log"));
        let file = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let child = lab
            .engine
            .imagegc_command()
            .args(["--config", policy, "run"])
            .env("RUST_LOG", "imagegc=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("start imagegc run: {e}"))?;
        Ok(Daemon { child, port, log })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Successful passes so far (`imagegc_passes_total{outcome="success",…}` summed).
    fn passes(&self) -> Option<u64> {
        let (_, body) = http_get(self.port, "/metrics")?;
        let sum: f64 = body
            .lines()
            .filter(|l| l.starts_with("imagegc_passes_total{outcome=\"success\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        // Pass counts are small whole numbers.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(sum as u64)
    }

    fn wait_passes(&mut self, at_least: u64, timeout: Duration) -> Result<u64, String> {
        wait_for(&format!("{at_least} successful passes"), timeout, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the daemon exited ({status}); its log:\n{}",
                    self.log_text()
                ));
            }
            Ok(self.passes().filter(|n| *n >= at_least))
        })
        .map_err(|e| format!("{e}; the daemon's log:\n{}", self.log_text()))
    }

    /// SIGTERM; it must exit 0 within 15 s.
    fn terminate(mut self) -> Result<String, String> {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| format!("kill -TERM: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {pid}: {sent}"));
        }
        let status = wait_for(
            "the daemon to exit after SIGTERM",
            Duration::from_secs(15),
            || Ok(self.child.try_wait().ok().flatten()),
        )
        .map_err(|e| format!("{e}; its log:\n{}", self.log_text()))?;
        if !status.success() {
            return Err(format!(
                "the daemon exited {status} after SIGTERM; its log:\n{}",
                self.log_text()
            ));
        }
        Ok(self.log_text())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn policy(lab: &Lab<'_>, port: u16, unused_for: &str) -> String {
    format!(
        "schedule = \"*/2 * * * * *\"\nrun_on_start = true\n\
         [metrics]\nlisten = \"127.0.0.1:{port}\"\n\
         [state]\npath = \"{state}\"\n\
         [safety]\nmin_age = \"1s\"\n\
         [[policy]]\nname = \"stale\"\nlabels = [\"{label}\"]\nunused_for = \"{unused_for}\"\n",
        state = lab.path("state.json").display(),
        label = lab.label(),
    )
}

/// The state file's record of `image`, if it has one with a `last_used`.
fn recorded_use(lab: &Lab<'_>, image: &str) -> Option<Value> {
    let text = std::fs::read_to_string(lab.path("state.json")).ok()?;
    let state: Value = serde_json::from_str(&text).ok()?;
    let record = &state["images"][image];
    record["last_used"].is_string().then(|| record.clone())
}

/// The engine's events (container and image) between two instants, one line each.
fn events_between(engine: &MatrixEngine, since: i64, until: i64) -> String {
    let filters = url_encode(&json!({"type": ["container", "image"]}).to_string());
    match engine.request(
        "GET",
        &format!("/events?since={since}&until={until}&filters={filters}"),
        None,
        &[],
    ) {
        Ok((_, body)) => String::from_utf8_lossy(&body).into_owned(),
        Err(e) => format!("(GET /events failed: {e})"),
    }
}

#[allow(clippy::too_many_lines)]
pub fn run(engine: &MatrixEngine) -> Result<Finding, String> {
    let lab = Lab::new(engine)?;
    let old = Utc::now() - TimeDelta::days(30);
    let loaded = Instant::now();
    let window_start = Utc::now().timestamp() - 1;
    let load = |name: &str| {
        lab.load(&[Spec::new(name)
            .tag(lab.reference(name, "1"))
            .created(old)
            .layer(&[(&format!("{name}.bin"), &random_bytes(100_000), 0o644)])
            .cmd(&["/nonexistent"])])?;
        Ok::<_, String>(lab.image_id(name))
    };
    let used = load("used")?;
    let unused = load("unused")?;

    // Daemon A: watches, removes nothing.
    let port = free_port();
    let policy_a = lab.write("policy-a.toml", &policy(&lab, port, "365d"))?;
    let mut daemon = Daemon::start(&lab, &policy_a, "daemon-a", port)?;
    daemon.wait_passes(1, Duration::from_secs(60))?;
    if let Some(record) = recorded_use(&lab, &used) {
        return Err(format!(
            "the state file records a use of `used` before any was made: {record}"
        ));
    }
    std::thread::sleep(USE_AFTER_LOAD.saturating_sub(loaded.elapsed()));

    // The use: a container of `used` is created (never started: Podman cannot start any here).
    let use_made = Utc::now();
    let use_instant = Instant::now();
    let container =
        lab.create_named_container("user", &lab.reference("used", "1"), &["/nonexistent"])?;
    let record = wait_for(
        "the daemon's state file to record the use of `used`",
        Duration::from_secs(30),
        || Ok(recorded_use(&lab, &used)),
    );
    let events = events_between(engine, window_start, Utc::now().timestamp() + 1);
    let record = record.map_err(|e| {
        format!(
            "{e}\nengine events:\n{events}\nstate file: {}\ndaemon log:\n{}",
            std::fs::read_to_string(lab.path("state.json")).unwrap_or_default(),
            daemon.log_text()
        )
    })?;
    eprintln!(
        "[{}] recorded {:.1} s after the create: {record}",
        engine.name,
        use_instant.elapsed().as_secs_f64()
    );
    if let Some(at) = record["last_used"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        let lag = (use_made - at.with_timezone(&Utc)).num_milliseconds();
        if lag > 2000 {
            return Err(format!(
                "the recorded use ({at}) is older than the use made at {use_made}: {record}"
            ));
        }
    }
    // No container tells of the use after the restart: only the state file does.
    let (status, body) = engine.request(
        "DELETE",
        &format!("/containers/{container}?force=true"),
        None,
        &[],
    )?;
    if status != 204 {
        return Err(format!(
            "DELETE /containers/{container}: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    daemon.terminate()?;
    // The engine's events of the whole first phase, the container's removal included
    // (Podman says `remove` where Docker says `destroy`).
    eprintln!(
        "[{}] engine events up to the restart:\n{}",
        engine.name,
        events_between(engine, window_start, Utc::now().timestamp() + 1).trim_end()
    );
    if recorded_use(&lab, &used).is_none() {
        return Err("after SIGTERM the state file no longer records the use".to_owned());
    }

    // After the restart, with unused_for = 30 s.
    let port = free_port();
    let policy_b = lab.write(
        "policy-b.toml",
        &policy(&lab, port, &format!("{}s", UNUSED_FOR.as_secs())),
    )?;
    let plan = lab.imagegc_json(&policy_b, &["plan"])?;
    let planned: Vec<&str> = list(&plan, "removals")?
        .iter()
        .filter_map(|r| r["image_id"].as_str())
        .collect();
    let since_use = use_instant.elapsed();
    eprintln!(
        "[{}] plan {:.1} s after the use removes {planned:?}",
        engine.name,
        since_use.as_secs_f64()
    );
    if since_use + Duration::from_secs(2) >= UNUSED_FOR {
        return Err(format!(
            "too slow to conclude: the plan ran {since_use:?} after the use (unused_for {UNUSED_FOR:?})"
        ));
    }
    if planned != [unused.as_str()] {
        return Err(format!(
            "after the restart the plan must remove exactly `unused` ({unused}) and keep \
             `used` ({used}), used {since_use:?} ago: it removes {planned:?}\nplan: {plan:#}"
        ));
    }
    let mut daemon = Daemon::start(&lab, &policy_b, "daemon-b", port)?;
    let passes = daemon.wait_passes(1, Duration::from_secs(30))?;
    wait_for(
        "daemon B to remove `unused`",
        Duration::from_secs(10),
        || Ok((!lab.exists("images", &unused)?).then_some(())),
    )
    .map_err(|e| format!("{e}; daemon B's log:\n{}", daemon.log_text()))?;
    daemon.wait_passes(passes + 1, Duration::from_secs(10))?;
    let used_stays = lab.exists("images", &used)?;
    let since_use = use_instant.elapsed();
    if since_use >= UNUSED_FOR {
        return Err(format!(
            "too slow to conclude: daemon B's passes ended {since_use:?} after the use"
        ));
    }
    if !used_stays {
        return Err(format!(
            "daemon B removed `used`, used {since_use:?} ago (unused_for {UNUSED_FOR:?}); its log:\n{}",
            daemon.log_text()
        ));
    }
    daemon.terminate()?;
    eprintln!(
        "[{}] daemon B removed `unused` and kept `used` ({:.1} s after the use)",
        engine.name,
        since_use.as_secs_f64()
    );
    Ok(Finding::new("use survives restart"))
}
