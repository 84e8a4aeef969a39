//! Stage 1: the parsed TOML document → raw serde structs (`Raw*`), every
//! value [`Spanned`] so that stage 2 can point at it.
//!
//! One walk over the document checks every key against the
//! [schema](super::schema): an unknown key, or a value of the wrong kind, is
//! reported with its key path and left out, and what is left is then
//! deserialized into the raw structs in one go (which cannot fail, since
//! every value left has the kind its field wants). So every bad key of a
//! table is reported in one pass, and serde's messages are never read.
//!
//! A table with [`MAX_REFUSED_PER_TABLE`] refused keys is given up on: its
//! author needs a fresh look at it, not more messages.

use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeArray, DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::diagnostics::{closest, unknown_key_message, wrong_kind_message, Checker};
use super::schema::{Key, Kind, Section, TOP};

/// Refused keys reported per table before giving up on it.
const MAX_REFUSED_PER_TABLE: usize = 32;

/// The top level as written; holds [`TOP`]'s keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) timezone: Option<Spanned<String>>,
    pub(super) run_on_start: Option<Spanned<bool>>,
    pub(super) engine: Option<Spanned<String>>,
    pub(super) dry_run: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) state: RawState,
    #[serde(default)]
    pub(super) pressure: RawPressure,
    #[serde(default)]
    pub(super) safety: RawSafety,
    /// Moved into [`Raw::policies`] by [`read`], with what locates each.
    #[serde(default)]
    policy: Vec<RawPolicy>,
    /// Moved into [`Raw::caches`] by [`read`], with what locates each.
    #[serde(default)]
    build_cache: Vec<RawCache>,
    /// Moved into [`Raw::containers`] by [`read`], with what locates each.
    #[serde(default)]
    containers: Vec<RawContainer>,
}

/// `[metrics]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) enabled: Option<Spanned<bool>>,
    pub(super) listen: Option<Spanned<String>>,
}

/// `[state]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) path: Option<Spanned<String>>,
}

/// `[pressure]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPressure {
    pub(super) interval: Option<Spanned<String>>,
    pub(super) cooldown: Option<Spanned<String>>,
}

/// `[safety]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSafety {
    pub(super) min_age: Option<Spanned<String>>,
    pub(super) protect: Option<Vec<Spanned<String>>>,
    pub(super) protect_labels: Option<Vec<Spanned<String>>>,
    pub(super) protect_containers: Option<Vec<Spanned<String>>>,
    /// Signed so that `-1` reaches the semantic check and its clearer message.
    pub(super) max_removals_per_run: Option<Spanned<i64>>,
    /// Signed for the same reason.
    pub(super) max_parallel_removals: Option<Spanned<i64>>,
}

/// One `[[policy]]` as written. `name` is optional here so that a missing
/// name gets a message of ours, pointing at the table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) name: Option<Spanned<String>>,
    pub(super) dangling: Option<Spanned<bool>>,
    pub(super) repositories: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) labels: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) unused_for: Option<Spanned<String>>,
    pub(super) older_than: Option<Spanned<String>>,
    pub(super) keep_most_recent: Option<Spanned<i64>>,
    pub(super) disk_high: Option<Spanned<String>>,
    pub(super) disk_low: Option<Spanned<String>>,
    pub(super) inodes_high: Option<Spanned<String>>,
    pub(super) inodes_low: Option<Spanned<String>>,
}

/// One `[[build_cache]]` as written; `name` optional as in [`RawPolicy`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub(super) name: Option<Spanned<String>>,
    pub(super) types: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) unused_for: Option<Spanned<String>>,
    pub(super) older_than: Option<Spanned<String>>,
    pub(super) keep_storage: Option<Spanned<String>>,
    pub(super) disk_high: Option<Spanned<String>>,
    pub(super) disk_low: Option<Spanned<String>>,
    pub(super) inodes_high: Option<Spanned<String>>,
    pub(super) inodes_low: Option<Spanned<String>>,
}

/// One `[[containers]]` as written; `name` optional as in [`RawPolicy`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContainer {
    pub(super) name: Option<Spanned<String>>,
    pub(super) states: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) names: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) images: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) labels: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) exited_for: Option<Spanned<String>>,
    pub(super) older_than: Option<Spanned<String>>,
}

/// An array of tables the file has, as written.
pub(super) struct Written {
    /// The array's key (`policy`, `build_cache`, `containers`).
    pub(super) section: &'static str,
    /// Where the array is (its first header, or `policy = [...]`).
    pub(super) span: Range<usize>,
    /// Whether it has no elements at all (`policy = []`).
    pub(super) empty: bool,
}

/// What stage 1 hands to stage 2.
pub(super) struct Raw {
    /// Everything that was accepted. Sections that were absent, not tables
    /// or given up on are empty defaults (their errors are already reported).
    pub(super) file: RawFile,
    /// The arrays of tables the file has (`policy`, `build_cache`,
    /// `containers`), even when refused.
    pub(super) written: Vec<Written>,
    /// The `[[policy]]` tables that could be read, in file order.
    pub(super) policies: Vec<RawEntry<RawPolicy>>,
    /// The `[[build_cache]]` tables that could be read, in file order.
    pub(super) caches: Vec<RawEntry<RawCache>>,
    /// The `[[containers]]` tables that could be read, in file order.
    pub(super) containers: Vec<RawEntry<RawContainer>>,
}

impl Raw {
    /// Whether the file has the key of `section` at all.
    #[cfg(test)]
    pub(super) fn has(&self, section: &Section) -> bool {
        self.written.iter().any(|w| w.section == section.name)
    }
}

/// One element of an array of tables, with what the checks need to point
/// at it.
pub(super) struct RawEntry<T> {
    /// 0-based position in the file.
    pub(super) index: usize,
    /// The `[[policy]]` header (or the inline table).
    pub(super) span: Range<usize>,
    /// `policy "name"`, or `policy[index]` when the name is unknown.
    pub(super) path: String,
    /// Keys that were refused while reading, each with the valid key it is
    /// closest to (worked out once); checks that need them are skipped.
    refused: Vec<(String, Option<&'static str>)>,
    pub(super) raw: T,
}

impl<T> RawEntry<T> {
    /// Whether `key` was written but refused, or a refused key looks like a
    /// typo of it (`older_tan`): then checks that miss `key` stay quiet, as
    /// the refusal already told the author.
    pub(super) fn refused_as(&self, key: &str) -> bool {
        self.refused
            .iter()
            .any(|(refused, close)| refused == key || *close == Some(key))
    }
}

/// An accepted element of an array of tables, before its raw value is read.
struct Entry {
    /// The array's key (`policy`).
    section: &'static str,
    index: usize,
    span: Range<usize>,
    path: String,
    refused: Vec<(String, Option<&'static str>)>,
}

/// Stage 1 for a whole document without syntax errors. `None` only if the
/// schema and the raw structs disagree (reported as such).
pub(super) fn read<'t>(checker: &mut Checker<'t>, document: Spanned<DeTable<'t>>) -> Option<Raw> {
    let span = document.span();
    let mut reader = Reader {
        checker,
        entries: Vec::new(),
        written: Vec::new(),
    };
    let (accepted, _) = reader.table("", document.into_inner(), &span, &TOP, false)?;
    let accepted = Spanned::new(span.clone(), DeValue::Table(accepted));
    let mut file = match RawFile::deserialize(ValueDeserializer::from(accepted)) {
        Ok(file) => file,
        Err(error) => {
            let message = format!(
                "internal error: a value the policy schema accepts was refused ({}); please \
                 report this",
                error.message()
            );
            reader
                .checker
                .error(&error.span().unwrap_or(span), "", message);
            return None;
        }
    };
    let Reader {
        entries, written, ..
    } = reader;
    let policies = located(&entries, "policy", std::mem::take(&mut file.policy));
    let caches = located(
        &entries,
        "build_cache",
        std::mem::take(&mut file.build_cache),
    );
    let containers = located(&entries, "containers", std::mem::take(&mut file.containers));
    Some(Raw {
        file,
        written,
        policies,
        caches,
        containers,
    })
}

/// The raw values of one array of tables, each with what locates it.
fn located<T>(entries: &[Entry], section: &str, raws: Vec<T>) -> Vec<RawEntry<T>> {
    let entries = entries.iter().filter(|e| e.section == section);
    entries
        .zip(raws)
        .map(|(entry, raw)| RawEntry {
            index: entry.index,
            span: entry.span.clone(),
            path: entry.path.clone(),
            refused: entry.refused.clone(),
            raw,
        })
        .collect()
}

/// `parent.name`, or `name` at the top level.
fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// The schema walk: reports into the checker, remembers the elements of
/// arrays of tables it accepted.
struct Reader<'c, 't> {
    checker: &'c mut Checker<'t>,
    entries: Vec<Entry>,
    written: Vec<Written>,
}

impl<'t> Reader<'_, 't> {
    /// Checks every key of `table` (at key path `path`, spanning `span`)
    /// against `section`; returns the table without the keys it refused, and
    /// their names. `capped`: gives up on the table (`None`) at the
    /// [`MAX_REFUSED_PER_TABLE`]th refused key.
    fn table(
        &mut self,
        path: &str,
        table: DeTable<'t>,
        span: &Range<usize>,
        section: &'static Section,
        capped: bool,
    ) -> Option<(DeTable<'t>, Vec<String>)> {
        let mut accepted = DeTable::new();
        let mut refused = Vec::new();
        for (key, value) in table {
            let name: &str = key.get_ref();
            let value = if let Some(schema) = section.key(name) {
                self.value(path, name, value, schema)
            } else {
                let message = unknown_key_message(name, section);
                self.checker.error(&key.span(), join(path, name), message);
                None
            };
            match value {
                Some(value) => {
                    accepted.insert(key, value);
                }
                None if capped && refused.len() + 1 >= MAX_REFUSED_PER_TABLE => {
                    let message = format!(
                        "stopped checking {path} after {MAX_REFUSED_PER_TABLE} refused keys; fix \
                         these and check again"
                    );
                    self.checker.error(span, path, message);
                    return None;
                }
                None => refused.push(name.to_string()),
            }
        }
        Some((accepted, refused))
    }

    /// One value of a known key: itself if it has the kind the key wants
    /// (sections checked in turn), `None` when refused (reported).
    fn value(
        &mut self,
        parent: &str,
        name: &str,
        value: Spanned<DeValue<'t>>,
        schema: &Key,
    ) -> Option<Spanned<DeValue<'t>>> {
        let fits = match (schema.kind, value.get_ref()) {
            (Kind::Table(section), _) => return self.section(join(parent, name), value, section),
            (Kind::Tables(section), _) => return self.entries(join(parent, name), value, section),
            (Kind::Bool, DeValue::Boolean(_)) | (Kind::String, DeValue::String(_)) => true,
            (Kind::Integer, DeValue::Integer(n)) => {
                i64::from_str_radix(n.as_str(), n.radix()).is_ok()
            }
            (Kind::Strings { element }, DeValue::Array(items)) => {
                // Only the first element of the wrong kind is reported.
                let wrong = items
                    .iter()
                    .enumerate()
                    .find(|(_, item)| !matches!(item.get_ref(), DeValue::String(_)));
                let Some((i, item)) = wrong else {
                    return Some(value);
                };
                let key = format!("{}[{i}]", join(parent, name));
                let message = wrong_kind_message(element, item.get_ref());
                self.checker.error(&item.span(), key, message);
                return None;
            }
            _ => false,
        };
        if fits {
            return Some(value);
        }
        let message = wrong_kind_message(schema.expected, value.get_ref());
        self.checker
            .error(&value.span(), join(parent, name), message);
        None
    }

    /// A table read with `section` (`[safety]`).
    fn section(
        &mut self,
        path: String,
        value: Spanned<DeValue<'t>>,
        section: &'static Section,
    ) -> Option<Spanned<DeValue<'t>>> {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            let message = format!("`{path}` must be a table: write a [{path}] section");
            self.checker.error(&span, path, message);
            return None;
        };
        let (accepted, _) = self.table(&path, table, &span, section, true)?;
        Some(Spanned::new(span, DeValue::Table(accepted)))
    }

    /// An array of tables, each read on its own with `section` (`[[policy]]`).
    fn entries(
        &mut self,
        path: String,
        value: Spanned<DeValue<'t>>,
        section: &'static Section,
    ) -> Option<Spanned<DeValue<'t>>> {
        let span = value.span();
        self.written.push(Written {
            section: section.name,
            span: span.clone(),
            empty: matches!(value.get_ref(), DeValue::Array(items) if items.is_empty()),
        });
        let noun = section.noun;
        let items = match value.into_inner() {
            DeValue::Array(items) => items,
            DeValue::Table(_) => {
                let message = format!(
                    "`{path}` must be an array of tables: write [[{path}]], with two brackets, \
                     before each {noun}"
                );
                self.checker.error(&span, path, message);
                return None;
            }
            _ => {
                let message =
                    format!("`{path}` must be an array of tables, written as [[{path}]] sections");
                self.checker.error(&span, path, message);
                return None;
            }
        };
        let mut accepted = DeArray::new();
        for (index, item) in items.into_iter().enumerate() {
            let item_span = item.span();
            let named = match item.get_ref() {
                DeValue::Table(table) => match table.get("name").map(Spanned::get_ref) {
                    Some(DeValue::String(name)) if !name.trim().is_empty() => {
                        Some(format!("{path} {name:?}"))
                    }
                    _ => None,
                },
                _ => None,
            };
            let entry_path = named.unwrap_or_else(|| format!("{path}[{index}]"));
            let DeValue::Table(table) = item.into_inner() else {
                let message = format!("each {noun} must be a table: write a [[{path}]] section");
                self.checker.error(&item_span, entry_path, message);
                continue;
            };
            let Some((table, refused)) = self.table(&entry_path, table, &item_span, section, true)
            else {
                continue;
            };
            let refused = refused
                .into_iter()
                .map(|key| {
                    let close = closest(&key, section.names());
                    (key, close)
                })
                .collect();
            self.entries.push(Entry {
                section: section.name,
                index,
                span: item_span.clone(),
                path: entry_path,
                refused,
            });
            accepted.push(Spanned::new(item_span, DeValue::Table(table)));
        }
        Some(Spanned::new(span, DeValue::Array(accepted)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::{
        BUILD_CACHE, CONTAINERS, METRICS, POLICY, PRESSURE, SAFETY, STATE,
    };
    use serde::de::{self, Visitor};

    /// The field names serde's derive gave `T`, in declaration order.
    fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        /// A deserializer that only records the fields it is asked for.
        struct Capture<'a>(&'a mut &'static [&'static str]);

        impl<'de> de::Deserializer<'de> for Capture<'_> {
            type Error = de::value::Error;

            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(de::Error::custom("not a struct"))
            }

            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _name: &'static str,
                fields: &'static [&'static str],
                _visitor: V,
            ) -> Result<V::Value, Self::Error> {
                *self.0 = fields;
                Err(de::Error::custom("fields captured"))
            }

            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }

        let mut fields: &'static [&'static str] = &[];
        let _ = T::deserialize(Capture(&mut fields));
        fields
    }

    /// Stage 1 over `text`: its errors as `key: message`.
    fn errors_of(text: &str, top: &'static Section) -> Vec<String> {
        let (document, syntax) = DeTable::parse_recoverable(text);
        assert!(syntax.is_empty(), "{syntax:?}");
        let mut checker = Checker::new(text, "t");
        let mut reader = Reader {
            checker: &mut checker,
            entries: Vec::new(),
            written: Vec::new(),
        };
        let span = document.span();
        reader.table("", document.into_inner(), &span, top, false);
        let errors = checker.finish();
        errors
            .into_iter()
            .map(|e| format!("{}: {}", e.key, e.message))
            .collect()
    }

    #[test]
    fn numbers_no_type_can_hold_are_reported_as_toml_reports_them() {
        let said = errors_of(
            "schedule = 1e999
timezone = nan
engine = 9223372036854775808
             [safety]
max_removals_per_run = 170141183460469231731687303715884105728
             protect = [\"a\", 999999999999999999999999999999999999999999]\n",
            &TOP,
        );
        assert_eq!(
            said,
            [
                "schedule: floating-point number overflowed",
                "timezone: expected an IANA time zone name string, like \"UTC\" or \
                 \"Europe/Berlin\", found the number nan",
                "engine: expected an engine address string, like \
                 \"unix:///var/run/docker.sock\", found the integer 9223372036854775808",
                "safety.max_removals_per_run: expected a positive integer, like 500, found the \
                 integer 170141183460469231731687303715884105728 (too large)",
                "safety.protect[1]: integer number overflowed",
            ]
        );
    }

    /// A section made up here (written before `[[build_cache]]` was in the
    /// policy file, and kept smaller than it), to show that stage 1 needs
    /// nothing but its entry in a schema.
    static CACHE: Section = Section {
        name: "build_cache",
        place: "in a [[build_cache]] table",
        noun: "build-cache rule",
        columns: &[],
        keys: &[
            Key {
                name: "unused_for",
                kind: Kind::String,
                expected: "a duration string, like \"7d\"",
                doc: crate::config::schema::Doc::WithPrevious,
            },
            Key {
                name: "keep_storage",
                kind: Kind::String,
                expected: "a size string, like \"20GiB\"",
                doc: crate::config::schema::Doc::WithPrevious,
            },
        ],
    };

    static WITH_CACHE: Section = Section {
        name: "",
        place: "at the top level",
        noun: "",
        columns: &[],
        keys: &[Key {
            name: "build_cache",
            kind: Kind::Tables(&CACHE),
            expected: "",
            doc: crate::config::schema::Doc::Section,
        }],
    };

    #[test]
    fn a_new_section_in_the_schema_gets_unknown_keys_hints_and_kind_errors_without_more_code() {
        let said = errors_of(
            "[[build_cache]]\nunused_fr = \"1d\"\nkeep_storage = 5\n[[build_cache]]\n\
             keep_storage = \"1GiB\"\n\
             [build_cache.x]\n",
            &WITH_CACHE,
        );
        assert_eq!(
            said,
            [
                "build_cache[0].unused_fr: unknown key `unused_fr`, expected `unused_for` or \
                 `keep_storage`; did you mean `unused_for`?",
                "build_cache[0].keep_storage: expected a size string, like \"20GiB\", found \
                 the integer 5",
                "build_cache[1].x: unknown key `x`, expected `unused_for` or `keep_storage`",
            ]
        );
    }

    #[test]
    fn the_raw_structs_have_exactly_the_keys_of_the_schema_in_its_order() {
        let pairs: [(&Section, &[&str]); 8] = [
            (&TOP, fields_of::<RawFile>()),
            (&METRICS, fields_of::<RawMetrics>()),
            (&STATE, fields_of::<RawState>()),
            (&PRESSURE, fields_of::<RawPressure>()),
            (&SAFETY, fields_of::<RawSafety>()),
            (&POLICY, fields_of::<RawPolicy>()),
            (&BUILD_CACHE, fields_of::<RawCache>()),
            (&CONTAINERS, fields_of::<RawContainer>()),
        ];
        for (section, fields) in pairs {
            let keys: Vec<&str> = section.names().collect();
            assert_eq!(keys, fields, "[{}]", section.name);
        }
    }

    #[test]
    fn every_value_of_the_kind_the_schema_accepts_deserializes_into_the_raw_structs() {
        // One of each kind at each place, and a refused key beside them.
        let text = "schedule = \"@daily\"\ntimezone = \"UTC\"\nrun_on_start = false\n\
                    engine = \"unix:///x\"\ndry_run = true\n\
                    [metrics]\nenabled = true\nlisten = \"127.0.0.1:1\"\n\
                    [state]\npath = \"/x\"\n\
                    [safety]\nmin_age = \"1h\"\nprotect = [\"a\"]\nprotect_labels = [\"b\"]\n\
                    protect_containers = [\"c\"]\n\
                    max_removals_per_run = -1\n\
                    max_parallel_removals = 2\n\
                    [[policy]]\nname = \"p\"\ndangling = false\nrepositories = [\"r\"]\n\
                    labels = [\"l\"]\nunused_for = \"1d\"\nolder_than = \"1d\"\n\
                    keep_most_recent = 9223372036854775807\ndisk_high = \"9%\"\n\
                    disk_low = \"8%\"\ninodes_high = \"9%\"\ninodes_low = \"8%\"\nbogus = 1\n\
                    [[build_cache]]\nname = \"c\"\ntypes = [\"regular\"]\nunused_for = \"1d\"\n\
                    older_than = \"2d\"\nkeep_storage = \"1GiB\"\ndisk_high = \"9%\"\n\
                    disk_low = \"8%\"\ninodes_high = \"9%\"\ninodes_low = \"8%\"\n\
                    [[containers]]\nname = \"k\"\nstates = [\"exited\"]\nnames = [\"ci-*\"]\n\
                    images = [\"ci/**\"]\nlabels = [\"l\"]\nexited_for = \"6h\"\n\
                    older_than = \"2d\"\n";
        let (document, errors) = DeTable::parse_recoverable(text);
        assert!(errors.is_empty());
        let mut checker = Checker::new(text, "t");
        let raw = read(&mut checker, document).expect("read");
        let errors = checker.finish();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, "policy \"p\".bogus");
        assert_eq!(raw.policies.len(), 1);
        assert!(raw.policies[0].refused_as("bogus"));
        assert_eq!(
            raw.policies[0]
                .raw
                .keep_most_recent
                .as_ref()
                .map(|k| *k.get_ref()),
            Some(i64::MAX)
        );
        assert_eq!(
            raw.file
                .safety
                .max_removals_per_run
                .as_ref()
                .map(|m| *m.get_ref()),
            Some(-1)
        );
        assert!(raw.has(&POLICY));
        assert!(raw.has(&BUILD_CACHE));
        assert_eq!(raw.caches.len(), 1);
        let cache = &raw.caches[0];
        assert_eq!(cache.path, "build_cache \"c\"");
        assert_eq!(
            cache
                .raw
                .keep_storage
                .as_ref()
                .map(|k| k.get_ref().as_str()),
            Some("1GiB")
        );
        assert!(cache.span.start > raw.policies[0].span.start);
        assert!(raw.has(&CONTAINERS));
        let [container] = raw.containers.as_slice() else {
            panic!("one [[containers]] table");
        };
        assert_eq!(container.path, "containers \"k\"");
        assert_eq!(
            container
                .raw
                .exited_for
                .as_ref()
                .map(|d| d.get_ref().as_str()),
            Some("6h")
        );
        assert_eq!(
            raw.file.safety.protect_containers.as_ref().map(Vec::len),
            Some(1)
        );
    }
}
