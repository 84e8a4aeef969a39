//! The Docker adapter against the answers each engine of the matrix really gave, recorded by
//! the matrix's `api` scenario (`tests/matrix/scenarios/api.rs`) in `tests/fixtures/engines/`:
//! Docker 20.10 (`d20`, API 1.41), Docker 26.1 with overlay2 (`d26`) and with the containerd
//! image store (`d26cs`), Podman 4.3 (`podman`). A tiny HTTP server on a unix socket replays
//! one engine's fixtures (matched by method and path, the `/v1.xx` prefix and the query
//! ignored), and the real adapter (`Docker::connect`) talks to it, so the differences stay
//! covered where no such engine runs.
//!
//! The recorded set: images `base` (tags `:1` and `:2`), `child` on `base` (loaded with a
//! `Parent` link, which only the graph-driver store and Podman keep), an untagged image, and a
//! created container on `child`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use imagegc::engine::docker::Docker;
use imagegc::engine::{DeleteItem, Engine, EngineError, ImageSummary, Use};
use imagegc::inventory::{ImageInput, Snapshot, Tracked};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

const ENGINES: [&str; 4] = ["d20", "d26", "d26cs", "podman"];

/// One recorded answer.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: Value,
}

fn fixture_dir(engine: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/engines")
        .join(engine)
}

fn fixture(engine: &str, name: &str) -> Value {
    let path = fixture_dir(engine).join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A path without the version prefix, the query and percent-encoding.
fn route(path: &str) -> String {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map_or(path, |slash| &rest[slash..])
        }
        _ => path,
    };
    path.replace("%3A", ":")
        .replace("%3a", ":")
        .replace("%2F", "/")
}

/// Replays the named fixtures of `engine` (a later name wins a route), with `overrides` from
/// other engines (`(engine, name)`), on a unix socket in a temp dir, until dropped.
struct Replay {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
    /// The routes asked for, in order.
    asked: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Replay {
    /// How many requests asked for `route`.
    fn times_asked(&self, route: &str) -> usize {
        self.asked
            .lock()
            .expect("the request log")
            .iter()
            .filter(|r| *r == route)
            .count()
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn replay(engine: &str, names: &[&str], overrides: &[(&str, &str)]) -> Replay {
    let mut routes: HashMap<(String, String), Answer> = HashMap::new();
    let all = names
        .iter()
        .map(|n| (engine, *n))
        .chain(overrides.iter().copied());
    for (engine, name) in all {
        let doc = fixture(engine, name);
        let method = doc["method"].as_str().expect("method").to_owned();
        let path = route(doc["path"].as_str().expect("path"));
        let status = u16::try_from(doc["status"].as_u64().expect("status")).expect("a status");
        routes.insert(
            (method, path),
            Answer {
                status,
                body: doc["body"].clone(),
            },
        );
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket = dir.path().join("engine.sock");
    let listener = UnixListener::bind(&socket).expect("bind the replay socket");
    let routes = Arc::new(routes);
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&asked);
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let routes = Arc::clone(&routes);
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let mut first = text.lines().next().unwrap_or_default().split_whitespace();
                let method = first.next().unwrap_or_default().to_owned();
                let path = route(first.next().unwrap_or_default());
                log.lock().expect("the request log").push(path.clone());
                let (status, body, kind) = match routes.get(&(method, path.clone())) {
                    Some(answer) => {
                        let (body, kind) = match &answer.body {
                            Value::String(s) => (s.clone(), "text/plain"),
                            // The event stream: one JSON object a line.
                            Value::Array(items) if path == "/events" => (
                                items.iter().map(|e| e.to_string() + "\n").collect(),
                                "application/json",
                            ),
                            Value::Null => (String::new(), "application/json"),
                            other => (other.to_string(), "application/json"),
                        };
                        (answer.status, body, kind)
                    }
                    None => (
                        404,
                        format!(r#"{{"message":"no fixture for {path}"}}"#),
                        "application/json",
                    ),
                };
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
                     Api-Version: 1.41\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    Replay {
        _dir: dir,
        socket,
        task,
        asked,
    }
}

/// The fixtures every connection needs, and the listing ones.
const CONNECT: [&str; 2] = ["version", "info"];

async fn connect(replay: &Replay) -> Docker {
    Docker::connect(&format!("unix://{}", replay.socket.display()))
        .await
        .expect("the adapter connects to the replayed engine")
}

/// The recorded image IDs: (child, untagged), as the engine gave them.
fn recorded_ids(engine: &str) -> (String, String) {
    let child = fixture(engine, "image_inspect")["body"]["Id"]
        .as_str()
        .expect("an Id")
        .to_owned();
    let untagged = fixture(engine, "image_inspect_untagged")["body"]["Id"]
        .as_str()
        .expect("an Id")
        .to_owned();
    (child, untagged)
}

fn find<'a>(images: &'a [ImageSummary], id: &str) -> &'a ImageSummary {
    images
        .iter()
        .find(|i| i.id == id)
        .unwrap_or_else(|| panic!("{id} is not listed"))
}

fn base_of(images: &[ImageSummary]) -> &ImageSummary {
    images
        .iter()
        .find(|i| i.tags.len() == 2)
        .expect("the base with its two tags")
}

#[tokio::test]
async fn each_engine_is_recognised_with_its_capabilities() {
    for engine in ENGINES {
        let server = replay(engine, &CONNECT, &[]);
        let docker = connect(&server).await;
        let caps = docker.capabilities();
        let info = docker.info().await.expect("info");
        match engine {
            "d20" | "d26" => {
                assert_eq!(info.store, "graph driver", "{engine}");
                assert!(caps.reports_deleted_layers && caps.has_parents && caps.build_cache);
                assert!(!caps.prunes_parents && !caps.qualifies_local_names);
            }
            "d26cs" => {
                assert_eq!(info.store, "containerd image store");
                assert!(!caps.reports_deleted_layers && !caps.has_parents && caps.build_cache);
            }
            _ => {
                assert_eq!(info.store, "podman");
                assert!(caps.prunes_parents && caps.qualifies_local_names);
                assert!(!caps.build_cache && !caps.reports_deleted_layers);
            }
        }
    }
}

#[tokio::test]
async fn untagged_images_have_no_references_and_ids_are_the_engines_own() {
    for engine in ENGINES {
        let server = replay(engine, &[&CONNECT[..], &["images"]].concat(), &[]);
        let docker = connect(&server).await;
        let images = docker.list_images().await.expect("the image list parses");
        assert_eq!(images.len(), 3, "{engine}: base, child, untagged");
        let (child, untagged) = recorded_ids(engine);
        // `<none>:<none>` (1.41), `[]` (1.45) and `null` (Podman) all mean none.
        let loose = find(&images, &untagged);
        assert!(loose.tags.is_empty(), "{engine}: {:?}", loose.tags);
        assert!(loose.digests.is_empty(), "{engine}: {:?}", loose.digests);
        // The IDs are what inspect says (a manifest digest on the containerd store), whole.
        let child = find(&images, &child);
        assert!(images
            .iter()
            .all(|i| i.id.starts_with("sha256:") && i.id.len() == 71));
        let base = base_of(&images);
        for tag in child.tags.iter().chain(&base.tags) {
            // Podman's spelling is kept: a removal must name what the engine lists.
            assert_eq!(
                tag.starts_with("localhost/"),
                engine == "podman",
                "{engine}: {tag}"
            );
        }
        // Only the graph-driver store and Podman keep the Parent link of the load; Podman
        // gives it without `sha256:`, the adapter completes it.
        let linked = matches!(engine, "d20" | "d26" | "podman");
        assert_eq!(
            child.parent_id.as_deref(),
            linked.then_some(base.id.as_str()),
            "{engine}"
        );
        let digests_listed = matches!(engine, "d26cs" | "podman");
        assert_eq!(
            !base.digests.is_empty(),
            digests_listed,
            "{engine}: {:?}",
            base.digests
        );
    }
}

#[tokio::test]
async fn containers_name_their_image_by_the_id_the_image_list_gives() {
    for engine in ENGINES {
        let server = replay(engine, &[&CONNECT[..], &["containers"]].concat(), &[]);
        let docker = connect(&server).await;
        let containers = docker
            .list_containers()
            .await
            .expect("the container list parses");
        let (child, _) = recorded_ids(engine);
        assert_eq!(containers.len(), 1, "{engine}");
        assert_eq!(containers[0].image_id, child, "{engine}");
        assert_eq!(containers[0].state, "created", "{engine}");
        assert_eq!(
            containers[0].image_ref.starts_with("localhost/"),
            engine == "podman",
            "{engine}: {}",
            containers[0].image_ref
        );
    }
}

#[tokio::test]
async fn children_come_before_parents_with_or_without_parent_ids() {
    for engine in ENGINES {
        let server = replay(
            engine,
            &[&CONNECT[..], &["images", "image_inspect", "image_history"]].concat(),
            &[],
        );
        let docker = connect(&server).await;
        let images = docker.list_images().await.expect("images");
        let (child_id, _) = recorded_ids(engine);
        let child_facts = docker
            .image_details(&child_id)
            .await
            .expect("child details");
        assert_eq!(child_facts.layers.len(), 2, "{engine}");
        // The base's facts: its one layer is the child's first (the same chain ID).
        let base_facts = imagegc::engine::ImageFacts {
            layers: child_facts.layers[..1].to_vec(),
            blobs: Vec::new(),
            sizes_exact: true,
            last_tag_time: None,
        };
        let base_id = base_of(&images).id.clone();
        let inputs = images
            .iter()
            .filter(|i| i.id == child_id || i.id == base_id)
            .map(|i| ImageInput {
                summary: i.clone(),
                facts: Arc::new(if i.id == child_id {
                    child_facts.clone()
                } else {
                    base_facts.clone()
                }),
                tracked: Tracked::default(),
            })
            .collect();
        let snap =
            Snapshot::build(inputs, Vec::new(), None).with_capabilities(docker.capabilities());
        let (child, base) = (snap.by_id[&child_id], snap.by_id[&base_id]);
        assert!(
            snap.depth(child) > snap.depth(base),
            "{engine}: the child must go first"
        );
        assert!(snap.is_ancestor(base, child), "{engine}");
        assert!(!snap.is_ancestor(child, base), "{engine}");
    }
}

#[tokio::test]
async fn graph_driver_images_are_sized_from_the_inspect_alone_where_the_layers_are_known() {
    for engine in ENGINES {
        let server = replay(
            engine,
            &[
                &CONNECT[..],
                &["image_inspect", "image_history", "image_inspect_untagged"],
            ]
            .concat(),
            &[],
        );
        let docker = connect(&server).await;
        let (child_id, untagged_id) = recorded_ids(engine);
        let child_history = format!("/images/{child_id}/history");
        let first = docker
            .image_details(&child_id)
            .await
            .expect("child details");
        assert_eq!(server.times_asked(&child_history), 1, "{engine}");
        let again = docker
            .image_details(&child_id)
            .await
            .expect("child details");
        assert_eq!(again, first, "{engine}: the same facts either way");
        let untagged = docker.image_details(&untagged_id).await;
        let untagged_history = format!("/images/{untagged_id}/history");
        if matches!(engine, "d20" | "d26") {
            // Recorded: the inspect `Size` is the sum of the history's layer sizes (5,000 =
            // 2,000 + 3,000), so two layers known make a second history call needless, and
            // an image of one layer needs none.
            assert_eq!(server.times_asked(&child_history), 1, "{engine}");
            assert!(first.sizes_exact, "{engine}");
            assert_eq!(server.times_asked(&untagged_history), 0, "{engine}");
            let untagged = untagged.expect("untagged details from the inspect alone");
            assert_eq!(untagged.layers.len(), 1, "{engine}");
            assert_eq!(untagged.layers[0].size, 1000, "{engine}: the recorded Size");
            assert!(untagged.sizes_exact, "{engine}");
        } else {
            // The containerd store and Podman need every history (snapshot usage, tar
            // sizes): no history was recorded for the untagged image, so asking fails.
            assert_eq!(server.times_asked(&child_history), 2, "{engine}");
            assert_eq!(server.times_asked(&untagged_history), 1, "{engine}");
            assert!(untagged.is_err(), "{engine}: no history recorded, no facts");
        }
    }
}

#[tokio::test]
async fn removal_answers_name_whole_image_ids_and_layers_only_where_the_engine_lists_them() {
    for engine in ENGINES {
        let server = replay(engine, &[&CONNECT[..], &["delete_child"]].concat(), &[]);
        let docker = connect(&server).await;
        let (child, _) = recorded_ids(engine);
        let items = docker
            .remove_image(&child)
            .await
            .expect("the removal answer parses");
        let deleted: Vec<&String> = items
            .iter()
            .filter_map(|i| match i {
                DeleteItem::Deleted(id) => Some(id),
                DeleteItem::Untagged(_) => None,
            })
            .collect();
        assert!(deleted.contains(&&child), "{engine}: {deleted:?}");
        assert!(
            deleted.iter().all(|id| id.starts_with("sha256:")),
            "{engine}"
        );
        let layers = deleted.len() - 1;
        // The graph-driver store lists the layer it deleted (the base's stays with the
        // untagged base); the containerd store and Podman list none.
        assert_eq!(
            layers,
            usize::from(matches!(engine, "d20" | "d26")),
            "{engine}"
        );
        assert!(items
            .iter()
            .any(|i| matches!(i, DeleteItem::Untagged(r) if r.ends_with("/child:1"))));
    }
}

#[tokio::test]
async fn podman_deletes_the_dangling_parent_with_its_child_and_lists_only_the_child() {
    // What `prunes_parents` stands for: after `delete_child` (noprune=true) the untagged base
    // is gone on Podman, kept on the graph-driver store (the containerd store had already
    // deleted it with its last tag: no parent holds it there).
    for engine in ENGINES {
        let after = fixture(engine, "images_after")["body"].clone();
        let left = after.as_array().map_or(0, Vec::len);
        assert_eq!(
            left,
            usize::from(matches!(engine, "d20" | "d26")),
            "{engine}"
        );
        let last_tag = fixture(engine, "delete_parent_last_tag")["body"].to_string();
        assert_eq!(
            last_tag.contains("Deleted"),
            engine == "d26cs",
            "{engine}: {last_tag}"
        );
    }
}

#[tokio::test]
async fn events_are_read_as_uses_on_every_engine() {
    for engine in ENGINES {
        let server = replay(engine, &[&CONNECT[..], &["events"]].concat(), &[]);
        let docker = connect(&server).await;
        let events: Vec<_> = tokio::time::timeout(
            Duration::from_secs(10),
            docker.events(None).collect::<Vec<_>>(),
        )
        .await
        .expect("the replayed stream ends");
        let uses: Vec<Use> = events
            .into_iter()
            .map(|e| e.expect("every recorded event parses").what)
            .collect();
        let created = uses.iter().any(|u| matches!(u, Use::ContainerCreated(_)));
        // Podman says `remove`, Docker `destroy`: both are the container going.
        let destroyed = uses.iter().any(|u| matches!(u, Use::ContainerDestroyed(_)));
        assert!(created && destroyed, "{engine}: {uses:?}");
        // Podman names the image by bare hex; the adapter completes the ID.
        let untags: Vec<&String> = uses
            .iter()
            .filter_map(|u| match u {
                Use::ImageUntagged { image } => Some(image),
                _ => None,
            })
            .collect();
        assert!(!untags.is_empty(), "{engine}: {uses:?}");
        assert!(
            untags
                .iter()
                .all(|i| i.starts_with("sha256:") && i.len() == 71),
            "{engine}: {untags:?}"
        );
    }
}

#[tokio::test]
async fn an_engine_without_build_cache_is_never_asked_and_a_404_means_none() {
    for engine in ENGINES {
        let server = replay(
            engine,
            &[&CONNECT[..], &["system_df", "build_prune"]].concat(),
            &[],
        );
        let docker = connect(&server).await;
        let listed = docker.build_cache().await;
        let removed = docker
            .remove_cache_record("imagegcapifixture0000000000")
            .await;
        if engine == "podman" {
            assert!(
                matches!(listed, Err(EngineError::Unsupported(_))),
                "{listed:?}"
            );
            assert!(
                matches!(removed, Err(EngineError::Unsupported(_))),
                "{removed:?}"
            );
        } else {
            // `BuildCache` null (1.41 with none) or [] (1.45).
            assert!(listed.is_ok_and(|r| r.is_empty()), "{engine}");
            assert!(removed.is_ok_and(|r| !r.deleted), "{engine}");
        }
    }
    // A Docker engine that answers 404 as Podman does: no build cache, not a failure.
    let server = replay("d20", &CONNECT, &[("podman", "build_prune")]);
    let docker = connect(&server).await;
    let removed = docker
        .remove_cache_record("imagegcapifixture0000000000")
        .await;
    assert!(
        matches!(removed, Err(EngineError::Unsupported(_))),
        "{removed:?}"
    );
    let listed = docker.build_cache().await;
    assert!(
        matches!(listed, Err(EngineError::Unsupported(_))),
        "{listed:?}"
    );
}

#[tokio::test]
async fn engines_below_api_1_47_ignore_manifests_and_the_list_reads_the_same() {
    for engine in ENGINES {
        let plain = replay(engine, &[&CONNECT[..], &["images"]].concat(), &[]);
        let asked = replay(engine, &[&CONNECT[..], &["images_manifests"]].concat(), &[]);
        let mut plain = connect(&plain).await.list_images().await.expect("images");
        let mut asked = connect(&asked).await.list_images().await.expect("images");
        // Images created in the same second come in no fixed order.
        plain.sort_by(|a, b| a.id.cmp(&b.id));
        asked.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(plain, asked, "{engine}");
        let raw = fixture(engine, "images_manifests")["body"].clone();
        let listed = raw.as_array().expect("a list");
        assert!(
            listed.iter().all(|i| i.get("Manifests").is_none()),
            "{engine}"
        );
        // `Containers` and `SharedSize`: -1 (not computed) on Docker's list, real on Podman's;
        // imagegc reads neither.
        let containers: Vec<i64> = listed
            .iter()
            .filter_map(|i| i["Containers"].as_i64())
            .collect();
        assert_eq!(containers.len(), 3, "{engine}");
        assert_eq!(
            containers.iter().all(|&c| c == -1),
            engine != "podman",
            "{engine}"
        );
    }
}
