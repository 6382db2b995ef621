//! Cluster logic that needs no actors: how shards are allocated and rebalanced between nodes, and how nodes
//! find each other (discovery). The actors that use them live in `cos-actors`.

pub mod allocation;
pub mod discovery;
