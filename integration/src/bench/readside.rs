//! The read-side group: on each store, a node with one gRPC read side pointing at the benchmark's recording
//! read handler (a child process).
//!
//! - *catch-up*: the read side starts paused (`autoStart: false`); C clients write for the run's duration (the
//!   write peak of this run, with the read side costing nothing), then the read side is resumed and timed
//!   until every written event was delivered. Baseline: that write throughput.
//! - *lag*: on a fresh node with the read side running, commands at a fixed rate (half the write peak just
//!   measured, as the latency scenario does, then a quarter of it); every event's lag from its command's reply
//!   to its arrival at the handler (see [`super::lag`]), and delivery throughput against the write rate. The
//!   target (p99 ≤ 100 ms) is absolute; the ratio is to the commands' own p99 latency in the same run.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use cos_core::proto::chief_of_state::v1::chief_of_state_service_client::ChiefOfStateServiceClient;
use cos_core::proto::chief_of_state::v1::read_side_manager_service_client::ReadSideManagerServiceClient;
use cos_core::proto::chief_of_state::v1::{ProcessCommandRequest, ResumeReadSideRequest};
use tonic::transport::Channel;

use super::config::BenchConfig;
use super::counter_handler::counter_any;
use super::cpu::CpuSample;
use super::lag::{LagSummary, Written};
use super::load::{LoadResult, open_loop};
use super::process::{ChildProcess, free_port};
use super::read_handler::{DeliveryLog, wall_micros};
use super::report::{Row, Verdict, describe, millis};
use super::scenarios::{spread_entity, write_load};
use super::setup::{BenchStore, channels, start_cos};

/// Waiting for deliveries ends when none arrived for this long (the workers' fallback poll is 1 s).
const STALL: Duration = Duration::from_secs(5);

/// Commands sent, and delivered, before the lag is measured: connections and workers are warm.
const WARM_UP_COMMANDS: usize = 32;

/// The rates of the lag runs, as shares of the write peak: half (as the latency scenario), then a quarter.
const LAG_RATES: [(&str, f64); 2] = [("half", 2.0), ("a quarter of", 4.0)];

/// The rate of one lag run.
struct LagRate {
    per_second: f64,
    /// "half", "a quarter of": the write peak's share, for the report.
    share: &'static str,
    divisor: f64,
}

/// The target of issue #5: p99 lag from commit to `HandleReadSide`.
const LAG_TARGET: Duration = Duration::from_millis(100);

/// Runs catch-up and lag on every store; `handler` is the write handler both nodes call.
pub(crate) async fn read_side_scenarios(
    handler: SocketAddr,
    config: &BenchConfig,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let port = free_port()?;
    let address: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let (read_handler, output) = ChildProcess::start_with_output(
        "read handler",
        std::env::current_exe()?,
        &[
            "read-handler".into(),
            "--listen".into(),
            address.to_string(),
        ],
        address,
    )
    .await?;
    let bench = ReadSideBench {
        handler,
        read_handler: address,
        read_handler_pid: read_handler.pid(),
        log: DeliveryLog::collect_from(output),
        config,
    };
    let mut store_names = Vec::new();
    if config.postgres.is_some() {
        store_names.push("postgres");
    }
    store_names.push("sqlite");
    for store_name in store_names {
        let catch_up_store = bench.fresh_store(store_name, "rs_catchup")?;
        let write_peak = bench.catch_up(&catch_up_store, rows).await?;
        catch_up_store.drop_schema().await;
        for (share, divisor) in LAG_RATES {
            let lag_store = bench.fresh_store(store_name, &format!("rs_lag{divisor}"))?;
            let rate = LagRate {
                per_second: (write_peak / divisor).max(1.0),
                share,
                divisor,
            };
            bench.lag(&lag_store, &rate, rows).await?;
            lag_store.drop_schema().await;
        }
    }
    read_handler.stop().await
}

/// What every read-side scenario shares.
struct ReadSideBench<'a> {
    handler: SocketAddr,
    read_handler: SocketAddr,
    read_handler_pid: Option<u32>,
    log: DeliveryLog,
    config: &'a BenchConfig,
}

impl ReadSideBench<'_> {
    fn fresh_store(&self, store_name: &str, label: &str) -> anyhow::Result<BenchStore> {
        match (&self.config.postgres, store_name) {
            (Some(target), "postgres") => Ok(BenchStore::postgres(target, label)),
            _ => BenchStore::sqlite(),
        }
    }

    /// Starts a node over `store` with one gRPC read side `read_side_id` on the recording handler.
    async fn start_node(
        &self,
        store: &BenchStore,
        read_side_id: &str,
        auto_start: bool,
    ) -> anyhow::Result<(ChildProcess, Vec<Channel>)> {
        let read_side = [
            ("COS_READ_SIDE_ENABLED".to_string(), "true".to_string()),
            (
                format!("COS_READ_SIDE_CONFIG__HOST__{read_side_id}"),
                self.read_handler.ip().to_string(),
            ),
            (
                format!("COS_READ_SIDE_CONFIG__PORT__{read_side_id}"),
                self.read_handler.port().to_string(),
            ),
            (
                format!("COS_READ_SIDE_CONFIG__PROTOCOL__{read_side_id}"),
                "grpc".to_string(),
            ),
            (
                format!("COS_READ_SIDE_CONFIG__AUTO_START__{read_side_id}"),
                auto_start.to_string(),
            ),
        ];
        let extra: Vec<(&str, &str)> = read_side
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        let cos = start_cos(&store.environment, self.handler, &extra).await?;
        let cos_channels = channels(cos.address, self.config.connections).await?;
        Ok((cos, cos_channels))
    }

    /// Writes with the read side paused, resumes it and times the delivery of the backlog; returns the write
    /// throughput (the baseline, and the peak the lag scenario halves).
    async fn catch_up(&self, store: &BenchStore, rows: &mut Vec<Row>) -> anyhow::Result<f64> {
        let read_side_id = format!("catchup_{}", store.name);
        let (cos, cos_channels) = self.start_node(store, &read_side_id, false).await?;
        let write = write_load(&cos_channels, self.config, spread_entity).await;
        let events = usize::try_from(write.operations)?;

        let cpu_before = CpuSample::take(cos.pid(), self.read_handler_pid)?;
        let mut manager = ReadSideManagerServiceClient::new(first_channel(&cos_channels)?);
        let resumed_micros = wall_micros();
        manager
            .resume_read_side(ResumeReadSideRequest {
                read_side_id: read_side_id.clone(),
            })
            .await?;
        self.log
            .wait_for(&read_side_id, events, STALL, self.config.read_side_wait)
            .await;
        let cpu = CpuSample::take(cos.pid(), self.read_handler_pid)?.since(&cpu_before);
        cos.stop().await?;

        let deliveries = self.log.deliveries(&read_side_id);
        let early = deliveries
            .iter()
            .filter(|delivery| delivery.received_micros < resumed_micros)
            .count();
        let mut distinct: Vec<(&str, u32)> = deliveries
            .iter()
            .map(|delivery| (delivery.entity_id.as_str(), delivery.revision))
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        let last_micros = deliveries
            .iter()
            .map(|delivery| delivery.received_micros)
            .max()
            .unwrap_or(resumed_micros);
        let seconds = (last_micros.saturating_sub(resumed_micros) as f64 / 1e6).max(1e-6);
        let rate = distinct.len() as f64 / seconds;
        let mut anomalies = String::new();
        if distinct.len() < events {
            anomalies.push_str(&format!(
                "; {} of {events} NOT delivered",
                events - distinct.len()
            ));
        }
        if early > 0 {
            anomalies.push_str(&format!("; {early} delivered while paused"));
        }
        rows.push(Row {
            scenario: format!("read-side catch-up of {events} events, {}", store.name),
            figure: format!(
                "{rate:.0} events/s ({seconds:.2} s); written with the read side paused at {:.0} ops/s ({} clients); \
                 {}{anomalies}",
                write.throughput(),
                self.config.concurrency,
                cpu.per_event("CPU per event", distinct.len(), store.name == "postgres"),
            ),
            ratio: format!(
                "{:.2} × write throughput",
                rate / write.throughput().max(1.0)
            ),
            target: String::new(),
            verdict: Verdict::Informational,
        });
        Ok(write.throughput())
    }

    /// Commands at `rate` on a node whose read side runs; the lag of every event and the delivery rate.
    async fn lag(
        &self,
        store: &BenchStore,
        rate: &LagRate,
        rows: &mut Vec<Row>,
    ) -> anyhow::Result<()> {
        let read_side_id = format!("lag{}_{}", rate.divisor, store.name);
        let (cos, cos_channels) = self.start_node(store, &read_side_id, true).await?;
        let mut client = ChiefOfStateServiceClient::new(first_channel(&cos_channels)?);
        for index in 0..WARM_UP_COMMANDS {
            client
                .process_command(command(format!("warm-up-{index}")))
                .await?;
        }
        self.log
            .wait_for(&read_side_id, WARM_UP_COMMANDS, STALL, STALL)
            .await;

        let written = Arc::new(Mutex::new(Vec::new()));
        let cpu_before = CpuSample::take(cos.pid(), self.read_handler_pid)?;
        let started_micros = wall_micros();
        let paced =
            paced_writes(&cos_channels, self.config, rate.per_second, written.clone()).await;
        let written: Vec<Written> =
            std::mem::take(&mut *written.lock().unwrap_or_else(PoisonError::into_inner));
        self.log
            .wait_for(
                &read_side_id,
                WARM_UP_COMMANDS + written.len(),
                STALL,
                self.config.read_side_wait,
            )
            .await;
        let cpu = CpuSample::take(cos.pid(), self.read_handler_pid)?.since(&cpu_before);
        cos.stop().await?;
        let summary = LagSummary::of(&written, &self.log.deliveries(&read_side_id));
        let mut rows_of_run = lag_rows(store.name, rate, &paced, &summary, started_micros);
        let cpu_note = cpu.per_event(
            "CPU per command and its delivery",
            summary.written,
            store.name == "postgres",
        );
        rows_of_run[1].figure.push_str(&format!("; {cpu_note}"));
        rows.extend(rows_of_run);
        Ok(())
    }
}

fn first_channel(cos_channels: &[Channel]) -> anyhow::Result<Channel> {
    cos_channels
        .first()
        .cloned()
        .context("no channel to the node")
}

fn command(entity_id: String) -> ProcessCommandRequest {
    ProcessCommandRequest {
        entity_id,
        command: Some(counter_any(1)),
    }
}

/// Open-loop commands at `rate`, recording each success's entity, revision and reply time in `written`.
async fn paced_writes(
    cos: &[Channel],
    config: &BenchConfig,
    rate: f64,
    written: Arc<Mutex<Vec<Written>>>,
) -> LoadResult {
    let cos = cos.to_vec();
    let entities = config.entities.max(1) as u64;
    open_loop(
        rate,
        config.duration,
        config.concurrency * 4,
        move |sequence| {
            let mut client =
                ChiefOfStateServiceClient::new(cos[sequence as usize % cos.len()].clone());
            let entity_id = format!("lag-{}", sequence % entities);
            let written = written.clone();
            async move {
                let Ok(reply) = client.process_command(command(entity_id.clone())).await else {
                    return false;
                };
                let reply_micros = wall_micros();
                let revision = reply
                    .into_inner()
                    .meta
                    .map_or(0, |meta| meta.revision_number);
                written
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Written {
                        entity_id,
                        revision,
                        reply_micros,
                    });
                true
            }
        },
    )
    .await
}

/// The lag row (judged on the upper bound, after `revision_date`) and the delivery-throughput row.
fn lag_rows(
    store_name: &str,
    rate: &LagRate,
    paced: &LoadResult,
    summary: &LagSummary,
    started_micros: u64,
) -> [Row; 2] {
    let command_p99 = paced.percentile(0.99);
    let lag_p99 = summary.after_reply(0.99);
    let upper_p99 = summary.after_revision_date(0.99);
    let lag_row = Row {
        scenario: format!(
            "read-side lag at {} the write peak ({:.0}/s), {store_name}",
            rate.share, rate.per_second
        ),
        figure: format!(
            "after the reply: p50 {} p95 {} p99 {} max {}; after revision_date (upper bound): p50 {} p99 {}; \
             commands: {}; {} events, {} delivered before their reply",
            millis(summary.after_reply(0.5)),
            millis(summary.after_reply(0.95)),
            millis(lag_p99),
            millis(summary.after_reply(1.0)),
            millis(summary.after_revision_date(0.5)),
            millis(upper_p99),
            describe(paced),
            summary.delivered,
            summary.before_reply,
        ),
        ratio: format!(
            "p99 {:.2} × command p99",
            lag_p99.as_secs_f64() / command_p99.as_secs_f64().max(1e-6)
        ),
        target: format!("p99 ≤ {} ms", LAG_TARGET.as_millis()),
        verdict: Verdict::from_check(
            summary.delivered > 0 && summary.missing() == 0 && upper_p99 <= LAG_TARGET,
        ),
    };
    // Both rates over a window from the first command's start: to the last reply, to the last delivery.
    let rate_since_start = |count: usize, until_micros: u64| {
        count as f64 / (until_micros.saturating_sub(started_micros) as f64 / 1e6).max(1e-6)
    };
    let written_rate = rate_since_start(summary.written, summary.last_reply_micros);
    let delivered_rate = rate_since_start(summary.delivered, summary.last_delivery_micros);
    let throughput_row = Row {
        scenario: format!(
            "read-side delivery throughput at {} the write peak, {store_name}",
            rate.share
        ),
        figure: format!(
            "{delivered_rate:.0} events/s delivered vs {written_rate:.0} commands/s written; \
             {} not delivered, {} redelivered",
            summary.missing(),
            summary.redelivered,
        ),
        ratio: format!(
            "{:.2} × write rate",
            delivered_rate / written_rate.max(1e-6)
        ),
        target: String::new(),
        verdict: Verdict::Informational,
    };
    [lag_row, throughput_row]
}
