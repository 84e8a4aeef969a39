//! The engine's build cache in a snapshot: `BuildKit` records, indexed for
//! the planner and the ledger (parents, children, the image layers a shared
//! record holds).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

pub use crate::engine::{CacheRecord, CacheRecordKind};

/// Whether the snapshot's engine has a build cache the pass could read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheAvailability {
    /// The records were listed.
    Listed,
    /// The engine has no build cache (Podman: 404 on `/build/prune`).
    Unsupported,
    /// Not read: no `[[build_cache]]` policy needs it, or the snapshot was
    /// built without one (tests, benchmarks).
    #[default]
    NotRead,
}

/// Build-cache records of one snapshot, with their indices.
#[derive(Debug, Clone, Default)]
pub struct BuildCache {
    /// Whether `records` is the engine's whole build cache.
    pub availability: CacheAvailability,
    /// Records in the order the engine listed them.
    pub records: Vec<CacheRecord>,
    /// Record ID → index.
    pub by_id: HashMap<String, usize>,
    /// Parent indices per record (only parents present).
    pub parents: Vec<Vec<usize>>,
    /// Child indices per record: a record goes only after all of these.
    pub children: Vec<Vec<usize>>,
    /// Per record: the image layers (indices into `Snapshot::layers`) whose
    /// data it shares. Non-empty only for `Shared` records; removing such a
    /// record frees those bytes only once no image uses them, and deleting
    /// the last image using them frees nothing while a record holds them.
    pub holds: Vec<Vec<u32>>,
    /// Per record: the bytes removing it frees by itself, beside the held
    /// layers (`holds`): its `Size` for a record that shares nothing, 0 for
    /// one whose data is the held image layers.
    pub own_bytes: Vec<u64>,
}

impl BuildCache {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// When record `r` was last used by a build (its `CreatedAt` when never
    /// used), and whether that is a use (`true`) or the creation (`false`).
    pub fn last_used(&self, r: usize) -> (DateTime<Utc>, bool) {
        let rec = &self.records[r];
        match rec.last_used {
            Some(t) if t > rec.created => (t, true),
            _ => (rec.created, false),
        }
    }
}
