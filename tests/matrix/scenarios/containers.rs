//! Scenario `containers`: one pass of a `[[containers]]` policy (`states = ["exited",
//! "created"]`, `exited_for = "2s"`) beside an image policy (`older_than = "7d"`) on an engine
//! littered with finished CI jobs, as `tests/containers_scenario.rs` does on the private engine:
//!
//! - exited jobs (each wrote megabytes into its writable layer) and a never-started one are
//!   removed, one of them with a named and an anonymous volume, which both stay;
//! - a running, a paused, a `restart: always` (stopped) and a protected (`protect_containers`)
//!   container are kept, and so are their images;
//! - the images only the removed containers pinned go in the same pass;
//! - each container's bytes, planned and reported, are its `SizeRw`; the plan's prediction is the
//!   pass's report; and the data root's drop on disk is compared with it (within 1% plus
//!   160 KiB per container and 64 KiB per image of metadata).
//!
//! Containers run the static `fill` inside their image (the chroot engines cannot see host
//! paths). Where containers cannot be started (Podman 4.3 here: runc fails setting rlimits),
//! the same scene is made of never-started containers only (no running or paused one), and the
//! cell says so.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::{json, Value};

use super::Finding;
use crate::common::private_engine::fill_binary;
use crate::engine::MatrixEngine;
use crate::lab::{bytes_of, list, random_bytes, strings, wait_for, Lab, Spec};

const MB: usize = 1_000_000;

/// Filesystem metadata one image removal may free or keep beyond the bytes it predicts.
const IMAGE_METADATA_SLACK: u64 = 64 * 1024;

/// Filesystem metadata one container removal frees beyond its `SizeRw` (136 KiB measured on
/// 20.10 with fuse-overlayfs, see docs/ENGINES.md), with room.
const CONTAINER_METADATA_SLACK: u64 = 160 * 1024;

/// What a container of the scene is made to be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Ran, wrote this many bytes, exited: removed.
    Exited(usize),
    /// Never started: removed (the policy lists `created`).
    Created,
    /// Still running after writing: kept.
    Running(usize),
    /// Paused after writing: kept.
    Paused(usize),
    /// `restart: always`, stopped after writing (or never started): kept.
    Always(Option<usize>),
    /// Exited (or never started), named in `protect_containers`: kept.
    Protected(Option<usize>),
}

impl Kind {
    fn removed(self) -> bool {
        matches!(self, Kind::Exited(_) | Kind::Created)
    }

    /// The same container where nothing can be started, or `None` when it cannot be made.
    fn never_started(self) -> Option<Kind> {
        match self {
            Kind::Exited(_) | Kind::Created => Some(Kind::Created),
            Kind::Running(_) | Kind::Paused(_) => None,
            Kind::Always(_) => Some(Kind::Always(None)),
            Kind::Protected(_) => Some(Kind::Protected(None)),
        }
    }
}

/// The scene: (container name, image name, kind, with volumes).
const SCENE: &[(&str, &str, Kind, bool)] = &[
    ("job-1", "a", Kind::Exited(3 * MB), false),
    ("job-2", "a", Kind::Exited(MB), false),
    ("never", "a", Kind::Created, false),
    ("job-3", "b", Kind::Exited(2 * MB), true),
    ("running", "c", Kind::Running(MB), false),
    ("paused", "e", Kind::Paused(MB), false),
    ("always", "f", Kind::Always(Some(MB)), false),
    ("protected", "d", Kind::Protected(Some(MB)), false),
];

fn fill_args(bytes: usize, linger: bool) -> Vec<String> {
    let mut args = vec!["/fill".to_owned(), "/out".to_owned(), bytes.to_string()];
    if linger {
        args.push("600".to_owned());
    }
    args
}

fn size_rw(engine: &MatrixEngine, id: &str) -> Result<u64, String> {
    let v = engine.get(&format!("/containers/{id}/json?size=1"))?;
    bytes_of(&v["SizeRw"]).map_err(|e| format!("SizeRw of {id}: {e}"))
}

fn state_of(engine: &MatrixEngine, id: &str) -> Result<String, String> {
    let v = engine.get(&format!("/containers/{id}/json"))?;
    Ok(v["State"]["Status"].as_str().unwrap_or("?").to_owned())
}

/// Starts `id` and waits for it to exit 0.
fn run_to_exit(lab: &Lab<'_>, id: &str) -> Result<(), String> {
    lab.post_ok(&format!("/containers/{id}/start"))?;
    let (status, body) =
        lab.engine
            .request("POST", &format!("/containers/{id}/wait"), None, &[])?;
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status != 200 || answer["StatusCode"] != 0 {
        return Err(format!("wait for {id}: {status} {answer}"));
    }
    Ok(())
}

/// Starts `id` (which writes `bytes`, then sleeps) and waits until its writable layer holds them.
fn start_and_fill(lab: &Lab<'_>, id: &str, bytes: usize) -> Result<(), String> {
    lab.post_ok(&format!("/containers/{id}/start"))?;
    wait_for(
        "a lingering container to write its bytes",
        Duration::from_secs(60),
        || Ok((size_rw(lab.engine, id)? >= bytes as u64).then_some(())),
    )
}

/// Whether this engine starts containers here: a probe of `image` that runs `fill` once.
fn can_start(lab: &Lab<'_>, image: &str) -> Result<Result<(), String>, String> {
    let probe = lab.create_named_container("probe", image, &["/fill", "/out", "1"])?;
    let started = run_to_exit(lab, &probe);
    let _ = lab.engine.request(
        "DELETE",
        &format!("/containers/{probe}?force=true"),
        None,
        &[],
    );
    Ok(started)
}

#[allow(clippy::too_many_lines)]
pub fn run(engine: &MatrixEngine) -> Result<Finding, String> {
    let lab = Lab::new(engine)?;
    let old = Utc::now() - TimeDelta::days(30);
    let fill = fill_binary();
    let mut images = std::collections::BTreeMap::new();
    let load = |name: &str, bytes: usize| {
        lab.load(&[Spec::new(name)
            .tag(lab.reference(name, "1"))
            .created(old)
            .layer(&[("fill", fill, 0o755)])
            .layer(&[(&format!("{name}.bin"), &random_bytes(bytes), 0o644)])
            .cmd(&["/fill", "/out", "1"])])?;
        Ok::<_, String>(lab.image_id(name))
    };
    images.insert("a", load("a", 2 * MB)?);
    let startable = can_start(&lab, &lab.reference("a", "1"))?;
    if let Err(why) = &startable {
        if engine.is_docker() {
            return Err(format!("{} cannot start a container: {why}", engine.name));
        }
        eprintln!(
            "[{}] containers cannot be started here ({why}): never-started containers only",
            engine.name
        );
    }
    let scene: Vec<(&str, &str, Kind, bool)> = SCENE
        .iter()
        .filter_map(|&(name, image, kind, volumes)| {
            let kind = if startable.is_ok() {
                Some(kind)
            } else {
                kind.never_started()
            };
            kind.map(|k| (name, image, k, volumes))
        })
        .collect();
    for (_, image, _, _) in &scene {
        if !images.contains_key(image) {
            images.insert(image, load(image, MB)?);
        }
    }

    let volume = lab.create_volume("data")?;
    let mut ids = std::collections::BTreeMap::new();
    for &(name, image, kind, volumes) in &scene {
        let host = match kind {
            Kind::Always(_) => json!({"RestartPolicy": {"Name": "always"}}),
            _ if volumes => json!({"Binds": [format!("{volume}:/named")]}),
            _ => json!({}),
        };
        let cmd = match kind {
            Kind::Exited(n) | Kind::Protected(Some(n)) => fill_args(n, false),
            Kind::Running(n) | Kind::Paused(n) | Kind::Always(Some(n)) => fill_args(n, true),
            Kind::Created | Kind::Always(None) | Kind::Protected(None) => fill_args(1, false),
        };
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let anon: &[&str] = if volumes { &["/anon"] } else { &[] };
        let reference = lab.reference(image, "1");
        let answer = lab.create_container_raw(Some(name), &reference, &cmd, &host, anon)?;
        let id = lab.created_id(&reference, answer)?;
        match kind {
            Kind::Exited(_) | Kind::Protected(Some(_)) => run_to_exit(&lab, &id)?,
            Kind::Running(n) => start_and_fill(&lab, &id, n)?,
            Kind::Paused(n) => {
                start_and_fill(&lab, &id, n)?;
                lab.post_ok(&format!("/containers/{id}/pause"))?;
            }
            Kind::Always(Some(n)) => {
                start_and_fill(&lab, &id, n)?;
                lab.post_ok(&format!("/containers/{id}/stop?t=1"))?;
            }
            Kind::Created | Kind::Always(None) | Kind::Protected(None) => {}
        }
        ids.insert(name, id);
    }
    let anonymous = match scene.iter().find(|s| s.3) {
        Some((name, ..)) => {
            let v = engine.get(&format!("/containers/{}/json", ids[name]))?;
            v["Mounts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["Destination"] == "/anon")
                .and_then(|m| m["Name"].as_str().map(str::to_owned))
                .ok_or_else(|| format!("no anonymous volume at /anon: {v}"))?
        }
        None => return Err("the scene has no container with volumes".to_owned()),
    };
    let mut sizes = std::collections::BTreeMap::new();
    for (name, id) in &ids {
        let size = size_rw(engine, id)?;
        eprintln!(
            "[{}] {name}: {} SizeRw {size}",
            engine.name,
            state_of(engine, id)?
        );
        sizes.insert(id.clone(), size);
    }
    // Let the finish (and creation) times age past exited_for.
    std::thread::sleep(Duration::from_secs(3));

    let policy = lab.write(
        "policy.toml",
        &format!(
            "[state]\npath = \"{state}\"\n\
             [safety]\nmin_age = \"1s\"\nprotect_containers = [\"{protected}\"]\n\
             [[containers]]\nname = \"ci-jobs\"\nlabels = [\"{label}\"]\n\
             states = [\"exited\", \"created\"]\nexited_for = \"2s\"\n\
             [[policy]]\nname = \"ci-images\"\nlabels = [\"{label}\"]\nolder_than = \"7d\"\n",
            state = lab.path("state.json").display(),
            protected = lab.object_name("protected"),
            label = lab.label(),
        ),
    )?;
    let want_removed: BTreeSet<String> = scene
        .iter()
        .filter(|s| s.2.removed())
        .map(|s| ids[s.0].clone())
        .collect();
    let want_kept: BTreeSet<String> = scene
        .iter()
        .filter(|s| !s.2.removed())
        .map(|s| ids[s.0].clone())
        .collect();
    let gone_images: BTreeSet<String> = ["a", "b"].iter().map(|i| images[i].clone()).collect();
    let kept_images: BTreeSet<String> = images
        .values()
        .filter(|id| !gone_images.contains(*id))
        .cloned()
        .collect();

    let plan = lab.imagegc_json(&policy, &["plan"])?;
    let planned = list(&plan, "containers")?;
    if strings(planned, "container_id") != want_removed {
        return Err(format!(
            "the plan must remove exactly the exited and never-started jobs {want_removed:?}:\n{plan:#}"
        ));
    }
    for entry in planned {
        let id = entry["container_id"].as_str().unwrap_or_default();
        if bytes_of(&entry["reclaim_bytes"])? != sizes[id] {
            return Err(format!(
                "planned bytes of {id} are not its SizeRw {}: {entry}",
                sizes[id]
            ));
        }
    }
    let unpinned: BTreeSet<String> = planned
        .iter()
        .flat_map(|c| c["unpins"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let planned_images = strings(list(&plan, "removals")?, "image_id");
    if unpinned != gone_images || planned_images != gone_images {
        return Err(format!(
            "the removals must unpin and then remove exactly {gone_images:?} (unpinned \
             {unpinned:?}, removed {planned_images:?}):\n{plan:#}"
        ));
    }
    let kept = strings(list(&plan, "kept_containers")?, "container_id");
    for (name, kind) in [("always", "restart policy"), ("protected", "protected")] {
        if let Some(id) = ids.get(name) {
            if !kept.contains(id) {
                return Err(format!(
                    "the {name} container must be kept ({kind}), saying why: {plan:#}"
                ));
            }
        }
    }

    let before = engine.data_root_bytes();
    let pass = lab.imagegc_json(&policy, &["once"])?;
    std::thread::sleep(Duration::from_millis(500));
    let after = engine.data_root_bytes();
    let disk_drop = before.saturating_sub(after);

    let removed = list(&pass, "containers_removed")?;
    if strings(removed, "container_id") != want_removed {
        return Err(format!("the pass must remove {want_removed:?}:\n{pass:#}"));
    }
    for entry in removed {
        let id = entry["container_id"].as_str().unwrap_or_default();
        if bytes_of(&entry["reclaimed_bytes"])? != sizes[id] {
            return Err(format!(
                "reported bytes of {id} are not its SizeRw {}: {entry}",
                sizes[id]
            ));
        }
    }
    for id in &want_removed {
        if lab.exists("containers", id)? {
            return Err(format!("container {id} is still there"));
        }
    }
    for id in &want_kept {
        if !lab.exists("containers", id)? {
            return Err(format!("container {id} was removed: {pass:#}"));
        }
    }
    for id in &gone_images {
        if lab.exists("images", id)? {
            return Err(format!("image {id} is still there: {pass:#}"));
        }
    }
    for id in &kept_images {
        if !lab.exists("images", id)? {
            return Err(format!("image {id}, pinned by a kept container, is gone"));
        }
    }
    let volumes: BTreeSet<String> = engine.get("/volumes")?["Volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["Name"].as_str().map(str::to_owned))
        .collect();
    if !volumes.contains(&volume) || !volumes.contains(&anonymous) {
        return Err(format!(
            "every volume must survive ({volume}, {anonymous}): {volumes:?}"
        ));
    }
    if let Some(id) = ids.get("paused") {
        lab.post_ok(&format!("/containers/{id}/unpause"))?;
    }
    // The anonymous volume stays after the pass (asserted above); the lab removes it with
    // the named one.
    let _ = engine.request("DELETE", &format!("/volumes/{anonymous}"), None, &[]);

    let predicted = bytes_of(&plan["reclaim_bytes"])?;
    let reported = bytes_of(&pass["reclaimed_bytes"])?;
    let writable: u64 = want_removed.iter().map(|id| sizes[id]).sum();
    let exact_flag = pass["reclaimed_exact"] == true;
    eprintln!(
        "[{}] predicted {predicted} B ({writable} B of writable layers), reported {reported} B \
         (reclaimed_exact {exact_flag}), data root dropped {disk_drop} B",
        engine.name
    );
    if predicted != reported {
        return Err(format!(
            "predicted {predicted} B, reported {reported} B\nplan: {plan:#}\npass: {pass:#}"
        ));
    }
    let slack = predicted / 100
        + CONTAINER_METADATA_SLACK * want_removed.len() as u64
        + IMAGE_METADATA_SLACK * gone_images.len() as u64;
    let on_disk = disk_drop.abs_diff(predicted) <= slack;
    if exact_flag && !on_disk {
        return Err(format!(
            "the pass says its bytes are exact: predicted {predicted} B, the data root dropped \
             {disk_drop} B (allowed ±{slack})"
        ));
    }
    // What the cell says of the bytes: exact (the engine listed what it deleted, and the disk
    // agrees), estimated but matching the disk, or estimated and off it (which way).
    let bytes = match (exact_flag, on_disk) {
        (true, _) => "bytes exact",
        (false, true) => "bytes estimated, match disk",
        (false, false) if disk_drop > predicted => {
            "container bytes exact, image bytes estimated below disk"
        }
        (false, false) => "container bytes exact, image bytes estimated above disk",
    };
    Ok(Finding::new(match startable {
        Ok(()) => format!("yes, {bytes}"),
        Err(_) => format!("created only: cannot start containers here; {bytes}"),
    }))
}
