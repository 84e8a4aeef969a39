//! Size and use of a filesystem on this machine, for disk-pressure policies.
//!
//! The disk is a host fact, not an engine call: the engine only says where
//! it keeps its data ([`crate::engine::EngineInfo::root_dir`]), and a
//! [`DiskProbe`] measures the filesystem there. [`Statvfs`] is the real one
//! (the only user of `nix`); tests swap in a `FixedDisk`
//! (`test-support` feature). A probe is blocking by design (statvfs of a
//! dead NFS mount hangs), so [`usage_of`] runs it on a blocking thread under
//! a deadline and reports an unknown disk rather than a hung pass.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Size and use of the filesystem holding the engine's root directory, as
/// `df` and `df -i` count them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// The bytes `df`'s `Use%` is a share of: used plus available to
    /// unprivileged users. The blocks reserved for root are left out, so
    /// this is less than the filesystem's size.
    pub total_bytes: u64,
    /// Bytes in use (size minus free), as `df` counts them.
    pub used_bytes: u64,
    /// Inodes the filesystem has (`f_files`), what `df -i`'s `IUse%` is a
    /// share of. 0 when it reports none (btrfs, some FUSE filesystems):
    /// inode watermarks are then skipped.
    pub total_inodes: u64,
    /// Inodes in use (`f_files - f_ffree`), as `df -i` counts them.
    pub used_inodes: u64,
}

impl DiskUsage {
    /// Bytes unprivileged users (dockerd's writes count as such once the
    /// root reserve is gone) may still write: `df`'s `Avail`.
    pub fn free_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.used_bytes)
    }

    /// Fraction of the filesystem in use, 0.0 to 1.0: `df`'s `Use%`.
    pub fn used_ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        self.used_bytes as f64 / self.total_bytes as f64
    }

    /// This usage with the inode counts of a statvfs: `files` (`f_files`)
    /// and `files_free` (`f_ffree`), counted as `df -i` counts them.
    #[must_use]
    pub fn with_inodes(self, files: u64, files_free: u64) -> Self {
        Self {
            total_inodes: files,
            used_inodes: files.saturating_sub(files_free),
            ..self
        }
    }

    /// Whether the filesystem reports inode counts (btrfs and some FUSE
    /// filesystems report `f_files == 0`: no fixed inode table to run out of).
    pub fn reports_inodes(&self) -> bool {
        self.total_inodes > 0
    }

    /// Fraction of the inodes in use, 0.0 to 1.0: `df -i`'s `IUse%`; `None`
    /// when the filesystem reports no inode counts.
    pub fn inodes_used_ratio(&self) -> Option<f64> {
        self.reports_inodes()
            .then(|| self.used_inodes.min(self.total_inodes) as f64 / self.total_inodes as f64)
    }
}

/// How long [`usage_of`] waits for a probe before counting the disk as
/// unknown: as long as one engine call may take by default.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

/// Measures the filesystem holding a path. Blocking; call it through
/// [`usage_of`].
pub trait DiskProbe: Send + Sync + std::fmt::Debug {
    /// Size and use of the filesystem holding `path`.
    fn usage(&self, path: &Path) -> std::io::Result<DiskUsage>;
}

/// The real probe: `statvfs(2)`, counted the way `df` counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Statvfs;

impl DiskProbe for Statvfs {
    fn usage(&self, path: &Path) -> std::io::Result<DiskUsage> {
        let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
        // The counts are narrower than u64 on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        Ok(df_usage(
            s.blocks().into(),
            s.blocks_free().into(),
            s.blocks_available().into(),
            s.fragment_size().into(),
        )
        .with_inodes(s.files().into(), s.files_free().into()))
    }
}

/// The disk at `path` through `probe`, on a blocking thread under
/// [`PROBE_TIMEOUT`]; `None` (logged) when it fails or does not return in
/// time. A hung probe's thread is left behind: the pass must not hang.
///
/// At most one probe per path is in flight: while a hung one has not
/// returned, a new call answers `None` at once instead of leaving one more
/// thread behind (the disk-pressure sampler asks every few seconds).
pub async fn usage_of(probe: &Arc<dyn DiskProbe>, path: &str) -> Option<DiskUsage> {
    // Keyed by the probe too: two probes of one path (tests) do not wait
    // for each other.
    let key = (Arc::as_ptr(probe).cast::<()>() as usize, path.to_owned());
    if !in_flight().insert(key.clone()) {
        tracing::debug!(
            root_dir = path,
            "an earlier statvfs of the engine root directory has not returned; not asking again"
        );
        return None;
    }
    let task = {
        let probe = Arc::clone(probe);
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let _done = InFlight(key);
            probe.usage(Path::new(&path))
        })
    };
    let Ok(joined) = tokio::time::timeout(PROBE_TIMEOUT, task).await else {
        tracing::warn!(
            root_dir = path,
            "statvfs of the engine root directory did not return in time"
        );
        return None;
    };
    match joined {
        Ok(Ok(usage)) => Some(usage),
        Ok(Err(error)) => {
            tracing::debug!(root_dir = path, %error, "cannot statvfs the engine root directory");
            None
        }
        Err(error) => {
            tracing::warn!(error = %error, "cannot read disk usage of the engine's root dir");
            None
        }
    }
}

/// A probe (by address) and the path it is running for now.
type ProbeKey = (usize, String);

/// The probes running now.
fn in_flight() -> std::sync::MutexGuard<'static, std::collections::HashSet<ProbeKey>> {
    static PATHS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<ProbeKey>>> =
        std::sync::OnceLock::new();
    PATHS
        .get_or_init(Default::default)
        .lock()
        // A set of strings: a poisoned lock still holds a good one.
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes a probe off [`in_flight`] when it returns, or panics.
struct InFlight(ProbeKey);

impl Drop for InFlight {
    fn drop(&mut self) {
        in_flight().remove(&self.0);
    }
}

/// Filesystem use the way `df` counts it: used is total minus free, and the
/// size a percentage is taken of is used plus what unprivileged users may
/// still write (`f_bavail`), leaving out the blocks reserved for root.
pub fn df_usage(
    blocks: u64,
    blocks_free: u64,
    blocks_available: u64,
    fragment_size: u64,
) -> DiskUsage {
    let used = blocks
        .saturating_sub(blocks_free)
        .saturating_mul(fragment_size);
    let available = blocks_available.saturating_mul(fragment_size);
    DiskUsage {
        total_bytes: used.saturating_add(available),
        used_bytes: used,
        ..DiskUsage::default()
    }
}

/// A probe for tests: reports what it was given, whatever the path
/// (`None`: the filesystem cannot be read).
#[cfg(feature = "test-support")]
#[derive(Debug, Default)]
pub struct FixedDisk {
    usage: std::sync::Mutex<Option<DiskUsage>>,
}

#[cfg(feature = "test-support")]
impl FixedDisk {
    /// A probe that reports `usage`.
    pub fn new(usage: Option<DiskUsage>) -> Self {
        Self {
            usage: std::sync::Mutex::new(usage),
        }
    }

    /// Report `usage` from now on.
    pub fn set(&self, usage: Option<DiskUsage>) {
        *self
            .usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = usage;
    }
}

#[cfg(feature = "test-support")]
impl DiskProbe for FixedDisk {
    fn usage(&self, _path: &Path) -> std::io::Result<DiskUsage> {
        self.usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .ok_or_else(|| std::io::Error::other("the fixed disk has no usage set"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_usage_counts_like_df() {
        // 1000 blocks, 250 free of which 200 are available to unprivileged
        // users (50 reserved for root): df says 750 used, 200 available,
        // Use% = 750 / 950 = 79%, not 750 / 1000.
        let usage = df_usage(1000, 250, 200, 4096);
        assert_eq!(usage.used_bytes, 750 * 4096);
        assert_eq!(usage.total_bytes, 950 * 4096);
        assert_eq!(usage.free_bytes(), 200 * 4096);
        assert!((usage.used_ratio() - 750.0 / 950.0).abs() < 1e-12);
    }

    #[test]
    fn inode_use_counts_like_df_i_and_a_filesystem_without_counts_reports_none() {
        // 4096 inodes, 1024 free: df -i says 3072 used, IUse% 75%.
        let usage = df_usage(1000, 250, 200, 4096).with_inodes(4096, 1024);
        assert_eq!((usage.total_inodes, usage.used_inodes), (4096, 3072));
        assert_eq!(usage.inodes_used_ratio(), Some(0.75));
        // btrfs: f_files == 0.
        let btrfs = df_usage(1000, 250, 200, 4096).with_inodes(0, 0);
        assert!(!btrfs.reports_inodes());
        assert_eq!(btrfs.inodes_used_ratio(), None);
    }

    /// A probe that does not return until told to.
    #[derive(Debug, Default)]
    struct Hung(
        std::sync::Mutex<bool>,
        std::sync::Condvar,
        std::sync::atomic::AtomicUsize,
    );

    impl DiskProbe for Hung {
        fn usage(&self, _path: &Path) -> std::io::Result<DiskUsage> {
            self.2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut released = self.0.lock().expect("lock");
            while !*released {
                released = self.1.wait(released).expect("wait");
            }
            Ok(df_usage(10, 5, 5, 1))
        }
    }

    #[tokio::test]
    async fn a_probe_that_has_not_returned_is_not_started_again_for_the_same_path() {
        let hung = Arc::new(Hung::default());
        let probe: Arc<dyn DiskProbe> = Arc::clone(&hung) as _;
        let first = tokio::spawn({
            let probe = Arc::clone(&probe);
            async move { usage_of(&probe, "/x").await }
        });
        while hung.2.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(usage_of(&probe, "/x").await, None, "still in flight");
        assert_eq!(hung.2.load(std::sync::atomic::Ordering::SeqCst), 1);
        *hung.0.lock().expect("lock") = true;
        hung.1.notify_all();
        assert!(first.await.expect("join").is_some());
        assert!(
            usage_of(&probe, "/x").await.is_some(),
            "asked again once it returned"
        );
    }

    #[test]
    fn statvfs_of_the_root_filesystem_reports_a_used_share_below_one() {
        let usage = Statvfs.usage(Path::new("/")).expect("statvfs /");
        assert!(usage.total_bytes > 0 && usage.used_bytes <= usage.total_bytes);
        assert!(usage.used_inodes <= usage.total_inodes);
    }
}
