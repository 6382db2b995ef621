//! Chief of State core: domain types, settings, stores and write-handler clients. Knows nothing of actors.

pub mod cluster;
pub mod codec;
pub mod domain;
pub mod error;
pub mod handler;
pub mod headers;
pub mod limits;
pub mod proto;
pub mod readside;
pub mod settings;
pub mod sharding;
pub mod store;
pub mod validation;
