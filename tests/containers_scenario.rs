//! One whole pass of the imagegc binary on a private Docker Engine littered with finished CI
//! job containers: a `[[containers]]` policy (`exited_for = "2s"`) removes the old exited
//! ones, never the running or the protected one, never a volume (named or anonymous); the
//! images those removals unpin go in the same pass by an image policy; and the bytes the plan
//! predicts (writable layers plus unpinned image layers), the bytes the pass reports, and the
//! drop of the data root on disk agree within 1% plus metadata: 64 KiB per image removal,
//! 160 KiB per container removal (a container's directory and `-init` layer, measured at
//! 136 KiB, are not in its `SizeRw`).
//!
//! Bytes on disk are measured, so this runs on a private dockerd (`common::private_engine`);
//! it skips, saying why, only when dockerd or fuse-overlayfs is missing.
//!
//! JSON read here: the plan's `containers` list beside `removals`, each with `container_id`,
//! `name`, `policy`, `reclaim_bytes` (its writable layer) and `unpins` (IDs of the images its
//! removal leaves unused); `removals` with `reference` / `image_id`; the plan's
//! `reclaim_bytes` (containers, images and records together); the pass's `containers_removed`
//! (`container_id`, `reclaimed_bytes`) and `reclaimed_bytes` covering every kind.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Output, Stdio};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::Value;

use common::private_engine::{fill_binary, PrivateEngine};

const MB: usize = 1_000_000;

/// Filesystem metadata one image removal may free or keep beyond the bytes it predicts.
const METADATA_SLACK: u64 = 64 * 1024;

/// Filesystem metadata one container removal frees beyond its `SizeRw`: measured 34 blocks
/// of 4 KiB (139,264 B) per container on the private engine (its directory under
/// `containers/`, its `-init` layer, the layer's `work`/`merged`/`link` entries), see
/// docs/ENGINES.md; allowed with some room.
const CONTAINER_METADATA_SLACK: u64 = 160 * 1024;

fn random_bytes(n: usize) -> Vec<u8> {
    let mut x = u64::from_str_radix(&common::random_hex(8), 16).unwrap_or(0x9e37_79b9) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn as_u64(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not a byte count: {v}"))
}

fn list<'a>(doc: &'a Value, key: &str) -> &'a [Value] {
    doc[key]
        .as_array()
        .map_or_else(|| panic!("no {key:?} list in {doc:#}"), Vec::as_slice)
}

fn strings(items: &[Value], key: &str) -> BTreeSet<String> {
    items
        .iter()
        .map(|v| {
            v[key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key} in {v}"))
                .to_owned()
        })
        .collect()
}

struct Scene {
    engine: PrivateEngine,
    dir: tempfile::TempDir,
}

impl Scene {
    fn docker(&self, args: &[&str]) -> String {
        let out: Output = self.engine.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn imagegc(&self, policy: &str, args: &[&str]) -> Value {
        let out: Output = common::imagegc_command()
            .args(["--config", policy, "--engine", &self.engine.address()])
            .args(args)
            .args(["--output", "json"])
            .env("DOCKER_HOST", self.engine.address())
            .stdin(Stdio::null())
            .output()
            .expect("run the imagegc binary");
        assert!(
            out.status.success(),
            "imagegc {args:?} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "imagegc {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// A container named `name` of `image` that writes `bytes` to `/out` in its writable
    /// layer (the static `fill` bind-mounted from the host), then exits or, with `linger`,
    /// stays running. Extra `docker create` arguments in `args`.
    fn job(&self, name: &str, image: &str, bytes: usize, linger: bool, args: &[&str]) -> String {
        let fill = self.dir.path().join("fill");
        let mount = format!("type=bind,source={},target=/fill,readonly", fill.display());
        let n = bytes.to_string();
        let mut all = vec![
            "create",
            "--name",
            name,
            "--network",
            "none",
            "--mount",
            &mount,
        ];
        all.extend(args);
        all.extend([image, "/fill", "/out", &n]);
        if linger {
            all.push("600");
        }
        let id = self.docker(&all);
        self.docker(&["start", &id]);
        if linger {
            common::wait_for(
                "the lingering job to write",
                Duration::from_secs(30),
                || {
                    let size = self.engine.get(&format!("/containers/{id}/json?size=1"))["SizeRw"]
                        .as_u64()?;
                    (size >= bytes as u64).then_some(())
                },
            );
        } else {
            assert_eq!(self.docker(&["wait", &id]), "0", "fill in {name}");
        }
        id
    }

    fn size_rw(&self, id: &str) -> u64 {
        as_u64(&self.engine.get(&format!("/containers/{id}/json?size=1"))["SizeRw"])
    }

    fn exists(&self, kind: &str, id: &str) -> bool {
        matches!(
            self.engine
                .request("GET", &format!("/{kind}/{id}/json"), None, &[]),
            Ok((200, _))
        )
    }
}

/// A scene with `fill` in its directory, or `None` (said on stderr) when this machine cannot
/// start a private engine.
fn scene(test: &str) -> Option<Scene> {
    if let Some(why) = PrivateEngine::missing() {
        eprintln!("SKIPPED {test}: no private Docker Engine can start here: {why}");
        return None;
    }
    let scene = Scene {
        engine: PrivateEngine::start(),
        dir: tempfile::tempdir().expect("a temporary directory"),
    };
    let fill = scene.dir.path().join("fill");
    std::fs::write(&fill, fill_binary()).expect("write fill");
    std::fs::set_permissions(&fill, std::fs::Permissions::from_mode(0o755)).expect("chmod fill");
    Some(scene)
}

/// What the ledger relies on: removing an exited container (the adapter's
/// `remove_container`, `v=false`) frees its `SizeRw` from the data root, within 1% plus
/// [`CONTAINER_METADATA_SLACK`] per container, and its image's layers stay until the image goes.
#[tokio::test]
async fn removing_exited_containers_frees_their_writable_layers_on_disk() {
    use imagegc::engine::Engine;

    let Some(scene) = scene("removing_exited_containers_frees_their_writable_layers_on_disk")
    else {
        return;
    };
    let engine = &scene.engine;
    engine.load(
        "ci-w:1",
        Utc::now() - TimeDelta::days(1),
        &[random_bytes(2 * MB)],
    );
    let jobs: Vec<String> = [(1, 4 * MB), (2, MB), (3, 2 * MB)]
        .iter()
        .map(|(n, bytes)| {
            scene.job(
                &format!("ci-w-{n}"),
                "ci-w:1",
                *bytes,
                false,
                &["-v", "/anon"],
            )
        })
        .collect();
    let sizes: u64 = jobs.iter().map(|id| scene.size_rw(id)).sum();
    let docker = imagegc::docker::Docker::connect(&engine.address())
        .await
        .expect("connect to the private engine");
    let before = engine.data_root_bytes();
    for id in &jobs {
        docker
            .remove_container(id)
            .await
            .expect("remove an exited job");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = engine.data_root_bytes();
    let disk_drop = before.saturating_sub(after);
    eprintln!("SizeRw {sizes} B of 3 containers, data root dropped {disk_drop} B");
    let slack = sizes / 100 + CONTAINER_METADATA_SLACK * 3;
    assert!(
        disk_drop.abs_diff(sizes) <= slack,
        "SizeRw {sizes} B, the data root dropped {disk_drop} B (allowed ±{slack})"
    );
    assert!(scene.exists("images", "ci-w:1"), "the image stays");
}

#[test]
#[allow(clippy::too_many_lines)]
fn one_pass_removes_old_finished_jobs_then_the_images_they_pinned_and_frees_what_it_says() {
    let Some(scene) = scene(
        "one_pass_removes_old_finished_jobs_then_the_images_they_pinned_and_frees_what_it_says",
    ) else {
        return;
    };
    let engine = &scene.engine;
    let old = Utc::now() - TimeDelta::days(30);
    let img_a = engine.load("ci-a:1", old, &[random_bytes(4 * MB)]);
    let img_b = engine.load("ci-b:1", old, &[random_bytes(3 * MB)]);
    let img_c = engine.load("ci-c:1", old, &[random_bytes(2 * MB)]);
    let img_d = engine.load("ci-d:1", old, &[random_bytes(2 * MB)]);

    let job1 = scene.job("ci-job-1", "ci-a:1", 3 * MB, false, &[]);
    let job2 = scene.job("ci-job-2", "ci-a:1", MB, false, &[]);
    scene.docker(&["volume", "create", "ci-data"]);
    let job3 = scene.job(
        "ci-job-3",
        "ci-b:1",
        2 * MB,
        false,
        &["-v", "ci-data:/named", "-v", "/anon"],
    );
    let anonymous = scene.docker(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{if eq .Destination \"/anon\"}}{{.Name}}{{end}}{{end}}",
        &job3,
    ]);
    let running = scene.job("ci-running", "ci-c:1", MB, true, &[]);
    let protected = scene.job("ci-protected", "ci-d:1", MB, false, &[]);
    let sizes: Vec<(String, u64)> = [&job1, &job2, &job3]
        .iter()
        .map(|id| ((*id).clone(), scene.size_rw(id)))
        .collect();
    for ((_, size), written) in sizes.iter().zip([3 * MB, MB, 2 * MB]) {
        assert!(*size >= written as u64, "SizeRw {size} < {written} written");
    }
    // Let the finish times age past exited_for.
    std::thread::sleep(Duration::from_secs(3));

    let policy = scene.dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[state]\npath = \"{}\"\n[safety]\nmin_age = \"1s\"\nprotect_containers = [\"ci-protected\"]\n\
             [[containers]]\nname = \"ci-jobs\"\nnames = [\"ci-*\"]\nexited_for = \"2s\"\n\
             [[policy]]\nname = \"ci-images\"\nrepositories = [\"ci-a\", \"ci-b\", \"ci-c\", \"ci-d\"]\n\
             older_than = \"7d\"\n",
            scene.dir.path().join("state.json").display()
        ),
    )
    .expect("write the policy");
    let policy = policy.to_str().expect("utf-8");

    let plan = scene.imagegc(policy, &["plan"]);
    let planned = list(&plan, "containers");
    assert_eq!(
        strings(planned, "container_id"),
        BTreeSet::from([job1.clone(), job2.clone(), job3.clone()]),
        "never the running or the protected one: {plan:#}"
    );
    assert_eq!(
        strings(planned, "name"),
        BTreeSet::from([
            "ci-job-1".to_owned(),
            "ci-job-2".to_owned(),
            "ci-job-3".to_owned()
        ])
    );
    for entry in planned {
        assert_eq!(entry["policy"], "ci-jobs", "{entry}");
        let id = entry["container_id"].as_str().expect("container_id");
        let size = sizes.iter().find(|(c, _)| c == id).map(|(_, s)| *s);
        assert_eq!(
            Some(as_u64(&entry["reclaim_bytes"])),
            size,
            "its SizeRw: {entry}"
        );
    }
    let unpinned: BTreeSet<String> = planned
        .iter()
        .flat_map(|c| {
            c["unpins"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
        })
        .collect();
    assert_eq!(
        unpinned,
        BTreeSet::from([img_a.clone(), img_b.clone()]),
        "{plan:#}"
    );
    let removed_images: BTreeSet<String> = list(&plan, "removals")
        .iter()
        .map(|r| {
            r["reference"]
                .as_str()
                .or_else(|| r["image_id"].as_str())
                .expect("reference or image_id")
                .to_owned()
        })
        .collect();
    assert_eq!(
        removed_images,
        BTreeSet::from(["ci-a:1".to_owned(), "ci-b:1".to_owned()]),
        "the unpinned images go in the same pass, the pinned ones stay: {plan:#}"
    );

    let before = engine.data_root_bytes();
    let pass = scene.imagegc(policy, &["once"]);
    std::thread::sleep(Duration::from_millis(500));
    let after = engine.data_root_bytes();
    let disk_drop = before.saturating_sub(after);

    assert_eq!(
        strings(list(&pass, "containers_removed"), "container_id"),
        BTreeSet::from([job1.clone(), job2.clone(), job3.clone()]),
        "{pass:#}"
    );
    for id in [&job1, &job2, &job3] {
        assert!(!scene.exists("containers", id), "{id} is gone");
    }
    assert!(
        scene.exists("containers", &running),
        "the running job stays"
    );
    assert!(
        scene.exists("containers", &protected),
        "the protected job stays"
    );
    assert!(!scene.exists("images", &img_a) && !scene.exists("images", &img_b));
    assert!(scene.exists("images", &img_c) && scene.exists("images", &img_d));
    let volumes: BTreeSet<String> = engine.get("/volumes")["Volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v["Name"].as_str().map(str::to_owned))
        .collect();
    assert!(
        volumes.contains("ci-data") && volumes.contains(&anonymous),
        "every volume survives: {volumes:?}"
    );

    let predicted = as_u64(&plan["reclaim_bytes"]);
    let reported = as_u64(&pass["reclaimed_bytes"]);
    let writable: u64 = sizes.iter().map(|(_, s)| s).sum();
    eprintln!(
        "predicted {predicted} B ({writable} B of writable layers), reported {reported} B, \
         data root dropped {disk_drop} B"
    );
    assert_eq!(predicted, reported, "plan: {plan:#}\npass: {pass:#}");
    assert!(predicted > writable, "the images' bytes count too");
    // Three containers, two images.
    let slack = predicted / 100 + CONTAINER_METADATA_SLACK * 3 + METADATA_SLACK * 2;
    assert!(
        disk_drop.abs_diff(predicted) <= slack,
        "predicted {predicted} B, the data root dropped {disk_drop} B (allowed ±{slack})"
    );
    scene.docker(&["stop", "-t", "1", &running]);
}
