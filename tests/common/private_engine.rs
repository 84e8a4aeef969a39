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

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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
    /// Why a private dockerd cannot be started on this machine (`dockerd`, `fuse-overlayfs` or
    /// `/dev/fuse` missing), or `None` when it can. `.ci/run` installs what is missing; a test
    /// skips, saying so, only for this.
    pub fn missing() -> Option<String> {
        for program in ["dockerd", "fuse-overlayfs"] {
            if find_program(program).is_none() {
                return Some(format!("{program} is not installed (.ci/run installs it)"));
            }
        }
        if !Path::new("/dev/fuse").exists() {
            return Some("/dev/fuse is missing (fuse-overlayfs needs it)".to_owned());
        }
        None
    }

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

    /// Bytes the data root takes on disk: `st_blocks * 512` summed over a walk of
    /// `--data-root` (not following symlinks, each inode once, not crossing into other
    /// filesystems such as a running build's mounts). What removals free is its drop.
    pub fn data_root_bytes(&self) -> u64 {
        tree_bytes(&self.data_root())
    }

    /// The build-cache records `/system/df` lists now.
    pub fn records(&self) -> Vec<Value> {
        let df = self.get("/system/df");
        df["BuildCache"].as_array().cloned().unwrap_or_default()
    }

    /// Loads an image made of `layers` (each one layer holding one file of those bytes), bottom
    /// first, created at `created`, tagged `tag`, with `POST /images/load`; returns its ID.
    pub fn load(&self, tag: &str, created: DateTime<Utc>, layers: &[Vec<u8>]) -> String {
        let (tarball, id) = image_tarball(tag, created, layers);
        let (status, body) = self
            .request(
                "POST",
                "/images/load?quiet=1",
                Some("application/x-tar"),
                &tarball,
            )
            .unwrap_or_else(|e| panic!("POST /images/load on the private engine: {e}"));
        let text = String::from_utf8_lossy(&body);
        assert!(
            status == 200 && !text.contains("\"error\""),
            "load of {tag}: {status} {text}"
        );
        id
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
        unix_request(&self.socket, method, path, content_type, body)
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

/// A static binary: `fill PATH N [S]` writes `N` pseudo-random bytes to `PATH` (then sleeps
/// `S` seconds): a `RUN` step that puts bytes into a cache mount (`RUN --mount=type=cache`) of a
/// `FROM scratch` image. Built once per test process with `gcc -static`.
pub fn fill_binary() -> &'static [u8] {
    static FILL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FILL.get_or_init(|| {
        static_binary(
            "fill",
            "#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n\
             int main(int argc, char **argv) {\n\
               if (argc < 3) return 2;\n\
               FILE *f = fopen(argv[1], \"w\"); if (!f) return 3;\n\
               long n = atol(argv[2]); unsigned x = (unsigned)n | 1u;\n\
               for (long i = 0; i < n; i++) { x = x * 1103515245u + 12345u; fputc((x >> 16) & 255, f); }\n\
               if (fclose(f) != 0) return 4;\n\
               if (argc > 3) sleep(atoi(argv[3]));\n\
               return 0;\n\
             }\n",
        )
    })
}

/// Compiles `source` with `gcc -static` into `CARGO_TARGET_TMPDIR`; the binary's bytes.
fn static_binary(name: &str, source: &str) -> Vec<u8> {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir for a binary");
    let c = dir.path().join(format!("{name}.c"));
    let binary = dir.path().join(name);
    std::fs::write(&c, source).expect("write the C source");
    let out = Command::new("gcc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&binary)
        .arg(&c)
        .output()
        .expect("cannot run gcc");
    assert!(
        out.status.success(),
        "gcc -static {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&binary).expect("read the binary")
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
    find_program(program)
        .unwrap_or_else(|| panic!("{program} is not installed (.ci/run installs docker.io)"))
}

/// The path of a program on `PATH` (or in `/usr/sbin`, `/sbin`), if there is one.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Appends one regular file to a tar.
pub fn append<W: Write>(builder: &mut tar::Builder<W>, name: &str, data: &[u8], mode: u32) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    builder
        .append_data(&mut header, name, data)
        .unwrap_or_else(|e| panic!("add {name} to a tar: {e}"));
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Bytes the tree at `root` takes on disk: `st_blocks * 512` summed over a walk (not following
/// symlinks, each inode once, not crossing into other filesystems such as a running build's
/// mounts). What an engine's removals free is the drop of its data root's figure.
pub fn tree_bytes(root: &Path) -> u64 {
    let dev = std::fs::symlink_metadata(root)
        .unwrap_or_else(|e| panic!("stat {}: {e}", root.display()))
        .dev();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        // Files come and go while the engine works: what vanished counts as gone.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev || !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(Result::ok).map(|e| e.path()));
            }
        }
    }
    total
}

/// One HTTP/1.0 request on the unix socket `socket`: the status and the body (read timeout
/// 300 s).
pub fn unix_request(
    socket: &Path,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = UnixStream::connect(socket)?;
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

/// A `docker save`-format tarball of one image made of `layers` (each one layer holding one
/// file of those bytes), bottom first, created at `created`, tagged `tag`; and its config
/// digest (`sha256:…`), which is its ID on a graph-driver store (the containerd store's ID is
/// the manifest digest the engine makes: read it from the engine).
pub fn image_tarball(tag: &str, created: DateTime<Utc>, layers: &[Vec<u8>]) -> (Vec<u8>, String) {
    let created_text = created.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut tarball = tar::Builder::new(Vec::new());
    let mut diff_ids = Vec::new();
    let mut names = Vec::new();
    let mut history = Vec::new();
    for (n, data) in layers.iter().enumerate() {
        let mut layer = tar::Builder::new(Vec::new());
        append(&mut layer, &format!("data-{n}-{tag}"), data, 0o644);
        let layer = layer.into_inner().expect("finish a layer tar");
        let hex = hex(&Sha256::digest(&layer));
        let name = format!("{hex}/layer.tar");
        append(&mut tarball, &name, &layer, 0o644);
        diff_ids.push(format!("sha256:{hex}"));
        names.push(name);
        history.push(json!({"created": created_text, "created_by": format!("layer {n}")}));
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "created": created_text,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }))
    .expect("config JSON");
    let id = hex(&Sha256::digest(&config));
    append(&mut tarball, &format!("{id}.json"), &config, 0o644);
    let manifest = serde_json::to_vec(&json!([
        {"Config": format!("{id}.json"), "RepoTags": [tag], "Layers": names}
    ]))
    .expect("manifest JSON");
    append(&mut tarball, "manifest.json", &manifest, 0o644);
    let tarball = tarball.into_inner().expect("finish the load tarball");
    (tarball, format!("sha256:{id}"))
}
