//! Scenario `images` (to be written).

use super::Finding;
use crate::engine::MatrixEngine;

pub fn run(engine: &MatrixEngine) -> Result<Finding, String> {
    Err(format!(
        "scenario images is not written yet ({})",
        engine.name
    ))
}
