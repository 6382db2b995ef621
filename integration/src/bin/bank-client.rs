//! `bank-client`: a small command-line client that sends bank commands to a running Chief of State, for manual
//! testing and demos of the example bank handler.
//!
//! Usage: `bank-client [--cos URL] [--entity-type NAME] <open|deposit|withdraw|deposit-many|balance|state> ...`

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cos_core::proto::chief_of_state::v1::chief_of_state_service_client::ChiefOfStateServiceClient;
use cos_core::proto::chief_of_state::v1::{GetStateRequest, MetaData, ProcessCommandRequest};
use cos_integration::bank::proto::{
    Account, Deposit, DepositMany, GetBalance, OpenAccount, Withdraw,
};
use cos_integration::bank::{is_packed, pack, unpack};
use prost::Name;
use prost_types::Any;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_types::StatusExt;

/// The gRPC metadata key that selects the entity type on a multi-type Chief of State.
const ENTITY_TYPE_HEADER: &str = "x-cos-entity-type";

/// Command-line arguments of `bank-client`.
#[derive(Debug, Parser)]
#[command(
    name = "bank-client",
    about = "Send bank-account commands to a running Chief of State"
)]
struct Cli {
    /// URL of the Chief of State gRPC API (`http://` is assumed when no scheme is given)
    #[arg(long, global = true, default_value = "http://127.0.0.1:9000")]
    cos: String,
    /// Entity type to address, sent as the `x-cos-entity-type` gRPC metadata
    #[arg(long, global = true)]
    entity_type: Option<String>,
    #[command(subcommand)]
    action: Action,
}

/// One request to Chief of State.
#[derive(Debug, Subcommand)]
enum Action {
    /// Open an account (OpenAccount)
    Open {
        /// Entity id of the account
        account_id: String,
        /// Name of the account owner
        owner: String,
        /// Balance the account opens with
        #[arg(default_value_t = 0, allow_negative_numbers = true)]
        initial_balance: i64,
    },
    /// Deposit an amount (Deposit)
    Deposit {
        /// Entity id of the account
        account_id: String,
        /// Amount to deposit, greater than zero
        #[arg(allow_negative_numbers = true)]
        amount: i64,
    },
    /// Withdraw an amount (Withdraw)
    Withdraw {
        /// Entity id of the account
        account_id: String,
        /// Amount to withdraw, greater than zero
        #[arg(allow_negative_numbers = true)]
        amount: i64,
    },
    /// Deposit several amounts in one command, one event each (DepositMany)
    DepositMany {
        /// Entity id of the account
        account_id: String,
        /// Amounts to deposit, each greater than zero
        #[arg(required = true, allow_negative_numbers = true)]
        amounts: Vec<i64>,
    },
    /// Read the balance through the write side (a GetBalance command, which persists nothing)
    Balance {
        /// Entity id of the account
        account_id: String,
    },
    /// Read the current state (GetState)
    State {
        /// Entity id of the account
        account_id: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            report_error(&error);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<String> {
    let mut client = connect(&cli.cos).await?;
    let entity_type = cli.entity_type.as_deref();
    let (account_id, command) = match cli.action {
        Action::Open {
            account_id,
            owner,
            initial_balance,
        } => (
            account_id,
            pack(&OpenAccount {
                owner,
                initial_balance,
            }),
        ),
        Action::Deposit { account_id, amount } => (account_id, pack(&Deposit { amount })),
        Action::Withdraw { account_id, amount } => (account_id, pack(&Withdraw { amount })),
        Action::DepositMany {
            account_id,
            amounts,
        } => (account_id, pack(&DepositMany { amounts })),
        Action::Balance { account_id } => (account_id, pack(&GetBalance {})),
        Action::State { account_id } => {
            let request = with_entity_type(
                GetStateRequest {
                    entity_id: account_id.clone(),
                },
                entity_type,
            )?;
            let response = client.get_state(request).await?.into_inner();
            return Ok(describe_state(
                &account_id,
                response.state.as_ref(),
                response.meta.as_ref(),
            ));
        }
    };
    let request = with_entity_type(
        ProcessCommandRequest {
            entity_id: account_id.clone(),
            command: Some(command),
        },
        entity_type,
    )?;
    let response = client.process_command(request).await?.into_inner();
    Ok(describe_state(
        &account_id,
        response.state.as_ref(),
        response.meta.as_ref(),
    ))
}

/// Connects eagerly so an unreachable Chief of State is reported as such, not as a failed command.
async fn connect(cos_url: &str) -> anyhow::Result<ChiefOfStateServiceClient<Channel>> {
    let url = if cos_url.contains("://") {
        cos_url.to_string()
    } else {
        format!("http://{cos_url}")
    };
    let endpoint = Endpoint::from_shared(url.clone())
        .with_context(|| format!("invalid chief of state url {cos_url}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach chief of state at {url} (is it running?)"))?;
    Ok(ChiefOfStateServiceClient::new(channel))
}

fn with_entity_type<T>(message: T, entity_type: Option<&str>) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    if let Some(entity_type) = entity_type {
        let value = MetadataValue::try_from(entity_type)
            .with_context(|| format!("entity type {entity_type:?} is not a valid header value"))?;
        request.metadata_mut().insert(ENTITY_TYPE_HEADER, value);
    }
    Ok(request)
}

/// Renders a state as one line, e.g. `account acct-1 owner=alice balance=150 revision=3`.
fn describe_state(account_id: &str, state: Option<&Any>, meta: Option<&MetaData>) -> String {
    let revision = meta.map_or(0, |meta| meta.revision_number);
    let Some(state) = state else {
        return format!("account {account_id} has no state revision={revision}");
    };
    if is_packed::<()>(state) {
        return format!("account {account_id} not open revision={revision}");
    }
    if !is_packed::<Account>(state) {
        return format!(
            "account {account_id} has a state of type {} (not {}) revision={revision}",
            state.type_url,
            Account::full_name()
        );
    }
    match unpack::<Account>(state) {
        Ok(account) => format!(
            "account {} owner={} balance={} revision={revision}",
            account.account_id, account.owner, account.balance
        ),
        Err(error) => {
            format!("account {account_id} has an unreadable state ({error}) revision={revision}")
        }
    }
}

/// Prints `error: <code>: <message>` for a gRPC error (plus any `BadRequest` field violations), or the error
/// chain for anything else.
fn report_error(error: &anyhow::Error) {
    let Some(status) = error.downcast_ref::<Status>() else {
        eprintln!("error: {error:#}");
        return;
    };
    eprintln!(
        "error: {}: {}",
        cos_server::readside_cli::grpc_code_name(status.code()),
        status.message()
    );
    if let Some(bad_request) = status.get_details_bad_request() {
        for violation in bad_request.field_violations {
            eprintln!("  {}: {}", violation.field, violation.description);
        }
    }
}
