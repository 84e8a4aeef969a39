//! The engines of the matrix, as `tests/matrix/engines.sh up` lists them, and what a scenario
//! does with one: raw API calls, the Docker CLI and imagegc pointed at it, loads, and the size
//! of its data root on disk.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;

use crate::common::private_engine::{tree_bytes, unix_request};

/// Every engine of the matrix, in table order.
pub const NAMES: &[&str] = &["d20", "d26", "d26cs", "podman"];

/// The matrix script, from the repository root.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/matrix/engines.sh");

/// How the engine stores images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// Docker's graph driver (fuse-overlayfs or overlay2): layers by chain ID.
    GraphDriver,
    /// Docker's containerd image store (containerd-snapshotter).
    Containerd,
    /// Podman's containers/storage.
    Podman,
}

/// One engine of the matrix.
#[derive(Debug, Clone)]
pub struct MatrixEngine {
    /// `d20`, `d26`, `d26cs`, `podman`.
    pub name: String,
    /// Its unix socket.
    pub socket: PathBuf,
    /// Its data root, as seen from this host (inside the chroot for Docker 26).
    pub data_root: PathBuf,
    /// How it stores images.
    pub store: Store,
    /// The store as the script names it (`fuse-overlayfs`, `overlay2`, `containerd`, `overlay`).
    pub store_name: String,
    /// `Version` and `ApiVersion` of `GET /version`.
    pub version: String,
    pub api: String,
}

impl MatrixEngine {
    /// imagegc's address for it.
    pub fn address(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Whether this engine is Docker (has the `BuildKit` build cache).
    pub fn is_docker(&self) -> bool {
        self.store != Store::Podman
    }

    /// The engine's exclusive lock (an `flock` on `<run dir>/<name>.lock`, across processes),
    /// held by a trial for its whole run: scenarios measure the data root.
    pub fn lock(&self) -> Flock<File> {
        let path = run_dir().join(format!("{}.lock", self.name));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        Flock::lock(file, FlockArg::LockExclusive)
            .unwrap_or_else(|(_, errno)| panic!("flock {}: {errno}", path.display()))
    }

    /// Bytes its data root takes on disk (see [`tree_bytes`]).
    pub fn data_root_bytes(&self) -> u64 {
        tree_bytes(&self.data_root)
    }

    /// One raw API call: status and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        unix_request(&self.socket, method, path, content_type, body)
            .map_err(|e| format!("{method} {path} on {}: {e}", self.name))
    }

    /// `GET <path>` as JSON; an error unless 200.
    pub fn get(&self, path: &str) -> Result<Value, String> {
        let (status, body) = self.request("GET", path, None, &[])?;
        if status != 200 {
            return Err(format!(
                "GET {path} on {}: {status} {}",
                self.name,
                String::from_utf8_lossy(&body)
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {path} on {}: {e}", self.name))
    }

    /// Loads a `docker save` tarball with `POST /images/load`; returns the engine's answer text.
    pub fn load_tarball(&self, tarball: &[u8]) -> Result<String, String> {
        let (status, body) = self.request(
            "POST",
            "/images/load?quiet=1",
            Some("application/x-tar"),
            tarball,
        )?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if status != 200 || text.contains("\"error\"") {
            return Err(format!("load on {}: {status} {text}", self.name));
        }
        Ok(text)
    }

    /// The image ID the engine gives `reference` (`GET /images/{ref}/json`'s `Id`): on the
    /// containerd store the manifest digest, elsewhere the config digest.
    pub fn image_id(&self, reference: &str) -> Result<String, String> {
        let v = self.get(&format!("/images/{reference}/json"))?;
        v["Id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no Id for {reference} on {}", self.name))
    }

    /// The Debian 12 Docker CLI (`/usr/bin/docker`, 20.10) pointed at this engine; its API
    /// version is negotiated down to the engine's.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/docker")
            .env("DOCKER_HOST", self.address())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run /usr/bin/docker: {e}"))
    }

    /// The imagegc binary under test pointed at this engine (`DOCKER_HOST`).
    pub fn imagegc_command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagegc"));
        cmd.env("DOCKER_HOST", self.address()).stdin(Stdio::null());
        cmd
    }

    /// Runs imagegc to completion against this engine.
    pub fn imagegc(&self, args: &[&str]) -> Output {
        self.imagegc_command()
            .args(args)
            .output()
            .expect("cannot run the imagegc binary")
    }
}

/// Where the script keeps sockets, pid files and the list.
pub fn run_dir() -> PathBuf {
    std::env::var_os("IMAGEGC_MATRIX_RUN")
        .map_or_else(|| PathBuf::from("/run/imagegc-matrix"), PathBuf::from)
}

/// The running matrix; stops it on drop if this process started it.
pub struct Matrix {
    engines: Vec<MatrixEngine>,
    started_here: bool,
}

impl Matrix {
    /// The engines that answer, starting the matrix first when it is not up.
    pub fn up() -> Result<Matrix, String> {
        let list = run_dir().join("engines");
        let mut started_here = false;
        if !all_answer(&list) {
            eprintln!("starting the engine matrix ({SCRIPT} up)");
            let status = Command::new("bash")
                .arg(SCRIPT)
                .arg("up")
                .stdin(Stdio::null())
                .status()
                .map_err(|e| format!("cannot run {SCRIPT}: {e}"))?;
            started_here = std::env::var_os("IMAGEGC_MATRIX_KEEP").is_none();
            if !status.success() {
                return Err(format!("{SCRIPT} up: {status}"));
            }
        }
        let engines = read_list(&list)?;
        let missing: Vec<&str> = NAMES
            .iter()
            .copied()
            .filter(|n| !engines.iter().any(|e| e.name == *n))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{} lists no {}",
                list.display(),
                missing.join(", ")
            ));
        }
        Ok(Matrix {
            engines,
            started_here,
        })
    }

    pub fn engines(&self) -> &[MatrixEngine] {
        &self.engines
    }
}

impl Drop for Matrix {
    fn drop(&mut self) {
        if self.started_here {
            eprintln!("stopping the engine matrix ({SCRIPT} down)");
            let _ = Command::new("bash").arg(SCRIPT).arg("down").status();
        }
    }
}

fn all_answer(list: &Path) -> bool {
    read_list(list).is_ok_and(|engines| {
        engines.len() == NAMES.len()
            && engines
                .iter()
                .all(|e| matches!(e.request("GET", "/_ping", None, &[]), Ok((200, _))))
    })
}

fn read_list(list: &Path) -> Result<Vec<MatrixEngine>, String> {
    let text = std::fs::read_to_string(list).map_err(|e| format!("{}: {e}", list.display()))?;
    let mut engines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, socket, data_root, store_name] = fields[..] else {
            return Err(format!("{}: bad line {line:?}", list.display()));
        };
        let store = match store_name {
            "containerd" => Store::Containerd,
            "overlay" if name.starts_with("podman") => Store::Podman,
            _ => Store::GraphDriver,
        };
        let socket = PathBuf::from(socket);
        let (_, body) = unix_request(&socket, "GET", "/version", None, &[])
            .map_err(|e| format!("GET /version on {name}: {e}"))?;
        let version: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("GET /version on {name}: {e}"))?;
        let text = |key: &str| version[key].as_str().unwrap_or("?").to_owned();
        engines.push(MatrixEngine {
            name: name.to_owned(),
            socket,
            data_root: PathBuf::from(data_root),
            store,
            store_name: store_name.to_owned(),
            version: text("Version"),
            api: text("ApiVersion"),
        });
    }
    // Table order.
    engines.sort_by_key(|e| {
        NAMES
            .iter()
            .position(|n| *n == e.name)
            .unwrap_or(usize::MAX)
    });
    Ok(engines)
}
