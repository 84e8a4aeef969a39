//! Scenario `build_cache`: on the Docker engines, a `BuildKit` build the scenario makes itself
//! (raw `POST /build?version=2` with a tar context; on the containerd store, where that fails,
//! the 20.10 CLI with `DOCKER_BUILDKIT=1`: `FROM scratch`, `COPY` of a 6 MB file,
//! `COPY` of the static `fill`, and a `RUN --mount=type=cache` that writes 3 MB into the cache
//! mount), then two measured passes, as `tests/build_cache_scenario.rs` does on the private
//! engine:
//!
//! 1. a cache-only pass (`[[build_cache]] unused_for = "2s"`): every record of the build is
//!    removed (its shared records free nothing while the image uses their layers);
//! 2. an image pass removing the built image (and any record left).
//!
//! Each pass's prediction must equal its report, and is compared with the drop of the engine's
//! data root on disk (within 1% plus 64 KiB of metadata per removal): required on the
//! graph-driver stores, where imagegc's model is exact; recorded in the cell elsewhere.
//!
//! Build cache is global to the engine: the trial holds the engine's lock, the records present
//! before the build are not the scenario's, and a pass whose plan would remove any of them is
//! not run (the scenario fails, naming them). The lab removes what is left of its own records.
//!
//! On Podman, which has no build cache (`POST /build/prune` answers 404): a `[[build_cache]]`
//! policy's `plan` and `once` succeed, note that the engine has no build cache, and plan no
//! record.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use super::Finding;
use crate::common::private_engine::{append, fill_binary};
use crate::common::LABEL_KEY;
use crate::engine::{MatrixEngine, Store};
use crate::lab::{bytes_of, list, random_bytes, strings, url_encode, Lab};

const MB: usize = 1_000_000;

/// Filesystem metadata one removal may free or keep beyond the bytes it predicts.
const METADATA_SLACK: u64 = 64 * 1024;

/// The IDs of the engine's build-cache records now.
fn record_ids(engine: &MatrixEngine) -> Result<BTreeSet<String>, String> {
    let df = engine.get("/system/df")?;
    Ok(df["BuildCache"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["ID"].as_str().map(str::to_owned))
        .collect())
}

/// A `BuildKit` build of a context of `files`, tagged `tag` and labelled for the lab: a raw
/// `POST /build?version=2` with a tar context, except on the containerd store, where that
/// fails (measured on 26.1.5: `BuildKit` there fetches the uploaded context from its
/// `http://build-context-…` URL over the network, "no such host"), so the 20.10 CLI builds
/// with `DOCKER_BUILDKIT=1` and a session, sending the context from the lab's directory.
fn build(lab: &Lab<'_>, tag: &str, files: &[(&str, &[u8])]) -> Result<(), String> {
    if lab.engine.store == Store::Containerd {
        return cli_build(lab, tag, files);
    }
    let mut context = tar::Builder::new(Vec::new());
    for (name, data) in files {
        // Executable: a `RUN` of a 0644 file fails.
        append(&mut context, name, data, 0o755);
    }
    let context = context
        .into_inner()
        .map_err(|e| format!("the build context: {e}"))?;
    let labels = url_encode(&json!({LABEL_KEY: lab.id()}).to_string());
    let path = format!(
        "/build?version=2&t={}&rm=1&networkmode=none&labels={labels}",
        url_encode(tag)
    );
    let (status, body) = lab
        .engine
        .request("POST", &path, Some("application/x-tar"), &context)?;
    let text = String::from_utf8_lossy(&body);
    if status != 200 {
        return Err(format!(
            "POST {path} on {}: {status} {text}",
            lab.engine.name
        ));
    }
    for line in text.lines() {
        if let Ok(message) = serde_json::from_str::<Value>(line) {
            if let Some(error) = message.get("error") {
                return Err(format!(
                    "the build on {} failed: {error}\n{text}",
                    lab.engine.name
                ));
            }
        }
    }
    Ok(())
}

/// `DOCKER_BUILDKIT=1 /usr/bin/docker build` of a context directory made of `files`.
fn cli_build(lab: &Lab<'_>, tag: &str, files: &[(&str, &[u8])]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = lab.path("context");
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    for (name, data) in files {
        let path = dir.join(name);
        std::fs::write(&path, data).map_err(|e| format!("write {}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    }
    let out = std::process::Command::new("/usr/bin/docker")
        .env("DOCKER_HOST", lab.engine.address())
        .env("DOCKER_BUILDKIT", "1")
        .args([
            "build",
            "--network",
            "none",
            "-t",
            tag,
            "--label",
            &lab.label(),
        ])
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run /usr/bin/docker: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker build on {} failed ({}): {}",
            lab.engine.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// The outcome of one measured pass.
struct Measured {
    plan: Value,
    pass: Value,
    predicted: u64,
    disk_drop: u64,
    on_disk: bool,
}

/// Plans; refuses when the plan would remove a record not in `mine`; runs one pass measuring
/// the data root around it; checks prediction == report.
fn measured_pass(
    lab: &Lab<'_>,
    policy: &str,
    mine: &BTreeSet<String>,
    layers: usize,
    what: &str,
) -> Result<Measured, String> {
    let engine = lab.engine;
    let plan = lab.imagegc_json(policy, &["plan"])?;
    let planned = strings(list(&plan, "records")?, "record_id");
    let foreign: Vec<&String> = planned.difference(mine).collect();
    if !foreign.is_empty() {
        return Err(format!(
            "{} has build-cache records this scenario did not make, which its policy would \
             remove: {foreign:?}; not running the pass (remove them, or run on an engine \
             without foreign build cache)",
            engine.name
        ));
    }
    let before = engine.data_root_bytes();
    let pass = lab.imagegc_json(policy, &["once"])?;
    std::thread::sleep(Duration::from_millis(500));
    let disk_drop = before.saturating_sub(engine.data_root_bytes());
    let predicted = bytes_of(&plan["reclaim_bytes"])?;
    let reported = bytes_of(&pass["reclaimed_bytes"])?;
    let removals = list(&plan, "records")?.len() + layers;
    let slack = predicted / 100 + METADATA_SLACK * removals as u64;
    let on_disk = disk_drop.abs_diff(predicted) <= slack;
    eprintln!(
        "[{}] {what}: {} records, {} images planned; predicted {predicted} B, reported \
         {reported} B (reclaimed_exact {}), data root dropped {disk_drop} B (allowed ±{slack})",
        engine.name,
        list(&plan, "records")?.len(),
        list(&plan, "removals")?.len(),
        pass["reclaimed_exact"],
    );
    eprintln!(
        "[{}] {what}: records removed {:?}, not deleted {:?}, images removed {:?}",
        engine.name,
        list(&pass, "records_removed")?
            .iter()
            .map(|r| format!(
                "{} {}/{}",
                r["record_id"], r["reclaimed_bytes"], r["engine_reported_bytes"]
            ))
            .collect::<Vec<_>>(),
        strings(list(&pass, "records_not_deleted")?, "record_id"),
        list(&pass, "removed")?
            .iter()
            .map(|r| format!("{} {}", r["image_id"], r["reclaimed_bytes"]))
            .collect::<Vec<_>>(),
    );
    if predicted != reported {
        return Err(format!(
            "{what}: predicted {predicted} B, reported {reported} B\nplan: {plan:#}\npass: {pass:#}"
        ));
    }
    if engine.store == Store::GraphDriver && !on_disk {
        return Err(format!(
            "{what}: predicted {predicted} B, the data root dropped {disk_drop} B (allowed \
             ±{slack})\nplan: {plan:#}\npass: {pass:#}"
        ));
    }
    if !on_disk && pass["reclaimed_exact"] == json!(true) {
        return Err(format!(
            "{what}: the pass calls {reported} B exact, but the data root dropped {disk_drop} B \
             (allowed ±{slack})\npass: {pass:#}"
        ));
    }
    Ok(Measured {
        plan,
        pass,
        predicted,
        disk_drop,
        on_disk,
    })
}

pub fn run(engine: &MatrixEngine) -> Result<Finding, String> {
    if engine.is_docker() {
        docker(engine)
    } else {
        no_build_cache(engine)
    }
}

#[allow(clippy::too_many_lines)]
fn docker(engine: &MatrixEngine) -> Result<Finding, String> {
    let lab = Lab::new(engine)?;
    let before = record_ids(engine)?;
    if !before.is_empty() {
        eprintln!(
            "[{}] {} build-cache records present before the build (not this scenario's): {before:?}",
            engine.name,
            before.len()
        );
    }
    let tag = lab.reference("built", "1");
    let big = random_bytes(6 * MB);
    let dockerfile = format!(
        "FROM scratch\nCOPY big.bin /big.bin\nCOPY fill /fill\n\
         RUN --mount=type=cache,target=/cache [\"/fill\", \"/cache/data\", \"{}\"]\n",
        3 * MB
    );
    build(
        &lab,
        &tag,
        &[
            ("Dockerfile", dockerfile.as_bytes()),
            ("big.bin", &big),
            ("fill", fill_binary()),
        ],
    )?;
    let image = engine.image_id(&tag)?;
    // The first read after a cache mount is made counts as its use (docs/ENGINES.md): read,
    // then let every record age past unused_for.
    let df = engine.get("/system/df")?;
    let records: Vec<Value> = df["BuildCache"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["ID"].as_str().is_some_and(|id| !before.contains(id)))
        .cloned()
        .collect();
    let mut mine: BTreeSet<String> = strings(&records, "ID");
    lab.own_records(mine.iter().cloned());
    for r in &records {
        eprintln!(
            "[{}] record {} {} {:?} shared {} size {}",
            engine.name, r["ID"], r["Type"], r["Description"], r["Shared"], r["Size"]
        );
    }
    if !records.iter().any(|r| r["Type"] == "exec.cachemount") {
        return Err(format!(
            "the build made no cache-mount record: {records:#?}"
        ));
    }
    std::thread::sleep(Duration::from_secs(3));
    // BuildKit may list a record of the build (its context's) only after the build returned:
    // the trial holds the engine's lock, so every record new since `before` is this build's.
    let late: BTreeSet<String> = record_ids(engine)?
        .difference(&before)
        .filter(|id| !mine.contains(*id))
        .cloned()
        .collect();
    if !late.is_empty() {
        eprintln!(
            "[{}] records listed after the build returned: {late:?}",
            engine.name
        );
        lab.own_records(late.iter().cloned());
        mine.extend(late);
    }

    let state = lab.path("state.json");
    let cache_policy = lab.write(
        "cache.toml",
        &format!(
            "[state]\npath = \"{}\"\n[safety]\nmin_age = \"1s\"\n\
             [[build_cache]]\nname = \"build-cache\"\nunused_for = \"2s\"\n",
            state.display()
        ),
    )?;
    let cache = measured_pass(&lab, &cache_policy, &mine, 0, "cache pass")?;
    if !list(&cache.plan, "removals")?.is_empty() {
        return Err(format!(
            "a cache-only policy planned image removals: {:#}",
            cache.plan
        ));
    }
    let non_shared: BTreeSet<String> = records
        .iter()
        .filter(|r| r["Shared"] == false)
        .filter_map(|r| r["ID"].as_str().map(str::to_owned))
        .collect();
    let removed = strings(list(&cache.pass, "records_removed")?, "record_id");
    if !non_shared.is_subset(&removed) {
        return Err(format!(
            "every unused non-shared record of the build must go: {non_shared:?} not within \
             {removed:?}\npass: {:#}",
            cache.pass
        ));
    }
    // The cache mount (3 MB) and the context (about 7 MB) at least.
    if cache.predicted < 9 * MB as u64 {
        return Err(format!(
            "the cache pass predicts {} B, less than the build's non-shared records: {:#}",
            cache.predicted, cache.plan
        ));
    }
    if !lab.exists("images", &image)? {
        return Err("a cache pass removed the built image".to_owned());
    }

    let image_policy = lab.write(
        "image.toml",
        &format!(
            "[state]\npath = \"{}\"\n[safety]\nmin_age = \"1s\"\n\
             [[policy]]\nname = \"built\"\nlabels = [\"{}\"]\nolder_than = \"1s\"\n\
             [[build_cache]]\nname = \"build-cache\"\nunused_for = \"2s\"\n",
            state.display(),
            lab.label()
        ),
    )?;
    // Each layer of the image removed may free some metadata.
    let layers = engine.get(&format!("/images/{image}/json"))?["RootFS"]["Layers"]
        .as_array()
        .map_or(1, Vec::len);
    let images = measured_pass(&lab, &image_policy, &mine, layers, "image pass")?;
    if strings(list(&images.plan, "removals")?, "image_id") != BTreeSet::from([image.clone()]) {
        return Err(format!(
            "the image pass must remove {image}: {:#}",
            images.plan
        ));
    }
    if lab.exists("images", &image)? {
        return Err(format!("{image} is still there: {:#}", images.pass));
    }
    let left: Vec<String> = record_ids(engine)?.intersection(&mine).cloned().collect();
    if !left.is_empty() {
        return Err(format!("records of the build are left: {left:?}"));
    }
    if !before.is_subset(&record_ids(engine)?) {
        return Err("a record this scenario did not make is gone".to_owned());
    }
    eprintln!(
        "[{}] cache pass {} B predicted / {} B on disk; image pass {} B / {} B",
        engine.name, cache.predicted, cache.disk_drop, images.predicted, images.disk_drop
    );
    let cell = match (cache.on_disk, images.on_disk) {
        (true, true) => "yes, bytes exact".to_owned(),
        (c, i) => format!(
            "yes; bytes estimated, off the disk drop for: {}",
            [
                (!c).then_some("record removals"),
                (!i).then_some("image removal")
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ")
        ),
    };
    Ok(Finding::new(cell))
}

/// Podman: the engine answers 404 on `POST /build/prune`; imagegc says it has no build cache
/// and its `[[build_cache]]` policies are skipped, the pass not failed.
fn no_build_cache(engine: &MatrixEngine) -> Result<Finding, String> {
    let lab = Lab::new(engine)?;
    // An anchored ID no record has: deletes nothing where a build cache exists.
    let filters = url_encode(&json!({"id": [format!("^imagegc{}$", lab.id())]}).to_string());
    let (status, body) = engine.request(
        "POST",
        &format!("/build/prune?all=true&filters={filters}"),
        None,
        &[],
    )?;
    eprintln!(
        "[{}] POST /build/prune: {status} {}",
        engine.name,
        String::from_utf8_lossy(&body).trim()
    );
    if status != 404 {
        return Err(format!(
            "{} answered {status} on /build/prune (expected 404: no build cache)",
            engine.name
        ));
    }
    let policy = lab.write(
        "cache.toml",
        &format!(
            "[state]\npath = \"{}\"\n[safety]\nmin_age = \"1s\"\n\
             [[build_cache]]\nname = \"build-cache\"\nunused_for = \"1s\"\n",
            lab.path("state.json").display()
        ),
    )?;
    let plan = lab.imagegc_json(&policy, &["plan"])?;
    let noted = list(&plan, "notes")?
        .iter()
        .any(|n| n.as_str().is_some_and(|n| n.contains("no build cache")));
    if !noted || plan["build_cache_records"] != 0 || !list(&plan, "records")?.is_empty() {
        return Err(format!(
            "the plan must say the engine has no build cache and plan no record: {plan:#}"
        ));
    }
    let pass = lab.imagegc_json(&policy, &["once"])?;
    if !list(&pass, "records_failed")?.is_empty() || !list(&pass, "records_removed")?.is_empty() {
        return Err(format!("the pass must attempt no record: {pass:#}"));
    }
    eprintln!(
        "[{}] plan notes {:?}; the pass succeeded (records_unsupported {})",
        engine.name, plan["notes"], pass["records_unsupported"]
    );
    Ok(Finding::new("n/a: no build cache (404 handled)"))
}
