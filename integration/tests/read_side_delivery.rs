//! Read-side delivery against real read handlers (gRPC and HTTP) on both stores: every event arrives, in
//! order per entity, with the original's headers and `read_side_id`; a lost offset commit means redelivery,
//! never loss; a read side added later starts from the beginning; a transaction that numbers first but
//! commits late is never skipped; entity-type filters pass over other types.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cos_core::proto::chief_of_state::v1::GetLatestOffsetRequest;
use cos_core::sharding::shard_of;
use cos_integration::support::faulty_positions::FaultyPositions;
use cos_integration::support::node::{Backend, TestNode, TestStore, test_settings};
use cos_integration::support::read_handler::{Behaviour, ReadHandlerServer};
use cos_integration::support::read_side_node::{
    DELIVERY_WAIT, as_pairs, delivered, emit, manager, read_side_settings, revisions_of,
    wait_for_offset,
};
use cos_integration::support::script_handler::ScriptHandler;

/// `COS_NUM_SHARDS` of the test nodes (the default).
const SHARDS: u32 = 16;

async fn every_event_reaches_grpc_and_http_handlers_in_order_with_headers(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let grpc = ReadHandlerServer::start_grpc(Behaviour::accept_all()).await;
    let http = ReadHandlerServer::start_http(Behaviour::accept_all()).await;
    let settings = read_side_settings(&[("grpc-view", &grpc), ("http-view", &http)], &[]);
    let mut node = TestNode::start(&store, running.address, &as_pairs(&settings)).await?;

    let entities: Vec<String> = (0..6).map(|index| format!("account-{index}")).collect();
    for entity in &entities {
        emit(&mut node, entity, "opened,credited").await?;
    }
    for entity in &entities {
        emit(&mut node, entity, "debited").await?;
    }
    let total = entities.len() * 3;
    for (server, read_side_id) in [(&grpc, "grpc-view"), (&http, "http-view")] {
        let accepted = server.wait_for_accepted(total, DELIVERY_WAIT).await;
        let distinct: HashSet<(String, u32)> = delivered(&accepted).into_iter().collect();
        assert_eq!(distinct.len(), total, "{read_side_id}: each event once");
        for entity in &entities {
            assert_eq!(
                revisions_of(&accepted, entity),
                vec![1, 2, 3],
                "{read_side_id}: {entity} in revision order"
            );
        }
        for delivery in &accepted {
            assert_eq!(delivery.read_side_id, read_side_id);
            assert_eq!(
                delivery.header_entity_id.as_deref(),
                Some(delivery.entity_id.as_str())
            );
            let shard = shard_of(&delivery.entity_id, SHARDS).to_string();
            assert_eq!(delivery.header_event_tag.as_deref(), Some(shard.as_str()));
            assert_eq!(delivery.header_entity_type.as_deref(), Some("default"));
            let expected_event = ["opened", "credited", "debited"][delivery.revision as usize - 1];
            assert_eq!(delivery.event_text(), expected_event);
            assert!(
                delivery.state_text().ends_with(expected_event),
                "the resulting state comes with the event: {:?}",
                delivery.state_text()
            );
        }
    }
    assert_eq!(
        http.accepted()[0].content_type.as_deref(),
        Some("application/json")
    );
    node.stop().await
}

async fn a_read_side_added_later_starts_from_the_beginning(backend: Backend) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let mut node = TestNode::start(&store, running.address, &[]).await?;
    for index in 0..4 {
        emit(&mut node, &format!("early-{index}"), "a,b").await?;
    }
    node.stop().await?;

    let grpc = ReadHandlerServer::start_grpc(Behaviour::accept_all()).await;
    let settings = read_side_settings(&[("late-view", &grpc)], &[]);
    let mut node = TestNode::start(&store, running.address, &as_pairs(&settings)).await?;
    emit(&mut node, "after-0", "c").await?;
    let accepted = grpc.wait_for_accepted(9, DELIVERY_WAIT).await;
    for index in 0..4 {
        assert_eq!(
            revisions_of(&accepted, &format!("early-{index}")),
            vec![1, 2]
        );
    }
    assert_eq!(revisions_of(&accepted, "after-0"), vec![1]);
    node.stop().await
}

async fn a_lost_offset_commit_redelivers_the_event_and_loses_nothing(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let grpc = ReadHandlerServer::start_grpc(Behaviour::accept_all()).await;
    let settings = read_side_settings(&[("crashy", &grpc)], &[]);
    let settings = test_settings(&store, running.address, &as_pairs(&settings))?;
    let (journal, positions) = store.open_store_pair().await?;
    let faulty = Arc::new(FaultyPositions::new(positions));
    let mut node = TestNode::start_with_stores(settings, journal, faulty.clone()).await?;

    faulty.fail_next_advances(1);
    emit(&mut node, "redelivered", "first").await?;
    // The handler accepted it, the commit was lost: the worker delivers it again after its pause.
    let accepted = grpc.wait_for_accepted(2, DELIVERY_WAIT).await;
    assert_eq!(revisions_of(&accepted, "redelivered"), vec![1, 1]);
    emit(&mut node, "redelivered", "second").await?;
    let accepted = grpc.wait_for_accepted(3, DELIVERY_WAIT).await;
    assert_eq!(revisions_of(&accepted, "redelivered"), vec![1, 1, 2]);

    let shard = shard_of("redelivered", SHARDS);
    wait_for_offset(&node, "crashy", shard, 2).await?;
    let offsets = manager(&node)
        .await?
        .get_latest_offset(GetLatestOffsetRequest {
            read_side_id: "crashy".to_string(),
        })
        .await?
        .into_inner()
        .offsets;
    let stored = offsets
        .iter()
        .find(|offset| offset.cluster_shard_number == u64::from(shard))
        .map(|offset| offset.offset);
    assert_eq!(stored, Some(2), "both events acknowledged and committed");
    node.stop().await
}

async fn a_read_side_listens_only_to_its_entity_types(backend: Backend) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let orders_only = ReadHandlerServer::start_grpc(Behaviour::accept_all()).await;
    let everything = ReadHandlerServer::start_grpc(Behaviour::accept_all()).await;
    let directory = tempfile::TempDir::new()?;
    let config_file = directory.path().join("cos.yaml");
    std::fs::write(
        &config_file,
        format!(
            "entity_types:\n  - name: orders\n    write_side_host: 127.0.0.1\n    write_side_port: {}\n",
            running.address.port()
        ),
    )?;
    let read_sides = read_side_settings(
        &[("orders-only", &orders_only), ("everything", &everything)],
        &[("COS_READ_SIDE_CONFIG__ENTITY_TYPES__orders-only", "orders")],
    );
    let mut environment: std::collections::HashMap<String, String> =
        test_settings_environment(&store, running.address);
    environment.extend(read_sides);
    let settings = cos_core::settings::Settings::load(&cos_core::settings::LoadOptions {
        config_file: Some(config_file),
        environment,
    })?;
    let mut node = TestNode::start_with(settings).await?;
    for (entity_type, entity_id) in [("orders", "o-1"), ("default", "d-1"), ("orders", "o-2")] {
        let request = cos_core::proto::chief_of_state::v1::ProcessCommandRequest {
            entity_id: entity_id.to_string(),
            command: Some(cos_integration::support::script_handler::text_any("emit:x")),
        };
        let mut request = tonic::Request::new(request);
        request
            .metadata_mut()
            .insert("x-cos-entity-type", entity_type.parse()?);
        node.client.process_command(request).await?;
    }
    everything.wait_for_accepted(3, DELIVERY_WAIT).await;
    orders_only.wait_for_accepted(2, DELIVERY_WAIT).await;
    // The default-type event was passed over, not held back: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let entities: HashSet<String> = orders_only
        .accepted()
        .iter()
        .map(|delivery| delivery.entity_id.clone())
        .collect();
    assert_eq!(orders_only.deliveries().len(), 2);
    assert!(
        orders_only
            .accepted()
            .iter()
            .all(|delivery| delivery.header_entity_type.as_deref() == Some("orders"))
    );
    assert_eq!(
        entities,
        HashSet::from(["o-1".to_string(), "o-2".to_string()])
    );
    node.stop().await
}

/// The environment [`test_settings`] would use: the store, port 0 and the write handler.
fn test_settings_environment(
    store: &TestStore,
    handler: std::net::SocketAddr,
) -> std::collections::HashMap<String, String> {
    let mut environment: std::collections::HashMap<String, String> =
        store.environment().iter().cloned().collect();
    environment.insert("COS_ADDRESS".into(), "127.0.0.1".into());
    environment.insert("COS_PORT".into(), "0".into());
    environment.insert("COS_WRITE_SIDE_HOST".into(), handler.ip().to_string());
    environment.insert("COS_WRITE_SIDE_PORT".into(), handler.port().to_string());
    environment
}

cos_integration::on_both_stores!(
    every_event_reaches_grpc_and_http_handlers_in_order_with_headers,
    a_read_side_added_later_starts_from_the_beginning,
    a_lost_offset_commit_redelivers_the_event_and_loses_nothing,
    a_read_side_listens_only_to_its_entity_types,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_transaction_that_numbers_first_and_commits_late_is_never_skipped()
-> anyhow::Result<()> {
    let store = TestStore::new(Backend::Postgres)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let grpc = ReadHandlerServer::start_grpc(Behaviour::accept_all()).await;
    let settings = read_side_settings(&[("ordered", &grpc)], &[]);
    let mut node = TestNode::start(&store, running.address, &as_pairs(&settings)).await?;
    emit(&mut node, "first", "a").await?;
    grpc.wait_for_accepted(1, DELIVERY_WAIT).await;
    let shard = shard_of("first", SHARDS);
    let second = (0..10_000)
        .map(|index| format!("second-{index}"))
        .find(|id| shard_of(id, SHARDS) == shard)
        .unwrap_or_default();

    // A slow writer numbers its event in the shard first and holds its transaction open.
    let pool = store.postgres_pool().await?;
    let mut slow_writer = pool.begin().await?;
    let slow_offset: i64 = sqlx::query_scalar(
        "UPDATE cos_shard_offsets SET last_offset = last_offset + 1 WHERE shard = $1 RETURNING last_offset",
    )
    .bind(i32::try_from(shard)?)
    .fetch_one(&mut *slow_writer)
    .await?;
    let payload =
        prost::Message::encode_to_vec(&cos_core::proto::chief_of_state::v1::EventWrapper {
            event: Some(cos_integration::support::script_handler::text_any("slow")),
            resulting_state: Some(cos_integration::support::script_handler::text_any("slow")),
            meta: Some(cos_core::proto::chief_of_state::v1::MetaData {
                entity_id: "slow".to_string(),
                revision_number: 1,
                ..Default::default()
            }),
        });
    sqlx::query(
        "INSERT INTO cos_journal (entity_type, entity_id, revision, shard, event_payload, written_at, shard_offset) \
         VALUES ('default', 'slow', 1, $1, $2, 0, $3)",
    )
    .bind(i32::try_from(shard)?)
    .bind(payload)
    .bind(slow_offset)
    .execute(&mut *slow_writer)
    .await?;

    // A later command in the same shard tries to commit first: it must wait for the slow writer.
    let mut client = node.client.clone();
    let later = tokio::spawn(async move {
        let request = cos_core::proto::chief_of_state::v1::ProcessCommandRequest {
            entity_id: second,
            command: Some(cos_integration::support::script_handler::text_any(
                "emit:later",
            )),
        };
        client.process_command(request).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !later.is_finished(),
        "the later write waits for the earlier numbering"
    );
    assert_eq!(
        grpc.accepted().len(),
        1,
        "nothing after offset 1 is visible yet"
    );

    slow_writer.commit().await?;
    later.await??;
    let accepted = grpc.wait_for_accepted(3, DELIVERY_WAIT).await;
    let order: Vec<String> = accepted
        .iter()
        .map(|delivery| delivery.entity_id.clone())
        .collect();
    assert_eq!(order[0], "first");
    assert_eq!(
        order[1], "slow",
        "the late committer is delivered, before what came after it"
    );
    assert!(order[2].starts_with("second-"));
    pool.close().await;
    node.stop().await
}
