//! Read sides from `COS_READ_SIDE_CONFIG__<SETTING>__<ID>` variables. Unlike the original, ids and protocols
//! are validated here too and unparsable values are errors, not silent defaults.

use std::collections::{BTreeMap, HashMap};

use super::config::{RawEntityTypes, RawReadSide, RawSetting};
use super::values::is_valid_id;
use super::{Located, ReadSideConfigError};

/// Every variable starting with this describes a read side.
const PREFIX: &str = "COS_READ_SIDE_CONFIG__";

/// The settings a variable may name, in the order the error message lists them.
const SETTINGS: [&str; 9] = [
    "PROTOCOL",
    "HOST",
    "PORT",
    "USE_TLS",
    "TIMEOUT",
    "AUTO_START",
    "ENABLED",
    "FAILURE_POLICY",
    "ENTITY_TYPES",
];

/// The read sides the variables describe, ordered by id so errors and results do not depend on hash order.
pub(super) fn load_variables(
    environment: &HashMap<String, String>,
) -> Result<Vec<Located>, ReadSideConfigError> {
    let mut variables: Vec<(&String, &String)> = environment
        .iter()
        .filter(|(name, _)| name.starts_with(PREFIX))
        .collect();
    variables.sort();
    let mut read_sides: BTreeMap<String, RawReadSide> = BTreeMap::new();
    for (variable, value) in variables {
        let (setting, id) = split_variable(variable)?;
        let read_side = read_sides
            .entry(id.to_string())
            .or_insert_with(|| RawReadSide {
                id: id.to_string(),
                ..RawReadSide::default()
            });
        assign(read_side, variable, setting, value)?;
    }
    let mut located = Vec::with_capacity(read_sides.len());
    for (id, raw) in read_sides {
        let config = raw.build("HOST", "PORT")?;
        located.push(Located {
            config,
            origin: format!("{PREFIX}*__{id}"),
        });
    }
    Ok(located)
}

/// `<SETTING>__<ID>` after the prefix. The id is everything after the first `__`, so ids containing `__`
/// (valid by the id rule) work, which the original's split refused.
fn split_variable(variable: &str) -> Result<(&str, &str), ReadSideConfigError> {
    let malformed = || ReadSideConfigError::MalformedVariable {
        variable: variable.to_string(),
    };
    let rest = variable.strip_prefix(PREFIX).ok_or_else(malformed)?;
    let (setting, id) = rest.split_once("__").ok_or_else(malformed)?;
    if setting.is_empty() || id.is_empty() {
        return Err(malformed());
    }
    if !is_valid_id(id) {
        return Err(ReadSideConfigError::InvalidId {
            id: id.to_string(),
            origin: variable.to_string(),
        });
    }
    Ok((setting, id))
}

/// Stores one variable's value under its setting.
fn assign(
    read_side: &mut RawReadSide,
    variable: &str,
    setting: &str,
    value: &str,
) -> Result<(), ReadSideConfigError> {
    let raw = Some(RawSetting::new(setting, value.trim()));
    match setting {
        "PROTOCOL" => read_side.protocol = raw,
        "HOST" => read_side.host = raw,
        "PORT" => read_side.port = raw,
        "USE_TLS" => read_side.use_tls = raw,
        "TIMEOUT" => read_side.timeout = raw,
        "AUTO_START" => read_side.auto_start = raw,
        "ENABLED" => read_side.enabled = raw,
        "FAILURE_POLICY" => read_side.failure_policy = raw,
        "ENTITY_TYPES" => {
            // Blank means "not set", like every other optional setting.
            if !value.trim().is_empty() {
                read_side.entity_types = Some(RawEntityTypes::from_csv(setting, value.trim()));
            }
        }
        _ => {
            return Err(ReadSideConfigError::UnknownSetting {
                variable: variable.to_string(),
                setting: setting.to_string(),
                known: SETTINGS.join(", "),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::readside::{FailurePolicy, ReadSideConfig, ReadSideProtocol};

    fn environment(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn load(pairs: &[(&str, &str)]) -> Result<Vec<ReadSideConfig>, ReadSideConfigError> {
        let located = load_variables(&environment(pairs))?;
        Ok(located.into_iter().map(|located| located.config).collect())
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        match load(pairs) {
            Ok(configs) => panic!("expected an error, got {configs:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn reader_spec_env_parses_every_setting_of_three_read_sides() {
        let configs = load(&[
            ("COS_READ_SIDE_CONFIG__HOST__RS1", "rs1.internal"),
            ("COS_READ_SIDE_CONFIG__PORT__RS1", "50051"),
            ("COS_READ_SIDE_CONFIG__USE_TLS__RS1", "true"),
            ("COS_READ_SIDE_CONFIG__AUTO_START__RS1", "true"),
            ("COS_READ_SIDE_CONFIG__HOST__RS2", "rs2.internal"),
            ("COS_READ_SIDE_CONFIG__PORT__RS2", "8080"),
            ("COS_READ_SIDE_CONFIG__PROTOCOL__RS2", "HTTP"),
            ("COS_READ_SIDE_CONFIG__TIMEOUT__RS2", "1500"),
            ("COS_READ_SIDE_CONFIG__AUTO_START__RS2", "false"),
            ("COS_READ_SIDE_CONFIG__ENABLED__RS2", "false"),
            ("COS_READ_SIDE_CONFIG__FAILURE_POLICY__RS2", "replay-skip"),
            ("COS_READ_SIDE_CONFIG__HOST__RS3", "rs3.internal"),
            ("COS_READ_SIDE_CONFIG__PORT__RS3", "50053"),
            ("COS_READ_SIDE_CONFIG__PROTOCOL__RS3", "grpc"),
            ("COS_READ_SIDE_CONFIG__FAILURE_POLICY__RS3", "SKIP"),
            (
                "COS_READ_SIDE_CONFIG__ENTITY_TYPES__RS3",
                "accounts, orders,accounts",
            ),
        ])
        .expect("valid variables");
        let expected = vec![
            ReadSideConfig {
                id: "RS1".to_string(),
                protocol: ReadSideProtocol::Grpc,
                host: "rs1.internal".to_string(),
                port: 50051,
                use_tls: true,
                timeout: Duration::from_millis(30_000),
                auto_start: true,
                enabled: true,
                failure_policy: FailurePolicy::Stop,
                entity_types: None,
            },
            ReadSideConfig {
                id: "RS2".to_string(),
                protocol: ReadSideProtocol::Http,
                host: "rs2.internal".to_string(),
                port: 8080,
                use_tls: false,
                timeout: Duration::from_millis(1500),
                auto_start: false,
                enabled: false,
                failure_policy: FailurePolicy::ReplaySkip {
                    retries: 5,
                    interval: Duration::from_secs(5),
                },
                entity_types: None,
            },
            ReadSideConfig {
                id: "RS3".to_string(),
                protocol: ReadSideProtocol::Grpc,
                host: "rs3.internal".to_string(),
                port: 50053,
                use_tls: false,
                timeout: Duration::from_millis(30_000),
                auto_start: true,
                enabled: true,
                failure_policy: FailurePolicy::Skip,
                entity_types: Some(vec!["accounts".to_string(), "orders".to_string()]),
            },
        ];
        assert_eq!(configs, expected);
    }

    #[test]
    fn reader_spec_no_env_variables_is_no_read_side_and_no_error() {
        let configs = load(&[("COS_READ_SIDE_CONFIG", ""), ("PATH", "/bin")]).expect("no error");
        assert!(configs.is_empty());
    }

    #[test]
    fn reader_spec_variable_without_id_is_malformed() {
        assert_eq!(
            error(&[("COS_READ_SIDE_CONFIG__HOST__", "localhost")]),
            "COS_READ_SIDE_CONFIG__HOST__ is not <SETTING>__<ID>"
        );
        assert_eq!(
            error(&[("COS_READ_SIDE_CONFIG__HOST", "localhost")]),
            "COS_READ_SIDE_CONFIG__HOST is not <SETTING>__<ID>"
        );
    }

    #[test]
    fn reader_spec_variable_without_setting_is_malformed() {
        assert_eq!(
            error(&[("COS_READ_SIDE_CONFIG____RS1", "localhost")]),
            "COS_READ_SIDE_CONFIG____RS1 is not <SETTING>__<ID>"
        );
    }

    #[test]
    fn reader_spec_missing_host_names_the_read_side() {
        assert_eq!(
            error(&[
                ("COS_READ_SIDE_CONFIG__HOST__RS1", "localhost"),
                ("COS_READ_SIDE_CONFIG__PORT__RS1", "1"),
                ("COS_READ_SIDE_CONFIG__PORT__RS2", "2"),
            ]),
            "read side \"RS2\": missing HOST"
        );
        assert_eq!(
            error(&[
                ("COS_READ_SIDE_CONFIG__HOST__rs-2", " "),
                ("COS_READ_SIDE_CONFIG__PORT__rs-2", "2"),
            ]),
            "read side \"rs-2\": missing HOST"
        );
    }

    #[test]
    fn reader_spec_missing_port_names_the_read_side() {
        assert_eq!(
            error(&[("COS_READ_SIDE_CONFIG__HOST__RS2", "localhost")]),
            "read side \"RS2\": missing PORT"
        );
    }

    #[test]
    fn reader_spec_unknown_setting_lists_the_known_ones() {
        assert_eq!(
            error(&[("COS_READ_SIDE_CONFIG__GRPC_SOME_SETTING__RS1", "x")]),
            "COS_READ_SIDE_CONFIG__GRPC_SOME_SETTING__RS1: GRPC_SOME_SETTING is not a read side setting \
             (use PROTOCOL, HOST, PORT, USE_TLS, TIMEOUT, AUTO_START, ENABLED, FAILURE_POLICY, ENTITY_TYPES)"
        );
    }

    #[test]
    fn env_ids_are_validated_like_yaml_ids() {
        assert_eq!(
            error(&[("COS_READ_SIDE_CONFIG__HOST__rs-", "localhost")]),
            "read side id \"rs-\" in COS_READ_SIDE_CONFIG__HOST__rs- must be letters, digits, '_' and '-', \
             starting and ending with a letter or digit"
        );
    }

    #[test]
    fn env_ids_may_contain_double_underscores() {
        let configs = load(&[
            ("COS_READ_SIDE_CONFIG__HOST__read__side--23", "localhost"),
            ("COS_READ_SIDE_CONFIG__PORT__read__side--23", "9000"),
        ])
        .expect("valid");
        assert_eq!(configs[0].id, "read__side--23");
    }

    #[test]
    fn env_unparsable_values_are_errors_not_defaults() {
        let base = [
            ("COS_READ_SIDE_CONFIG__HOST__RS1", "localhost"),
            ("COS_READ_SIDE_CONFIG__PORT__RS1", "9000"),
        ];
        let cases = [
            (
                ("COS_READ_SIDE_CONFIG__PORT__RS1", "abc"),
                "read side \"RS1\": PORT \"abc\" must be an integer between 1 and 65535",
            ),
            (
                ("COS_READ_SIDE_CONFIG__PORT__RS1", "0"),
                "read side \"RS1\": PORT \"0\" must be an integer between 1 and 65535",
            ),
            (
                ("COS_READ_SIDE_CONFIG__PORT__RS1", "65536"),
                "read side \"RS1\": PORT \"65536\" must be an integer between 1 and 65535",
            ),
            (
                ("COS_READ_SIDE_CONFIG__AUTO_START__RS1", "maybe"),
                "read side \"RS1\": AUTO_START \"maybe\" must be true or false (yes/no and on/off are accepted too)",
            ),
            (
                ("COS_READ_SIDE_CONFIG__ENABLED__RS1", "1"),
                "read side \"RS1\": ENABLED \"1\" must be true or false (yes/no and on/off are accepted too)",
            ),
            (
                ("COS_READ_SIDE_CONFIG__USE_TLS__RS1", "tls"),
                "read side \"RS1\": USE_TLS \"tls\" must be true or false (yes/no and on/off are accepted too)",
            ),
            (
                ("COS_READ_SIDE_CONFIG__TIMEOUT__RS1", "30s"),
                "read side \"RS1\": TIMEOUT \"30s\" must be a positive whole number of milliseconds",
            ),
            (
                ("COS_READ_SIDE_CONFIG__PROTOCOL__RS1", "kafka"),
                "read side \"RS1\": PROTOCOL \"kafka\" must be grpc or http",
            ),
            (
                ("COS_READ_SIDE_CONFIG__FAILURE_POLICY__RS1", "RETRY"),
                "read side \"RS1\": FAILURE_POLICY \"RETRY\" must be STOP, SKIP, REPLAY_STOP or REPLAY_SKIP \
                 (or empty for STOP)",
            ),
            (
                ("COS_READ_SIDE_CONFIG__ENTITY_TYPES__RS1", "accounts,Orders"),
                "read side \"RS1\": ENTITY_TYPES \"accounts,Orders\" must list entity types of 1 to 64 \
                 characters from a-z, 0-9, '_' and '-' (\"Orders\" is not one)",
            ),
            (
                ("COS_READ_SIDE_CONFIG__ENTITY_TYPES__RS1", " , "),
                "read side \"RS1\": ENTITY_TYPES \",\" must name at least one entity type \
                 (leave it out to receive all of them)",
            ),
        ];
        for (override_pair, expected) in cases {
            let mut pairs: Vec<(&str, &str)> = base.to_vec();
            pairs.retain(|(name, _)| *name != override_pair.0);
            pairs.push(override_pair);
            assert_eq!(error(&pairs), expected);
        }
    }

    #[test]
    fn env_blank_optional_values_take_their_defaults() {
        let configs = load(&[
            ("COS_READ_SIDE_CONFIG__HOST__RS1", "localhost"),
            ("COS_READ_SIDE_CONFIG__PORT__RS1", " 9000 "),
            ("COS_READ_SIDE_CONFIG__FAILURE_POLICY__RS1", ""),
            ("COS_READ_SIDE_CONFIG__ENTITY_TYPES__RS1", ""),
            ("COS_READ_SIDE_CONFIG__AUTO_START__RS1", ""),
        ])
        .expect("valid");
        assert_eq!(configs[0].port, 9000);
        assert_eq!(configs[0].failure_policy, FailurePolicy::Stop);
        assert_eq!(configs[0].entity_types, None);
        assert!(configs[0].auto_start);
    }
}
