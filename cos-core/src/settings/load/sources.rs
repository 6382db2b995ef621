//! Where setting values come from: an optional YAML or TOML file layered under the `COS_*` environment with
//! the `config` crate. Also knows every accepted key, so misspelt file keys fail and unknown variables warn.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, ConfigError, Environment, File, FileFormat, Map, Source, Value, ValueKind};

use super::parse::RawValue;
use super::{LoadOptions, SettingsError};

/// Keys that belong to one entity type: allowed inside an `entity_types` table and, as the values every type
/// falls back to, at the top level of the file and as `COS_<KEY>` variables.
pub(super) const ENTITY_TYPE_KEYS: &[&str] = &[
    "write_side_protocol",
    "write_side_host",
    "write_side_port",
    "write_side_use_tls",
    "grpc_calls_timeout",
    "disable_snapshot",
    "snapshot_frequency",
    "num_snapshots_to_retain",
    "journal_logical_deletion",
    "write_side_proto_validation",
    "write_side_event_protos",
    "write_side_state_protos",
    "write_side_propagated_headers",
    "write_persisted_headers",
];

/// Node-wide keys: `COS_<KEY>` in the environment, `<key>` at the top level of the file.
const GLOBAL_KEYS: &[&str] = &[
    "service_name",
    "deployment_mode",
    "address",
    "port",
    "server_protocol",
    "num_shards",
    "command_handler_timeout",
    "store",
    "data_dir",
    "db_host",
    "db_port",
    "db_name",
    "db_schema",
    "db_user",
    "db_password",
    "db_pool_max_size",
    "db_pool_min_idle_connections",
    "db_pool_idle_timeout_ms",
    "db_pool_max_lifetime_ms",
    "grpc_keepalive_enabled",
    "grpc_keepalive_time",
    "grpc_keepalive_timeout",
    "grpc_keepalive_without_calls",
    "grpc_client_pool_size",
    "passivation_idle_timeout",
    "max_active_entities",
    "passivation_rest_after",
    "default_entity_type",
    "write_side_breaker_enabled",
    "write_side_breaker_max_failures",
    "write_side_breaker_call_timeout",
    "write_side_breaker_reset_timeout",
    "cluster_enabled",
    "cluster_node_name",
    "cluster_host",
    "cluster_port",
    "cluster_secret",
    "cluster_seeds",
    "cluster_heartbeat_interval",
    "cluster_unreachable_after",
    "cluster_down_after",
    "replica_count",
    "kubernetes_app_label",
];

/// Keys only the file has: the entity type list and the two logging settings (whose variables lack `COS_`).
const FILE_ONLY_KEYS: &[&str] = &["entity_types", "log_level", "log_style"];

/// `COS_*` variables read by other parts of the service (or reserved for later); they never warn.
const ENV_PREFIXES_READ_ELSEWHERE: &[&str] = &["COS_READ_SIDE_", "COS_SUBSCRIPTION_"];
const ENV_NAMES_READ_ELSEWHERE: &[&str] = &[
    "COS_MIGRATIONS_INITIAL_VERSION",
    "COS_CONFIG_FILE",
    "COS_HTTP_ADDRESS",
    "COS_HTTP_PORT",
];

/// The environment variable of a node-wide or per-type key (`num_shards` → `COS_NUM_SHARDS`).
pub(super) fn variable_name(key: &str) -> String {
    format!("COS_{}", key.to_ascii_uppercase())
}

/// A parsed config file: its path (for errors) and its top-level table exactly as written.
pub(super) struct ConfigFile {
    pub(super) path: PathBuf,
    pub(super) root: Map<String, Value>,
}

/// The file and environment of one load, merged; env wins over the file.
pub(super) struct Sources<'a> {
    environment: &'a HashMap<String, String>,
    file: Option<ConfigFile>,
    merged: Config,
    /// Config key (`num_shards`) → the variable that set it, as spelt in the environment.
    variable_names: HashMap<String, String>,
}

impl<'a> Sources<'a> {
    /// Reads and checks the file (if any), then layers the environment over it.
    pub(super) fn read(options: &'a LoadOptions) -> Result<Self, SettingsError> {
        let mut builder = Config::builder();
        let mut file = None;
        if let Some(path) = &options.config_file {
            let (text, format) = read_file_text(path)?;
            let root = File::from_str(&text, format)
                .collect()
                .map_err(|error| file_error(path, &error.to_string()))?;
            check_file_keys(path, &root)?;
            builder = builder.add_source(File::from_str(&text, format));
            file = Some(ConfigFile {
                path: path.clone(),
                root,
            });
        }

        let mut variable_names = HashMap::new();
        let mut config_environment = HashMap::new();
        for (name, value) in &options.environment {
            if let Some(key) = config_key_of_variable(name) {
                variable_names.insert(key, name.clone());
                config_environment.insert(name.clone(), value.clone());
            }
        }
        // No separator: `COS_DB_HOST` becomes the flat key `db_host`, like the file's keys.
        let environment_source = Environment::with_prefix("COS")
            .prefix_separator("_")
            .source(Some(config_environment.into_iter().collect()));
        let merged =
            builder
                .add_source(environment_source)
                .build()
                .map_err(|error| match &options.config_file {
                    Some(path) => file_error(path, &error.to_string()),
                    None => SettingsError::Environment {
                        reason: one_line(&error.to_string()),
                    },
                })?;

        Ok(Self {
            environment: &options.environment,
            file,
            merged,
            variable_names,
        })
    }

    /// The config file, when one was given.
    pub(super) fn file(&self) -> Option<&ConfigFile> {
        self.file.as_ref()
    }

    /// A node-wide value from the environment or the file's top level; `None` when neither sets it.
    pub(super) fn global_opt(&self, key: &str) -> Result<Option<RawValue>, SettingsError> {
        let label = self
            .variable_names
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.to_string());
        match self.merged.get::<Value>(key) {
            Ok(value) => raw_from_value(label, &value),
            Err(ConfigError::NotFound(_)) => Ok(None),
            Err(error) => Err(SettingsError::Invalid {
                name: label,
                value: String::new(),
                rule: one_line(&error.to_string()),
            }),
        }
    }

    /// A node-wide value, or `default` reported under its variable name.
    pub(super) fn global(&self, key: &str, default: &str) -> Result<RawValue, SettingsError> {
        let value = self.global_opt(key)?;
        Ok(value.unwrap_or_else(|| RawValue::new(variable_name(key), default)))
    }

    /// `LOG_LEVEL` / `LOG_STYLE`: the unprefixed variable wins, then the file key, then `default`.
    pub(super) fn logging_value(
        &self,
        variable: &str,
        file_key: &str,
        default: &str,
    ) -> Result<RawValue, SettingsError> {
        if let Some(value) = self.environment.get(variable) {
            return Ok(RawValue::new(variable, value.as_str()));
        }
        if let Some(value) = self.file.as_ref().and_then(|file| file.root.get(file_key))
            && let Some(raw) = raw_from_value(file_key.to_string(), value)?
        {
            return Ok(raw);
        }
        Ok(RawValue::new(variable, default))
    }

    /// One line per `COS_*` variable that nothing reads, sorted, so typos are visible without failing start-up.
    pub(super) fn warnings(&self) -> Vec<String> {
        let mut unknown: Vec<&String> = self
            .environment
            .keys()
            .filter(|name| name.to_ascii_uppercase().starts_with("COS_"))
            .filter(|name| !is_known_variable(name))
            .collect();
        unknown.sort();
        unknown
            .into_iter()
            .map(|name| format!("unknown environment variable {name} is ignored"))
            .collect()
    }
}

/// A scalar config value as text; `None` for an explicit null (treated as unset); lists and tables are errors.
pub(super) fn raw_from_value(
    label: String,
    value: &Value,
) -> Result<Option<RawValue>, SettingsError> {
    match &value.kind {
        ValueKind::Nil => Ok(None),
        ValueKind::Table(_) | ValueKind::Array(_) => Err(SettingsError::Invalid {
            name: label,
            value: describe_value(value),
            rule: "must be a single value, not a list or table".to_string(),
        }),
        _ => {
            let text = value
                .clone()
                .into_string()
                .map_err(|error| SettingsError::Invalid {
                    name: label.clone(),
                    value: one_line(&value.to_string()),
                    rule: one_line(&error.to_string()),
                })?;
            Ok(Some(RawValue::new(label, text)))
        }
    }
}

/// How a value is echoed in an error: scalars as text, lists and tables by kind (their contents can be long).
pub(super) fn describe_value(value: &Value) -> String {
    match &value.kind {
        ValueKind::Table(_) => "<table>".to_string(),
        ValueKind::Array(_) => "<list>".to_string(),
        _ => one_line(&value.to_string()),
    }
}

/// Error text from libraries may span lines; ours must not.
pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn file_error(path: &Path, reason: &str) -> SettingsError {
    SettingsError::ConfigFile {
        path: path.to_path_buf(),
        reason: one_line(reason),
    }
}

/// Reads the file and picks its format from the extension (`.yaml`, `.yml` or `.toml`).
fn read_file_text(path: &Path) -> Result<(String, FileFormat), SettingsError> {
    let extension = path
        .extension()
        .map(|extension| extension.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let format = match extension.as_str() {
        "yaml" | "yml" => FileFormat::Yaml,
        "toml" => FileFormat::Toml,
        _ => {
            return Err(file_error(
                path,
                "unsupported file extension; use .yaml, .yml or .toml",
            ));
        }
    };
    let text = std::fs::read_to_string(path).map_err(|error| {
        let reason = match error.kind() {
            std::io::ErrorKind::NotFound => "file not found".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => error.to_string(),
        };
        file_error(path, &reason)
    })?;
    Ok((text, format))
}

/// Rejects top-level keys nothing reads, so a misspelt key fails instead of being silently ignored.
fn check_file_keys(path: &Path, root: &Map<String, Value>) -> Result<(), SettingsError> {
    let mut keys: Vec<&String> = root.keys().collect();
    keys.sort();
    for key in keys {
        let key = key.as_str();
        let known = GLOBAL_KEYS.contains(&key)
            || ENTITY_TYPE_KEYS.contains(&key)
            || FILE_ONLY_KEYS.contains(&key);
        if known {
            continue;
        }
        let variable = variable_name(key);
        let hint = if is_read_elsewhere(&variable) {
            format!("not supported in the config file yet; set {variable} in the environment")
        } else {
            "no such setting; file keys are the COS_* variable names in snake_case without the prefix, such as num_shards".to_string()
        };
        return Err(SettingsError::UnknownFileKey {
            key: key.to_string(),
            path: path.to_path_buf(),
            hint,
        });
    }
    Ok(())
}

/// The config key a `COS_*` variable maps to, if it is one a file key could be (letters, digits, `_`).
fn config_key_of_variable(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    let key = lower.strip_prefix("cos_")?;
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || character == '_');
    plain.then(|| key.to_string())
}

fn is_read_elsewhere(upper_name: &str) -> bool {
    ENV_NAMES_READ_ELSEWHERE.contains(&upper_name)
        || ENV_PREFIXES_READ_ELSEWHERE
            .iter()
            .any(|prefix| upper_name.starts_with(prefix))
}

fn is_known_variable(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("COS_READ_SIDE_") {
        return crate::readside::is_read_side_variable(&upper);
    }
    if is_read_elsewhere(&upper) {
        return true;
    }
    let Some(key) = upper.strip_prefix("COS_") else {
        return false;
    };
    let key = key.to_ascii_lowercase();
    GLOBAL_KEYS.contains(&key.as_str()) || ENTITY_TYPE_KEYS.contains(&key.as_str())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{options, options_with_file};
    use super::*;

    #[test]
    fn environment_overrides_the_file() {
        let (_dir, options) = options_with_file(
            &[("COS_NUM_SHARDS", "32")],
            "yaml",
            "num_shards: 8\nservice_name: from-file\n",
        );
        let sources = Sources::read(&options).expect("sources");
        let shards = sources.global("num_shards", "16").expect("value");
        assert_eq!(shards, RawValue::new("COS_NUM_SHARDS", "32"));
        let name = sources.global("service_name", "x").expect("value");
        assert_eq!(name, RawValue::new("service_name", "from-file"));
        let absent = sources.global("db_name", "postgres").expect("value");
        assert_eq!(absent, RawValue::new("COS_DB_NAME", "postgres"));
    }

    #[test]
    fn double_underscore_read_side_variables_do_not_break_loading_or_warn() {
        let options = options(&[
            ("COS_READ_SIDE_CONFIG__HOST__RS1", "localhost"),
            ("COS_READ_SIDE_CONFIG__PORT__read-side-2", "50052"),
            ("COS_READ_SIDE_CONFIG____RS1", "x"),
            ("COS_NUM_SHARD", "8"),
            ("COS_HTTP_PORT", "9001"),
        ]);
        let sources = Sources::read(&options).expect("sources");
        assert_eq!(
            sources.warnings(),
            vec!["unknown environment variable COS_NUM_SHARD is ignored".to_string()]
        );
    }

    #[test]
    fn null_file_values_count_as_unset() {
        let (_dir, options) = options_with_file(&[], "yaml", "db_host: ~\n");
        let sources = Sources::read(&options).expect("sources");
        assert_eq!(sources.global_opt("db_host").expect("value"), None);
    }

    #[test]
    fn lists_where_a_value_is_expected_are_refused() {
        let (_dir, options) = options_with_file(&[], "yaml", "db_host: [a, b]\n");
        let sources = Sources::read(&options).expect("sources");
        let error = sources.global_opt("db_host").expect_err("a list");
        assert!(
            error
                .to_string()
                .ends_with("must be a single value, not a list or table"),
            "{error}"
        );
    }

    #[test]
    fn settings_read_elsewhere_are_not_accepted_in_the_file_yet() {
        let (_dir, options) = options_with_file(&[], "yaml", "read_side_enabled: true\n");
        let error = Sources::read(&options).err().expect("refused");
        assert!(
            error.to_string().ends_with(
                "not supported in the config file yet; set COS_READ_SIDE_ENABLED in the environment"
            ),
            "{error}"
        );
    }

    #[test]
    fn malformed_files_report_one_line() {
        let (_dir, options) = options_with_file(&[], "toml", "num_shards = [\n\n");
        let error = Sources::read(&options).err().expect("refused");
        let text = error.to_string();
        assert!(text.starts_with("cannot read config file "), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
}
