//! Which engine behind the Docker API this is, and so what it can do: Docker with its graph
//! driver, Docker with the containerd image store, or Podman's compatible service. Read once
//! at connect time from `GET /version` and `GET /info`; every difference the rest of the
//! adapter and the planner must honour follows from it (see `docs/ENGINES.md`).

use bollard::models::{SystemInfo, SystemVersion};

use crate::engine::Capabilities;

/// How the engine behind the API stores images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// Docker with a graph driver (overlay2, fuse-overlayfs, …): image IDs are config
    /// digests, layers are keyed by chain ID and a removal's answer lists the deleted ones.
    GraphDriver,
    /// Docker with the containerd image store (`containerd-snapshotter`, the default of
    /// fresh Docker 29 installs): IDs are manifest digests, removals list no layers, and the
    /// bytes are the snapshots plus the content blobs.
    ContainerdStore,
    /// Podman's Docker-compatible service: removals list no layers and also delete the
    /// parents they leave dangling; no build cache (no `BuildKit`).
    Podman,
}

impl Flavor {
    /// The flavor of the engine that answered `version` and `info`.
    pub fn detect(version: &SystemVersion, info: &SystemInfo) -> Flavor {
        let podman = version
            .components
            .iter()
            .flatten()
            .any(|c| c.name.to_ascii_lowercase().contains("podman"));
        if podman {
            return Flavor::Podman;
        }
        let containerd = info.driver_status.iter().flatten().any(|pair| {
            pair.len() == 2
                && pair[0] == "driver-type"
                && pair[1].starts_with("io.containerd.snapshotter")
        });
        if containerd {
            Flavor::ContainerdStore
        } else {
            Flavor::GraphDriver
        }
    }

    /// What an engine of this flavor can do; `root_dir_on_host` as the address says.
    pub fn capabilities(self, root_dir_on_host: bool) -> Capabilities {
        let base = Capabilities {
            root_dir_on_host,
            ..Capabilities::DOCKER_20_10
        };
        match self {
            Flavor::GraphDriver => base,
            Flavor::ContainerdStore => Capabilities {
                reports_deleted_layers: false,
                models_removed_bytes: true,
                models_cache_records: false,
                has_parents: false,
                ..base
            },
            Flavor::Podman => Capabilities {
                reports_deleted_layers: false,
                models_removed_bytes: true,
                prunes_parents: true,
                build_cache: false,
                qualifies_local_names: true,
                ..base
            },
        }
    }

    /// For logs and reports: `graph driver`, `containerd image store`, `podman`.
    pub fn describe(self) -> &'static str {
        match self {
            Flavor::GraphDriver => "graph driver",
            Flavor::ContainerdStore => "containerd image store",
            Flavor::Podman => "podman",
        }
    }
}
