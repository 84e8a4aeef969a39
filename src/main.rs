//! The `imagegc` command: parse the arguments, set up logging, run the
//! command through the library's composition root ([`imagegc::app`]), and
//! exit with its code. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

use imagegc::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    imagegc::cli::logging::init(&cli);
    imagegc::app::main(&cli)
}
