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

/// An invalid `IMAGEGC_ENGINE_TIMEOUT` is refused at start-up by every
/// command, with exit 2 and a message naming the variable and what it
/// accepts; `run` used to retry its failing connect for ever.
#[test]
fn an_invalid_engine_timeout_exits_2_for_every_command_naming_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = valid_policy(dir.path());
    let address = format!("unix://{}", dir.path().join("no-engine.sock").display());
    for value in ["abc", "0", "0s", "-5s"] {
        for command in ["run", "once", "plan", "explain", "check-config"] {
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
            let mut child = Command::new(env!("CARGO_BIN_EXE_imagegc"))
                .args(&args)
                .env("IMAGEGC_ENGINE_TIMEOUT", value)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start imagegc");
            let status = wait_for(&mut child, std::time::Duration::from_secs(15));
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
                .expect("read stderr");
            assert_eq!(status.code(), Some(2), "{command} with {value:?}: {err}");
            assert!(
                err.contains(&format!("IMAGEGC_ENGINE_TIMEOUT=\"{value}\""))
                    && err.contains("30s or 2m"),
                "{command} with {value:?}: names the variable and what is valid: {err}"
            );
        }
    }
    // A valid value is accepted.
    let out = Command::new(env!("CARGO_BIN_EXE_imagegc"))
        .args(["--config", policy.to_str().expect("utf-8"), "check-config"])
        .env("IMAGEGC_ENGINE_TIMEOUT", "30s")
        .stdin(Stdio::null())
        .output()
        .expect("run imagegc");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Waits up to `limit` for `child` to exit; kills it and fails otherwise.
fn wait_for(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("imagegc did not exit within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A policy that serves metrics on `port` and keeps its state in `dir`.
fn daemon_policy(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("daemon.toml");
    std::fs::write(
        &path,
        format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n[state]\npath = \"{}\"\n[[policy]]\nname = \"d\"\ndangling = true\nolder_than = \"1h\"\n",
            dir.join("state.json").display()
        ),
    )
    .expect("write policy");
    path
}

#[test]
fn a_metrics_port_in_use_exits_4_naming_the_address_not_1_for_a_bad_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("local addr").port();
    let policy = daemon_policy(dir.path(), port);
    let address = format!("unix://{}", dir.path().join("none.sock").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_imagegc"))
        .args([
            "--config",
            policy.to_str().expect("utf-8"),
            "--engine",
            &address,
            "run",
        ])
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start imagegc run");
    let status = wait_for(&mut child, std::time::Duration::from_secs(20));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    assert_eq!(status.code(), Some(4), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("already in use"), "{err}");
    drop(taken);
}

#[test]
fn check_config_without_a_file_checks_what_every_other_command_would_use() {
    let out = imagegc(&["check-config"]);
    let default = std::path::Path::new("/etc/imagegc/imagegc.toml");
    if default.exists() {
        // This host has a policy file: that is what gets checked.
        assert!(
            stdout(&out).contains("/etc/imagegc/imagegc.toml: ok")
                || stderr(&out).contains("/etc/imagegc/imagegc.toml"),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
    } else {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let said = stdout(&out);
        assert!(said.contains("built-in default policy"), "{said}");
        assert!(
            said.contains("/etc/imagegc/imagegc.toml does not exist"),
            "{said}"
        );
        assert!(said.contains("ok (1 policy)"), "{said}");
    }
    // --config still decides when given.
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = valid_policy(dir.path());
    let out = imagegc(&["--config", policy.to_str().expect("utf-8"), "check-config"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{}: ok (1 policy)", policy.display())),
        "{}",
        stdout(&out)
    );
}

#[test]
fn errors_are_json_log_lines_with_log_format_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[policy]]\nname = \"x\"\nolder_than = \"soon\"\n").expect("write");
    let good = valid_policy(dir.path());
    let engine = format!("unix://{}", dir.path().join("none.sock").display());
    for (args, code, needle) in [
        (
            vec![
                "--log-format",
                "json",
                "check-config",
                bad.to_str().expect("utf-8"),
            ],
            1,
            "3:14",
        ),
        (
            vec![
                "--log-format",
                "json",
                "--config",
                bad.to_str().expect("utf-8"),
                "plan",
            ],
            1,
            "3:14",
        ),
        (
            vec![
                "--log-format",
                "json",
                "--config",
                good.to_str().expect("utf-8"),
                "--engine",
                &engine,
                "plan",
            ],
            3,
            "none.sock",
        ),
    ] {
        let out = imagegc(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        let mut errors = 0;
        for line in err.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{args:?}: not a JSON line ({e}): {line}"));
            if v["level"] == "ERROR" {
                errors += 1;
                assert!(line.contains(needle), "{args:?}: {line}");
            }
        }
        assert_eq!(errors, 1, "{args:?}: one error line: {err}");
    }
}

/// stderr to a file whose device and inode go in `JOURNAL_STREAM`, as systemd
/// does for `StandardError=journal`; returns the exit status, stdout and the
/// lines written to stderr.
fn run_as_if_under_journald(
    dir: &std::path::Path,
    args: &[&str],
    matching: bool,
) -> (Option<i32>, String, Vec<String>) {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(format!("stderr-{}", rand_id()));
    let file = std::fs::File::create(&path).expect("create stderr file");
    let meta = file.metadata().expect("stat");
    let stream = if matching {
        format!("{}:{}", meta.dev(), meta.ino())
    } else {
        format!("{}:{}", meta.dev(), meta.ino() + 1)
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_imagegc"))
        .args(args)
        .env_remove("DOCKER_HOST")
        .env("JOURNAL_STREAM", stream)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start imagegc");
    let status = wait_for(&mut child, std::time::Duration::from_secs(60));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out)
        .expect("read stdout");
    let err = std::fs::read_to_string(&path).expect("read stderr");
    (status.code(), out, err.lines().map(String::from).collect())
}

fn rand_id() -> String {
    use rand::RngCore;
    format!("{:016x}", rand::rng().next_u64())
}

/// Under journald each line carries its level's sd-daemon prefix, so
/// `journalctl -p warning` finds warnings and errors. The dry run talks to
/// the real engine with a policy scoped to a label no image has; it removes
/// nothing and its state file cannot be written (a warning).
#[test]
fn under_journald_every_line_carries_the_priority_of_its_level() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = rand_id();
    let policy = dir.path().join("scoped.toml");
    // A state path under a regular file: no one, not even root, can write it.
    std::fs::write(dir.path().join("a-file"), "").expect("write a file");
    std::fs::write(
        &policy,
        format!(
            "[state]\npath = \"{}/a-file/state.json\"\n[[policy]]\nname = \"d\"\nlabels = [\"imagegc.test={id}\"]\ndangling = true\nolder_than = \"1h\"\n",
            dir.path().display()
        ),
    )
    .expect("write policy");
    // The engine the other tests use (DOCKER_HOST, else the local socket),
    // resolved as imagegc resolves it.
    let engine =
        imagegc::sources::EngineSpec::resolve(None, |k| std::env::var(k).ok(), None).address;
    let args = [
        "-v",
        "--config",
        policy.to_str().expect("utf-8"),
        "--engine",
        &engine,
        "once",
        "--dry-run",
    ];
    let (code, out, lines) = run_as_if_under_journald(dir.path(), &args, true);
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(out.contains("Dry run: nothing was removed"), "{out}");
    for line in &lines {
        assert!(
            ["<3>", "<4>", "<6>", "<7>"]
                .iter()
                .any(|p| line.starts_with(p)),
            "a line without a priority prefix: {line:?}"
        );
    }
    let has = |prefix: &str, text: &str| {
        lines
            .iter()
            .any(|l| l.starts_with(prefix) && l.contains(text))
    };
    assert!(has("<7>", "connected to the Docker Engine"), "{lines:#?}");
    assert!(has("<6>", "connected"), "{lines:#?}");
    assert!(has("<4>", "cannot write the state file"), "{lines:#?}");

    // An error printed outside tracing, and a multi-line one.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("local addr").port();
    let daemon = daemon_policy(dir.path(), port);
    let none = format!("unix://{}", dir.path().join("none.sock").display());
    let (code, _, lines) = run_as_if_under_journald(
        dir.path(),
        &[
            "--config",
            daemon.to_str().expect("utf-8"),
            "--engine",
            &none,
            "run",
        ],
        true,
    );
    assert_eq!(code, Some(4), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<3>imagegc: cannot serve metrics")),
        "{lines:#?}"
    );
    drop(taken);
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[safety]\nmin_agee = \"1h\"\n[[policy]]\nname = \"x\"\nolder_than = \"soon\"\n",
    )
    .expect("write");
    let (code, _, lines) = run_as_if_under_journald(
        dir.path(),
        &["check-config", bad.to_str().expect("utf-8")],
        true,
    );
    assert_eq!(code, Some(1));
    assert!(lines.len() >= 3, "{lines:#?}");
    assert!(lines.iter().all(|l| l.starts_with("<3>")), "{lines:#?}");

    // JOURNAL_STREAM inherited but stderr elsewhere: no prefixes.
    let (code, _, lines) = run_as_if_under_journald(
        dir.path(),
        &["check-config", bad.to_str().expect("utf-8")],
        false,
    );
    assert_eq!(code, Some(1));
    assert!(lines.iter().all(|l| !l.starts_with('<')), "{lines:#?}");
}
