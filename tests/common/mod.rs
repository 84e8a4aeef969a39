//! Shared real-engine test harness for imagegc's integration tests.
//!
//! Every integration test file that talks to the real Docker Engine starts with `mod common;`
//! and follows these rules (the engine is shared by all tests, and cargo runs them in parallel):
//!
//! - Each test makes one [`Lab`]. The lab has a random id and the label
//!   `imagegc.test=<id>` ([`Lab::label`]). Every image the lab loads and every container it
//!   makes carries that label; every policy a test writes must be scoped to it
//!   (`labels = ["imagegc.test=<id>"]`, see [`Lab::selector`]). No test ever prunes the engine.
//! - References are unique to the lab: build them with [`Lab::repo`] / [`Lab::reference`]
//!   (`imagegc-test-<id>/<name>:<tag>`). The lab refuses references without its id.
//! - A test only looks at images it made itself.
//! - When the lab drops (also when the test panics) it removes its containers (`docker rm -f`),
//!   the references it made, and every image carrying its label (`docker rmi -f`: force is fine in
//!   test cleanup, never in imagegc). Dropping never panics; leftovers are reported on stderr.
//!
//! # Measuring `LayersSize`
//! [`layers_size`] is the engine's own `LayersSize` from `GET /system/df`; it counts every layer
//! of every image once, so any test that loads or removes images changes it. A test that
//! compares `LayersSize` values holds [`engine_lock`] (exclusive, across processes: each test
//! file is its own process) for the whole window from the first to the last measurement. All
//! engine-changing helpers of this harness ([`Lab::load_image`], [`Lab::load_chain`],
//! [`Lab::tag`], [`docker`], [`imagegc`], the lab's cleanup) take the same lock *shared* while
//! they run, so they wait while some test measures and run freely otherwise. On the thread that
//! holds the exclusive lock they skip the shared lock, so a measuring test can use them.
//! Engine changes made by other means (a spawned `imagegc run` daemon, a raw
//! `std::process::Command` calling `docker`) are not covered: don't make them while another
//! test could be measuring, or hold [`engine_lock`] yourself.
//!
//! Declare the lock before the lab (`let _lock = engine_lock(); let lab = Lab::new();`) so the
//! lab's cleanup also runs under it, or drop the lab explicitly inside the window.
//!
//! # Containers
//! Images need no binary: [`Lab::running_container`] and [`Lab::exited_container`] bind-mount a
//! static helper (built once per test process with `gcc -static`) at `/imagegc-sleeper` into
//! the container. This needs a local engine (the host path must be visible to the daemon).
//! [`ImageSpec::with_sleeper`] additionally puts the same binary into the image as `/sleeper`.
#![allow(dead_code)]

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use nix::fcntl::{Flock, FlockArg};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub mod private_engine;

/// The label key every test object carries; the value is the lab id.
pub const LABEL_KEY: &str = "imagegc.test";

/// The file the inter-process engine lock is taken on.
pub const LOCK_FILE: &str = "imagegc-tests.lock";

/// Where the sleeper binary is mounted inside containers made by the lab.
pub const SLEEPER_MOUNT: &str = "/imagegc-sleeper";

/// How many rounds of `docker rmi -f` the cleanup tries (children before parents).
const CLEANUP_ROUNDS: usize = 8;

// ---------------------------------------------------------------------------------------------
// Engine lock
// ---------------------------------------------------------------------------------------------

thread_local! {
    static HOLDS_ENGINE_LOCK: Cell<bool> = const { Cell::new(false) };
}

/// Exclusive hold on the shared engine, for tests that compare [`layers_size`] values.
/// Released on drop. Not `Send`: drop it on the thread that took it.
#[must_use = "the engine lock is released when this guard is dropped"]
pub struct EngineLock {
    _flock: Flock<File>,
    _not_send: PhantomData<*const ()>,
}

impl Drop for EngineLock {
    fn drop(&mut self) {
        HOLDS_ENGINE_LOCK.with(|held| held.set(false));
        // `_flock` unlocks when it drops right after this.
    }
}

fn lock_file() -> File {
    let path = std::env::temp_dir().join(LOCK_FILE);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open the engine lock file {}: {e}", path.display()))
}

fn flock(arg: FlockArg) -> Flock<File> {
    Flock::lock(lock_file(), arg).unwrap_or_else(|(_, errno)| panic!("flock {arg:?}: {errno}"))
}

/// Takes the exclusive inter-process engine lock (an `flock` on `$TMPDIR/imagegc-tests.lock`).
/// Blocks until every other holder (exclusive or shared) is gone. Hold it for the whole window
/// in which a test compares [`layers_size`] values. Not re-entrant: panics if this thread holds
/// it already.
/// The engine the tests use, resolved as imagegc resolves it (`DOCKER_HOST`,
/// else the local socket).
pub fn engine_address() -> String {
    imagegc::sources::EngineSpec::resolve(None, |k| std::env::var(k).ok(), None).address
}

pub fn engine_lock() -> EngineLock {
    assert!(
        !HOLDS_ENGINE_LOCK.with(Cell::get),
        "engine_lock() is not re-entrant: this thread holds it already"
    );
    let flock = flock(FlockArg::LockExclusive);
    HOLDS_ENGINE_LOCK.with(|held| held.set(true));
    EngineLock {
        _flock: flock,
        _not_send: PhantomData,
    }
}

/// The shared side of the engine lock, taken around every engine change the harness makes;
/// `None` when this thread holds the exclusive lock already.
fn mutation_guard() -> Option<Flock<File>> {
    if HOLDS_ENGINE_LOCK.with(Cell::get) {
        None
    } else {
        Some(flock(FlockArg::LockShared))
    }
}

/// Like [`mutation_guard`], for `Drop`: never panics (cleanup without the lock beats no cleanup).
fn mutation_guard_quiet() -> Option<Flock<File>> {
    if HOLDS_ENGINE_LOCK.with(Cell::get) {
        return None;
    }
    let path = std::env::temp_dir().join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .ok()?;
    Flock::lock(file, FlockArg::LockShared).ok()
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Lower-case hex of `n` random bytes.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn docker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "`docker {}` failed ({}): stdout: {} stderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// Runs `docker <args>` without taking any lock. Panics only if `docker` cannot be spawned.
fn docker_raw(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `docker {}`: {e}", args.join(" ")))
}

/// Runs a read-only `docker` command, asserts success, returns trimmed stdout.
fn docker_read(args: &[&str]) -> String {
    let out = docker_raw(args);
    assert!(out.status.success(), "{}", describe(args, &out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs an engine-changing `docker` command under the shared engine lock, asserts success,
/// returns trimmed stdout.
fn docker_change(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "{}", describe(args, &out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `docker <args>` under the shared engine lock (see the module docs) and returns its
/// output unchecked. Use it for engine changes a test makes itself (`rmi`, `tag`, `stop`, …).
pub fn docker(args: &[&str]) -> Output {
    let _guard = mutation_guard();
    docker_raw(args)
}

fn lines(s: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| seen.insert((*l).to_owned()))
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Engine queries
// ---------------------------------------------------------------------------------------------

/// Whether the engine knows this image ID or reference.
pub fn image_exists(id_or_ref: &str) -> bool {
    docker_raw(&["image", "inspect", "--format", "{{.Id}}", id_or_ref])
        .status
        .success()
}

/// Whether the engine knows this container.
pub fn container_exists(id: &str) -> bool {
    docker_raw(&["container", "inspect", "--format", "{{.Id}}", id])
        .status
        .success()
}

/// `docker image inspect` of one image as JSON (the object, not the one-element array).
pub fn inspect_image(id_or_ref: &str) -> Value {
    let text = docker_read(&["image", "inspect", id_or_ref]);
    let mut list: Value = serde_json::from_str(&text).expect("docker image inspect JSON");
    list[0].take()
}

/// The `repository:tag` references of an image (its `RepoTags`), sorted.
pub fn references_of(image_id: &str) -> Vec<String> {
    let mut tags: Vec<String> = inspect_image(image_id)["RepoTags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "<none>:<none>")
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

/// The parent image ID the engine records for an image, if any.
pub fn parent_of(image_id: &str) -> Option<String> {
    let parent = docker_read(&["image", "inspect", "--format", "{{.Parent}}", image_id]);
    (!parent.is_empty()).then_some(parent)
}

/// The image's `Created` time as the engine reports it.
pub fn created_of(image_id: &str) -> DateTime<Utc> {
    let text = docker_read(&[
        "image",
        "inspect",
        "--format",
        "{{json .Created}}",
        image_id,
    ]);
    let text: String = serde_json::from_str(&text).expect("Created is a JSON string");
    DateTime::parse_from_rfc3339(&text)
        .unwrap_or_else(|e| panic!("Created {text:?}: {e}"))
        .with_timezone(&Utc)
}

/// A container's `State.Status`: created, running, paused, restarting, removing, exited, dead.
pub fn container_state(id: &str) -> String {
    docker_read(&["container", "inspect", "--format", "{{.State.Status}}", id])
}

/// Full IDs of the images carrying `label` (`key` or `key=value`), including intermediate ones.
pub fn images_with_label(label: &str) -> Vec<String> {
    lines(&docker_read(&[
        "images",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={label}"),
    ]))
}

/// Full IDs of the containers (any state) carrying `label`.
pub fn containers_with_label(label: &str) -> Vec<String> {
    lines(&docker_read(&[
        "ps",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label={label}"),
    ]))
}

enum DockerHost {
    Unix(PathBuf),
    Tcp(String),
}

fn docker_host() -> DockerHost {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => {
            if let Some(path) = host.strip_prefix("unix://") {
                DockerHost::Unix(PathBuf::from(path))
            } else if let Some(addr) = host.strip_prefix("tcp://") {
                DockerHost::Tcp(addr.trim_end_matches('/').to_owned())
            } else {
                panic!("unsupported DOCKER_HOST {host:?} (unix:// and tcp:// only)")
            }
        }
        _ => DockerHost::Unix(PathBuf::from("/var/run/docker.sock")),
    }
}

/// `GET <path>` on the engine API (unversioned, so the engine answers in its own version),
/// with a plain HTTP/1.0 request; returns the JSON body.
pub fn engine_get(path: &str) -> Value {
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut response = Vec::new();
    match docker_host() {
        DockerHost::Unix(socket) => {
            let mut s = UnixStream::connect(&socket)
                .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
            s.write_all(request.as_bytes()).expect("write request");
            s.read_to_end(&mut response).expect("read response");
        }
        DockerHost::Tcp(addr) => {
            let mut s = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
            s.write_all(request.as_bytes()).expect("write request");
            s.read_to_end(&mut response).expect("read response");
        }
    }
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: no HTTP header end in the response"));
    let head = String::from_utf8_lossy(&response[..split]);
    let status = head.lines().next().unwrap_or_default();
    let body = &response[split + 4..];
    assert!(
        status.split_whitespace().nth(1) == Some("200"),
        "GET {path}: {status}: {}",
        String::from_utf8_lossy(body)
    );
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("GET {path}: bad JSON: {e}"))
}

/// The engine's own `LayersSize` (`GET /system/df`): the bytes of all image layers, each
/// counted once. Hold [`engine_lock`] while comparing values (see the module docs).
pub fn layers_size() -> u64 {
    let df = engine_get("/system/df");
    df["LayersSize"]
        .as_u64()
        .unwrap_or_else(|| panic!("/system/df has no LayersSize: {df}"))
}

// ---------------------------------------------------------------------------------------------
// The imagegc binary
// ---------------------------------------------------------------------------------------------

/// A `Command` for the imagegc binary under test (no lock taken: for spawning a daemon).
pub fn imagegc_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_imagegc"))
}

/// Runs the imagegc binary to completion under the shared engine lock and returns its output.
pub fn imagegc(args: &[&str]) -> Output {
    let _guard = mutation_guard();
    imagegc_command()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run the imagegc binary")
}

// ---------------------------------------------------------------------------------------------
// The sleeper binary
// ---------------------------------------------------------------------------------------------

/// `sleeper` waits for a signal (SIGTERM/SIGINT exit 0 at once, so `docker stop` is quick);
/// `sleeper N` exits with status N at once.
const SLEEPER_SOURCE: &str = r"#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
int main(int argc, char **argv) {
    if (argc > 1) return atoi(argv[1]);
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    for (;;) pause();
}
";

static SLEEPER: OnceLock<PathBuf> = OnceLock::new();

/// Path of the static sleeper binary, built once (per source version) into
/// `CARGO_TARGET_TMPDIR` with `gcc -static -Os`.
pub fn sleeper_path() -> &'static Path {
    SLEEPER.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        fs::create_dir_all(&dir).expect("create CARGO_TARGET_TMPDIR");
        let hash = &sha256_hex(SLEEPER_SOURCE.as_bytes())[..12];
        let path = dir.join(format!("imagegc-sleeper-{hash}"));
        if path.is_file() {
            return path;
        }
        let unique = format!("{}-{}", std::process::id(), random_hex(4));
        let source = dir.join(format!("imagegc-sleeper-{unique}.c"));
        let tmp = dir.join(format!("imagegc-sleeper-{unique}.tmp"));
        fs::write(&source, SLEEPER_SOURCE).expect("write sleeper source");
        let out = Command::new("gcc")
            .args(["-static", "-Os", "-s", "-o"])
            .arg(&tmp)
            .arg(&source)
            .output()
            .expect("cannot run gcc");
        let _ = fs::remove_file(&source);
        assert!(
            out.status.success(),
            "gcc -static failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Atomic: concurrent test processes may race to build it.
        fs::rename(&tmp, &path).expect("rename sleeper binary");
        path
    })
}

fn sleeper_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| fs::read(sleeper_path()).expect("read sleeper binary"))
}

// ---------------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------------

/// What [`Lab::load_image`] / [`Lab::load_chain`] makes. Every image also carries the lab label.
#[derive(Clone, Debug)]
pub struct ImageSpec<'a> {
    /// `repository:tag` references; empty makes a dangling image. Each must contain the lab id
    /// (use [`Lab::reference`]).
    pub tags: Vec<String>,
    /// The image's `created` time (config and history); stored to the second.
    pub created: DateTime<Utc>,
    /// Size of the file of random bytes in the image's own layer (may be 0).
    pub layer_bytes: usize,
    /// Labels besides the lab label.
    pub extra_labels: Vec<(String, String)>,
    /// An image loaded earlier: the new image gets its layers plus one new layer, and the engine
    /// records it as the parent.
    pub parent: Option<&'a LoadedImage>,
    /// Also put the sleeper binary into the new layer as `/sleeper` (mode 0755).
    pub with_sleeper: bool,
}

impl Default for ImageSpec<'_> {
    /// Dangling, created 30 days ago, 4 KiB layer, no extra labels, no parent, no sleeper.
    fn default() -> Self {
        Self {
            tags: Vec::new(),
            created: Utc::now() - TimeDelta::days(30),
            layer_bytes: 4096,
            extra_labels: Vec::new(),
            parent: None,
            with_sleeper: false,
        }
    }
}

impl<'a> ImageSpec<'a> {
    /// Same as `ImageSpec::default()`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a reference.
    #[must_use]
    pub fn tag(mut self, reference: impl Into<String>) -> Self {
        self.tags.push(reference.into());
        self
    }

    #[must_use]
    pub fn created(mut self, created: DateTime<Utc>) -> Self {
        self.created = created;
        self
    }

    /// Created `days` days before now.
    #[must_use]
    pub fn days_old(mut self, days: i64) -> Self {
        self.created = Utc::now() - TimeDelta::days(days);
        self
    }

    #[must_use]
    pub fn layer_bytes(mut self, bytes: usize) -> Self {
        self.layer_bytes = bytes;
        self
    }

    /// Adds an extra label.
    #[must_use]
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_labels.push((key.into(), value.into()));
        self
    }

    #[must_use]
    pub fn parent(mut self, parent: &'a LoadedImage) -> Self {
        self.parent = Some(parent);
        self
    }

    #[must_use]
    pub fn with_sleeper(mut self) -> Self {
        self.with_sleeper = true;
        self
    }
}

/// An image the lab loaded.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// `sha256:<hex of the config>`.
    pub id: String,
    /// The references it was loaded with.
    pub tags: Vec<String>,
    /// `sha256:…` diff IDs, oldest first (the parent's, then its own).
    pub diff_ids: Vec<String>,
    /// The created time written into the config (whole seconds).
    pub created: DateTime<Utc>,
    /// The parent image ID the engine records, if any.
    pub parent: Option<String>,
    /// Bytes of file content in the image's own (last) layer: random data plus the sleeper.
    pub own_content_bytes: u64,
    /// Size of the uncompressed tar of the image's own layer.
    pub own_layer_tar_bytes: u64,
    config: Vec<u8>,
    layer_files: Vec<PathBuf>,
    history: Vec<Value>,
}

impl LoadedImage {
    /// The image's own (last) diff ID.
    pub fn own_diff_id(&self) -> &str {
        self.diff_ids
            .last()
            .expect("an image has at least one layer")
    }

    /// Chain IDs of the image's layers, oldest first (`C0 = D0`,
    /// `Cn = sha256(C(n-1) + " " + Dn)`), as the engine names layers.
    pub fn chain_ids(&self) -> Vec<String> {
        let mut chain: Vec<String> = Vec::with_capacity(self.diff_ids.len());
        for diff in &self.diff_ids {
            let next = match chain.last() {
                None => diff.clone(),
                Some(prev) => format!("sha256:{}", sha256_hex(format!("{prev} {diff}").as_bytes())),
            };
            chain.push(next);
        }
        chain
    }
}

fn layer_dir(diff_id: &str) -> String {
    diff_id.trim_start_matches("sha256:").to_owned()
}

// ---------------------------------------------------------------------------------------------
// Lab
// ---------------------------------------------------------------------------------------------

/// A lab's random id (12 hex digits) and the names made of it: the same for this file's [`Lab`]
/// and the engine matrix's (both dereference to it).
pub struct LabId(String);

impl Default for LabId {
    fn default() -> Self {
        Self::new()
    }
}

impl LabId {
    pub fn new() -> Self {
        Self(random_hex(6))
    }

    /// The random id (12 hex digits).
    pub fn id(&self) -> &str {
        &self.0
    }

    /// `imagegc.test=<id>`: every image and container of the lab carries it.
    pub fn label(&self) -> String {
        format!("{LABEL_KEY}={}", self.0)
    }

    /// A policy selector line scoping a `[[policy]]` to the lab: `labels = ["imagegc.test=<id>"]`.
    pub fn selector(&self) -> String {
        format!("labels = [\"{}\"]", self.label())
    }

    /// `imagegc-test-<id>/<name>`: a repository unique to the lab (`name` may contain `/`).
    pub fn repo(&self, name: &str) -> String {
        format!("imagegc-test-{}/{name}", self.0)
    }

    /// `imagegc-test-<id>/<name>:<tag>`.
    pub fn reference(&self, name: &str, tag: &str) -> String {
        format!("{}:{tag}", self.repo(name))
    }
}

/// One per test: a random id, its label, a temp dir, and cleanup of everything it made.
pub struct Lab {
    id: LabId,
    dir: tempfile::TempDir,
    containers: Mutex<Vec<String>>,
    references: Mutex<Vec<String>>,
    seq: AtomicUsize,
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl std::ops::Deref for Lab {
    type Target = LabId;

    fn deref(&self) -> &LabId {
        &self.id
    }
}

impl Lab {
    /// A new lab with a random 12-hex-digit id and its own temp dir.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("imagegc-test-")
            .tempdir()
            .expect("create the lab temp dir");
        fs::create_dir_all(dir.path().join("layers")).expect("create the layers dir");
        Self {
            id: LabId::new(),
            dir,
            containers: Mutex::new(Vec::new()),
            references: Mutex::new(Vec::new()),
            seq: AtomicUsize::new(0),
        }
    }

    /// The lab's temp dir (removed when the lab drops).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path for imagegc's `[state] path` inside the temp dir (the file does not exist yet).
    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }

    /// Writes `policy.toml` in the temp dir (overwriting it) and returns its path.
    pub fn write_policy(&self, toml_text: &str) -> PathBuf {
        let path = self.dir.path().join("policy.toml");
        fs::write(&path, toml_text).expect("write the policy file");
        path
    }

    fn next_seq(&self) -> usize {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn check_reference(&self, reference: &str) {
        assert!(
            reference.contains(self.id()),
            "reference {reference:?} does not contain the lab id {}: use lab.reference()",
            self.id()
        );
    }

    fn track_reference(&self, reference: &str) {
        self.references
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(reference.to_owned());
    }

    fn track_container(&self, id: &str) {
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id.to_owned());
    }

    /// Loads one image (`docker load`). With `spec.parent`, the parent's config and layers are
    /// put in the same tarball and the manifest entry names the parent, so the engine records
    /// the link (checked).
    pub fn load_image(&self, spec: &ImageSpec<'_>) -> LoadedImage {
        self.load_chain(std::slice::from_ref(spec))
            .pop()
            .expect("one image loaded")
    }

    /// Loads a parent → child chain in one tarball: `specs[i]` is the parent of `specs[i + 1]`.
    /// `specs[0].parent` may name an image loaded earlier; the others' `parent` must be `None`.
    /// Returns the images in the same order.
    pub fn load_chain(&self, specs: &[ImageSpec<'_>]) -> Vec<LoadedImage> {
        assert!(!specs.is_empty(), "load_chain needs at least one spec");
        assert!(
            specs[1..].iter().all(|s| s.parent.is_none()),
            "in load_chain only the first spec may name a parent"
        );
        for spec in specs {
            for tag in &spec.tags {
                self.check_reference(tag);
            }
        }

        let mut manifest: Vec<Value> = Vec::new();
        let mut configs: Vec<(String, Vec<u8>)> = Vec::new();
        let mut layer_files: Vec<(String, PathBuf)> = Vec::new();
        let mut seen_layers: HashSet<String> = HashSet::new();
        let mut add_image = |image: &LoadedImage, manifest: &mut Vec<Value>| {
            let config_name = format!("{}.json", layer_dir(&image.id));
            let mut layers = Vec::new();
            for (diff, file) in image.diff_ids.iter().zip(&image.layer_files) {
                let name = format!("{}/layer.tar", layer_dir(diff));
                if seen_layers.insert(name.clone()) {
                    layer_files.push((name.clone(), file.clone()));
                }
                layers.push(Value::String(name));
            }
            let mut entry = json!({
                "Config": config_name,
                "RepoTags": image.tags,
                "Layers": layers,
            });
            if let Some(parent) = &image.parent {
                entry["Parent"] = Value::String(parent.clone());
            }
            manifest.push(entry);
            configs.push((config_name, image.config.clone()));
        };

        // An earlier image named as parent goes in again (no tags: its references stay as
        // they are), so the child's parent is in the same tarball.
        let mut previous: Option<LoadedImage> = specs[0].parent.cloned();
        if let Some(parent) = &previous {
            let again = LoadedImage {
                tags: Vec::new(),
                ..parent.clone()
            };
            add_image(&again, &mut manifest);
        }
        let mut loaded = Vec::with_capacity(specs.len());
        for spec in specs {
            let image = self.build_image(spec, previous.as_ref());
            add_image(&image, &mut manifest);
            previous = Some(image.clone());
            loaded.push(image);
        }

        // Write the docker-load tarball into the temp dir.
        let tarball = self
            .dir
            .path()
            .join(format!("load-{}.tar", self.next_seq()));
        {
            let file = File::create(&tarball).expect("create the load tarball");
            let mut builder = tar::Builder::new(file);
            for (name, path) in &layer_files {
                builder
                    .append_path_with_name(path, name)
                    .expect("add a layer to the load tarball");
            }
            for (name, bytes) in &configs {
                append_bytes(&mut builder, name, bytes);
            }
            let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest JSON");
            append_bytes(&mut builder, "manifest.json", &manifest_bytes);
            builder.finish().expect("finish the load tarball");
        }

        {
            let _guard = mutation_guard();
            for image in &loaded {
                for tag in &image.tags {
                    self.track_reference(tag);
                }
            }
            let path = tarball.to_string_lossy().into_owned();
            let out = docker_raw(&["load", "-q", "-i", &path]);
            let _ = fs::remove_file(&tarball);
            assert!(
                out.status.success(),
                "{}",
                describe(&["load", "-i", &path], &out)
            );
        }

        for image in &loaded {
            assert!(
                image_exists(&image.id),
                "docker load did not create {}",
                image.id
            );
            let recorded = parent_of(&image.id);
            assert_eq!(
                recorded, image.parent,
                "the engine did not record the parent link of {}",
                image.id
            );
        }
        loaded
    }

    /// Writes the new layer tar to the temp dir and builds config and history.
    fn build_image(&self, spec: &ImageSpec<'_>, parent: Option<&LoadedImage>) -> LoadedImage {
        let created = DateTime::from_timestamp(spec.created.timestamp(), 0).expect("valid time");
        let created_text = created.to_rfc3339_opts(SecondsFormat::Secs, true);

        // The layer: one file of random bytes (+ the sleeper), uncompressed tar.
        let mut data = vec![0u8; spec.layer_bytes];
        rand::rng().fill_bytes(&mut data);
        let mut builder = tar::Builder::new(Vec::new());
        append_file(
            &mut builder,
            &format!("data-{}", random_hex(8)),
            &data,
            0o644,
            created.timestamp(),
        );
        let mut content = spec.layer_bytes as u64;
        if spec.with_sleeper {
            let sleeper = sleeper_bytes();
            append_file(&mut builder, "sleeper", sleeper, 0o755, created.timestamp());
            content += sleeper.len() as u64;
        }
        let layer = builder.into_inner().expect("finish the layer tar");
        let diff_id = format!("sha256:{}", sha256_hex(&layer));
        let layer_path = self
            .dir
            .path()
            .join("layers")
            .join(format!("{}.tar", layer_dir(&diff_id)));
        fs::write(&layer_path, &layer).expect("write the layer tar");

        let mut diff_ids = parent.map(|p| p.diff_ids.clone()).unwrap_or_default();
        diff_ids.push(diff_id);
        let mut layer_files = parent.map(|p| p.layer_files.clone()).unwrap_or_default();
        layer_files.push(layer_path);
        // The engine accepts a parent only if the child's history is the parent's plus one.
        let mut history = parent.map(|p| p.history.clone()).unwrap_or_default();
        history.push(json!({"created": created_text, "created_by": "imagegc test layer"}));

        let mut labels = BTreeMap::new();
        labels.insert(LABEL_KEY.to_owned(), self.id().to_owned());
        for (k, v) in &spec.extra_labels {
            labels.insert(k.clone(), v.clone());
        }
        let config = json!({
            "architecture": docker_arch(),
            "os": "linux",
            "created": created_text,
            "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        let config = serde_json::to_vec(&config).expect("config JSON");
        LoadedImage {
            id: format!("sha256:{}", sha256_hex(&config)),
            tags: spec.tags.clone(),
            diff_ids,
            created,
            parent: parent.map(|p| p.id.clone()),
            own_content_bytes: content,
            own_layer_tar_bytes: layer.len() as u64,
            config,
            layer_files,
            history,
        }
    }

    /// `docker tag <image> <reference>`; the reference must contain the lab id.
    pub fn tag(&self, image: &str, reference: &str) {
        self.check_reference(reference);
        self.track_reference(reference);
        docker_change(&["tag", image, reference]);
    }

    /// A container in state `created` (never started; command `/nonexistent`). Like every
    /// container a test makes, it has no network (`--network none`), so it needs no bridge.
    pub fn create_container(&self, image: &str) -> String {
        let label = self.label();
        let id = docker_change(&[
            "create",
            "--label",
            &label,
            "--network",
            "none",
            image,
            "/nonexistent",
        ]);
        self.track_container(&id);
        id
    }

    /// A container whose `docker start` failed (`/nonexistent` is not in the image). The
    /// engine leaves it in state `created` with exit code 127 and an error message.
    pub fn start_failed_container(&self, image: &str) -> String {
        let id = self.create_container(image);
        let out = docker(&["start", &id]);
        assert!(
            !out.status.success(),
            "starting /nonexistent unexpectedly succeeded"
        );
        id
    }

    fn sleeper_mount() -> String {
        format!(
            "type=bind,source={},target={SLEEPER_MOUNT},readonly",
            sleeper_path().display()
        )
    }

    /// A container in state `exited` (exit code 0): runs the bind-mounted sleeper with `0` and
    /// waits for it. Works with any image.
    pub fn exited_container(&self, image: &str) -> String {
        let label = self.label();
        let mount = Self::sleeper_mount();
        let id = docker_change(&[
            "create",
            "--label",
            &label,
            "--network",
            "none",
            "--mount",
            &mount,
            image,
            SLEEPER_MOUNT,
            "0",
        ]);
        self.track_container(&id);
        docker_change(&["start", &id]);
        let code = docker_change(&["wait", &id]);
        assert_eq!(code, "0", "the sleeper exited with {code}");
        id
    }

    /// A container in state `running`: the bind-mounted sleeper waiting for a signal
    /// (`docker stop` ends it at once, exit code 0). Works with any image.
    pub fn running_container(&self, image: &str) -> String {
        let label = self.label();
        let mount = Self::sleeper_mount();
        let id = docker_change(&[
            "create",
            "--label",
            &label,
            "--network",
            "none",
            "--mount",
            &mount,
            image,
            SLEEPER_MOUNT,
        ]);
        self.track_container(&id);
        docker_change(&["start", &id]);
        id
    }

    /// A container in state `paused` (a running sleeper, then `docker pause`).
    pub fn paused_container(&self, image: &str) -> String {
        let id = self.running_container(image);
        docker_change(&["pause", &id]);
        id
    }

    /// Full IDs of the images carrying the lab label (`docker images -a`).
    pub fn lab_images(&self) -> Vec<String> {
        images_with_label(&self.label())
    }

    /// Full IDs of the containers carrying the lab label.
    pub fn lab_containers(&self) -> Vec<String> {
        containers_with_label(&self.label())
    }

    /// Removes everything the lab made; never panics. Called by `Drop`.
    fn cleanup(&self) {
        let _guard = mutation_guard_quiet();
        let label = format!("label={}", self.label());
        let quiet = |args: &[&str]| -> Option<String> {
            let out = Command::new("docker")
                .args(args)
                .stdin(Stdio::null())
                .output()
                .ok()?;
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        };

        // 1. Containers: the ones made here and any carrying the label.
        let mut containers = self
            .containers
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        if let Some(found) = quiet(&["ps", "-a", "-q", "--no-trunc", "--filter", &label]) {
            containers.extend(lines(&found));
        }
        let containers = lines(&containers.join("\n"));
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(containers.iter().map(String::as_str));
            let _ = quiet(&args);
        }

        // 2. References the lab made (untag only; the image goes in step 3 if it is ours).
        let references = self
            .references
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        if !references.is_empty() {
            let mut args = vec!["rmi"];
            args.extend(references.iter().map(String::as_str));
            let _ = quiet(&args);
        }

        // 3. Images carrying the label, children before parents: repeat while it helps.
        let mut left = Vec::new();
        for _ in 0..CLEANUP_ROUNDS {
            let Some(found) = quiet(&["images", "-a", "-q", "--no-trunc", "--filter", &label])
            else {
                break;
            };
            let images = lines(&found);
            if images.is_empty() || images == left {
                left = images;
                break;
            }
            let mut args = vec!["rmi", "-f"];
            args.extend(images.iter().map(String::as_str));
            let _ = quiet(&args);
            left = images;
        }
        let remaining = quiet(&["images", "-a", "-q", "--no-trunc", "--filter", &label])
            .map(|s| lines(&s))
            .unwrap_or(left);
        if !remaining.is_empty() {
            eprintln!(
                "warning: lab {} left images behind: {}",
                self.id(),
                remaining.join(" ")
            );
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.cleanup();
    }
}

fn append_bytes<W: Write>(builder: &mut tar::Builder<W>, name: &str, bytes: &[u8]) {
    append_file(builder, name, bytes, 0o644, 0);
}

fn append_file<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
    mode: u32,
    mtime: i64,
) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_mtime(u64::try_from(mtime).unwrap_or(0));
    header.set_uid(0);
    header.set_gid(0);
    builder
        .append_data(&mut header, name, bytes)
        .unwrap_or_else(|e| panic!("add {name} to a tar: {e}"));
}

// ---------------------------------------------------------------------------------------------
// A running `imagegc run`
// ---------------------------------------------------------------------------------------------

/// A spawned `imagegc run`; killed if the test fails before stopping it.
pub struct DaemonProcess(pub std::process::Child);

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for `[metrics] listen`).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// `GET path` on 127.0.0.1:`port` over HTTP/1.0: (status, body), or `None`
/// while nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Polls `f` every 200 ms until it gives a value; fails the test after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
