//! Scenario `containers` (to be written).

use super::Finding;
use crate::engine::MatrixEngine;

pub fn run(engine: &MatrixEngine) -> Result<Finding, String> {
    Err(format!(
        "scenario containers is not written yet ({})",
        engine.name
    ))
}
