//! Plans and reports for people: tables with a summary line, sizes in IEC
//! units. (For programs, the JSON is in [`super::json`].)

use std::fmt::Write;

use crate::gc::plan::Plan;
use crate::model::short_id;
use crate::run::execute::Report;

pub use super::text::size;

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

/// Columns padded to their widest cell, two spaces apart; the column named
/// by `right` (sizes) is right-aligned, the last one is not padded.
fn table<const N: usize>(rows: &[[String; N]], header: [&str; N], right: Option<usize>) -> String {
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
            } else if right == Some(i) {
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

/// The plan as a table with a summary line.
pub fn plan_table(plan: &Plan) -> String {
    plan_table_as(plan, "Plan")
}

/// What a dry run (`once --dry-run`, or `dry_run = true`) would have done:
/// the plan's table, headed and summed up as a dry run.
pub fn dry_run_table(plan: &Plan) -> String {
    let mut out = String::from("Dry run: nothing was removed. A pass would do this:\n\n");
    out.push_str(&plan_table_as(plan, "Dry run, nothing removed"));
    out
}

fn plan_table_as(plan: &Plan, summary: &str) -> String {
    let mut out = String::new();
    if plan.removals.is_empty() {
        out.push_str("Nothing to remove.\n");
    } else {
        let rows: Vec<[String; 4]> = plan
            .removals
            .iter()
            .map(|r| {
                [
                    shown_ref(r.reference.as_deref(), &r.image_id),
                    r.policy.clone(),
                    size(r.reclaim_bytes),
                    r.reason.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &rows,
            ["REFERENCE", "POLICY", "FREES", "REASON"],
            Some(2),
        ));
    }
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
        out.push_str(&table(&rows, ["REFERENCE", "POLICY", "KEPT BECAUSE"], None));
    }
    for note in &plan.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let deletes = plan.removals.iter().filter(|r| r.deletes_image).count();
    let _ = writeln!(
        out,
        "\n{summary}: {} ({} deleted), frees {}; {} kept by safety rules.",
        count(plan.removals.len(), "removal", "removals"),
        count(deletes, "image", "images"),
        size(plan.reclaim_bytes),
        plan.kept.len(),
    );
    out
}

/// What a pass did, as a table with a summary line.
pub fn report_table(plan: &Plan, report: &Report) -> String {
    let mut out = String::new();
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
            Some(2),
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
            None,
        ));
    }
    if !plan.kept.is_empty() {
        let _ = writeln!(
            out,
            "\n{} kept by safety rules (see `imagegc plan`).",
            plan.kept.len()
        );
    }
    let _ = writeln!(
        out,
        "\nRemoved {}, deleted {}, freed {} (predicted {}); {} not removed{}.",
        count(report.removed.len(), "reference", "references"),
        count(report.deleted_images(), "image", "images"),
        size(report.reclaimed_bytes),
        size(plan.reclaim_bytes),
        report.failed.len(),
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
            }],
            reclaim_bytes: 1024,
            ..Plan::default()
        }
    }

    #[test]
    fn one_of_a_thing_is_singular_in_every_summary() {
        let plan = one_removal();
        let text = plan_table(&plan);
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
        let text = report_table(&plan, &report);
        assert!(
            text.contains("Removed 1 reference, deleted 1 image, freed 1.0 KiB"),
            "{text}"
        );
        let text = plan_table(&Plan::default());
        assert!(
            text.contains("Plan: 0 removals (0 images deleted)"),
            "{text}"
        );
    }

    #[test]
    fn a_dry_run_table_says_it_is_a_dry_run_and_removed_nothing() {
        let text = dry_run_table(&one_removal());
        assert!(text.starts_with("Dry run: nothing was removed."), "{text}");
        assert!(
            text.contains("Dry run, nothing removed: 1 removal (1 image deleted)"),
            "{text}"
        );
        assert!(!text.contains("\nPlan:"), "{text}");
    }
}
