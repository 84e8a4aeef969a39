//! Facts about the machine imagegc runs on, as opposed to the engine's.
//!
//! - [`disk`]: size and use of the filesystem under the engine's root
//!   directory, behind the [`disk::DiskProbe`] trait.

pub mod disk;
