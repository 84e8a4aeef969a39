//! Engine-neutral domain helpers: no I/O, no dependency on any other module
//! of the crate, so every layer above (inventory, planner, reports, engine
//! adapters) can use them without an import cycle.

pub mod reference;

pub use reference::{as_written, repository_of, short_id};
