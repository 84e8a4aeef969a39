//! `imagegc explain CONTAINER` on the in-memory engine: a target that names
//! no image is looked up among the containers (full ID, exact name, unique
//! ID prefix of at least 4 characters; an ambiguous prefix lists the
//! candidates), and the container's view says its state, image, finish time,
//! restart policy and writable layer and what the next pass does with it.
//! `explain IMAGE` says which policy removes the containers pinning it.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use imagegc::engine::{Container, ContainerDetails};
use imagegc::explain::{explain, explain_container, find_target, LookupError, Target};
use imagegc::fake::{self, FakeEngine};
use imagegc::gc::plan::{
    ContainerRemoval, KeptBecause, KeptContainer, Plan, Reason, Reasons, Removal,
};
use imagegc::host::disk::{DiskProbe, FixedDisk};
use imagegc::policy::Policy;
use imagegc::snapshot::{collect, DetailsCache, Snapshot, Tracked};

fn policy() -> Policy {
    imagegc::config::parse(
        "[[policy]]\nname = \"stale\"\nolder_than = \"7d\"\n",
        "t.toml",
    )
    .expect("a policy")
}

const JOB: &str = "c4812aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const WEB: &str = "c4813bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// `ci/job:1` used by the exited `ci-job-4812` (finished 8 hours ago, 2 KiB
/// writable layer) and the running `web`; their IDs share `c481`.
async fn host() -> Snapshot {
    let engine = FakeEngine::new();
    let old = Utc::now() - TimeDelta::days(30);
    engine.add_image(fake::image(
        "sha256:ab12",
        &["ci/job:1"],
        old,
        &[("sha256:d-job", 4000)],
    ));
    for (id, name, state) in [(JOB, "/ci-job-4812", "exited"), (WEB, "/web", "running")] {
        engine.add_container(Container {
            id: id.to_string(),
            names: vec![name.to_string()],
            image_id: "sha256:ab12".to_string(),
            image_ref: "ci/job:1".to_string(),
            labels: BTreeMap::new(),
            state: state.to_string(),
            created: old,
        });
    }
    let no_disk: Arc<dyn DiskProbe> = Arc::new(FixedDisk::new(None));
    let mut snap = collect(&engine, &no_disk, None, &mut DetailsCache::new(), &|_| {
        Tracked::default()
    })
    .await
    .expect("the fake engine answers");
    for c in &mut snap.containers {
        let job = c.container.id == JOB;
        c.details = Some(ContainerDetails {
            started_at: Some(Utc::now() - TimeDelta::hours(9)),
            finished_at: job.then(|| Utc::now() - TimeDelta::hours(8)),
            restart_policy: if job { "no" } else { "always" }.to_string(),
            size_rw: job.then_some(2048),
            ..ContainerDetails::default()
        });
    }
    snap
}

fn index(snap: &Snapshot, id: &str) -> usize {
    snap.containers
        .iter()
        .position(|c| c.container.id == id)
        .expect("listed")
}

/// What the planner makes of [`host`] under a `finished-ci-jobs` policy:
/// the job goes (unpinning nothing: `web` still uses the image), `web` is
/// kept for running.
fn plan(snap: &Snapshot) -> Plan {
    Plan {
        containers: vec![ContainerRemoval {
            container: index(snap, JOB),
            container_id: JOB.to_string(),
            name: "ci-job-4812".to_string(),
            policy: "finished-ci-jobs".to_string(),
            reason: Reasons(vec![Reason::ExitedFor {
                idle: TimeDelta::hours(8),
                limit: TimeDelta::hours(6),
                since: "finished",
            }]),
            reclaim_bytes: 2048,
            unpins: vec![0],
        }],
        kept_containers: vec![KeptContainer {
            container: index(snap, WEB),
            container_id: WEB.to_string(),
            name: "web".to_string(),
            policy: "finished-ci-jobs".to_string(),
            reason: KeptBecause::ContainerActive {
                state: "running".to_string(),
            },
        }],
        removals: vec![Removal {
            image: 0,
            image_id: "sha256:ab12".to_string(),
            reference: Some("ci/job:1".to_string()),
            policy: "stale".to_string(),
            reason: Reasons(vec![Reason::OlderThan {
                age: TimeDelta::days(30),
                limit: TimeDelta::days(7),
            }]),
            reclaim_bytes: 4000,
            deletes_image: true,
            unpinned_by: vec!["ci-job-4812".to_string()],
        }],
        reclaim_bytes: 6048,
        ..Plan::default()
    }
}

#[tokio::test]
async fn a_container_is_found_by_full_id_name_or_unique_prefix_and_an_ambiguous_prefix_lists_both()
{
    let snap = host().await;
    let job = Target::Container(index(&snap, JOB));
    assert_eq!(find_target(&snap, JOB), Ok(job));
    assert_eq!(find_target(&snap, "ci-job-4812"), Ok(job));
    assert_eq!(find_target(&snap, "/ci-job-4812"), Ok(job));
    assert_eq!(find_target(&snap, "c4812"), Ok(job));
    assert_eq!(
        find_target(&snap, "web"),
        Ok(Target::Container(index(&snap, WEB)))
    );
    // Images first: the tag is the image's.
    assert_eq!(find_target(&snap, "ci/job:1"), Ok(Target::Image(0)));
    let Err(ambiguous) = find_target(&snap, "c481") else {
        panic!("c481 is both containers' prefix");
    };
    assert_eq!(
        ambiguous,
        LookupError::AmbiguousContainer {
            target: "c481".to_string(),
            candidates: vec![
                "c4812aaaaaaa (ci-job-4812)".into(),
                "c4813bbbbbbb (web)".into()
            ],
        }
    );
    assert!(
        ambiguous.to_string().contains("matches 2 containers"),
        "{ambiguous}"
    );
    // Shorter than 4 characters, or no name: nothing.
    assert!(matches!(
        find_target(&snap, "c48"),
        Err(LookupError::NotFound(_))
    ));
    assert!(matches!(
        find_target(&snap, "ci-job"),
        Err(LookupError::NotFound(_))
    ));
}

#[tokio::test]
async fn explain_of_a_container_shows_its_state_image_finish_size_and_what_the_next_pass_does() {
    let snap = host().await;
    let plan = plan(&snap);
    let now = Utc::now();
    let e = explain_container(&policy(), &snap, &plan, now, index(&snap, JOB));
    let text = e.to_text();
    for line in [
        format!("container    {JOB}"),
        "name         ci-job-4812".to_string(),
        "state        exited".to_string(),
        "image        ci/job:1 (ab12)".to_string(),
        "restart      no".to_string(),
        "writable     2.0 KiB".to_string(),
        "  remove (policy finished-ci-jobs, frees 2.0 KiB): exited for 8h (exited_for 6h)"
            .to_string(),
        "  unpins ci/job:1".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("finished     ") && l.ends_with("(8h ago)")),
        "{text}"
    );
    assert_eq!(
        e.summary(),
        "the next pass would remove it (policy finished-ci-jobs, frees 2.0 KiB, unpins ci/job:1)"
    );
    let json = e.to_json();
    assert_eq!(json["kind"], "container");
    assert_eq!(json["size_rw_bytes"], 2048);
    assert_eq!(json["restart_policy"], "no");
    assert_eq!(
        json["next_pass"]["removals"][0]["policy"],
        "finished-ci-jobs"
    );
    assert_eq!(json["unpins"][0], "ci/job:1");

    let web = explain_container(&policy(), &snap, &plan, now, index(&snap, WEB));
    assert_eq!(
        web.summary(),
        "kept: policy finished-ci-jobs would remove it, but the container is running"
    );
    let text = web.to_text();
    assert!(text.contains("restart      always"), "{text}");
    assert!(text.contains("writable     not reported"), "{text}");
    assert!(text.contains("finished     -"), "{text}");
}

#[tokio::test]
async fn explain_of_an_image_names_the_containers_pinning_it_and_the_policy_that_removes_them() {
    let snap = host().await;
    let plan = plan(&snap);
    let e = explain(&policy(), &snap, &plan, Utc::now(), 0);
    let text = e.to_text();
    assert!(
        text.contains(
            "container    c4812aaaaaaa /ci-job-4812 (exited); the next pass removes it \
             (policy finished-ci-jobs), unpinning the image"
        ),
        "{text}"
    );
    assert!(
        text.contains("container    c4813bbbbbbb /web (running); kept: the container is running"),
        "{text}"
    );
    let json = e.to_json();
    assert_eq!(json["containers"][0]["removed_by"], "finished-ci-jobs");
    assert_eq!(json["containers"][1]["removed_by"], serde_json::Value::Null);
    assert_eq!(
        json["containers"][1]["kept_because"]["kind"],
        "container_active"
    );
}
