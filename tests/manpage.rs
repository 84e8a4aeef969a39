//! The command line's documentation comes from its one definition,
//! `imagegc::cli::Cli`: the manual pages in docs/man/ are what `clap_mangen`
//! renders from it today (so they cannot drift from `--help`), every option
//! `--help` shows is in the README, and `--version` works after a subcommand.
//!
//! After changing the command line, regenerate the pages:
//!
//! ```sh
//! IMAGEGC_UPDATE_MAN=1 cargo test --test manpage
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use clap::CommandFactory;
use imagegc::cli::Cli;

/// Where the committed pages live (the Debian package installs them).
const MAN_DIR: &str = "docs/man";

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(MAN_DIR)
}

/// Every page `clap_mangen` renders from the command line, by file name:
/// imagegc.1 and one imagegc-<command>.1 per subcommand.
fn rendered_pages() -> BTreeMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    clap_mangen::generate_to(Cli::command(), dir.path()).expect("render the manual pages");
    read_pages(dir.path())
}

fn read_pages(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut pages = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return pages;
    };
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "1") {
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&path).expect("read a page");
            pages.insert(name, bytes);
        }
    }
    pages
}

#[test]
fn the_committed_manual_pages_are_what_the_command_line_renders() {
    let rendered = rendered_pages();
    assert!(
        rendered.contains_key("imagegc.1") && rendered.len() > 1,
        "clap_mangen rendered {:?}",
        rendered.keys().collect::<Vec<_>>()
    );
    let dir = man_dir();
    if std::env::var_os("IMAGEGC_UPDATE_MAN").is_some() {
        std::fs::create_dir_all(&dir).expect("make docs/man");
        for stale in read_pages(&dir)
            .keys()
            .filter(|n| !rendered.contains_key(*n))
        {
            std::fs::remove_file(dir.join(stale)).expect("remove a page of a removed command");
        }
        for (name, bytes) in &rendered {
            std::fs::write(dir.join(name), bytes).expect("write a page");
        }
    }
    let committed = read_pages(&dir);
    let differ: Vec<&String> = rendered
        .keys()
        .chain(committed.keys())
        .filter(|n| rendered.get(*n) != committed.get(*n))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        differ.is_empty(),
        "{MAN_DIR}/ is not what src/cli/mod.rs renders (missing, stale or different: {differ:?}). \
         Regenerate it with `IMAGEGC_UPDATE_MAN=1 cargo test --test manpage` and commit it."
    );
}

fn imagegc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imagegc"))
        .args(args)
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .output()
        .expect("run imagegc")
}

#[test]
fn version_works_after_every_subcommand() {
    // clap names the subcommand: `imagegc run --version` prints "imagegc-run 0.1.0".
    let version = format!(" {}", env!("CARGO_PKG_VERSION"));
    for args in [
        vec!["--version"],
        vec!["run", "--version"],
        vec!["plan", "--version"],
        vec!["once", "--version"],
        vec!["explain", "--version"],
        vec!["check-config", "--version"],
        vec!["-V"],
        vec!["run", "-V"],
    ] {
        let out = imagegc(&args);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && said.starts_with("imagegc")
                && said.trim_end().ends_with(&version)
                && said.lines().count() == 1,
            "imagegc {}: {} {said}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `(short, long)` of every option of the command and its subcommands, help
/// and version included.
fn all_options(cmd: &clap::Command) -> Vec<(Option<char>, String)> {
    let mut out = Vec::new();
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        if let Some(long) = arg.get_long() {
            out.push((arg.get_short(), long.to_string()));
        }
    }
    for sub in cmd.get_subcommands() {
        out.extend(all_options(sub));
    }
    out
}

#[test]
fn help_and_the_readme_show_every_option_with_its_short_form() {
    let mut cmd = Cli::command();
    cmd.build();
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let mut missing = Vec::new();
    for (short, long) in all_options(&cmd) {
        let long = format!("--{long}");
        if !readme.contains(&format!("`{long}")) {
            missing.push(format!("README.md lacks `{long}`"));
        }
        if let Some(short) = short {
            let short = format!("-{short}");
            if !readme.contains(&format!("`{short}")) {
                missing.push(format!("README.md lacks `{short}` ({long})"));
            }
        }
    }
    // `--help` of the commands that take them shows -c and -o.
    for (args, wanted) in [
        (vec!["--help"], "-c, --config"),
        (vec!["plan", "--help"], "-o, --output"),
        (vec!["once", "--help"], "-o, --output"),
        (vec!["explain", "--help"], "-o, --output"),
        (vec!["plan", "--help"], "-c, --config"),
    ] {
        let out = imagegc(&args);
        let help = String::from_utf8_lossy(&out.stdout);
        if !help.contains(wanted) {
            missing.push(format!("imagegc {} does not show {wanted}", args.join(" ")));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
