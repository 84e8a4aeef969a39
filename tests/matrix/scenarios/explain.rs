//! Scenario `explain` (to be written).

use super::Finding;
use crate::engine::MatrixEngine;

pub fn run(engine: &MatrixEngine) -> Result<Finding, String> {
    Err(format!(
        "scenario explain is not written yet ({})",
        engine.name
    ))
}
