//! Scenario `images`: the build host of issue 10 on one engine. Dangling images of several
//! ages (one inside `min_age`), keep-last-2 of six tags, images in use by an exited and a
//! running container (created containers where the engine cannot start one), a parent/child
//! chain, a two-tag image of which one tag is stale, and images saved by a protect glob and a
//! protect label. `plan`, then `once`: the removed set, by the lab's names (engine IDs differ
//! per store), must be the same on every engine, what is kept must still be there, and the
//! pass must report the bytes the plan predicted. The bytes and the drop of the data root are
//! printed, not asserted here (the `bytes` work owns the disk figures).

use std::collections::BTreeSet;

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use serde_json::Value;

use super::Finding;
use crate::engine::{MatrixEngine, Store};
use crate::lab::{Lab, Spec};

/// The scenarios' `[safety] min_age`: long enough for `plan` and `once` to run while the
/// young image is inside it, short enough to wait out after the load.
pub const MIN_AGE_SECS: u64 = 20;

/// Sleeps until `min_age` (plus a second) has passed since `loaded`.
pub fn wait_out_min_age(loaded: Instant) {
    let until = loaded + Duration::from_secs(MIN_AGE_SECS + 1);
    if let Some(left) = until.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
}

/// The names a removal list gives: its reference (without a `localhost/` Podman put in front
/// of a lab reference), else the lab's name of its image.
pub fn removed_names(lab: &Lab<'_>, list: &Value) -> BTreeSet<String> {
    list.as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            if let Some(reference) = r["reference"].as_str() {
                // The same reference, however the engine spells it: Podman's `localhost/`
                // in front of a lab reference is a spelling, not another decision.
                match reference.strip_prefix("localhost/") {
                    Some(short) if short.contains(lab.id()) => short.to_owned(),
                    _ => reference.to_owned(),
                }
            } else {
                let id = r["image_id"].as_str().unwrap_or_default();
                lab.name_of(id).unwrap_or_else(|| format!("unknown {id}"))
            }
        })
        .collect()
}

/// Can this engine start containers here? Podman 4.3 cannot (runc fails setting rlimits in
/// this sandbox; `/work/shared/ENGINES.md`).
pub fn runs_containers(engine: &MatrixEngine) -> bool {
    engine.store != Store::Podman
}

#[allow(clippy::too_many_lines)]
pub fn run(engine: &MatrixEngine) -> Result<Finding, String> {
    let lab = Lab::new(engine)?;
    let keep_label = format!("imagegc.keep-{}", lab.id());
    let app = |n: i64| lab.reference("app", &format!("v{n}"));

    let mut specs = vec![
        Spec::new("d40").days_old(40).bytes(300_000),
        Spec::new("d10").days_old(10).bytes(200_000),
        Spec::new("d2").days_old(2).bytes(100_000),
    ];
    for n in 1..=6 {
        specs.push(
            Spec::new(&format!("app-v{n}"))
                .tag(app(n))
                .days_old(20 - n)
                .bytes(10_000 * usize::try_from(n).unwrap_or(1)),
        );
    }
    specs.extend([
        Spec::new("used-exited")
            .days_old(30)
            .bytes(70_000)
            .sleeper(),
        Spec::new("used-running")
            .days_old(30)
            .bytes(80_000)
            .sleeper(),
        Spec::new("chain-parent").days_old(25).bytes(120_000),
        Spec::new("chain-child")
            .parent("chain-parent")
            .tag(lab.reference("chain", "old"))
            .days_old(20)
            .bytes(60_000),
        Spec::new("multi")
            .tag(lab.reference("multi", "ci"))
            .tag(lab.reference("keepme", "v1"))
            .days_old(30)
            .bytes(90_000),
        Spec::new("base")
            .tag(lab.reference("base", "1"))
            .days_old(60)
            .bytes(40_000),
        Spec::new("labelled")
            .tag(lab.reference("labelled", "1"))
            .days_old(60)
            .label(&keep_label, "yes")
            .bytes(30_000),
    ]);
    lab.load(&specs)?;
    let loaded = Instant::now();

    // Graph-driver stores record the parent link the tarball names; say what each engine did.
    let parent_id = engine.get(&format!("/images/{}/json", lab.image_id("chain-child")))?["Parent"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // Podman lists and inspects the parent as bare hex, Docker with `sha256:`.
    let parent_recorded = !parent_id.is_empty()
        && lab.image_id("chain-parent").trim_start_matches("sha256:")
            == parent_id.trim_start_matches("sha256:");
    eprintln!(
        "{}: chain parent recorded by the engine: {parent_recorded} (Parent {parent_id:?})",
        engine.name
    );

    let running = runs_containers(engine);
    let (exited, live) = if running {
        (
            lab.exited_container(&lab.image_id("used-exited"))?,
            lab.running_container(&lab.image_id("used-running"))?,
        )
    } else {
        (
            lab.create_container(&lab.image_id("used-exited"), &["/sleeper", "0"])?,
            lab.create_container(&lab.image_id("used-running"), &["/sleeper"])?,
        )
    };

    // The containerd store sets `LastTagTime` when it loads an image (the graph driver does
    // not), and `min_age` counts from it: wait out the grace period from the load, so that every
    // engine sees the same ages, then load the one image that is inside it.
    wait_out_min_age(loaded);
    lab.load(&[Spec::new("young")
        .created(Utc::now() - TimeDelta::seconds(5))
        .bytes(50_000)])?;

    let policy = lab.write_policy(&format!(
        r#"
[state]
path = "{state}"
[safety]
min_age = "{MIN_AGE_SECS}s"
protect = ["{base_repo}"]
protect_labels = ["{keep_label}=yes"]
[[policy]]
name = "dangling"
{sel}
dangling = true
older_than = "1s"
[[policy]]
name = "keep-last-2"
{sel}
repositories = ["{app_repo}"]
keep_most_recent = 2
[[policy]]
name = "stale"
{sel}
repositories = ["{chain}", "{multi}", "{base_repo}", "{labelled}"]
older_than = "7d"
"#,
        state = lab.state_path().display(),
        base_repo = lab.repo("base"),
        app_repo = lab.repo("app"),
        chain = lab.repo("chain"),
        multi = lab.repo("multi"),
        labelled = lab.repo("labelled"),
        sel = lab.selector(),
    ))?;

    let expected: BTreeSet<String> = [
        "d40".to_owned(),
        "d10".to_owned(),
        "d2".to_owned(),
        app(1),
        app(2),
        app(3),
        app(4),
        lab.reference("chain", "old"),
        "chain-parent".to_owned(),
        lab.reference("multi", "ci"),
    ]
    .into_iter()
    .collect();

    let plan = lab.imagegc_json(&policy, &["plan"])?;
    let planned = removed_names(&lab, &plan["removals"]);
    if planned != expected {
        print_listing(&lab);
        return Err(format!(
            "{}: the plan removes {}{}\nplan: {plan:#}",
            engine.name,
            describe(&planned, &expected),
            localhost_note(&lab),
        ));
    }
    // What the plan keeps, and why, names the containers and the rules.
    let kept_reason = |name: &str| -> String {
        let id = lab.image_id(name);
        plan["kept"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .find(|k| k["image_id"] == id.as_str())
            .and_then(|k| k["reason"].as_str())
            .unwrap_or("(not in kept)")
            .to_owned()
    };
    for (name, want) in [
        ("young", "younger than min_age".to_owned()),
        (
            "used-exited",
            format!("in use by container {}", &exited[..12]),
        ),
        (
            "used-running",
            format!("in use by container {}", &live[..12]),
        ),
        ("base", "protected by glob".to_owned()),
        ("labelled", "protected by label".to_owned()),
    ] {
        let reason = kept_reason(name);
        if !reason.contains(&want) {
            return Err(format!(
                "{}: {name} kept because {reason:?}, expected {want:?}",
                engine.name
            ));
        }
    }
    let predicted = plan["reclaim_bytes"].as_u64().unwrap_or(0);

    let disk_before = engine.data_root_bytes();
    let report = lab.imagegc_json(&policy, &["once"])?;
    let disk_after = engine.data_root_bytes();
    let removed = removed_names(&lab, &report["removed"]);
    let failed = report["failed"].as_array().map_or(0, Vec::len);
    let reported = report["reclaimed_bytes"].as_u64().unwrap_or(0);
    eprintln!(
        "{}: predicted {predicted} B, reported {reported} B, data root drop {} B \
         ({disk_before} -> {disk_after}); sizes_exact {:?}, reclaimed_exact {}",
        engine.name,
        i128::from(disk_before) - i128::from(disk_after),
        all_true(&plan["removals"], "sizes_exact"),
        report.get("reclaimed_exact").unwrap_or(&Value::Null),
    );
    if removed != expected || failed != 0 {
        return Err(format!(
            "{}: the pass removed {}\nfailed: {:#}\nreport: {report:#}",
            engine.name,
            describe(&removed, &expected),
            report["failed"],
        ));
    }

    // What goes is gone, what stays is there, with its references.
    for name in ["d40", "d10", "d2", "chain-parent", "chain-child"] {
        if lab.image_exists(&lab.image_id(name))? {
            return Err(format!("{}: {name} should be gone", engine.name));
        }
    }
    for n in 1..=4 {
        if lab.image_exists(&app(n))? {
            return Err(format!("{}: {} should be gone", engine.name, app(n)));
        }
    }
    for name in [
        "young",
        "used-exited",
        "used-running",
        "multi",
        "base",
        "labelled",
    ] {
        if !lab.image_exists(&lab.image_id(name))? {
            return Err(format!("{}: {name} should remain", engine.name));
        }
    }
    for reference in [
        app(5),
        app(6),
        lab.reference("keepme", "v1"),
        lab.reference("base", "1"),
        lab.reference("labelled", "1"),
    ] {
        if !lab.image_exists(&reference)? {
            return Err(format!("{}: {reference} should remain", engine.name));
        }
    }
    if lab.image_exists(&lab.reference("multi", "ci"))? {
        return Err(format!("{}: multi:ci should be untagged", engine.name));
    }
    if reported != predicted {
        return Err(format!(
            "{}: the pass reported {reported} B freed, the plan predicted {predicted} B",
            engine.name
        ));
    }

    Ok(Finding::new(if running {
        "same decisions"
    } else {
        "same decisions, no running containers"
    }))
}

/// Whether every entry of `list` has `key` true (`None` when some entry lacks it).
pub fn all_true(list: &Value, key: &str) -> Option<bool> {
    list.as_array()?
        .iter()
        .map(|r| r[key].as_bool())
        .collect::<Option<Vec<bool>>>()
        .map(|v| v.iter().all(|b| *b))
}

/// Says so when the engine lists the lab's references under `localhost/` (Podman's
/// normalisation of a name without a registry), which policy globs written without it miss.
pub fn localhost_note(lab: &Lab<'_>) -> String {
    let prefixed = lab.images().unwrap_or_default().iter().any(|i| {
        i["RepoTags"].as_array().is_some_and(|t| {
            t.iter()
                .any(|r| r.as_str().is_some_and(|r| r.starts_with("localhost/")))
        })
    });
    if prefixed {
        format!(
            "\n{} lists the lab's references as localhost/{}/…: policy repositories written \
             without localhost/ select nothing",
            lab.engine.name,
            lab.repo("").trim_end_matches('/')
        )
    } else {
        String::new()
    }
}

/// The engine's own listing of the lab's images, to see what it says when a decision differs.
pub fn print_listing(lab: &Lab<'_>) {
    for i in lab.images().unwrap_or_default() {
        eprintln!(
            "{}: {} RepoTags {} RepoDigests {} ParentId {} Created {} Size {}",
            lab.engine.name,
            i["Labels"][crate::lab::NAME_KEY],
            i["RepoTags"],
            i["RepoDigests"],
            i["ParentId"],
            i["Created"],
            i["Size"]
        );
    }
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// `got`, with what is missing and extra against `want`.
pub fn describe(got: &BTreeSet<String>, want: &BTreeSet<String>) -> String {
    let missing: BTreeSet<_> = want.difference(got).cloned().collect();
    let extra: BTreeSet<_> = got.difference(want).cloned().collect();
    format!(
        "{} (missing: {}; extra: {})",
        join(got),
        join(&missing),
        join(&extra)
    )
}
