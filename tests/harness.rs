//! Self-tests of the real-engine harness in `tests/common`.

mod common;

use chrono::{TimeDelta, Utc};
use common::{
    container_exists, container_state, containers_with_label, created_of, engine_lock,
    image_exists, imagegc, images_with_label, inspect_image, layers_size, parent_of, references_of,
    ImageSpec, Lab, LABEL_KEY,
};

#[test]
fn a_loaded_dangling_image_shows_its_old_created_date_and_carries_the_lab_label() {
    let lab = Lab::new();
    let created = Utc::now() - TimeDelta::days(30);
    let image = lab.load_image(&ImageSpec::new().created(created).label("role", "dangling"));

    assert!(image.id.starts_with("sha256:"));
    assert!(image_exists(&image.id));
    assert_eq!(created_of(&image.id), image.created);
    assert_eq!(image.created.timestamp(), created.timestamp());
    assert!(
        references_of(&image.id).is_empty(),
        "a dangling image has no references"
    );

    let inspect = inspect_image(&image.id);
    let labels = &inspect["Config"]["Labels"];
    assert_eq!(labels[LABEL_KEY], lab.id());
    assert_eq!(labels["role"], "dangling");
    assert_eq!(
        inspect["RootFS"]["Layers"],
        serde_json::json!(image.diff_ids)
    );
    assert_eq!(lab.lab_images(), vec![image.id.clone()]);
}

#[test]
fn a_tagged_image_and_an_extra_tag_are_references_of_the_image() {
    let lab = Lab::new();
    let v1 = lab.reference("app", "v1");
    let image = lab.load_image(&ImageSpec::new().tag(&v1).days_old(3));
    assert_eq!(references_of(&image.id), vec![v1.clone()]);

    let latest = lab.reference("app", "latest");
    lab.tag(&image.id, &latest);
    assert_eq!(references_of(&image.id), vec![latest.clone(), v1.clone()]);
    assert!(image_exists(&latest));
}

#[test]
fn a_parent_child_chain_loads_with_the_parent_link_and_the_child_has_two_layers() {
    let lab = Lab::new();
    let chain = lab.load_chain(&[
        ImageSpec::new().days_old(40),
        ImageSpec::new()
            .days_old(20)
            .tag(lab.reference("chain", "child")),
    ]);
    let (parent, child) = (&chain[0], &chain[1]);

    assert_eq!(parent_of(&child.id), Some(parent.id.clone()));
    assert_eq!(parent_of(&parent.id), None);
    assert_eq!(child.diff_ids.len(), 2);
    assert_eq!(child.diff_ids[0], parent.diff_ids[0]);
    assert_eq!(
        inspect_image(&child.id)["RootFS"]["Layers"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let mut images = lab.lab_images();
    images.sort();
    let mut expected = vec![parent.id.clone(), child.id.clone()];
    expected.sort();
    assert_eq!(images, expected);
}

#[test]
fn a_child_loaded_later_on_an_earlier_image_records_its_parent() {
    let lab = Lab::new();
    let base = lab.load_image(&ImageSpec::new().tag(lab.reference("base", "1")));
    let child = lab.load_image(&ImageSpec::new().parent(&base));
    let grandchild = lab.load_image(&ImageSpec::new().parent(&child));

    assert_eq!(parent_of(&child.id), Some(base.id.clone()));
    assert_eq!(parent_of(&grandchild.id), Some(child.id.clone()));
    assert_eq!(grandchild.diff_ids.len(), 3);
    // Loading the child again with the parent did not touch the parent's references.
    assert_eq!(references_of(&base.id), vec![lab.reference("base", "1")]);
}

#[test]
fn a_running_container_is_running_and_an_exited_one_is_exited() {
    let lab = Lab::new();
    let image = lab.load_image(&ImageSpec::new());

    let running = lab.running_container(&image.id);
    let exited = lab.exited_container(&image.id);
    let created = lab.create_container(&image.id);
    let failed = lab.start_failed_container(&image.id);
    let paused = lab.paused_container(&image.id);

    assert_eq!(container_state(&running), "running");
    assert_eq!(container_state(&exited), "exited");
    assert_eq!(container_state(&created), "created");
    assert_eq!(container_state(&failed), "created");
    assert_eq!(container_state(&paused), "paused");
    let mut containers = lab.lab_containers();
    containers.sort();
    let mut expected = vec![running, exited, created, failed, paused];
    expected.sort();
    assert_eq!(containers, expected);
}

#[test]
fn an_image_with_the_sleeper_runs_it_from_its_own_layer() {
    let lab = Lab::new();
    let image = lab.load_image(&ImageSpec::new().with_sleeper().layer_bytes(0));
    let label = lab.label();
    let out = common::docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "--label",
        &label,
        &image.id,
        "/sleeper",
    ]);
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(container_state(&id), "running");
}

#[test]
fn after_the_lab_drops_none_of_its_images_or_containers_remain() {
    let lab = Lab::new();
    let label = lab.label();
    let chain = lab.load_chain(&[
        ImageSpec::new().tag(lab.reference("gone", "parent")),
        ImageSpec::new().tag(lab.reference("gone", "child")),
    ]);
    let other = lab.load_image(&ImageSpec::new());
    lab.tag(&other.id, &lab.reference("gone", "extra"));
    let running = lab.running_container(&chain[1].id);
    let exited = lab.exited_container(&other.id);
    let created = lab.create_container(&chain[0].id);
    assert_eq!(lab.lab_images().len(), 3);
    assert_eq!(lab.lab_containers().len(), 3);

    drop(lab);

    assert!(images_with_label(&label).is_empty());
    assert!(containers_with_label(&label).is_empty());
    for id in [&running, &exited, &created] {
        assert!(!container_exists(id));
    }
    for image in chain.iter().chain([&other]) {
        assert!(!image_exists(&image.id));
    }
}

#[test]
fn layers_size_grows_by_at_least_the_layer_bytes_and_drops_back_when_the_lab_goes() {
    const BYTES: usize = 3 * 1024 * 1024 + 17;
    let _lock = engine_lock();
    let before = layers_size();
    let lab = Lab::new();
    let image = lab.load_image(&ImageSpec::new().layer_bytes(BYTES));
    let loaded = layers_size();
    assert!(
        loaded >= before + BYTES as u64,
        "LayersSize {before} -> {loaded}, layer of {BYTES} bytes"
    );
    eprintln!(
        "LayersSize grew by {} for {} content bytes ({} tar bytes)",
        loaded - before,
        image.own_content_bytes,
        image.own_layer_tar_bytes
    );
    drop(lab);
    assert_eq!(layers_size(), before);
}

#[test]
fn the_imagegc_binary_can_be_invoked() {
    let lab = Lab::new();
    let policy = lab.write_policy(&format!(
        "[[policy]]\nname = \"t\"\n{}\nolder_than = \"1d\"\n",
        lab.selector()
    ));
    assert!(policy.is_file());
    assert!(lab.state_path().starts_with(lab.dir()));
    let out = imagegc(&["--help"]);
    // The binary is a stub for now: it only has to start and exit on its own.
    assert!(out.status.code().is_some(), "{out:?}");
}

#[test]
fn a_lab_cleans_up_also_when_its_test_panics() {
    let (sender, receiver) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let lab = Lab::new();
        sender.send(lab.label()).unwrap();
        let image = lab.load_image(&ImageSpec::new().tag(lab.reference("panic", "1")));
        lab.running_container(&image.id);
        panic!("the test fails here");
    })
    .join();
    assert!(result.is_err());
    let label = receiver.recv().unwrap();
    assert!(images_with_label(&label).is_empty());
    assert!(containers_with_label(&label).is_empty());
}

#[test]
fn removing_a_chain_deletes_the_layer_chain_ids_the_harness_computes() {
    let lab = Lab::new();
    let child_ref = lab.reference("layers", "child");
    let chain = lab.load_chain(&[ImageSpec::new(), ImageSpec::new().tag(&child_ref)]);
    let chain_ids = chain[1].chain_ids();
    assert_eq!(chain_ids[0], chain[0].diff_ids[0]);
    assert_eq!(chain_ids[..1], chain[0].chain_ids()[..]);

    // Untagging the child deletes it and its untagged parent, layers included.
    let out = common::docker(&["rmi", &child_ref]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deleted: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Deleted: "))
        .collect();
    for id in [&chain[1].id, &chain[0].id, &chain_ids[1], &chain_ids[0]] {
        assert!(deleted.contains(&id.as_str()), "{id} not in {stdout}");
    }
}
