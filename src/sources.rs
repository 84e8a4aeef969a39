//! Where the policy and the engine come from. Each precedence rule is
//! written once, here, and read by every command and by the daemon's reload:
//!
//! - the policy: `--config`, else the default path if a file is there, else
//!   the built-in policy ([`PolicySource`]);
//! - the engine: `--engine`, else `DOCKER_HOST`, else the policy's `engine`,
//!   else the local socket ([`EngineSpec`]).
//!
//! The environment and the file system are parameters, so the rules are
//! unit-tested with fakes.

use std::path::{Path, PathBuf};

use crate::config::{self, ConfigErrors};
use crate::policy::Policy;

/// Where the policy in force is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// `--config FILE` (or the file `check-config` was given).
    Explicit(PathBuf),
    /// No `--config`, and a file was at the default path.
    DefaultPath(PathBuf),
    /// No `--config` and no file at `default`: the built-in policy, until a
    /// file appears at `default` (a reload then adopts it).
    Builtin {
        /// The default path that was empty.
        default: PathBuf,
    },
}

impl PolicySource {
    /// The source for `explicit` (`--config`), with the default path
    /// [`config::DEFAULT_CONFIG_PATH`].
    pub fn resolve(explicit: Option<&Path>) -> Self {
        Self::resolve_in(explicit, Path::new(config::DEFAULT_CONFIG_PATH))
    }

    /// The source for `explicit`, with `default` as the default path.
    pub fn resolve_in(explicit: Option<&Path>, default: &Path) -> Self {
        match explicit {
            Some(path) => Self::Explicit(path.to_path_buf()),
            None if default.exists() => Self::DefaultPath(default.to_path_buf()),
            None => Self::Builtin {
                default: default.to_path_buf(),
            },
        }
    }

    /// The source a reload reads: the same file, or for a daemon started
    /// on the built-in policy, the file that has appeared at the default
    /// path since (what the operator wants now).
    #[must_use]
    pub fn on_reload(&self) -> Self {
        match self {
            Self::Builtin { default } if default.exists() => Self::DefaultPath(default.clone()),
            other => other.clone(),
        }
    }

    /// The file read, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Explicit(path) | Self::DefaultPath(path) => Some(path),
            Self::Builtin { .. } => None,
        }
    }

    /// Reads and validates the policy.
    pub fn load(&self) -> Result<Policy, ConfigErrors> {
        match self.path() {
            Some(path) => config::load(path),
            None => Ok(config::builtin()),
        }
    }

    /// What was read, for `check-config`'s answer: the path, or that the
    /// default path is empty and the built-in policy is meant.
    pub fn describe(&self) -> String {
        match self {
            Self::Explicit(path) | Self::DefaultPath(path) => path.display().to_string(),
            Self::Builtin { default } => format!(
                "{} does not exist; the built-in default policy",
                default.display()
            ),
        }
    }

    /// The name a rejected reload's status line gives the file.
    pub fn file_name(&self) -> String {
        self.path().map_or_else(
            || config::BUILTIN_SOURCE.to_string(),
            |p| p.display().to_string(),
        )
    }
}

impl From<Option<PathBuf>> for PolicySource {
    /// `Some(file)`: that file; `None`: the built-in policy, adopting a file
    /// at the default path on reload.
    fn from(path: Option<PathBuf>) -> Self {
        match path {
            Some(path) => Self::Explicit(path),
            None => Self::Builtin {
                default: PathBuf::from(config::DEFAULT_CONFIG_PATH),
            },
        }
    }
}

/// Where dockerd listens when nothing says otherwise.
pub const DEFAULT_DOCKER_ADDRESS: &str = "unix:///var/run/docker.sock";

/// Which kind of engine an address speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// The Docker Engine API.
    Docker,
}

/// The engine to connect to, resolved once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSpec {
    /// The API the address speaks.
    pub kind: EngineKind,
    /// The address, as `Docker::connect` accepts it.
    pub address: String,
}

impl EngineSpec {
    /// `--engine` (`cli`), else `DOCKER_HOST` from `env`, else the policy's
    /// `engine`, else [`DEFAULT_DOCKER_ADDRESS`]. An empty `DOCKER_HOST`
    /// counts as unset.
    pub fn resolve(
        cli: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
        policy: Option<&str>,
    ) -> Self {
        let address = cli
            .map(str::to_owned)
            .or_else(|| env("DOCKER_HOST").filter(|h| !h.trim().is_empty()))
            .or_else(|| policy.map(str::to_owned))
            .unwrap_or_else(|| DEFAULT_DOCKER_ADDRESS.to_owned());
        Self {
            kind: EngineKind::Docker,
            address,
        }
    }

    /// [`EngineSpec::resolve`] with the process environment.
    pub fn from_process(cli: Option<&str>, policy: &Policy) -> Self {
        Self::resolve(
            cli,
            |name| std::env::var(name).ok(),
            policy.engine.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_engine_flag_wins_over_docker_host_and_the_policy() {
        let spec = EngineSpec::resolve(
            Some("tcp://flag:2375"),
            env(&[("DOCKER_HOST", "tcp://env:2375")]),
            Some("tcp://policy:2375"),
        );
        assert_eq!(spec.address, "tcp://flag:2375");
        assert_eq!(spec.kind, EngineKind::Docker);
    }

    #[test]
    fn docker_host_wins_over_the_policy() {
        let spec = EngineSpec::resolve(
            None,
            env(&[("DOCKER_HOST", "tcp://env:2375")]),
            Some("tcp://policy:2375"),
        );
        assert_eq!(spec.address, "tcp://env:2375");
    }

    #[test]
    fn an_empty_docker_host_counts_as_unset() {
        let spec = EngineSpec::resolve(None, env(&[("DOCKER_HOST", " ")]), Some("tcp://p:1"));
        assert_eq!(spec.address, "tcp://p:1");
    }

    #[test]
    fn with_nothing_said_the_engine_is_the_local_socket() {
        let spec = EngineSpec::resolve(None, env(&[]), None);
        assert_eq!(spec.address, DEFAULT_DOCKER_ADDRESS);
    }

    #[test]
    fn an_explicit_file_is_read_even_when_the_default_path_has_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let default = dir.path().join("imagegc.toml");
        std::fs::write(&default, "").expect("write");
        let explicit = dir.path().join("other.toml");
        let source = PolicySource::resolve_in(Some(&explicit), &default);
        assert_eq!(source, PolicySource::Explicit(explicit.clone()));
        assert_eq!(source.on_reload(), PolicySource::Explicit(explicit));
    }

    #[test]
    fn without_a_flag_a_file_at_the_default_path_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let default = dir.path().join("imagegc.toml");
        std::fs::write(&default, "").expect("write");
        let source = PolicySource::resolve_in(None, &default);
        assert_eq!(source, PolicySource::DefaultPath(default.clone()));
        assert_eq!(source.path(), Some(default.as_path()));
    }

    #[test]
    fn without_a_flag_or_a_default_file_the_builtin_policy_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let default = dir.path().join("imagegc.toml");
        let source = PolicySource::resolve_in(None, &default);
        assert_eq!(source.path(), None);
        assert_eq!(
            source.load().expect("the built-in policy is valid").source,
            config::BUILTIN_SOURCE
        );
        assert!(source
            .describe()
            .ends_with("does not exist; the built-in default policy"));
    }

    #[test]
    fn a_daemon_on_the_builtin_policy_adopts_a_file_that_appears_at_the_default_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let default = dir.path().join("imagegc.toml");
        let source = PolicySource::resolve_in(None, &default);
        assert_eq!(source.on_reload(), source, "no file yet: still built-in");
        std::fs::write(&default, "").expect("write");
        assert_eq!(source.on_reload(), PolicySource::DefaultPath(default));
    }

    #[test]
    fn a_default_file_that_disappears_is_still_the_one_a_reload_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let default = dir.path().join("imagegc.toml");
        std::fs::write(&default, "").expect("write");
        let source = PolicySource::resolve_in(None, &default);
        std::fs::remove_file(&default).expect("remove");
        assert_eq!(source.on_reload(), PolicySource::DefaultPath(default));
    }
}
