//! Plans and reports for people: tables with a summary line, sizes in IEC
//! units. (For programs, the JSON is in [`super::json`].)

use std::fmt::Write;

use crate::gc::plan::{ContainerRemoval, Plan, Reason};
use crate::inventory::{BuildCache, Snapshot};
use crate::model::short_id;
use crate::run::execute::Report;

pub use super::text::{containers_clause, human_duration, records_clause, size};

/// How many characters of a record ID the tables show, as
/// `docker system df -v` does.
pub const RECORD_ID_CHARS: usize = 12;

/// The most characters of a record description a table shows.
const DESCRIPTION_CHARS: usize = 40;

/// A record ID as the tables show it: its first 12 characters.
pub fn short_record_id(id: &str) -> &str {
    id.char_indices()
        .nth(RECORD_ID_CHARS)
        .map_or(id, |(end, _)| &id[..end])
}

/// Engine text fit for a terminal: control characters (a record's
/// description may hold a newline or an escape sequence) escaped.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A record description fit for one table cell: [`escaped`], and at most
/// 40 characters, cut with `…`.
pub fn shown_description(description: &str) -> String {
    let escaped = escaped(description);
    if escaped.chars().count() <= DESCRIPTION_CHARS {
        escaped
    } else {
        let mut cut: String = escaped.chars().take(DESCRIPTION_CHARS - 1).collect();
        cut.push('…');
        cut
    }
}

/// `(type, description, size)` of record `r` for a table, or placeholders
/// when the snapshot does not have it.
fn record_cells(cache: &BuildCache, r: usize) -> (String, String, String) {
    cache.records.get(r).map_or_else(
        || ("?".into(), String::new(), "?".into()),
        |rec| {
            (
                rec.kind.to_string(),
                shown_description(&rec.description),
                size(rec.size),
            )
        },
    )
}

/// `n` and its noun, singular for 1: "1 removal", "3 removals".
pub fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

fn shown_ref(reference: Option<&str>, image_id: &str) -> String {
    match reference {
        Some(r) => r.to_string(),
        None => format!("<untagged> {}", short_id(image_id)),
    }
}

/// Columns padded to their widest cell, two spaces apart; the columns named
/// by `right` (sizes) are right-aligned, the last one is not padded.
fn table<const N: usize>(rows: &[[String; N]], header: [&str; N], right: &[usize]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; N]| {
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i + 1 == N {
                out.push_str(cell);
            } else if right.contains(&i) {
                let _ = write!(out, "{}{cell}  ", " ".repeat(pad));
            } else {
                let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(header);
    for row in rows {
        line(row.each_ref().map(String::as_str));
    }
    out
}

/// The plan as a table with a summary line: image removals, then
/// build-cache record removals (the order they run in), then what safety
/// keeps. `snapshot` is the one the plan was made from.
pub fn plan_table(plan: &Plan, snapshot: &Snapshot) -> String {
    plan_table_as(plan, snapshot, "Plan")
}

/// What a dry run (`once --dry-run`, or `dry_run = true`) would have done:
/// the plan's table, headed and summed up as a dry run.
pub fn dry_run_table(plan: &Plan, snapshot: &Snapshot) -> String {
    let mut out = String::from("Dry run: nothing was removed. A pass would do this:\n\n");
    out.push_str(&plan_table_as(plan, snapshot, "Dry run, nothing removed"));
    out
}

/// An image as a container section names it: its first tag, or its short
/// ID.
fn image_name(snapshot: &Snapshot, image: usize) -> String {
    snapshot.images.get(image).map_or_else(
        || "?".to_string(),
        |i| {
            i.tags
                .first()
                .cloned()
                .unwrap_or_else(|| short_id(&i.id).to_string())
        },
    )
}

/// How long ago container removal `c` finished, from its `exited_for`
/// reason, else its finish time, else `-`.
fn finished_cell(c: &ContainerRemoval, snapshot: &Snapshot) -> String {
    for reason in &c.reason.0 {
        if let Reason::ExitedFor { idle, since, .. } = reason {
            return if *since == "created" {
                format!("never started ({} ago created)", human_duration(*idle))
            } else {
                format!("{} ago", human_duration(*idle))
            };
        }
    }
    snapshot
        .containers
        .get(c.container)
        .and_then(|s| s.details.as_ref())
        .and_then(|d| d.finished_at)
        .map_or_else(
            || "-".to_string(),
            |t| t.format("%Y-%m-%d %H:%M").to_string(),
        )
}

/// The plan's container removals, before its image removals: name, state,
/// when it finished, its writable layer, what it unpins.
fn planned_containers(out: &mut String, plan: &Plan, snapshot: &Snapshot) {
    if plan.containers.is_empty() {
        return;
    }
    out.push_str("Stopped containers, removed before the images:\n");
    let rows: Vec<[String; 7]> = plan
        .containers
        .iter()
        .map(|c| {
            let snap = snapshot.containers.get(c.container);
            let unpins: Vec<String> = c.unpins.iter().map(|&i| image_name(snapshot, i)).collect();
            [
                c.name.clone(),
                snap.map_or_else(|| "?".to_string(), |s| s.container.state.clone()),
                finished_cell(c, snapshot),
                snap.and_then(|s| s.details.as_ref())
                    .and_then(|d| d.size_rw)
                    .map_or_else(|| "?".to_string(), size),
                c.policy.clone(),
                if unpins.is_empty() {
                    "-".to_string()
                } else {
                    unpins.join(", ")
                },
                c.reason.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &rows,
        [
            "CONTAINER",
            "STATE",
            "FINISHED",
            "WRITABLE",
            "POLICY",
            "UNPINS",
            "REASON",
        ],
        &[3],
    ));
    out.push('\n');
}

/// An image removal's reason, with the containers whose removal made it
/// possible.
fn removal_reason(r: &crate::gc::Removal) -> String {
    if r.unpinned_by.is_empty() {
        r.reason.to_string()
    } else {
        format!(
            "{}; unpinned by removing container {}",
            r.reason,
            r.unpinned_by.join(", ")
        )
    }
}

fn plan_table_as(plan: &Plan, snapshot: &Snapshot, summary: &str) -> String {
    let mut out = String::new();
    if plan.removals.is_empty() && plan.records.is_empty() && plan.containers.is_empty() {
        out.push_str("Nothing to remove.\n");
    } else {
        planned_containers(&mut out, plan, snapshot);
        let rows: Vec<[String; 4]> = plan
            .removals
            .iter()
            .map(|r| {
                [
                    shown_ref(r.reference.as_deref(), &r.image_id),
                    r.policy.clone(),
                    size(r.reclaim_bytes),
                    removal_reason(r),
                ]
            })
            .collect();
        out.push_str(&table(
            &rows,
            ["REFERENCE", "POLICY", "FREES", "REASON"],
            &[2],
        ));
    }
    planned_records(&mut out, plan, snapshot);
    if !plan.kept.is_empty() {
        out.push_str("\nKept by safety rules:\n");
        let rows: Vec<[String; 3]> = plan
            .kept
            .iter()
            .map(|k| {
                [
                    shown_ref(k.reference.as_deref(), &k.image_id),
                    k.policy.clone(),
                    k.reason.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(&rows, ["REFERENCE", "POLICY", "KEPT BECAUSE"], &[]));
    }
    kept_records(&mut out, plan, snapshot);
    if !plan.kept_containers.is_empty() {
        out.push_str("\nContainers kept by safety rules:\n");
        let rows: Vec<[String; 3]> = plan
            .kept_containers
            .iter()
            .map(|k| [k.name.clone(), k.policy.clone(), k.reason.to_string()])
            .collect();
        out.push_str(&table(&rows, ["CONTAINER", "POLICY", "KEPT BECAUSE"], &[]));
    }
    for note in &plan.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let deletes = plan.removals.iter().filter(|r| r.deletes_image).count();
    let _ = writeln!(
        out,
        "\n{summary}: {}{} ({} deleted){}, frees {}; {} kept by safety rules.",
        containers_clause(plan.containers.len()),
        count(plan.removals.len(), "removal", "removals"),
        count(deletes, "image", "images"),
        records_clause(plan.records.len()),
        size(plan.reclaim_bytes),
        plan.kept.len() + plan.kept_records.len() + plan.kept_containers.len(),
    );
    out
}

/// The plan's record removals, after its image removals.
fn planned_records(out: &mut String, plan: &Plan, snapshot: &Snapshot) {
    if !plan.records.is_empty() {
        if !plan.removals.is_empty() {
            out.push('\n');
        }
        out.push_str("Build-cache records, removed after the images:\n");
        let rows: Vec<[String; 7]> = plan
            .records
            .iter()
            .map(|r| {
                let (kind, description, record_size) = record_cells(&snapshot.cache, r.record);
                [
                    short_record_id(&r.record_id).to_string(),
                    kind,
                    description,
                    record_size,
                    size(r.reclaim_bytes),
                    r.policy.clone(),
                    r.reason.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &rows,
            [
                "RECORD",
                "TYPE",
                "DESCRIPTION",
                "SIZE",
                "FREES",
                "POLICY",
                "REASON",
            ],
            &[3, 4],
        ));
    }
}

/// The records safety keeps.
fn kept_records(out: &mut String, plan: &Plan, snapshot: &Snapshot) {
    if !plan.kept_records.is_empty() {
        out.push_str("\nBuild-cache records kept by safety rules:\n");
        let rows: Vec<[String; 5]> = plan
            .kept_records
            .iter()
            .map(|k| {
                let (kind, description, _) = record_cells(&snapshot.cache, k.record);
                [
                    short_record_id(&k.record_id).to_string(),
                    kind,
                    description,
                    k.policy.clone(),
                    k.reason.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &rows,
            ["RECORD", "TYPE", "DESCRIPTION", "POLICY", "KEPT BECAUSE"],
            &[],
        ));
    }
}

/// What a pass did, as a table with a summary line. `snapshot` is the one
/// the plan was made from.
pub fn report_table(plan: &Plan, snapshot: &Snapshot, report: &Report) -> String {
    let mut out = String::new();
    containers_report(&mut out, report);
    if !report.removed.is_empty() {
        let rows: Vec<[String; 4]> = report
            .removed
            .iter()
            .map(|r| {
                [
                    shown_ref(r.reference.as_deref(), &r.image_id),
                    r.policy.clone(),
                    size(r.reclaimed_bytes),
                    if r.deleted_images.is_empty() {
                        "untagged".into()
                    } else {
                        "deleted".into()
                    },
                ]
            })
            .collect();
        out.push_str(&table(
            &rows,
            ["REFERENCE", "POLICY", "FREED", "RESULT"],
            &[2],
        ));
    }
    if !report.failed.is_empty() {
        out.push_str("\nNot removed:\n");
        let rows: Vec<[String; 4]> = report
            .failed
            .iter()
            .map(|f| {
                [
                    shown_ref(f.reference.as_deref(), &f.image_id),
                    f.policy.clone(),
                    f.kind.to_string(),
                    f.message.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &rows,
            ["REFERENCE", "POLICY", "KIND", "MESSAGE"],
            &[],
        ));
    }
    if !report.pinned_skipped.is_empty() {
        out.push_str("\nLeft for a later pass (a container still uses them):\n");
        let rows: Vec<[String; 3]> = report
            .pinned_skipped
            .iter()
            .map(|p| {
                [
                    shown_ref(p.reference.as_deref(), &p.image_id),
                    p.policy.clone(),
                    p.container.clone(),
                ]
            })
            .collect();
        out.push_str(&table(&rows, ["REFERENCE", "POLICY", "CONTAINER"], &[]));
    }
    records_report(&mut out, plan, snapshot, report);
    let kept = plan.kept.len() + plan.kept_records.len() + plan.kept_containers.len();
    if kept > 0 {
        let _ = writeln!(out, "\n{kept} kept by safety rules (see `imagegc plan`).");
    }
    let _ = writeln!(
        out,
        "\nRemoved {}{}{}, deleted {}, freed {} (predicted {}); {} not removed{}.",
        containers_clause(report.containers_removed.len()),
        count(report.removed.len(), "reference", "references"),
        records_clause(report.records_removed.len()),
        count(report.deleted_images(), "image", "images"),
        size(report.reclaimed_bytes),
        size(plan.reclaim_bytes),
        report.failed.len()
            + report.records_not_deleted.len()
            + report.records_failed.len()
            + report.containers_not_removed.len()
            + report.containers_failed.len()
            + report.pinned_skipped.len(),
        if report.cancelled {
            format!(", {} skipped: cancelled", report.skipped)
        } else if report.skipped > 0 {
            format!(", {} skipped: engine lost", report.skipped)
        } else {
            String::new()
        }
    );
    out
}

/// The container part of a pass's table, first as they ran first:
/// containers removed, and those not removed.
fn containers_report(out: &mut String, report: &Report) {
    if !report.containers_removed.is_empty() {
        out.push_str("Containers removed:\n");
        let rows: Vec<[String; 3]> = report
            .containers_removed
            .iter()
            .map(|c| [c.name.clone(), c.policy.clone(), size(c.reclaimed_bytes)])
            .collect();
        out.push_str(&table(&rows, ["CONTAINER", "POLICY", "FREED"], &[2]));
        out.push('\n');
    }
    if !report.containers_not_removed.is_empty() || !report.containers_failed.is_empty() {
        out.push_str("Containers not removed:\n");
        let rows: Vec<[String; 4]> = report
            .containers_not_removed
            .iter()
            .chain(&report.containers_failed)
            .map(|c| {
                [
                    c.name.clone(),
                    c.policy.clone(),
                    c.kind.to_string(),
                    c.message.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &rows,
            ["CONTAINER", "POLICY", "KIND", "MESSAGE"],
            &[],
        ));
        out.push('\n');
    }
}

/// The build-cache part of a pass's table: records removed, not deleted,
/// failed, and the ones an engine without a build cache could not take.
fn records_report(out: &mut String, plan: &Plan, snapshot: &Snapshot, report: &Report) {
    // Plan order, so the index of a record ID is the plan's.
    let index = |id: &str| {
        plan.records
            .iter()
            .find(|r| r.record_id == id)
            .map_or(usize::MAX, |r| r.record)
    };
    if !report.records_removed.is_empty() {
        out.push_str("\nBuild-cache records removed:\n");
        let rows: Vec<[String; 5]> = report
            .records_removed
            .iter()
            .map(|r| {
                let (kind, description, _) = record_cells(&snapshot.cache, index(&r.record_id));
                [
                    short_record_id(&r.record_id).to_string(),
                    kind,
                    description,
                    r.policy.clone(),
                    size(r.reclaimed_bytes),
                ]
            })
            .collect();
        out.push_str(&table(
            &rows,
            ["RECORD", "TYPE", "DESCRIPTION", "POLICY", "FREED"],
            &[],
        ));
    }
    if !report.records_not_deleted.is_empty() || !report.records_failed.is_empty() {
        out.push_str("\nBuild-cache records not removed:\n");
        let mut rows: Vec<[String; 3]> = report
            .records_not_deleted
            .iter()
            .map(|r| {
                [
                    short_record_id(&r.record_id).to_string(),
                    r.policy.clone(),
                    "not deleted by the engine (in use, children left, or gone)".to_string(),
                ]
            })
            .collect();
        rows.extend(report.records_failed.iter().map(|f| {
            [
                short_record_id(&f.record_id).to_string(),
                f.policy.clone(),
                format!("{}: {}", f.kind, f.message),
            ]
        }));
        out.push_str(&table(&rows, ["RECORD", "POLICY", "RESULT"], &[]));
    }
    if report.records_unsupported > 0 {
        let _ = writeln!(
            out,
            "\nnote: the engine has no build cache; {} not attempted.",
            count(
                report.records_unsupported,
                "build-cache record removal",
                "build-cache record removals"
            )
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gc::plan::{Reason, Reasons, Removal};
    use crate::run::execute::Removed;
    use chrono::TimeDelta;

    fn one_removal() -> Plan {
        Plan {
            removals: vec![Removal {
                image: 0,
                image_id: format!("sha256:{:0>64}", "a"),
                reference: None,
                policy: "dangling".into(),
                reason: Reasons(vec![Reason::OlderThan {
                    age: TimeDelta::days(2),
                    limit: TimeDelta::hours(1),
                }]),
                reclaim_bytes: 1024,
                deletes_image: true,
                unpinned_by: Vec::new(),
            }],
            reclaim_bytes: 1024,
            ..Plan::default()
        }
    }

    #[test]
    fn one_of_a_thing_is_singular_in_every_summary() {
        let plan = one_removal();
        let text = plan_table(&plan, &Snapshot::build(Vec::new(), Vec::new(), None));
        assert!(
            text.contains("Plan: 1 removal (1 image deleted), frees 1.0 KiB"),
            "{text}"
        );
        let report = Report {
            removed: vec![Removed {
                image_id: plan.removals[0].image_id.clone(),
                reference: None,
                policy: "dangling".into(),
                reclaimed_bytes: 1024,
                deleted_images: vec![plan.removals[0].image_id.clone()],
                untagged: Vec::new(),
            }],
            reclaimed_bytes: 1024,
            ..Report::default()
        };
        let text = report_table(
            &plan,
            &Snapshot::build(Vec::new(), Vec::new(), None),
            &report,
        );
        assert!(
            text.contains("Removed 1 reference, deleted 1 image, freed 1.0 KiB"),
            "{text}"
        );
        let text = plan_table(
            &Plan::default(),
            &Snapshot::build(Vec::new(), Vec::new(), None),
        );
        assert!(
            text.contains("Plan: 0 removals (0 images deleted)"),
            "{text}"
        );
    }

    #[test]
    fn a_dry_run_table_says_it_is_a_dry_run_and_removed_nothing() {
        let text = dry_run_table(
            &one_removal(),
            &Snapshot::build(Vec::new(), Vec::new(), None),
        );
        assert!(text.starts_with("Dry run: nothing was removed."), "{text}");
        assert!(
            text.contains("Dry run, nothing removed: 1 removal (1 image deleted)"),
            "{text}"
        );
        assert!(!text.contains("\nPlan:"), "{text}");
    }

    #[test]
    fn records_follow_the_images_with_short_id_type_escaped_description_and_count_in_the_summary() {
        use crate::engine::{CacheRecord, CacheRecordKind};
        use crate::gc::plan::{KeptBecause, KeptRecord, RecordRemoval};
        let created = chrono::Utc::now();
        let record = |id: &str, description: &str| CacheRecord {
            id: id.to_string(),
            parents: Vec::new(),
            kind: CacheRecordKind::ExecCacheMount,
            description: description.to_string(),
            in_use: false,
            shared: false,
            size: 2048,
            created,
            last_used: None,
            usage_count: 0,
        };
        let snapshot = Snapshot::build(Vec::new(), Vec::new(), None).with_build_cache(vec![
            record(
                "abcdefghijklmnopqrstuvwxy",
                "mount /root/.cache from exec\nrm -rf /",
            ),
            record("zyxwvutsrqponmlkjihgfedcb", &"x".repeat(100)),
        ]);
        let mut plan = one_removal();
        plan.records = vec![RecordRemoval {
            record: 0,
            record_id: "abcdefghijklmnopqrstuvwxy".into(),
            policy: "build-cache".into(),
            reason: Reasons(vec![Reason::KeepStorage {
                keep: 1024,
                newer: 4096,
            }]),
            reclaim_bytes: 2048,
        }];
        plan.kept_records = vec![KeptRecord {
            record: 1,
            record_id: "zyxwvutsrqponmlkjihgfedcb".into(),
            policy: "build-cache".into(),
            reason: KeptBecause::BuildInUse,
        }];
        let text = plan_table(&plan, &snapshot);
        let images_at = text.find("REFERENCE").expect("the image table");
        let records_at = text
            .find("Build-cache records, removed after")
            .expect("records");
        assert!(images_at < records_at, "{text}");
        let row = text
            .lines()
            .find(|l| l.starts_with("abcdefghijkl "))
            .unwrap_or_else(|| panic!("a row with the 12-character ID: {text}"));
        assert!(row.contains("exec.cachemount"), "{row}");
        assert!(
            row.contains("exec\\nrm -rf /"),
            "the newline is escaped: {row}"
        );
        assert!(row.contains("build-cache"), "{row}");
        assert!(row.contains("beyond keep_storage 1.0 KiB"), "{row}");
        let kept = text
            .lines()
            .find(|l| l.starts_with("zyxwvutsrqpo "))
            .unwrap_or_else(|| panic!("the kept record: {text}"));
        assert!(kept.contains(&format!("{}…", "x".repeat(39))), "{kept}");
        assert!(kept.ends_with("in use by a running build"), "{kept}");
        assert!(
            text.contains("Plan: 1 removal (1 image deleted) and 1 build-cache record, frees 1.0 KiB; 1 kept by safety rules."),
            "{text}"
        );
    }

    #[test]
    fn a_pass_table_lists_records_removed_and_not_deleted_and_counts_them_in_the_summary() {
        use crate::run::execute::{RecordNotDeleted, RemovedRecord};
        let plan = Plan::default();
        let snapshot = Snapshot::build(Vec::new(), Vec::new(), None);
        let report = Report {
            records_removed: vec![RemovedRecord {
                record_id: "abcdefghijklmnopqrstuvwxy".into(),
                policy: "build-cache".into(),
                reclaimed_bytes: 2048,
                engine_reported_bytes: 4096,
            }],
            records_not_deleted: vec![RecordNotDeleted {
                record_id: "zyxwvutsrqponmlkjihgfedcb".into(),
                policy: "build-cache".into(),
            }],
            records_unsupported: 0,
            reclaimed_bytes: 2048,
            ..Report::default()
        };
        let text = report_table(&plan, &snapshot, &report);
        let row = text
            .lines()
            .find(|l| l.starts_with("abcdefghijkl "))
            .unwrap_or_else(|| panic!("the removed record: {text}"));
        assert!(row.ends_with("2.0 KiB"), "{row}");
        assert!(
            text.contains("zyxwvutsrqpo  build-cache  not deleted by the engine"),
            "{text}"
        );
        assert!(
            text.contains("Removed 0 references and 1 build-cache record, deleted 0 images, freed 2.0 KiB (predicted 0 B); 1 not removed."),
            "{text}"
        );
        let unsupported = Report {
            records_unsupported: 3,
            ..Report::default()
        };
        let text = report_table(&plan, &snapshot, &unsupported);
        assert!(
            text.contains(
                "note: the engine has no build cache; 3 build-cache record removals not attempted."
            ),
            "{text}"
        );
    }

    #[test]
    #[allow(clippy::too_many_lines)] // one plan and its pass, read top to bottom
    fn container_removals_come_first_with_state_finish_size_and_unpins_and_the_images_say_by_whom()
    {
        use crate::engine::{Container, ContainerDetails, ImageFacts, ImageSummary};
        use crate::gc::plan::{ContainerRemoval, KeptBecause, KeptContainer};
        use crate::inventory::{ImageInput, Tracked};
        use crate::run::execute::{ContainerNotRemoved, PinnedSkipped, RemovedContainer};
        use std::collections::BTreeMap;
        use std::sync::Arc;
        let created = chrono::Utc::now();
        let image_id = format!("sha256:{:0>64}", "c1");
        let input = ImageInput {
            summary: ImageSummary {
                id: image_id.clone(),
                parent_id: None,
                tags: vec!["ci/job:1".into()],
                digests: Vec::new(),
                created,
                labels: BTreeMap::new(),
            },
            facts: Arc::new(ImageFacts::default()),
            tracked: Tracked::default(),
        };
        let container = |id: &str, name: &str, state: &str| Container {
            id: id.into(),
            names: vec![name.into()],
            image_id: image_id.clone(),
            image_ref: "ci/job:1".into(),
            labels: BTreeMap::new(),
            state: state.into(),
            created,
        };
        let mut snap = Snapshot::build(
            vec![input],
            vec![
                container("c1c1c1c1c1c1", "ci-job-4812", "exited"),
                container("c2c2c2c2c2c2", "web", "running"),
            ],
            None,
        );
        snap.containers[0].details = Some(ContainerDetails {
            size_rw: Some(2048),
            ..ContainerDetails::default()
        });
        let mut plan = one_removal();
        plan.removals[0].image_id.clone_from(&image_id);
        plan.removals[0].reference = Some("ci/job:1".into());
        plan.removals[0].unpinned_by = vec!["ci-job-4812".into()];
        plan.containers = vec![ContainerRemoval {
            container: 0,
            container_id: "c1c1c1c1c1c1".into(),
            name: "ci-job-4812".into(),
            policy: "finished-ci-jobs".into(),
            reason: Reasons(vec![Reason::ExitedFor {
                idle: TimeDelta::hours(8),
                limit: TimeDelta::hours(6),
                since: "finished",
            }]),
            reclaim_bytes: 2048,
            unpins: vec![0],
        }];
        plan.kept_containers = vec![KeptContainer {
            container: 1,
            container_id: "c2c2c2c2c2c2".into(),
            name: "web".into(),
            policy: "finished-ci-jobs".into(),
            reason: KeptBecause::ContainerActive {
                state: "running".into(),
            },
        }];
        plan.reclaim_bytes = 3072;
        let text = plan_table(&plan, &snap);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0], "Stopped containers, removed before the images:",
            "{text}"
        );
        assert!(lines[1].starts_with("CONTAINER"), "{text}");
        for cell in [
            "ci-job-4812",
            "exited",
            "8h ago",
            "2.0 KiB",
            "finished-ci-jobs",
            "ci/job:1",
        ] {
            assert!(lines[2].contains(cell), "{cell} in {text}");
        }
        let image_row = lines
            .iter()
            .find(|l| l.starts_with("ci/job:1"))
            .expect("the image removal");
        assert!(
            image_row.ends_with("unpinned by removing container ci-job-4812"),
            "{text}"
        );
        assert!(text.contains("Containers kept by safety rules:"), "{text}");
        assert!(text.contains("the container is running"), "{text}");
        assert!(
            text.contains("Plan: 1 container, 1 removal (1 image deleted), frees 3.0 KiB; 1 kept"),
            "{text}"
        );

        let report = Report {
            containers_removed: vec![RemovedContainer {
                container_id: "c1c1c1c1c1c1".into(),
                name: "ci-job-4812".into(),
                policy: "finished-ci-jobs".into(),
                reclaimed_bytes: 2048,
            }],
            containers_not_removed: vec![ContainerNotRemoved {
                container_id: "c3c3c3c3c3c3".into(),
                name: "ci-job-9".into(),
                policy: "finished-ci-jobs".into(),
                kind: "conflict",
                message: "restarted".into(),
            }],
            pinned_skipped: vec![PinnedSkipped {
                image_id: image_id.clone(),
                reference: Some("ci/job:9".into()),
                policy: "dangling".into(),
                container: "ci-job-9".into(),
            }],
            reclaimed_bytes: 2048,
            ..Report::default()
        };
        let text = report_table(&plan, &snap, &report);
        assert!(text.starts_with("Containers removed:\n"), "{text}");
        assert!(text.contains("Containers not removed:"), "{text}");
        assert!(
            text.contains("Left for a later pass (a container still uses them):"),
            "{text}"
        );
        assert!(
            text.contains("Removed 1 container, 0 references, deleted 0 images, freed 2.0 KiB (predicted 3.0 KiB); 2 not removed."),
            "{text}"
        );
    }
}
