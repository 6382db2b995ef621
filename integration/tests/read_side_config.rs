//! Read sides configured the way operators do it: a YAML folder (several files, several documents per file)
//! drives a running node, and a bad read side stops the `cos` binary at start-up with one line that names
//! the read side and the setting. (Every individual validation rule is unit-tested in cos-core.)

use std::process::Command;

use cos_integration::bench::process::sibling_binary;
use cos_integration::support::node::{Backend, TestNode, TestStore};
use cos_integration::support::read_handler::{Behaviour, ReadHandlerServer};
use cos_integration::support::read_side_node::{DELIVERY_WAIT, emit, read_side_status};
use cos_integration::support::script_handler::ScriptHandler;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_folder_configures_grpc_and_http_read_sides() -> anyhow::Result<()> {
    let store = TestStore::new(Backend::Sqlite)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let grpc = ReadHandlerServer::start_grpc(Behaviour::accept_all()).await;
    let http = ReadHandlerServer::start_http(Behaviour::accept_all()).await;
    let folder = tempfile::TempDir::new()?;
    std::fs::create_dir(folder.path().join("nested"))?;
    std::fs::write(
        folder.path().join("views.yaml"),
        format!(
            "readSideId: grpc-view\nhost: 127.0.0.1\nport: {}\nfailurePolicy: replay_skip\n---\n\
             readSideId: disabled-view\nhost: 127.0.0.1\nport: 1\nenabled: false\n",
            grpc.port
        ),
    )?;
    std::fs::write(
        folder.path().join("nested").join("http.yml"),
        format!(
            "readSideId: http-view\nprotocol: HTTP\nhost: 127.0.0.1\nport: {}\ntimeout: 2000\n\
             entityTypes: [default]\nunknownKey: ignored\n",
            http.port
        ),
    )?;
    let path = folder.path().to_string_lossy().into_owned();
    let settings = [
        ("COS_READ_SIDE_ENABLED", "true"),
        ("COS_READ_SIDE_CONFIG", path.as_str()),
    ];
    let mut node = TestNode::start(&store, running.address, &settings).await?;
    emit(&mut node, "acct-1", "a,b").await?;
    grpc.wait_for_accepted(2, DELIVERY_WAIT).await;
    let accepted = http.wait_for_accepted(2, DELIVERY_WAIT).await;
    assert_eq!(accepted[0].read_side_id, "http-view");

    let grpc_status = read_side_status(&node, "grpc-view").await?;
    assert_eq!(grpc_status.failure_policy, "REPLAY_SKIP");
    assert_eq!(grpc_status.protocol, "grpc");
    let http_status = read_side_status(&node, "http-view").await?;
    assert_eq!(http_status.protocol, "http");
    assert_eq!(http_status.entity_types, vec!["default".to_string()]);
    let disabled = read_side_status(&node, "disabled-view").await?;
    assert!(
        !disabled.enabled,
        "configured but not running is still listed"
    );
    node.stop().await
}

/// Extra environment variables of one start-up attempt.
type Variables<'a> = Vec<(&'a str, &'a str)>;

/// Starts `cos` with only `variables` (SQLite default store) and returns its exit code and stderr.
fn start_cos(variables: &[(&str, &str)]) -> (Option<i32>, String) {
    let binary = sibling_binary("cos").unwrap_or_else(|error| panic!("{error}"));
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in variables {
        command.env(key, value);
    }
    let output = command.output().expect("cos starts");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_read_side_stops_start_up_naming_the_read_side_and_the_setting() -> anyhow::Result<()> {
    let folder = tempfile::TempDir::new()?;
    let file = folder.path().join("bad.yaml");
    std::fs::write(
        &file,
        "readSideId: audit\nhost: 127.0.0.1\nport: 9\nfailurePolicy: RETRY_FOREVER\n",
    )?;
    let file = file.to_string_lossy().into_owned();
    let base = [
        ("COS_WRITE_SIDE_HOST", "127.0.0.1"),
        ("COS_WRITE_SIDE_PORT", "1"),
        ("COS_READ_SIDE_ENABLED", "true"),
    ];
    let cases: [(Variables, &[&str]); 5] = [
        (
            vec![("COS_READ_SIDE_CONFIG", file.as_str())],
            &["audit", "failurePolicy", "RETRY_FOREVER"],
        ),
        (
            vec![("COS_READ_SIDE_CONFIG", "/no/such/folder")],
            &["/no/such/folder"],
        ),
        (
            vec![("COS_READ_SIDE_CONFIG__HOST__search", "127.0.0.1")],
            &["search", "PORT"],
        ),
        (
            vec![
                ("COS_READ_SIDE_CONFIG__HOST__search", "127.0.0.1"),
                ("COS_READ_SIDE_CONFIG__PORT__search", "9"),
                ("COS_READ_SIDE_REPLAY_INTERVAL", "soon"),
            ],
            &["COS_READ_SIDE_REPLAY_INTERVAL", "\"soon\""],
        ),
        (
            vec![
                ("COS_READ_SIDE_CONFIG__HOST__search", "127.0.0.1"),
                ("COS_READ_SIDE_CONFIG__PORT__search", "9"),
                ("COS_READ_SIDE_CONFIG__ENTITY_TYPES__search", "acounts"),
            ],
            &["search", "\"acounts\"", "not a configured entity type"],
        ),
    ];
    for (extra, expected) in cases {
        let mut variables = base.to_vec();
        variables.extend(extra.iter().copied());
        let (code, stderr) = start_cos(&variables);
        assert_eq!(code, Some(2), "{extra:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        for fragment in expected {
            assert!(
                stderr.contains(fragment),
                "{fragment:?} missing from {stderr:?}"
            );
        }
    }
    Ok(())
}
