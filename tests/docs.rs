//! The README's links and the files it cites exist in the repository: a
//! design document the README points at must be one a reader can open.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Relative link targets of `[text](target)` in a Markdown text, anchors cut.
fn relative_links(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = markdown;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = &rest[..end];
        rest = &rest[end..];
        if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
            continue;
        }
        let path = target.split('#').next().unwrap_or_default();
        if !path.is_empty() {
            out.push(path.to_string());
        }
    }
    out
}

#[test]
fn every_file_the_readme_and_the_architecture_link_or_name_exists() {
    let mut missing = Vec::new();
    for doc in ["README.md", "docs/ARCHITECTURE.md"] {
        let text = std::fs::read_to_string(root().join(doc))
            .unwrap_or_else(|e| panic!("cannot read {doc}: {e}"));
        let base = Path::new(doc).parent().unwrap_or(Path::new(""));
        for link in relative_links(&text) {
            if !root().join(base).join(&link).exists() {
                missing.push(format!("{doc} links {link}"));
            }
        }
        // Markdown files named in backticks (`DESIGN.md`) must exist too.
        for word in text.split('`').skip(1).step_by(2) {
            let markdown = Path::new(word)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("md"));
            if markdown && !word.contains(' ') && !root().join(word).exists() {
                missing.push(format!("{doc} names {word}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in the repository:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_test_the_architecture_cites_exists() {
    let text = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md"))
        .expect("read docs/ARCHITECTURE.md");
    // Every Rust file under tests/ and src/, folders included (tests live in
    // src/config/, src/engine/ and the like too).
    let mut sources = String::new();
    let mut dirs = vec![root().join("tests"), root().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("list a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&path).expect("read a source file"));
            }
        }
    }
    // Test names read as sentences: backticked snake_case words of five or more parts
    // (policy keys such as max_removals_per_run have fewer).
    let cited: Vec<&str> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            w.split('_').count() >= 5
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    assert!(
        cited.len() >= 10,
        "docs/ARCHITECTURE.md cites tests: {cited:?}"
    );
    let missing: Vec<&&str> = cited
        .iter()
        .filter(|name| !sources.contains(&format!("fn {name}(")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md cites tests that do not exist (renamed? update the file): {missing:?}"
    );
}
