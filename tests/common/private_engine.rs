//! A private Docker Engine for tests that change what is global to an engine (its build
//! cache): a `dockerd` of its own, started by the test and stopped when the guard drops.
//!
//! The recipe is `docs/ENGINES.md`'s "A private Docker 20.10 beside the host's": an empty
//! `--config-file` of its own (the host's `daemon.json` sets `data-root` and `storage-driver`,
//! which a second daemon may not also get as flags), its own `--data-root`, `--exec-root`, unix
//! socket and `--pidfile`, no bridge, no iptables, `fuse-overlayfs`; everything under one
//! temporary directory. [`PrivateEngine::start`] waits (bounded) until the socket answers
//! `/_ping`; if dockerd cannot start, the test fails with dockerd's log, never skips. Dropping the
//! guard (also when the test panics) stops dockerd by its pid (SIGTERM, then SIGKILL), unmounts
//! whatever it left mounted under the directory, and removes the directory with the data root.
//!
//! Tests that remove build cache run only here, never on the shared engine.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long dockerd may take to answer `/_ping` after it is started.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long dockerd may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running private dockerd; stops it and removes its data on drop.
pub struct PrivateEngine {
    /// The temporary directory holding everything (removed on drop).
    dir: Option<tempfile::TempDir>,
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl PrivateEngine {
    /// Starts a private dockerd and waits until it answers; panics with its log if it does not.
    pub fn start() -> PrivateEngine {
        // Short path: a unix socket path has at most 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("imagegc-dockerd-")
            .tempdir_in("/tmp")
            .expect("temporary directory for the private dockerd");
        let base = dir.path().to_path_buf();
        let config = base.join("daemon.json");
        std::fs::write(&config, "{}\n").expect("write the private daemon.json");
        let socket = base.join("docker.sock");
        let log = base.join("dockerd.log");
        let log_file = std::fs::File::create(&log).expect("create the dockerd log");
        let dockerd = which("dockerd");
        let child = Command::new(&dockerd)
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(base.join("root"))
            .arg("--exec-root")
            .arg(base.join("exec"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--pidfile")
            .arg(base.join("docker.pid"))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--storage-driver=fuse-overlayfs",
            ])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup the dockerd log"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", dockerd.display()));
        let mut engine = PrivateEngine {
            dir: Some(dir),
            child,
            socket,
            log,
        };
        engine.wait_until_it_answers();
        engine
    }

    fn wait_until_it_answers(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the private dockerd exited ({status}) before answering; its log:\n{}",
                    self.log_text()
                );
            }
            if matches!(self.request("GET", "/_ping", None, &[]), Ok((200, _))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private dockerd did not answer /_ping within {START_TIMEOUT:?}; its log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The engine's address, as imagegc takes it (`unix:///tmp/…/docker.sock`).
    pub fn address(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The data root (`--data-root`), whose size on disk is what removals free.
    pub fn data_root(&self) -> PathBuf {
        self.base().join("root")
    }

    fn base(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory lives until drop")
            .path()
    }

    /// dockerd's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(cannot read: {e})"))
    }

    /// One HTTP/1.0 request on the private socket: the status and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(300)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(content_type) = content_type {
            let _ = write!(head, "Content-Type: {content_type}\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no end of the HTTP header"))?;
        let status = String::from_utf8_lossy(&response[..split])
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
        Ok((status, response[split + 4..].to_vec()))
    }

    /// `GET <path>` (unversioned: the engine answers in its own version), as JSON; panics
    /// unless 200.
    pub fn get(&self, path: &str) -> Value {
        let (status, body) = self
            .request("GET", path, None, &[])
            .unwrap_or_else(|e| panic!("GET {path} on the private engine: {e}"));
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: bad JSON: {e}"))
    }

    /// `POST <path>` without a body, as JSON; panics unless 200.
    pub fn post(&self, path: &str) -> Value {
        let (status, body) = self
            .request("POST", path, None, &[])
            .unwrap_or_else(|e| panic!("POST {path} on the private engine: {e}"));
        assert_eq!(
            status,
            200,
            "POST {path}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("POST {path}: bad JSON: {e}"))
    }

    /// A `BuildKit` build (`POST /build?version=2`, no session, no registry) of a context made of
    /// `files` (`Dockerfile` among them), tagged `tag`; returns the image ID. Panics with the
    /// build's output if it fails.
    pub fn build(&self, tag: &str, files: &[(&str, &[u8])]) -> String {
        let mut context = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            header.set_mtime(0);
            header.set_cksum();
            context
                .append_data(&mut header, name, *data)
                .expect("append to the build context");
        }
        let context = context.into_inner().expect("finish the build context");
        // No bridge on this engine: a `RUN` needs no network.
        let path = format!("/build?version=2&t={tag}&rm=1&networkmode=none");
        let (status, body) = self
            .request("POST", &path, Some("application/x-tar"), &context)
            .unwrap_or_else(|e| panic!("POST {path} on the private engine: {e}"));
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "POST {path}: {text}");
        let mut image_id = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(message) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if let Some(error) = message.get("error") {
                panic!("the build of {tag} failed: {error}\n{text}");
            }
            if message["id"] == "moby.image.id" {
                image_id = message["aux"]["ID"].as_str().map(str::to_owned);
            }
        }
        image_id.unwrap_or_else(|| panic!("the build of {tag} named no image ID:\n{text}"))
    }

    /// The Debian 20.10 CLI (`/usr/bin/docker`) against the private engine, with `BuildKit` on.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/docker")
            .arg("-H")
            .arg(self.address())
            .args(args)
            .env("DOCKER_BUILDKIT", "1")
            .output()
            .expect("run /usr/bin/docker")
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "the private dockerd (pid {pid}) did not stop within {STOP_TIMEOUT:?}; killing it"
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateEngine {
    /// Stops dockerd, unmounts what it left under its directory, removes the directory. Never
    /// panics; what it cannot clean up is said on stderr.
    fn drop(&mut self) {
        self.stop();
        let Some(dir) = self.dir.take() else {
            return;
        };
        let base = dir.path().to_path_buf();
        for mount in mounts_under(&base) {
            let _ = Command::new("umount").arg("-l").arg(&mount).status();
        }
        if let Err(e) = dir.close() {
            eprintln!(
                "could not remove the private dockerd's directory {}: {e}",
                base.display()
            );
        }
    }
}

/// A static binary that sleeps `argv[1]` seconds and exits 0: a `RUN` step that keeps a build
/// (and its cache records) busy for a while in a `FROM scratch` image. Built once per test
/// process with `gcc -static` into `CARGO_TARGET_TMPDIR`.
pub fn nap_binary() -> &'static [u8] {
    static NAP: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    NAP.get_or_init(|| {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir for nap");
        let source = dir.path().join("nap.c");
        let binary = dir.path().join("nap");
        std::fs::write(
            &source,
            "#include <stdlib.h>\n#include <unistd.h>\n\
             int main(int argc, char **argv) { sleep(argc > 1 ? atoi(argv[1]) : 1); return 0; }\n",
        )
        .expect("write nap.c");
        let out = Command::new("gcc")
            .args(["-static", "-Os", "-s", "-o"])
            .arg(&binary)
            .arg(&source)
            .output()
            .expect("cannot run gcc");
        assert!(
            out.status.success(),
            "gcc -static failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(&binary).expect("read nap")
    })
}

/// Mount points under `dir`, deepest first (from `/proc/self/mountinfo`).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts
}

/// The path of a program on `PATH`; panics naming it when absent.
fn which(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed (.ci/run installs docker.io)"))
}
