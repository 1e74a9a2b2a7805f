//! The model stage: classifies each row change and builds events.

use crate::pgoutput::Change;

use super::ModelOutput;

/// Why the model could not handle a change.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Placeholder until the catalog loader lands.
    #[error("model not implemented")]
    NotImplemented,
}

/// The model stage's state: catalog, filter, published-state cache.
#[derive(Debug, Default)]
pub struct Model {}

impl Model {
    /// Handles one change, appending what it produces to `out`.
    pub fn handle(&mut self, change: Change, out: &mut Vec<ModelOutput>) -> Result<(), ModelError> {
        let _ = (change, out);
        Err(ModelError::NotImplemented)
    }
}
