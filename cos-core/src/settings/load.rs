//! Loads [`Settings`] from an optional YAML or TOML file layered under the environment, validating every
//! value up front so a bad deployment fails at start-up with one line naming the setting and its value.

mod cluster;
mod entity_types;
mod parse;
mod sources;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use self::parse::RawValue;
pub(crate) use self::parse::{parse_boolean, parse_duration};
use self::sources::Sources;
use super::{
    BreakerSettings, DeploymentMode, GrpcClientSettings, KeepaliveSettings, LogStyle,
    LoggingSettings, PassivationSettings, PostgresSettings, Settings, SqliteSettings,
    StoreSettings,
};

/// Where settings come from; the environment is passed in as a map so tests never mutate the process env.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// A `.yaml`/`.yml` or `.toml` file under the environment; it must exist when named.
    pub config_file: Option<PathBuf>,
    /// Variable name → value; `COS_*`, `LOG_LEVEL` and `LOG_STYLE` are read.
    pub environment: HashMap<String, String>,
}

impl LoadOptions {
    /// The process environment; when `config_file` is `None`, a non-empty `COS_CONFIG_FILE` names the file.
    /// Variables that are not valid UTF-8 are converted lossily, so they fail validation rather than vanish.
    pub fn from_process_env(config_file: Option<PathBuf>) -> Self {
        let environment: HashMap<String, String> = std::env::vars_os()
            .map(|(name, value)| {
                (
                    name.to_string_lossy().into_owned(),
                    value.to_string_lossy().into_owned(),
                )
            })
            .collect();
        let config_file = config_file.or_else(|| {
            environment
                .get("COS_CONFIG_FILE")
                .filter(|path| !path.trim().is_empty())
                .map(PathBuf::from)
        });
        Self {
            config_file,
            environment,
        }
    }
}

/// Why settings could not be loaded; each message is one line naming the setting, its value and the rule.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A value is set but breaks a rule.
    #[error("invalid setting {name}={value:?}: {rule}")]
    Invalid {
        name: String,
        value: String,
        rule: String,
    },
    /// A required value is not set anywhere.
    #[error("missing setting {name}: {reason}")]
    Missing { name: String, reason: String },
    /// The config file cannot be read or parsed.
    #[error("cannot read config file {path:?}: {reason}")]
    ConfigFile { path: PathBuf, reason: String },
    /// The config file has a key nothing reads (usually a misspelling).
    #[error("unknown key {key} in config file {path:?}: {hint}")]
    UnknownFileKey {
        key: String,
        path: PathBuf,
        hint: String,
    },
    /// A read side (or a `COS_READ_SIDE_*` variable) is invalid.
    #[error(transparent)]
    ReadSide(#[from] crate::readside::ReadSideConfigError),
    /// The environment could not be merged (not expected with string values).
    #[error("cannot read settings from the environment: {reason}")]
    Environment { reason: String },
}

const NUM_SHARDS_RULE: &str = "must be a power of two between 1 and 10000";
const POSITIVE_MILLIS_RULE: &str = "must be a positive whole number of milliseconds";

impl Settings {
    /// Loads and validates everything; unknown `COS_*` variables are logged as warnings (use
    /// [`Settings::load_with_warnings`] to report them after logging is set up).
    pub fn load(options: &LoadOptions) -> Result<Settings, SettingsError> {
        let (settings, warnings) = Self::load_with_warnings(options)?;
        for warning in &warnings {
            tracing::warn!(%warning, "settings warning");
        }
        Ok(settings)
    }

    /// Like [`Settings::load`], also returning one line per `COS_*` variable that nothing reads, since
    /// settings are usually loaded before a log subscriber exists.
    pub fn load_with_warnings(
        options: &LoadOptions,
    ) -> Result<(Settings, Vec<String>), SettingsError> {
        let sources = Sources::read(options)?;
        check_server_protocol(&sources)?;
        let service_name = load_service_name(&sources)?;
        let deployment_mode = load_deployment_mode(&sources)?;
        let grpc_listen_address = load_listen_address(&sources)?;
        let store = load_store(&sources)?;
        let cluster = cluster::load_cluster(
            &sources,
            &store,
            deployment_mode,
            &service_name,
            grpc_listen_address,
            options.environment.get("POD_IP").map(String::as_str),
        )?;
        let settings = Settings {
            service_name,
            deployment_mode,
            grpc_listen_address,
            num_shards: load_num_shards(&sources)?,
            command_handler_timeout: load_command_handler_timeout(&sources)?,
            store,
            entity_types: entity_types::load_entity_types(&sources)?,
            passivation: load_passivation(&sources)?,
            grpc_client: load_grpc_client(&sources)?,
            logging: load_logging(&sources)?,
            cluster,
            read_sides: crate::readside::load_read_sides(&options.environment)?,
        };
        check_read_side_entity_types(&settings)?;
        Ok((settings, sources.warnings()))
    }
}

fn load_service_name(sources: &Sources<'_>) -> Result<String, SettingsError> {
    let raw = sources.global("service_name", "chiefofstate")?;
    let length = raw.text.chars().count();
    if !(1..=64).contains(&length) {
        return Err(raw.invalid("must be 1 to 64 characters long"));
    }
    Ok(raw.text)
}

fn load_deployment_mode(sources: &Sources<'_>) -> Result<DeploymentMode, SettingsError> {
    let raw = sources.global("deployment_mode", "docker")?;
    match raw.trimmed().to_ascii_lowercase().as_str() {
        "docker" => Ok(DeploymentMode::Docker),
        "kubernetes" => Ok(DeploymentMode::Kubernetes),
        _ => Err(raw.invalid("unrecognized deployment mode; use docker or kubernetes")),
    }
}

/// Only the gRPC API exists so far; refusing `http`/`both` beats silently serving less than configured.
fn check_server_protocol(sources: &Sources<'_>) -> Result<(), SettingsError> {
    let raw = sources.global("server_protocol", "grpc")?;
    match raw.trimmed().to_ascii_lowercase().as_str() {
        "grpc" => Ok(()),
        "http" | "both" => {
            Err(raw.invalid("the HTTP API is not available in this build yet; use grpc"))
        }
        _ => Err(raw.invalid("must be grpc (http and both are not available in this build yet)")),
    }
}

/// Refuses a read side whose `entityTypes` names a type this node does not serve: it would silently receive
/// nothing of it (most likely a typo).
fn check_read_side_entity_types(settings: &Settings) -> Result<(), SettingsError> {
    let known: Vec<&str> = settings
        .entity_types
        .types
        .keys()
        .map(|entity_type| entity_type.as_str())
        .collect();
    for read_side in &settings.read_sides.read_sides {
        for listed in read_side.entity_types.iter().flatten() {
            if !known.contains(&listed.as_str()) {
                return Err(crate::readside::ReadSideConfigError::Invalid {
                    read_side: read_side.id.clone(),
                    setting: "entity types".to_string(),
                    value: listed.clone(),
                    rule: format!(
                        "is not a configured entity type (known: {})",
                        known.join(", ")
                    ),
                }
                .into());
            }
        }
    }
    Ok(())
}

fn load_listen_address(sources: &Sources<'_>) -> Result<SocketAddr, SettingsError> {
    let address_raw = sources.global("address", "0.0.0.0")?;
    let address: IpAddr = address_raw
        .trimmed()
        .parse()
        .map_err(|_| address_raw.invalid("must be an IP address such as 0.0.0.0 or ::"))?;
    let port: u16 = sources
        .global("port", "9000")?
        .integer_in(0..=65535, "must be an integer between 0 and 65535")?;
    Ok(SocketAddr::new(address, port))
}

fn load_num_shards(sources: &Sources<'_>) -> Result<u32, SettingsError> {
    let raw = sources.global("num_shards", "16")?;
    let shards: u32 = raw.integer_in(1..=10_000, NUM_SHARDS_RULE)?;
    if !shards.is_power_of_two() {
        return Err(raw.invalid(NUM_SHARDS_RULE));
    }
    Ok(shards)
}

fn load_command_handler_timeout(sources: &Sources<'_>) -> Result<Duration, SettingsError> {
    let seconds: u64 = sources.global("command_handler_timeout", "5")?.integer_in(
        1..=300,
        "must be a whole number of seconds between 1 and 300",
    )?;
    Ok(Duration::from_secs(seconds))
}

/// `auto` picks PostgreSQL when `COS_DB_HOST` is set, so existing deployments keep their journal.
fn load_store(sources: &Sources<'_>) -> Result<StoreSettings, SettingsError> {
    let raw = sources.global("store", "auto")?;
    let use_postgres = match raw.trimmed().to_ascii_lowercase().as_str() {
        "auto" => sources
            .global_opt("db_host")?
            .is_some_and(|host| !host.trimmed().is_empty()),
        "postgres" => true,
        "sqlite" => false,
        _ => return Err(raw.invalid("must be auto, sqlite or postgres")),
    };
    if use_postgres {
        return Ok(StoreSettings::Postgres(load_postgres(sources)?));
    }
    let data_dir = sources.global("data_dir", "./cos-data")?;
    if data_dir.trimmed().is_empty() {
        return Err(data_dir.invalid("must be a directory path"));
    }
    Ok(StoreSettings::Sqlite(SqliteSettings {
        data_dir: PathBuf::from(data_dir.text),
    }))
}

fn load_postgres(sources: &Sources<'_>) -> Result<PostgresSettings, SettingsError> {
    let host = non_empty(sources.global("db_host", "localhost")?)?;
    let port: u16 = sources
        .global("db_port", "5432")?
        .integer_in(1..=65535, "must be an integer between 1 and 65535")?;
    let database = non_empty(sources.global("db_name", "postgres")?)?;
    let schema_raw = sources.global("db_schema", "public")?;
    if !is_plain_identifier(&schema_raw.text) {
        return Err(
            schema_raw.invalid("must be 1 to 63 letters, digits or '_', not starting with a digit")
        );
    }
    let user = non_empty(sources.global("db_user", "postgres")?)?;
    let password = sources.global("db_password", "changeme")?.text;

    let max_size_raw = sources.global("db_pool_max_size", "5")?;
    let pool_max_size: u32 =
        max_size_raw.integer_in(1..=i64::from(u32::MAX), "must be a positive integer")?;
    let min_idle_raw = sources.global("db_pool_min_idle_connections", "1")?;
    let pool_min_idle: u32 = min_idle_raw.integer_in(
        0..=i64::from(pool_max_size),
        &format!(
            "must be an integer between 0 and {} ({pool_max_size})",
            max_size_raw.label
        ),
    )?;
    let idle_timeout_millis: u64 = sources
        .global("db_pool_idle_timeout_ms", "60000")?
        .integer_in(1..=i64::MAX, POSITIVE_MILLIS_RULE)?;
    let max_lifetime_millis: u64 = sources
        .global("db_pool_max_lifetime_ms", "120000")?
        .integer_in(1..=i64::MAX, POSITIVE_MILLIS_RULE)?;

    Ok(PostgresSettings {
        host,
        port,
        database,
        schema: schema_raw.text,
        user,
        password,
        pool_max_size,
        pool_min_idle,
        pool_idle_timeout: Duration::from_millis(idle_timeout_millis),
        pool_max_lifetime: Duration::from_millis(max_lifetime_millis),
    })
}

fn non_empty(raw: RawValue) -> Result<String, SettingsError> {
    if raw.trimmed().is_empty() {
        return Err(raw.invalid("must not be empty"));
    }
    Ok(raw.trimmed().to_string())
}

/// `^[A-Za-z_][A-Za-z0-9_]{0,62}$`: safe to splice into DDL without quoting.
fn is_plain_identifier(text: &str) -> bool {
    let mut characters = text.chars();
    let Some(first) = characters.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && text.len() <= 63
        && characters.all(|character| character.is_ascii_alphanumeric() || character == '_')
}

fn load_passivation(sources: &Sources<'_>) -> Result<PassivationSettings, SettingsError> {
    let idle_timeout = sources
        .global("passivation_idle_timeout", "10m")?
        .duration_at_least_or_off(
            Duration::from_secs(1),
            "must be a duration of at least 1s (such as 10m) or off",
        )?;
    let max_active_entities: usize = sources
        .global("max_active_entities", "100000")?
        .integer_in(1..=i64::MAX, "must be a positive integer")?;
    let rest_after = sources
        .global("passivation_rest_after", "2s")?
        .duration_at_least_or_off(
            Duration::from_millis(100),
            "must be a duration of at least 100ms (such as 2s) or off",
        )?;
    Ok(PassivationSettings {
        idle_timeout,
        max_active_entities,
        rest_after,
    })
}

/// `COS_WRITE_SIDE_BREAKER_*`; validated only when enabled, as in the original.
fn load_breaker(sources: &Sources<'_>) -> Result<Option<BreakerSettings>, SettingsError> {
    if !sources
        .global("write_side_breaker_enabled", "false")?
        .boolean()?
    {
        return Ok(None);
    }
    let max_failures: u32 = sources
        .global("write_side_breaker_max_failures", "5")?
        .integer_in(1..=100, "must be an integer between 1 and 100")?;
    let call_raw = sources.global("write_side_breaker_call_timeout", "60s")?;
    let call_timeout = call_raw.duration("must be a duration such as 60s")?;
    if call_timeout.is_zero() || call_timeout > Duration::from_secs(300) {
        return Err(call_raw.invalid("must be more than 0 and at most 5 minutes"));
    }
    let reset_raw = sources.global("write_side_breaker_reset_timeout", "1m")?;
    let reset_timeout = reset_raw.duration("must be a duration such as 1m")?;
    if reset_timeout < Duration::from_secs(1) || reset_timeout > Duration::from_secs(3600) {
        return Err(reset_raw.invalid("must be between 1 second and 1 hour"));
    }
    Ok(Some(BreakerSettings {
        max_failures,
        call_timeout,
        reset_timeout,
    }))
}

fn load_grpc_client(sources: &Sources<'_>) -> Result<GrpcClientSettings, SettingsError> {
    let enabled = sources
        .global("grpc_keepalive_enabled", "false")?
        .boolean()?;
    let duration_rule =
        "must be a positive duration such as 120s (a bare number means milliseconds)";
    let interval_raw = sources.global("grpc_keepalive_time", "120s")?;
    let interval = interval_raw.duration(duration_rule)?;
    let timeout_raw = sources.global("grpc_keepalive_timeout", "60s")?;
    let timeout = timeout_raw.duration(duration_rule)?;
    let while_idle = sources
        .global("grpc_keepalive_without_calls", "true")?
        .boolean()?;
    let pool_size: usize = sources
        .global("grpc_client_pool_size", "1")?
        .integer_in(1..=64, "must be an integer between 1 and 64")?;

    let keepalive = if enabled {
        if interval.is_zero() {
            return Err(interval_raw.invalid(duration_rule));
        }
        if timeout.is_zero() {
            return Err(timeout_raw.invalid(duration_rule));
        }
        Some(KeepaliveSettings {
            interval,
            timeout,
            while_idle,
        })
    } else {
        None
    };
    Ok(GrpcClientSettings {
        keepalive,
        pool_size,
        breaker: load_breaker(sources)?,
    })
}

fn load_logging(sources: &Sources<'_>) -> Result<LoggingSettings, SettingsError> {
    let level_raw = sources.logging_value("LOG_LEVEL", "log_level", "info")?;
    let level = level_raw.trimmed();
    if level.is_empty() {
        return Err(level_raw.invalid(
            "must not be empty; use a level such as info or a filter such as info,cos_core=debug",
        ));
    }
    // Operators coming from logback write levels in capitals; EnvFilter directives are lower-case.
    let level = match level.to_ascii_lowercase().as_str() {
        "trace" | "debug" | "info" | "warn" | "error" | "off" => level.to_ascii_lowercase(),
        "warning" => "warn".to_string(),
        _ => level.to_string(),
    };

    let style_raw = sources.logging_value("LOG_STYLE", "log_style", "JSON")?;
    let style = match style_raw.trimmed().to_ascii_uppercase().as_str() {
        "JSON" => LogStyle::Json,
        "SIMPLE" => LogStyle::Simple,
        "STANDARD" => LogStyle::Standard,
        _ => return Err(style_raw.invalid("must be JSON, SIMPLE or STANDARD")),
    };
    Ok(LoggingSettings { level, style })
}

#[cfg(test)]
mod test_support {
    use std::collections::HashMap;

    use super::LoadOptions;

    /// Options with only the given environment.
    pub(super) fn options(environment: &[(&str, &str)]) -> LoadOptions {
        LoadOptions {
            config_file: None,
            environment: environment
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect::<HashMap<_, _>>(),
        }
    }

    /// Options with the given environment and a config file with the given extension and content; keep the
    /// directory alive while loading.
    pub(super) fn options_with_file(
        environment: &[(&str, &str)],
        extension: &str,
        content: &str,
    ) -> (tempfile::TempDir, LoadOptions) {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join(format!("cos.{extension}"));
        std::fs::write(&path, content).expect("config file written");
        let mut options = options(environment);
        options.config_file = Some(path);
        (directory, options)
    }
}

#[cfg(test)]
mod tests;
