//! A write handler that goes away and comes back on the same address: commands fail UNAVAILABLE (nothing
//! persisted) while it is down and succeed again once it is back, over a new connection that the handler
//! client opens on its own. The handler is a separate process, so its connections really close.

use std::net::SocketAddr;

use cos_core::proto::chief_of_state::v1::ProcessCommandRequest;
use cos_integration::bench::counter_handler::counter_any;
use cos_integration::bench::process::{ChildProcess, free_port, sibling_binary};
use cos_integration::support::node::{Backend, TestNode, TestStore};
use tonic::Code;

async fn start_handler(address: SocketAddr) -> anyhow::Result<ChildProcess> {
    ChildProcess::start(
        "handler",
        sibling_binary("cos-bench")?,
        &["handler".into(), "--listen".into(), address.to_string()],
        &[],
        address,
    )
    .await
}

fn increment(entity_id: &str) -> ProcessCommandRequest {
    ProcessCommandRequest {
        entity_id: entity_id.to_string(),
        command: Some(counter_any(1)),
    }
}

#[tokio::test]
async fn commands_succeed_again_once_a_restarted_handler_is_back() -> anyhow::Result<()> {
    let address: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let mut handler = start_handler(address).await?;
    let store = TestStore::new(Backend::Sqlite)?;
    let mut node = TestNode::start(&store, address, &[]).await?;
    let first = node
        .client
        .process_command(increment("restarted-1"))
        .await?
        .into_inner();
    assert_eq!(first.meta.map(|meta| meta.revision_number), Some(1));

    handler.kill_hard().await?;
    let error = node
        .client
        .process_command(increment("restarted-1"))
        .await
        .expect_err("the handler is gone");
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");

    let handler = start_handler(address).await?;
    let second = node
        .client
        .process_command(increment("restarted-1"))
        .await?
        .into_inner();
    assert_eq!(
        second.meta.map(|meta| meta.revision_number),
        Some(2),
        "the failed command left no trace and the next one went through"
    );
    node.stop().await?;
    handler.stop().await?;
    Ok(())
}
