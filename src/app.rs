//! The composition root: from a parsed command line to an exit code. It
//! picks the policy ([`PolicySource`]) and the engine ([`EngineSpec`]) once,
//! runs one pass for `plan`, `once` and `explain`, checks a file for
//! `check-config`, and for `run` installs the signal handlers, binds the
//! metrics listener and hands both to [`daemon::serve`]. The binary only
//! parses arguments, sets up logging and calls [`main`].

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Level};

use crate::cli::logging;
use crate::cli::Format;
use crate::cli::{Cli, Command, LogFormat};
use crate::config;
use crate::daemon::{self, signals, Daemon, SystemdNotifier, Wiring};
use crate::docker::Docker;
use crate::engine::{Engine, EngineError, EngineInfo};
use crate::inventory::CollectNeeds;
use crate::policy::Policy;
use crate::report::explain;
use crate::report::table as output;
use crate::run::state::State;
use crate::run::{self, Memory, Mode};
pub use crate::sources::{EngineKind, EngineSpec, PolicySource};
use crate::telemetry::Metrics;

/// Exit codes, as the README lists them.
pub mod exit {
    /// Success, also when there was nothing to do.
    pub const OK: u8 = 0;
    /// The policy file is invalid.
    pub const BAD_POLICY: u8 = 1;
    /// A bad command line; also clap's code for one.
    pub const BAD_ARGUMENT: u8 = 2;
    /// The engine is unreachable, refused us, or could not list its images.
    pub const ENGINE: u8 = 3;
    /// The metrics endpoint cannot listen on `[metrics] listen` (the address
    /// is in use, or not this host's).
    pub const LISTEN: u8 = 4;
}

/// Runs the command `cli` names and returns the process exit code.
pub fn main(cli: &Cli) -> ExitCode {
    match real_main(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            print_error(cli, &format!("{e:#}"));
            ExitCode::from(exit::ENGINE)
        }
    }
}

fn real_main(cli: &Cli) -> anyhow::Result<u8> {
    // Checked once, for every command: a bad value would otherwise fail
    // every connect, and `run` retries those for ever.
    let timeout = std::env::var_os(crate::docker::CALL_TIMEOUT_ENV);
    if let Err(message) = crate::docker::call_timeout_from(timeout.as_deref()) {
        print_error(cli, &message);
        return Ok(exit::BAD_ARGUMENT);
    }
    if let Command::CheckConfig { file } = &cli.command {
        let explicit = file.as_deref().or(cli.config.as_deref());
        return Ok(check_config(cli, &PolicySource::resolve(explicit)));
    }
    let source = PolicySource::resolve(cli.config.as_deref());
    if let PolicySource::Builtin { default } = &source {
        info!(
            path = %default.display(),
            "no policy file; using the built-in default policy (see config/imagegc.toml)"
        );
    }
    let policy = match source.load() {
        Ok(p) => p,
        Err(errors) => {
            print_config_errors(cli, &errors);
            return Ok(exit::BAD_POLICY);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let engine = EngineSpec::from_process(cli.engine.as_deref(), &policy);
    if matches!(cli.command, Command::Run) {
        return runtime.block_on(run_daemon(cli, source, policy, &engine));
    }
    runtime.block_on(one_pass(cli, &policy, &engine))
}

/// Tells the operator what went wrong: `imagegc: …` on stderr (at error
/// priority under journald), or an error log line with `--log-format json`.
fn print_error(cli: &Cli, message: &str) {
    match cli.log_format {
        LogFormat::Json => tracing::error!("{message}"),
        LogFormat::Text => logging::eprint(
            logging::stderr_is_journal(),
            Level::ERROR,
            &format!("imagegc: {message}"),
        ),
    }
}

/// A policy file's errors, one per line with `file:line:column`, or as one
/// JSON log line with `--log-format json`.
fn print_config_errors(cli: &Cli, errors: &config::ConfigErrors) {
    match cli.log_format {
        LogFormat::Json => tracing::error!(
            count = errors.errors.len(),
            errors = %errors,
            "invalid policy file"
        ),
        LogFormat::Text => logging::eprint(
            logging::stderr_is_journal(),
            Level::ERROR,
            &errors.to_string(),
        ),
    }
}

/// The message for a metrics address `run` cannot listen on.
pub fn listen_error(listen: std::net::SocketAddr, error: &std::io::Error) -> String {
    let why = match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            format!(
                "{listen} is already in use (another imagegc, or another program, listens there)"
            )
        }
        std::io::ErrorKind::AddrNotAvailable => {
            format!("{listen} is not an address of this host")
        }
        _ => format!("{listen}: {error}"),
    };
    format!(
        "cannot serve metrics: {why}; set [metrics] listen to a free address, or enabled = false"
    )
}

/// `check-config`: the file `source` names, or the built-in policy.
fn check_config(cli: &Cli, source: &PolicySource) -> u8 {
    match source.load() {
        Ok(policy) => {
            let n = policy.rules.len();
            let noun = if n == 1 { "policy" } else { "policies" };
            let caches = match policy.cache_rules.len() {
                0 => String::new(),
                1 => ", 1 build-cache policy".to_string(),
                n => format!(", {n} build-cache policies"),
            };
            let containers = match policy.container_rules.len() {
                0 => String::new(),
                1 => ", 1 container policy".to_string(),
                n => format!(", {n} container policies"),
            };
            println!("{}: ok ({n} {noun}{caches}{containers})", source.describe());
            exit::OK
        }
        Err(errors) => {
            print_config_errors(cli, &errors);
            exit::BAD_POLICY
        }
    }
}

/// `plan`, `once`, `explain`: one pass, its output and its exit code.
async fn one_pass(cli: &Cli, policy: &Policy, spec: &EngineSpec) -> anyhow::Result<u8> {
    // First SIGINT/SIGTERM: start no new removal. Second: stop waiting for
    // the engine (the call in flight fails) and report what was done.
    let cancel = CancellationToken::new();
    let interrupt = CancellationToken::new();
    let signals = tokio::spawn(signals::cancel_on_signal(cancel.clone(), interrupt.clone()));
    if matches!(cli.command, Command::Plan(_) | Command::Explain { .. }) {
        // Nothing to finish: the first signal stops waiting already.
        let (cancel, interrupt) = (cancel.clone(), interrupt.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            interrupt.cancel();
        });
    }
    let Some((engine, engine_info)) = connect_once(cli, spec, &cancel, &interrupt).await else {
        return Ok(exit::ENGINE);
    };
    info!(
        engine = engine.address(),
        version = %engine_info.server_version,
        api = %engine_info.api_version,
        policy = %policy.source,
        "connected"
    );
    let (mode, format) = match &cli.command {
        Command::Plan(o) | Command::Explain { output: o, .. } => (Mode::Plan, o.output),
        Command::Once { dry_run, output } => {
            let mode = if *dry_run || policy.dry_run {
                Mode::DryRun
            } else {
                Mode::Execute
            };
            (mode, output.output)
        }
        Command::CheckConfig { .. } | Command::Run => {
            unreachable!("handled before a pass starts")
        }
    };
    let now = chrono::Utc::now();
    let state_path = &policy.state.path;
    let state = if mode == Mode::Plan {
        State::peek(state_path, now)
    } else {
        State::load_or_fresh(state_path, now)
    };
    let mut memory = Memory::new(state);
    if matches!(cli.command, Command::Explain { .. }) {
        // The target may be a build-cache record, which a policy without
        // build-cache tables would not read.
        memory = memory.with_needs(CollectNeeds::ALL);
    }
    let result = run::run(
        &engine,
        policy,
        Some(&engine_info.root_dir),
        &mut memory,
        mode,
        now,
        &cancel,
    )
    .await;
    signals.abort();
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            print_error(cli, &format!("pass failed: {e}"));
            return Ok(exit::ENGINE);
        }
    };
    if mode != Mode::Plan {
        if let Err(e) = memory.state.save(state_path) {
            warn!(error = %e, "cannot write the state file; first-seen times will not persist");
        }
    }
    if let Command::Explain { target, .. } = &cli.command {
        return print_explanation(cli, policy, &outcome, target, format, now);
    }
    let text = render(format, mode, &outcome)?;
    println!("{}", text.trim_end());
    if let Some(report) = &outcome.report {
        info!(
            removed = report.removed.len(),
            deleted_images = report.deleted_images(),
            failed = report.failed.len(),
            records_removed = report.records_removed.len(),
            records_not_deleted = report.records_not_deleted.len(),
            records_failed = report.records_failed.len(),
            reclaimed_bytes = report.reclaimed_bytes,
            predicted_bytes = outcome.plan.reclaim_bytes,
            "pass finished"
        );
        if report.engine_lost {
            return Ok(exit::ENGINE);
        }
    }
    Ok(exit::OK)
}

/// Connects for `once`, `plan` or `explain`; `None` (after saying why) when
/// the engine cannot be reached or a signal came first.
async fn connect_once(
    cli: &Cli,
    spec: &EngineSpec,
    cancel: &CancellationToken,
    interrupt: &CancellationToken,
) -> Option<(Docker, EngineInfo)> {
    let connected = tokio::select! {
        connected = async {
            let engine = Docker::connect_with(&spec.address, interrupt.clone()).await?;
            let info = engine.info().await?;
            Ok::<_, EngineError>((engine, info))
        } => connected,
        () = cancel.cancelled() => {
            print_error(cli, "stopped by a signal while connecting to the engine; nothing was done");
            return None;
        }
    };
    connected.map_err(|e| print_error(cli, &e.to_string())).ok()
}

/// `imagegc explain`: find the image (or else the container, or else the
/// build-cache record) and
/// print what imagegc thinks of it.
fn print_explanation(
    cli: &Cli,
    policy: &Policy,
    outcome: &run::Outcome,
    target: &str,
    format: Format,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<u8> {
    let found = match explain::find_target(&outcome.snapshot, target) {
        Ok(found) => found,
        Err(e) => {
            print_error(cli, &e.to_string());
            return Ok(exit::BAD_ARGUMENT);
        }
    };
    let text = match found {
        explain::Target::Image(image) => {
            let e = explain::explain(policy, &outcome.snapshot, &outcome.plan, now, image);
            match format {
                Format::Json => serde_json::to_string_pretty(&e.to_json())?,
                Format::Table => e.to_text(),
            }
        }
        explain::Target::Container(container) => {
            let e = explain::explain_container(
                policy,
                &outcome.snapshot,
                &outcome.plan,
                now,
                container,
            );
            match format {
                Format::Json => serde_json::to_string_pretty(&e.to_json())?,
                Format::Table => e.to_text(),
            }
        }
        explain::Target::Record(record) => {
            let e = explain::explain_record(policy, &outcome.snapshot, &outcome.plan, now, record);
            match format {
                Format::Json => serde_json::to_string_pretty(&e.to_json())?,
                Format::Table => e.to_text(),
            }
        }
    };
    println!("{}", text.trim_end());
    Ok(exit::OK)
}

/// The result of `plan` or `once` in the chosen format.
fn render(format: Format, mode: Mode, outcome: &run::Outcome) -> anyhow::Result<String> {
    Ok(match (format, &outcome.report) {
        (Format::Json, _) if mode == Mode::Plan => serde_json::to_string_pretty(
            &crate::report::json::plan_json(&outcome.plan, &outcome.snapshot),
        )?,
        (Format::Json, report) => serde_json::to_string_pretty(&crate::report::json::pass_json(
            &outcome.plan,
            &outcome.snapshot,
            report.as_ref(),
            mode == Mode::DryRun,
        ))?,
        (Format::Table, Some(report)) => {
            output::report_table(&outcome.plan, &outcome.snapshot, report)
        }
        (Format::Table, None) if mode == Mode::DryRun => {
            output::dry_run_table(&outcome.plan, &outcome.snapshot)
        }
        (Format::Table, None) => output::plan_table(&outcome.plan, &outcome.snapshot),
    })
}

/// `imagegc run`: ready once the policy is loaded and the metrics endpoint
/// listens; the engine may come later (connection is retried with backoff).
async fn run_daemon(
    cli: &Cli,
    source: PolicySource,
    policy: Policy,
    spec: &EngineSpec,
) -> anyhow::Result<u8> {
    let shutdown = CancellationToken::new();
    let controls = signals::listen(shutdown.clone())?;
    let listener = if policy.metrics.enabled {
        match tokio::net::TcpListener::bind(policy.metrics.listen).await {
            Ok(l) => Some(l),
            Err(e) => {
                print_error(cli, &listen_error(policy.metrics.listen, &e));
                return Ok(exit::LISTEN);
            }
        }
    } else {
        None
    };
    let wiring = Wiring {
        policy,
        source,
        metrics: Arc::new(Metrics::new()),
        notifier: Arc::new(SystemdNotifier),
        listener,
        controls,
    };
    let address = spec.address.clone();
    let connect = move || {
        let address = address.clone();
        async move { Docker::connect(&address).await }
    };
    // Boxed: the daemon's future is large (its state, the pass, the
    // metrics server), and this one runs for the process's whole life.
    Box::pin(daemon::serve(
        wiring,
        connect,
        |mut d: Daemon<Docker>| {
            // A pass is stuck only when no call finished for longer than
            // any one call may take.
            d.pass_stall = daemon::DEFAULT_PASS_STALL.max(d.engine.call_timeout() * 2);
            d
        },
        shutdown,
    ))
    .await;
    Ok(exit::OK)
}
