//! The `imagegc` command: argument parsing, logging setup and exit codes.
//! Everything else lives in the library.
// Doc comments here are `--help` text for people, not rustdoc.
#![allow(clippy::doc_markdown)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Level};

use std::time::Duration;

use imagegc::cli::{Cli, Command, LogFormat};
use imagegc::config;
use imagegc::daemon::{Control, Daemon, Notifier, SystemdNotifier};
use imagegc::docker::Docker;
use imagegc::engine::Engine;
use imagegc::explain;
use imagegc::logging;
use imagegc::metrics::{self, Metrics};
use imagegc::output::{self, Format};
use imagegc::pass::{self, Memory, Mode};
use imagegc::policy::Policy;
use imagegc::state::State;

/// Exit codes, as the README lists them.
mod exit {
    pub const OK: u8 = 0;
    pub const BAD_POLICY: u8 = 1;
    /// Also clap's code for a bad command line.
    pub const BAD_ARGUMENT: u8 = 2;
    pub const ENGINE: u8 = 3;
    /// The metrics endpoint cannot listen on `[metrics] listen` (the address
    /// is in use, or not this host's).
    pub const LISTEN: u8 = 4;
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let level = if cli.quiet {
        "warn"
    } else {
        match cli.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_env("IMAGEGC_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("imagegc={level},warn")));
    let journal = logging::stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(logging::Stderr { journal })
        .with_target(false);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text if journal => builder.without_time().with_ansi(false).init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
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

/// A policy file's errors, one per line with file:line:column, or as one
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
fn listen_error(listen: std::net::SocketAddr, error: &std::io::Error) -> String {
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

/// `check-config`: FILE, else --config, else the file every other command
/// would read (the default path, or the built-in policy when it is absent).
fn check_config(cli: &Cli, explicit: Option<&Path>) -> u8 {
    let default = Path::new(config::DEFAULT_CONFIG_PATH);
    let (checked, result) = match explicit {
        Some(path) => (path.display().to_string(), config::load(path)),
        None if default.exists() => (default.display().to_string(), config::load(default)),
        None => (
            format!(
                "{} does not exist; the built-in default policy",
                config::DEFAULT_CONFIG_PATH
            ),
            Ok(config::builtin()),
        ),
    };
    match result {
        Ok(policy) => {
            let n = policy.rules.len();
            let noun = if n == 1 { "policy" } else { "policies" };
            println!("{checked}: ok ({n} {noun})");
            exit::OK
        }
        Err(errors) => {
            print_config_errors(cli, &errors);
            exit::BAD_POLICY
        }
    }
}

/// Load the policy from `--config`, the default path, or the built-in text.
fn load_policy(explicit: Option<&Path>) -> Result<Policy, config::ConfigErrors> {
    if let Some(path) = explicit {
        return config::load(path);
    }
    let default = Path::new(config::DEFAULT_CONFIG_PATH);
    if default.exists() {
        return config::load(default);
    }
    info!(
        path = config::DEFAULT_CONFIG_PATH,
        "no policy file; using the built-in default policy (see config/imagegc.toml)"
    );
    Ok(config::builtin())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match real_main(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            print_error(&cli, &format!("{e:#}"));
            ExitCode::from(exit::ENGINE)
        }
    }
}

fn real_main(cli: &Cli) -> anyhow::Result<u8> {
    if let Command::CheckConfig { file } = &cli.command {
        return Ok(check_config(cli, file.as_deref().or(cli.config.as_deref())));
    }
    let policy = match load_policy(cli.config.as_deref()) {
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
    runtime.block_on(async_main(cli, &policy))
}

/// The engine address: --engine, else DOCKER_HOST, else the policy's.
fn engine_address(cli: &Cli, policy: &Policy) -> Option<String> {
    let env_host = std::env::var("DOCKER_HOST").ok().filter(|s| !s.is_empty());
    cli.engine
        .clone()
        .or(env_host)
        .or_else(|| policy.engine.clone())
}

async fn async_main(cli: &Cli, policy: &Policy) -> anyhow::Result<u8> {
    if matches!(cli.command, Command::Run) {
        return run_daemon(cli, policy.clone()).await;
    }
    let address = engine_address(cli, policy);
    // First SIGINT/SIGTERM: start no new removal. Second: stop waiting for
    // the engine (the call in flight fails) and report what was done.
    let cancel = CancellationToken::new();
    let interrupt = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(cancel.clone(), interrupt.clone()));
    if matches!(cli.command, Command::Plan(_) | Command::Explain { .. }) {
        // Nothing to finish: the first signal stops waiting already.
        let (cancel, interrupt) = (cancel.clone(), interrupt.clone());
        tokio::spawn(async move {
            cancel.cancelled().await;
            interrupt.cancel();
        });
    }
    let Some((engine, engine_info)) =
        connect_once(cli, address.as_deref(), &cancel, &interrupt).await
    else {
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
    let result = pass::run(
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
    address: Option<&str>,
    cancel: &CancellationToken,
    interrupt: &CancellationToken,
) -> Option<(Docker, imagegc::engine::EngineInfo)> {
    let connected = tokio::select! {
        connected = async {
            let engine = Docker::connect_with(address, interrupt.clone()).await?;
            let info = engine.info().await?;
            Ok::<_, imagegc::engine::EngineError>((engine, info))
        } => connected,
        () = cancel.cancelled() => {
            print_error(cli, "stopped by a signal while connecting to the engine; nothing was done");
            return None;
        }
    };
    connected.map_err(|e| print_error(cli, &e.to_string())).ok()
}

/// `imagegc explain`: find the image and print what imagegc thinks of it.
fn print_explanation(
    cli: &Cli,
    policy: &Policy,
    outcome: &pass::Outcome,
    target: &str,
    format: Format,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<u8> {
    let image = match explain::find(&outcome.snapshot, target) {
        Ok(i) => i,
        Err(e) => {
            print_error(cli, &e.to_string());
            return Ok(exit::BAD_ARGUMENT);
        }
    };
    let e = explain::explain(policy, &outcome.snapshot, &outcome.plan, now, image);
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&e.to_json())?,
        Format::Table => e.to_text(),
    };
    println!("{}", text.trim_end());
    Ok(exit::OK)
}

/// The result of `plan` or `once` in the chosen format.
fn render(format: Format, mode: Mode, outcome: &pass::Outcome) -> anyhow::Result<String> {
    Ok(match (format, &outcome.report) {
        (Format::Json, _) if mode == Mode::Plan => {
            serde_json::to_string_pretty(&output::plan_json(&outcome.plan, &outcome.snapshot))?
        }
        (Format::Json, report) => serde_json::to_string_pretty(&output::pass_json(
            &outcome.plan,
            &outcome.snapshot,
            report.as_ref(),
            mode == Mode::DryRun,
        ))?,
        (Format::Table, Some(report)) => output::report_table(&outcome.plan, report),
        (Format::Table, None) if mode == Mode::DryRun => output::dry_run_table(&outcome.plan),
        (Format::Table, None) => output::plan_table(&outcome.plan),
    })
}

/// `imagegc run`: ready once the policy is loaded and the metrics endpoint
/// listens; the engine may come later (connection is retried with backoff).
async fn run_daemon(cli: &Cli, policy: Policy) -> anyhow::Result<u8> {
    use std::sync::Arc;
    use tokio::signal::unix::{signal, SignalKind};

    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let (controls, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {
                        info!("SIGHUP: reloading the policy file");
                        let _ = controls.send(Control::Reload);
                    }
                }
            }
            info!("stop signal: finishing the removal in flight, starting no new one");
            shutdown.cancel();
        });
    }
    let server = if policy.metrics.enabled {
        let listener = match tokio::net::TcpListener::bind(policy.metrics.listen).await {
            Ok(l) => l,
            Err(e) => {
                print_error(cli, &listen_error(policy.metrics.listen, &e));
                return Ok(exit::LISTEN);
            }
        };
        info!(listen = %policy.metrics.listen, "metrics on /metrics, health on /healthz");
        Some(tokio::spawn(metrics::serve(
            listener,
            Arc::clone(&metrics),
            shutdown.clone(),
        )))
    } else {
        None
    };
    let notifier = SystemdNotifier;
    notifier.ready();
    info!(policy = %policy.source, schedule = %policy.schedule, timezone = %policy.timezone, policies = policy.rules.len(), "imagegc started");

    let address = engine_address(cli, &policy);
    let mut backoff = Duration::from_millis(500);
    let engine = loop {
        // A silent engine must not keep SIGTERM waiting for the deadline.
        let attempt = tokio::select! {
            attempt = Docker::connect(address.as_deref()) => attempt,
            () = shutdown.cancelled() => break None,
        };
        match attempt {
            Ok(engine) => break Some(engine),
            Err(e) => {
                metrics.set_engine_up(false);
                warn!(error = %e, retry_in = ?backoff, "engine unreachable; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break None,
                    () = tokio::time::sleep(backoff) => notifier.watchdog(),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    if let Some(engine) = engine {
        let config_path = cli.config.clone().or_else(|| {
            let default = PathBuf::from(config::DEFAULT_CONFIG_PATH);
            default.exists().then_some(default)
        });
        // A pass is stuck only when no call finished for longer than any one
        // call may take.
        let pass_stall = imagegc::daemon::DEFAULT_PASS_STALL.max(engine.call_timeout() * 2);
        let mut daemon = Daemon::new(Arc::new(engine), config_path, policy, Arc::clone(&metrics));
        daemon.pass_stall = pass_stall;
        daemon.run(control_rx, shutdown.clone()).await;
    }
    shutdown.cancel();
    if let Some(server) = server {
        match server.await {
            Ok(Err(e)) => warn!(error = %e, "metrics endpoint stopped with an error"),
            Err(e) => warn!(error = %e, "metrics endpoint task failed"),
            Ok(Ok(())) => {}
        }
    }
    Ok(exit::OK)
}

/// `once`, `plan`, `explain`: the first SIGTERM/SIGINT cancels `cancel` (no
/// new removal), the second `interrupt` (stop waiting for the engine).
async fn cancel_on_signal(cancel: CancellationToken, interrupt: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("signal received: finishing the removal in flight, starting no new one (a second signal stops waiting)");
    cancel.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("second signal: no longer waiting for the engine; reporting what was done");
    interrupt.cancel();
}
