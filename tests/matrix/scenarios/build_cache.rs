//! Scenario `build_cache` (to be written).

use super::Finding;
use crate::engine::MatrixEngine;

pub fn run(engine: &MatrixEngine) -> Result<Finding, String> {
    Err(format!(
        "scenario build_cache is not written yet ({})",
        engine.name
    ))
}
