//! Scenario `explain`: `imagegc explain` (text and JSON) on one engine for an image kept
//! because a container uses it (the answer names the container), two removable images (a
//! dangling one by ID and a stale tag by reference: the answer names the policy) and a
//! container a `[[containers]]` policy removes; each answer must say what `plan` says.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::images::localhost_note;
use super::Finding;
use crate::engine::MatrixEngine;
use crate::lab::{Lab, Spec};

/// A reference without the `localhost/` Podman puts in front of a name without a registry.
fn unprefixed(reference: &str) -> &str {
    reference.strip_prefix("localhost/").unwrap_or(reference)
}

/// The grace period here: short, waited out after the load (the containerd store counts it
/// from the load, see the `images` scenario).
const MIN_AGE_SECS: u64 = 2;

#[allow(clippy::too_many_lines)]
pub fn run(engine: &MatrixEngine) -> Result<Finding, String> {
    let lab = Lab::new(engine)?;
    let name = &engine.name;
    lab.load(&[
        Spec::new("dangling").days_old(30).bytes(20_000),
        Spec::new("used").days_old(30).bytes(30_000),
        Spec::new("app-old")
            .tag(lab.reference("app", "old"))
            .days_old(30)
            .bytes(10_000),
    ])?;
    let loaded = Instant::now();
    let used = lab.image_id("used");
    let job_name = lab.object_name("job");
    let keeper = lab.create_named_container("keeper", &used, &["/nonexistent"])?;
    let job = lab.create_named_container("job", &used, &["/nonexistent"])?;
    let policy = lab.write_policy(&format!(
        r#"
[state]
path = "{state}"
[safety]
min_age = "{MIN_AGE_SECS}s"
[[policy]]
name = "dangling"
{sel}
dangling = true
older_than = "1s"
[[policy]]
name = "stale"
{sel}
repositories = ["{app}"]
older_than = "7d"
[[containers]]
name = "jobs"
{sel}
states = ["created"]
names = ["imagegc-test-{id}-job*"]
older_than = "1s"
"#,
        state = lab.state_path().display(),
        sel = lab.selector(),
        app = lab.repo("app"),
        id = lab.id(),
    ))?;
    let wait = loaded + Duration::from_secs(MIN_AGE_SECS + 1);
    if let Some(left) = wait.checked_duration_since(Instant::now()) {
        std::thread::sleep(left);
    }
    // (The job container, made before the wait, is older than its policy's 1 s by now too.)

    let plan = lab.imagegc_json(&policy, &["plan"])?;
    let explain = |target: &str| -> Result<(Value, String), String> {
        let json = lab
            .imagegc_json(&policy, &["explain", target])
            .map_err(|e| format!("{e}{}", localhost_note(&lab)))?;
        let out = engine.imagegc(&["--config", &policy, "explain", target]);
        if !out.status.success() {
            return Err(format!(
                "{name}: explain {target}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok((json, String::from_utf8_lossy(&out.stdout).into_owned()))
    };
    let fail = |what: &str, json: &Value, text: &str| -> String {
        format!("{name}: {what}\nexplain JSON: {json:#}\nexplain text:\n{text}\nplan: {plan:#}")
    };

    // Removable images: the policy the plan removes them under, named by explain.
    for (target, image_id, reference, policy_name) in [
        (
            lab.image_id("dangling"),
            lab.image_id("dangling"),
            None,
            "dangling",
        ),
        (
            lab.reference("app", "old"),
            lab.image_id("app-old"),
            Some(lab.reference("app", "old")),
            "stale",
        ),
    ] {
        let planned = plan["removals"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .find(|r| {
                r["image_id"] == image_id.as_str()
                    && r["reference"].as_str().map(unprefixed) == reference.as_deref()
            })
            .cloned();
        let (json, text) = explain(&target)?;
        let Some(planned) = planned else {
            return Err(fail(
                &format!("the plan does not remove {target} (policy {policy_name})"),
                &json,
                &text,
            ));
        };
        let next = &json["next_pass"]["removals"][0];
        let ok = json["image_id"] == image_id.as_str()
            && planned["policy"] == policy_name
            && next["policy"] == policy_name
            && next["reason"] == planned["reason"]
            && json["summary"]
                .as_str()
                .is_some_and(|s| s.contains("would remove"))
            && text.contains(policy_name);
        if !ok {
            return Err(fail(
                &format!("explain of {target} does not say the plan's removal by {policy_name}"),
                &json,
                &text,
            ));
        }
    }

    // The image the keeper uses: named with its container, kept as the plan keeps it.
    let (json, text) = explain(&used)?;
    let planned_kept = plan["kept"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .find(|k| k["image_id"] == used.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    let short = &keeper[..12];
    let names_keeper = json["containers"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["id"] == short));
    let ok = names_keeper
        && planned_kept["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("in use by container {short}")))
        && json["next_pass"]["kept"][0]["reason"] == planned_kept["reason"]
        && json["next_pass"]["removals"] == Value::Array(Vec::new())
        && text.contains(short);
    if !ok {
        return Err(fail(
            &format!(
                "explain of the used image does not name its container {short} as the plan does"
            ),
            &json,
            &text,
        ));
    }

    // The job container: the `[[containers]]` policy that removes it, as planned.
    let (json, text) = explain(&job_name)?;
    let planned_job = plan["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .find(|c| c["container_id"] == job.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    let ok = json["kind"] == "container"
        && json["container_id"] == job.as_str()
        && json["image_id"] == used.as_str()
        && json["state"] == "created"
        && planned_job["policy"] == "jobs"
        && json["next_pass"]["removals"][0]["policy"] == "jobs"
        && text.contains("jobs");
    if !ok {
        return Err(fail(
            "explain of the job container does not say the plan's removal by jobs",
            &json,
            &text,
        ));
    }
    Ok(Finding::new("yes"))
}
