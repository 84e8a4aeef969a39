//! The command line: every subcommand, option and value the `imagegc`
//! binary accepts. It lives in the library so the binary parses with it and
//! `tests/manpage.rs` renders the manual pages from the same definition
//! (docs/man/*.1 cannot drift from `--help`).
// Doc comments here are `--help` text for people, not rustdoc.
#![allow(clippy::doc_markdown)]

// The log writer: set up from the command line's `-q`/`-v`/`--log-format`.
// Its doc comments are rustdoc, so the lint the `--help` text is spared
// applies there again.
#[warn(clippy::doc_markdown)]
pub mod logging;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Garbage collector for container images on build hosts.
///
/// imagegc finds dangling and stale images on the local Docker Engine and
/// removes them safely: never an image a container uses (in any state),
/// never with force, children before parents, nothing younger than the
/// grace period. Every removal names the policy and the reason, and the
/// bytes reported are exact (counted from layers, shared layers once).
///
/// Exit codes: 0 success (also when there was nothing to do); 1 invalid
/// policy file; 2 bad command line or an invalid IMAGEGC_ENGINE_TIMEOUT; 3
/// engine unreachable, permission denied on its socket, or the engine's
/// images could not be listed; 4 the metrics address cannot be listened on
/// (in use).
#[derive(Debug, Parser)]
#[command(
    name = "imagegc",
    version,
    about,
    long_about,
    max_term_width = 100,
    propagate_version = true
)]
pub struct Cli {
    /// Policy file. When not given and /etc/imagegc/imagegc.toml does not
    /// exist, the built-in default policy is used (remove dangling images
    /// older than 1h).
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Docker Engine address (unix:///var/run/docker.sock, tcp://host:2375).
    /// Default: DOCKER_HOST, else the policy file's `engine`, else the local socket.
    #[arg(long, global = true, value_name = "URL")]
    pub engine: Option<String>,

    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More log detail (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less log detail: warnings and errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// `table` or `json`: how `plan`, `once` and `explain` print (the report
/// layer has a function for each; the choice is the command line's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// A readable table with a summary line.
    #[default]
    Table,
    /// One JSON object.
    Json,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (no timestamps or colours under systemd).
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a policy file; print every error with file:line:column.
    CheckConfig {
        /// The file to check (default: --config, else /etc/imagegc/imagegc.toml,
        /// else the built-in default policy).
        file: Option<PathBuf>,
    },
    /// Show what a pass would remove now, and why. Changes nothing.
    Plan(OutputArgs),
    /// Run as a service: passes on the policy's schedule, last-use tracking
    /// from engine events, Prometheus metrics on [metrics] listen. SIGHUP
    /// reloads the policy file; SIGTERM/SIGINT stop after the removal in
    /// flight and write the state.
    Run,
    /// Everything imagegc knows and decides about one image: references,
    /// size and unique bytes, created / first seen / last used (and where
    /// that came from), how every policy sees it, every safety rule that
    /// protects it, and what the next pass would do. A target that names no
    /// image is looked up among the containers, then the build-cache
    /// records, and the same is shown for what it names. Changes nothing.
    Explain {
        /// A reference (repo:tag, repo@digest, repo meaning repo:latest), an
        /// image ID or unique ID prefix; else a container name, ID or unique ID
        /// prefix of at least 4 characters; else a build-cache record ID or
        /// unique prefix of at least 4 characters.
        target: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Run one pass now and print what was removed and the bytes freed.
    Once {
        /// Plan and report, but remove nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// `--output`, shared by the commands that print a result.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output format on stdout.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
}
