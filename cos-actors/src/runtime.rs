//! The shared, read-only context of one entity type: its settings, write handler and journal.

use std::sync::Arc;

use cos_core::handler::WriteHandler;
use cos_core::settings::EntityTypeSettings;
use cos_core::store::{Journal, JournalWriter};

/// Everything the entities of one type share; built once at start-up.
pub struct EntityTypeRuntime {
    pub settings: EntityTypeSettings,
    pub handler: Arc<dyn WriteHandler>,
    pub journal: Arc<dyn Journal>,
    pub writer: JournalWriter,
    /// `COS_NUM_SHARDS`, identical on every node.
    pub num_shards: u32,
}
