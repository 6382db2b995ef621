//! Running Chief of State on several nodes: membership and failure detection, the shard coordinator, and the
//! endpoint through which other nodes' regions reach this node's entities.

pub mod coordinator;
pub mod endpoint;
pub mod membership;
pub mod remote;
pub mod routing;
pub mod view;
pub mod wire;
