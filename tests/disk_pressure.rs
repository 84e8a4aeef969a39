//! Disk pressure against the real engine: with a size watermark on image
//! data, imagegc removes least-recently-used first and stops as soon as the
//! projected usage reaches the low watermark, and the bytes it reports are
//! the engine's own.

mod common;

use serde_json::Value;

use common::{engine_lock, image_exists, imagegc, layers_size, ImageSpec, Lab};

fn run_json(args: &[&str]) -> Value {
    let out = imagegc(args);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[test]
fn size_watermarks_remove_least_recently_used_until_the_low_watermark() {
    let _lock = engine_lock();
    let lab = Lab::new();
    // Oldest first: created 40, 30, 20 and 10 days ago, nothing else uses them.
    let images: Vec<_> = [40, 30, 20, 10]
        .iter()
        .map(|days| lab.load_image(&ImageSpec::new().days_old(*days).layer_bytes(200_000)))
        .collect();
    let sizes: Vec<u64> = images.iter().map(|i| i.own_content_bytes).collect();
    let total = layers_size();
    // High: where usage is now. Low: freeing the oldest image is not enough,
    // freeing the two oldest is.
    let high = total;
    let low = total - sizes[0] - sizes[1] / 2;
    let policy = lab.write_policy(&format!(
        r#"
[state]
path = "{state}"
[[policy]]
name = "pressure"
{sel}
disk_high = "{high}B"
disk_low = "{low}B"
"#,
        state = lab.state_path().display(),
        sel = lab.selector(),
    ));
    let policy = policy.to_str().expect("utf-8");

    let plan = run_json(&["--config", policy, "plan", "--output", "json"]);
    let planned: Vec<&str> = plan["removals"]
        .as_array()
        .expect("removals")
        .iter()
        .map(|r| r["image_id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        planned,
        vec![images[0].id.as_str(), images[1].id.as_str()],
        "{plan:#}"
    );
    for r in plan["removals"].as_array().expect("removals") {
        assert!(
            r["reason"]
                .as_str()
                .expect("reason")
                .contains("least recently used"),
            "{r}"
        );
    }

    let report = run_json(&["--config", policy, "once", "--output", "json"]);
    let after = layers_size();
    assert_eq!(report["reclaimed_bytes"].as_u64(), Some(total - after));
    assert_eq!(report["reclaimed_bytes"], plan["reclaim_bytes"]);
    assert_eq!(total - after, sizes[0] + sizes[1]);
    assert!(after <= low, "usage {after} is at or below disk_low {low}");
    assert!(!image_exists(&images[0].id) && !image_exists(&images[1].id));
    assert!(image_exists(&images[2].id) && image_exists(&images[3].id));

    // Below disk_high now: the next pass does nothing.
    let again = run_json(&["--config", policy, "once", "--output", "json"]);
    assert_eq!(
        again["removed"].as_array().map(Vec::len),
        Some(0),
        "{again:#}"
    );
    assert!(
        again["notes"][0]
            .as_str()
            .expect("a note")
            .contains("below disk_high"),
        "{again:#}"
    );
}
