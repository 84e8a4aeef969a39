//! First-seen and last-used times, kept across passes in a JSON file.
//!
//! The file is small (one entry per image ID) and written atomically: a temp
//! file in the same directory, fsync, rename, fsync of the directory. A crash
//! at any instant leaves the old file or the new one. A file that does not
//! parse is moved aside to `<name>.corrupt-<timestamp>` with a warning, and
//! tracking starts afresh; imagegc never refuses to start over it.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::snapshot::Tracked;

/// Schema version written into the file.
pub const SCHEMA_VERSION: u32 = 1;

/// The state file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Schema version; files from a newer imagegc are refused (moved aside).
    pub version: u32,
    /// When tracking began on this host.
    pub tracking_since: DateTime<Utc>,
    /// Per image ID.
    pub images: BTreeMap<String, ImageRecord>,
    /// True for a state that has not observed the engine yet: its first
    /// observation is the baseline (no first-seen times).
    #[serde(skip)]
    pub baseline_pending: bool,
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
    /// What that event was (`container start`, `tag`, …).
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
            images: ids
                .into_iter()
                .map(|id| (id.to_string(), ImageRecord::default()))
                .collect(),
            baseline_pending: false,
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
        match self.images.get(id) {
            Some(r) => Tracked {
                first_seen: r.first_seen,
                last_event: r.last_used,
            },
            None => Tracked {
                first_seen: (!self.baseline_pending).then_some(now),
                last_event: None,
            },
        }
    }

    /// Note a use of an image (an event); keeps the newest.
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
    }

    /// Read the state file, or start a [`State::fresh`] one when there is
    /// none or it was corrupt (moved aside, with a warning saying where).
    pub fn load_or_fresh(path: &Path, now: DateTime<Utc>) -> Result<Self, StateError> {
        Ok(Self::load(path, now)?.unwrap_or_else(|| Self::fresh(now)))
    }

    /// Read the state file without changing anything on disk, for commands
    /// that must write nothing (`plan`, `explain`). A missing, unreadable or
    /// corrupt file gives a fresh state (with a warning for the last two).
    pub fn peek(path: &Path, now: DateTime<Utc>) -> Self {
        let parsed = match std::fs::read(path) {
            Ok(bytes) => Self::parse(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Self::fresh(now),
            Err(e) => Err(e.to_string()),
        };
        parsed.unwrap_or_else(|reason| {
            tracing::warn!(path = %path.display(), reason, "state file unreadable; ignoring it (a pass will move it aside)");
            Self::fresh(now)
        })
    }

    /// A state file's contents, or why they cannot be used.
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        match serde_json::from_slice::<State>(bytes) {
            Ok(state) if state.version == SCHEMA_VERSION => Ok(state),
            Ok(state) => Err(format!(
                "schema version {} is not {SCHEMA_VERSION}",
                state.version
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Read the state file. `Ok(None)` when there is none yet, or when it was
    /// corrupt and has been moved aside (a warning says where).
    pub fn load(path: &Path, now: DateTime<Utc>) -> Result<Option<Self>, StateError> {
        remove_orphaned_temp_files(path);
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        match Self::parse(&bytes) {
            Ok(state) => Ok(Some(state)),
            Err(why) => {
                Self::move_aside(path, now, &why)?;
                Ok(None)
            }
        }
    }

    fn move_aside(path: &Path, now: DateTime<Utc>, why: &str) -> Result<(), StateError> {
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".corrupt-{}", now.format("%Y%m%dT%H%M%SZ")));
        let aside = PathBuf::from(aside);
        std::fs::rename(path, &aside).map_err(|source| StateError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        tracing::warn!(
            path = %path.display(),
            moved_to = %aside.display(),
            reason = why,
            "state file unreadable; moved aside, tracking starts afresh"
        );
        Ok(())
    }

    /// Write atomically: temp file in the same directory, fsync, rename,
    /// fsync the directory. Creates the directory if needed.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        let tmp = temp_path(path, &dir, std::process::id());
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}

/// The temp file a save writes before its rename.
fn temp_path(path: &Path, dir: &Path, pid: u32) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    dir.join(format!(".{name}.tmp-{pid}"))
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
        let Some(pid) = file
            .to_string_lossy()
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
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
        assert!(got.baseline_pending, "a fresh state");
        assert_eq!(std::fs::read(&path).expect("still there"), b"{not json");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
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
