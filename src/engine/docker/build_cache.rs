//! Docker's build cache (`BuildKit`) on the wire: the `BuildCache` records of
//! `GET /system/df` and the removal of one record with `POST /build/prune`.
//!
//! `/system/df` is read as raw JSON, not through bollard's model: bollard
//! 0.21 has no `Parent` (the only parent link on API 1.41, a string; 1.42+
//! sends `Parents`, a list), and `BuilderSize` may be absent (26.1). Both
//! forms are read; a record whose `CreatedAt` is no time at all is left out
//! with a warning, as images with an impossible `Created` are.
//!
//! A removal is one `POST /build/prune` per record, with exactly one filter,
//! `id`, anchored: the engine matches `id` as a regular expression (`id=u5uk`
//! deleted `u5ukl6868…` on 20.10), so imagegc sends `^<id>$` and refuses IDs
//! that are not plain letters and digits before building it. Never `label`
//! (20.10 accepts and ignores it, pruning every prunable record), never
//! without an `id`, never `keep-storage`/`until`. `all=true` is sent, and
//! only beside that anchored `id`: without it the engine skips every
//! `Shared` record (and `internal`/`frontend` ones) whatever the filter says
//! (measured on 20.10: an anchored `id` of a shared record deleted nothing
//! until `all=true` was added), and shared records are the ones that hold
//! image layers. With or without `all` the engine never deletes a record in
//! use or one that still has children; those answers list nothing, which is
//! a normal outcome (`deleted: false`), as is an ID that is gone.

use std::fmt::Write as _;

use serde_json::Value;

use super::parse_engine_time;
use crate::engine::{is_plain_record_id, CacheRecord, CacheRecordKind, CacheRemoval, EngineError};

/// The part of a `GET /system/df` answer the build cache needs: `BuildCache` as raw JSON (null
/// when absent), the rest of the answer (every image, container and volume) skipped unread.
#[derive(Debug, serde::Deserialize)]
pub(super) struct SystemDf {
    #[serde(rename = "BuildCache", default)]
    pub(super) build_cache: Value,
}

/// The records of a `/system/df` answer's `BuildCache` (null or absent on an
/// engine without build cache, so none).
///
/// An entry left out (no ID, no valid creation time) may be a child: the
/// records it was made on top of, and theirs, are left out too, so no plan
/// can remove a parent before a child it cannot see.
pub(super) fn records(build_cache: &Value) -> Vec<CacheRecord> {
    let Some(entries) = build_cache.as_array() else {
        return Vec::new();
    };
    let mut kept = Vec::with_capacity(entries.len());
    let mut hidden_parents: Vec<String> = Vec::new();
    for entry in entries {
        match record(entry) {
            Some(r) => kept.push(r),
            None => hidden_parents.extend(parents_of(entry)),
        }
    }
    // Every ancestor of a left-out entry, transitively (a cycle ends: each
    // ID is taken at most once).
    let mut hidden: std::collections::HashSet<String> = std::collections::HashSet::new();
    while let Some(id) = hidden_parents.pop() {
        if hidden.insert(id.clone()) {
            if let Some(r) = kept.iter().find(|r| r.id == id) {
                hidden_parents.extend(r.parents.iter().cloned());
            }
        }
    }
    if !hidden.is_empty() {
        tracing::warn!(
            records = hidden.len(),
            "build-cache records left out because a record made on top of them could not be read"
        );
        kept.retain(|r| !hidden.contains(&r.id));
    }
    kept
}

/// The parent IDs an entry names: `Parents` (1.42+, a list) or `Parent`
/// (1.41, one ID or "").
fn parents_of(entry: &Value) -> Vec<String> {
    match entry.get("Parents").and_then(Value::as_array) {
        Some(list) => list
            .iter()
            .filter_map(Value::as_str)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        None => entry
            .get("Parent")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .into_iter()
            .collect(),
    }
}

/// One `BuildCache` entry; `None` (with a warning) without an ID or a
/// creation time, so that one absurd record is left alone.
fn record(entry: &Value) -> Option<CacheRecord> {
    let text = |key: &str| entry.get(key).and_then(Value::as_str).unwrap_or_default();
    let flag = |key: &str| entry.get(key).and_then(Value::as_bool).unwrap_or(false);
    let number = |key: &str| entry.get(key).and_then(Value::as_u64).unwrap_or(0);
    let id = text("ID");
    if id.is_empty() {
        tracing::warn!(record = %entry, "the engine lists a build-cache record without an ID; imagegc leaves it alone");
        return None;
    }
    let Some(created) = parse_engine_time(text("CreatedAt")) else {
        tracing::warn!(
            record = id,
            created = text("CreatedAt"),
            "the engine lists build-cache record {id} without a valid CreatedAt; imagegc leaves it alone"
        );
        return None;
    };
    let parents = parents_of(entry);
    Some(CacheRecord {
        id: id.to_owned(),
        parents,
        kind: CacheRecordKind::from_type(text("Type")),
        description: text("Description").to_owned(),
        in_use: flag("InUse"),
        shared: flag("Shared"),
        size: number("Size"),
        created,
        last_used: parse_engine_time(text("LastUsedAt")),
        usage_count: number("UsageCount"),
    })
}

/// The query of the removal of record `id`: `all=true` and the one filter
/// `{"id":["^<id>$"]}`, percent-encoded. Refuses an `id` that is not a plain
/// record ID, so nothing but that one ID ever reaches the regular expression.
pub(super) fn prune_query(id: &str) -> Result<String, EngineError> {
    if !is_plain_record_id(id) {
        return Err(EngineError::Other(format!(
            "refusing to remove build-cache record {id:?}: not a plain record ID \
             (letters and digits only)"
        )));
    }
    let filters = serde_json::json!({ "id": [format!("^{id}$")] }).to_string();
    Ok(format!("all=true&filters={}", percent_encode(&filters)))
}

/// What the answer to the removal of `id` says: whether `CachesDeleted`
/// names it, and `SpaceReclaimed` (information only).
pub(super) fn removal(id: &str, answer: &Value) -> CacheRemoval {
    let deleted = answer
        .get("CachesDeleted")
        .and_then(Value::as_array)
        .is_some_and(|ids| ids.iter().any(|d| d.as_str() == Some(id)));
    if let Some(others) = answer.get("CachesDeleted").and_then(Value::as_array) {
        let others: Vec<&str> = others
            .iter()
            .filter_map(Value::as_str)
            .filter(|d| *d != id)
            .collect();
        if !others.is_empty() {
            // Cannot happen with an anchored filter; said loudly if it does.
            tracing::error!(
                record = id,
                ?others,
                "the engine deleted other build-cache records than the one asked for"
            );
        }
    }
    CacheRemoval {
        deleted,
        reported_bytes: answer
            .get("SpaceReclaimed")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(extra: &Value) -> Value {
        let mut base = json!({
            "ID": "g9m9j2vaii5shk3sgokpqefpf",
            "Type": "regular",
            "Description": "fileop target",
            "InUse": false,
            "Shared": true,
            "Size": 50000,
            "CreatedAt": "2026-12-02T00:22:42.24654113Z",
            "LastUsedAt": "2026-12-02T00:22:43.163132193Z",
            "UsageCount": 1
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    #[test]
    fn system_df_keeps_the_build_cache_and_skips_the_images_and_containers() {
        let df = json!({
            "LayersSize": 1000,
            "Images": [{ "Id": "sha256:aa", "RepoTags": ["a:1"], "Labels": { "x": "y" } }],
            "Containers": [{ "Id": "c1" }],
            "Volumes": null,
            "BuildCache": [entry(&json!({ "Parent": "" }))]
        });
        let text = df.to_string();
        let read: SystemDf = serde_json::from_str(&text).expect("a df answer");
        assert_eq!(read.build_cache, df["BuildCache"]);
        assert_eq!(records(&read.build_cache), records(&df["BuildCache"]));
        assert_eq!(records(&read.build_cache).len(), 1);
        // Podman and old engines: no or null `BuildCache` means no records.
        for answer in [r#"{"Images": []}"#, r#"{"BuildCache": null}"#] {
            let read: SystemDf = serde_json::from_str(answer).expect("a df answer");
            assert!(records(&read.build_cache).is_empty(), "{answer}");
        }
    }

    #[test]
    fn the_ancestors_of_an_entry_that_cannot_be_read_are_left_out_too() {
        let df = json!({ "BuildCache": [
            entry(&json!({ "ID": "grandparent0000000000000a", "Parent": "" })),
            entry(&json!({ "ID": "parent0000000000000000000", "Parent": "grandparent0000000000000a" })),
            entry(&json!({ "ID": "unrelated0000000000000000", "Parent": "" })),
            // A child whose creation time is unreadable: left out, and so
            // must be every record it was made on top of.
            entry(&json!({ "ID": "child00000000000000000000", "Parent": "parent0000000000000000000", "CreatedAt": "" })),
        ]});
        let ids: Vec<String> = records(&df["BuildCache"])
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec!["unrelated0000000000000000"]);
    }

    #[test]
    fn api_1_41_names_one_parent_as_a_string_and_an_empty_one_as_none() {
        let df = json!({ "BuildCache": [
            entry(&json!({ "Parent": "95cmtkpz0oyzzmecvfejjm73b" })),
            entry(&json!({ "ID": "95cmtkpz0oyzzmecvfejjm73b", "Parent": "" })),
        ], "BuilderSize": 150_000 });
        let records = records(&df["BuildCache"]);
        assert_eq!(records[0].parents, vec!["95cmtkpz0oyzzmecvfejjm73b"]);
        assert!(records[1].parents.is_empty());
        let r = &records[0];
        assert_eq!(r.kind, CacheRecordKind::Regular);
        assert!(r.shared && !r.in_use);
        assert_eq!((r.size, r.usage_count), (50000, 1));
        assert_eq!(r.description, "fileop target");
        assert_eq!(
            r.created.to_rfc3339(),
            "2026-12-02T00:22:42.246541130+00:00"
        );
        assert!(r.last_used.is_some());
    }

    #[test]
    fn api_1_42_names_parents_as_a_list_without_builder_size() {
        let df = json!({ "BuildCache": [entry(&json!({
            "Parents": ["aaa", "bbb"], "Type": "exec.cachemount", "LastUsedAt": null
        }))] });
        let records = records(&df["BuildCache"]);
        assert_eq!(records[0].parents, vec!["aaa", "bbb"]);
        assert_eq!(records[0].kind, CacheRecordKind::ExecCacheMount);
        assert_eq!(records[0].last_used, None);
    }

    #[test]
    fn no_build_cache_and_absurd_records_give_what_can_be_trusted() {
        assert!(records(&json!({ "BuildCache": null })["BuildCache"]).is_empty());
        assert!(records(&json!({ "LayersSize": 1 })["BuildCache"]).is_empty());
        let df = json!({ "BuildCache": [
            entry(&json!({ "CreatedAt": "0001-01-01T00:00:00Z" })),
            entry(&json!({ "ID": "" })),
            entry(&json!({ "Type": "something.new" })),
        ] });
        let records = records(&df["BuildCache"]);
        assert_eq!(records.len(), 1);
        assert_eq!(
            records[0].kind,
            CacheRecordKind::Other("something.new".to_owned())
        );
    }

    #[test]
    fn a_removal_filter_is_one_anchored_id_and_nothing_else() {
        let query = prune_query("u5ukl6868").unwrap();
        assert_eq!(
            query,
            "all=true&filters=%7B%22id%22%3A%5B%22%5Eu5ukl6868%24%22%5D%7D"
        );
        assert!(!query.contains("label") && !query.contains("keep"));
        for bad in [
            "",
            "u5.*",
            "^u5$",
            "a b",
            "a|b",
            "ü",
            "a\n",
            &"a".repeat(129),
        ] {
            let refused = prune_query(bad);
            assert!(
                matches!(&refused, Err(EngineError::Other(m)) if m.contains("not a plain record ID")),
                "{bad:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn only_a_deleted_list_naming_the_id_is_a_deletion() {
        let id = "g9m9j2vaii5shk3sgokpqefpf";
        let yes = removal(
            id,
            &json!({ "CachesDeleted": [id], "SpaceReclaimed": 50000 }),
        );
        assert_eq!(
            yes,
            CacheRemoval {
                deleted: true,
                reported_bytes: 50000
            }
        );
        let no = removal(id, &json!({ "CachesDeleted": null, "SpaceReclaimed": 0 }));
        assert!(!no.deleted);
        let other = removal(
            id,
            &json!({ "CachesDeleted": ["zzz"], "SpaceReclaimed": 1 }),
        );
        assert!(!other.deleted);
    }
}
