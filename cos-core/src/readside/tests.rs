//! `load_read_sides` as a whole: the gate, mixing YAML with variables, duplicates and the breaker.

use std::fs;

use tempfile::TempDir;

use super::*;

fn environment(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn yaml_file(text: &str) -> (TempDir, String) {
    let dir = TempDir::new().expect("temp dir");
    let path = dir.path().join("readsides.yaml");
    fs::write(&path, text).expect("write file");
    let path_text = path.to_string_lossy().into_owned();
    (dir, path_text)
}

#[test]
fn disabled_read_sides_are_not_validated() {
    let settings = load_read_sides(&environment(&[
        ("COS_READ_SIDE_CONFIG", "/nonexistent"),
        ("COS_READ_SIDE_CONFIG__HOST__", "bad"),
        ("COS_READ_SIDE_BREAKER_ENABLED", "true"),
        ("COS_READ_SIDE_BREAKER_MAX_FAILURES", "0"),
    ]))
    .expect("nothing validated");
    assert_eq!(
        settings,
        ReadSideSettings {
            enabled: false,
            read_sides: Vec::new(),
            breaker: None,
        }
    );
    let explicit =
        load_read_sides(&environment(&[("COS_READ_SIDE_ENABLED", "false")])).expect("disabled");
    assert!(!explicit.enabled);
}

#[test]
fn enabled_flag_must_be_a_boolean() {
    let error = load_read_sides(&environment(&[("COS_READ_SIDE_ENABLED", "sure")]))
        .expect_err("not a boolean");
    assert_eq!(
        error.to_string(),
        "invalid setting COS_READ_SIDE_ENABLED=\"sure\": must be true or false (yes/no and on/off are \
         accepted too)"
    );
}

#[test]
fn enabled_without_any_read_side_is_valid() {
    let settings =
        load_read_sides(&environment(&[("COS_READ_SIDE_ENABLED", "true")])).expect("valid");
    assert!(settings.enabled);
    assert!(settings.read_sides.is_empty());
    assert_eq!(settings.breaker, None);
}

#[test]
fn yaml_and_variables_are_mixed_yaml_first() {
    let (_dir, path) =
        yaml_file("readSideId: from-yaml\nhost: h\nport: 1\nentityTypes:\n  - accounts\n");
    let settings = load_read_sides(&environment(&[
        ("COS_READ_SIDE_ENABLED", "true"),
        ("COS_READ_SIDE_CONFIG", &path),
        ("COS_READ_SIDE_CONFIG__HOST__from-env", "e"),
        ("COS_READ_SIDE_CONFIG__PORT__from-env", "2"),
        (
            "COS_READ_SIDE_CONFIG__ENTITY_TYPES__from-env",
            "orders,accounts",
        ),
        ("COS_READ_SIDE_BREAKER_ENABLED", "true"),
    ]))
    .expect("valid");
    let ids: Vec<&str> = settings
        .read_sides
        .iter()
        .map(|config| config.id.as_str())
        .collect();
    assert_eq!(ids, ["from-yaml", "from-env"]);
    assert_eq!(
        settings.read_sides[0].entity_types,
        Some(vec!["accounts".to_string()])
    );
    assert_eq!(
        settings.read_sides[1].entity_types,
        Some(vec!["orders".to_string(), "accounts".to_string()])
    );
    assert_eq!(
        settings.breaker.map(|breaker| breaker.max_failures),
        Some(5)
    );
}

#[test]
fn duplicate_id_across_yaml_and_variables_is_an_error() {
    let (_dir, path) = yaml_file("readSideId: rs-1\nhost: h\nport: 1\n");
    let error = load_read_sides(&environment(&[
        ("COS_READ_SIDE_ENABLED", "true"),
        ("COS_READ_SIDE_CONFIG", &path),
        ("COS_READ_SIDE_CONFIG__HOST__rs-1", "e"),
        ("COS_READ_SIDE_CONFIG__PORT__rs-1", "2"),
    ]))
    .expect_err("duplicate");
    assert_eq!(
        error.to_string(),
        format!(
            "read side \"rs-1\" is defined twice: in read side config file {:?}, document 1 and in \
             COS_READ_SIDE_CONFIG__*__rs-1",
            std::path::Path::new(&path)
        )
    );
}

#[test]
fn duplicate_id_within_yaml_is_an_error() {
    let (_dir, path) =
        yaml_file("readSideId: rs-1\nhost: h\nport: 1\n---\nreadSideId: rs-1\nhost: h\nport: 2\n");
    let error = load_read_sides(&environment(&[
        ("COS_READ_SIDE_ENABLED", "true"),
        ("COS_READ_SIDE_CONFIG", &path),
    ]))
    .expect_err("duplicate");
    assert!(
        matches!(&error, ReadSideConfigError::Duplicate { id, .. } if id == "rs-1"),
        "{error}"
    );
    let shown_path = format!("{:?}", std::path::Path::new(&path));
    assert_eq!(
        error.to_string(),
        format!(
            "read side \"rs-1\" is defined twice: in read side config file {shown_path}, document 1 and in \
             read side config file {shown_path}, document 2"
        )
    );
}

#[test]
fn missing_config_path_is_an_error_when_enabled() {
    let error = load_read_sides(&environment(&[
        ("COS_READ_SIDE_ENABLED", "true"),
        ("COS_READ_SIDE_CONFIG", "/nonexistent/readsides.yaml"),
    ]))
    .expect_err("missing");
    assert_eq!(
        error.to_string(),
        "cannot read read side config \"/nonexistent/readsides.yaml\": path does not exist"
    );
}

#[test]
fn breaker_errors_surface_when_read_sides_are_enabled() {
    let error = load_read_sides(&environment(&[
        ("COS_READ_SIDE_ENABLED", "true"),
        ("COS_READ_SIDE_BREAKER_ENABLED", "true"),
        ("COS_READ_SIDE_BREAKER_CALL_TIMEOUT", "0s"),
    ]))
    .expect_err("invalid");
    assert!(
        error
            .to_string()
            .starts_with("invalid setting COS_READ_SIDE_BREAKER_CALL_TIMEOUT=\"0s\""),
        "{error}"
    );
}
