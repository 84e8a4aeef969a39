//! The shipped systemd unit: systemd itself accepts it, its sandbox keeps the
//! exposure score at 2.0 or lower, and its paths agree with the daemon's
//! defaults.
//!
//! Needs `systemd-analyze` (Debian's `systemd` package; it works without
//! systemd running). `.ci/run` installs it; without it these tests fail and
//! say so rather than pass without checking anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The highest exposure `systemd-analyze security` may give the unit.
const MAX_EXPOSURE: f64 = 2.0;

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/imagegc.service")
}

fn unit_text() -> String {
    let path = unit_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Runs `systemd-analyze` with `args`, or fails the test with how to get it.
fn systemd_analyze(args: &[&std::ffi::OsStr]) -> Output {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "systemd-analyze is not installed, so the systemd unit cannot be checked. \
             Install Debian's `systemd` package (`apt-get install systemd`; it works \
             without systemd running); .ci/run does this"
        ),
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    }
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The values of `key=` in the unit, in order (comments skipped).
fn values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

#[track_caller]
fn value(text: &str, key: &str) -> String {
    match values(text, key).as_slice() {
        [v] => v.clone(),
        other => panic!("expected one {key}= in the unit, found {other:?}"),
    }
}

#[test]
fn systemd_accepts_the_unit_without_a_warning() {
    // `verify` checks that ExecStart= names an executable: point it at the
    // binary cargo built for this test instead of /usr/bin/imagegc.
    let text = unit_text();
    let exec_start = value(&text, "ExecStart");
    let args = exec_start
        .strip_prefix("/usr/bin/imagegc ")
        .unwrap_or_else(|| panic!("ExecStart runs /usr/bin/imagegc: {exec_start}"));
    let local = text.replace(
        &format!("ExecStart={exec_start}"),
        &format!("ExecStart={} {args}", env!("CARGO_BIN_EXE_imagegc")),
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    // The file name is the unit name systemd reports.
    let path = dir.path().join("imagegc.service");
    std::fs::write(&path, local).expect("write the unit copy");

    let out = systemd_analyze(&["verify".as_ref(), path.as_os_str()]);
    let said = said(&out);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify ({}):\n{said}",
        out.status
    );
}

#[test]
fn the_sandbox_keeps_the_exposure_score_at_two_or_lower() {
    let path = unit_path();
    let out = systemd_analyze(&[
        "security".as_ref(),
        "--offline=true".as_ref(),
        "--no-pager".as_ref(),
        path.as_os_str(),
    ]);
    let said = said(&out);
    let line = said
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{said}"));
    // "→ Overall exposure level for imagegc.service: 1.0 OK 🙂"
    let score: f64 = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} is above {MAX_EXPOSURE}:\n{said}"
    );
}

#[test]
fn the_unit_runs_the_daemon_with_the_paths_it_expects() {
    let text = unit_text();
    assert_eq!(value(&text, "Type"), "notify");
    assert_eq!(
        value(&text, "ExecStart"),
        format!(
            "/usr/bin/imagegc run --config {}",
            imagegc::config::DEFAULT_CONFIG_PATH
        )
    );
    assert_eq!(value(&text, "ExecReload"), "/bin/kill -HUP $MAINPID");

    // The config and state directories systemd makes are the daemon's defaults.
    let config_dir = value(&text, "ConfigurationDirectory");
    assert!(
        Path::new(imagegc::config::DEFAULT_CONFIG_PATH).parent()
            == Some(Path::new("/etc").join(&config_dir).as_path()),
        "the policy file lives in /etc/{config_dir}"
    );
    let state_dir = value(&text, "StateDirectory");
    assert!(
        Path::new(imagegc::config::DEFAULT_STATE_PATH).parent()
            == Some(Path::new("/var/lib").join(&state_dir).as_path()),
        "the state file lives in /var/lib/{state_dir}, the only writable place"
    );

    // The metrics listener must be inside what IPAddressAllow= lets through.
    assert!(imagegc::config::DEFAULT_LISTEN.ip().is_loopback());
    assert_eq!(value(&text, "IPAddressAllow"), "localhost");

    // The daemon stops within 10 s of SIGTERM; systemd waits longer than that.
    let stop: u64 = value(&text, "TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(stop > 10, "TimeoutStopSec={stop}");
    assert_eq!(value(&text, "SupplementaryGroups"), "docker");
}
