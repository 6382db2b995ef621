//! A `cos` process killed (SIGKILL) while its read side is delivering: after a restart on the same data,
//! every event reaches the handler, in order per entity; what was acknowledged but not yet committed as an
//! offset when the process died comes again (at-least-once), nothing is lost.

use std::net::SocketAddr;
use std::time::Duration;

use cos_core::proto::chief_of_state::v1::ProcessCommandRequest;
use cos_core::proto::chief_of_state::v1::chief_of_state_service_client::ChiefOfStateServiceClient;
use cos_integration::bench::process::ChildProcess;
use cos_integration::support::read_handler::{
    Behaviour, ReadHandlerServer, Rule, assert_complete_and_ordered,
};
use cos_integration::support::read_side_node::start_read_side_process;
use cos_integration::support::script_handler::{ScriptHandler, text_any};
use cos_integration::support::wait_until;

const ENTITIES: usize = 4;
const EVENTS_PER_ENTITY: u32 = 10;

async fn start_node(
    data: &tempfile::TempDir,
    write_handler: SocketAddr,
    server: &ReadHandlerServer,
) -> anyhow::Result<ChildProcess> {
    start_read_side_process(data, write_handler, server.environment("crashy")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_redelivers_what_it_had_not_committed_and_loses_nothing() -> anyhow::Result<()>
{
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    // Slow answers keep deliveries in flight when the process dies.
    let server = ReadHandlerServer::start_grpc(
        Behaviour::new(Rule::AcceptAll).with_delay(Duration::from_millis(15)),
    )
    .await;
    let data = tempfile::TempDir::new()?;
    let mut node = start_node(&data, running.address, &server).await?;
    let mut client = ChiefOfStateServiceClient::connect(format!("http://{}", node.address)).await?;
    for revision in 1..=EVENTS_PER_ENTITY {
        for entity in 0..ENTITIES {
            client
                .process_command(ProcessCommandRequest {
                    entity_id: format!("crash-{entity}"),
                    command: Some(text_any(&format!("emit:e{revision}"))),
                })
                .await?;
        }
    }
    let total = ENTITIES * EVENTS_PER_ENTITY as usize;
    let some_delivered = wait_until(Duration::from_secs(15), || server.accepted().len() >= 5).await;
    assert!(some_delivered);
    node.kill_hard().await?;
    drop(node);
    let before_restart = server.accepted().len();
    assert!(
        before_restart < total,
        "the kill came before the end: {before_restart}"
    );

    let restarted = start_node(&data, running.address, &server).await?;
    let accepted = server
        .wait_for_distinct(total, Duration::from_secs(30))
        .await;
    assert_complete_and_ordered(&accepted, ENTITIES, EVENTS_PER_ENTITY);
    restarted.stop().await
}
