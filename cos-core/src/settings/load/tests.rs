//! Specifications of node-wide settings: defaults, each rule's one-line error, and file/env layering.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::test_support::{options, options_with_file};
use super::*;
use crate::settings::SnapshotSettings;

const HANDLER: [(&str, &str); 2] = [
    ("COS_WRITE_SIDE_HOST", "localhost"),
    ("COS_WRITE_SIDE_PORT", "50051"),
];

fn with_handler(extra: &[(&'static str, &'static str)]) -> LoadOptions {
    let mut environment = HANDLER.to_vec();
    environment.extend_from_slice(extra);
    options(&environment)
}

fn load_error(options: &LoadOptions) -> String {
    Settings::load(options)
        .expect_err("settings refused")
        .to_string()
}

#[test]
fn defaults_load_when_only_the_write_handler_is_set() {
    let (settings, warnings) = Settings::load_with_warnings(&with_handler(&[])).expect("settings");
    assert!(warnings.is_empty());
    assert_eq!(settings.service_name, "chiefofstate");
    assert_eq!(settings.deployment_mode, DeploymentMode::Docker);
    assert_eq!(
        settings.grpc_listen_address,
        "0.0.0.0:9000".parse::<SocketAddr>().expect("address")
    );
    assert_eq!(settings.num_shards, 16);
    assert_eq!(settings.command_handler_timeout, Duration::from_secs(5));
    assert_eq!(
        settings.store,
        StoreSettings::Sqlite(SqliteSettings {
            data_dir: PathBuf::from("./cos-data")
        })
    );
    assert_eq!(
        settings.passivation,
        PassivationSettings {
            idle_timeout: Some(Duration::from_secs(600)),
            max_active_entities: 100_000,
            rest_after: Some(Duration::from_secs(2)),
        }
    );
    assert_eq!(
        settings.grpc_client,
        GrpcClientSettings {
            keepalive: None,
            pool_size: 1,
            breaker: None,
        }
    );
    assert_eq!(
        settings.logging,
        LoggingSettings {
            level: "info".to_string(),
            style: LogStyle::Json
        }
    );

    let default_type = &settings.entity_types.default_type;
    assert_eq!(default_type.as_str(), "default");
    let handler = &settings.entity_types.types[default_type];
    assert_eq!(handler.write_handler.host, "localhost");
    assert_eq!(handler.write_handler.port, 50051);
    assert!(!handler.write_handler.use_tls);
    assert_eq!(handler.write_handler.call_timeout, Duration::from_secs(60));
    assert_eq!(
        handler.snapshots,
        SnapshotSettings {
            enabled: true,
            frequency: 100,
            retain: 2,
            delete_events: false
        }
    );
    assert!(!handler.validation.enabled);
    assert!(handler.propagated_headers.is_empty());
    assert!(handler.persisted_headers.is_empty());
}

#[test]
fn service_name_must_be_1_to_64_characters() {
    assert_eq!(
        load_error(&with_handler(&[("COS_SERVICE_NAME", "")])),
        "invalid setting COS_SERVICE_NAME=\"\": must be 1 to 64 characters long"
    );
    let long_name: &'static str = Box::leak("x".repeat(65).into_boxed_str());
    assert!(Settings::load(&with_handler(&[("COS_SERVICE_NAME", long_name)])).is_err());
    let settings = Settings::load(&with_handler(&[("COS_SERVICE_NAME", "bank")])).expect("ok");
    assert_eq!(settings.service_name, "bank");
}

#[test]
fn deployment_mode_is_case_insensitive_and_unknown_modes_are_refused() {
    let settings =
        Settings::load(&with_handler(&[("COS_DEPLOYMENT_MODE", "Kubernetes")])).expect("ok");
    assert_eq!(settings.deployment_mode, DeploymentMode::Kubernetes);
    assert_eq!(
        load_error(&with_handler(&[("COS_DEPLOYMENT_MODE", "swarm")])),
        "invalid setting COS_DEPLOYMENT_MODE=\"swarm\": unrecognized deployment mode; use docker or kubernetes"
    );
}

#[test]
fn listen_address_must_be_an_ip_and_port_zero_is_allowed() {
    let settings =
        Settings::load(&with_handler(&[("COS_ADDRESS", "::1"), ("COS_PORT", "0")])).expect("ok");
    assert_eq!(
        settings.grpc_listen_address,
        "[::1]:0".parse::<SocketAddr>().expect("address")
    );
    assert_eq!(
        load_error(&with_handler(&[("COS_ADDRESS", "localhost")])),
        "invalid setting COS_ADDRESS=\"localhost\": must be an IP address such as 0.0.0.0 or ::"
    );
    assert_eq!(
        load_error(&with_handler(&[("COS_PORT", "65536")])),
        "invalid setting COS_PORT=\"65536\": must be an integer between 0 and 65535"
    );
}

#[test]
fn http_server_protocol_is_not_available_yet() {
    assert!(Settings::load(&with_handler(&[("COS_SERVER_PROTOCOL", "GRPC")])).is_ok());
    assert_eq!(
        load_error(&with_handler(&[("COS_SERVER_PROTOCOL", "both")])),
        "invalid setting COS_SERVER_PROTOCOL=\"both\": the HTTP API is not available in this build yet; use grpc"
    );
    assert!(
        load_error(&with_handler(&[("COS_SERVER_PROTOCOL", "ftp")]))
            .starts_with("invalid setting COS_SERVER_PROTOCOL=\"ftp\": must be grpc")
    );
}

#[test]
fn num_shards_must_be_a_power_of_two() {
    for bad in ["5", "0", "20000", "16384", "-16", "sixteen"] {
        assert_eq!(
            load_error(&with_handler(&[("COS_NUM_SHARDS", bad)])),
            format!(
                "invalid setting COS_NUM_SHARDS=\"{bad}\": must be a power of two between 1 and 10000"
            )
        );
    }
    for good in [("1", 1), ("2", 2), ("8192", 8192)] {
        let settings = Settings::load(&with_handler(&[("COS_NUM_SHARDS", good.0)])).expect("ok");
        assert_eq!(settings.num_shards, good.1);
    }
}

#[test]
fn command_handler_timeout_must_be_1_to_300_whole_seconds() {
    for bad in ["0", "301", "5s"] {
        assert_eq!(
            load_error(&with_handler(&[("COS_COMMAND_HANDLER_TIMEOUT", bad)])),
            format!(
                "invalid setting COS_COMMAND_HANDLER_TIMEOUT=\"{bad}\": must be a whole number of seconds between 1 and 300"
            )
        );
    }
    let settings =
        Settings::load(&with_handler(&[("COS_COMMAND_HANDLER_TIMEOUT", "300")])).expect("ok");
    assert_eq!(settings.command_handler_timeout, Duration::from_secs(300));
}

#[test]
fn store_auto_selects_postgres_when_db_host_is_set() {
    let settings = Settings::load(&with_handler(&[
        ("COS_DB_HOST", "db.internal"),
        ("COS_DB_PORT", "5433"),
        ("COS_DB_SCHEMA", "cos_v2"),
        ("COS_DB_POOL_MAX_SIZE", "10"),
    ]))
    .expect("ok");
    let StoreSettings::Postgres(postgres) = settings.store else {
        panic!("expected postgres, got {:?}", settings.store);
    };
    assert_eq!(
        postgres,
        PostgresSettings {
            host: "db.internal".to_string(),
            port: 5433,
            database: "postgres".to_string(),
            schema: "cos_v2".to_string(),
            user: "postgres".to_string(),
            password: "changeme".to_string(),
            pool_max_size: 10,
            pool_min_idle: 1,
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_lifetime: Duration::from_secs(120),
        }
    );
}

#[test]
fn store_auto_selects_postgres_when_the_file_sets_db_host() {
    let (_dir, options) = options_with_file(&HANDLER, "yaml", "db_host: db.internal\n");
    let settings = Settings::load(&options).expect("ok");
    assert!(matches!(settings.store, StoreSettings::Postgres(ref p) if p.host == "db.internal"));
}

#[test]
fn store_can_be_forced_either_way() {
    let settings = Settings::load(&with_handler(&[
        ("COS_STORE", "SQLite"),
        ("COS_DB_HOST", "db.internal"),
        ("COS_DB_PORT", "not checked for sqlite"),
        ("COS_DATA_DIR", "/var/lib/cos"),
    ]))
    .expect("ok");
    let StoreSettings::Sqlite(sqlite) = settings.store else {
        panic!("expected sqlite");
    };
    assert_eq!(sqlite.database_file(), PathBuf::from("/var/lib/cos/cos.db"));

    let settings = Settings::load(&with_handler(&[("COS_STORE", "postgres")])).expect("ok");
    assert!(matches!(settings.store, StoreSettings::Postgres(ref p) if p.host == "localhost"));

    assert_eq!(
        load_error(&with_handler(&[("COS_STORE", "mysql")])),
        "invalid setting COS_STORE=\"mysql\": must be auto, sqlite or postgres"
    );
}

#[test]
fn postgres_settings_are_validated() {
    let postgres = [("COS_STORE", "postgres")];
    let cases: [(&'static str, &'static str, &str); 5] = [
        (
            "COS_DB_SCHEMA",
            "cos-v2",
            "must be 1 to 63 letters, digits or '_', not starting with a digit",
        ),
        (
            "COS_DB_SCHEMA",
            "1cos",
            "must be 1 to 63 letters, digits or '_', not starting with a digit",
        ),
        ("COS_DB_PORT", "0", "must be an integer between 1 and 65535"),
        ("COS_DB_POOL_MAX_SIZE", "0", "must be a positive integer"),
        (
            "COS_DB_POOL_IDLE_TIMEOUT_MS",
            "1m",
            "must be a positive whole number of milliseconds",
        ),
    ];
    for (name, value, rule) in cases {
        let mut environment = postgres.to_vec();
        environment.push((name, value));
        assert_eq!(
            load_error(&with_handler(&environment)),
            format!("invalid setting {name}=\"{value}\": {rule}")
        );
    }
}

#[test]
fn pool_min_idle_must_not_exceed_the_max_size() {
    assert_eq!(
        load_error(&with_handler(&[
            ("COS_STORE", "postgres"),
            ("COS_DB_POOL_MAX_SIZE", "3"),
            ("COS_DB_POOL_MIN_IDLE_CONNECTIONS", "4"),
        ])),
        "invalid setting COS_DB_POOL_MIN_IDLE_CONNECTIONS=\"4\": must be an integer between 0 and COS_DB_POOL_MAX_SIZE (3)"
    );
}

#[test]
fn booleans_refuse_words_the_original_silently_misread() {
    assert_eq!(
        load_error(&with_handler(&[("COS_GRPC_KEEPALIVE_ENABLED", "enabled")])),
        "invalid setting COS_GRPC_KEEPALIVE_ENABLED=\"enabled\": must be true or false (yes/no and on/off are accepted too)"
    );
}

#[test]
fn keepalive_is_configured_only_when_enabled() {
    let settings = Settings::load(&with_handler(&[
        ("COS_GRPC_KEEPALIVE_ENABLED", "yes"),
        ("COS_GRPC_KEEPALIVE_TIME", "90s"),
        ("COS_GRPC_KEEPALIVE_TIMEOUT", "30000"),
        ("COS_GRPC_KEEPALIVE_WITHOUT_CALLS", "off"),
        ("COS_GRPC_CLIENT_POOL_SIZE", "4"),
    ]))
    .expect("ok");
    assert_eq!(
        settings.grpc_client,
        GrpcClientSettings {
            keepalive: Some(KeepaliveSettings {
                interval: Duration::from_secs(90),
                timeout: Duration::from_secs(30),
                while_idle: false,
            }),
            pool_size: 4,
            breaker: None,
        }
    );
    assert_eq!(
        load_error(&with_handler(&[(
            "COS_GRPC_KEEPALIVE_TIME",
            "2 fortnights"
        )])),
        "invalid setting COS_GRPC_KEEPALIVE_TIME=\"2 fortnights\": must be a positive duration such as 120s (a bare number means milliseconds)"
    );
    for bad in ["0", "65"] {
        assert_eq!(
            load_error(&with_handler(&[("COS_GRPC_CLIENT_POOL_SIZE", bad)])),
            format!(
                "invalid setting COS_GRPC_CLIENT_POOL_SIZE=\"{bad}\": must be an integer between 1 and 64"
            )
        );
    }
}

#[test]
fn passivation_can_be_turned_off_and_otherwise_needs_at_least_a_second() {
    let settings =
        Settings::load(&with_handler(&[("COS_PASSIVATION_IDLE_TIMEOUT", "OFF")])).expect("ok");
    assert_eq!(settings.passivation.idle_timeout, None);
    let settings =
        Settings::load(&with_handler(&[("COS_PASSIVATION_IDLE_TIMEOUT", "1h")])).expect("ok");
    assert_eq!(
        settings.passivation.idle_timeout,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(
        load_error(&with_handler(&[("COS_PASSIVATION_IDLE_TIMEOUT", "500ms")])),
        "invalid setting COS_PASSIVATION_IDLE_TIMEOUT=\"500ms\": must be a duration of at least 1s (such as 10m) or off"
    );
    assert_eq!(
        load_error(&with_handler(&[("COS_MAX_ACTIVE_ENTITIES", "0")])),
        "invalid setting COS_MAX_ACTIVE_ENTITIES=\"0\": must be a positive integer"
    );
}

#[test]
fn resting_can_be_turned_off_and_otherwise_needs_at_least_100ms() {
    let settings =
        Settings::load(&with_handler(&[("COS_PASSIVATION_REST_AFTER", "Off")])).expect("ok");
    assert_eq!(settings.passivation.rest_after, None);
    let settings =
        Settings::load(&with_handler(&[("COS_PASSIVATION_REST_AFTER", "250ms")])).expect("ok");
    assert_eq!(
        settings.passivation.rest_after,
        Some(Duration::from_millis(250))
    );
    for bad in ["50ms", "soon", "-1s"] {
        assert_eq!(
            load_error(&with_handler(&[("COS_PASSIVATION_REST_AFTER", bad)])),
            format!(
                "invalid setting COS_PASSIVATION_REST_AFTER=\"{bad}\": must be a duration of at least 100ms (such as 2s) or off"
            )
        );
    }
}

#[test]
fn log_level_capitals_are_lower_cased_and_filters_kept() {
    let settings = Settings::load(&with_handler(&[
        ("LOG_LEVEL", "DEBUG"),
        ("LOG_STYLE", "simple"),
    ]))
    .expect("ok");
    assert_eq!(settings.logging.level, "debug");
    assert_eq!(settings.logging.style, LogStyle::Simple);
    let settings =
        Settings::load(&with_handler(&[("LOG_LEVEL", "info,cos_core=TRACE")])).expect("ok");
    assert_eq!(settings.logging.level, "info,cos_core=TRACE");
    assert!(
        load_error(&with_handler(&[("LOG_LEVEL", " ")]))
            .starts_with("invalid setting LOG_LEVEL=\" \": must not be empty")
    );
    assert_eq!(
        load_error(&with_handler(&[("LOG_STYLE", "pretty")])),
        "invalid setting LOG_STYLE=\"pretty\": must be JSON, SIMPLE or STANDARD"
    );
}

#[test]
fn environment_overrides_the_file_and_logging_can_come_from_the_file() {
    let (_dir, options) = options_with_file(
        &[("COS_NUM_SHARDS", "64"), ("LOG_STYLE", "standard")],
        "yaml",
        "num_shards: 8\ncommand_handler_timeout: 10\nwrite_side_host: handler\nwrite_side_port: 50051\nlog_level: WARN\nlog_style: simple\n",
    );
    let settings = Settings::load(&options).expect("ok");
    assert_eq!(settings.num_shards, 64);
    assert_eq!(settings.command_handler_timeout, Duration::from_secs(10));
    assert_eq!(settings.logging.level, "warn");
    assert_eq!(settings.logging.style, LogStyle::Standard);
    assert_eq!(
        settings.entity_types.types[&settings.entity_types.default_type]
            .write_handler
            .host,
        "handler"
    );
}

#[test]
fn invalid_file_values_are_reported_under_the_file_key() {
    let (_dir, options) = options_with_file(&HANDLER, "yaml", "num_shards: 12\n");
    assert_eq!(
        load_error(&options),
        "invalid setting num_shards=\"12\": must be a power of two between 1 and 10000"
    );
}

#[test]
fn toml_files_work() {
    let (_dir, options) = options_with_file(
        &[],
        "toml",
        "num_shards = 32\ngrpc_keepalive_enabled = true\nwrite_side_host = \"handler\"\nwrite_side_port = 50051\n\n[[entity_types]]\nname = \"accounts\"\nwrite_side_port = 50052\n",
    );
    let settings = Settings::load(&options).expect("ok");
    assert_eq!(settings.num_shards, 32);
    assert!(settings.grpc_client.keepalive.is_some());
    assert_eq!(settings.entity_types.types.len(), 2);
    let accounts = settings
        .entity_types
        .types
        .values()
        .find(|settings| settings.name.as_str() == "accounts")
        .expect("accounts type");
    assert_eq!(accounts.write_handler.host, "handler");
    assert_eq!(accounts.write_handler.port, 50052);
}

#[test]
fn unknown_file_keys_are_refused() {
    let (_dir, options) = options_with_file(&HANDLER, "yaml", "num_shard: 16\n");
    let path = options.config_file.clone().expect("file");
    assert_eq!(
        load_error(&options),
        format!(
            "unknown key num_shard in config file {path:?}: no such setting; file keys are the COS_* variable names in snake_case without the prefix, such as num_shards"
        )
    );
}

#[test]
fn config_file_problems_are_reported() {
    let mut missing = with_handler(&[]);
    missing.config_file = Some(PathBuf::from("/nonexistent/cos.yaml"));
    assert_eq!(
        load_error(&missing),
        "cannot read config file \"/nonexistent/cos.yaml\": file not found"
    );
    let mut unsupported = with_handler(&[]);
    unsupported.config_file = Some(PathBuf::from("cos.json"));
    assert_eq!(
        load_error(&unsupported),
        "cannot read config file \"cos.json\": unsupported file extension; use .yaml, .yml or .toml"
    );
}

#[test]
fn unknown_cos_variables_are_returned_as_warnings() {
    let (_settings, warnings) = Settings::load_with_warnings(&with_handler(&[
        ("COS_SNAPSHOT_FREQUENCYY", "10"),
        ("COS_READ_SIDE_REPLAY_INTERVALL", "1s"),
        ("COS_READ_SIDE_BREAKER_MAX_FAILURES", "3"),
        ("COS_READ_SIDE_ENABLED", "false"),
        ("COS_READ_SIDE_CONFIG__HOST__RS1", "localhost"),
        ("COS_SUBSCRIPTION_ENABLED", "false"),
        ("COS_REPLICA_COUNT", "1"),
        ("COS_KUBERNETES_APP_LABEL", "cos"),
        ("COS_MIGRATIONS_INITIAL_VERSION", "1"),
        ("PATH", "/usr/bin"),
    ]))
    .expect("ok");
    assert_eq!(
        warnings,
        vec![
            "unknown environment variable COS_READ_SIDE_REPLAY_INTERVALL is ignored".to_string(),
            "unknown environment variable COS_SNAPSHOT_FREQUENCYY is ignored".to_string(),
        ]
    );
}

#[test]
fn an_explicit_config_file_wins_over_cos_config_file() {
    let explicit = PathBuf::from("explicit.yaml");
    let options = LoadOptions::from_process_env(Some(explicit.clone()));
    assert_eq!(options.config_file, Some(explicit));
}

#[test]
fn read_sides_are_loaded_with_the_settings_and_their_errors_stop_start_up() {
    let settings = Settings::load(&with_handler(&[
        ("COS_READ_SIDE_ENABLED", "true"),
        ("COS_READ_SIDE_CONFIG__HOST__RS1", "localhost"),
        ("COS_READ_SIDE_CONFIG__PORT__RS1", "50052"),
    ]))
    .expect("valid read side");
    assert!(settings.read_sides.enabled);
    assert_eq!(settings.read_sides.read_sides.len(), 1);
    assert_eq!(settings.read_sides.read_sides[0].id, "RS1");

    let error = load_error(&with_handler(&[
        ("COS_READ_SIDE_ENABLED", "true"),
        ("COS_READ_SIDE_CONFIG__HOST__RS1", "localhost"),
    ]));
    assert!(error.contains("RS1") && error.contains("PORT"), "{error}");
}

#[test]
fn the_write_side_breaker_is_validated_only_when_enabled() {
    let disabled = Settings::load(&with_handler(&[(
        "COS_WRITE_SIDE_BREAKER_MAX_FAILURES",
        "0",
    )]))
    .expect("ignored while disabled");
    assert!(disabled.grpc_client.breaker.is_none());
    let enabled = Settings::load(&with_handler(&[("COS_WRITE_SIDE_BREAKER_ENABLED", "true")]))
        .expect("defaults");
    let breaker = enabled.grpc_client.breaker.expect("enabled");
    assert_eq!(breaker.max_failures, 5);
    assert_eq!(breaker.call_timeout, Duration::from_secs(60));
    assert_eq!(breaker.reset_timeout, Duration::from_secs(60));
    let error = load_error(&with_handler(&[
        ("COS_WRITE_SIDE_BREAKER_ENABLED", "true"),
        ("COS_WRITE_SIDE_BREAKER_MAX_FAILURES", "0"),
    ]));
    assert!(
        error.contains("COS_WRITE_SIDE_BREAKER_MAX_FAILURES=\"0\""),
        "{error}"
    );
    let error = load_error(&with_handler(&[
        ("COS_WRITE_SIDE_BREAKER_ENABLED", "true"),
        ("COS_WRITE_SIDE_BREAKER_RESET_TIMEOUT", "500ms"),
    ]));
    assert!(
        error.contains("COS_WRITE_SIDE_BREAKER_RESET_TIMEOUT"),
        "{error}"
    );
}

#[test]
fn a_read_side_listening_to_an_unknown_entity_type_stops_start_up() {
    let error = load_error(&with_handler(&[
        ("COS_READ_SIDE_ENABLED", "true"),
        ("COS_READ_SIDE_CONFIG__HOST__RS1", "localhost"),
        ("COS_READ_SIDE_CONFIG__PORT__RS1", "50052"),
        ("COS_READ_SIDE_CONFIG__ENTITY_TYPES__RS1", "default,acounts"),
    ]));
    assert_eq!(
        error,
        "read side \"RS1\": entity types \"acounts\" is not a configured entity type (known: default)"
    );
}
