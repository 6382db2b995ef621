//! Message sizes at the edges of the gateway and the handler client: a state far larger than any per-call
//! buffer travels intact (client → CoS → handler → store → GetState), a request over the gateway's limit is
//! refused before anything runs with RESOURCE_EXHAUSTED (as grpc-java refuses it), naming the size and the
//! limit, and so is a command whose resulting state would make a reply over the limit, before it is stored.

use cos_core::limits::state_reply_len;
use cos_core::proto::chief_of_state::v1::{
    GetStateRequest, HandleEventResponse, MetaData, ProcessCommandRequest,
};
use cos_integration::support::node::{Backend, TestNode, TestStore};
use cos_integration::support::script_handler::{RunningHandler, ScriptHandler, any_text, text_any};
use cos_server::node::MAX_MESSAGE_BYTES;
use prost::Message;
use tonic::Code;

fn command(entity_id: &str, script: &str) -> ProcessCommandRequest {
    ProcessCommandRequest {
        entity_id: entity_id.to_string(),
        command: Some(text_any(script)),
    }
}

/// A node on a fresh store with the script handler; the store and handler live as long as the returned values.
async fn start(
    backend: Backend,
) -> anyhow::Result<(TestStore, ScriptHandler, RunningHandler, TestNode)> {
    let store = TestStore::new(backend)?;
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let node = TestNode::start(&store, running.address, &[]).await?;
    Ok((store, handler, running, node))
}

async fn a_large_state_travels_intact(backend: Backend) -> anyhow::Result<()> {
    let (_store, _handler, _running, mut node) = start(backend).await?;
    // Two 400 KB events: the second command carries the first's state to the handler and back.
    let first = "a".repeat(400_000);
    let second = "b".repeat(400_000);
    node.client
        .process_command(command("big-1", &format!("emit:{first}")))
        .await?;
    let reply = node
        .client
        .process_command(command("big-1", &format!("emit:{second}")))
        .await?
        .into_inner();
    let expected = format!("{first}|{second}");
    assert_eq!(any_text(reply.state.as_ref()), expected);
    let stored = node
        .client
        .get_state(GetStateRequest {
            entity_id: "big-1".to_string(),
        })
        .await?
        .into_inner();
    assert_eq!(any_text(stored.state.as_ref()), expected);
    assert_eq!(stored.meta.map(|meta| meta.revision_number), Some(2));
    node.stop().await
}

async fn a_request_over_the_limit_is_refused_and_changes_nothing(
    backend: Backend,
) -> anyhow::Result<()> {
    let (_store, handler, _running, mut node) = start(backend).await?;
    let oversized = format!("emit:{}", "c".repeat(MAX_MESSAGE_BYTES + 1));
    let error = node
        .client
        .process_command(command("big-2", &oversized))
        .await
        .expect_err("over the gateway's message limit");
    assert_eq!(error.code(), Code::ResourceExhausted, "{error:?}");
    assert!(
        error.message().contains(&MAX_MESSAGE_BYTES.to_string()),
        "the limit is named: {}",
        error.message()
    );
    assert!(
        handler.commands().is_empty(),
        "the handler was never called"
    );
    let missing = node
        .client
        .get_state(GetStateRequest {
            entity_id: "big-2".to_string(),
        })
        .await
        .expect_err("nothing was stored");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    node.stop().await
}

/// The longest text state whose `HandleEventResponse` still fits the handler client's limit.
fn longest_state_the_handler_can_return() -> usize {
    let response_len = |length: usize| {
        HandleEventResponse {
            resulting_state: Some(text_any(&"s".repeat(length))),
        }
        .encoded_len()
    };
    let (mut fits, mut too_long) = (0, MAX_MESSAGE_BYTES);
    while too_long - fits > 1 {
        let middle = (fits + too_long) / 2;
        if response_len(middle) <= MAX_MESSAGE_BYTES {
            fits = middle;
        } else {
            too_long = middle;
        }
    }
    fits
}

async fn a_state_too_large_to_reply_is_refused_and_changes_nothing(
    backend: Backend,
) -> anyhow::Result<()> {
    let length = longest_state_the_handler_can_return();
    // The handler's reply fits; the client's reply adds the meta (entity id, revision, date) and does not.
    let smallest_meta = MetaData {
        entity_id: "big-3".to_string(),
        revision_number: 1,
        ..Default::default()
    };
    let state = text_any(&"s".repeat(length));
    assert!(state_reply_len(Some(&state), Some(&smallest_meta)) > MAX_MESSAGE_BYTES);

    let (_store, handler, _running, mut node) = start(backend).await?;
    let error = node
        .client
        .process_command(command("big-3", &format!("emit:!state-of-{length}")))
        .await
        .expect_err("the reply would exceed the message limit");
    assert_eq!(error.code(), Code::ResourceExhausted, "{error:?}");
    assert!(
        error.message().contains(&MAX_MESSAGE_BYTES.to_string())
            && error.message().contains("nothing was persisted"),
        "the limit is named: {}",
        error.message()
    );
    assert_eq!(handler.events().len(), 1, "the handler produced the state");
    let missing = node
        .client
        .get_state(GetStateRequest {
            entity_id: "big-3".to_string(),
        })
        .await
        .expect_err("nothing was stored");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    // The entity is unharmed: its next command is its first event.
    let reply = node
        .client
        .process_command(command("big-3", "emit:small"))
        .await?
        .into_inner();
    assert_eq!(any_text(reply.state.as_ref()), "small");
    assert_eq!(reply.meta.map(|meta| meta.revision_number), Some(1));
    node.stop().await
}

cos_integration::on_both_stores!(
    a_large_state_travels_intact,
    a_request_over_the_limit_is_refused_and_changes_nothing,
    a_state_too_large_to_reply_is_refused_and_changes_nothing,
);
