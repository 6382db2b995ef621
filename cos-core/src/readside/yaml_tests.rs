//! `ReadSideConfigReaderSpec` (YAML half) and `ReadSideConfigSpec`, with our messages.

use std::time::Duration;

use tempfile::TempDir;

use super::*;
use crate::readside::{FailurePolicy, ReadSideConfig, ReadSideProtocol};

fn write(dir: &TempDir, relative: &str, text: &str) -> PathBuf {
    let path = dir.path().join(relative);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create folder");
    }
    fs::write(&path, text).expect("write file");
    path
}

fn load(path: &Path) -> Result<Vec<ReadSideConfig>, ReadSideConfigError> {
    Ok(load_path(path)?
        .into_iter()
        .map(|located| located.config)
        .collect())
}

fn load_text(text: &str) -> Result<Vec<ReadSideConfig>, ReadSideConfigError> {
    let dir = TempDir::new().expect("temp dir");
    load(&write(&dir, "readsides.yaml", text))
}

/// The message with the temporary path replaced by `x.yaml`, so expectations can be exact.
fn error_text(text: &str) -> String {
    let dir = TempDir::new().expect("temp dir");
    let path = write(&dir, "x.yaml", text);
    match load(&path) {
        Ok(configs) => panic!("expected an error, got {configs:?}"),
        Err(error) => error
            .to_string()
            .replace(&format!("{path:?}"), "\"x.yaml\""),
    }
}

const MULTI_DOCUMENT: &str = "\
readSideId: read-side-1
host: localhost
port: 50051
useTls: true
timeout: 1000
autoStart: false
failurePolicy: STOP
---
readSideId: read-side-2
protocol: HTTP
host: rs2.internal
port: 8080
enabled: false
failurePolicy: replay_stop
unknownKey: ignored
";

#[test]
fn reader_spec_yaml_multi_document_file() {
    let configs = load_text(MULTI_DOCUMENT).expect("valid");
    assert_eq!(
        configs,
        vec![
            ReadSideConfig {
                id: "read-side-1".to_string(),
                protocol: ReadSideProtocol::Grpc,
                host: "localhost".to_string(),
                port: 50051,
                use_tls: true,
                timeout: Duration::from_millis(1000),
                auto_start: false,
                enabled: true,
                failure_policy: FailurePolicy::Stop,
                entity_types: None,
            },
            ReadSideConfig {
                id: "read-side-2".to_string(),
                protocol: ReadSideProtocol::Http,
                host: "rs2.internal".to_string(),
                port: 8080,
                use_tls: false,
                timeout: Duration::from_millis(30_000),
                auto_start: true,
                enabled: false,
                failure_policy: FailurePolicy::ReplayStop {
                    retries: 5,
                    interval: Duration::from_secs(5),
                },
                entity_types: None,
            },
        ]
    );
}

#[test]
fn reader_spec_yaml_defaults_are_applied() {
    let configs = load_text("readSideId: rs\nhost: h\nport: 1\n").expect("valid");
    let config = &configs[0];
    assert_eq!(config.protocol, ReadSideProtocol::Grpc);
    assert!(!config.use_tls);
    assert_eq!(config.timeout, Duration::from_millis(30_000));
    assert!(config.auto_start);
    assert!(config.enabled);
    assert_eq!(config.failure_policy, FailurePolicy::Stop);
    assert_eq!(config.entity_types, None);
}

#[test]
fn reader_spec_yaml_folder_is_walked_recursively_in_path_order() {
    let dir = TempDir::new().expect("temp dir");
    write(&dir, "b.yaml", "readSideId: rs-b\nhost: h\nport: 2\n");
    write(&dir, "a/z.txt", "readSideId: rs-a-z\nhost: h\nport: 3\n");
    write(
        &dir,
        "a/a.yml",
        "readSideId: rs-a-a1\nhost: h\nport: 4\n---\nreadSideId: rs-a-a2\nhost: h\nport: 5\n",
    );
    write(&dir, "c/empty.yaml", "");
    write(&dir, ".hidden.yaml", "readSideId: rs-b\nhost: h\nport: 2\n");
    write(
        &dir,
        "..data/b.yaml",
        "readSideId: rs-b\nhost: h\nport: 2\n",
    );
    let ids: Vec<String> = load(dir.path())
        .expect("valid")
        .into_iter()
        .map(|config| config.id)
        .collect();
    assert_eq!(ids, ["rs-a-a1", "rs-a-a2", "rs-a-z", "rs-b"]);
}

#[test]
fn reader_spec_yaml_missing_path_is_an_error_naming_it() {
    let error = load(Path::new("/nonexistent/readsides")).expect_err("missing");
    assert_eq!(
        error.to_string(),
        "cannot read read side config \"/nonexistent/readsides\": path does not exist"
    );
}

#[test]
fn reader_spec_yaml_non_numeric_port_names_the_read_side() {
    assert_eq!(
        error_text("readSideId: rs-1\nhost: h\nport: abc\n"),
        "read side \"rs-1\": port \"abc\" must be an integer between 1 and 65535"
    );
}

#[test]
fn yaml_port_zero_is_refused_unlike_the_original() {
    assert_eq!(
        error_text("readSideId: rs-1\nhost: h\nport: 0\n"),
        "read side \"rs-1\": port \"0\" must be an integer between 1 and 65535"
    );
}

#[test]
fn reader_spec_yaml_missing_port_host_and_id() {
    assert_eq!(
        error_text("readSideId: rs-1\nhost: h\n"),
        "read side \"rs-1\": missing port"
    );
    assert_eq!(
        error_text("readSideId: rs-1\nport: 1\n"),
        "read side \"rs-1\": missing host"
    );
    assert_eq!(
        error_text("readSideId: rs-1\nhost: ''\nport: 1\n"),
        "read side \"rs-1\": missing host"
    );
    assert_eq!(
        error_text("readSideId: rs-1\nhost: h\nport: 1\n---\nhost: h\nport: 1\n"),
        "read side config file \"x.yaml\", document 2: missing readSideId"
    );
}

#[test]
fn reader_spec_yaml_invalid_id_is_refused() {
    assert_eq!(
        error_text("readSideId: read-side-2;\nhost: h\nport: 1\n"),
        "read side id \"read-side-2;\" in read side config file \"x.yaml\", document 1 must be letters, \
         digits, '_' and '-', starting and ending with a letter or digit"
    );
}

#[test]
fn read_side_config_spec_protocols_are_case_insensitive_and_others_refused() {
    for (text, expected) in [
        ("grpc", ReadSideProtocol::Grpc),
        ("http", ReadSideProtocol::Http),
        ("gRPC", ReadSideProtocol::Grpc),
        ("HTTP", ReadSideProtocol::Http),
    ] {
        let configs = load_text(&format!(
            "readSideId: rs\nprotocol: {text}\nhost: h\nport: 1\n"
        ))
        .expect("valid");
        assert_eq!(configs[0].protocol, expected, "{text}");
    }
    assert_eq!(
        error_text("readSideId: rs\nprotocol: kafka\nhost: h\nport: 1\n"),
        "read side \"rs\": protocol \"kafka\" must be grpc or http"
    );
}

#[test]
fn yaml_invalid_values_name_the_read_side_and_key() {
    let cases = [
        (
            "useTls: maybe",
            "read side \"rs\": useTls \"maybe\" must be true or false (yes/no and on/off are accepted too)",
        ),
        (
            "timeout: -5",
            "read side \"rs\": timeout \"-5\" must be a positive whole number of milliseconds",
        ),
        (
            "failurePolicy: RETRY",
            "read side \"rs\": failurePolicy \"RETRY\" must be STOP, SKIP, REPLAY_STOP or REPLAY_SKIP \
             (or empty for STOP)",
        ),
        (
            "host: [a, b]",
            "read side \"rs\": host \"a list\" must be a single value",
        ),
        (
            "entityTypes: []",
            "read side \"rs\": entityTypes \"\" must name at least one entity type (leave it out to receive \
             all of them)",
        ),
    ];
    for (line, expected) in cases {
        let mut text = String::from("readSideId: rs\n");
        for default_line in ["host: h", "port: 1"] {
            let key = default_line.split(':').next().unwrap_or_default();
            if !line.starts_with(key) {
                text.push_str(default_line);
                text.push('\n');
            }
        }
        text.push_str(line);
        text.push('\n');
        assert_eq!(error_text(&text), expected, "{line}");
    }
}

#[test]
fn yaml_entity_types_from_a_list_or_comma_separated_text() {
    let configs = load_text(
        "readSideId: a\nhost: h\nport: 1\nentityTypes: [accounts, orders]\n---\n\
         readSideId: b\nhost: h\nport: 1\nentityTypes: accounts, orders\n---\n\
         readSideId: c\nhost: h\nport: 1\nentityTypes: ~\n",
    )
    .expect("valid");
    let expected = Some(vec!["accounts".to_string(), "orders".to_string()]);
    assert_eq!(configs[0].entity_types, expected);
    assert_eq!(configs[1].entity_types, expected);
    assert_eq!(configs[2].entity_types, None);
}

#[test]
fn yaml_misspelt_known_key_is_refused_other_unknown_keys_ignored() {
    assert_eq!(
        error_text("readSideId: rs\nhost: h\nport: 1\nautostart: false\n"),
        "read side config file \"x.yaml\", document 1: unknown key \"autostart\", did you mean autoStart?"
    );
    assert!(load_text("readSideId: rs\nhost: h\nport: 1\ndescription: x\n").is_ok());
}

#[test]
fn yaml_documents_must_be_mappings_and_files_valid_yaml() {
    assert_eq!(
        error_text("- a\n- b\n"),
        "read side config file \"x.yaml\", document 1: must be a mapping of read side settings"
    );
    let syntax = error_text("readSideId: [unclosed\n");
    assert!(
        syntax.starts_with("cannot read read side config \"x.yaml\": not valid YAML"),
        "{syntax}"
    );
}
