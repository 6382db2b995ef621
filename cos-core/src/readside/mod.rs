//! Read side configuration: which remote read handlers receive the journal's events, how to reach them and
//! what to do when they fail. Loaded and validated once at start-up, so a bad read side stops the node before
//! it joins the cluster instead of surfacing later when the read sides start (the original's weak point).
//!
//! Sources, as in the original: `COS_READ_SIDE_ENABLED` gates everything; `COS_READ_SIDE_CONFIG` names a YAML
//! file or folder; `COS_READ_SIDE_CONFIG__<SETTING>__<ID>` variables describe read sides too. Both sources are
//! read and concatenated; an id defined twice is an error.

mod breaker;
mod config;
mod env;
pub mod handler;
mod policy;
mod replay;
mod values;
mod yaml;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

pub use self::policy::FailurePolicy;

/// Everything the read side runtime needs; `read_sides` is empty when read sides are disabled.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadSideSettings {
    /// `COS_READ_SIDE_ENABLED` (default false): when false no read side runs and the manager service is off.
    pub enabled: bool,
    /// Every configured read side (enabled or not, since the manager service lists them all), YAML first.
    pub read_sides: Vec<ReadSideConfig>,
    /// `COS_READ_SIDE_BREAKER_*`: one breaker per read side; `None` when disabled.
    pub breaker: Option<ReadSideBreaker>,
}

/// One remote read handler and how its projection behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadSideConfig {
    /// `readSideId`: names the projection (offset rows), so it must never change for a running read side.
    pub id: String,
    /// `protocol` (default gRPC).
    pub protocol: ReadSideProtocol,
    /// `host` of the read handler (required, non-empty).
    pub host: String,
    /// `port` of the read handler (required, 1..=65535).
    pub port: u16,
    /// `useTls` (default false): TLS with the system trust store.
    pub use_tls: bool,
    /// `timeout` in milliseconds (default 30000): the deadline of one handler call.
    pub timeout: Duration,
    /// `autoStart` (default true): when false the read side starts paused.
    pub auto_start: bool,
    /// `enabled` (default true): when false the read side is configured but never runs.
    pub enabled: bool,
    /// `failurePolicy` (default STOP): what a failed event does to the projection.
    pub failure_policy: FailurePolicy,
    /// `entityTypes` / `ENTITY_TYPES` (not in the original): the entity types whose events this read side
    /// receives; `None` means all of them.
    pub entity_types: Option<Vec<String>>,
}

/// How CoS calls a read handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadSideProtocol {
    /// `ReadSideHandlerService.HandleReadSide` over gRPC.
    #[default]
    Grpc,
    /// `POST /v1/readside/handle` with JSON.
    Http,
}

/// A read side circuit breaker: after `max_failures` failures in a row calls fail fast for `reset_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSideBreaker {
    /// `COS_READ_SIDE_BREAKER_MAX_FAILURES` (default 5, 1..=100).
    pub max_failures: u32,
    /// `COS_READ_SIDE_BREAKER_CALL_TIMEOUT` (default 10s, more than 0 and at most 5m).
    pub call_timeout: Duration,
    /// `COS_READ_SIDE_BREAKER_RESET_TIMEOUT` (default 1m, 1s..=1h).
    pub reset_timeout: Duration,
}

/// Why read sides could not be configured; each message is one line naming the read side and the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadSideConfigError {
    /// A global variable (`COS_READ_SIDE_ENABLED`, `COS_READ_SIDE_BREAKER_*`) breaks a rule.
    #[error("invalid setting {name}={value:?}: {rule}")]
    InvalidGlobal {
        name: String,
        value: String,
        rule: String,
    },
    /// The YAML file or folder cannot be read or is not YAML.
    #[error("cannot read read side config {path:?}: {reason}")]
    File { path: PathBuf, reason: String },
    /// A YAML document is unusable before its read side is known (no id, not a mapping).
    #[error("read side config file {path:?}, document {document}: {problem}")]
    Document {
        path: PathBuf,
        document: usize,
        problem: String,
    },
    /// A read side id breaks the id rule; `origin` says where it was defined.
    #[error(
        "read side id {id:?} in {origin} must be letters, digits, '_' and '-', starting and ending with a letter or digit"
    )]
    InvalidId { id: String, origin: String },
    /// A setting of a known read side breaks a rule.
    #[error("read side {read_side:?}: {setting} {value:?} {rule}")]
    Invalid {
        read_side: String,
        setting: String,
        value: String,
        rule: String,
    },
    /// A required setting of a known read side is absent or empty.
    #[error("read side {read_side:?}: missing {setting}")]
    Missing { read_side: String, setting: String },
    /// A `COS_READ_SIDE_CONFIG__` variable whose name is not `<SETTING>__<ID>`.
    #[error("{variable} is not <SETTING>__<ID>")]
    MalformedVariable { variable: String },
    /// A `COS_READ_SIDE_CONFIG__<SETTING>__<ID>` variable whose setting nothing reads.
    #[error("{variable}: {setting} is not a read side setting (use {known})")]
    UnknownSetting {
        variable: String,
        setting: String,
        known: String,
    },
    /// Two definitions share an id, which would make them share offsets.
    #[error("read side {id:?} is defined twice: in {first} and in {second}")]
    Duplicate {
        id: String,
        first: String,
        second: String,
    },
}

/// The gate for everything else.
const ENABLED_VARIABLE: &str = "COS_READ_SIDE_ENABLED";
/// The YAML file or folder.
const CONFIG_PATH_VARIABLE: &str = "COS_READ_SIDE_CONFIG";

/// A validated read side and where it was defined, for duplicate reports.
pub(crate) struct Located {
    pub(crate) config: ReadSideConfig,
    pub(crate) origin: String,
}

/// Reads and validates the read side settings from `environment` (the process environment as a map). When
/// `COS_READ_SIDE_ENABLED` is false nothing else is read, so leftovers of a disabled setup cannot stop a node.
/// An enabled setup with no read side is valid (the caller may warn about it).
pub fn load_read_sides(
    environment: &HashMap<String, String>,
) -> Result<ReadSideSettings, ReadSideConfigError> {
    let enabled = values::global_boolean(environment, ENABLED_VARIABLE, false)?;
    if !enabled {
        return Ok(ReadSideSettings {
            enabled: false,
            read_sides: Vec::new(),
            breaker: None,
        });
    }
    let mut located = Vec::new();
    let config_path = environment
        .get(CONFIG_PATH_VARIABLE)
        .map(|path| path.trim())
        .filter(|path| !path.is_empty());
    if let Some(path) = config_path {
        located.extend(yaml::load_path(&PathBuf::from(path))?);
    }
    located.extend(env::load_variables(environment)?);
    let replay = replay::load_replay(environment)?;
    let read_sides = reject_duplicates(located)?
        .into_iter()
        .map(|config| replay.apply(config))
        .collect();
    let breaker = breaker::load_breaker(environment)?;
    Ok(ReadSideSettings {
        enabled: true,
        read_sides,
        breaker,
    })
}

/// Node-wide read-side variables (the per-read-side ones start with `COS_READ_SIDE_CONFIG__`).
const GLOBAL_VARIABLES: &[&str] = &[
    ENABLED_VARIABLE,
    CONFIG_PATH_VARIABLE,
    "COS_READ_SIDE_BREAKER_ENABLED",
    "COS_READ_SIDE_BREAKER_MAX_FAILURES",
    "COS_READ_SIDE_BREAKER_CALL_TIMEOUT",
    "COS_READ_SIDE_BREAKER_RESET_TIMEOUT",
    "COS_READ_SIDE_REPLAY_RETRIES",
    "COS_READ_SIDE_REPLAY_INTERVAL",
];

/// Whether something reads this `COS_READ_SIDE_*` variable (upper case), so a misspelt one is warned about
/// instead of silently ignored.
pub fn is_read_side_variable(upper_name: &str) -> bool {
    GLOBAL_VARIABLES.contains(&upper_name) || upper_name.starts_with("COS_READ_SIDE_CONFIG__")
}

/// Keeps the order of definition and refuses an id seen before, naming both places.
fn reject_duplicates(located: Vec<Located>) -> Result<Vec<ReadSideConfig>, ReadSideConfigError> {
    let mut first_origin_by_id: HashMap<String, String> = HashMap::new();
    let mut read_sides = Vec::with_capacity(located.len());
    for Located { config, origin } in located {
        if let Some(first) = first_origin_by_id.get(&config.id) {
            return Err(ReadSideConfigError::Duplicate {
                id: config.id,
                first: first.clone(),
                second: origin,
            });
        }
        first_origin_by_id.insert(config.id.clone(), origin);
        read_sides.push(config);
    }
    Ok(read_sides)
}

#[cfg(test)]
mod tests;
