//! Image references and IDs as text: the repository of a reference, the
//! short form of an ID.

/// The repository part of a `repo:tag` or `repo@digest` reference.
///
/// ```
/// use imagegc::model::repository_of;
/// assert_eq!(repository_of("ci/app:1.2"), "ci/app");
/// assert_eq!(repository_of("localhost:5000/ci/app:1"), "localhost:5000/ci/app");
/// assert_eq!(repository_of("localhost:5000/ci/app"), "localhost:5000/ci/app");
/// assert_eq!(repository_of("base/os@sha256:0123"), "base/os");
/// ```
pub fn repository_of(reference: &str) -> &str {
    if let Some((repo, _digest)) = reference.split_once('@') {
        return repo;
    }
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => reference,
    }
}

/// A reference as the user wrote it, on an engine that qualifies names
/// without a registry with `localhost/` (Podman): the reference without
/// that prefix. `None` when it has none.
///
/// ```
/// use imagegc::model::as_written;
/// assert_eq!(as_written("localhost/ci/app:1"), Some("ci/app:1"));
/// assert_eq!(as_written("localhost:5000/ci/app:1"), None);
/// assert_eq!(as_written("ci/app:1"), None);
/// ```
pub fn as_written(reference: &str) -> Option<&str> {
    reference
        .strip_prefix("localhost/")
        .filter(|rest| !rest.is_empty())
}

/// The first 12 hex digits of an image or container ID, as `docker` shows them.
///
/// ```
/// use imagegc::model::short_id;
/// assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
/// assert_eq!(short_id("abc"), "abc");
/// ```
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}
