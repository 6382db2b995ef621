//! Specifications of entity type settings: classic and declared types, fallbacks, defaults and rules.

use std::time::Duration;

use super::super::test_support::{options, options_with_file};
use crate::settings::{EntityTypeSettings, Settings};

fn load_error(options: &super::super::LoadOptions) -> String {
    Settings::load(options)
        .expect_err("settings refused")
        .to_string()
}

fn type_named<'s>(settings: &'s Settings, name: &str) -> &'s EntityTypeSettings {
    settings
        .entity_types
        .types
        .values()
        .find(|settings| settings.name.as_str() == name)
        .expect("entity type configured")
}

const TWO_TYPES: &str = "
write_side_host: handler.internal
write_side_port: 50051
grpc_calls_timeout: 5000
disable_snapshot: true
entity_types:
  - name: accounts
    write_side_port: 50052
    write_side_use_tls: yes
    disable_snapshot: false
    snapshot_frequency: 10
    write_persisted_headers: x-user-id, x-request-id
  - name: loans
    write_side_host: loans.internal
";

#[test]
fn no_write_handler_at_all_is_a_missing_setting() {
    assert_eq!(
        load_error(&options(&[])),
        "missing setting COS_WRITE_SIDE_HOST: no write handler configured; set COS_WRITE_SIDE_HOST and COS_WRITE_SIDE_PORT or declare entity_types in the config file"
    );
}

#[test]
fn write_side_port_is_required_and_minus_one_means_unset() {
    let expected = "missing setting COS_WRITE_SIDE_PORT: the write handler's port is required";
    assert_eq!(
        load_error(&options(&[("COS_WRITE_SIDE_HOST", "localhost")])),
        expected
    );
    assert_eq!(
        load_error(&options(&[
            ("COS_WRITE_SIDE_HOST", "localhost"),
            ("COS_WRITE_SIDE_PORT", "-1")
        ])),
        expected
    );
    assert_eq!(
        load_error(&options(&[
            ("COS_WRITE_SIDE_HOST", "localhost"),
            ("COS_WRITE_SIDE_PORT", "0")
        ])),
        "invalid setting COS_WRITE_SIDE_PORT=\"0\": must be an integer between 1 and 65535"
    );
}

#[test]
fn http_write_handlers_are_not_available_yet() {
    assert_eq!(
        load_error(&options(&[
            ("COS_WRITE_SIDE_HOST", "localhost"),
            ("COS_WRITE_SIDE_PORT", "50051"),
            ("COS_WRITE_SIDE_PROTOCOL", "HTTP"),
        ])),
        "invalid setting COS_WRITE_SIDE_PROTOCOL=\"HTTP\": the HTTP write handler is not available in this build yet; use grpc"
    );
}

#[test]
fn file_types_override_per_key_and_fall_back_to_globals() {
    let (_dir, options) = options_with_file(
        &[("COS_DEFAULT_ENTITY_TYPE", "accounts")],
        "yaml",
        TWO_TYPES,
    );
    let settings = Settings::load(&options).expect("ok");
    assert_eq!(settings.entity_types.types.len(), 3);
    assert_eq!(settings.entity_types.default_type.as_str(), "accounts");

    let accounts = type_named(&settings, "accounts");
    assert_eq!(accounts.write_handler.host, "handler.internal");
    assert_eq!(accounts.write_handler.port, 50052);
    assert!(accounts.write_handler.use_tls);
    assert_eq!(accounts.write_handler.call_timeout, Duration::from_secs(5));
    assert!(accounts.snapshots.enabled);
    assert_eq!(accounts.snapshots.frequency, 10);
    assert_eq!(accounts.snapshots.retain, 2);
    assert_eq!(
        accounts.persisted_headers,
        vec!["x-user-id", "x-request-id"]
    );

    let loans = type_named(&settings, "loans");
    assert_eq!(loans.write_handler.host, "loans.internal");
    assert_eq!(loans.write_handler.port, 50051);
    assert!(!loans.write_handler.use_tls);
    assert!(!loans.snapshots.enabled);

    let classic = type_named(&settings, "default");
    assert_eq!(classic.write_handler.host, "handler.internal");
    assert_eq!(classic.write_handler.port, 50051);
}

#[test]
fn several_types_without_a_default_need_cos_default_entity_type() {
    let (_dir, options) = options_with_file(
        &[],
        "yaml",
        "entity_types:\n  - {name: accounts, write_side_host: a, write_side_port: 1}\n  - {name: loans, write_side_host: b, write_side_port: 2}\n",
    );
    assert_eq!(
        load_error(&options),
        "missing setting COS_DEFAULT_ENTITY_TYPE: several entity types are configured (accounts, loans); set it to the one used when a request names no type"
    );
}

#[test]
fn a_single_declared_type_is_the_default() {
    let (_dir, options) = options_with_file(
        &[],
        "yaml",
        "entity_types: [{name: accounts, write_side_host: 127.0.0.1, write_side_port: 50051}]\n",
    );
    let settings = Settings::load(&options).expect("ok");
    assert_eq!(settings.entity_types.default_type.as_str(), "accounts");
    assert_eq!(settings.entity_types.types.len(), 1);
}

#[test]
fn the_classic_type_is_the_default_when_present() {
    let (_dir, options) = options_with_file(
        &[
            ("COS_WRITE_SIDE_HOST", "localhost"),
            ("COS_WRITE_SIDE_PORT", "50051"),
        ],
        "yaml",
        "entity_types: [{name: accounts}]\n",
    );
    let settings = Settings::load(&options).expect("ok");
    assert_eq!(settings.entity_types.default_type.as_str(), "default");
}

#[test]
fn cos_default_entity_type_must_name_a_configured_type() {
    assert_eq!(
        load_error(&options(&[
            ("COS_WRITE_SIDE_HOST", "localhost"),
            ("COS_WRITE_SIDE_PORT", "50051"),
            ("COS_DEFAULT_ENTITY_TYPE", "accounts"),
        ])),
        "invalid setting COS_DEFAULT_ENTITY_TYPE=\"accounts\": must name a configured entity type (default)"
    );
}

#[test]
fn declared_types_need_a_valid_unique_name() {
    let cases = [
        (
            "entity_types: [{write_side_host: a}]\n",
            "missing setting entity_types[0].name: every entity type needs a name",
        ),
        (
            "entity_types: [{name: Accounts}]\n",
            "invalid setting entity_types[0].name=\"Accounts\": must be 1 to 64 characters from a-z, 0-9, '_' and '-'",
        ),
        (
            "entity_types: [{name: accounts}, {name: accounts}]\n",
            "invalid setting entity_types[1].name=\"accounts\": duplicate entity type name",
        ),
        (
            "entity_types: {name: accounts}\n",
            "invalid setting entity_types=\"<table>\": must be a list of tables, each with a name",
        ),
    ];
    for (content, expected) in cases {
        let (_dir, options) = options_with_file(&[], "yaml", content);
        assert_eq!(load_error(&options), expected, "{content}");
    }
}

#[test]
fn missing_per_type_values_are_named_by_their_file_key() {
    let (_dir, options) = options_with_file(
        &[],
        "yaml",
        "entity_types: [{name: accounts, write_side_host: a}]\n",
    );
    assert_eq!(
        load_error(&options),
        "missing setting entity_types[accounts].write_side_port: the write handler's port is required"
    );
    let (_dir, options) = options_with_file(
        &[],
        "yaml",
        "entity_types: [{name: accounts, write_side_host: a, write_side_port: 99999}]\n",
    );
    assert_eq!(
        load_error(&options),
        "invalid setting entity_types[accounts].write_side_port=\"99999\": must be an integer between 1 and 65535"
    );
}

#[test]
fn unknown_keys_in_a_type_table_are_refused() {
    let (_dir, options) = options_with_file(
        &[],
        "yaml",
        "entity_types: [{name: accounts, write_side_hots: a}]\n",
    );
    let error = load_error(&options);
    assert!(
        error.starts_with("unknown key entity_types[accounts].write_side_hots in config file "),
        "{error}"
    );
    assert!(error.contains("no such per-type setting; allowed: name, write_side_protocol"));
}

#[test]
fn snapshot_ranges_are_enforced_only_when_snapshots_are_on() {
    let handler = [("COS_WRITE_SIDE_HOST", "h"), ("COS_WRITE_SIDE_PORT", "1")];
    let mut environment = handler.to_vec();
    environment.push(("COS_SNAPSHOT_FREQUENCY", "0"));
    assert_eq!(
        load_error(&options(&environment)),
        "invalid setting COS_SNAPSHOT_FREQUENCY=\"0\": must be a positive integer when snapshots are enabled"
    );
    let mut environment = handler.to_vec();
    environment.push(("COS_NUM_SNAPSHOTS_TO_RETAIN", "101"));
    assert_eq!(
        load_error(&options(&environment)),
        "invalid setting COS_NUM_SNAPSHOTS_TO_RETAIN=\"101\": must be an integer between 1 and 100 when snapshots are enabled"
    );

    let mut environment = handler.to_vec();
    environment.extend([
        ("COS_DISABLE_SNAPSHOT", "true"),
        ("COS_SNAPSHOT_FREQUENCY", "0"),
        ("COS_NUM_SNAPSHOTS_TO_RETAIN", "101"),
        ("COS_JOURNAL_LOGICAL_DELETION", "on"),
    ]);
    let settings = Settings::load(&options(&environment)).expect("ok");
    let snapshots = type_named(&settings, "default").snapshots;
    assert!(!snapshots.enabled);
    assert!(snapshots.delete_events);
    assert!(snapshots.frequency > 0);

    let mut environment = handler.to_vec();
    environment.extend([
        ("COS_DISABLE_SNAPSHOT", "true"),
        ("COS_SNAPSHOT_FREQUENCY", "often"),
    ]);
    assert_eq!(
        load_error(&options(&environment)),
        "invalid setting COS_SNAPSHOT_FREQUENCY=\"often\": must be an integer"
    );
}

#[test]
fn header_names_are_validated() {
    let settings = Settings::load(&options(&[
        ("COS_WRITE_SIDE_HOST", "h"),
        ("COS_WRITE_SIDE_PORT", "1"),
        (
            "COS_WRITE_SIDE_PROPAGATED_HEADERS",
            " x-a , X-Trace-Bin,x-a,",
        ),
    ]))
    .expect("ok");
    assert_eq!(
        type_named(&settings, "default").propagated_headers,
        vec!["x-a", "X-Trace-Bin"]
    );
    assert_eq!(
        load_error(&options(&[
            ("COS_WRITE_SIDE_HOST", "h"),
            ("COS_WRITE_SIDE_PORT", "1"),
            ("COS_WRITE_PERSISTED_HEADERS", "x-ok,bad header"),
        ])),
        "invalid setting COS_WRITE_PERSISTED_HEADERS=\"x-ok,bad header\": \"bad header\" is not a valid header name"
    );
}

#[test]
fn proto_allow_lists_are_parsed_as_csv() {
    let settings = Settings::load(&options(&[
        ("COS_WRITE_SIDE_HOST", "h"),
        ("COS_WRITE_SIDE_PORT", "1"),
        ("COS_WRITE_SIDE_PROTO_VALIDATION", "true"),
        (
            "COS_WRITE_SIDE_EVENT_PROTOS",
            "bank.Opened, bank.Closed,bank.Opened",
        ),
        ("COS_WRITE_SIDE_STATE_PROTOS", "bank.Account"),
    ]))
    .expect("ok");
    let validation = &type_named(&settings, "default").validation;
    assert!(validation.enabled);
    assert_eq!(validation.event_types.len(), 2);
    assert!(validation.event_types.contains("bank.Closed"));
    assert!(validation.state_types.contains("bank.Account"));
}
