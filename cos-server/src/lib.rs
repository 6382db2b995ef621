//! Chief of State server: the thin tonic gateway, logging set-up and the node life cycle (start, serve,
//! graceful shutdown). Everything with state lives in `cos-actors`; everything with rules in `cos-core`.

pub mod admin;
pub mod cluster;
pub mod gateway;
pub mod logging;
pub mod memory;
pub mod node;
pub mod oversized;
pub mod read_sides;
pub mod readside_cli;
pub mod readside_manager;

pub use node::{NodeError, RunningNode};
