//! The benchmark tool's parts: a fast write handler, a bare echo server (the baselines), a recording read
//! handler, load generation, child processes, and the report. Figures are ratios against baselines measured in the same run.

pub mod cluster;
pub mod commit_probe;
pub mod config;
pub mod counter_handler;
pub mod cpu;
pub mod echo;
pub mod lag;
pub mod latency;
pub mod load;
pub mod machine_bound;
pub mod process;
pub mod read_handler;
pub mod readside;
pub mod report;
pub mod resources;
pub mod scenarios;
pub mod setup;
