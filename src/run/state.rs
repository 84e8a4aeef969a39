//! First-seen and last-used times, kept across passes in a JSON file.
//!
//! The file is small (one entry per image ID) and written atomically: a temp
//! file with a random name, created exclusively in the same directory (never
//! through a planted symlink), fsync, rename over the final name (which
//! replaces a symlink there rather than following it), fsync of the
//! directory. A crash at any instant leaves the old file or the new one. The
//! file is read without following a symlink.
//!
//! Where a pass starts from, [`State::load_or_fresh`] and [`State::peek`]:
//! - **First install**: no state file, and its directory can be written. The
//!   first pass takes the images present as a baseline: they have no
//!   first-seen time, so the grace period counts from what the engine knows
//!   (created, last tagged), and a new install can clean up at once.
//! - **State lost**: the file does not parse (corrupt, truncated, empty, a
//!   newer schema, unknown fields; moved aside to `<name>.corrupt-<timestamp>`),
//!   or cannot be read (permissions, an I/O error, a symlink, not a regular
//!   file; moved aside to `<name>.unreadable-<timestamp>`, never written over:
//!   it may be a good file unreadable only at that instant; when it cannot
//!   be moved, this run never saves to that path). Tracking
//!   restarts: every image present counts as first seen now, so the grace
//!   period runs again from now for all of them, and the restart is written at
//!   once so it holds across restarts of imagegc.
//! - **No writable state**: no state file, and its directory cannot be
//!   written (`once` as a non-root user). Nothing can be remembered between
//!   runs, so each run is a restart as above: nothing the grace period
//!   protects is removed.
//!
//! imagegc never refuses to start over a state file; it warns and restarts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::engine::{Blob, ImageFacts, Layer};
use crate::inventory::{BuildUser, FirstSeenBasis, KnownFacts, RefsPrint, Tracked};

/// Schema version written into the file: 2 adds `facts`. A version 1 file
/// (no facts) is read as a version 2 one without facts; a newer one is
/// refused (moved aside).
pub const SCHEMA_VERSION: u32 = 2;

/// The oldest schema version still read.
const OLDEST_READ: u32 = 1;

/// The state file's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Schema version; files from a newer imagegc are refused (moved aside).
    pub version: u32,
    /// When tracking began on this host.
    pub tracking_since: DateTime<Utc>,
    /// When tracking last restarted because the state was lost or could not
    /// be written: every image present then counts as first seen then.
    pub tracking_restarted: Option<DateTime<Utc>>,
    /// Per image ID.
    pub images: BTreeMap<String, ImageRecord>,
    /// Inspect and history facts per image ID (content-addressed: they
    /// hold for as long as the ID exists, but for the last tag time, see
    /// [`KnownFacts::refs`]), so a later process does not inspect images it
    /// already knows. Saved only for IDs in `images`.
    pub facts: HashMap<String, KnownFacts>,
    /// Images a tag-like use named since the last pass (`tag`, `pull`,
    /// `load`, `import`): their last tag time may have changed, so the next
    /// pass reads their facts again.
    pub refresh: HashSet<String>,
    /// True for a state that has not observed the engine yet: its first
    /// observation is the baseline (no first-seen times).
    pub baseline_pending: bool,
    /// A path this state must not be saved to, and why: the file there
    /// exists but could be neither read nor moved aside, so writing would
    /// replace what may be a good file. [`State::save`] refuses it.
    pub write_refused: Option<(PathBuf, String)>,
}

/// What imagegc knows about one image ID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    /// When imagegc first saw the ID; absent for images present when tracking began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<DateTime<Utc>>,
    /// Newest event seen for the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<DateTime<Utc>>,
    /// What that event was (`container start`, `tag`, …), or the build that
    /// used the image (`build of <short image ID>`, `build cache record
    /// <ID>`: [`BuildUser::state_text`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_by: Option<String>,
}

/// Why a state file could not be used or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing or renaming failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl State {
    /// A new state in which every image now present counts as old (no
    /// first-seen time), so a new install can clean up at once.
    pub fn baseline<'a>(ids: impl IntoIterator<Item = &'a str>, now: DateTime<Utc>) -> Self {
        Self {
            version: SCHEMA_VERSION,
            tracking_since: now,
            tracking_restarted: None,
            images: ids
                .into_iter()
                .map(|id| (id.to_string(), ImageRecord::default()))
                .collect(),
            facts: HashMap::new(),
            refresh: HashSet::new(),
            baseline_pending: false,
            write_refused: None,
        }
    }

    /// A state that has seen nothing yet; its first [`State::observe`] takes
    /// the images present as the baseline.
    pub fn fresh(now: DateTime<Utc>) -> Self {
        Self {
            baseline_pending: true,
            ..Self::baseline([], now)
        }
    }

    /// A state for when the old one was lost or cannot be written: tracking
    /// restarts `now`, and every image it sees counts as first seen then.
    pub fn restarted(now: DateTime<Utc>) -> Self {
        Self {
            tracking_restarted: Some(now),
            ..Self::baseline([], now)
        }
    }

    /// Record the images now present: new IDs get `first_seen = now`, IDs no
    /// longer present are dropped.
    pub fn observe<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>, now: DateTime<Utc>) {
        let live: HashSet<&str> = ids.into_iter().collect();
        self.images.retain(|id, _| live.contains(id.as_str()));
        let first_seen = (!self.baseline_pending).then_some(now);
        for id in live {
            self.images
                .entry(id.to_string())
                .or_insert_with(|| ImageRecord {
                    first_seen,
                    ..ImageRecord::default()
                });
        }
        self.baseline_pending = false;
    }

    /// Times the planner needs for one image. An ID the state has never seen
    /// counts as first seen `now`, which is what the next pass will record.
    pub fn tracked(&self, id: &str, now: DateTime<Utc>) -> Tracked {
        let (first_seen, last_event, last_event_build) = match self.images.get(id) {
            Some(r) => (
                r.first_seen,
                r.last_used,
                r.last_used_by
                    .as_deref()
                    .and_then(BuildUser::from_state_text),
            ),
            None => ((!self.baseline_pending).then_some(now), None, None),
        };
        let basis = match first_seen {
            None if self.baseline_pending => FirstSeenBasis::NoStateYet,
            None => FirstSeenBasis::Baseline,
            Some(t) if self.tracking_restarted.is_some_and(|r| t <= r) => FirstSeenBasis::Restarted,
            Some(_) => FirstSeenBasis::Seen,
        };
        Tracked {
            first_seen,
            last_event,
            last_event_build,
            basis,
            restarted: self.tracking_restarted,
        }
    }

    /// Note a use of an image (an event, or a build: `by` is then
    /// [`BuildUser::state_text`]); keeps the newest.
    pub fn touch(&mut self, id: &str, at: DateTime<Utc>, by: &str) {
        let rec = self
            .images
            .entry(id.to_string())
            .or_insert_with(|| ImageRecord {
                first_seen: Some(at),
                ..ImageRecord::default()
            });
        if rec.last_used.is_none_or(|t| t < at) {
            rec.last_used = Some(at);
            rec.last_used_by = Some(by.to_string());
        }
        if matches!(by, "tag" | "pull" | "load" | "import") {
            self.facts.remove(id);
            self.refresh.insert(id.to_string());
        }
    }

    /// Keep `known` as the facts to save, for the images the state tracks
    /// (the cache of a pass holds only images present).
    pub fn remember_facts<'a>(
        &mut self,
        known: impl IntoIterator<Item = (&'a String, &'a KnownFacts)>,
    ) {
        self.facts = known
            .into_iter()
            .filter(|(id, _)| self.images.contains_key(id.as_str()))
            .map(|(id, k)| (id.clone(), k.clone()))
            .collect();
    }

    /// The state a pass that writes the state (`once`, the daemon) starts
    /// from, as the module header describes: the file's, a [`State::fresh`]
    /// one on a first install, or a [`State::restarted`] one when the file
    /// was lost (moved aside, unreadable) or cannot be written. A restart is
    /// written at once (when it can be), so a failing pass does not turn it
    /// into a first install next time. Warns saying what happened.
    pub fn load_or_fresh(path: &Path, now: DateTime<Utc>) -> Self {
        remove_orphaned_temp_files(path);
        Self::start_from(path, Self::read(path), now)
    }

    /// [`State::load_or_fresh`] once the file has been read.
    fn start_from(path: &Path, found: Found, now: DateTime<Utc>) -> Self {
        let state = match found {
            Found::Parsed(state) => return state,
            Found::Missing if dir_writable(path) => return Self::fresh(now),
            Found::Missing => {
                tracing::warn!(path = %path.display(), "no state file and its directory cannot be written: tracking restarts now, every image present counts as first seen now, and min_age protects them all (give imagegc a writable [state] path)");
                return Self::restarted(now);
            }
            // A file that exists but cannot be read now (EACCES, EIO,
            // EMFILE, not a regular file) may be a good one: it is never
            // written over. Moved aside it keeps every byte for the operator,
            // and the restart is written in its place so what is tracked from
            // now on is kept; when it cannot be moved, this state is never
            // saved (`write_refused`): tracking is in memory only.
            Found::Unreadable(why) => match Self::move_aside(path, "unreadable", now) {
                Ok(aside) => {
                    tracing::warn!(path = %path.display(), moved_to = %aside.display(), reason = %why, "state file exists but cannot be read; moved aside (not overwritten), tracking restarts now: every image present counts as first seen now");
                    Self::restarted(now)
                }
                Err(e) => {
                    // Nothing there (a path under a regular file): no file
                    // to protect, the no-writable-state case.
                    if std::fs::symlink_metadata(path).is_err() {
                        tracing::warn!(path = %path.display(), reason = %why, "state file cannot be read: tracking restarts now, every image present counts as first seen now");
                        return Self::restarted(now);
                    }
                    tracing::warn!(path = %path.display(), reason = %why, error = %e, "state file exists but cannot be read, and cannot be moved aside: it is left as it is and never written over, tracking restarts now in memory only, every image present counts as first seen now");
                    return Self {
                        write_refused: Some((path.to_path_buf(), format!(
                            "not written: the file there could be neither read ({why}) nor moved aside ({e}), and may be a good one"
                        ))),
                        ..Self::restarted(now)
                    };
                }
            },
            Found::Invalid(why) => match Self::move_aside(path, "corrupt", now) {
                Ok(aside) => {
                    tracing::warn!(path = %path.display(), moved_to = %aside.display(), reason = %why, "state file unusable; moved aside, tracking restarts now: every image present counts as first seen now");
                    Self::restarted(now)
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), reason = %why, error = %e, "state file unusable and cannot be moved aside: tracking restarts now, every image present counts as first seen now");
                    return Self::restarted(now);
                }
            },
        };
        if let Err(e) = state.save(path) {
            tracing::warn!(error = %e, "cannot record the restart of tracking in the state file");
        }
        state
    }

    /// Read the state file without changing anything on disk, for commands
    /// that must write nothing (`plan`, `explain`): the same state a pass
    /// would start from (see [`State::load_or_fresh`]), with a warning when
    /// the file is unusable; it is neither moved aside nor rewritten.
    pub fn peek(path: &Path, now: DateTime<Utc>) -> Self {
        match Self::read(path) {
            Found::Parsed(state) => state,
            Found::Missing if dir_writable(path) => Self::fresh(now),
            Found::Missing => Self::restarted(now),
            Found::Unreadable(why) | Found::Invalid(why) => {
                tracing::warn!(path = %path.display(), reason = %why, "state file unusable; ignoring it (a pass will move it aside), every image counts as first seen now");
                Self::restarted(now)
            }
        }
    }

    /// A state file's contents, or why they cannot be used.
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let file = serde_json::from_slice::<StateFile>(bytes).map_err(|e| e.to_string())?;
        Self::from_file(file)
    }

    /// The state a file of any version read holds; a version 1 file has no
    /// facts, a newer one than [`SCHEMA_VERSION`] is refused.
    fn from_file(file: StateFile<'_>) -> Result<Self, String> {
        if !(OLDEST_READ..=SCHEMA_VERSION).contains(&file.version) {
            return Err(format!(
                "schema version {} is not one of {OLDEST_READ}..={SCHEMA_VERSION}",
                file.version
            ));
        }
        let mut ignored = 0usize;
        let facts = file
            .facts
            .into_iter()
            .filter_map(|(id, raw)| {
                let known = serde_json::from_str::<FactsRecord>(raw.get())
                    .ok()
                    .and_then(FactsRecord::into_known);
                ignored += usize::from(known.is_none());
                Some((id, known?))
            })
            .collect();
        if ignored > 0 {
            tracing::warn!(
                entries = ignored,
                "state file: image facts that do not parse are ignored; those images are inspected again"
            );
        }
        Ok(Self {
            version: SCHEMA_VERSION,
            tracking_since: file.tracking_since,
            tracking_restarted: file.tracking_restarted,
            images: file.images,
            facts,
            refresh: HashSet::new(),
            baseline_pending: false,
            write_refused: None,
        })
    }

    /// Read and parse the file, never through a symlink and never blocking
    /// on a FIFO.
    fn read(path: &Path) -> Found {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Missing,
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Found::Unreadable(
                    "it is a symbolic link, which imagegc does not follow".to_owned(),
                )
            }
            Err(e) => return Found::Unreadable(e.to_string()),
        };
        match file.metadata() {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Found::Unreadable("it is not a regular file".to_owned()),
            Err(e) => return Found::Unreadable(e.to_string()),
        }
        let mut bytes = Vec::new();
        if let Err(e) = file.read_to_end(&mut bytes) {
            return Found::Unreadable(e.to_string());
        }
        match Self::parse(&bytes) {
            Ok(state) => Found::Parsed(state),
            Err(why) => Found::Invalid(why),
        }
    }

    /// Read the state file. `Ok(None)` when there is none yet, or when it was
    /// corrupt and has been moved aside (a warning says where).
    pub fn load(path: &Path, now: DateTime<Utc>) -> Result<Option<Self>, StateError> {
        remove_orphaned_temp_files(path);
        match Self::read(path) {
            Found::Parsed(state) => Ok(Some(state)),
            Found::Missing => Ok(None),
            Found::Unreadable(why) => Err(StateError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(why),
            }),
            Found::Invalid(why) => {
                let aside = Self::move_aside(path, "corrupt", now)?;
                tracing::warn!(path = %path.display(), moved_to = %aside.display(), reason = why, "state file unreadable; moved aside");
                Ok(None)
            }
        }
    }

    /// Rename the file to `<name>.<why>-<timestamp>` (`corrupt`,
    /// `unreadable`; rename moves a symlink itself, it never follows one);
    /// returns the new name.
    fn move_aside(path: &Path, why: &str, now: DateTime<Utc>) -> Result<PathBuf, StateError> {
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".{why}-{}", now.format("%Y%m%dT%H%M%SZ")));
        let aside = PathBuf::from(aside);
        std::fs::rename(path, &aside).map_err(|source| StateError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(aside)
    }

    /// Write atomically: a temp file with a random name created exclusively
    /// (`O_EXCL`: a planted symlink or file at that name makes it fail, never
    /// followed) in the same directory, fsync, rename over `path` (which
    /// replaces whatever link is there), fsync the directory. Creates the
    /// directory if needed.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some((_, why)) = self.write_refused.as_ref().filter(|(p, _)| p == path) {
            return Err(io(std::io::Error::other(why.clone())));
        }
        let dir = parent_dir(path);
        std::fs::create_dir_all(&dir).map_err(io)?;
        // On error the temp file is removed when `tmp` drops.
        // 0644 less the umask, as the file had before (tempfile's default
        // is 0600): it holds image IDs and times, nothing secret.
        let mut tmp = tempfile::Builder::new()
            .prefix(&temp_prefix(path, std::process::id()))
            .rand_bytes(12)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(&dir)
            .map_err(io)?;
        // Written as it is serialized: the whole file in memory first was
        // the largest single allocation of a daemon tracking 10,000 images
        // (BENCHMARKS.md).
        let mut out = std::io::BufWriter::new(tmp.as_file_mut());
        serde_json::to_writer_pretty(&mut out, &self.to_file()).map_err(|e| {
            io(e.io_error_kind()
                .map_or_else(|| std::io::Error::other(e), std::io::Error::from))
        })?;
        out.write_all(b"\n").map_err(io)?;
        out.flush().map_err(io)?;
        drop(out);
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

impl State {
    /// What [`State::save`] writes: the facts of tracked images only, in ID
    /// order (a stable file for a stable host).
    fn to_file(&self) -> StateFileOut<'_> {
        let facts = self
            .facts
            .iter()
            .filter(|(id, _)| self.images.contains_key(id.as_str()))
            .map(|(id, k)| (id.as_str(), FactsOut(k)))
            .collect();
        StateFileOut {
            version: SCHEMA_VERSION,
            tracking_since: self.tracking_since,
            tracking_restarted: self.tracking_restarted,
            images: &self.images,
            facts,
        }
    }
}

/// As the file holds it ([`State::save`]).
impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_file().serialize(serializer)
    }
}

/// As [`State::load`] reads it.
impl<'de> Deserialize<'de> for State {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let file = StateFile::deserialize(deserializer)?;
        Self::from_file(file).map_err(serde::de::Error::custom)
    }
}

/// The file as read: any version from [`OLDEST_READ`]; each facts entry is
/// parsed on its own, so one that does not parse costs an inspect, not the
/// state.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile<'a> {
    version: u32,
    tracking_since: DateTime<Utc>,
    #[serde(default)]
    tracking_restarted: Option<DateTime<Utc>>,
    images: BTreeMap<String, ImageRecord>,
    /// Absent in version 1. Each entry as the file's own text, parsed one by one: no tree
    /// of JSON values for the whole file (at 10,000 images that tree was most of the
    /// daemon's peak memory, BENCHMARKS.md).
    #[serde(default, borrow)]
    facts: BTreeMap<String, &'a serde_json::value::RawValue>,
}

/// The file as written.
#[derive(Serialize)]
struct StateFileOut<'a> {
    version: u32,
    tracking_since: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tracking_restarted: Option<DateTime<Utc>>,
    images: &'a BTreeMap<String, ImageRecord>,
    facts: BTreeMap<&'a str, FactsOut<'a>>,
}

/// One image's facts as [`FactsRecord`] spells them, serialized from the
/// cache's own values (no copy of every chain ID for each save).
struct FactsOut<'a>(&'a KnownFacts);

impl Serialize for FactsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let known = self.0;
        let ImageFacts {
            layers,
            blobs,
            sizes_exact,
            last_tag_time,
        } = &*known.facts;
        let mut s = serializer.serialize_struct("FactsRecord", 5)?;
        match known.refs {
            Some(r) => s.serialize_field("refs", &format_args!("{:016x}", r.0))?,
            None => s.skip_field("refs")?,
        }
        let layers = Seq(|| layers.iter().map(|l| (l.chain_id.as_str(), l.size)));
        s.serialize_field("layers", &layers)?;
        if blobs.is_empty() {
            s.skip_field("blobs")?;
        } else {
            let blobs = Seq(|| blobs.iter().map(|b| (b.key.as_str(), b.size, b.exact)));
            s.serialize_field("blobs", &blobs)?;
        }
        s.serialize_field("sizes_exact", sizes_exact)?;
        match last_tag_time {
            Some(t) => s.serialize_field("last_tag_time", t)?,
            None => s.skip_field("last_tag_time")?,
        }
        s.end()
    }
}

/// A sequence serialized from an iterator made on demand.
struct Seq<F>(F);

impl<F, I> Serialize for Seq<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq((self.0)())
    }
}

/// One image's facts as the state file keeps them: the one place that maps
/// [`ImageFacts`] to the file. A field added to `ImageFacts` is one
/// `#[serde(default)]` field here plus its line in [`FactsRecord::of`] and
/// [`FactsRecord::into_known`] (an older file then reads as the default).
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct FactsRecord {
    /// [`RefsPrint`] in hex: the references the facts were read with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refs: Option<String>,
    /// `[chain ID, bytes]`, bottom first. Required, as `sizes_exact` is: an
    /// entry without them is ignored, never taken for an image without
    /// layers.
    layers: Vec<(String, u64)>,
    /// `[key, bytes, exact]` of the content blobs beside the layers (the
    /// containerd store, Podman); none on a graph-driver store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    blobs: Vec<(String, u64, bool)>,
    sizes_exact: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_tag_time: Option<DateTime<Utc>>,
}

impl FactsRecord {
    /// What [`FactsOut`] writes, as a value (tests compare the two).
    #[cfg(test)]
    fn of(known: &KnownFacts) -> Self {
        let ImageFacts {
            layers,
            blobs,
            sizes_exact,
            last_tag_time,
        } = &*known.facts;
        Self {
            refs: known.refs.map(|r| format!("{:016x}", r.0)),
            layers: layers
                .iter()
                .map(|l| (l.chain_id.clone(), l.size))
                .collect(),
            blobs: blobs
                .iter()
                .map(|b| (b.key.clone(), b.size, b.exact))
                .collect(),
            sizes_exact: *sizes_exact,
            last_tag_time: *last_tag_time,
        }
    }

    /// The facts, or `None` when the entry cannot be trusted (a fingerprint
    /// that is not one: it would never match, and the entry would be read
    /// again anyway).
    fn into_known(self) -> Option<KnownFacts> {
        let refs = match self.refs {
            Some(hex) => Some(RefsPrint(u64::from_str_radix(&hex, 16).ok()?)),
            None => None,
        };
        let facts = ImageFacts {
            layers: self
                .layers
                .into_iter()
                .map(|(chain_id, size)| Layer { chain_id, size })
                .collect(),
            blobs: self
                .blobs
                .into_iter()
                .map(|(key, size, exact)| Blob { key, size, exact })
                .collect(),
            sizes_exact: self.sizes_exact,
            last_tag_time: self.last_tag_time,
        };
        Some(KnownFacts {
            facts: std::sync::Arc::new(facts),
            refs,
        })
    }
}

/// What reading the state file found.
enum Found {
    /// A usable state.
    Parsed(State),
    /// No file.
    Missing,
    /// A file that cannot be read (permissions, a symlink, not a file).
    Unreadable(String),
    /// A file that does not parse or has another schema version.
    Invalid(String),
}

/// The directory holding `path`.
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// True when a save to `path` could create its file: the directory, or the
/// nearest existing ancestor `save` would create it under, is a directory
/// this process may write (`access(2)`, which also sees a read-only mount).
/// Writes nothing, so `plan` may ask too.
fn dir_writable(path: &Path) -> bool {
    use nix::unistd::{access, AccessFlags};
    let dir = parent_dir(path);
    let mut cur = dir.as_path();
    loop {
        match std::fs::metadata(cur) {
            Ok(m) => {
                return m.is_dir() && access(cur, AccessFlags::W_OK | AccessFlags::X_OK).is_ok()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match cur.parent() {
                Some(p) if !p.as_os_str().is_empty() => cur = p,
                _ => return false,
            },
            Err(_) => return false,
        }
    }
}

/// The start of the names of the temp files a save by process `pid`
/// writes: `.<name>.tmp-<pid>-`, then random characters. The pid lets a
/// later load clean up after a writer that died.
fn temp_prefix(path: &Path, pid: u32) -> String {
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    format!(".{name}.tmp-{pid}-")
}

/// Temp files of writers that died mid-save (SIGKILL, power loss) stay
/// behind; remove those whose process is gone. Best effort: a failure here
/// costs a few bytes of disk, nothing else.
fn remove_orphaned_temp_files(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let file = entry.file_name();
        // `<pid>-<random>`, or `<pid>` as written by imagegc before 0.1.1.
        let Some(pid) = file
            .to_string_lossy()
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split('-').next()?.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("test timestamp")
    }

    #[test]
    fn baseline_images_have_no_first_seen_and_new_ones_do() {
        let mut s = State::baseline(["sha256:a"], t("2026-01-01T00:00:00Z"));
        s.observe(["sha256:a", "sha256:b"], t("2026-01-02T00:00:00Z"));
        assert_eq!(s.images["sha256:a"].first_seen, None);
        assert_eq!(
            s.images["sha256:b"].first_seen,
            Some(t("2026-01-02T00:00:00Z"))
        );
        s.observe(["sha256:b"], t("2026-01-03T00:00:00Z"));
        assert!(
            !s.images.contains_key("sha256:a"),
            "vanished images are dropped"
        );
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/state.json");
        let mut s = State::baseline(["sha256:a"], t("2026-01-01T00:00:00Z"));
        s.touch("sha256:a", t("2026-01-05T00:00:00Z"), "container start");
        s.save(&path).expect("save");
        let back = State::load(&path, t("2026-01-06T00:00:00Z")).expect("load");
        assert_eq!(back, Some(s));
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("read_dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "no temp file left behind: {leftovers:?}"
        );
    }

    #[test]
    fn corrupt_state_file_is_moved_aside_and_tracking_starts_afresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{not json").expect("write");
        let got = State::load(&path, t("2026-02-03T04:05:06Z")).expect("load");
        assert_eq!(got, None);
        assert!(!path.exists());
        assert!(dir
            .path()
            .join("state.json.corrupt-20260203T040506Z")
            .exists());
    }

    #[test]
    fn peek_at_a_corrupt_file_changes_nothing_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{not json").expect("write");
        let got = State::peek(&path, t("2026-02-03T04:05:06Z"));
        assert_eq!(
            got,
            State::restarted(t("2026-02-03T04:05:06Z")),
            "what a pass would start from"
        );
        assert_eq!(std::fs::read(&path).expect("still there"), b"{not json");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }

    #[test]
    fn a_lost_state_restarts_tracking_and_the_restart_is_written_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let now = t("2026-02-03T04:05:06Z");
        std::fs::write(&path, b"").expect("write");
        // A symlink planted at the name the file is moved aside to is
        // replaced, not written through.
        let victim_dir = tempfile::tempdir().expect("tempdir");
        let victim = victim_dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("write victim");
        std::os::unix::fs::symlink(
            &victim,
            dir.path().join("state.json.corrupt-20260203T040506Z"),
        )
        .expect("plant");
        let got = State::load_or_fresh(&path, now);
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
        assert_eq!(got, State::restarted(now));
        assert!(dir
            .path()
            .join("state.json.corrupt-20260203T040506Z")
            .exists());
        let on_disk = State::load(&path, now).expect("load").expect("written");
        assert_eq!(
            on_disk.tracking_restarted,
            Some(now),
            "a failing pass cannot turn the loss into a first install"
        );
        let mut s = got;
        s.observe(["sha256:a"], now);
        assert_eq!(s.images["sha256:a"].first_seen, Some(now));
        assert_eq!(s.tracked("sha256:a", now).basis, FirstSeenBasis::Restarted);
    }

    #[test]
    fn no_state_file_in_a_writable_dir_is_a_first_install() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("not/yet/state.json");
        let now = t("2026-02-03T04:05:06Z");
        let got = State::load_or_fresh(&path, now);
        assert!(got.baseline_pending);
        assert_eq!(got.tracked("sha256:a", now).first_seen, None);
        assert_eq!(
            got.tracked("sha256:a", now).basis,
            FirstSeenBasis::NoStateYet
        );
        assert!(!path.exists(), "a first install writes after its pass");
    }

    #[test]
    fn no_writable_state_restarts_tracking_at_every_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory that cannot be made: its parent is a regular file
        // (root may write anywhere else).
        std::fs::write(dir.path().join("file"), b"").expect("write");
        let path = dir.path().join("file/state.json");
        let now = t("2026-02-03T04:05:06Z");
        assert_eq!(State::load_or_fresh(&path, now), State::restarted(now));
        assert_eq!(State::peek(&path, now), State::restarted(now));
    }

    /// Every name a save by this process could be expected to use, and the
    /// final name, as symlinks to a victim file.
    fn plant_symlinks(dir: &Path, victim: &Path) {
        let pid = std::process::id();
        for name in [
            format!(".state.json.tmp-{pid}"),
            format!(".state.json.tmp-{pid}-"),
            format!(".state.json.tmp-{pid}.tmp"),
            "state.json".to_owned(),
        ] {
            std::os::unix::fs::symlink(victim, dir.join(name)).expect("plant a symlink");
        }
    }

    #[test]
    fn a_save_never_writes_through_a_planted_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim_dir = tempfile::tempdir().expect("tempdir");
        let victim = victim_dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("write victim");
        plant_symlinks(dir.path(), &victim);
        let path = dir.path().join("state.json");
        let s = State::baseline(["sha256:a"], t("2026-01-01T00:00:00Z"));
        for _ in 0..3 {
            s.save(&path).expect("save");
        }
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
        let meta = std::fs::symlink_metadata(&path).expect("state file");
        assert!(
            meta.file_type().is_file(),
            "the state file is a file of its own, not a link to the victim"
        );
        assert_eq!(
            State::load(&path, t("2026-01-02T00:00:00Z")).expect("load"),
            Some(s)
        );
    }

    #[test]
    fn a_state_file_that_is_a_symlink_is_not_read_and_tracking_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim_dir = tempfile::tempdir().expect("tempdir");
        let victim = victim_dir.path().join("victim.json");
        let old = State::baseline(["sha256:a"], t("2026-01-01T00:00:00Z"));
        old.save(&victim).expect("a state file elsewhere");
        let before = std::fs::read(&victim).expect("victim");
        let path = dir.path().join("state.json");
        std::os::unix::fs::symlink(&victim, &path).expect("symlink");
        let now = t("2026-02-03T04:05:06Z");
        assert_eq!(State::peek(&path, now), State::restarted(now));
        let got = State::load_or_fresh(&path, now);
        assert_eq!(got, State::restarted(now));
        assert_eq!(std::fs::read(&victim).expect("victim"), before);
        assert!(std::fs::symlink_metadata(&path)
            .expect("state file")
            .file_type()
            .is_file());
    }

    #[test]
    fn a_good_state_file_that_cannot_be_read_now_is_moved_aside_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let mut good = State::baseline(["sha256:a"], t("2026-01-01T00:00:00Z"));
        good.touch("sha256:a", t("2026-01-05T00:00:00Z"), "container start");
        good.save(&path).expect("save");
        let bytes = std::fs::read(&path).expect("good file");
        let now = t("2026-02-03T04:05:06Z");
        // What `read` finds on EACCES, EIO, EMFILE…
        let unreadable = Found::Unreadable("Input/output error (os error 5)".to_owned());
        let got = State::start_from(&path, unreadable, now);
        assert_eq!(got, State::restarted(now));
        let aside = dir.path().join("state.json.unreadable-20260203T040506Z");
        assert_eq!(
            std::fs::read(&aside).expect("the good file, moved aside"),
            bytes
        );
        assert_eq!(
            State::load(&path, now).expect("load"),
            Some(State::restarted(now)),
            "the restart is written in its place"
        );
    }

    #[test]
    fn an_unreadable_state_file_that_cannot_be_moved_aside_is_never_written_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        State::baseline(["sha256:a"], t("2026-01-01T00:00:00Z"))
            .save(&path)
            .expect("save");
        let bytes = std::fs::read(&path).expect("good file");
        let now = t("2026-02-03T04:05:06Z");
        // A non-empty directory at the name it would be moved to: the
        // rename fails, while a save to the directory would succeed.
        let aside = dir.path().join("state.json.unreadable-20260203T040506Z");
        std::fs::create_dir(&aside).expect("mkdir");
        std::fs::write(aside.join("x"), b"").expect("write");
        let unreadable = Found::Unreadable("Too many open files (os error 24)".to_owned());
        let mut got = State::start_from(&path, unreadable, now);
        assert_eq!(got.tracking_restarted, Some(now));
        got.observe(["sha256:a"], now);
        got.touch("sha256:a", now, "container start");
        let refused = got
            .save(&path)
            .expect_err("a save would write over the file");
        assert!(
            refused.to_string().contains("Too many open files"),
            "{refused}"
        );
        assert_eq!(std::fs::read(&path).expect("still there"), bytes);
        let elsewhere = dir.path().join("new.json");
        got.save(&elsewhere).expect("another path may be written");
    }

    #[test]
    fn a_state_file_this_process_cannot_read_is_never_written_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let now = t("2026-02-03T04:05:06Z");
        let aside = dir.path().join("state.json.unreadable-20260203T040506Z");
        let bytes = {
            use std::os::unix::fs::PermissionsExt;
            State::baseline(["sha256:a"], now)
                .save(&path)
                .expect("save");
            let bytes = std::fs::read(&path).expect("good file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).expect("chmod");
            Some(bytes)
        };
        // Root (CAP_DAC_OVERRIDE) reads a file whatever its mode: then a
        // FIFO stands in, a file that exists and that `read` cannot use.
        let bytes = if std::fs::File::open(&path).is_ok() {
            std::fs::remove_file(&path).expect("rm");
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
            None
        } else {
            bytes
        };
        assert_eq!(State::load_or_fresh(&path, now), State::restarted(now));
        let kept = std::fs::symlink_metadata(&aside).expect("moved aside, not overwritten");
        match bytes {
            None => assert!(std::os::unix::fs::FileTypeExt::is_fifo(&kept.file_type())),
            Some(bytes) => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o644))
                    .expect("chmod");
                assert_eq!(std::fs::read(&aside).expect("read"), bytes);
            }
        }
        assert_eq!(
            State::load(&path, now).expect("load"),
            Some(State::restarted(now))
        );
    }

    #[test]
    fn temp_files_of_dead_writers_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        // pid_max is at most 2^22 on Linux: these pids cannot be alive.
        let dead = [
            ".state.json.tmp-4194999-abcDEF123456",
            ".state.json.tmp-4194998",
        ];
        let live = format!(".state.json.tmp-{}-xyz", std::process::id());
        for name in dead.iter().copied().chain([live.as_str(), "unrelated"]) {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        remove_orphaned_temp_files(&path);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec![live, "unrelated".to_owned()]);
    }

    #[test]
    fn a_build_recorded_by_touch_reads_back_as_a_build_naming_it() {
        let mut s = State::baseline(["sha256:base"], t("2026-01-01T00:00:00Z"));
        let by = BuildUser::Image(crate::inventory::ShortRef::new("0123456789ab"));
        s.touch("sha256:base", t("2026-01-05T00:00:00Z"), &by.state_text());
        assert_eq!(
            s.images["sha256:base"].last_used_by.as_deref(),
            Some("build of 0123456789ab")
        );
        let tracked = s.tracked("sha256:base", t("2026-01-06T00:00:00Z"));
        assert_eq!(tracked.last_event, Some(t("2026-01-05T00:00:00Z")));
        assert_eq!(tracked.last_event_build, Some(by));
        // A newer engine event replaces it: then it is no build.
        s.touch("sha256:base", t("2026-01-07T00:00:00Z"), "container start");
        let tracked = s.tracked("sha256:base", t("2026-01-08T00:00:00Z"));
        assert_eq!(tracked.last_event_build, None);
        // Records, and texts from a hand-edited file: kept short, never a panic.
        let record = BuildUser::from_state_text("build cache record u5ukl6868hkd0wh7uzvqg9t3v");
        assert_eq!(
            record.map(|r| r.state_text()).as_deref(),
            Some("build cache record u5ukl6868hkd0wh7uzvqg9t3v")
        );
        let long = format!("build of {}", "é".repeat(40));
        assert_eq!(
            BuildUser::from_state_text(&long)
                .map(|b| b.state_text())
                .as_deref(),
            Some("build of ")
        );
        let long = format!("build of {}", "a".repeat(100));
        assert_eq!(
            BuildUser::from_state_text(&long).map(|b| b.state_text().len()),
            Some("build of ".len() + crate::inventory::ShortRef::MAX)
        );
    }

    #[test]
    fn a_version_1_file_loads_as_a_state_without_facts_and_is_saved_as_version_2() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(
            &path,
            br#"{"version":1,"tracking_since":"2026-01-01T00:00:00Z",
                "images":{"sha256:a":{"first_seen":"2026-01-02T00:00:00Z"}}}"#,
        )
        .expect("write");
        let now = t("2026-02-03T04:05:06Z");
        let got = State::load_or_fresh(&path, now);
        assert_eq!(got.tracking_since, t("2026-01-01T00:00:00Z"));
        assert_eq!(
            got.images["sha256:a"].first_seen,
            Some(t("2026-01-02T00:00:00Z"))
        );
        assert!(got.facts.is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
        got.save(&path).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("\"version\": 2"), "{text}");
        assert_eq!(State::load(&path, now).expect("load"), Some(got));
    }

    #[test]
    fn a_newer_schema_is_still_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(
            &path,
            br#"{"version":3,"tracking_since":"2026-01-01T00:00:00Z","images":{}}"#,
        )
        .expect("write");
        let now = t("2026-02-03T04:05:06Z");
        assert_eq!(State::load_or_fresh(&path, now), State::restarted(now));
        assert!(dir
            .path()
            .join("state.json.corrupt-20260203T040506Z")
            .exists());
    }

    /// Facts with every field set: two layers (one of `u64::MAX` bytes), an
    /// estimated blob, a tag time, and a fingerprint with leading zeros.
    fn every_fact() -> KnownFacts {
        KnownFacts {
            facts: std::sync::Arc::new(ImageFacts {
                layers: vec![
                    Layer {
                        chain_id: "sha256:l1".to_owned(),
                        size: 7,
                    },
                    Layer {
                        chain_id: "sha256:l2".to_owned(),
                        size: u64::MAX,
                    },
                ],
                blobs: vec![Blob {
                    key: "sha256:config".to_owned(),
                    size: 1_234,
                    exact: false,
                }],
                sizes_exact: false,
                last_tag_time: Some(t("2026-01-03T00:00:00Z")),
            }),
            refs: Some(RefsPrint(0x0000_beef_0000_0001)),
        }
    }

    #[test]
    fn facts_round_trip_and_only_tracked_images_keep_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let mut s = State::baseline(["sha256:a"], t("2026-01-01T00:00:00Z"));
        let known = every_fact();
        let gone = KnownFacts {
            refs: None,
            ..known.clone()
        };
        let ids = ["sha256:a".to_owned(), "sha256:gone".to_owned()];
        s.remember_facts([(&ids[0], &known), (&ids[1], &gone)]);
        assert_eq!(s.facts.len(), 1, "an image the state does not track");
        s.facts.insert(ids[1].clone(), gone);
        s.save(&path).expect("save");
        let back = State::load(&path, t("2026-01-06T00:00:00Z"))
            .expect("load")
            .expect("a state");
        assert_eq!(back.facts.len(), 1, "not saved for an untracked image");
        assert_eq!(back.facts["sha256:a"], known);
    }

    #[test]
    fn facts_are_written_as_the_record_spells_them() {
        use std::sync::Arc;
        let full = every_fact();
        // Fields left out when empty: no refs, blobs or tag time.
        let bare = KnownFacts {
            facts: Arc::new(ImageFacts {
                layers: Vec::new(),
                blobs: Vec::new(),
                sizes_exact: true,
                last_tag_time: None,
            }),
            refs: None,
        };
        for known in [&full, &bare] {
            let streamed = serde_json::to_string_pretty(&FactsOut(known)).expect("serialize");
            let record = serde_json::to_string_pretty(&FactsRecord::of(known)).expect("serialize");
            assert_eq!(streamed, record);
            let back: FactsRecord = serde_json::from_str(&streamed).expect("reads back");
            assert_eq!(back.into_known().as_ref(), Some(known));
        }
        assert!(serde_json::to_string(&FactsOut(&full))
            .expect("serialize")
            .contains(r#""refs":"0000beef00000001""#));
    }

    #[test]
    fn touch_keeps_the_newest_use() {
        let mut s = State::baseline([], t("2026-01-01T00:00:00Z"));
        s.touch("sha256:x", t("2026-01-05T00:00:00Z"), "tag");
        s.touch("sha256:x", t("2026-01-04T00:00:00Z"), "container create");
        assert_eq!(
            s.images["sha256:x"].last_used,
            Some(t("2026-01-05T00:00:00Z"))
        );
        assert_eq!(s.images["sha256:x"].last_used_by.as_deref(), Some("tag"));
    }
}
