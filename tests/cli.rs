//! The command line as an operator meets it: exit codes, messages, help.

use std::process::{Command, Output, Stdio};

fn imagegc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imagegc"))
        .args(args)
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .output()
        .expect("run imagegc")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A valid policy in a temp dir, so no test depends on /etc/imagegc.
fn valid_policy(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("ok.toml");
    std::fs::write(
        &path,
        format!(
            "[state]\npath = \"{}\"\n[[policy]]\nname = \"d\"\ndangling = true\nolder_than = \"1h\"\n",
            dir.join("state.json").display()
        ),
    )
    .expect("write policy");
    path
}

#[test]
fn an_unreachable_engine_exits_3_and_names_the_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = valid_policy(dir.path());
    let sock = dir.path().join("no-engine.sock");
    let address = format!("unix://{}", sock.display());
    for command in ["plan", "once", "explain"] {
        let mut args = vec![
            "--config",
            policy.to_str().expect("utf-8"),
            "--engine",
            &address,
            command,
        ];
        if command == "explain" {
            args.push("app:1");
        }
        let out = imagegc(&args);
        assert_eq!(out.status.code(), Some(3), "{command}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&address),
            "{command}: the message names the address: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_tcp_engine_that_does_not_answer_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = valid_policy(dir.path());
    let out = imagegc(&[
        "--config",
        policy.to_str().expect("utf-8"),
        "--engine",
        "tcp://127.0.0.1:1",
        "plan",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("tcp://127.0.0.1:1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_invalid_policy_exits_1_with_every_error_at_its_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[safety]\nmin_agee = \"1h\"\n[[policy]]\nname = \"x\"\nolder_than = \"soon\"\n",
    )
    .expect("write policy");
    for args in [
        vec!["check-config", path.to_str().expect("utf-8")],
        vec!["--config", path.to_str().expect("utf-8"), "plan"],
    ] {
        let out = imagegc(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("{}:2:1", path.display())), "{err}");
        assert!(err.contains("did you mean `min_age`"), "{err}");
        assert!(err.contains(&format!("{}:5:14", path.display())), "{err}");
        assert!(err.contains("2 errors"), "{err}");
    }
}

#[test]
fn check_config_accepts_the_shipped_default_and_says_so() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/imagegc.toml");
    let out = imagegc(&["check-config", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("ok (1 policy)"), "{}", stdout(&out));
}

#[test]
fn a_missing_policy_file_given_with_config_is_an_error_not_the_default() {
    let out = imagegc(&["--config", "/nonexistent/imagegc.toml", "plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/imagegc.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bad_command_line_exits_2() {
    for args in [
        vec!["frobnicate"],
        vec!["plan", "--output", "yaml"],
        vec!["--log-format", "xml", "plan"],
        vec![],
    ] {
        let out = imagegc(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn help_explains_every_command_and_option() {
    let out = imagegc(&["--help"]);
    assert!(out.status.success());
    // Help text wraps to the terminal: compare with whitespace folded.
    let help = stdout(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for word in [
        "run",
        "check-config",
        "plan",
        "once",
        "explain",
        "--config",
        "--engine",
        "DOCKER_HOST",
        "--log-format",
        "--verbose",
        "--quiet",
        "--version",
        "Exit codes",
        "/etc/imagegc/imagegc.toml",
        "built-in default",
    ] {
        assert!(
            help.contains(word),
            "--help does not mention {word}:\n{help}"
        );
    }
    let out = imagegc(&["once", "--help"]);
    assert!(stdout(&out).contains("--dry-run"));
    let out = imagegc(&["--version"]);
    assert!(stdout(&out).starts_with("imagegc "), "{}", stdout(&out));
}

/// `imagegc run` with no engine: it starts, says so on /healthz, keeps
/// retrying instead of exiting (no crash loop), and stops cleanly.
#[test]
fn the_daemon_without_an_engine_stays_up_reports_unhealthy_and_stops_on_sigterm() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n[state]\npath = \"{}\"\n[[policy]]\nname = \"d\"\ndangling = true\nolder_than = \"1h\"\n",
            dir.path().join("state.json").display()
        ),
    )
    .expect("write policy");
    let address = format!("unix://{}", dir.path().join("none.sock").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_imagegc"))
        .args([
            "--config",
            path.to_str().expect("utf-8"),
            "--engine",
            &address,
            "run",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start imagegc run");
    let get = |path: &str| -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        Some(buf)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        if let Some(h) = get("/healthz") {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "the metrics endpoint never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        health.starts_with("HTTP/1.0 503") || health.starts_with("HTTP/1.1 503"),
        "{health}"
    );
    assert!(
        health.contains("engine"),
        "the reason names the engine: {health}"
    );
    let metrics = get("/metrics").expect("metrics");
    assert!(metrics.contains("imagegc_engine_up 0"), "{metrics}");
    // Still running a few seconds later: it retries, it does not exit.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "imagegc run exited without an engine"
    );

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let stopped = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "did not stop within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    assert!(err.contains("engine unreachable; retrying"), "{err}");
    assert!(err.contains(&address), "{err}");
}
