//! The state file survives the worst: a writer killed with SIGKILL at any
//! instant leaves the old file or the new one, never a half-written one, and
//! a corrupt file is moved aside instead of stopping imagegc.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use rand::Rng;

use imagegc::state::State;

const WRITER_ENV: &str = "IMAGEGC_TEST_STATE_WRITER";

/// Not a test on its own: when the crash test starts this binary with
/// `WRITER_ENV` set, it rewrites the state file as fast as it can, forever.
#[test]
fn state_writer_child() {
    let Ok(path) = std::env::var(WRITER_ENV) else {
        return;
    };
    let now = Utc::now();
    let mut round: i64 = 0;
    loop {
        round += 1;
        // Sizes vary so a torn write would show as a truncated document.
        let n = 2000 + usize::try_from(round % 7).unwrap_or(0) * 500;
        let ids: Vec<String> = (0..n)
            .map(|i| format!("sha256:{round:016x}{i:048x}"))
            .collect();
        let mut state = State::baseline(ids.iter().map(String::as_str), now);
        for id in ids.iter().step_by(3) {
            state.touch(id, now + TimeDelta::seconds(round), "container start");
        }
        state.save(Path::new(&path)).expect("save");
    }
}

#[test]
fn killing_the_writer_at_any_instant_always_leaves_a_state_file_that_parses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    State::baseline(["sha256:first"], Utc::now())
        .save(&path)
        .expect("initial state");
    let exe = std::env::current_exe().expect("test binary path");
    let mut rng = rand::rng();
    for round in 0..50 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "state_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the writer");
        std::thread::sleep(Duration::from_millis(rng.random_range(20..120)));
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("round {round}: state file gone: {e}"));
        let parsed: Result<State, _> = serde_json::from_slice(&bytes);
        assert!(
            parsed.is_ok(),
            "round {round}: a kill left a state file that does not parse ({} bytes)",
            bytes.len()
        );
    }
    // Temp files of killed writers are cleared by the next load.
    State::load(&path, Utc::now())
        .expect("load")
        .expect("state");
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["state.json".to_string()],
        "leftovers: {names:?}"
    );
}

#[test]
fn a_corrupt_state_file_is_moved_aside_and_the_pass_still_runs() {
    let lab = common::Lab::new();
    let state = lab.state_path();
    std::fs::write(&state, b"{\"version\": 1, \"images\": {trunc").expect("write corrupt state");
    let policy = lab.write_policy(&format!(
        "[state]\npath = \"{}\"\n[[policy]]\nname = \"dangling\"\n{}\ndangling = true\nolder_than = \"1d\"\n",
        state.display(),
        lab.selector()
    ));
    let out = common::imagegc(&["--config", policy.to_str().expect("utf-8"), "once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("moved aside"),
        "the warning says what happened: {stderr}"
    );
    let aside: Vec<_> = std::fs::read_dir(lab.dir())
        .expect("lab dir")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the corrupt file is kept for inspection");
    let fresh = std::fs::read(&state).expect("a new state file");
    let _: State = serde_json::from_slice(&fresh).expect("the new state file parses");
}
