//! `imagegc run` speaks the `sd_notify` protocol as systemd expects:
//! `READY=1` once it listens, `STATUS=` with the last pass, `WATCHDOG=1` at
//! half of `WATCHDOG_USEC`, `STOPPING=1` on SIGTERM — over a real
//! `NOTIFY_SOCKET`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get, DaemonProcess, Lab};

/// Datagrams received until `until` returns true or `timeout` passes.
fn collect(
    sock: &UnixDatagram,
    timeout: Duration,
    until: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !until(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned());
        }
    }
    got
}

#[test]
fn the_daemon_notifies_ready_status_watchdog_and_stopping() {
    let lab = Lab::new();
    let port = free_port();
    let sock_path = lab.dir().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let policy = lab.write_policy(&format!(
        r#"
schedule = "0 0 1 1 *"
run_on_start = true
[metrics]
listen = "127.0.0.1:{port}"
[state]
path = "{state}"
[[policy]]
name = "dangling"
{sel}
dangling = true
older_than = "1h"
"#,
        state = lab.state_path().display(),
        sel = lab.selector(),
    ));
    // systemd sets WATCHDOG_PID to the service's PID: `exec` keeps the shell's.
    let child = Command::new("sh")
        .args([
            "-c",
            r#"WATCHDOG_PID=$$ exec "$0" --config "$1" run"#,
            env!("CARGO_BIN_EXE_imagegc"),
            policy.to_str().expect("utf-8"),
        ])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start imagegc run");
    let mut daemon = DaemonProcess(child);

    let got = collect(&sock, Duration::from_secs(30), |g| {
        g.iter().any(|m| m.starts_with("STATUS=last pass"))
            && g.iter().filter(|m| m.as_str() == "WATCHDOG=1").count() >= 2
    });
    let ready = got
        .iter()
        .position(|m| m == "READY=1")
        .unwrap_or_else(|| panic!("no READY=1: {got:?}"));
    // READY comes once the metrics endpoint listens.
    assert!(
        http_get(port, "/healthz").is_some(),
        "metrics listen after READY"
    );
    let status = got
        .iter()
        .find(|m| m.starts_with("STATUS=last pass"))
        .unwrap_or_else(|| panic!("no STATUS with the last pass: {got:?}"));
    assert!(
        status.contains("removed 0 references, freed 0 B"),
        "{status}"
    );
    let pings = got.iter().filter(|m| m.as_str() == "WATCHDOG=1").count();
    assert!(pings >= 2, "WATCHDOG=1 at half of WATCHDOG_USEC: {got:?}");
    assert!(ready < got.len());

    let pid = daemon.0.id().to_string();
    let term = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let got = collect(&sock, Duration::from_secs(10), |g| {
        g.iter().any(|m| m == "STOPPING=1")
    });
    assert!(got.iter().any(|m| m == "STOPPING=1"), "{got:?}");
    let status = common::wait_for("the daemon to exit", Duration::from_secs(10), || {
        daemon.0.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status}");
}
