//! The shipped systemd unit: systemd itself accepts it, also on a host that has
//! nothing but the binary and a POSIX shell (a minbase Debian has no procps, so
//! no /bin/kill), its reload command delivers SIGHUP within the sandbox's
//! system-call filter, the Prometheus drop-in the README documents is the
//! shipped one and systemd accepts it with the unit, its sandbox keeps the
//! exposure score at 2.0 or lower, and its paths agree with the daemon's
//! defaults.
//!
//! Needs `systemd-analyze` (Debian's `systemd` package; it works without
//! systemd running). `.ci/run` installs it; without it these tests fail and
//! say so rather than pass without checking anything.

use std::collections::BTreeSet;
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

/// The `ExecReload=` line that signals the daemon (the last one; the first
/// checks the policy file).
fn reload_signal_line(text: &str) -> String {
    values(text, "ExecReload")
        .pop()
        .expect("the unit has an ExecReload=")
}

/// The `ExecReload=` check of the policy file, with /usr/bin/imagegc replaced
/// by the binary cargo built and the policy path by `policy`.
fn reload_check_command(text: &str, policy: &Path) -> Command {
    let line = values(text, "ExecReload")
        .into_iter()
        .next()
        .expect("the unit has an ExecReload=");
    let words = command_words(&line);
    let (program, args) = words.split_first().expect("ExecReload= names a program");
    assert_eq!(program, "/usr/bin/imagegc", "{line}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_imagegc"));
    for arg in args {
        if arg == imagegc::config::DEFAULT_CONFIG_PATH {
            command.arg(policy);
        } else {
            command.arg(arg);
        }
    }
    command
}

#[test]
fn a_reload_of_a_policy_the_daemon_would_reject_fails_before_any_signal_is_sent() {
    // systemd runs the ExecReload= lines in order and stops at the first that
    // fails, so `systemctl reload` fails, and the signal is never sent.
    let text = unit_text();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let policy = dir.path().join("imagegc.toml");
    std::fs::write(&policy, "[[policy]]\nname = \"x\"\nolder_than = \"soon\"\n")
        .expect("write a broken policy");
    let out = reload_check_command(&text, &policy)
        .output()
        .expect("run the reload check");
    assert!(!out.status.success(), "a broken policy passed: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("older_than"), "{stderr}");

    std::fs::write(
        &policy,
        "[[policy]]\nname = \"x\"\ndangling = true\nolder_than = \"1d\"\n",
    )
    .expect("write a good policy");
    let out = reload_check_command(&text, &policy)
        .output()
        .expect("run the reload check");
    assert!(out.status.success(), "a good policy failed: {out:?}");
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
    let local = text
        .replace(
            &format!("ExecStart={exec_start}"),
            &format!("ExecStart={} {args}", env!("CARGO_BIN_EXE_imagegc")),
        )
        .replace(
            "ExecReload=/usr/bin/imagegc ",
            &format!("ExecReload={} ", env!("CARGO_BIN_EXE_imagegc")),
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
    assert_eq!(
        values(&text, "ExecReload"),
        [
            format!(
                "/usr/bin/imagegc check-config {}",
                imagegc::config::DEFAULT_CONFIG_PATH
            ),
            "/bin/sh -c 'kill -HUP $MAINPID'".to_owned(),
        ]
    );

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

// ---------------------------------------------------------------------------
// A minimal root: what a minbase host has that the unit may rely on.
// ---------------------------------------------------------------------------

/// The drop-in for a remote Prometheus, as shipped.
const DROP_IN: &str = "systemd/examples/prometheus.conf";

/// Where an operator installs it (the first line of the file says so too).
const DROP_IN_TARGET: &str = "/etc/systemd/system/imagegc.service.d/prometheus.conf";

/// A root directory with the unit, the binary at /usr/bin/imagegc, the host's
/// `.target` units (every service's default dependencies) and /bin/sh: nothing
/// else. `systemd-analyze --root=DIR verify` then fails for any command the unit
/// runs that a minbase system lacks, as /bin/kill (procps) did.
fn minimal_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("a temporary directory");
    let r = root.path();
    let units = r.join("usr/lib/systemd/system");
    let bin = r.join("usr/bin");
    for dir in [&units, &bin, &r.join("etc/systemd/system")] {
        std::fs::create_dir_all(dir).expect("make the root's directories");
    }
    // Merged /usr, as on Debian 12.
    std::os::unix::fs::symlink("usr/bin", r.join("bin")).expect("link /bin");
    std::fs::write(units.join("imagegc.service"), unit_text()).expect("install the unit");
    let binary = bin.join("imagegc");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_imagegc"), &binary).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_imagegc"), &binary).expect("install the binary");
    }
    std::fs::copy("/bin/sh", bin.join("sh")).expect("install /bin/sh (a POSIX shell)");
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .find(|d| Path::new(d).join("multi-user.target").exists())
        .unwrap_or_else(|| {
            panic!("no multi-user.target on this host: install Debian's `systemd` package")
        });
    for entry in std::fs::read_dir(host_units).expect("read the host's units") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "target") && path.is_file() {
            let name = path.file_name().expect("a file name");
            std::fs::copy(&path, units.join(name)).expect("copy a target unit");
        }
    }
    root
}

/// `systemd-analyze --root=ROOT verify imagegc.service`: success, and what it said.
fn verify_in(root: &Path) -> (bool, String) {
    let root_arg = format!("--root={}", root.display());
    let out = systemd_analyze(&[
        root_arg.as_ref(),
        "verify".as_ref(),
        "imagegc.service".as_ref(),
    ]);
    (out.status.success(), said(&out))
}

#[test]
fn the_unit_needs_nothing_but_its_binary_and_a_posix_shell() {
    let root = minimal_root();
    let (ok, said) = verify_in(root.path());
    assert!(
        ok && said.trim().is_empty(),
        "on a host with only /usr/bin/imagegc and /bin/sh, systemd-analyze verify says:\n{said}"
    );
}

/// Splits a unit command line into words: whitespace separates, single and
/// double quotes group (all this unit uses of systemd's syntax).
fn command_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "unbalanced quotes in {line:?}");
    if in_word {
        words.push(word);
    }
    words
}

#[test]
fn the_reload_command_sends_sighup_to_the_main_process_with_no_program_but_the_shell() {
    // A stand-in main process that exits 42 on SIGHUP.
    let mut main = Command::new("/bin/sh")
        .args(["-c", "trap 'exit 42' HUP; while :; do sleep 0.1; done"])
        .spawn()
        .expect("start the stand-in main process");
    std::thread::sleep(std::time::Duration::from_millis(300)); // let it set the trap
    let pid = main.id().to_string();

    // As systemd runs ExecReload=: $MAINPID (a word of its own) and ${MAINPID}
    // substituted, MAINPID in the environment, and here no PATH at all, so
    // only the shell's built-ins can help.
    let text = unit_text();
    let line = reload_signal_line(&text);
    let words: Vec<String> = command_words(&line)
        .into_iter()
        .map(|w| {
            if w == "$MAINPID" {
                pid.clone()
            } else {
                w.replace("${MAINPID}", &pid)
            }
        })
        .collect();
    let (program, args) = words.split_first().expect("ExecReload= names a program");
    let status = Command::new(program)
        .args(args)
        .env_clear()
        .env("MAINPID", &pid)
        .status()
        .unwrap_or_else(|e| panic!("cannot run ExecReload={line}: {e}"));
    assert!(status.success(), "ExecReload={line}: {status}");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = main.try_wait().expect("wait for the stand-in") {
            break exit;
        }
        if std::time::Instant::now() > deadline {
            let _ = main.kill();
            panic!("ExecReload={line} did not deliver SIGHUP within 10 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        exit.code(),
        Some(42),
        "the stand-in ended otherwise: {exit}"
    );
}

/// The system calls a `SystemCallFilter=` group allows, groups expanded.
fn syscalls(group: &str) -> BTreeSet<String> {
    let out = systemd_analyze(&["syscall-filter".as_ref(), group.as_ref()]);
    assert!(
        out.status.success(),
        "syscall-filter {group}: {}",
        said(&out)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut calls = BTreeSet::new();
    for word in text
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if word.starts_with('@') {
            calls.extend(syscalls(word));
        } else {
            calls.insert(word.to_string());
        }
    }
    calls
}

#[test]
fn the_system_call_filter_lets_the_reload_command_signal_the_daemon() {
    let text = unit_text();
    let mut allowed = BTreeSet::new();
    let mut denied = BTreeSet::new();
    for filter in values(&text, "SystemCallFilter") {
        let (set, groups) = match filter.strip_prefix('~') {
            Some(rest) => (&mut denied, rest.to_string()),
            None => (&mut allowed, filter.clone()),
        };
        for group in groups.split_whitespace() {
            if group.starts_with('@') {
                set.extend(syscalls(group));
            } else {
                set.insert(group.to_string());
            }
        }
    }
    // What `sh -c 'kill -HUP $MAINPID'` needs: start the shell, send the signal.
    for call in ["execve", "kill", "rt_sigprocmask", "exit_group"] {
        assert!(
            allowed.contains(call) && !denied.contains(call),
            "SystemCallFilter= refuses {call}, which ExecReload= needs"
        );
    }
}

/// The `ini` code block of README.md that starts with the drop-in's path.
fn readme_drop_in() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("read README.md");
    let first = format!("# {DROP_IN_TARGET}");
    let mut blocks = readme.split("```ini\n").skip(1);
    let block = blocks
        .find(|b| b.starts_with(&first))
        .unwrap_or_else(|| panic!("README.md has no ```ini block starting with {first:?}"));
    let (body, _) = block
        .split_once("```")
        .expect("the README's ini block is closed");
    body.to_string()
}

#[test]
fn the_readme_documents_the_shipped_prometheus_drop_in_and_systemd_accepts_it_with_the_unit() {
    let shipped_path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DROP_IN);
    let shipped = std::fs::read_to_string(&shipped_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", shipped_path.display()));
    let documented = readme_drop_in();
    assert_eq!(
        documented, shipped,
        "the drop-in in README.md differs from {DROP_IN}; keep them the same"
    );
    let allow = value(&shipped, "IPAddressAllow");
    assert!(
        allow
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| !ip.is_loopback()),
        "the example opens the port to one remote address: IPAddressAllow={allow}"
    );

    let root = minimal_root();
    let install = |text: &str| {
        let target = root.path().join(DROP_IN_TARGET.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("a parent")).expect("make the .d dir");
        std::fs::write(target, text).expect("install the drop-in");
    };
    install(&documented);
    let (ok, said) = verify_in(root.path());
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify of the unit with {DROP_IN_TARGET}:\n{said}"
    );

    // The check reads the drop-in: a broken address in it is reported.
    install(&documented.replace(&allow, "not-an-address"));
    let (_, said) = verify_in(root.path());
    assert!(
        said.contains("prometheus.conf"),
        "systemd-analyze verify did not read the drop-in (no complaint about a bad address): {said:?}"
    );
}
