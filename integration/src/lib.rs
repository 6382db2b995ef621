//! Black-box test support, the example bank-account write handler, and benchmarks for Chief of State.

pub mod bank;
pub mod bench;
pub mod net;
pub mod support;
