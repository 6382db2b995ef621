//! Resting, observed from outside and through the node's entity census: an entity idle for
//! `COS_PASSIVATION_REST_AFTER` gives up its actor but its shard keeps its state. It is still live: it trusts
//! its in-memory state (a foreign write makes its next command fail with ABORTED, as for an entity with an
//! actor), it counts against the active-entity limit, and requests that meet it on its way to rest are
//! answered in order.

use std::time::Duration;

use cos_actors::census::{EntityCensus, entity_census};
use cos_core::proto::chief_of_state::v1::{GetStateRequest, ProcessCommandRequest};
use cos_integration::on_both_stores;
use cos_integration::support::node::{
    Backend, TestNode, TestStore, emit, ids_in_one_shard, write_behind_its_back,
};
use cos_integration::support::script_handler::{ScriptHandler, any_text, text_any};
use cos_integration::support::wait_until;

/// One entity, resting, and no entity actor.
const ONE_RESTING: EntityCensus = EntityCensus {
    actors: 0,
    resting: 1,
};

/// Long enough for a 100 ms rest period and its 50 ms maintenance tick on a busy machine.
const SETTLE: Duration = Duration::from_secs(10);

async fn wait_for_census(expected: EntityCensus) -> anyhow::Result<()> {
    if wait_until(SETTLE, || entity_census() == expected).await {
        return Ok(());
    }
    anyhow::bail!(
        "entity census stayed {:?}, expected {expected:?}",
        entity_census()
    )
}

async fn an_idle_entity_rests_without_its_actor_and_keeps_its_state(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let settings = [("COS_PASSIVATION_REST_AFTER", "100ms")];
    let mut node = TestNode::start(&store, running.address, &settings).await?;
    assert_eq!(emit(&mut node, "rest-1", "a").await?, 1);
    wait_for_census(ONE_RESTING).await?;

    // It wakes from the state it handed over: no store read, so the command sees revision 1.
    let state = node
        .client
        .get_state(GetStateRequest {
            entity_id: "rest-1".to_string(),
        })
        .await?
        .into_inner();
    assert_eq!(any_text(state.state.as_ref()), "a");
    wait_for_census(ONE_RESTING).await?;
    assert_eq!(emit(&mut node, "rest-1", "b").await?, 2);

    // A resting entity trusts its memory exactly like one with an actor: a write behind its back conflicts.
    wait_for_census(ONE_RESTING).await?;
    write_behind_its_back(&store, "rest-1").await?;
    let error = emit(&mut node, "rest-1", "c")
        .await
        .expect_err("the resting entity's state is the one it had");
    assert_eq!(error.code(), tonic::Code::Aborted, "{error:?}");
    // The conflicting instance is replaced and the next one reads the truth from the store.
    assert_eq!(emit(&mut node, "rest-1", "d").await?, 4);
    node.stop().await?;
    wait_for_census(EntityCensus {
        actors: 0,
        resting: 0,
    })
    .await
}

async fn resting_entities_count_against_the_active_entity_limit(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let settings = [
        ("COS_PASSIVATION_REST_AFTER", "100ms"),
        ("COS_MAX_ACTIVE_ENTITIES", "1"),
    ];
    let mut node = TestNode::start(&store, running.address, &settings).await?;
    let (ids, _shard) = ids_in_one_shard("rest-lru", 2, 16);
    let (oldest, newest) = (&ids[0], &ids[1]);
    assert_eq!(emit(&mut node, oldest, "a").await?, 1);
    wait_for_census(ONE_RESTING).await?;
    assert_eq!(emit(&mut node, newest, "b").await?, 1);
    // The resting one was the least recently used: it left memory for the new one.
    wait_for_census(ONE_RESTING).await?;
    write_behind_its_back(&store, oldest).await?;
    assert_eq!(
        emit(&mut node, oldest, "c").await?,
        3,
        "recovered from the store, so it had left memory"
    );
    node.stop().await
}

async fn commands_meeting_an_entity_on_its_way_to_rest_are_answered_in_order(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let settings = [("COS_PASSIVATION_REST_AFTER", "100ms")];
    let mut node = TestNode::start(&store, running.address, &settings).await?;
    // Pauses around the rest period (checked every 50 ms), so commands keep meeting the entity while it
    // hands its state over, just after, and while it has an actor.
    let mut rests_seen = 0;
    for revision in 1..=30_u32 {
        let pause = Duration::from_millis(60 + u64::from(revision * 37 % 90));
        tokio::time::sleep(pause).await;
        if entity_census().resting == 1 {
            rests_seen += 1;
        }
        assert_eq!(
            emit(&mut node, "rest-busy", &format!("e{revision}")).await?,
            revision
        );
    }
    assert!(rests_seen > 0, "the entity never rested between commands");

    // Then eight clients at once, each pausing around the rest period: some of their commands arrive while
    // the entity is handing its state over (they are buffered by the shard and wake it from that state).
    let mut clients = Vec::new();
    for client_index in 0..8_u64 {
        let mut client = node.client.clone();
        clients.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for step in 0..10_u64 {
                let pause = Duration::from_millis(40 + (client_index * 31 + step * 53) % 120);
                tokio::time::sleep(pause).await;
                let request = ProcessCommandRequest {
                    entity_id: "rest-busy".to_string(),
                    command: Some(text_any(&format!("emit:c{client_index}s{step}"))),
                };
                let reply = client.process_command(request).await?.into_inner();
                revisions.push(reply.meta.map_or(0, |meta| meta.revision_number));
            }
            Ok::<_, tonic::Status>(revisions)
        }));
    }
    let mut revisions = Vec::new();
    for client in clients {
        revisions.extend(client.await??);
    }
    revisions.sort_unstable();
    let expected_revisions: Vec<u32> = (31..=110).collect();
    assert_eq!(
        revisions, expected_revisions,
        "each command got its own revision"
    );
    let state = node
        .client
        .get_state(GetStateRequest {
            entity_id: "rest-busy".to_string(),
        })
        .await?
        .into_inner();
    // Every event applied once, in order, across all the rests and wake-ups.
    let text = any_text(state.state.as_ref());
    let applied: Vec<&str> = text.split('|').collect();
    let sequential: Vec<String> = (1..=30).map(|revision| format!("e{revision}")).collect();
    assert_eq!(applied[..30], sequential, "{text}");
    assert_eq!(applied.len(), 110, "{text}");
    let mut concurrent: Vec<&str> = applied[30..].to_vec();
    concurrent.sort_unstable();
    concurrent.dedup();
    assert_eq!(
        concurrent.len(),
        80,
        "every concurrent event applied once: {text}"
    );
    node.stop().await
}

on_both_stores!(
    an_idle_entity_rests_without_its_actor_and_keeps_its_state,
    resting_entities_count_against_the_active_entity_limit,
    commands_meeting_an_entity_on_its_way_to_rest_are_answered_in_order,
);
