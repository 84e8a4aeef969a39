//! One `imagegc once` with a `[[containers]]` policy on the shared engine, over a lab of
//! containers in every state and under every protection the issue names: it removes exactly
//! the finished, unprotected ones (exited with a named volume, exited with an anonymous volume,
//! never started, and the user of a `--volumes-from` pair), then the image only they pinned;
//! it keeps the running, paused, restart-policy `always`, Compose-managed, protected-by-name
//! and protected-by-label containers and the `--volumes-from` source, and every volume. A
//! `dead` container cannot be made on purpose here (`docs/ENGINES.md`); the planner tests
//! cover it. Bytes on disk are checked on a private engine (`tests/containers_scenario.rs`).

mod common;

use std::collections::BTreeSet;

use serde_json::Value;

use common::{docker, Lab};

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

/// Removes the named volume on drop (declared before the lab, so it drops after the lab
/// removed the containers that mount it). Never panics.
struct Volume(String);

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = docker(&["volume", "rm", &self.0]);
    }
}

fn volume_names() -> BTreeSet<String> {
    common::engine_get("/volumes")["Volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v["Name"].as_str().map(str::to_owned))
        .collect()
}

/// `docker create --name NAME --label <lab> --network none ARGS… IMAGE CMD…`: the ID.
fn create(lab: &Lab, name: &str, args: &[&str], image: &str, cmd: &[&str]) -> String {
    let label = lab.label();
    let mut all = vec!["create", "--name", name, "--label", &label];
    if !args.iter().any(|a| a.starts_with("--network")) {
        all.extend(["--network", "none"]);
    }
    all.extend(args);
    all.push(image);
    all.extend(cmd);
    ok(&all)
}

/// Start a container whose command exits at once, and wait for it.
fn run_to_exit(id: &str) {
    ok(&["start", id]);
    assert_eq!(ok(&["wait", id]), "0");
}

fn ids(list: &Value, key: &str) -> BTreeSet<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c[key].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn sum(list: &Value, key: &str) -> u64 {
    list.as_array()
        .map_or(0, |a| a.iter().filter_map(|c| c[key].as_u64()).sum())
}

/// The lab's containers, by what the policy must do with them.
struct Made {
    with_named: String,
    with_anonymous: String,
    anonymous_volume: String,
    never_started: String,
    source: String,
    user: String,
    running: String,
    paused: String,
    always: String,
    compose: String,
    by_name: String,
    by_label: String,
}

#[test]
fn one_pass_removes_exactly_the_finished_unprotected_containers_then_the_image_they_pinned() {
    let named_volume = Volume(format!("imagegc-test-{}", common::random_hex(12)));
    let lab = Lab::new();
    // `jobs:1` is used only by containers the policy removes; `svc:1` by ones it keeps.
    let jobs = lab.load_image(
        &common::ImageSpec::new()
            .tag(lab.reference("jobs", "1"))
            .days_old(10)
            .with_sleeper(),
    );
    let svc = lab.load_image(
        &common::ImageSpec::new()
            .tag(lab.reference("svc", "1"))
            .days_old(10)
            .layer_bytes(1000)
            .with_sleeper(),
    );
    ok(&["volume", "create", &named_volume.0]);

    let made = make_containers(&lab, &jobs.id, &svc.id, &named_volume.0);
    let Made {
        with_named,
        with_anonymous,
        anonymous_volume,
        never_started,
        source,
        user,
        running,
        paused,
        always,
        compose,
        by_name,
        by_label,
    } = made;
    // Every finish (and creation) is older than exited_for.
    std::thread::sleep(std::time::Duration::from_secs(3));

    let policy = write_policy(&lab);
    let policy = policy.to_str().expect("a UTF-8 path");
    let json = |args: &[&str]| imagegc_json(policy, args);
    let plan = json(&["plan"]);
    let removable: BTreeSet<String> = [&with_named, &with_anonymous, &never_started, &user]
        .into_iter()
        .cloned()
        .collect();
    assert_eq!(
        ids(&plan["containers"], "container_id"),
        removable,
        "the plan removes exactly the finished, unprotected containers: {plan:#}"
    );
    let kept_words = kept_words(&plan);
    for (id, word) in [
        (&always, "restart_policy"),
        (&compose, "compose"),
        (&by_name, "protect_container"),
        (&by_label, "protect_label"),
        (&source, "used_by_container"),
    ] {
        assert!(
            kept_words.contains(&(id.clone(), word.to_owned())),
            "{id} kept because {word}: {kept_words:?}\n{plan:#}"
        );
    }
    let image_removals: BTreeSet<String> = ids(&plan["removals"], "image_id");
    assert!(
        image_removals.contains(&jobs.id),
        "the image only removed containers pinned goes in the same pass: {plan:#}"
    );
    assert!(!image_removals.contains(&svc.id), "{plan:#}");

    let pass = json(&["once"]);
    assert_eq!(
        ids(&pass["containers_removed"], "container_id"),
        removable,
        "{pass:#}"
    );
    for id in &removable {
        assert!(!common::container_exists(id), "{id} is gone");
    }
    for id in [
        &running, &paused, &always, &compose, &by_name, &by_label, &source,
    ] {
        assert!(common::container_exists(id), "{id} stays");
    }
    assert!(
        !common::image_exists(&jobs.id),
        "the unpinned image went too"
    );
    assert!(
        common::image_exists(&svc.id),
        "the image kept containers use stays"
    );
    let volumes = volume_names();
    assert!(
        volumes.contains(&named_volume.0) && volumes.contains(&anonymous_volume),
        "every volume survives: {} and {anonymous_volume} in {volumes:?}",
        named_volume.0
    );
    let planned = sum(&plan["containers"], "reclaim_bytes");
    let reported = sum(&pass["containers_removed"], "reclaimed_bytes");
    assert_eq!(
        planned, reported,
        "the writable layers freed are the predicted ones"
    );

    ok(&["unpause", &paused]);
    // The anonymous volume outlived its container by design; the lab's cleanup does not know it.
    let _ = docker(&["volume", "rm", &anonymous_volume]);
}

/// Every container of the lab: the removable ones on `jobs`, the kept ones on `svc`.
fn make_containers(lab: &Lab, jobs: &str, svc: &str, volume: &str) -> Made {
    let name = |what: &str| format!("{}-{what}", lab.id());
    // Removable: finished, unprotected, used by nobody.
    let with_named = create(
        lab,
        &name("job-named-volume"),
        &["-v", &format!("{volume}:/data")],
        jobs,
        &["/sleeper", "0"],
    );
    run_to_exit(&with_named);
    let with_anonymous = create(
        lab,
        &name("job-anonymous-volume"),
        &["-v", "/data"],
        jobs,
        &["/sleeper", "0"],
    );
    run_to_exit(&with_anonymous);
    let anonymous_volume = common::engine_get(&format!("/containers/{with_anonymous}/json"))
        ["Mounts"][0]["Name"]
        .as_str()
        .expect("the anonymous volume's name")
        .to_owned();
    let never_started = create(lab, &name("job-never-started"), &[], jobs, &["/sleeper"]);
    // The source of a --volumes-from pair is kept (its user mounts its volumes); the user,
    // never started and used by nobody, goes.
    let source = create(
        lab,
        &name("data-source"),
        &["-v", "/shared"],
        svc,
        &["/sleeper", "0"],
    );
    run_to_exit(&source);
    let user = create(
        lab,
        &name("data-user"),
        &["--volumes-from", &source],
        jobs,
        &["/sleeper"],
    );

    // Kept: active, meant to come back, managed, protected.
    let running = create(lab, &name("running"), &[], svc, &["/sleeper"]);
    ok(&["start", &running]);
    let paused = create(lab, &name("paused"), &[], svc, &["/sleeper"]);
    ok(&["start", &paused]);
    ok(&["pause", &paused]);
    let always = create(
        lab,
        &name("always"),
        &["--restart", "always"],
        svc,
        &["/sleeper"],
    );
    ok(&["start", &always]);
    ok(&["stop", "-t", "5", &always]);
    let compose = create(
        lab,
        &name("compose"),
        &["--label", "com.docker.compose.project=imagegc-test"],
        svc,
        &["/sleeper", "0"],
    );
    run_to_exit(&compose);
    let by_name = create(lab, &name("protected"), &[], svc, &["/sleeper", "0"]);
    run_to_exit(&by_name);
    let by_label = create(
        lab,
        &name("keep-label"),
        &["--label", "imagegc.test.keep=yes"],
        svc,
        &["/sleeper", "0"],
    );
    run_to_exit(&by_label);
    for (id, state) in [
        (&always, "exited"),
        (&paused, "paused"),
        (&running, "running"),
        (&never_started, "created"),
    ] {
        assert_eq!(common::container_state(id), state, "{id}");
    }
    Made {
        with_named,
        with_anonymous,
        anonymous_volume,
        never_started,
        source,
        user,
        running,
        paused,
        always,
        compose,
        by_name,
        by_label,
    }
}

/// The policy: `[[containers]]` scoped to the lab, `[[policy]]` for its old images, the
/// protections.
fn write_policy(lab: &Lab) -> std::path::PathBuf {
    let name = |what: &str| format!("{}-{what}", lab.id());
    let policy = lab.dir().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[state]\npath = \"{state}\"\n[safety]\nmin_age = \"1s\"\n\
             protect_containers = [\"{protected}\"]\nprotect_labels = [\"imagegc.test.keep=yes\"]\n\
             [[containers]]\nname = \"finished-jobs\"\nstates = [\"exited\", \"dead\", \"created\"]\n\
             labels = [\"{label}\"]\nexited_for = \"2s\"\n\
             [[policy]]\nname = \"old-images\"\n{sel}\nolder_than = \"7d\"\n",
            state = lab.state_path().display(),
            protected = name("protected"),
            label = lab.label(),
            sel = lab.selector(),
        ),
    )
    .expect("write the policy");
    policy
}

/// `imagegc --config POLICY ARGS… --output json`, asserted to succeed.
fn imagegc_json(policy: &str, args: &[&str]) -> Value {
    let mut all = vec!["--config", policy];
    all.extend(args);
    all.extend(["--output", "json"]);
    let out = common::imagegc(&all);
    assert!(
        out.status.success(),
        "imagegc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// Each kept container's ID with its safety word.
fn kept_words(plan: &Value) -> BTreeSet<(String, String)> {
    plan["kept_containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|k| {
            (
                k["container_id"].as_str().unwrap_or_default().to_owned(),
                k["why"]["kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}
