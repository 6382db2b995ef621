//! The example bank-account write handler: a complete, small `WriteSideHandlerService` that the black-box tests,
//! the `bank-handler` binary and the benchmarks run Chief of State against.
//!
//! The domain logic is pure (`decide` turns a command into events, `apply` folds an event into the state) so it
//! can be tested without a socket; `BankHandler` only unpacks the gRPC requests, calls it, and maps `BankError`
//! to a gRPC `Status` in one place (`impl From<BankError> for Status`).

use std::future::Future;

use crate::net::accept_without_delay;
use cos_core::proto::chief_of_state::v1::write_side_handler_service_server::{
    WriteSideHandlerService, WriteSideHandlerServiceServer,
};
use cos_core::proto::chief_of_state::v1::{
    HandleCommandRequest, HandleCommandResponse, HandleEventRequest, HandleEventResponse,
};
use prost::{Message, Name};
use prost_types::Any;
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use self::proto::{
    Account, AccountOpened, Deposit, DepositMany, FundsDeposited, FundsWithdrawn, GetBalance,
    OpenAccount, Withdraw,
};

/// The generated `examples.bank.v1` messages; each implements `prost::Name` so it can be packed into an `Any`.
pub mod proto {
    tonic::include_proto!("examples.bank.v1");
}

/// Type URL of `google.protobuf.Empty`, the prior state Chief of State sends for a never-persisted entity.
pub const EMPTY_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Empty";

/// Packs a message into an `Any` with the canonical `type.googleapis.com/<full name>` type URL, the form
/// Chief of State and handlers written in other languages produce and expect.
pub fn pack<M: Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// Reports whether `any` holds an `M`, comparing the fully qualified name after the last `/` of the type URL
/// (the domain part is not significant, as in protobuf's own `Any.Is`).
pub fn is_packed<M: Name>(any: &Any) -> bool {
    match any.type_url.rsplit_once('/') {
        Some((_domain, full_name)) => full_name == M::full_name(),
        None => false,
    }
}

/// Unpacks an `M` from `any`, refusing an `Any` of another type instead of misreading its bytes.
pub fn unpack<M: Message + Default + Name>(any: &Any) -> Result<M, UnpackError> {
    if !is_packed::<M>(any) {
        return Err(UnpackError::UnexpectedType {
            expected: M::full_name(),
            actual_type_url: any.type_url.clone(),
        });
    }
    M::decode(any.value.as_slice()).map_err(|source| UnpackError::Decode {
        type_url: any.type_url.clone(),
        source,
    })
}

/// Why an `Any` could not be unpacked into the requested message type.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The `Any` holds another message type.
    #[error("expected a packed {expected}, got type url {actual_type_url}")]
    UnexpectedType {
        expected: String,
        actual_type_url: String,
    },
    /// The type URL matched but the bytes are not a valid encoding of the message.
    #[error("cannot decode {type_url}")]
    Decode {
        type_url: String,
        #[source]
        source: prost::DecodeError,
    },
}

/// One invalid field of a command, reported to the client as a `google.rpc.BadRequest` field violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    /// Path of the field in the command, e.g. `amount` or `amounts[2]`.
    pub field: String,
    /// Why the value is refused.
    pub description: String,
}

impl InvalidField {
    fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        InvalidField {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Why the bank refuses a command or cannot apply an event; mapped to a gRPC `Status` by `From<BankError>`.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    /// `OpenAccount` on an account that is already open.
    #[error("account already open")]
    AlreadyOpen,
    /// A command or event that needs an open account reached a new entity.
    #[error("account not open")]
    NotOpen,
    /// A withdrawal larger than the balance.
    #[error("insufficient funds")]
    InsufficientFunds { balance: i64, amount: i64 },
    /// One or more fields of the command are invalid (all of them are reported at once).
    #[error("invalid argument: {}", describe_invalid_fields(.0))]
    InvalidFields(Vec<InvalidField>),
    /// The resulting balance would not fit in an `i64`.
    #[error("balance would overflow")]
    BalanceOverflow,
    /// The command is not a bank command.
    #[error("unknown command type {type_url}")]
    UnknownCommand { type_url: String },
    /// The event is not a bank event.
    #[error("unknown event type {type_url}")]
    UnknownEvent { type_url: String },
    /// The prior state is neither `google.protobuf.Empty` nor an `Account`.
    #[error("unknown state type {type_url}")]
    UnknownState { type_url: String },
    /// A required field of the handler request is absent.
    #[error("missing {0}")]
    MissingField(&'static str),
    /// A packed command, event or state has a recognised type but undecodable bytes.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
}

fn describe_invalid_fields(invalid_fields: &[InvalidField]) -> String {
    let descriptions: Vec<String> = invalid_fields
        .iter()
        .map(|invalid_field| format!("{} {}", invalid_field.field, invalid_field.description))
        .collect();
    descriptions.join("; ")
}

/// The one mapping from bank errors to gRPC statuses; field-level problems carry a `google.rpc.BadRequest`.
impl From<BankError> for Status {
    fn from(error: BankError) -> Self {
        let message = error.to_string();
        match error {
            BankError::AlreadyOpen => Status::already_exists(message),
            BankError::NotOpen => Status::failed_precondition(message),
            BankError::InsufficientFunds { balance, amount } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_bad_request_violation(
                    "amount",
                    format!("amount {amount} exceeds the balance {balance}"),
                ),
            ),
            BankError::InvalidFields(invalid_fields) => {
                let mut details = ErrorDetails::new();
                for invalid_field in invalid_fields {
                    details
                        .add_bad_request_violation(invalid_field.field, invalid_field.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            BankError::BalanceOverflow => Status::out_of_range(message),
            BankError::UnknownCommand { .. }
            | BankError::UnknownEvent { .. }
            | BankError::UnknownState { .. }
            | BankError::MissingField(_)
            | BankError::Unpack(_) => Status::invalid_argument(message),
        }
    }
}

/// A decoded bank command: the closed set of commands this handler understands.
#[derive(Debug, Clone, PartialEq)]
pub enum BankCommand {
    OpenAccount(OpenAccount),
    Deposit(Deposit),
    Withdraw(Withdraw),
    DepositMany(DepositMany),
    GetBalance(GetBalance),
}

impl BankCommand {
    /// Decodes a packed command, refusing types that are not bank commands.
    pub fn from_any(any: &Any) -> Result<Self, BankError> {
        if is_packed::<OpenAccount>(any) {
            return Ok(BankCommand::OpenAccount(unpack(any)?));
        }
        if is_packed::<Deposit>(any) {
            return Ok(BankCommand::Deposit(unpack(any)?));
        }
        if is_packed::<Withdraw>(any) {
            return Ok(BankCommand::Withdraw(unpack(any)?));
        }
        if is_packed::<DepositMany>(any) {
            return Ok(BankCommand::DepositMany(unpack(any)?));
        }
        if is_packed::<GetBalance>(any) {
            return Ok(BankCommand::GetBalance(unpack(any)?));
        }
        Err(BankError::UnknownCommand {
            type_url: any.type_url.clone(),
        })
    }

    /// Packs the command for `ProcessCommand`.
    pub fn to_any(&self) -> Any {
        match self {
            BankCommand::OpenAccount(command) => pack(command),
            BankCommand::Deposit(command) => pack(command),
            BankCommand::Withdraw(command) => pack(command),
            BankCommand::DepositMany(command) => pack(command),
            BankCommand::GetBalance(command) => pack(command),
        }
    }
}

/// A decoded bank event: the closed set of facts the account state is built from.
#[derive(Debug, Clone, PartialEq)]
pub enum BankEvent {
    AccountOpened(AccountOpened),
    FundsDeposited(FundsDeposited),
    FundsWithdrawn(FundsWithdrawn),
}

impl BankEvent {
    /// Decodes a packed event, refusing types that are not bank events.
    pub fn from_any(any: &Any) -> Result<Self, BankError> {
        if is_packed::<AccountOpened>(any) {
            return Ok(BankEvent::AccountOpened(unpack(any)?));
        }
        if is_packed::<FundsDeposited>(any) {
            return Ok(BankEvent::FundsDeposited(unpack(any)?));
        }
        if is_packed::<FundsWithdrawn>(any) {
            return Ok(BankEvent::FundsWithdrawn(unpack(any)?));
        }
        Err(BankError::UnknownEvent {
            type_url: any.type_url.clone(),
        })
    }

    /// Packs the event for `HandleCommandResponse.events`.
    pub fn to_any(&self) -> Any {
        match self {
            BankEvent::AccountOpened(event) => pack(event),
            BankEvent::FundsDeposited(event) => pack(event),
            BankEvent::FundsWithdrawn(event) => pack(event),
        }
    }
}

/// Decodes the prior state: `None` for a new entity (a packed `google.protobuf.Empty`, or no state at all),
/// `Some` for an open account.
pub fn decode_state(prior_state: Option<&Any>) -> Result<Option<Account>, BankError> {
    let Some(any) = prior_state else {
        return Ok(None);
    };
    if is_packed::<()>(any) {
        return Ok(None);
    }
    if is_packed::<Account>(any) {
        return Ok(Some(unpack(any)?));
    }
    Err(BankError::UnknownState {
        type_url: any.type_url.clone(),
    })
}

/// Decides which events a command produces against the current account (`None` when not yet open). Every
/// argument is validated before any event is produced, so a refused command never yields partial events.
pub fn decide(
    command: &BankCommand,
    account: Option<&Account>,
) -> Result<Vec<BankEvent>, BankError> {
    match command {
        BankCommand::OpenAccount(open_account) => {
            if open_account.initial_balance < 0 {
                return Err(BankError::InvalidFields(vec![InvalidField::new(
                    "initial_balance",
                    "must not be negative",
                )]));
            }
            if account.is_some() {
                return Err(BankError::AlreadyOpen);
            }
            Ok(vec![BankEvent::AccountOpened(AccountOpened {
                owner: open_account.owner.clone(),
                initial_balance: open_account.initial_balance,
            })])
        }
        BankCommand::Deposit(deposit) => {
            if deposit.amount <= 0 {
                return Err(BankError::InvalidFields(vec![InvalidField::new(
                    "amount",
                    "must be greater than zero",
                )]));
            }
            let account = account.ok_or(BankError::NotOpen)?;
            account
                .balance
                .checked_add(deposit.amount)
                .ok_or(BankError::BalanceOverflow)?;
            Ok(vec![BankEvent::FundsDeposited(FundsDeposited {
                amount: deposit.amount,
            })])
        }
        BankCommand::Withdraw(withdraw) => {
            if withdraw.amount <= 0 {
                return Err(BankError::InvalidFields(vec![InvalidField::new(
                    "amount",
                    "must be greater than zero",
                )]));
            }
            let account = account.ok_or(BankError::NotOpen)?;
            if account.balance < withdraw.amount {
                return Err(BankError::InsufficientFunds {
                    balance: account.balance,
                    amount: withdraw.amount,
                });
            }
            Ok(vec![BankEvent::FundsWithdrawn(FundsWithdrawn {
                amount: withdraw.amount,
            })])
        }
        BankCommand::DepositMany(deposit_many) => decide_deposit_many(deposit_many, account),
        BankCommand::GetBalance(_) => Ok(Vec::new()),
    }
}

fn decide_deposit_many(
    deposit_many: &DepositMany,
    account: Option<&Account>,
) -> Result<Vec<BankEvent>, BankError> {
    let mut invalid_fields = Vec::new();
    if deposit_many.amounts.is_empty() {
        invalid_fields.push(InvalidField::new("amounts", "must not be empty"));
    }
    for (index, amount) in deposit_many.amounts.iter().enumerate() {
        if *amount <= 0 {
            invalid_fields.push(InvalidField::new(
                format!("amounts[{index}]"),
                "must be greater than zero",
            ));
        }
    }
    if !invalid_fields.is_empty() {
        return Err(BankError::InvalidFields(invalid_fields));
    }
    let account = account.ok_or(BankError::NotOpen)?;
    let mut running_balance = account.balance;
    let mut events = Vec::with_capacity(deposit_many.amounts.len());
    for amount in &deposit_many.amounts {
        running_balance = running_balance
            .checked_add(*amount)
            .ok_or(BankError::BalanceOverflow)?;
        events.push(BankEvent::FundsDeposited(FundsDeposited {
            amount: *amount,
        }));
    }
    Ok(events)
}

/// Applies one event to the account (`None` when not yet open) and returns the resulting account; the new
/// account takes its id from the entity the event belongs to.
pub fn apply(
    account: Option<Account>,
    event: &BankEvent,
    entity_id: &str,
) -> Result<Account, BankError> {
    match event {
        BankEvent::AccountOpened(account_opened) => {
            if account.is_some() {
                return Err(BankError::AlreadyOpen);
            }
            Ok(Account {
                account_id: entity_id.to_string(),
                owner: account_opened.owner.clone(),
                balance: account_opened.initial_balance,
            })
        }
        BankEvent::FundsDeposited(funds_deposited) => {
            let mut account = account.ok_or(BankError::NotOpen)?;
            account.balance = account
                .balance
                .checked_add(funds_deposited.amount)
                .ok_or(BankError::BalanceOverflow)?;
            Ok(account)
        }
        BankEvent::FundsWithdrawn(funds_withdrawn) => {
            let mut account = account.ok_or(BankError::NotOpen)?;
            account.balance = account
                .balance
                .checked_sub(funds_withdrawn.amount)
                .ok_or(BankError::BalanceOverflow)?;
            Ok(account)
        }
    }
}

/// The whole `HandleCommand` logic without gRPC: unpack, decide, pack the events in order.
pub fn handle_command(request: &HandleCommandRequest) -> Result<Vec<Any>, BankError> {
    let command_any = request
        .command
        .as_ref()
        .ok_or(BankError::MissingField("command"))?;
    let command = BankCommand::from_any(command_any)?;
    let account = decode_state(request.prior_state.as_ref())?;
    let events = decide(&command, account.as_ref())?;
    Ok(events.iter().map(BankEvent::to_any).collect())
}

/// The whole `HandleEvent` logic without gRPC: unpack, apply, return the resulting account.
pub fn handle_event(request: &HandleEventRequest) -> Result<Account, BankError> {
    let event_any = request
        .event
        .as_ref()
        .ok_or(BankError::MissingField("event"))?;
    let event = BankEvent::from_any(event_any)?;
    let account = decode_state(request.prior_state.as_ref())?;
    let event_meta = request
        .event_meta
        .as_ref()
        .ok_or(BankError::MissingField("event_meta"))?;
    apply(account, &event, &event_meta.entity_id)
}

/// The bank-account write handler Chief of State calls; stateless, so one value can serve any number of
/// entities concurrently.
#[derive(Debug, Clone, Copy, Default)]
pub struct BankHandler;

#[tonic::async_trait]
impl WriteSideHandlerService for BankHandler {
    async fn handle_command(
        &self,
        request: Request<HandleCommandRequest>,
    ) -> Result<Response<HandleCommandResponse>, Status> {
        let events = handle_command(request.get_ref())?;
        Ok(Response::new(HandleCommandResponse {
            events,
            ..Default::default()
        }))
    }

    async fn handle_event(
        &self,
        request: Request<HandleEventRequest>,
    ) -> Result<Response<HandleEventResponse>, Status> {
        let account = handle_event(request.get_ref())?;
        Ok(Response::new(HandleEventResponse {
            resulting_state: Some(pack(&account)),
        }))
    }
}

/// The gRPC service wrapping `BankHandler`, for callers that build their own tonic server.
pub fn service() -> WriteSideHandlerServiceServer<BankHandler> {
    WriteSideHandlerServiceServer::new(BankHandler)
}

/// Serves `BankHandler` on an already-bound listener until `shutdown` resolves; taking a listener (rather than
/// an address) lets tests bind port 0 and learn the real port before Chief of State is configured with it.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(service())
        .serve_with_incoming_shutdown(accept_without_delay(listener), shutdown)
        .await
}

#[cfg(test)]
mod tests;
