//! Scenario `api`: the raw answers of every call imagegc's adapter makes, on each engine.
//!
//! It makes a small labelled set (a multi-tag base, a child on it with a `Parent` link where the
//! engine keeps one, an untagged image, a created container on the child), then asks for the
//! image list, one image's inspect and history, the container list, `/system/df`, a bounded
//! window of events, the answers of removals (`noprune=1`: an untag, a whole image, the last tag
//! of a parent, the child of a parent left untagged) and an anchored `POST /build/prune`.
//!
//! With `IMAGEGC_RECORD_FIXTURES=1` it writes them to `tests/fixtures/engines/<engine>/` (one
//! file per call: method, path, status, body; `tests/engine_fixtures.rs` replays them to the real
//! adapter). Otherwise it checks that the live answers still have the shapes the fixtures show:
//! the same keys, each with the same kinds of value (null, list, object, text, number,
//! boolean), never the values themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::Utc;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::Finding;
use crate::common::random_hex;
use crate::engine::MatrixEngine;

/// The label every image and container of one run carries, with the run's id as value.
const LAB_LABEL: &str = "imagegc.api.lab";

/// Where the fixtures are.
fn fixture_dir(engine: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/engines")
        .join(engine)
}

fn recording() -> bool {
    std::env::var_os("IMAGEGC_RECORD_FIXTURES").is_some_and(|v| v == "1")
}

/// One recorded exchange.
struct Exchange {
    name: &'static str,
    method: &'static str,
    /// The path and query as the adapter sends them, without the version prefix.
    path: String,
    status: u16,
    body: Value,
}

pub fn run(engine: &MatrixEngine) -> Result<Finding, String> {
    let lab = random_hex(4);
    let guard = Cleanup {
        engine: engine.clone(),
        lab: lab.clone(),
    };
    let since = Utc::now().timestamp() - 1;
    let set = make_set(engine, &lab)?;
    let answers: Vec<Exchange> = ask_all(engine, &set, since)?
        .into_iter()
        .map(|mut a| {
            a.body = trim(a.name, a.body, &lab, &set);
            a
        })
        .collect();
    if recording() {
        write(engine, &answers)?;
    } else {
        check(engine, &answers)?;
    }
    drop(guard);
    let prune = answers
        .iter()
        .find(|a| a.name == "build_prune")
        .map_or(0, |a| a.status);
    Ok(Finding::new(if prune == 404 {
        "shapes as recorded; no build cache (404)"
    } else {
        "shapes as recorded"
    }))
}

/// Every call, in order, on the set: removals last but the lists after them.
fn ask_all(engine: &MatrixEngine, set: &Set, since: i64) -> Result<Vec<Exchange>, String> {
    let mut answers = Vec::new();
    let mut call =
        |name: &'static str, method: &'static str, path: String| -> Result<Value, String> {
            let (status, body) = engine.request(method, &path, None, &[])?;
            let body = parse_body(&body);
            answers.push(Exchange {
                name,
                method,
                path,
                status,
                body: body.clone(),
            });
            Ok(body)
        };

    call("version", "GET", "/version".to_owned())?;
    call("info", "GET", "/info".to_owned())?;
    call("images", "GET", "/images/json?all=1".to_owned())?;
    // `manifests` is API 1.47+; older engines must ignore it.
    call(
        "images_manifests",
        "GET",
        "/images/json?all=1&manifests=1".to_owned(),
    )?;
    call(
        "image_inspect",
        "GET",
        format!("/images/{}/json", set.child_id),
    )?;
    call(
        "image_history",
        "GET",
        format!("/images/{}/history", set.child_id),
    )?;
    call(
        "image_inspect_untagged",
        "GET",
        format!("/images/{}/json", set.loose_id),
    )?;
    call("containers", "GET", "/containers/json?all=1".to_owned())?;
    call("system_df", "GET", "/system/df".to_owned())?;
    call(
        "image_missing",
        "GET",
        format!("/images/sha256:{}/json", "0".repeat(64)),
    )?;
    // Removals, as the adapter sends them (never forced, never pruning).
    call(
        "delete_one_tag",
        "DELETE",
        format!("/images/{}?force=false&noprune=true", set.base_second_tag),
    )?;
    call(
        "delete_untagged",
        "DELETE",
        format!("/images/{}?force=false&noprune=true", set.loose_id),
    )?;
    let (status, _) = engine.request(
        "DELETE",
        &format!("/containers/{}?v=false&force=false", set.container_id),
        None,
        &[],
    )?;
    if status != 204 {
        return Err(format!("removing the lab container answered {status}"));
    }
    call(
        "delete_parent_last_tag",
        "DELETE",
        format!("/images/{}?force=false&noprune=true", set.base_first_tag),
    )?;
    call(
        "delete_child",
        "DELETE",
        format!("/images/{}?force=false&noprune=true", set.child_id),
    )?;
    call("images_after", "GET", "/images/json?all=1".to_owned())?;
    call(
        "build_prune",
        "POST",
        format!(
            "/build/prune?all=true&filters={}",
            encode(r#"{"id":["^imagegcapifixture0000000000$"]}"#)
        ),
    )?;
    let until = Utc::now().timestamp() + 1;
    call(
        "events",
        "GET",
        format!(
            "/events?since={since}&until={until}&filters={}",
            encode(
                r#"{"type":["container","image"],"event":["create","start","die","destroy","remove","pull","tag","untag","delete","load","import"]}"#
            )
        ),
    )?;

    Ok(answers)
}

/// Writes the answers as the engine's fixtures.
fn write(engine: &MatrixEngine, answers: &[Exchange]) -> Result<(), String> {
    let dir = fixture_dir(&engine.name);
    {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for a in answers {
            let file = dir.join(format!("{}.json", a.name));
            let doc =
                json!({"method": a.method, "path": a.path, "status": a.status, "body": a.body});
            let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())? + "\n";
            std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
        }
        eprintln!(
            "{}: recorded {} answers in {}",
            engine.name,
            answers.len(),
            dir.display()
        );
    }
    Ok(())
}

/// Compares the answers' shapes with the engine's fixtures'.
fn check(engine: &MatrixEngine, answers: &[Exchange]) -> Result<(), String> {
    let dir = fixture_dir(&engine.name);
    {
        let mut differences = Vec::new();
        for a in answers {
            let file = dir.join(format!("{}.json", a.name));
            let text = std::fs::read_to_string(&file).map_err(|e| {
                format!(
                    "{}: {e} (record with IMAGEGC_RECORD_FIXTURES=1)",
                    file.display()
                )
            })?;
            let doc: Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            if doc["status"].as_u64() != Some(u64::from(a.status)) {
                differences.push(format!(
                    "{}: status {} (fixture {})",
                    a.name, a.status, doc["status"]
                ));
            }
            // Podman's answer for a bounded window varies from run to run (none, the
            // container events only, or all): an empty answer (no body, or an empty list)
            // on either side is not compared.
            let empty = |v: &Value| v.is_null() || v.as_array().is_some_and(Vec::is_empty);
            if a.name == "events" && (empty(&doc["body"]) || empty(&a.body)) {
                eprintln!(
                    "{}: no events of the set in one of the windows",
                    engine.name
                );
                continue;
            }
            let (want, got) = (shape(&doc["body"]), shape(&a.body));
            for missing in want.difference(&got) {
                differences.push(format!("{}: no longer {missing}", a.name));
            }
            for extra in got.difference(&want) {
                differences.push(format!("{}: now also {extra}", a.name));
            }
        }
        if !differences.is_empty() {
            return Err(format!(
                "{}: the answers no longer have the fixtures' shapes:\n  {}",
                engine.name,
                differences.join("\n  ")
            ));
        }
    }
    Ok(())
}

/// What [`make_set`] made.
struct Set {
    child_id: String,
    loose_id: String,
    base_first_tag: String,
    base_second_tag: String,
    container_id: String,
}

/// Loads the images and creates the container.
fn make_set(engine: &MatrixEngine, lab: &str) -> Result<Set, String> {
    let repo = format!("imagegc-api-{lab}");
    let base_layer = layer_tar(&format!("base-{lab}"), 3000);
    let child_layer = layer_tar(&format!("child-{lab}"), 2000);
    let loose_layer = layer_tar(&format!("loose-{lab}"), 1000);
    let base = config(lab, &[&base_layer]);
    let child = config(lab, &[&base_layer, &child_layer]);
    let loose = config(lab, &[&loose_layer]);
    let base_first_tag = format!("{repo}/base:1");
    let base_second_tag = format!("{repo}/base:2");
    let child_tag = format!("{repo}/child:1");
    let with_parent = tarball(&[
        (
            &base,
            vec![&base_layer],
            json!([base_first_tag, base_second_tag]),
            None,
        ),
        (
            &child,
            vec![&base_layer, &child_layer],
            json!([child_tag]),
            Some(format!("sha256:{}", hex(&base))),
        ),
        (&loose, vec![&loose_layer], Value::Null, None),
    ]);
    if engine.load_tarball(&with_parent).is_err() {
        // An engine that refuses the Parent link gets the same set without it.
        let plain = tarball(&[
            (
                &base,
                vec![&base_layer],
                json!([base_first_tag, base_second_tag]),
                None,
            ),
            (
                &child,
                vec![&base_layer, &child_layer],
                json!([child_tag]),
                None,
            ),
            (&loose, vec![&loose_layer], Value::Null, None),
        ]);
        engine.load_tarball(&plain)?;
    }
    let child_id = engine.image_id(&child_tag)?;
    let loose_id = lab_images(engine, lab)?
        .into_iter()
        .find(|(_, tags)| tags.iter().all(|t| t.starts_with("<none>")))
        .map(|(id, _)| id)
        .ok_or_else(|| format!("{}: the untagged lab image is not listed", engine.name))?;
    let create = json!({
        "Image": child_tag,
        "Cmd": ["/nothing"],
        "Labels": {LAB_LABEL: lab},
        "NetworkDisabled": true,
        "HostConfig": {"NetworkMode": "none"},
    });
    let (status, body) = engine.request(
        "POST",
        "/containers/create",
        Some("application/json"),
        create.to_string().as_bytes(),
    )?;
    let created = parse_body(&body);
    let container_id = created["Id"]
        .as_str()
        .filter(|_| status == 201)
        .ok_or_else(|| {
            format!(
                "{}: container create answered {status} {created}",
                engine.name
            )
        })?
        .to_owned();
    Ok(Set {
        child_id,
        loose_id,
        base_first_tag,
        base_second_tag,
        container_id,
    })
}

/// The lab's images: ID and `RepoTags` (as listed).
fn lab_images(engine: &MatrixEngine, lab: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let list = engine.get("/images/json?all=1")?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["Labels"][LAB_LABEL] == lab)
        .map(|i| {
            let tags = i["RepoTags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect();
            (i["Id"].as_str().unwrap_or_default().to_owned(), tags)
        })
        .collect())
}

/// Removes what the run made, whatever happened.
struct Cleanup {
    engine: MatrixEngine,
    lab: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filters = encode(&format!(r#"{{"label":["{LAB_LABEL}={}"]}}"#, self.lab));
        if let Ok(list) = self
            .engine
            .get(&format!("/containers/json?all=1&filters={filters}"))
        {
            for c in list.as_array().into_iter().flatten() {
                if let Some(id) = c["Id"].as_str() {
                    let _ = self.engine.request(
                        "DELETE",
                        &format!("/containers/{id}?force=true"),
                        None,
                        &[],
                    );
                }
            }
        }
        // Children first: the deepest (most layers) go first.
        for _ in 0..3 {
            let Ok(list) = self.engine.get("/images/json?all=1") else {
                return;
            };
            let mut mine: Vec<(usize, String)> = list
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| i["Labels"][LAB_LABEL] == self.lab.as_str())
                .filter_map(|i| {
                    Some((
                        i["Size"].as_u64().unwrap_or(0) as usize,
                        i["Id"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            if mine.is_empty() {
                return;
            }
            mine.sort();
            for (_, id) in mine.iter().rev() {
                let _ =
                    self.engine
                        .request("DELETE", &format!("/images/{id}?force=true"), None, &[]);
            }
        }
    }
}

/// Keeps each answer small and about the lab: only the lab's images and containers, no
/// host-wide lists, and at most one build-cache record.
fn trim(name: &str, body: Value, lab: &str, set: &Set) -> Value {
    let mine = |v: &Value| v["Labels"][LAB_LABEL] == lab;
    match (name, body) {
        ("images" | "images_manifests" | "images_after" | "containers", Value::Array(items)) => {
            Value::Array(items.into_iter().filter(mine).collect())
        }
        ("system_df", Value::Object(mut df)) => {
            for key in ["Images", "Containers"] {
                if let Some(Value::Array(items)) = df.get_mut(key) {
                    items.retain(mine);
                }
            }
            if let Some(Value::Array(items)) = df.get_mut("Volumes") {
                items.clear();
            }
            if let Some(Value::Array(items)) = df.get_mut("BuildCache") {
                items.truncate(1);
            }
            Value::Object(df)
        }
        ("info", Value::Object(info)) => {
            let keep = [
                "Driver",
                "DriverStatus",
                "DockerRootDir",
                "ServerVersion",
                "OperatingSystem",
                "Containers",
                "Images",
            ];
            Value::Object(
                info.into_iter()
                    .filter(|(k, _)| keep.contains(&k.as_str()))
                    .collect(),
            )
        }
        ("events", Value::Array(items)) => Value::Array(
            items
                .into_iter()
                .filter(|e| {
                    let id = e["Actor"]["ID"].as_str().unwrap_or_default();
                    let attrs = &e["Actor"]["Attributes"];
                    // Podman names images by bare hex IDs.
                    let bare = |full: &str| full.strip_prefix("sha256:") == Some(id);
                    attrs[LAB_LABEL] == lab
                        || bare(&set.child_id)
                        || bare(&set.loose_id)
                        || id == set.child_id
                        || id == set.loose_id
                        || id == set.container_id
                        || id.contains(lab)
                        || attrs["name"].as_str().is_some_and(|n| n.contains(lab))
                })
                .collect(),
        ),
        (_, body) => body,
    }
}

/// A body as JSON: one value, a stream of values (events: a list), text, or nothing.
fn parse_body(body: &[u8]) -> Value {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    if let Ok(v) = serde_json::from_slice(body) {
        return v;
    }
    let values: Result<Vec<Value>, _> = serde_json::Deserializer::from_slice(body)
        .into_iter()
        .collect();
    values.map_or_else(
        |_| Value::String(String::from_utf8_lossy(body).into_owned()),
        Value::Array,
    )
}

/// The shape of a value: every key path with the kind of its value (`.Images[].RepoTags: list`),
/// list elements merged. Values inside `BuildCache` are left out: the engine's records are
/// not the lab's, so whether there are any changes from run to run.
pub fn shape(value: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(value, "", &mut out);
    out
}

fn walk(value: &Value, path: &str, out: &mut BTreeSet<String>) {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "text",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    };
    out.insert(format!("{path}: {kind}"));
    if path.ends_with(".BuildCache") {
        return;
    }
    match value {
        Value::Array(items) => {
            for item in items {
                walk(item, &format!("{path}[]"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                // Maps keyed by data (labels, driver data) have keys that are values.
                if matches!(
                    k.as_str(),
                    "Labels" | "Data" | "Attributes" | "ExposedPorts" | "Volumes"
                ) {
                    out.insert(format!(
                        "{path}.{k}: {}",
                        if v.is_null() { "null" } else { "map" }
                    ));
                    continue;
                }
                walk(v, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// A layer tar holding one file of `bytes` bytes.
fn layer_tar(name: &str, bytes: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let data = vec![7u8; bytes];
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    builder
        .append_data(&mut header, name, data.as_slice())
        .expect("a layer tar in memory");
    builder.into_inner().expect("finish a layer tar")
}

/// An image config over `layers`, labelled with the lab.
fn config(lab: &str, layers: &[&Vec<u8>]) -> Vec<u8> {
    // One time for every image of the set: a parent link needs the child's history to start
    // with the parent's, entry for entry.
    let created = "2026-12-01T00:00:00Z";
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", hex_of(l)))
        .collect();
    let history: Vec<Value> = (0..layers.len())
        .map(|n| json!({"created": created, "created_by": format!("layer {n}")}))
        .collect();
    let labels: BTreeMap<&str, &str> = BTreeMap::from([(LAB_LABEL, lab)]);
    serde_json::to_vec(&json!({
        "architecture": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a },
        "os": "linux",
        "created": created,
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }))
    .expect("config JSON")
}

type TarImage<'a> = (&'a Vec<u8>, Vec<&'a Vec<u8>>, Value, Option<String>);

/// A `docker save` tarball of these images (config, layers, tags, parent ID).
fn tarball(images: &[TarImage<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut seen = BTreeSet::new();
    let mut manifest = Vec::new();
    for (config, layers, tags, parent) in images {
        let mut names = Vec::new();
        for layer in layers {
            let name = format!("{}/layer.tar", hex_of(layer));
            if seen.insert(name.clone()) {
                append(&mut builder, &name, layer);
            }
            names.push(name);
        }
        let config_name = format!("{}.json", hex_of(config));
        append(&mut builder, &config_name, config);
        let mut entry = json!({"Config": config_name, "RepoTags": tags, "Layers": names});
        if let Some(parent) = parent {
            entry["Parent"] = Value::String(parent.clone());
        }
        manifest.push(entry);
    }
    let manifest = serde_json::to_vec(&manifest).expect("manifest JSON");
    append(&mut builder, "manifest.json", &manifest);
    builder.into_inner().expect("finish the tarball")
}

fn append(builder: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    builder
        .append_data(&mut header, name, data)
        .expect("a tar entry in memory");
}

fn hex_of(bytes: &[u8]) -> String {
    hex(bytes)
}

/// The SHA-256 of `bytes` in hex.
fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut text, b| {
            let _ = write!(text, "{b:02x}");
            text
        })
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
