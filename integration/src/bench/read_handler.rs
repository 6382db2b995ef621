//! The benchmark's read handler: a tonic `ReadSideHandlerService` that answers `successful: true` at once and
//! prints one line per delivery on its standard output (when it arrived, the event's `revision_date`, which
//! read side, which entity and revision). It runs as a child process like the write handler; the benchmark
//! reads those lines through a pipe. Times are wall-clock microseconds since the epoch (`SystemTime`), the one
//! clock this process and the load generator share on the same machine.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex, PoisonError, mpsc as std_mpsc};
use std::time::{Duration, SystemTime};

use crate::net::accept_without_delay;
use cos_core::proto::chief_of_state::v1::read_side_handler_service_server::{
    ReadSideHandlerService, ReadSideHandlerServiceServer,
};
use cos_core::proto::chief_of_state::v1::{HandleReadSideRequest, HandleReadSideResponse};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::ChildStdout;
use tonic::{Request, Response, Status};

/// How often a waiting benchmark looks at the deliveries received so far.
const WAIT_STEP: Duration = Duration::from_millis(20);

/// Microseconds since the Unix epoch on the wall clock (0 before the epoch, which does not happen).
pub fn wall_micros() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX)
}

/// One event as the read handler received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Wall clock when the handler's method began.
    pub received_micros: u64,
    /// `meta.revision_date`: set by Chief of State before the event was handled and committed (0 if absent).
    pub revision_date_micros: u64,
    pub revision: u32,
    pub read_side_id: String,
    pub entity_id: String,
}

impl Delivery {
    /// The line the handler prints: numbers first, the entity id last (it may hold spaces).
    pub fn to_line(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.received_micros,
            self.revision_date_micros,
            self.revision,
            self.read_side_id,
            self.entity_id
        )
    }

    /// Reads a line printed by [`Delivery::to_line`]; `None` for anything else.
    pub fn parse(line: &str) -> Option<Self> {
        let mut fields = line.splitn(5, ' ');
        Some(Self {
            received_micros: fields.next()?.parse().ok()?,
            revision_date_micros: fields.next()?.parse().ok()?,
            revision: fields.next()?.parse().ok()?,
            read_side_id: fields.next()?.to_string(),
            entity_id: fields.next()?.to_string(),
        })
    }

    fn arrived(request: HandleReadSideRequest, received_micros: u64) -> Self {
        let meta = request.meta.unwrap_or_default();
        let revision_date_micros = meta.revision_date.map_or(0, |date| {
            let seconds = u64::try_from(date.seconds).unwrap_or(0);
            let micros = u64::try_from(date.nanos / 1_000).unwrap_or(0);
            seconds * 1_000_000 + micros
        });
        Self {
            received_micros,
            revision_date_micros,
            revision: meta.revision_number,
            read_side_id: request.read_side_id,
            entity_id: meta.entity_id,
        }
    }
}

/// Accepts every event and passes what arrived to the printing thread.
struct RecordingReadHandler {
    deliveries: std_mpsc::Sender<Delivery>,
}

#[tonic::async_trait]
impl ReadSideHandlerService for RecordingReadHandler {
    async fn handle_read_side(
        &self,
        request: Request<HandleReadSideRequest>,
    ) -> Result<Response<HandleReadSideResponse>, Status> {
        let received_micros = wall_micros();
        let delivery = Delivery::arrived(request.into_inner(), received_micros);
        // The printing thread lives as long as the process; if it is gone the line is lost, not the answer.
        let _ = self.deliveries.send(delivery);
        Ok(Response::new(HandleReadSideResponse { successful: true }))
    }
}

/// Prints deliveries on a thread of its own (writing to a pipe blocks), flushing whenever no more are waiting
/// so that lines reach the benchmark promptly.
fn print_deliveries(deliveries: std_mpsc::Receiver<Delivery>) {
    let mut output = std::io::BufWriter::new(std::io::stdout().lock());
    while let Ok(delivery) = deliveries.recv() {
        let mut batch = delivery.to_line();
        batch.push('\n');
        while let Ok(more) = deliveries.try_recv() {
            batch.push_str(&more.to_line());
            batch.push('\n');
        }
        if output.write_all(batch.as_bytes()).is_err() || output.flush().is_err() {
            return;
        }
    }
}

/// Serves the recording read handler on a bound listener until the process ends.
pub async fn serve(listener: TcpListener) -> Result<(), tonic::transport::Error> {
    let (sender, receiver) = std_mpsc::channel();
    std::thread::spawn(move || print_deliveries(receiver));
    tonic::transport::Server::builder()
        .add_service(ReadSideHandlerServiceServer::new(RecordingReadHandler {
            deliveries: sender,
        }))
        .serve_with_incoming(accept_without_delay(listener))
        .await
}

/// The benchmark's side of the pipe: every delivery the handler printed, grouped by read side id.
#[derive(Clone, Default)]
pub struct DeliveryLog {
    by_read_side: Arc<Mutex<HashMap<String, Vec<Delivery>>>>,
}

impl DeliveryLog {
    /// Reads the handler's standard output in a task until the handler exits.
    pub fn collect_from(output: ChildStdout) -> Self {
        let log = Self::default();
        let collector = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(output).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(delivery) = Delivery::parse(&line) {
                    collector.push(delivery);
                }
            }
        });
        log
    }

    fn push(&self, delivery: Delivery) {
        let mut by_read_side = self
            .by_read_side
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        by_read_side
            .entry(delivery.read_side_id.clone())
            .or_default()
            .push(delivery);
    }

    fn count(&self, read_side_id: &str) -> usize {
        let by_read_side = self
            .by_read_side
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        by_read_side.get(read_side_id).map_or(0, Vec::len)
    }

    /// The deliveries of a read side so far, in arrival order.
    pub fn deliveries(&self, read_side_id: &str) -> Vec<Delivery> {
        let by_read_side = self
            .by_read_side
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        by_read_side.get(read_side_id).cloned().unwrap_or_default()
    }

    /// Waits until a read side received at least `expected` deliveries, or nothing arrived for `stall`, or
    /// `limit` passed; returns whether `expected` was reached. (Redeliveries count here; callers that care
    /// compare distinct events afterwards.)
    pub async fn wait_for(
        &self,
        read_side_id: &str,
        expected: usize,
        stall: Duration,
        limit: Duration,
    ) -> bool {
        let give_up = tokio::time::Instant::now() + limit;
        let mut last_count = self.count(read_side_id);
        let mut last_progress = tokio::time::Instant::now();
        loop {
            if last_count >= expected {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= give_up || now.duration_since(last_progress) >= stall {
                return false;
            }
            tokio::time::sleep(WAIT_STEP).await;
            let count = self.count(read_side_id);
            if count > last_count {
                last_count = count;
                last_progress = tokio::time::Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_line_reads_back_as_the_same_delivery() {
        let delivery = Delivery {
            received_micros: 1_700_000_000_123_456,
            revision_date_micros: 1_700_000_000_120_000,
            revision: 7,
            read_side_id: "lag_postgres".into(),
            entity_id: "an entity with spaces".into(),
        };
        assert_eq!(Delivery::parse(&delivery.to_line()), Some(delivery));
        assert_eq!(Delivery::parse("not a delivery"), None);
    }
}
