//! A small per-scenario lab on one matrix engine, for the `daemon`, `containers` and
//! `build_cache` scenarios: a random id, the label `imagegc.test=<id>` on every image and
//! container it makes, references of its own (`imagegc-test-<id>/<name>:1`), a directory for
//! policy, state and log files, and cleanup on drop (also when a scenario fails): its
//! containers (forced, with their anonymous volumes), the named volumes it made, its images
//! (forced: fine in test cleanup, never in imagegc) and the build-cache records it made (each by
//! its anchored ID, never a blanket prune). Everything it does runs under the engine's lock,
//! which the trial holds.
//!
//! Images are `docker save` tarballs made here (the shared `image_tarball` makes no labels and
//! no command) and loaded with `POST /images/load`; their IDs are read back from the engine
//! (on the containerd store the ID is the manifest digest).

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::private_engine::{append, hex};
use crate::common::random_hex;
use crate::engine::MatrixEngine;

/// The label key every lab object carries; the value is the lab id.
pub const LABEL_KEY: &str = "imagegc.test";

/// One file of an image layer: path inside the image, bytes, mode.
pub type File<'a> = (&'a str, &'a [u8], u32);

/// A lab on one engine; cleans up on drop.
pub struct Lab<'e> {
    /// The engine everything is made on.
    pub engine: &'e MatrixEngine,
    /// Random, in every label value and reference.
    pub id: String,
    /// Policy, state and log files.
    pub dir: tempfile::TempDir,
    /// Named volumes made here (removed on drop).
    volumes: RefCell<Vec<String>>,
    /// Build-cache record IDs made here (removed on drop if still there).
    records: RefCell<Vec<String>>,
}

impl<'e> Lab<'e> {
    pub fn new(engine: &'e MatrixEngine) -> Result<Lab<'e>, String> {
        let dir = tempfile::Builder::new()
            .prefix("imagegc-matrix-lab-")
            .tempdir()
            .map_err(|e| format!("a temporary directory: {e}"))?;
        Ok(Lab {
            engine,
            id: random_hex(6),
            dir,
            volumes: RefCell::default(),
            records: RefCell::default(),
        })
    }

    /// `imagegc.test=<id>`.
    pub fn label(&self) -> String {
        format!("{LABEL_KEY}={}", self.id)
    }

    /// `imagegc-test-<id>/<name>:1`.
    pub fn reference(&self, name: &str) -> String {
        format!("imagegc-test-{}/{name}:1", self.id)
    }

    /// A path in the lab's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` to `<dir>/<name>`; its path as text.
    pub fn write(&self, name: &str, text: &str) -> Result<String, String> {
        let path = self.path(name);
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        path.to_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{} is not UTF-8", path.display()))
    }

    /// Loads an image `reference(name)` made of `layers` (bottom first), created at `created`,
    /// labelled with the lab label, with `cmd` as its command; returns its ID as the engine
    /// gives it.
    pub fn load(
        &self,
        name: &str,
        created: DateTime<Utc>,
        layers: &[Vec<File<'_>>],
        cmd: &[&str],
    ) -> Result<String, String> {
        let reference = self.reference(name);
        let tarball = tarball(&reference, created, layers, &self.id, cmd);
        self.engine.load_tarball(&tarball)?;
        self.engine.image_id(&reference)
    }

    /// `POST /containers/create?name=<id>-<name>` of `image` running `cmd`, labelled, with no
    /// network and `host_config` merged into its `HostConfig`; returns the container ID.
    pub fn create_container(
        &self,
        name: &str,
        image: &str,
        cmd: &[&str],
        host_config: &Value,
        volumes: &[&str],
    ) -> Result<String, String> {
        let mut host = json!({"NetworkMode": "none"});
        if let (Some(h), Some(extra)) = (host.as_object_mut(), host_config.as_object()) {
            for (k, v) in extra {
                h.insert(k.clone(), v.clone());
            }
        }
        let vols: serde_json::Map<String, Value> = volumes
            .iter()
            .map(|v| ((*v).to_owned(), json!({})))
            .collect();
        let body = json!({
            "Image": image,
            "Cmd": cmd,
            "Labels": {LABEL_KEY: self.id},
            "Volumes": vols,
            "HostConfig": host,
        });
        let path = format!("/containers/create?name={}", self.container_name(name));
        let (status, answer) = self.engine.request(
            "POST",
            &path,
            Some("application/json"),
            body.to_string().as_bytes(),
        )?;
        let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        if status != 201 {
            return Err(format!(
                "POST {path} on {}: {status} {answer}",
                self.engine.name
            ));
        }
        answer["Id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("POST {path}: no Id in {answer}"))
    }

    /// The full name of the lab's container `name`: `<id>-<name>`.
    pub fn container_name(&self, name: &str) -> String {
        format!("{}-{name}", self.id)
    }

    /// A named volume the lab removes on drop.
    pub fn create_volume(&self, name: &str) -> Result<String, String> {
        let full = format!("imagegc-test-{}-{name}", self.id);
        let body = json!({"Name": full, "Labels": {LABEL_KEY: self.id}});
        let (status, answer) = self.engine.request(
            "POST",
            "/volumes/create",
            Some("application/json"),
            body.to_string().as_bytes(),
        )?;
        if status != 201 {
            return Err(format!(
                "POST /volumes/create on {}: {status} {}",
                self.engine.name,
                String::from_utf8_lossy(&answer)
            ));
        }
        self.volumes.borrow_mut().push(full.clone());
        Ok(full)
    }

    /// `POST <path>` expecting 204 (or 304: already so).
    pub fn post_ok(&self, path: &str) -> Result<(), String> {
        let (status, answer) = self.engine.request("POST", path, None, &[])?;
        if matches!(status, 200 | 204 | 304) {
            Ok(())
        } else {
            Err(format!(
                "POST {path} on {}: {status} {}",
                self.engine.name,
                String::from_utf8_lossy(&answer)
            ))
        }
    }

    /// Whether `GET /<kind>/<id>/json` answers 200 (`kind`: `images`, `containers`).
    pub fn exists(&self, kind: &str, id: &str) -> Result<bool, String> {
        match self
            .engine
            .request("GET", &format!("/{kind}/{id}/json"), None, &[])?
        {
            (200, _) => Ok(true),
            (404, _) => Ok(false),
            (status, body) => Err(format!(
                "GET /{kind}/{id}/json on {}: {status} {}",
                self.engine.name,
                String::from_utf8_lossy(&body)
            )),
        }
    }

    /// Remembers build-cache records the lab made, to remove them on drop if a pass did not.
    pub fn own_records(&self, ids: impl IntoIterator<Item = String>) {
        self.records.borrow_mut().extend(ids);
    }

    /// `imagegc --config <policy> ARGS… --output json` against the engine, as JSON; an error
    /// with its output unless it exits 0.
    pub fn imagegc_json(&self, policy: &str, args: &[&str]) -> Result<Value, String> {
        let mut all = vec!["--config", policy];
        all.extend(args);
        all.extend(["--output", "json"]);
        let out: Output = self.engine.imagegc(&all);
        if !out.status.success() {
            return Err(format!(
                "imagegc {args:?} on {} failed ({}):\nstdout: {}\nstderr: {}",
                self.engine.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "imagegc {args:?} on {}: not JSON ({e}): {}",
                self.engine.name,
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    fn cleanup(&self) {
        let filter = url_encode(&json!({"label": [self.label()]}).to_string());
        let e = self.engine;
        if let Ok(list) = e.get(&format!("/containers/json?all=1&filters={filter}")) {
            for c in list.as_array().into_iter().flatten() {
                if let Some(id) = c["Id"].as_str() {
                    // A paused container must be unpaused before a forced removal on some
                    // engines; harmless otherwise.
                    let _ = e.request("POST", &format!("/containers/{id}/unpause"), None, &[]);
                    let _ = e.request(
                        "DELETE",
                        &format!("/containers/{id}?force=true&v=true"),
                        None,
                        &[],
                    );
                }
            }
        }
        for v in self.volumes.borrow().iter() {
            let _ = e.request("DELETE", &format!("/volumes/{v}?force=true"), None, &[]);
        }
        // Children before parents: a few rounds.
        for _ in 0..4 {
            let Ok(list) = e.get(&format!("/images/json?all=1&filters={filter}")) else {
                break;
            };
            let ids: Vec<String> = list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["Id"].as_str().map(str::to_owned))
                .collect();
            if ids.is_empty() {
                break;
            }
            for id in ids {
                let _ = e.request("DELETE", &format!("/images/{id}?force=true"), None, &[]);
            }
        }
        for id in self.records.borrow().iter() {
            if id.chars().all(|c| c.is_ascii_alphanumeric()) {
                let filters = url_encode(&json!({"id": [format!("^{id}$")]}).to_string());
                let _ = e.request(
                    "POST",
                    &format!("/build/prune?all=true&filters={filters}"),
                    None,
                    &[],
                );
            }
        }
    }
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A `docker save` tarball of one image: `layers` (bottom first, each a tar of its files),
/// created at `created`, labelled `imagegc.test=<lab>`, with `cmd`, tagged `tag`.
fn tarball(
    tag: &str,
    created: DateTime<Utc>,
    layers: &[Vec<File<'_>>],
    lab: &str,
    cmd: &[&str],
) -> Vec<u8> {
    let created_text = created.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut out = tar::Builder::new(Vec::new());
    let mut diff_ids = Vec::new();
    let mut names = Vec::new();
    let mut history = Vec::new();
    for (n, files) in layers.iter().enumerate() {
        let mut layer = tar::Builder::new(Vec::new());
        for (path, data, mode) in files {
            append(&mut layer, path, data, *mode);
        }
        let layer = layer.into_inner().expect("a tar in memory cannot fail");
        let digest = hex(&Sha256::digest(&layer));
        let name = format!("{digest}/layer.tar");
        append(&mut out, &name, &layer, 0o644);
        diff_ids.push(format!("sha256:{digest}"));
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
        "config": {"Labels": {LABEL_KEY: lab}, "Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }))
    .expect("JSON of plain values");
    let id = hex(&Sha256::digest(&config));
    append(&mut out, &format!("{id}.json"), &config, 0o644);
    let manifest = serde_json::to_vec(&json!([
        {"Config": format!("{id}.json"), "RepoTags": [tag], "Layers": names}
    ]))
    .expect("JSON of plain values");
    append(&mut out, "manifest.json", &manifest, 0o644);
    out.into_inner().expect("a tar in memory cannot fail")
}

/// `n` pseudo-random bytes (xorshift from a random seed): layers and files that no other
/// image or build shares.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut x = u64::from_str_radix(&random_hex(8), 16).unwrap_or(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Percent-encoding of everything but unreserved characters (query values).
pub fn url_encode(text: &str) -> String {
    use std::fmt::Write as _;
    text.bytes().fold(String::new(), |mut s, b| {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "%{b:02X}");
        }
        s
    })
}

/// Polls `f` every 200 ms until it gives a value or fails; an error naming `what` after
/// `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A JSON value as a byte count.
pub fn bytes_of(v: &Value) -> Result<u64, String> {
    v.as_u64().ok_or_else(|| format!("not a byte count: {v}"))
}

/// The list `key` of a JSON document.
pub fn list<'a>(doc: &'a Value, key: &str) -> Result<&'a [Value], String> {
    doc[key]
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| format!("no {key:?} list in {doc:#}"))
}

/// The strings at `key` of each item.
pub fn strings(items: &[Value], key: &str) -> std::collections::BTreeSet<String> {
    items
        .iter()
        .filter_map(|v| v[key].as_str().map(str::to_owned))
        .collect()
}
