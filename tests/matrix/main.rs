//! The engine matrix: the scenarios that must hold on every engine a build host runs, run
//! against each engine `tests/matrix/engines.sh` starts (Docker 20.10, Docker 26.1 with
//! overlay2 and with the containerd image store, Podman), one trial per (scenario, engine).
//!
//! A custom harness (libtest-mimic) so that the matrix is started once before the trials and
//! stopped after them: when no matrix is up, this binary runs `engines.sh up` itself and
//! `engines.sh down` when it is done (`IMAGEGC_MATRIX_KEEP=1` leaves it up for the next run).
//! Filters and `--list` work as with the standard harness (`cargo test --test matrix -- d26cs`).
//!
//! Each trial holds its engine's lock ([`engine::MatrixEngine::lock`]) for its whole run, so
//! trials on one engine run one at a time (they measure its data root) while engines run side
//! by side. After the trials, the compatibility table is built from what they found
//! ([`compat`]) and compared with the README's; `IMAGEGC_UPDATE_README=1` rewrites it.

#[path = "../common/mod.rs"]
mod common;

mod compat;
mod lab;
// Scenarios use what they need of the engine handle; the rest is there for the next one.
#[allow(dead_code)]
mod engine;
#[allow(dead_code)]
mod scenarios;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use libtest_mimic::{Arguments, Failed, Trial};

use engine::Matrix;
use scenarios::{Finding, Scenario};

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // Trials on one engine wait for its lock, so more threads than engines gain nothing, and
    // the engines' own work (not this process) is most of each trial's time.
    if args.test_threads.is_none() {
        args.test_threads = Some(engine::NAMES.len());
    }
    if args.list {
        // Listing must not start engines: list every (scenario, engine) the matrix would run.
        let trials = scenarios::all()
            .into_iter()
            .flat_map(|s| {
                engine::NAMES
                    .iter()
                    .map(move |e| Trial::test(trial_name(&s, e), || Ok(())))
            })
            .collect();
        return libtest_mimic::run(&args, trials).exit_code();
    }
    let matrix = match Matrix::up() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("the engine matrix could not be started: {e}");
            return ExitCode::FAILURE;
        }
    };
    let findings: Arc<Mutex<Vec<(String, String, Finding)>>> = Arc::default();
    let mut trials = Vec::new();
    for scenario in scenarios::all() {
        for engine in matrix.engines() {
            let name = trial_name(&scenario, &engine.name);
            let engine = engine.clone();
            let findings = Arc::clone(&findings);
            let run = scenario.run;
            let scenario_name = scenario.name;
            trials.push(Trial::test(name, move || {
                let _lock = engine.lock();
                let finding = run(&engine).map_err(Failed::from)?;
                findings
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((scenario_name.to_owned(), engine.name.clone(), finding));
                Ok(())
            }));
        }
    }
    let filtered = args.filter.is_some() || !args.skip.is_empty();
    let conclusion = libtest_mimic::run(&args, trials);
    let findings = std::mem::take(
        &mut *findings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let mut ok = !conclusion.has_failed();
    // The README's table is checked only on a complete, green run: a filtered or failed run
    // has not found everything the table says.
    if ok && !filtered {
        if let Err(e) = compat::check_readme(&matrix, &findings) {
            eprintln!("{e}");
            ok = false;
        }
    }
    drop(matrix);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn trial_name(scenario: &Scenario, engine: &str) -> String {
    format!("{}::{engine}", scenario.name)
}
