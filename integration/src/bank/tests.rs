//! Specifications of the bank domain and its gRPC service.

use cos_core::proto::chief_of_state::v1::MetaData;
use cos_core::proto::chief_of_state::v1::write_side_handler_service_client::WriteSideHandlerServiceClient;

use super::*;

fn open_account(balance: i64) -> Account {
    Account {
        account_id: "acct-1".to_string(),
        owner: "alice".to_string(),
        balance,
    }
}

fn field_violations(status: &Status) -> Vec<(String, String)> {
    let Some(bad_request) = status.get_details_bad_request() else {
        return Vec::new();
    };
    bad_request
        .field_violations
        .into_iter()
        .map(|violation| (violation.field, violation.description))
        .collect()
}

fn meta(entity_id: &str) -> MetaData {
    MetaData {
        entity_id: entity_id.to_string(),
        ..Default::default()
    }
}

#[test]
fn pack_uses_the_googleapis_type_url() {
    let any = pack(&Deposit { amount: 5 });
    assert_eq!(any.type_url, "type.googleapis.com/examples.bank.v1.Deposit");
    assert_eq!(pack(&()).type_url, EMPTY_TYPE_URL);
}

#[test]
fn unpack_round_trips_and_refuses_another_type() {
    let any = pack(&Deposit { amount: 5 });
    let deposit: Deposit = unpack(&any).unwrap();
    assert_eq!(deposit.amount, 5);
    let error = unpack::<Withdraw>(&any).unwrap_err();
    assert!(
        matches!(error, UnpackError::UnexpectedType { .. }),
        "{error}"
    );
}

#[test]
fn empty_prior_state_is_a_new_entity_and_account_prior_state_is_open() {
    assert_eq!(decode_state(Some(&pack(&()))).unwrap(), None);
    assert_eq!(decode_state(None).unwrap(), None);
    let account = open_account(10);
    assert_eq!(decode_state(Some(&pack(&account))).unwrap(), Some(account));
    let error = decode_state(Some(&pack(&Deposit { amount: 1 }))).unwrap_err();
    assert!(matches!(error, BankError::UnknownState { .. }), "{error}");
}

#[test]
fn open_account_on_new_entity_emits_account_opened() {
    let command = BankCommand::OpenAccount(OpenAccount {
        owner: "alice".to_string(),
        initial_balance: 100,
    });
    let events = decide(&command, None).unwrap();
    assert_eq!(
        events,
        vec![BankEvent::AccountOpened(AccountOpened {
            owner: "alice".to_string(),
            initial_balance: 100,
        })]
    );
}

#[test]
fn open_account_on_open_account_is_already_exists() {
    let command = BankCommand::OpenAccount(OpenAccount {
        owner: "bob".to_string(),
        initial_balance: 0,
    });
    let status = Status::from(decide(&command, Some(&open_account(0))).unwrap_err());
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(status.message(), "account already open");
}

#[test]
fn deposit_on_open_account_emits_funds_deposited() {
    let events = decide(
        &BankCommand::Deposit(Deposit { amount: 50 }),
        Some(&open_account(100)),
    )
    .unwrap();
    assert_eq!(
        events,
        vec![BankEvent::FundsDeposited(FundsDeposited { amount: 50 })]
    );
}

#[test]
fn deposit_of_non_positive_amount_is_invalid_argument_with_bad_request_on_amount() {
    for amount in [0, -5] {
        let command = BankCommand::Deposit(Deposit { amount });
        let status = Status::from(decide(&command, Some(&open_account(100))).unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            field_violations(&status),
            vec![(
                "amount".to_string(),
                "must be greater than zero".to_string()
            )]
        );
    }
}

#[test]
fn deposit_on_unopened_account_is_failed_precondition() {
    let status =
        Status::from(decide(&BankCommand::Deposit(Deposit { amount: 5 }), None).unwrap_err());
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "account not open");
}

#[test]
fn deposit_that_would_overflow_the_balance_is_out_of_range() {
    let command = BankCommand::Deposit(Deposit { amount: 1 });
    let status = Status::from(decide(&command, Some(&open_account(i64::MAX))).unwrap_err());
    assert_eq!(status.code(), Code::OutOfRange);
}

#[test]
fn withdraw_within_balance_emits_funds_withdrawn() {
    let events = decide(
        &BankCommand::Withdraw(Withdraw { amount: 100 }),
        Some(&open_account(100)),
    )
    .unwrap();
    assert_eq!(
        events,
        vec![BankEvent::FundsWithdrawn(FundsWithdrawn { amount: 100 })]
    );
}

#[test]
fn withdraw_beyond_balance_is_failed_precondition_insufficient_funds_with_bad_request() {
    let command = BankCommand::Withdraw(Withdraw { amount: 150 });
    let status = Status::from(decide(&command, Some(&open_account(100))).unwrap_err());
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "insufficient funds");
    let violations = field_violations(&status);
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].0, "amount");
}

#[test]
fn withdraw_on_unopened_account_is_failed_precondition() {
    let status =
        Status::from(decide(&BankCommand::Withdraw(Withdraw { amount: 1 }), None).unwrap_err());
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "account not open");
}

#[test]
fn deposit_many_emits_one_funds_deposited_per_amount_in_order() {
    let command = BankCommand::DepositMany(DepositMany {
        amounts: vec![10, 20, 30],
    });
    let events = decide(&command, Some(&open_account(0))).unwrap();
    let amounts: Vec<i64> = events
        .iter()
        .map(|event| match event {
            BankEvent::FundsDeposited(funds_deposited) => funds_deposited.amount,
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(amounts, vec![10, 20, 30]);
}

#[test]
fn deposit_many_reports_every_non_positive_amount_and_emits_nothing() {
    let command = BankCommand::DepositMany(DepositMany {
        amounts: vec![10, 0, 30, -1],
    });
    let status = Status::from(decide(&command, Some(&open_account(0))).unwrap_err());
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = field_violations(&status)
        .into_iter()
        .map(|(field, _)| field)
        .collect();
    assert_eq!(
        fields,
        vec!["amounts[1]".to_string(), "amounts[3]".to_string()]
    );
}

#[test]
fn deposit_many_without_amounts_is_invalid_argument() {
    let command = BankCommand::DepositMany(DepositMany {
        amounts: Vec::new(),
    });
    let status = Status::from(decide(&command, Some(&open_account(0))).unwrap_err());
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[test]
fn get_balance_emits_no_events_even_on_a_new_entity() {
    assert!(
        decide(
            &BankCommand::GetBalance(GetBalance {}),
            Some(&open_account(5))
        )
        .unwrap()
        .is_empty()
    );
    assert!(
        decide(&BankCommand::GetBalance(GetBalance {}), None)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn unknown_command_type_is_invalid_argument_naming_the_type_url() {
    let request = HandleCommandRequest {
        command: Some(pack(&Account::default())),
        prior_state: Some(pack(&())),
        prior_event_meta: None,
    };
    let status = Status::from(handle_command(&request).unwrap_err());
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "unknown command type type.googleapis.com/examples.bank.v1.Account"
    );
}

#[test]
fn handle_command_packs_events_in_order() {
    let request = HandleCommandRequest {
        command: Some(pack(&DepositMany {
            amounts: vec![1, 2],
        })),
        prior_state: Some(pack(&open_account(0))),
        prior_event_meta: None,
    };
    let events = handle_command(&request).unwrap();
    let amounts: Vec<i64> = events
        .iter()
        .map(|any| unpack::<FundsDeposited>(any).unwrap().amount)
        .collect();
    assert_eq!(amounts, vec![1, 2]);
}

#[test]
fn account_opened_builds_the_account_from_entity_id_owner_and_initial_balance() {
    let event = BankEvent::AccountOpened(AccountOpened {
        owner: "alice".to_string(),
        initial_balance: 100,
    });
    let account = apply(None, &event, "acct-1").unwrap();
    assert_eq!(account, open_account(100));
}

#[test]
fn deposits_and_withdrawals_adjust_the_balance() {
    let after_deposit = apply(
        Some(open_account(100)),
        &BankEvent::FundsDeposited(FundsDeposited { amount: 50 }),
        "acct-1",
    )
    .unwrap();
    assert_eq!(after_deposit.balance, 150);
    let after_withdrawal = apply(
        Some(after_deposit),
        &BankEvent::FundsWithdrawn(FundsWithdrawn { amount: 30 }),
        "acct-1",
    )
    .unwrap();
    assert_eq!(after_withdrawal, open_account(120));
}

#[test]
fn unknown_event_type_is_invalid_argument() {
    let request = HandleEventRequest {
        event: Some(pack(&Deposit { amount: 1 })),
        prior_state: Some(pack(&open_account(0))),
        event_meta: Some(meta("acct-1")),
    };
    let status = Status::from(handle_event(&request).unwrap_err());
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "unknown event type type.googleapis.com/examples.bank.v1.Deposit"
    );
}

#[tokio::test]
async fn handler_answers_commands_and_events_over_a_real_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown_sender, shutdown_receiver) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, async {
        let _ = shutdown_receiver.await;
    }));

    let mut client = WriteSideHandlerServiceClient::connect(format!("http://{address}"))
        .await
        .unwrap();

    let opened = client
        .handle_command(HandleCommandRequest {
            command: Some(pack(&OpenAccount {
                owner: "alice".to_string(),
                initial_balance: 100,
            })),
            prior_state: Some(pack(&())),
            prior_event_meta: Some(meta("acct-1")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.events.len(), 1);

    let state = client
        .handle_event(HandleEventRequest {
            event: Some(opened.events[0].clone()),
            prior_state: Some(pack(&())),
            event_meta: Some(meta("acct-1")),
        })
        .await
        .unwrap()
        .into_inner()
        .resulting_state
        .unwrap();
    assert_eq!(unpack::<Account>(&state).unwrap(), open_account(100));

    let status = client
        .handle_command(HandleCommandRequest {
            command: Some(pack(&Withdraw { amount: 500 })),
            prior_state: Some(state),
            prior_event_meta: Some(meta("acct-1")),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "insufficient funds");
    assert_eq!(field_violations(&status).len(), 1);

    let _ = shutdown_sender.send(());
    server.await.unwrap().unwrap();
}
