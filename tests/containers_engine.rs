//! The Docker adapter's container inspect and removal against the shared engine's real
//! containers, each test label-scoped by its own `Lab`: `created` (never started), `exited`
//! with bytes in its writable layer, `running` and `paused` (409), restart policy `always`,
//! named and anonymous volumes (both survive `v=false`), a `--volumes-from` pair and a
//! `--network container:` pair. What is measured here is written in `docs/ENGINES.md`.

mod common;

use std::io::Write as _;

use imagegc::docker::Docker;
use imagegc::engine::{Engine, EngineError};

use common::{docker, Lab};

/// Bytes the exited container gets in its writable layer.
const N: usize = 3_000_000;

async fn engine() -> Docker {
    Docker::connect(&common::engine_address())
        .await
        .expect("these tests need the Docker Engine")
}

/// `docker <args>`, asserted to succeed; trimmed stdout.
fn ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes the named volumes on drop (declare it before the lab, so it drops after the lab
/// removed the containers that mount them). Never panics.
struct Volumes(Vec<String>);

impl Drop for Volumes {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let mut args = vec!["volume", "rm"];
            args.extend(self.0.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}

fn volume_names() -> Vec<String> {
    common::engine_get("/volumes")["Volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v["Name"].as_str().map(str::to_owned))
        .collect()
}

/// An image with the sleeper in it (`/sleeper 0` exits at once, `/sleeper` waits).
fn sleeper_image(lab: &Lab) -> String {
    lab.load_image(
        &common::ImageSpec::new()
            .tag(lab.reference("c", "1"))
            .with_sleeper(),
    )
    .id
}

/// `docker create --label <lab> --network none ARGS… IMAGE CMD…`: the container ID.
fn create(lab: &Lab, args: &[&str], image: &str, cmd: &[&str]) -> String {
    let label = lab.label();
    let mut all = vec!["create", "--label", &label];
    if !args.iter().any(|a| a.starts_with("--network")) {
        all.extend(["--network", "none"]);
    }
    all.extend(args);
    all.push(image);
    all.extend(cmd);
    ok(&all)
}

fn run_to_exit(id: &str) {
    ok(&["start", id]);
    assert_eq!(ok(&["wait", id]), "0");
}

#[tokio::test]
async fn details_of_created_exited_running_and_restarting_containers() {
    let lab = Lab::new();
    let image = sleeper_image(&lab);
    let docker_engine = engine().await;

    // created: never started, both times are the engine's zero time.
    let created = create(&lab, &[], &image, &["/sleeper"]);
    assert_eq!(common::container_state(&created), "created");
    let d = docker_engine
        .container_details(&created, true)
        .await
        .expect("inspect created");
    assert_eq!((d.started_at, d.finished_at), (None, None), "{d:?}");
    assert_eq!(d.size_rw, Some(0), "nothing written: {d:?}");
    assert_eq!(d.restart_policy, "no");

    // exited, with exactly N bytes put into its writable layer.
    let exited = create(&lab, &[], &image, &["/sleeper", "0"]);
    run_to_exit(&exited);
    let file = lab.dir().join("payload");
    std::fs::File::create(&file)
        .and_then(|mut f| f.write_all(&common::random_hex(N / 2).into_bytes()))
        .expect("write the payload");
    ok(&[
        "cp",
        file.to_str().expect("utf-8"),
        &format!("{exited}:/payload"),
    ]);
    assert_eq!(common::container_state(&exited), "exited");
    let d = docker_engine
        .container_details(&exited, true)
        .await
        .expect("inspect exited");
    let (started, finished) = (
        d.started_at.expect("started"),
        d.finished_at.expect("finished"),
    );
    // Not `finished >= started`: a process that exits at once can have its FinishedAt
    // recorded a little before its StartedAt (measured: 0.7 ms before, under load).
    assert!(
        (finished - started).num_seconds().abs() < 5,
        "ran for a moment: {d:?}"
    );
    assert_eq!(d.size_rw, Some(N as u64), "SizeRw counts the bytes written");
    let unsized_ = docker_engine
        .container_details(&exited, false)
        .await
        .expect("inspect without size");
    assert_eq!(unsized_.size_rw, None, "SizeRw is left out unless size=1");

    // running: started, never finished.
    let running = lab.running_container(&image);
    let d = docker_engine
        .container_details(&running, true)
        .await
        .expect("inspect running");
    assert!(d.started_at.is_some() && d.finished_at.is_none(), "{d:?}");

    // restart policy `always`: read out, and the container keeps coming back.
    let always = create(&lab, &["--restart", "always"], &image, &["/sleeper", "3"]);
    ok(&["start", &always]);
    let d = docker_engine
        .container_details(&always, false)
        .await
        .expect("inspect always");
    assert_eq!(d.restart_policy, "always");
    let seen: std::collections::BTreeSet<String> = (0..10)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            common::container_state(&always)
        })
        .collect();
    assert!(
        seen.iter().all(|s| s == "running" || s == "restarting"),
        "{seen:?}"
    );
    ok(&["update", "--restart", "no", &always]);
}

#[tokio::test]
async fn removal_refuses_running_paused_and_hostile_ids_and_keeps_every_volume() {
    let mut volumes = Volumes(Vec::new());
    let lab = Lab::new();
    let image = sleeper_image(&lab);
    let docker_engine = engine().await;

    let named = format!("imagegc-test-{}-data", lab.id());
    ok(&["volume", "create", "--label", &lab.label(), &named]);
    volumes.0.push(named.clone());
    let with_volumes = create(
        &lab,
        &["-v", &format!("{named}:/named"), "-v", "/anon"],
        &image,
        &["/sleeper", "0"],
    );
    run_to_exit(&with_volumes);
    let anonymous = ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{if eq .Destination \"/anon\"}}{{.Name}}{{end}}{{end}}",
        &with_volumes,
    ]);
    assert!(!anonymous.is_empty(), "an anonymous volume is mounted");
    volumes.0.push(anonymous.clone());

    let running = lab.running_container(&image);
    let paused = lab.paused_container(&image);
    for (state, id) in [("running", &running), ("paused", &paused)] {
        match docker_engine.remove_container(id).await {
            Err(EngineError::Conflict(message)) => assert!(
                message.contains(&format!("You cannot remove a {state} container")),
                "{message}"
            ),
            other => panic!("{state}: {other:?}"),
        }
        assert!(common::container_exists(id));
    }
    for hostile in [
        format!("{running}?force=1"),
        "../images/x".to_owned(),
        running[..12].to_owned(),
    ] {
        assert!(
            matches!(
                docker_engine.remove_container(&hostile).await,
                Err(EngineError::Other(_))
            ),
            "{hostile}"
        );
    }
    assert!(common::container_exists(&running));

    docker_engine
        .remove_container(&with_volumes)
        .await
        .expect("the exited container goes");
    assert!(!common::container_exists(&with_volumes));
    let left = volume_names();
    assert!(left.contains(&named), "the named volume survives");
    assert!(
        left.contains(&anonymous),
        "the anonymous volume survives (v=false)"
    );
    assert!(matches!(
        docker_engine.remove_container(&with_volumes).await,
        Err(EngineError::NotFound(_))
    ));
}

#[tokio::test]
async fn volumes_from_and_network_container_are_read_and_the_engine_does_not_protect_them() {
    let mut volumes = Volumes(Vec::new());
    let lab = Lab::new();
    let image = sleeper_image(&lab);
    let docker_engine = engine().await;

    let source_name = format!("imagegc-test-{}-source", lab.id());
    let source = create(
        &lab,
        &["--name", &source_name, "-v", "/shared"],
        &image,
        &["/sleeper", "0"],
    );
    run_to_exit(&source);
    let shared = ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Name}}{{end}}",
        &source,
    ]);
    volumes.0.push(shared.clone());
    let user = create(
        &lab,
        &["--volumes-from", &format!("{source_name}:ro")],
        &image,
        &["/sleeper", "0"],
    );
    run_to_exit(&user);
    let netuser = create(
        &lab,
        &["--network", &format!("container:{source_name}")],
        &image,
        &["/sleeper", "0"],
    );

    let d = docker_engine
        .container_details(&user, false)
        .await
        .expect("inspect the user");
    assert_eq!(
        d.volumes_from,
        std::slice::from_ref(&source_name),
        ":ro is stripped"
    );
    assert_eq!(d.network_container, None, "--network none");
    let d = docker_engine
        .container_details(&netuser, false)
        .await
        .expect("inspect the network user");
    assert_eq!(
        d.network_container.as_deref(),
        Some(source.as_str()),
        "the engine stores container:<full ID>"
    );

    // The engine removes a container others use: only imagegc's own rule protects it.
    docker_engine
        .remove_container(&source)
        .await
        .expect("the engine removes a --volumes-from source");
    assert!(!common::container_exists(&source));
    assert!(volume_names().contains(&shared), "its volume stays");
}

#[tokio::test]
async fn an_image_an_exited_container_uses_is_refused_until_the_container_goes() {
    let lab = Lab::new();
    let image = sleeper_image(&lab);
    let reference = lab.reference("c", "1");
    let exited = lab.exited_container(&image);
    let docker_engine = engine().await;
    for target in [&image, &reference] {
        match docker_engine.remove_image(target).await {
            Err(EngineError::Conflict(message)) => assert!(
                message.contains("container") && message.contains("must"),
                "{message}"
            ),
            other => panic!("{target}: {other:?}"),
        }
    }
    docker_engine
        .remove_container(&exited)
        .await
        .expect("the container goes");
    docker_engine
        .remove_image(&reference)
        .await
        .expect("then the image, unpinned, goes too");
    assert!(!common::image_exists(&image));
}
