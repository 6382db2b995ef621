//! The bundled example handler behind a real node: what the quick start shows a newcomer.

use cos_core::proto::chief_of_state::v1::{GetStateRequest, ProcessCommandRequest};
use cos_integration::bank::proto::{Account, Deposit, DepositMany, OpenAccount, Withdraw};
use cos_integration::bank::{pack, unpack};
use cos_integration::support::node::{Backend, TestNode, TestStore};
use prost::Name;
use tokio::net::TcpListener;
use tonic::Code;
use tonic_types::StatusExt;

fn request<M: Name>(account: &str, command: &M) -> ProcessCommandRequest {
    ProcessCommandRequest {
        entity_id: account.to_string(),
        command: Some(pack(command)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_account_lives_through_cos() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let handler_address = listener.local_addr()?;
    let _handler = tokio::spawn(cos_integration::bank::serve(
        listener,
        std::future::pending(),
    ));
    let store = TestStore::new(Backend::Sqlite)?;
    let mut node = TestNode::start(&store, handler_address, &[]).await?;

    let opened = node
        .client
        .process_command(request(
            "acct-1",
            &OpenAccount {
                owner: "alice".into(),
                initial_balance: 100,
            },
        ))
        .await?
        .into_inner();
    let account: Account = unpack(opened.state.as_ref().expect("state"))?;
    assert_eq!(
        (account.account_id.as_str(), account.balance),
        ("acct-1", 100)
    );

    let refused = node
        .client
        .process_command(request("acct-1", &Withdraw { amount: 500 }))
        .await
        .expect_err("insufficient funds");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let violations = refused
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.clone())
        .unwrap_or_default();
    assert_eq!(violations[0].field, "amount");

    node.client
        .process_command(request("acct-1", &Deposit { amount: 50 }))
        .await?;
    let many = node
        .client
        .process_command(request(
            "acct-1",
            &DepositMany {
                amounts: vec![1, 2, 3],
            },
        ))
        .await?
        .into_inner();
    assert_eq!(many.meta.map(|m| m.revision_number), Some(5));

    let state = node
        .client
        .get_state(GetStateRequest {
            entity_id: "acct-1".into(),
        })
        .await?
        .into_inner();
    let account: Account = unpack(state.state.as_ref().expect("state"))?;
    assert_eq!((account.owner.as_str(), account.balance), ("alice", 156));
    node.stop().await
}
