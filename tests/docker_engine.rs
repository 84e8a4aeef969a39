//! `imagegc::docker::Docker` against the real engine at `DOCKER_HOST`, else
//! /var/run/docker.sock (the same engine the `docker` CLI these tests run talks to).
//!
//! Each test that needs an image makes its own with `docker load` of a tarball
//! it writes (one layer of random bytes, created 30 days ago, no tag), so
//! tests never depend on a registry or on each other, and a guard removes what
//! a test made even when the test fails.

use std::path::Path;
use std::process::Command;

use chrono::{Duration, SecondsFormat, Utc};
use imagegc::docker::Docker;
use imagegc::engine::{Capabilities, DeleteItem, Engine, EngineError};
use imagegc::host::disk::{DiskProbe, Statvfs};
use sha2::{Digest, Sha256};

/// The engine under test, resolved as imagegc resolves it (`DOCKER_HOST`, else
/// the local socket).
fn address() -> String {
    imagegc::sources::EngineSpec::resolve(None, |k| std::env::var(k).ok(), None).address
}

async fn engine() -> Docker {
    let address = address();
    match Docker::connect(&address).await {
        Ok(docker) => docker,
        Err(e) => panic!("these tests need the Docker Engine at {address}: {e}"),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn docker_cli(args: &[&str]) -> std::process::Output {
    match Command::new("docker").args(args).output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run docker {args:?}: {e}"),
    }
}

/// An untagged image loaded for one test, removed (with the containers the
/// test made from it) when dropped.
struct TestImage {
    /// `sha256:` ID of the image: the digest of its config.
    id: String,
    /// The diff ID of its only layer, which is also its chain ID.
    layer: String,
    /// The random value of its `imagegc.test` label.
    label: String,
    /// Containers the test created from it, removed before the image.
    containers: Vec<String>,
}

impl TestImage {
    fn load() -> TestImage {
        let label = format!("{:016x}", rand::random::<u64>());

        let mut data = vec![0u8; 64 * 1024];
        rand::fill(&mut data[..]);
        let layer_tar = tar_of(&[("data.bin", &data)]);
        let layer = sha256_hex(&layer_tar);

        let created = (Utc::now() - Duration::days(30)).to_rfc3339_opts(SecondsFormat::Secs, true);
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "created": created,
            "config": { "Labels": { "imagegc.test": label } },
            "rootfs": { "type": "layers", "diff_ids": [layer] },
            "history": [{ "created": created, "created_by": "imagegc test: one random file" }],
        });
        let config = config.to_string().into_bytes();
        let id = sha256_hex(&config);
        let hex = id.trim_start_matches("sha256:");

        let manifest = serde_json::json!([{
            "Config": format!("{hex}.json"),
            "RepoTags": null,
            "Layers": ["layer/layer.tar"],
        }])
        .to_string()
        .into_bytes();
        let archive = tar_of(&[
            ("manifest.json", &manifest),
            (&format!("{hex}.json"), &config),
            ("layer/layer.tar", &layer_tar),
        ]);

        // The guard exists before the load, so a half-done load is cleaned too.
        let image = TestImage {
            id,
            layer,
            label,
            containers: Vec::new(),
        };
        let dir = tempfile::tempdir().expect("a temp dir for the image tarball");
        let path = dir.path().join("image.tar");
        std::fs::write(&path, archive).expect("write the image tarball");
        let out = docker_cli(&["load", "-i", path_str(&path)]);
        assert!(
            out.status.success(),
            "docker load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        image
    }

    /// Creates (does not start) a container from the image.
    fn create_container(&mut self) -> String {
        let label = format!("imagegc.test={}", self.label);
        let out = docker_cli(&[
            "create",
            "--label",
            &label,
            "--network",
            "none",
            &self.id,
            "/nothing-to-run",
        ]);
        assert!(
            out.status.success(),
            "docker create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        self.containers.push(id.clone());
        id
    }

    fn remove_containers(&mut self) {
        for container in self.containers.drain(..) {
            let _ = docker_cli(&["rm", "-f", &container]);
        }
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        self.remove_containers();
        // Test code only: force is what imagegc itself never does.
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.id])
            .output();
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// A tar archive of the given files, in order.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, *content)
            .expect("append to an in-memory tar");
    }
    builder.into_inner().expect("finish an in-memory tar")
}

#[tokio::test]
async fn connecting_reports_the_engine_version_api_version_and_root_dir() {
    let docker = engine().await;
    assert_eq!(docker.address(), address());
    let info = docker.info().await.expect("info");
    assert!(!info.server_version.is_empty(), "{info:?}");
    assert!(info.api_version.starts_with("1."), "{info:?}");
    assert!(info.root_dir.starts_with('/'), "{info:?}");
}

#[tokio::test]
async fn images_and_containers_can_be_listed() {
    let docker = engine().await;
    let images = docker.list_images().await.expect("list images");
    for image in &images {
        assert!(image.id.starts_with("sha256:"), "{image:?}");
        assert!(
            !image.tags.iter().any(|t| t == "<none>:<none>"),
            "{image:?}"
        );
        assert!(
            !image.digests.iter().any(|d| d == "<none>@<none>"),
            "{image:?}"
        );
        assert_ne!(image.parent_id.as_deref(), Some(""), "{image:?}");
    }
    let containers = docker.list_containers().await.expect("list containers");
    for container in &containers {
        assert!(!container.id.is_empty(), "{container:?}");
        assert!(
            !container.names.iter().any(|n| n.starts_with('/')),
            "{container:?}"
        );
    }
}

#[tokio::test]
async fn a_local_engine_declares_docker_20_10_capabilities_with_its_root_dir_on_this_host() {
    let docker = engine().await;
    let capabilities = docker.capabilities();
    // The executor counts reported layers and the planner plans per tag on
    // exactly these; a local socket means the root dir is ours to statvfs.
    assert_eq!(capabilities, Capabilities::DOCKER_20_10);
    assert!(capabilities.reports_deleted_layers && capabilities.untags_single_reference);
    assert_eq!(
        capabilities.root_dir_on_host,
        address().starts_with("unix://") || address().starts_with('/')
    );
}

#[tokio::test]
async fn disk_usage_of_the_root_dir_is_counted_like_df() {
    let docker = engine().await;
    let info = docker.info().await.expect("info");
    assert!(docker.capabilities().root_dir_on_host);
    let usage = Statvfs
        .usage(Path::new(&info.root_dir))
        .expect("statvfs of the engine's root dir");
    assert!(usage.used_bytes > 0, "{usage:?}");
    assert!(usage.total_bytes >= usage.used_bytes, "{usage:?}");

    // The same filesystem as `df` sees it: Use% is used / (used + available
    // to unprivileged users), not used / size (they differ by the blocks
    // reserved for root). Other tests write meanwhile: a loose match.
    let df = std::process::Command::new("df")
        .args(["-P", "-B1", &info.root_dir])
        .output()
        .expect("run df");
    let text = String::from_utf8_lossy(&df.stdout);
    let fields: Vec<&str> = text
        .lines()
        .nth(1)
        .expect("a df line")
        .split_whitespace()
        .collect();
    let df_used: f64 = fields[2].parse().expect("df Used");
    let df_avail: f64 = fields[3].parse().expect("df Available");
    let df_percent: f64 = fields[4].trim_end_matches('%').parse().expect("df Use%");
    let percent = usage.used_ratio() * 100.0;
    assert!(
        (percent - df_percent).abs() <= 1.5,
        "imagegc says {percent:.1}% used, df says {df_percent}%: {usage:?}\n{text}"
    );
    let slack = 0.01 * (df_used + df_avail);
    assert!(
        (usage.free_bytes() as f64 - df_avail).abs() <= slack,
        "free {} vs df Available {df_avail}\n{text}",
        usage.free_bytes()
    );
}

#[tokio::test]
async fn a_loaded_untagged_image_is_listed_inspected_and_removed_with_its_layer() {
    let docker = engine().await;
    let image = TestImage::load();

    let listed = docker.list_images().await.expect("list images");
    let summary = listed
        .iter()
        .find(|i| i.id == image.id)
        .unwrap_or_else(|| panic!("{} is not in the image list", image.id));
    assert!(summary.tags.is_empty(), "{summary:?}");
    assert!(summary.digests.is_empty(), "{summary:?}");
    assert_eq!(summary.parent_id, None);
    assert_eq!(
        summary.labels.get("imagegc.test"),
        Some(&image.label),
        "{summary:?}"
    );
    let age = Utc::now() - summary.created;
    assert!(
        (age - Duration::days(30)).num_seconds().abs() < 60,
        "created {}",
        summary.created
    );

    let details = docker.image_details(&image.id).await.expect("inspect");
    // One layer, sized from the one history step, so the size is certain.
    assert_eq!(details.layers.len(), 1, "{details:?}");
    assert_eq!(details.layers[0].chain_id, image.layer, "{details:?}");
    assert!(details.layers[0].size > 0, "{details:?}");
    assert!(details.sizes_exact, "{details:?}");
    // Loading without a tag sets no tag time; tagging would.
    assert_eq!(details.last_tag_time, None, "{details:?}");

    let deleted = docker.remove_image(&image.id).await.expect("remove");
    assert!(
        deleted.contains(&DeleteItem::Deleted(image.id.clone())),
        "{deleted:?}"
    );
    // A one-layer image's chain ID is its diff ID; the engine lists the layer
    // it released, which is what exact accounting sums.
    assert!(
        deleted.contains(&DeleteItem::Deleted(image.layer.clone())),
        "{deleted:?}"
    );
    assert!(
        !deleted.iter().any(|d| matches!(d, DeleteItem::Untagged(_))),
        "{deleted:?}"
    );

    let again = docker.remove_image(&image.id).await;
    assert!(matches!(again, Err(EngineError::NotFound(_))), "{again:?}");
    let gone = docker.image_details(&image.id).await;
    assert!(matches!(gone, Err(EngineError::NotFound(_))), "{gone:?}");
}

#[tokio::test]
async fn an_image_used_by_a_created_container_is_a_conflict_until_the_container_goes() {
    let docker = engine().await;
    let mut image = TestImage::load();
    let container = image.create_container();

    let containers = docker.list_containers().await.expect("list containers");
    let listed = containers
        .iter()
        .find(|c| c.id == container)
        .unwrap_or_else(|| panic!("{container} is not in the container list"));
    assert_eq!(listed.image_id, image.id);
    assert_eq!(listed.state, "created");
    assert!(!listed.names.is_empty(), "{listed:?}");
    assert!(
        !listed.names.iter().any(|n| n.starts_with('/')),
        "{listed:?}"
    );
    assert!(
        (Utc::now() - listed.created).num_seconds().abs() < 300,
        "{listed:?}"
    );

    let refused = docker.remove_image(&image.id).await;
    assert!(
        matches!(refused, Err(EngineError::Conflict(_))),
        "{refused:?}"
    );

    image.remove_containers();
    let deleted = docker.remove_image(&image.id).await.expect("remove");
    assert!(
        deleted.contains(&DeleteItem::Deleted(image.id.clone())),
        "{deleted:?}"
    );
}

#[tokio::test]
async fn a_missing_socket_is_unavailable_and_the_message_names_it() {
    let err = Docker::connect("unix:///nonexistent.sock")
        .await
        .expect_err("no engine there");
    assert!(
        matches!(&err, EngineError::Unavailable { reason, .. } if reason.contains("does not exist")),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("unix:///nonexistent.sock"),
        "{err}"
    );
}

#[tokio::test]
async fn a_socket_nobody_listens_on_is_unavailable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dead.sock");
    // Binding leaves the socket file behind after the listener is gone.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let address = path_str(&path).to_owned();

    let err = Docker::connect(&address).await.expect_err("nobody listens");
    assert!(err.is_unreachable(), "{err:?}");
    assert!(err.to_string().contains(&address), "{err}");
}

#[tokio::test]
async fn a_tcp_address_nobody_listens_on_is_unavailable() {
    let err = Docker::connect("tcp://127.0.0.1:1")
        .await
        .expect_err("nobody listens");
    assert!(matches!(&err, EngineError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("tcp://127.0.0.1:1"), "{err}");
}
