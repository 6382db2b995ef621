//! Chief of State actors. A command goes gateway -> [`router`] -> [`region`] (one per entity type) ->
//! [`shard`] -> [`entity`]; once a shard runs here and is not moving, the router skips the region
//! ([`direct_shards`]), and a read of an entity resting there is answered by the router itself
//! ([`resting`]). Entities are local actors, never remotable; only regions (and, later, the coordinator and
//! membership actors) cross nodes. [`readside`] workers deliver each shard's events to the
//! read handlers from the node that owns the shard.

pub mod census;
pub mod cluster;
pub mod direct_shards;
pub mod entity;
pub mod envelope;
pub mod passivation;
pub mod readside;
pub mod region;
pub mod resting;
pub mod router;
pub mod runtime;
pub mod shard;

pub use envelope::{EntityEnvelope, EntityRequest, EntityResult};
pub use router::{EntityRouter, RouterError};
pub use runtime::EntityTypeRuntime;
