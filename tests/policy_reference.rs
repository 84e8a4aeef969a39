//! The README's policy reference tables are the schema's: each table between
//! `<!-- generated from src/config/schema.rs: NAME -->` and
//! `<!-- end of generated table -->` is what `imagegc::config::schema::reference`
//! renders for that section, so a key cannot be valid without being
//! documented, or documented with a default it does not have.
//!
//! After changing a key in `src/config/schema.rs`, regenerate the tables:
//!
//! ```sh
//! IMAGEGC_UPDATE_README=1 cargo test --test policy_reference
//! ```

use std::path::PathBuf;

use imagegc::config::schema::{self, Section, SECTIONS};

const END: &str = "<!-- end of generated table -->\n";

fn readme() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")
}

/// The marker that opens `section`'s table.
fn start(section: &Section) -> String {
    let name = if section.name.is_empty() {
        "top level"
    } else {
        section.name
    };
    format!("<!-- generated from src/config/schema.rs: {name} -->\n")
}

/// The byte range of `section`'s table (between its markers) in `text`.
fn table_range(text: &str, section: &Section) -> Result<std::ops::Range<usize>, String> {
    let marker = start(section);
    let begin = text
        .find(&marker)
        .ok_or_else(|| format!("README.md has no {}", marker.trim()))?
        + marker.len();
    let end = text[begin..]
        .find(END)
        .ok_or_else(|| format!("README.md: {} is never closed", marker.trim()))?
        + begin;
    Ok(begin..end)
}

#[test]
fn the_readme_policy_reference_is_rendered_from_the_schema() {
    let path = readme();
    let mut text = std::fs::read_to_string(&path).expect("read README.md");
    let update = std::env::var_os("IMAGEGC_UPDATE_README").is_some();
    let mut stale = Vec::new();
    for section in SECTIONS {
        let range = table_range(&text, section).unwrap_or_else(|e| panic!("{e}"));
        let rendered = schema::reference(section);
        if text[range.clone()] != rendered {
            stale.push(start(section).trim().to_string());
            if update {
                text.replace_range(range, &rendered);
            }
        }
    }
    if update {
        std::fs::write(&path, &text).expect("write README.md");
        return;
    }
    assert!(
        stale.is_empty(),
        "README.md's policy reference differs from src/config/schema.rs in {stale:?}; run \
         IMAGEGC_UPDATE_README=1 cargo test --test policy_reference"
    );
}

#[test]
fn every_key_but_a_section_has_a_row_and_every_row_names_keys_of_its_section() {
    for section in SECTIONS {
        let rendered = schema::reference(section);
        for key in section.keys {
            let documented = rendered.contains(&format!("`{}`", key.name));
            let own_section = matches!(key.doc, schema::Doc::Section);
            assert_eq!(documented, !own_section, "`{}`", key.name);
        }
        for line in rendered.lines().skip(2) {
            let cell = line.split('|').nth(1).unwrap_or_default();
            for name in cell.split('`').skip(1).step_by(2) {
                assert!(
                    section.key(name).is_some(),
                    "the reference documents `{name}`, which [{}] does not accept",
                    section.name
                );
            }
        }
    }
}
