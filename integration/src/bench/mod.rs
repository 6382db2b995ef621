//! The benchmark tool's parts: a fast write handler, a bare echo server (the baselines), load generation,
//! child processes, and the report. Figures are ratios against baselines measured in the same run.

pub mod cluster;
pub mod config;
pub mod counter_handler;
pub mod echo;
pub mod load;
pub mod process;
pub mod report;
pub mod resources;
pub mod scenarios;
pub mod setup;
