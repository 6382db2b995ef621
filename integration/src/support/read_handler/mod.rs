//! Scriptable read handlers that Chief of State calls: a gRPC `ReadSideHandlerService` and an HTTP
//! `POST /v1/readside/handle` endpoint on loopback ports, sharing one recorder. Every call is recorded in
//! arrival order as a [`Delivery`], whichever protocol carried it, and answered as the current [`Behaviour`]
//! says, so failure-policy tests can script refusals, errors and hangs and then assert what arrived.

mod grpc;
mod http;
mod ordering;
#[cfg(test)]
mod tests;
mod tls;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cos_core::proto::chief_of_state::v1::{HandleReadSideRequest, MetaData};
use cos_core::readside::{FailurePolicy, ReadSideConfig, ReadSideProtocol};
use prost_types::Any;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::script_handler::any_text;
use super::wait_until;

/// How long [`ReadHandlerServer::shutdown`] lets the server finish its calls before aborting it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How the server answered one delivery, as the caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `successful: true` (HTTP: 200 with `{"successful":true}`).
    Accepted,
    /// `successful: false` (HTTP: 200 with `{"successful":false}`).
    Unsuccessful,
    /// HTTP: 200 with `{}`, a body without `successful`. Over gRPC this is the same bytes as `successful: false`
    /// and is recorded as [`Answer::Unsuccessful`].
    MissingSuccessful,
    /// An error: gRPC status UNAVAILABLE, HTTP status 500 (or 400 for a body the server could not read).
    Failed,
    /// No answer (yet): still waiting out a delay or a hang, or the caller gave up before the answer was due.
    Unanswered,
}

/// A scripted answer other than acceptance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Answer `successful: false`.
    Unsuccessful,
    /// Answer an error: gRPC UNAVAILABLE, HTTP 500.
    Fail,
    /// HTTP: answer 200 with a body lacking `successful` (gRPC: `successful: false`).
    MissingSuccessful,
    /// Never answer (until the server stops), so the caller's timeout fires.
    Hang,
}

/// A test-supplied condition on a delivery, for rules the named [`Rule`] variants do not cover. It runs under
/// the recorder's lock, so it must not call the server.
#[derive(Clone)]
pub struct Predicate(Arc<dyn Fn(&Delivery) -> bool + Send + Sync>);

impl Predicate {
    pub fn new(condition: impl Fn(&Delivery) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(condition))
    }
}

impl fmt::Debug for Predicate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Predicate(..)")
    }
}

/// Which deliveries get a [`Reply`] instead of acceptance; every other delivery is accepted.
#[derive(Debug, Clone, Default)]
pub enum Rule {
    /// Accept every delivery.
    #[default]
    AcceptAll,
    /// Give the reply to the first N calls since this behaviour was set (whatever they carry), then accept.
    First(usize, Reply),
    /// Give the reply to every delivery whose `meta.entity_id` is this, e.g. a poison entity.
    Entity(String, Reply),
    /// Give the reply to every delivery whose event is a StringValue with exactly this text.
    EventText(String, Reply),
    /// Give the reply to every delivery the predicate holds for.
    When(Predicate, Reply),
    /// Give the reply to every delivery.
    Always(Reply),
}

impl Rule {
    /// The reply for the `call_index`-th call (0-based, since the behaviour was set), `None` to accept.
    fn reply_for(&self, call_index: usize, delivery: &Delivery) -> Option<Reply> {
        let (applies, reply) = match self {
            Rule::AcceptAll => return None,
            Rule::First(count, reply) => (call_index < *count, reply),
            Rule::Entity(entity_id, reply) => (delivery.entity_id == *entity_id, reply),
            Rule::EventText(text, reply) => (delivery.event_text() == *text, reply),
            Rule::When(predicate, reply) => ((predicate.0)(delivery), reply),
            Rule::Always(reply) => (true, reply),
        };
        applies.then_some(*reply)
    }
}

/// How the server answers: `rule` picks the answer, given after `delay` (which applies to every call, so a
/// delay combines with any rule).
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    pub rule: Rule,
    pub delay: Duration,
}

impl Behaviour {
    /// Accept every delivery at once.
    pub fn accept_all() -> Self {
        Self::default()
    }

    /// Answer as `rule` says, without delay.
    pub fn new(rule: Rule) -> Self {
        Self {
            rule,
            delay: Duration::ZERO,
        }
    }

    /// The same rule, each answer given `delay` after the call arrived.
    pub fn with_delay(self, delay: Duration) -> Self {
        Self { delay, ..self }
    }
}

/// One call the server received, decoded the same way whichever protocol carried it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub read_side_id: String,
    /// `meta.entity_id` ("" without meta).
    pub entity_id: String,
    /// `meta.revision_number` (0 without meta).
    pub revision: u32,
    pub event: Option<Any>,
    pub state: Option<Any>,
    /// Over HTTP, decoded from the JSON except `revision_date`, left `None` (its text is in `raw_json`).
    pub meta: Option<MetaData>,
    /// The `x-cos-entity-id` header.
    pub header_entity_id: Option<String>,
    /// The `x-cos-event-tag` header: the shard number as decimal text.
    pub header_event_tag: Option<String>,
    /// The `x-cos-entity-type` header.
    pub header_entity_type: Option<String>,
    /// The `content-type` header (`application/grpc` or `application/json`).
    pub content_type: Option<String>,
    /// HTTP only: the request body as received (`None` over gRPC or when the body is not JSON).
    pub raw_json: Option<serde_json::Value>,
    /// Set when the answer is sent; stays [`Answer::Unanswered`] while delayed or hung, or when the caller
    /// gave up first.
    pub answered: Answer,
    pub received_at: Instant,
}

impl Delivery {
    /// A delivery just arrived with this request and these headers, not answered yet.
    fn arrived(request: HandleReadSideRequest, headers: DeliveryHeaders) -> Self {
        let meta = request.meta;
        Self {
            read_side_id: request.read_side_id,
            entity_id: meta
                .as_ref()
                .map(|meta| meta.entity_id.clone())
                .unwrap_or_default(),
            revision: meta.as_ref().map_or(0, |meta| meta.revision_number),
            event: request.event,
            state: request.state,
            meta,
            header_entity_id: headers.entity_id,
            header_event_tag: headers.event_tag,
            header_entity_type: headers.entity_type,
            content_type: headers.content_type,
            raw_json: headers.raw_json,
            answered: Answer::Unanswered,
            received_at: Instant::now(),
        }
    }

    /// The event's StringValue text ("" for any other type).
    pub fn event_text(&self) -> String {
        any_text(self.event.as_ref())
    }

    /// The resulting state's StringValue text ("" for any other type).
    pub fn state_text(&self) -> String {
        any_text(self.state.as_ref())
    }

    /// One line for failure messages.
    fn summary(&self) -> String {
        format!(
            "read_side={} entity={} revision={} event={:?} tag={:?} answered={:?}",
            self.read_side_id,
            self.entity_id,
            self.revision,
            self.event_text(),
            self.header_event_tag,
            self.answered
        )
    }
}

/// What a call carried besides the request message.
#[derive(Debug, Default)]
struct DeliveryHeaders {
    entity_id: Option<String>,
    entity_type: Option<String>,
    event_tag: Option<String>,
    content_type: Option<String>,
    raw_json: Option<serde_json::Value>,
}

struct RecorderState {
    behaviour: Behaviour,
    /// Calls since the behaviour was set, for [`Rule::First`].
    calls_under_behaviour: usize,
    deliveries: Vec<Delivery>,
}

/// The state both protocol servers share: the behaviour, what arrived, and the stop signal.
#[derive(Clone)]
struct Recorder {
    protocol: ReadSideProtocol,
    state: Arc<Mutex<RecorderState>>,
    stopped: watch::Receiver<bool>,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, RecorderState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `delivery`, waits as the behaviour says and returns the answer to send (recorded with it).
    async fn respond(&self, delivery: Delivery) -> Answer {
        let (index, delay, reply) = {
            let mut state = self.lock();
            let call_index = state.calls_under_behaviour;
            state.calls_under_behaviour += 1;
            let reply = state.behaviour.rule.reply_for(call_index, &delivery);
            state.deliveries.push(delivery);
            (state.deliveries.len() - 1, state.behaviour.delay, reply)
        };
        if !delay.is_zero() && !self.sleep_unless_stopped(delay).await {
            return Answer::Unanswered;
        }
        let answer = match reply {
            None => Answer::Accepted,
            Some(Reply::Unsuccessful) => Answer::Unsuccessful,
            Some(Reply::Fail) => Answer::Failed,
            Some(Reply::MissingSuccessful) if self.protocol == ReadSideProtocol::Grpc => {
                Answer::Unsuccessful
            }
            Some(Reply::MissingSuccessful) => Answer::MissingSuccessful,
            Some(Reply::Hang) => {
                self.until_stopped().await;
                return Answer::Unanswered;
            }
        };
        self.lock().deliveries[index].answered = answer;
        answer
    }

    /// Records a call the server could not read, answered with an error without consulting the behaviour.
    fn record_unreadable(&self, mut delivery: Delivery) {
        delivery.answered = Answer::Failed;
        self.lock().deliveries.push(delivery);
    }

    /// Waits `delay`; false when the server stopped first.
    async fn sleep_unless_stopped(&self, delay: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = self.until_stopped() => false,
        }
    }

    /// Resolves once the server is stopping (or its owner is gone).
    async fn until_stopped(&self) {
        let mut stopped = self.stopped.clone();
        let _sender_gone_means_stopped = stopped.wait_for(|stopped| *stopped).await;
    }
}

pub use ordering::assert_complete_and_ordered;
pub use tls::TlsIdentity;

/// A read handler server on 127.0.0.1 for one protocol; stops when dropped or on [`Self::shutdown`].
pub struct ReadHandlerServer {
    pub port: u16,
    pub protocol: ReadSideProtocol,
    recorder: Recorder,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ReadHandlerServer {
    /// A gRPC `ReadSideHandlerService` on a fresh loopback port.
    pub async fn start_grpc(behaviour: Behaviour) -> Self {
        match Self::start(ReadSideProtocol::Grpc, 0, behaviour).await {
            Ok(server) => server,
            Err(error) => panic!("cannot start the grpc read handler: {error}"),
        }
    }

    /// An HTTP `POST /v1/readside/handle` endpoint on a fresh loopback port.
    pub async fn start_http(behaviour: Behaviour) -> Self {
        match Self::start(ReadSideProtocol::Http, 0, behaviour).await {
            Ok(server) => server,
            Err(error) => panic!("cannot start the http read handler: {error}"),
        }
    }

    /// A server for `protocol` on 127.0.0.1:`port` (0 for a fresh port); a fixed port brings a handler back
    /// where a stopped one was.
    pub async fn start(
        protocol: ReadSideProtocol,
        port: u16,
        behaviour: Behaviour,
    ) -> std::io::Result<Self> {
        Self::start_with_tls(protocol, port, behaviour, None).await
    }

    /// [`Self::start`] serving TLS with `identity` (gRPC over HTTP/2 with TLS, or HTTPS).
    pub async fn start_with_tls(
        protocol: ReadSideProtocol,
        port: u16,
        behaviour: Behaviour,
        identity: Option<TlsIdentity>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let bound_port = listener.local_addr()?.port();
        let (stop, stopped) = watch::channel(false);
        let recorder = Recorder {
            protocol,
            state: Arc::new(Mutex::new(RecorderState {
                behaviour,
                calls_under_behaviour: 0,
                deliveries: Vec::new(),
            })),
            stopped,
        };
        let task = match protocol {
            ReadSideProtocol::Grpc => {
                tokio::spawn(grpc::serve(listener, recorder.clone(), identity))
            }
            ReadSideProtocol::Http => {
                let acceptor = identity.map(tls::acceptor).transpose()?;
                tokio::spawn(http::serve(listener, recorder.clone(), acceptor))
            }
        };
        Ok(Self {
            port: bound_port,
            protocol,
            recorder,
            stop,
            task: Some(task),
        })
    }

    /// Every call received, in arrival order, whatever it was answered.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.recorder.lock().deliveries.clone()
    }

    /// The calls answered `successful: true`, in arrival order.
    pub fn accepted(&self) -> Vec<Delivery> {
        let state = self.recorder.lock();
        let accepted = state
            .deliveries
            .iter()
            .filter(|delivery| delivery.answered == Answer::Accepted);
        accepted.cloned().collect()
    }

    /// Waits until at least `count` calls were accepted and returns all accepted ones; panics after `timeout`
    /// listing everything that arrived.
    pub async fn wait_for_accepted(&self, count: usize, timeout: Duration) -> Vec<Delivery> {
        let reached = wait_until(timeout, || self.accepted().len() >= count).await;
        if !reached {
            self.panic_waiting(&format!("{count} accepted deliveries"), timeout);
        }
        self.accepted()
    }

    /// Waits until at least `count` calls arrived (however answered) and returns them all; panics after
    /// `timeout` listing everything that arrived.
    pub async fn wait_for_deliveries(&self, count: usize, timeout: Duration) -> Vec<Delivery> {
        let reached = wait_until(timeout, || self.deliveries().len() >= count).await;
        if !reached {
            self.panic_waiting(&format!("{count} deliveries"), timeout);
        }
        self.deliveries()
    }

    fn panic_waiting(&self, expected: &str, timeout: Duration) -> ! {
        let deliveries = self.deliveries();
        let lines: Vec<String> = deliveries
            .iter()
            .enumerate()
            .map(|(index, delivery)| format!("  #{index} {}", delivery.summary()))
            .collect();
        panic!(
            "{:?} read handler on port {} did not get {expected} within {timeout:?}; {} arrived:\n{}",
            self.protocol,
            self.port,
            deliveries.len(),
            lines.join("\n")
        );
    }

    /// Replaces the behaviour for the calls from now on; [`Rule::First`] counts from here.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        let mut state = self.recorder.lock();
        state.behaviour = behaviour;
        state.calls_under_behaviour = 0;
    }

    /// The `COS_READ_SIDE_CONFIG__*__<read_side_id>` variables pointing a read side at this server.
    pub fn environment(&self, read_side_id: &str) -> Vec<(String, String)> {
        let protocol = match self.protocol {
            ReadSideProtocol::Grpc => "grpc",
            ReadSideProtocol::Http => "http",
        };
        let variable = |setting: &str| format!("COS_READ_SIDE_CONFIG__{setting}__{read_side_id}");
        vec![
            (variable("PROTOCOL"), protocol.to_string()),
            (variable("HOST"), "127.0.0.1".to_string()),
            (variable("PORT"), self.port.to_string()),
        ]
    }

    /// A read side pointing at this server with the given call timeout (STOP policy), for cos-core's client.
    pub fn read_side_config(&self, read_side_id: &str, timeout: Duration) -> ReadSideConfig {
        ReadSideConfig {
            id: read_side_id.to_string(),
            protocol: self.protocol,
            host: "127.0.0.1".to_string(),
            port: self.port,
            use_tls: false,
            timeout,
            auto_start: true,
            enabled: true,
            failure_policy: FailurePolicy::Stop,
            entity_types: None,
        }
    }

    /// Stops accepting, ends hung and delayed calls unanswered, and returns once the port is closed.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let Some(mut task) = self.task.take() else {
            return;
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            task.abort();
            let _aborted = task.await;
        }
    }
}

impl Drop for ReadHandlerServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
