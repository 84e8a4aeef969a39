//! The scenarios of the matrix. Each runs on one engine (holding its lock), makes what it
//! needs labelled with a lab id of its own, removes it again (a drop guard), and returns its
//! [`Finding`]: the README compatibility table's cell for that engine and column.

pub mod api;
pub mod build_cache;
pub mod bytes;
pub mod containers;
pub mod daemon;
pub mod explain;
pub mod images;
pub mod race;

use crate::engine::MatrixEngine;

/// What a scenario found on one engine, for the compatibility table: a categorical text that
/// does not change from run to run ("yes, bytes exact", "n/a: no build cache"), never a
/// measured figure (those go to the trial's output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub cell: String,
}

impl Finding {
    pub fn new(cell: impl Into<String>) -> Finding {
        Finding { cell: cell.into() }
    }
}

/// One scenario: its name (the trial name's first part and the table's column key), the
/// table's column heading, and what it runs.
pub struct Scenario {
    pub name: &'static str,
    pub column: &'static str,
    pub run: fn(&MatrixEngine) -> Result<Finding, String>,
}

/// Every scenario, in table column order.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "images",
            column: "image policies, bytes",
            run: images::run,
        },
        Scenario {
            name: "bytes",
            column: "bytes exact",
            run: bytes::run,
        },
        Scenario {
            name: "explain",
            column: "explain",
            run: explain::run,
        },
        Scenario {
            name: "daemon",
            column: "daemon, events",
            run: daemon::run,
        },
        Scenario {
            name: "containers",
            column: "finished containers",
            run: containers::run,
        },
        Scenario {
            name: "build_cache",
            column: "build cache",
            run: build_cache::run,
        },
        Scenario {
            name: "api",
            column: "API answers",
            run: api::run,
        },
        Scenario {
            name: "race",
            column: "create/delete race",
            run: race::run,
        },
    ]
}
