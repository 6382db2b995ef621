//! The `cos` binary as an operator runs it: bad settings stop start-up with one precise line, and a good
//! configuration serves commands and shuts down cleanly on SIGTERM.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use cos_core::proto::chief_of_state::v1::ProcessCommandRequest;
use cos_core::proto::chief_of_state::v1::chief_of_state_service_client::ChiefOfStateServiceClient;
use cos_integration::bench::process::{free_port, sibling_binary};
use cos_integration::support::script_handler::{ScriptHandler, text_any};

/// The `cos` binary of this build (`cargo build --workspace --bins` puts it beside the test executables).
fn cos_binary() -> PathBuf {
    sibling_binary("cos").unwrap_or_else(|error| panic!("{error}"))
}

fn run_with_env(variables: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(cos_binary());
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (key, value) in variables {
        command.env(key, value);
    }
    command.output().expect("cos starts")
}

/// Environment variables of one start-up attempt.
type Variables<'a> = &'a [(&'a str, &'a str)];

#[test]
fn bad_settings_stop_start_up_with_one_line_naming_variable_value_and_rule() {
    let cases: [(Variables, &[&str]); 5] = [
        (
            &[
                ("COS_WRITE_SIDE_HOST", "h"),
                ("COS_WRITE_SIDE_PORT", "1"),
                ("COS_NUM_SHARDS", "5"),
            ],
            &["COS_NUM_SHARDS", "\"5\"", "power of two"],
        ),
        (
            &[
                ("COS_WRITE_SIDE_HOST", "h"),
                ("COS_WRITE_SIDE_PORT", "http"),
            ],
            &["COS_WRITE_SIDE_PORT", "\"http\""],
        ),
        (&[], &["COS_WRITE_SIDE_HOST"]),
        (
            &[
                ("COS_WRITE_SIDE_HOST", "h"),
                ("COS_WRITE_SIDE_PORT", "1"),
                ("COS_COMMAND_HANDLER_TIMEOUT", "0"),
            ],
            &["COS_COMMAND_HANDLER_TIMEOUT", "\"0\""],
        ),
        (
            &[
                ("COS_WRITE_SIDE_HOST", "h"),
                ("COS_WRITE_SIDE_PORT", "1"),
                ("COS_DISABLE_SNAPSHOT", "maybe"),
            ],
            &["COS_DISABLE_SNAPSHOT", "\"maybe\""],
        ),
    ];
    for (variables, expected) in cases {
        let output = run_with_env(variables);
        assert_eq!(output.status.code(), Some(2), "{variables:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        for fragment in expected {
            assert!(
                stderr.contains(fragment),
                "{fragment:?} missing from {stderr:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_commands_and_stops_cleanly_on_sigterm() -> anyhow::Result<()> {
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let data = tempfile::TempDir::new()?;
    let port = free_port()?;
    let child = tokio::process::Command::new(cos_binary())
        .env_clear()
        .env("COS_ADDRESS", "127.0.0.1")
        .env("COS_PORT", port.to_string())
        .env("COS_DATA_DIR", data.path())
        .env("COS_WRITE_SIDE_HOST", "127.0.0.1")
        .env("COS_WRITE_SIDE_PORT", running.address.port().to_string())
        .env("LOG_STYLE", "SIMPLE")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;

    let url = format!("http://127.0.0.1:{port}");
    let mut client = None;
    for _ in 0..200 {
        if let Ok(connected) = ChiefOfStateServiceClient::connect(url.clone()).await {
            client = Some(connected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut client = client.ok_or_else(|| anyhow::anyhow!("cos did not start listening"))?;
    let reply = client
        .process_command(ProcessCommandRequest {
            entity_id: "bin-1".into(),
            command: Some(text_any("emit:a")),
        })
        .await?
        .into_inner();
    assert_eq!(reply.meta.map(|m| m.revision_number), Some(1));

    let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(status.success());
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await??;
    assert!(output.status.success(), "exit status {:?}", output.status);
    let logs = String::from_utf8_lossy(&output.stderr);
    for phase in [
        "shutdown requested",
        "refusing new requests",
        "entities stopped",
        "store closed",
    ] {
        assert!(logs.contains(phase), "{phase:?} not logged: {logs}");
    }
    assert!(data.path().join("cos.db").exists());
    Ok(())
}
