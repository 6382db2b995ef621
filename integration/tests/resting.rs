//! Resting, observed from outside and through the node's entity census and store reads: an entity idle for
//! `COS_PASSIVATION_REST_AFTER` gives up its actor but its shard keeps its state. It is still live: it trusts
//! its in-memory state (a foreign write makes its next command fail with ABORTED, as for an entity with an
//! actor), it wakes without reading the store, it counts against the active-entity limit and idles out like
//! any entity, and a request that meets it on its way to rest waits and is answered in order. Reads alone
//! let an entity rest (only commands need its actor) and are then answered from its state without reaching
//! its shard, yet still count as uses: a resting entity that is read neither idles out nor is the first
//! to go when the active-entity limit is reached.

use std::sync::Arc;
use std::time::Duration;

use cos_actors::census::{EntityCensus, EntityCounts};
use cos_core::proto::chief_of_state::v1::{GetStateRequest, ProcessCommandRequest};
use cos_integration::on_both_stores;
use cos_integration::support::faulty_journal::FaultyJournal;
use cos_integration::support::node::{
    Backend, TestNode, TestStore, emit, ids_in_one_shard, test_settings, write_behind_its_back,
};
use cos_integration::support::script_handler::{RunningHandler, ScriptHandler, any_text, text_any};
use cos_integration::support::wait_until;

/// One entity, resting, and no entity actor.
const ONE_RESTING: EntityCounts = EntityCounts {
    actors: 0,
    resting: 1,
};

/// No entity in memory at all.
const NONE_LEFT: EntityCounts = EntityCounts {
    actors: 0,
    resting: 0,
};

/// Long enough for a 100 ms rest period and its 50 ms maintenance tick on a busy machine.
const SETTLE: Duration = Duration::from_secs(10);

/// A node resting entities after 100 ms (plus `extra`), on a journal that counts recoveries.
struct RestingNode {
    store: TestStore,
    _handler: ScriptHandler,
    _running: RunningHandler,
    journal: Arc<FaultyJournal>,
    node: TestNode,
    census: Arc<EntityCensus>,
}

impl RestingNode {
    async fn start(backend: Backend, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let store = TestStore::new(backend)?;
        let handler = ScriptHandler::default();
        let running = handler.serve().await?;
        let journal = Arc::new(FaultyJournal::new(store.open_journal().await?));
        let mut settings = vec![("COS_PASSIVATION_REST_AFTER", "100ms")];
        settings.extend_from_slice(extra);
        let settings = test_settings(&store, running.address, &settings)?;
        let node = TestNode::start_with_journal(settings, journal.clone()).await?;
        let census = node.node.entity_census();
        Ok(Self {
            store,
            _handler: handler,
            _running: running,
            journal,
            node,
            census,
        })
    }

    async fn wait_for_counts(&self, expected: EntityCounts) -> anyhow::Result<()> {
        if wait_until(SETTLE, || self.census.counts() == expected).await {
            return Ok(());
        }
        anyhow::bail!(
            "entity counts stayed {:?}, expected {expected:?}",
            self.census.counts()
        )
    }

    async fn state_text(&mut self, entity_id: &str) -> anyhow::Result<String> {
        let request = GetStateRequest {
            entity_id: entity_id.to_string(),
        };
        let state = self.node.client.get_state(request).await?.into_inner();
        Ok(any_text(state.state.as_ref()))
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.node.stop().await?;
        let left = self.census.counts();
        anyhow::ensure!(left == NONE_LEFT, "entities outlived their node: {left:?}");
        Ok(())
    }
}

async fn an_idle_entity_rests_without_its_actor_and_wakes_from_its_state(
    backend: Backend,
) -> anyhow::Result<()> {
    let mut resting = RestingNode::start(backend, &[]).await?;
    assert_eq!(emit(&mut resting.node, "rest-1", "a").await?, 1);
    resting.wait_for_counts(ONE_RESTING).await?;
    let recoveries = resting.journal.recovery_reads();

    // A read is answered by the shard from the resting state: no actor, no store read.
    assert_eq!(resting.state_text("rest-1").await?, "a");
    assert_eq!(resting.census.counts(), ONE_RESTING);
    // A command wakes it from the state it handed over, without reading the store.
    assert_eq!(emit(&mut resting.node, "rest-1", "b").await?, 2);
    assert_eq!(resting.journal.recovery_reads(), recoveries);

    // A resting entity trusts its memory exactly like one with an actor: a write behind its back conflicts.
    resting.wait_for_counts(ONE_RESTING).await?;
    write_behind_its_back(&resting.store, "rest-1").await?;
    let error = emit(&mut resting.node, "rest-1", "c")
        .await
        .expect_err("the resting entity's state is the one it had");
    assert_eq!(error.code(), tonic::Code::Aborted, "{error:?}");
    // The conflicting instance is replaced and the next one reads the truth from the store.
    assert_eq!(emit(&mut resting.node, "rest-1", "d").await?, 4);
    assert!(resting.journal.recovery_reads() > recoveries);
    resting.stop().await
}

async fn resting_entities_count_against_the_active_entity_limit(
    backend: Backend,
) -> anyhow::Result<()> {
    let mut resting = RestingNode::start(backend, &[("COS_MAX_ACTIVE_ENTITIES", "1")]).await?;
    let (ids, _shard) = ids_in_one_shard("rest-lru", 2, 16);
    let (oldest, newest) = (&ids[0], &ids[1]);
    assert_eq!(emit(&mut resting.node, oldest, "a").await?, 1);
    resting.wait_for_counts(ONE_RESTING).await?;
    assert_eq!(emit(&mut resting.node, newest, "b").await?, 1);
    // The resting one was the least recently used: it left memory for the new one.
    resting.wait_for_counts(ONE_RESTING).await?;
    write_behind_its_back(&resting.store, oldest).await?;
    assert_eq!(
        emit(&mut resting.node, oldest, "c").await?,
        3,
        "recovered from the store, so it had left memory"
    );
    resting.stop().await
}

async fn a_resting_entity_idles_out_like_any_other(backend: Backend) -> anyhow::Result<()> {
    let mut resting =
        RestingNode::start(backend, &[("COS_PASSIVATION_IDLE_TIMEOUT", "1s")]).await?;
    assert_eq!(emit(&mut resting.node, "rest-idle", "a").await?, 1);
    resting.wait_for_counts(ONE_RESTING).await?;
    resting.wait_for_counts(NONE_LEFT).await?;
    write_behind_its_back(&resting.store, "rest-idle").await?;
    assert_eq!(
        emit(&mut resting.node, "rest-idle", "b").await?,
        3,
        "recovered from the store after idling out"
    );
    resting.stop().await
}

async fn a_command_that_meets_the_entity_handing_over_its_state_waits_for_it(
    backend: Backend,
) -> anyhow::Result<()> {
    let mut resting = RestingNode::start(backend, &[]).await?;
    assert_eq!(emit(&mut resting.node, "rest-busy", "a").await?, 1);
    let recoveries = resting.journal.recovery_reads();
    // A 400 ms command keeps the actor busy; 100 ms after it was delivered (plus at most a 50 ms tick) the
    // shard asks the entity to rest, which it can only do after the command. A command sent at 250 ms meets
    // the entity on its way to rest: the shard holds it and wakes the entity from the handed-over state.
    let mut slow_client = resting.node.client.clone();
    let slow = tokio::spawn(async move {
        let request = ProcessCommandRequest {
            entity_id: "rest-busy".to_string(),
            command: Some(text_any("sleep:400:slow")),
        };
        slow_client.process_command(request).await
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(emit(&mut resting.node, "rest-busy", "after").await?, 3);
    let slow_reply = slow.await??.into_inner();
    assert_eq!(slow_reply.meta.map(|meta| meta.revision_number), Some(2));
    assert_eq!(resting.state_text("rest-busy").await?, "a|slow|after");
    assert_eq!(
        resting.journal.recovery_reads(),
        recoveries,
        "woken from the handed-over state, not from the store"
    );

    // Then commands with pauses of 60 to 249 ms around the rest period (100 ms, looked for every 50 ms), so
    // they meet the entity resting, on its way to rest and with its actor: each is applied once, in order.
    let mut rests_seen = 0;
    for step in 1..=20_u32 {
        let pause = Duration::from_millis(60 + u64::from(step * 37 % 190));
        tokio::time::sleep(pause).await;
        if resting.census.counts() == ONE_RESTING {
            rests_seen += 1;
        }
        assert_eq!(
            emit(&mut resting.node, "rest-busy", &format!("e{step}")).await?,
            step + 3
        );
    }
    assert!(rests_seen > 0, "the entity never rested between commands");
    let steps: Vec<String> = (1..=20).map(|step| format!("e{step}")).collect();
    assert_eq!(
        resting.state_text("rest-busy").await?,
        format!("a|slow|after|{}", steps.join("|"))
    );
    assert_eq!(resting.journal.recovery_reads(), recoveries);
    resting.stop().await
}

/// Reads `entity_id` every 20 ms until the node holds just one resting entity, or gives up after [`SETTLE`].
async fn read_until_it_rests(resting: &mut RestingNode, entity_id: &str) -> anyhow::Result<()> {
    let give_up = tokio::time::Instant::now() + SETTLE;
    while resting.census.counts() != ONE_RESTING {
        anyhow::ensure!(
            tokio::time::Instant::now() < give_up,
            "still {:?} while being read",
            resting.census.counts()
        );
        resting.state_text(entity_id).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn reads_alone_let_an_entity_rest_and_are_answered_from_its_state(
    backend: Backend,
) -> anyhow::Result<()> {
    let mut resting = RestingNode::start(backend, &[]).await?;
    assert_eq!(emit(&mut resting.node, "rest-read", "a").await?, 1);
    let recoveries = resting.journal.recovery_reads();
    // Read without pause: the entity still gives up its actor once it has run no command for 100 ms.
    read_until_it_rests(&mut resting, "rest-read").await?;
    for _ in 0..20 {
        assert_eq!(resting.state_text("rest-read").await?, "a");
    }
    assert_eq!(resting.census.counts(), ONE_RESTING);
    // A command wakes it; the read right after its answer sees it, and the entity rests again after it.
    assert_eq!(emit(&mut resting.node, "rest-read", "b").await?, 2);
    assert_eq!(resting.state_text("rest-read").await?, "a|b");
    read_until_it_rests(&mut resting, "rest-read").await?;
    assert_eq!(resting.state_text("rest-read").await?, "a|b");
    assert_eq!(
        resting.journal.recovery_reads(),
        recoveries,
        "every read was answered from memory"
    );
    resting.stop().await
}

async fn a_resting_entity_that_is_read_does_not_idle_out(backend: Backend) -> anyhow::Result<()> {
    let mut resting =
        RestingNode::start(backend, &[("COS_PASSIVATION_IDLE_TIMEOUT", "1s")]).await?;
    assert_eq!(emit(&mut resting.node, "rest-read-idle", "a").await?, 1);
    resting.wait_for_counts(ONE_RESTING).await?;
    let recoveries = resting.journal.recovery_reads();
    // Reads every 200 ms for 2.5 s: longer than the idle timeout, never idle for as long. (A read after a
    // passivation would start it again from the store, hence the count of store reads.)
    for _ in 0..12 {
        assert_eq!(resting.state_text("rest-read-idle").await?, "a");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(resting.census.counts(), ONE_RESTING);
    assert_eq!(
        resting.journal.recovery_reads(),
        recoveries,
        "never left memory"
    );
    // Once reads stop, it idles out after all.
    resting.wait_for_counts(NONE_LEFT).await?;
    resting.stop().await
}

async fn a_resting_entity_that_is_read_outlives_an_unread_one_at_the_limit(
    backend: Backend,
) -> anyhow::Result<()> {
    let mut resting = RestingNode::start(backend, &[("COS_MAX_ACTIVE_ENTITIES", "2")]).await?;
    let (ids, _shard) = ids_in_one_shard("rest-read-lru", 3, 16);
    let (read, unread, newest) = (&ids[0], &ids[1], &ids[2]);
    assert_eq!(emit(&mut resting.node, read, "a").await?, 1);
    assert_eq!(emit(&mut resting.node, unread, "b").await?, 1);
    let two_resting = EntityCounts {
        actors: 0,
        resting: 2,
    };
    resting.wait_for_counts(two_resting).await?;
    // The first one to rest is read (answered without its shard), then a third entity needs room.
    assert_eq!(resting.state_text(read).await?, "a");
    assert_eq!(emit(&mut resting.node, newest, "c").await?, 1);
    resting.wait_for_counts(two_resting).await?;

    write_behind_its_back(&resting.store, read).await?;
    let error = emit(&mut resting.node, read, "d")
        .await
        .expect_err("the read entity stayed in memory");
    assert_eq!(error.code(), tonic::Code::Aborted, "{error:?}");
    write_behind_its_back(&resting.store, unread).await?;
    assert_eq!(
        emit(&mut resting.node, unread, "e").await?,
        3,
        "the unread entity left memory and recovered from the store"
    );
    resting.stop().await
}

on_both_stores!(
    an_idle_entity_rests_without_its_actor_and_wakes_from_its_state,
    resting_entities_count_against_the_active_entity_limit,
    a_resting_entity_idles_out_like_any_other,
    a_command_that_meets_the_entity_handing_over_its_state_waits_for_it,
    reads_alone_let_an_entity_rest_and_are_answered_from_its_state,
    a_resting_entity_that_is_read_does_not_idle_out,
    a_resting_entity_that_is_read_outlives_an_unread_one_at_the_limit,
);
