//! The write-side circuit breaker (`COS_WRITE_SIDE_BREAKER_*`) against a real handler.

use std::time::Duration;

use cos_core::proto::chief_of_state::v1::ProcessCommandRequest;
use cos_integration::support::node::{Backend, TestNode, TestStore};
use cos_integration::support::script_handler::{ScriptHandler, text_any};
use tonic::Code;

fn command(script: &str) -> ProcessCommandRequest {
    ProcessCommandRequest {
        entity_id: "guarded".into(),
        command: Some(text_any(script)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_after_repeated_failures_and_closes_after_its_reset_timeout()
-> anyhow::Result<()> {
    let store = TestStore::new(Backend::Sqlite)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let settings = [
        ("COS_WRITE_SIDE_BREAKER_ENABLED", "true"),
        ("COS_WRITE_SIDE_BREAKER_MAX_FAILURES", "2"),
        ("COS_WRITE_SIDE_BREAKER_RESET_TIMEOUT", "1s"),
    ];
    let mut node = TestNode::start(&store, running.address, &settings).await?;

    // Business rejections are answers, not failures: they never open the breaker.
    for _ in 0..3 {
        let error = node
            .client
            .process_command(command("fail:9:insufficient funds"))
            .await
            .expect_err("rejected");
        assert_eq!(error.code(), Code::FailedPrecondition);
    }
    for _ in 0..2 {
        let error = node
            .client
            .process_command(command("fail:13:boom"))
            .await
            .expect_err("handler broken");
        assert_eq!(error.code(), Code::Internal);
    }
    let calls_before = handler.commands().len();
    let error = node
        .client
        .process_command(command("emit:a"))
        .await
        .expect_err("breaker open");
    assert_eq!(error.code(), Code::Unavailable);
    assert!(
        error.message().contains("circuit breaker is open"),
        "{}",
        error.message()
    );
    assert_eq!(
        handler.commands().len(),
        calls_before,
        "failing fast: the handler was not called"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = node
        .client
        .process_command(command("emit:a"))
        .await?
        .into_inner();
    assert_eq!(
        reply.meta.map(|meta| meta.revision_number),
        Some(1),
        "the trial call closed the breaker"
    );
    node.stop().await
}
