//! The lab every matrix scenario runs in, on one engine: a random id and its label
//! `imagegc.test=<id>` on everything it makes, references and names of its own
//! (`imagegc-test-<id>/<name>:<tag>`, containers and volumes `imagegc-test-<id>-<name>`), a
//! directory for policy, state and log files, images loaded from tarballs built here
//! (`POST /images/load`; no registry), the engine's own ID of each image (the containerd store
//! names images by manifest digest, so IDs differ per store and are read back from the engine,
//! never computed), containers made with raw API calls (`--network none`), and cleanup of all
//! of it on drop, also when the scenario fails: its containers (unpaused, forced, with their
//! anonymous volumes), the named volumes it made, its labelled images (forced, children first:
//! fine in test cleanup, never in imagegc) and the build-cache records it owns (each by its
//! anchored ID, never a blanket prune). Everything it does runs under the engine's lock, which
//! the trial holds.
//!
//! Every image also carries `imagegc.test.image=<name>`, the lab's own name for it, so that a
//! scenario can say what was removed by name, the same on every engine, whatever the engine
//! calls the image.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::private_engine::{append, hex};
use crate::common::{sleeper_path, LabId, LABEL_KEY};
use crate::engine::MatrixEngine;

/// The label carrying the lab's name of an image.
pub const NAME_KEY: &str = "imagegc.test.image";

/// How many rounds of `rmi -f` the cleanup tries (children before parents).
const CLEANUP_ROUNDS: usize = 6;

/// One image to load.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The lab's name for it (unique in the lab).
    pub name: String,
    /// Full references (`lab.reference(..)`); none makes a dangling image.
    pub tags: Vec<String>,
    /// Its `created` time (whole seconds).
    pub created: DateTime<Utc>,
    /// Random bytes in its own layer.
    pub layer_bytes: usize,
    /// Labels besides the lab's two.
    pub labels: Vec<(String, String)>,
    /// The name of an image earlier in the same [`Lab::load`] call: this image gets its layers
    /// and history plus one layer, and the load tarball names it as parent (graph-driver
    /// stores record that; the others see two images sharing layers).
    pub parent: Option<String>,
    /// Put the sleeper (`/sleeper`: waits for a signal; `/sleeper N` exits N) into its layer.
    pub sleeper: bool,
    /// Its own layers, bottom first, each of these files (path, bytes, mode), instead of one
    /// layer of `layer_bytes` random bytes (and the sleeper).
    pub files: Option<Vec<Vec<LayerFile>>>,
    /// Its command (`Cmd`), if any.
    pub cmd: Vec<String>,
}

/// One file of an image layer: path inside the image, bytes, mode.
pub type LayerFile = (String, Vec<u8>, u32);

impl Spec {
    /// Dangling, 30 days old, 4 KiB layer.
    pub fn new(name: &str) -> Spec {
        Spec {
            name: name.to_owned(),
            tags: Vec::new(),
            created: Utc::now() - TimeDelta::days(30),
            layer_bytes: 4096,
            labels: Vec::new(),
            parent: None,
            sleeper: false,
            files: None,
            cmd: Vec::new(),
        }
    }

    #[must_use]
    pub fn tag(mut self, reference: impl Into<String>) -> Spec {
        self.tags.push(reference.into());
        self
    }

    #[must_use]
    pub fn days_old(mut self, days: i64) -> Spec {
        self.created = Utc::now() - TimeDelta::days(days);
        self
    }

    #[must_use]
    pub fn created(mut self, created: DateTime<Utc>) -> Spec {
        self.created = created;
        self
    }

    #[must_use]
    pub fn bytes(mut self, n: usize) -> Spec {
        self.layer_bytes = n;
        self
    }

    #[must_use]
    pub fn label(mut self, key: &str, value: &str) -> Spec {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }

    #[must_use]
    pub fn parent(mut self, name: &str) -> Spec {
        self.parent = Some(name.to_owned());
        self
    }

    #[must_use]
    pub fn sleeper(mut self) -> Spec {
        self.sleeper = true;
        self
    }

    /// Adds a layer of `files` (path, bytes, mode) on the ones added before.
    #[must_use]
    pub fn layer(mut self, files: &[(&str, &[u8], u32)]) -> Spec {
        self.files.get_or_insert_with(Vec::new).push(
            files
                .iter()
                .map(|(path, data, mode)| ((*path).to_owned(), data.to_vec(), *mode))
                .collect(),
        );
        self
    }

    #[must_use]
    pub fn cmd(mut self, cmd: &[&str]) -> Spec {
        self.cmd = cmd.iter().map(|c| (*c).to_owned()).collect();
        self
    }
}

/// What a built image is made of (to build a child on it).
#[derive(Debug, Clone)]
struct Built {
    config_id: String,
    /// (name in the tarball, layer tar), bottom first.
    layers: Vec<(String, Vec<u8>)>,
    diff_ids: Vec<String>,
    history: Vec<Value>,
}

/// One lab on one engine; removes what it made on drop.
pub struct Lab<'e> {
    /// The engine everything is made on.
    pub engine: &'e MatrixEngine,
    /// Random, in every label value, reference and name (`lab.label()`, `lab.reference(..)`
    /// and the rest through `Deref`).
    id: LabId,
    /// Policy, state and log files.
    dir: tempfile::TempDir,
    /// The lab's name of each image → the engine's ID of it.
    ids: Mutex<BTreeMap<String, String>>,
    /// Containers made here (also found by label at cleanup).
    containers: Mutex<Vec<String>>,
    /// Named volumes made here.
    volumes: Mutex<Vec<String>>,
    /// Build-cache record IDs the lab owns (removed on drop if still there).
    records: Mutex<Vec<String>>,
}

impl<'e> Lab<'e> {
    pub fn new(engine: &'e MatrixEngine) -> Result<Lab<'e>, String> {
        let dir = tempfile::Builder::new()
            .prefix("imagegc-matrix-")
            .tempdir()
            .map_err(|e| format!("a temporary directory: {e}"))?;
        Ok(Lab {
            engine,
            id: LabId::new(),
            dir,
            ids: Mutex::default(),
            containers: Mutex::default(),
            volumes: Mutex::default(),
            records: Mutex::default(),
        })
    }

    /// `imagegc-test-<id>-<name>`: the lab's container or volume `name`.
    pub fn object_name(&self, name: &str) -> String {
        format!("imagegc-test-{}-{name}", self.id())
    }

    /// A path in the lab's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The state file path in the lab's directory (the file does not exist yet).
    pub fn state_path(&self) -> PathBuf {
        self.path("state.json")
    }

    /// Writes `text` to `<dir>/<name>`; its path as text.
    pub fn write(&self, name: &str, text: &str) -> Result<String, String> {
        let path = self.path(name);
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        path.to_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{} is not UTF-8", path.display()))
    }

    /// Writes `policy.toml` into the lab's directory; its path as text.
    pub fn write_policy(&self, text: &str) -> Result<String, String> {
        self.write("policy.toml", text)
    }

    /// Loads `specs` in one tarball and records the engine's ID of each.
    pub fn load(&self, specs: &[Spec]) -> Result<(), String> {
        let mut built: BTreeMap<&str, Built> = BTreeMap::new();
        let mut tarball = tar::Builder::new(Vec::new());
        let mut manifest = Vec::new();
        let mut written = std::collections::HashSet::new();
        for spec in specs {
            let parent = match &spec.parent {
                Some(p) => Some(
                    built
                        .get(p.as_str())
                        .ok_or_else(|| {
                            format!("parent {p} of {} is not loaded before it", spec.name)
                        })?
                        .clone(),
                ),
                None => None,
            };
            let image = self.build(spec, parent.as_ref());
            let mut names = Vec::new();
            for (name, layer) in &image.layers {
                if written.insert(name.clone()) {
                    append(&mut tarball, name, layer, 0o644);
                }
                names.push(name.clone());
            }
            let mut entry = json!({
                "Config": format!("{}.json", image.config_id),
                "RepoTags": spec.tags,
                "Layers": names,
            });
            if let Some(p) = &parent {
                entry["Parent"] = Value::String(format!("sha256:{}", p.config_id));
            }
            manifest.push(entry);
            built.insert(spec.name.as_str(), image);
        }
        for (name, image) in &built {
            let spec = specs
                .iter()
                .find(|s| s.name == *name)
                .expect("built from a spec");
            let config = self.config(spec, image);
            append(
                &mut tarball,
                &format!("{}.json", image.config_id),
                &config,
                0o644,
            );
        }
        let manifest = serde_json::to_vec(&manifest).expect("manifest JSON");
        append(&mut tarball, "manifest.json", &manifest, 0o644);
        let tarball = tarball.into_inner().expect("finish the load tarball");
        self.engine.load_tarball(&tarball)?;
        self.refresh_ids()?;
        let ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        for spec in specs {
            if !ids.contains_key(&spec.name) {
                return Err(format!(
                    "{}: {} was loaded but is not listed with its label",
                    self.engine.name, spec.name
                ));
            }
        }
        Ok(())
    }

    /// The layer and history of `spec` on `parent`; its config ID is computed by
    /// [`Lab::config`] (the tarball names the config file by it).
    fn build(&self, spec: &Spec, parent: Option<&Built>) -> Built {
        let created = DateTime::from_timestamp(spec.created.timestamp(), 0).expect("a valid time");
        let own: Vec<Vec<LayerFile>> = spec.files.clone().unwrap_or_else(|| {
            let mut files = vec![(
                format!("data-{}-{}", self.id(), spec.name),
                random_bytes(spec.layer_bytes),
                0o644,
            )];
            if spec.sleeper {
                let sleeper = std::fs::read(sleeper_path()).expect("read the sleeper");
                files.push(("sleeper".to_owned(), sleeper, 0o755));
            }
            vec![files]
        });
        let mut layers = parent.map(|p| p.layers.clone()).unwrap_or_default();
        let mut diff_ids = parent.map(|p| p.diff_ids.clone()).unwrap_or_default();
        let mut history = parent.map(|p| p.history.clone()).unwrap_or_default();
        for (n, files) in own.iter().enumerate() {
            let mut layer = tar::Builder::new(Vec::new());
            for (path, data, mode) in files {
                append(&mut layer, path, data, *mode);
            }
            let layer = layer.into_inner().expect("finish a layer tar");
            let digest = hex(&Sha256::digest(&layer));
            layers.push((format!("{digest}/layer.tar"), layer));
            diff_ids.push(format!("sha256:{digest}"));
            history.push(json!({
                "created": created.to_rfc3339_opts(SecondsFormat::Secs, true),
                "created_by": format!("imagegc matrix layer {} {n}", spec.name),
            }));
        }
        let mut image = Built {
            config_id: String::new(),
            layers,
            diff_ids,
            history,
        };
        image.config_id = hex(&Sha256::digest(self.config(spec, &image)));
        image
    }

    fn config(&self, spec: &Spec, image: &Built) -> Vec<u8> {
        let created = DateTime::from_timestamp(spec.created.timestamp(), 0).expect("a valid time");
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_KEY.to_owned(), self.id().to_owned());
        labels.insert(NAME_KEY.to_owned(), spec.name.clone());
        for (k, v) in &spec.labels {
            labels.insert(k.clone(), v.clone());
        }
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let mut config = json!({"Labels": labels});
        if !spec.cmd.is_empty() {
            config["Cmd"] = json!(spec.cmd);
        }
        serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "created": created.to_rfc3339_opts(SecondsFormat::Secs, true),
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": image.diff_ids},
            "history": image.history,
        }))
        .expect("config JSON")
    }

    /// Reads the engine's ID of every lab image (by its name label).
    pub fn refresh_ids(&self) -> Result<(), String> {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        for image in self.images()? {
            if let (Some(id), Some(name)) =
                (image["Id"].as_str(), image["Labels"][NAME_KEY].as_str())
            {
                ids.insert(name.to_owned(), id.to_owned());
            }
        }
        Ok(())
    }

    /// The engine's listing (`/images/json?all=1`) of the lab's images.
    pub fn images(&self) -> Result<Vec<Value>, String> {
        let list = self.engine.get(&format!(
            "/images/json?all=1&filters={}",
            self.label_filter()
        ))?;
        Ok(list.as_array().cloned().unwrap_or_default())
    }

    /// The engine's ID of the lab image `name`.
    pub fn image_id(&self, name: &str) -> String {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no lab image {name}"))
    }

    /// The lab's name of the image the engine calls `id`.
    pub fn name_of(&self, id: &str) -> Option<String> {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(_, v)| *v == id)
            .map(|(k, _)| k.clone())
    }

    /// Whether the engine has an image `reference` (a reference or an ID).
    pub fn image_exists(&self, reference: &str) -> Result<bool, String> {
        self.exists("images", reference)
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

    /// `POST /containers/create` of `image` running `cmd`, labelled, no network; its ID.
    pub fn create_container(&self, image: &str, cmd: &[&str]) -> Result<String, String> {
        let answer = self.create_container_raw(None, image, cmd, &json!({}), &[])?;
        self.created_id(image, answer)
    }

    /// [`Lab::create_container`] named [`Lab::object_name`]`(name)`.
    pub fn create_named_container(
        &self,
        name: &str,
        image: &str,
        cmd: &[&str],
    ) -> Result<String, String> {
        let answer = self.create_container_raw(Some(name), image, cmd, &json!({}), &[])?;
        self.created_id(image, answer)
    }

    /// The container ID in the answer of [`Lab::create_container_raw`] for `image`, or an
    /// error unless it is a 201.
    pub fn created_id(
        &self,
        image: &str,
        (status, body): (u16, Vec<u8>),
    ) -> Result<String, String> {
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status != 201 {
            return Err(format!(
                "create a container of {image} on {}: {status} {}",
                self.engine.name,
                String::from_utf8_lossy(&body)
            ));
        }
        answer["Id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("create answer without Id: {answer}"))
    }

    /// The create call itself (status and body), named [`Lab::object_name`]`(name)` if given,
    /// with `host_config` merged into its `HostConfig` and anonymous `volumes`, for a caller
    /// that expects it may fail or wants more than [`Lab::create_container`]; a container it
    /// makes is tracked for cleanup.
    pub fn create_container_raw(
        &self,
        name: Option<&str>,
        image: &str,
        cmd: &[&str],
        host_config: &Value,
        volumes: &[&str],
    ) -> Result<(u16, Vec<u8>), String> {
        let mut host = json!({"NetworkMode": "none"});
        if let (Some(h), Some(extra)) = (host.as_object_mut(), host_config.as_object()) {
            for (k, v) in extra {
                h.insert(k.clone(), v.clone());
            }
        }
        let mut body = json!({
            "Image": image,
            "Cmd": cmd,
            "Labels": {LABEL_KEY: self.id()},
            "HostConfig": host,
        });
        if !volumes.is_empty() {
            let vols: serde_json::Map<String, Value> = volumes
                .iter()
                .map(|v| ((*v).to_owned(), json!({})))
                .collect();
            body["Volumes"] = Value::Object(vols);
        }
        let body = serde_json::to_vec(&body).expect("create JSON");
        let path = name.map_or_else(
            || "/containers/create".to_owned(),
            |n| {
                format!(
                    "/containers/create?name={}",
                    url_encode(&self.object_name(n))
                )
            },
        );
        let answer = self
            .engine
            .request("POST", &path, Some("application/json"), &body)?;
        if answer.0 == 201 {
            if let Some(id) = serde_json::from_slice::<Value>(&answer.1)
                .ok()
                .and_then(|v| v["Id"].as_str().map(str::to_owned))
            {
                self.containers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(id);
            }
        }
        Ok(answer)
    }

    /// A named volume [`Lab::object_name`]`(name)`, labelled; its name.
    pub fn create_volume(&self, name: &str) -> Result<String, String> {
        let full = self.object_name(name);
        let body = json!({"Name": full, "Labels": {LABEL_KEY: self.id()}});
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
        self.volumes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(full.clone());
        Ok(full)
    }

    /// `POST <path>` expecting 200 or 204 (or 304: already so).
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

    /// Starts container `id`.
    pub fn start(&self, id: &str) -> Result<(), String> {
        self.post_ok(&format!("/containers/{id}/start"))
    }

    /// Waits for container `id` to exit; its exit code.
    pub fn wait(&self, id: &str) -> Result<i64, String> {
        let (status, body) =
            self.engine
                .request("POST", &format!("/containers/{id}/wait"), None, &[])?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status != 200 {
            return Err(format!("wait {id} on {}: {status} {v}", self.engine.name));
        }
        v["StatusCode"]
            .as_i64()
            .ok_or_else(|| format!("wait {id}: no StatusCode in {v}"))
    }

    /// A container that ran `/sleeper 0` and exited 0 (the image needs the sleeper).
    pub fn exited_container(&self, image: &str) -> Result<String, String> {
        let id = self.create_container(image, &["/sleeper", "0"])?;
        self.start(&id)?;
        let code = self.wait(&id)?;
        if code != 0 {
            return Err(format!("the sleeper exited {code}"));
        }
        Ok(id)
    }

    /// A container running `/sleeper` (the image needs the sleeper).
    pub fn running_container(&self, image: &str) -> Result<String, String> {
        let id = self.create_container(image, &["/sleeper"])?;
        self.start(&id)?;
        Ok(id)
    }

    /// The lab's containers as the engine lists them (`all=1`).
    pub fn containers(&self) -> Result<Vec<Value>, String> {
        let list = self.engine.get(&format!(
            "/containers/json?all=1&filters={}",
            self.label_filter()
        ))?;
        Ok(list.as_array().cloned().unwrap_or_default())
    }

    /// Remembers build-cache records the lab made, to remove them on drop if a pass did not.
    pub fn own_records(&self, ids: impl IntoIterator<Item = String>) {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(ids);
    }

    /// `imagegc --config <policy> ARGS… --output json` against the engine, as JSON; an error
    /// with its output unless it exits 0.
    pub fn imagegc_json(&self, policy: &str, args: &[&str]) -> Result<Value, String> {
        let mut all = vec!["--config", policy];
        all.extend(args);
        all.extend(["--output", "json"]);
        let out = self.engine.imagegc(&all);
        if !out.status.success() {
            return Err(format!(
                "imagegc {} on {}: {}\nstdout: {}\nstderr: {}",
                all.join(" "),
                self.engine.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "imagegc {} on {}: not JSON ({e}): {}",
                all.join(" "),
                self.engine.name,
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `{"label":["imagegc.test=<id>"]}`, percent-encoded for a query string.
    fn label_filter(&self) -> String {
        url_encode(&json!({"label": [self.label()]}).to_string())
    }

    /// Removes the lab's containers, volumes, images and build-cache records; never panics.
    fn cleanup(&self) {
        let e = self.engine;
        let mut containers = self
            .containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Ok(listed) = self.containers() {
            containers.extend(
                listed
                    .iter()
                    .filter_map(|c| c["Id"].as_str().map(str::to_owned)),
            );
        }
        containers.sort();
        containers.dedup();
        for id in &containers {
            // A paused container must be unpaused before a forced removal on some engines;
            // harmless otherwise.
            let _ = e.request("POST", &format!("/containers/{id}/unpause"), None, &[]);
            let _ = e.request(
                "DELETE",
                &format!("/containers/{id}?force=1&v=1"),
                None,
                &[],
            );
        }
        for v in self
            .volumes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = e.request("DELETE", &format!("/volumes/{v}?force=1"), None, &[]);
        }
        let mut left: Vec<String> = Vec::new();
        for _ in 0..CLEANUP_ROUNDS {
            let Ok(images) = self.images() else { break };
            let ids: Vec<String> = images
                .iter()
                .filter_map(|i| i["Id"].as_str().map(str::to_owned))
                .collect();
            if ids.is_empty() {
                left.clear();
                break;
            }
            for id in &ids {
                let _ = e.request("DELETE", &format!("/images/{id}?force=1"), None, &[]);
            }
            left = ids;
        }
        if !left.is_empty() {
            eprintln!(
                "warning: lab {} on {} may have left images behind: {}",
                self.id(),
                e.name,
                left.join(" ")
            );
        }
        for id in self
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
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

impl std::ops::Deref for Lab<'_> {
    type Target = LabId;

    fn deref(&self) -> &LabId {
        &self.id
    }
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Percent-encoding of everything but unreserved characters (query values).
pub fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `n` random bytes: layers and files that no other image or build shares.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes
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
