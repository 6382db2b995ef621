//! Pluggable write handlers per entity type: types come from a config file, requests pick one with
//! `x-cos-entity-type`, and equal ids of different types are different entities.

use cos_core::proto::chief_of_state::v1::{GetStateRequest, ProcessCommandRequest};
use cos_core::settings::{LoadOptions, Settings};
use cos_integration::support::node::{Backend, TestNode, TestStore, default_key, typed_key};
use cos_integration::support::script_handler::{ScriptHandler, any_text, text_any};

fn typed_request<T>(body: T, entity_type: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(body);
    if let Some(name) = entity_type {
        request
            .metadata_mut()
            .insert("x-cos-entity-type", name.parse()?);
    }
    Ok(request)
}

async fn two_types_keep_equal_ids_apart(backend: Backend) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let accounts_handler = ScriptHandler::default();
    let accounts = accounts_handler.serve().await?;
    let ledgers_handler = ScriptHandler::default();
    let ledgers = ledgers_handler.serve().await?;

    let directory = tempfile::TempDir::new()?;
    let config_file = directory.path().join("cos.yaml");
    std::fs::write(
        &config_file,
        format!(
            "entity_types:\n  - name: ledgers\n    write_side_host: 127.0.0.1\n    write_side_port: {}\n    snapshot_frequency: 5\n",
            ledgers.address.port()
        ),
    )?;
    let mut environment: std::collections::HashMap<String, String> =
        store.environment().iter().cloned().collect();
    environment.insert("COS_ADDRESS".into(), "127.0.0.1".into());
    environment.insert("COS_PORT".into(), "0".into());
    environment.insert("COS_WRITE_SIDE_HOST".into(), "127.0.0.1".into());
    environment.insert(
        "COS_WRITE_SIDE_PORT".into(),
        accounts.address.port().to_string(),
    );
    let settings = Settings::load(&LoadOptions {
        config_file: Some(config_file),
        environment,
    })?;
    assert_eq!(settings.entity_types.types.len(), 2);
    let mut node = TestNode::start_with(settings).await?;

    let command = |script: &str| ProcessCommandRequest {
        entity_id: "shared-id".to_string(),
        command: Some(text_any(script)),
    };
    let default_reply = node
        .client
        .process_command(typed_request(command("emit:a"), None)?)
        .await?
        .into_inner();
    let ledger_reply = node
        .client
        .process_command(typed_request(command("emit:b,c"), Some("ledgers"))?)
        .await?
        .into_inner();
    assert_eq!(default_reply.meta.map(|m| m.revision_number), Some(1));
    assert_eq!(ledger_reply.meta.map(|m| m.revision_number), Some(2));
    assert_eq!(
        accounts_handler.commands().len(),
        1,
        "default type went to its own handler"
    );
    assert_eq!(
        ledgers_handler.commands().len(),
        1,
        "ledgers went to theirs"
    );

    let explicit_default = node
        .client
        .get_state(typed_request(
            GetStateRequest {
                entity_id: "shared-id".into(),
            },
            Some("default"),
        )?)
        .await?
        .into_inner();
    assert_eq!(any_text(explicit_default.state.as_ref()), "a");
    let ledger_state = node
        .client
        .get_state(typed_request(
            GetStateRequest {
                entity_id: "shared-id".into(),
            },
            Some("ledgers"),
        )?)
        .await?
        .into_inner();
    assert_eq!(any_text(ledger_state.state.as_ref()), "b|c");
    node.stop().await?;

    let journal = store.open_journal().await?;
    assert_eq!(
        journal
            .events_after(&default_key("shared-id")?, 0)
            .await?
            .len(),
        1
    );
    assert_eq!(
        journal
            .events_after(&typed_key("ledgers", "shared-id")?, 0)
            .await?
            .len(),
        2
    );
    journal.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_types_keep_equal_ids_apart() -> anyhow::Result<()> {
    two_types_keep_equal_ids_apart(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_types_keep_equal_ids_apart() -> anyhow::Result<()> {
    two_types_keep_equal_ids_apart(Backend::Postgres).await
}
