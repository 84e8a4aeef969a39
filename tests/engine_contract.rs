//! One suite of engine behaviours, run against every `Engine` imagegc has (the in-memory fake
//! under each capability set it emulates, and the real Docker Engine): each must do what its
//! declared `Capabilities` promise, since the planner and the executor rely on them instead of
//! assuming Docker 20.10.

mod common;

use chrono::Utc;
use imagegc::engine::{Capabilities, DeleteItem, Engine, EngineError};
use imagegc::fake::{self, FakeEngine};
use sha2::{Digest, Sha256};

/// An image with two tags, no children, no containers and layers no other image shares.
struct Subject {
    image_id: String,
    tags: [String; 2],
    /// Its layers' chain IDs, oldest first, computed here and not by the adapter.
    chain_ids: Vec<String>,
}

/// `C0 = D0`, `Cn = sha256(C(n-1) + " " + Dn)`: the layer store's naming.
fn chain_ids(diff_ids: &[&str]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    for diff in diff_ids {
        let next = match chain.last() {
            None => (*diff).to_owned(),
            Some(prev) => format!("sha256:{:x}", Sha256::digest(format!("{prev} {diff}"))),
        };
        chain.push(next);
    }
    chain
}

fn deleted(items: &[DeleteItem]) -> Vec<String> {
    items
        .iter()
        .filter_map(|item| match item {
            DeleteItem::Deleted(id) => Some(id.clone()),
            DeleteItem::Untagged(_) => None,
        })
        .collect()
}

async fn is_listed<E: Engine>(engine: &E, image_id: &str) -> Option<Vec<String>> {
    let images = engine.list_images().await.expect("list images");
    images
        .into_iter()
        .find(|i| i.id == image_id)
        .map(|i| i.tags)
}

/// The contract: image facts name the layers as the layer store does, with exact sizes; a
/// removal by tag untags only that tag where `untags_single_reference` says so; the image goes
/// with its last tag; the answer lists the image and its layers where
/// `reports_deleted_layers` says so, and nothing deleted otherwise; then the image is gone.
async fn behaves_as_declared<E: Engine>(engine: &E, subject: &Subject) {
    let capabilities = engine.capabilities();
    let facts = engine
        .image_details(&subject.image_id)
        .await
        .expect("image facts");
    let layers: Vec<&str> = facts.layers.iter().map(|l| l.chain_id.as_str()).collect();
    assert_eq!(layers, subject.chain_ids, "{facts:?}");
    assert!(facts.sizes_exact, "{facts:?}");
    assert!(facts.layers.iter().all(|l| l.size > 0), "{facts:?}");

    let [first, second] = &subject.tags;
    let mut answers = engine
        .remove_image(first)
        .await
        .expect("remove the first tag");
    if capabilities.untags_single_reference {
        assert_eq!(answers, vec![DeleteItem::Untagged(first.clone())]);
        assert_eq!(
            is_listed(engine, &subject.image_id).await,
            Some(vec![second.clone()]),
            "the image stays with its other tag"
        );
        let last = engine
            .remove_image(second)
            .await
            .expect("remove the last tag");
        assert!(
            last.contains(&DeleteItem::Untagged(second.clone())),
            "{last:?}"
        );
        answers.extend(last);
    }

    let reported = deleted(&answers);
    if capabilities.reports_deleted_layers {
        assert!(reported.contains(&subject.image_id), "{answers:?}");
        for chain_id in &subject.chain_ids {
            assert!(reported.contains(chain_id), "{chain_id} in {answers:?}");
        }
    } else {
        assert!(reported.is_empty(), "declared to report none: {answers:?}");
    }
    assert_eq!(is_listed(engine, &subject.image_id).await, None);
    let gone = engine.image_details(&subject.image_id).await;
    assert!(matches!(gone, Err(EngineError::NotFound(_))), "{gone:?}");
}

fn fake_subject(engine: &FakeEngine) -> Subject {
    let diffs = ["sha256:contract-a", "sha256:contract-b"];
    let image_id = engine.add_image(fake::image(
        "sha256:contract",
        &["contract:1", "contract:2"],
        Utc::now(),
        &[(diffs[0], 100), (diffs[1], 200)],
    ));
    Subject {
        image_id,
        tags: ["contract:1".to_owned(), "contract:2".to_owned()],
        chain_ids: chain_ids(&diffs),
    }
}

#[tokio::test]
async fn the_fake_with_docker_capabilities_behaves_as_it_declares() {
    let engine = FakeEngine::new();
    let subject = fake_subject(&engine);
    assert!(engine.capabilities().reports_deleted_layers);
    behaves_as_declared(&engine, &subject).await;
}

#[tokio::test]
async fn the_fake_that_reports_no_deleted_layers_behaves_as_it_declares() {
    let engine = FakeEngine::new();
    engine.set_capabilities(Capabilities {
        reports_deleted_layers: false,
        ..engine.capabilities()
    });
    let subject = fake_subject(&engine);
    behaves_as_declared(&engine, &subject).await;
}

#[tokio::test]
async fn the_docker_engine_behaves_as_it_declares() {
    let lab = common::Lab::new();
    let first = lab.reference("contract", "1");
    let second = lab.reference("contract", "2");
    let loaded = lab.load_image(&common::ImageSpec::new().tag(first.clone()));
    lab.tag(&loaded.id, &second);
    let docker = imagegc::docker::Docker::connect(&common::engine_address())
        .await
        .expect("these tests need the Docker Engine");
    let subject = Subject {
        image_id: loaded.id.clone(),
        tags: [first, second],
        chain_ids: loaded.chain_ids(),
    };
    behaves_as_declared(&docker, &subject).await;
}
