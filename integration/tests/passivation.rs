//! Passivation, observed from outside: a live entity trusts its in-memory state (a foreign write makes its
//! next command fail with ABORTED), while a passivated one recovers from the store on its next command and
//! sees the foreign write. So "the command succeeds on top of the foreign revision" proves passivation.

use std::time::Duration;

use cos_integration::support::node::{
    Backend, TestNode, TestStore, emit, ids_in_one_shard, write_behind_its_back,
};
use cos_integration::support::script_handler::ScriptHandler;

async fn the_active_entity_limit_passivates_the_least_recently_used(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let settings = [
        ("COS_MAX_ACTIVE_ENTITIES", "1"),
        ("COS_PASSIVATION_IDLE_TIMEOUT", "off"),
    ];
    let mut node = TestNode::start(&store, running.address, &settings).await?;
    let (ids, _shard) = ids_in_one_shard("lru", 2, 16);
    let (oldest, newest) = (&ids[0], &ids[1]);
    assert_eq!(emit(&mut node, oldest, "a").await?, 1);
    assert_eq!(
        emit(&mut node, newest, "b").await?,
        1,
        "starting a second entity evicts the first"
    );
    write_behind_its_back(&store, oldest).await?;
    assert_eq!(
        emit(&mut node, oldest, "c").await?,
        3,
        "recovered from the store"
    );

    // The control: the entity touched last is still live and trusts its memory.
    write_behind_its_back(&store, oldest).await?;
    let error = emit(&mut node, oldest, "d")
        .await
        .expect_err("live entity conflicts");
    assert_eq!(error.code(), tonic::Code::Aborted);
    node.stop().await
}

async fn idle_entities_are_passivated_after_the_idle_timeout(
    backend: Backend,
) -> anyhow::Result<()> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let mut node = TestNode::start(
        &store,
        running.address,
        &[("COS_PASSIVATION_IDLE_TIMEOUT", "1s")],
    )
    .await?;
    assert_eq!(emit(&mut node, "idle-1", "a").await?, 1);
    // Idle entities are looked for every quarter of the timeout: after 1.6 s this one has idled out.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    write_behind_its_back(&store, "idle-1").await?;
    assert_eq!(
        emit(&mut node, "idle-1", "b").await?,
        3,
        "recovered after idling out"
    );
    node.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_the_active_entity_limit_passivates_the_least_recently_used() -> anyhow::Result<()> {
    the_active_entity_limit_passivates_the_least_recently_used(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_active_entity_limit_passivates_the_least_recently_used() -> anyhow::Result<()>
{
    the_active_entity_limit_passivates_the_least_recently_used(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_idle_entities_are_passivated_after_the_idle_timeout() -> anyhow::Result<()> {
    idle_entities_are_passivated_after_the_idle_timeout(Backend::Sqlite).await
}
