//! The crate's top-level modules form no import cycle, and the pure core
//! (`model`, `inventory`, `gc`) imports nothing from the layers above it.
//!
//! The graph is read from the source: every `crate::…` path in `src/` (doc
//! comments and comments aside) is an edge from the top-level module of the
//! file to the module the path names. Two things are not edges: a `pub use`
//! (a re-export at an old path is an alias, not a dependency of the module
//! that keeps it), and the old-path modules of `lib.rs` (`pub mod plan {
//! pub use crate::gc::*; … }`), which are resolved to the module each name
//! really comes from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("list a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/gc/mod.rs` → `gc`, `src/run/execute.rs` → `run`, `src/events.rs` → `events`.
fn top_module(path: &Path) -> String {
    let rel = path.strip_prefix(src()).expect("a file under src/");
    let first = rel.components().next().expect("a path component");
    let first = first.as_os_str().to_string_lossy();
    first.strip_suffix(".rs").unwrap_or(&first).to_string()
}

/// The text without comment lines and without `pub use …;` statements.
fn code(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    let joined = lines.join("\n");
    let mut out = String::new();
    let mut rest = joined.as_str();
    while let Some(at) = rest.find("pub use ") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(';').map_or(rest.len(), |e| at + e + 1);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every path after `crate::`, as (module, first item after it or ""):
/// `crate::plan::{self, Plan}` gives (plan, self) and (plan, Plan).
fn crate_paths(code: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c}`: each item names a module.
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let module = ident(item.trim());
                if !module.is_empty() {
                    out.push((module.to_string(), String::new()));
                }
            }
            continue;
        }
        let module = ident(rest).to_string();
        let after = &rest[module.len()..];
        let items: Vec<String> = match after.strip_prefix("::") {
            Some(tail) if tail.starts_with('{') => {
                let end = tail.find('}').unwrap_or(tail.len());
                tail[1..end]
                    .split(',')
                    .map(|i| ident(i.trim()).to_string())
                    .filter(|i| !i.is_empty())
                    .collect()
            }
            Some(tail) => vec![ident(tail).to_string()],
            None => vec![String::new()],
        };
        for item in items {
            out.push((module.clone(), item));
        }
    }
    out
}

/// The old-path modules of lib.rs: alias → (explicit names → module, glob module).
fn aliases(lib: &str) -> BTreeMap<String, (BTreeMap<String, String>, Option<String>)> {
    let mut out = BTreeMap::new();
    let mut rest = lib;
    while let Some(at) = rest.find("pub mod ") {
        rest = &rest[at + "pub mod ".len()..];
        let name = ident(rest).to_string();
        let body = &rest[name.len()..];
        let Some(body) = body.trim_start().strip_prefix('{') else {
            continue;
        };
        // The closing brace of the module, not of a `{b, c}` group in it.
        let mut depth = 1;
        let mut close = body.len();
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let mut names = BTreeMap::new();
        let mut glob = None;
        for stmt in body[..close].split(';') {
            let Some(path) = stmt.trim().strip_prefix("pub use crate::") else {
                continue;
            };
            let target = ident(path).to_string();
            if path.ends_with("::*") {
                glob = Some(target);
            } else if let Some((_, group)) = path.split_once('{') {
                for item in group.trim_end_matches('}').split(',') {
                    let item = ident(item.trim());
                    if !item.is_empty() {
                        names.insert(item.to_string(), target.clone());
                    }
                }
            } else if let Some(last) = path.rsplit("::").next() {
                names.insert(ident(last).to_string(), target);
            }
        }
        out.insert(name, (names, glob));
        rest = &body[close..];
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("read src/lib.rs");
    let aliases = aliases(&lib);
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let from = top_module(&file);
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let deps = graph.entry(from.clone()).or_default();
        for (module, item) in crate_paths(&code(&text)) {
            let to = match aliases.get(&module) {
                Some((names, glob)) => names
                    .get(&item)
                    .or(glob.as_ref())
                    .cloned()
                    .unwrap_or(module),
                None => module,
            };
            if to != from {
                deps.insert(to);
            }
        }
    }
    graph
}

/// A cycle, as the path around it, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut c = path[at..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let graph = graph();
    assert!(
        graph.len() >= 10 && graph.contains_key("gc"),
        "the source was read: {graph:?}"
    );
    if let Some(c) = cycle(&graph) {
        panic!("import cycle: {}\ngraph: {graph:#?}", c.join(" -> "));
    }
}

#[test]
fn the_nodes_are_the_top_level_modules_and_old_paths_are_no_nodes() {
    let graph = graph();
    for module in [
        "run",
        "telemetry",
        "cli",
        "daemon",
        "report",
        "gc",
        "inventory",
    ] {
        assert!(graph.contains_key(module), "{module} is a node: {graph:?}");
    }
    // `pass`, `execute`, `state`, `metrics` and `logging` are old paths
    // (`pub mod pass { pub use crate::run::*; }` in lib.rs): an import through
    // one is an edge to the module it names.
    for alias in [
        "pass", "execute", "state", "metrics", "logging", "plan", "snapshot",
    ] {
        assert!(
            !graph.contains_key(alias) && graph.values().all(|deps| !deps.contains(alias)),
            "{alias} is an old path, not a module: {graph:?}"
        );
    }
}

/// Each outside crate named here is known to one folder of `src/` only.
#[test]
fn each_owned_outside_crate_is_used_only_by_its_owner() {
    let owners = [
        ("prometheus", "telemetry/"),
        ("axum", "telemetry/"),
        ("bollard", "engine/docker/"),
        ("hyper", "engine/docker/"),
        // The command line: the report layer prints, `cli::Format` chooses.
        ("clap", "cli/"),
    ];
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut used = BTreeSet::new();
    for file in files {
        let rel = file.strip_prefix(src()).expect("a file under src/");
        let rel = rel.to_string_lossy().replace('\\', "/");
        let text = code(&std::fs::read_to_string(&file).expect("read a source file"));
        for (krate, owner) in owners {
            let named =
                text.contains(&format!("{krate}::")) || text.contains(&format!("use {krate}"));
            if !named {
                continue;
            }
            used.insert(krate);
            // The binary parses its arguments with the clap types of cli/.
            let binary = rel == "main.rs" && krate == "clap";
            assert!(
                rel.starts_with(owner) || binary,
                "src/{rel} uses the {krate} crate; only src/{owner} may"
            );
        }
    }
    assert_eq!(
        used.len(),
        owners.len(),
        "every owned crate is used: {used:?}"
    );
}

#[test]
fn the_pure_core_imports_nothing_from_the_layers_above_it() {
    let graph = graph();
    let above = [
        "report",
        "run",
        "daemon",
        "telemetry",
        "cli",
        "app",
        "sources",
        "events",
        "docker",
        "fake",
    ];
    for (module, allowed_below) in [
        ("model", &[][..]),
        ("inventory", &["model", "engine", "host", "policy"][..]),
        ("gc", &["model", "inventory", "policy"][..]),
    ] {
        let deps = graph.get(module).cloned().unwrap_or_default();
        for dep in &deps {
            assert!(
                !above.contains(&dep.as_str()),
                "{module} imports {dep}, a layer above it: {deps:?}"
            );
            assert!(
                allowed_below.contains(&dep.as_str()),
                "{module} imports {dep}; it may import only {allowed_below:?}"
            );
        }
    }
}

#[test]
fn the_graph_reader_sees_groups_aliases_and_skips_re_exports() {
    let code = code(
        "use crate::plan::{self, Plan};\nuse crate::{a, b::c};\n// crate::comment\n\
         pub use crate::reexported::Thing;\nlet x = crate::inline::f();",
    );
    let paths = crate_paths(&code);
    let modules: BTreeSet<&str> = paths.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        modules,
        BTreeSet::from(["a", "b", "inline", "plan"]),
        "{paths:?}"
    );
    let aliases = aliases(
        "pub mod plan {\n    pub use crate::gc::*;\n    pub use crate::model::{repository_of, short_id};\n}\n",
    );
    let (names, glob) = &aliases["plan"];
    assert_eq!(glob.as_deref(), Some("gc"));
    assert_eq!(names["short_id"], "model");
}
