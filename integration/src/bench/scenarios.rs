//! The benchmark scenarios and their baselines, run in one go so every ratio compares figures measured on
//! the same machine minutes apart.

use std::net::SocketAddr;
use std::sync::Arc;

use cos_core::proto::chief_of_state::v1::chief_of_state_service_client::ChiefOfStateServiceClient;
use cos_core::proto::chief_of_state::v1::write_side_handler_service_client::WriteSideHandlerServiceClient;
use cos_core::proto::chief_of_state::v1::{
    GetStateRequest, HandleCommandRequest, HandleEventRequest, MetaData, ProcessCommandRequest,
};
use tonic::transport::Channel;

use super::commit_probe::CommitProbe;
pub use super::config::{BenchConfig, PostgresTarget};
use super::counter_handler::counter_any;
use super::cpu::{CpuSample, process_cpu};
use super::latency::{LOW_RATE_PER_SECOND, PacedLatency, PacedProcesses};
use super::load::{LoadResult, closed_loop};
use super::machine_bound::{CpuPerOperation, free_cos_ratio};
use super::process::{ChildProcess, free_port};
use super::readside::read_side_scenarios;
use super::report::{Row, Verdict, describe};
use super::resources::{memory_scenarios, recovery_scenarios};
use super::setup::{BenchStore, channels, start_cos};

pub(crate) fn command_request(entity_id: String) -> ProcessCommandRequest {
    ProcessCommandRequest {
        entity_id,
        command: Some(counter_any(1)),
    }
}

pub(crate) async fn write_load(
    cos: &[Channel],
    config: &BenchConfig,
    entity_of: fn(usize, u64, &BenchConfig) -> String,
) -> LoadResult {
    let cos = cos.to_vec();
    let config = Arc::new(config.clone());
    closed_loop(
        config.concurrency,
        config.duration,
        move |worker, sequence| {
            let mut client = ChiefOfStateServiceClient::new(cos[worker % cos.len()].clone());
            let entity_id = entity_of(worker, sequence, &config);
            async move {
                client
                    .process_command(command_request(entity_id))
                    .await
                    .is_ok()
            }
        },
    )
    .await
}

pub(crate) fn spread_entity(worker: usize, sequence: u64, config: &BenchConfig) -> String {
    let index =
        (worker as u64 + sequence * config.concurrency as u64) % config.entities.max(1) as u64;
    format!("entity-{index}")
}

fn hot_entity(_worker: usize, _sequence: u64, _config: &BenchConfig) -> String {
    "hot-entity".to_string()
}

async fn get_state_load(target: &[Channel], config: &BenchConfig) -> LoadResult {
    let target = target.to_vec();
    let config = Arc::new(config.clone());
    closed_loop(
        config.concurrency,
        config.duration,
        move |worker, sequence| {
            let mut client = ChiefOfStateServiceClient::new(target[worker % target.len()].clone());
            let entity_id = spread_entity(worker, sequence, &config);
            async move {
                client
                    .get_state(GetStateRequest { entity_id })
                    .await
                    .is_ok()
            }
        },
    )
    .await
}

/// A load and the CPU one server process spent while it ran: steadier than throughput on a noisy machine, and
/// it tells work apart from waiting (hand-overs between threads).
struct MeasuredLoad {
    load: LoadResult,
    server_cpu: Option<std::time::Duration>,
}

impl MeasuredLoad {
    /// Runs `load`, reading the CPU time of process `server_pid` before and after.
    async fn run(server_pid: Option<u32>, load: impl Future<Output = LoadResult>) -> Self {
        let cpu_before = server_pid.and_then(|pid| process_cpu(pid).ok());
        let load = load.await;
        let server_cpu = server_pid
            .and_then(|pid| process_cpu(pid).ok())
            .zip(cpu_before)
            .map(|(after, before)| after.saturating_sub(before));
        Self { load, server_cpu }
    }

    /// The server's CPU per successful operation in microseconds, when it could be read.
    fn server_micros_per_operation(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.load.operations > 0).then(|| cpu.as_secs_f64() * 1e6 / self.load.operations as f64)
    }
}

/// A GetState load, and its figure with the serving process's CPU time per answered request.
async fn get_state_measured(
    target: &[Channel],
    server_pid: Option<u32>,
    config: &BenchConfig,
) -> (LoadResult, String) {
    let measured = MeasuredLoad::run(server_pid, get_state_load(target, config)).await;
    let mut figure = describe(&measured.load);
    if let Some(micros) = measured.server_micros_per_operation() {
        figure.push_str(&format!("; server CPU {micros:.1} µs/op"));
    }
    (measured.load, figure)
}

/// One HandleCommand and one HandleEvent, as Chief of State makes them for a one-event command.
pub(crate) async fn direct_handler_round_trip(
    mut client: WriteSideHandlerServiceClient<Channel>,
) -> bool {
    let command = client
        .handle_command(HandleCommandRequest {
            command: Some(counter_any(1)),
            prior_state: Some(counter_any(1)),
            prior_event_meta: Some(MetaData::default()),
        })
        .await;
    let Ok(command) = command else {
        return false;
    };
    let event = command.into_inner().events.into_iter().next();
    client
        .handle_event(HandleEventRequest {
            event,
            prior_state: Some(counter_any(1)),
            event_meta: Some(MetaData::default()),
        })
        .await
        .is_ok()
}

/// The baselines every write-path ratio is taken against, measured once per run.
struct Baselines {
    ceiling: LoadResult,
    /// What the ceiling's processes spent per operation, when they could be read.
    ceiling_cpu: Option<CpuPerOperation>,
    echo: LoadResult,
}

/// What each process spent per operation since `before`; `None` when a process could not be read.
fn cpu_per_operation_since(
    before: Option<CpuSample>,
    cos_pid: Option<u32>,
    handler_pid: Option<u32>,
    operations: u64,
) -> Option<CpuPerOperation> {
    let after = CpuSample::take(cos_pid, handler_pid).ok()?;
    CpuPerOperation::of_run(&after.since(&before?), operations)
}

async fn handler_ceiling(handler: &[Channel], config: &BenchConfig) -> LoadResult {
    let handler = handler.to_vec();
    closed_loop(config.concurrency, config.duration, move |worker, _| {
        let client = WriteSideHandlerServiceClient::new(handler[worker % handler.len()].clone());
        direct_handler_round_trip(client)
    })
    .await
}

/// Every scenario, in order; returns the report rows.
pub async fn run_all(config: &BenchConfig) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let bench_binary = std::env::current_exe()?;
    let handler_port = free_port()?;
    let handler_address: SocketAddr = format!("127.0.0.1:{handler_port}").parse()?;
    let handler = ChildProcess::start(
        "handler",
        bench_binary.clone(),
        &[
            "handler".into(),
            "--listen".into(),
            handler_address.to_string(),
        ],
        &[],
        handler_address,
    )
    .await?;
    let echo_port = free_port()?;
    let echo_address: SocketAddr = format!("127.0.0.1:{echo_port}").parse()?;
    let echo = ChildProcess::start(
        "echo",
        bench_binary,
        &["echo".into(), "--listen".into(), echo_address.to_string()],
        &[],
        echo_address,
    )
    .await?;

    let handler_channels = channels(handler_address, config.connections).await?;
    let ceiling_before = CpuSample::take(None, handler.pid()).ok();
    let ceiling = handler_ceiling(&handler_channels, config).await;
    let ceiling_cpu =
        cpu_per_operation_since(ceiling_before, None, handler.pid(), ceiling.operations);
    let mut ceiling_figure = describe(&ceiling);
    if let Some(cpu) = &ceiling_cpu {
        ceiling_figure.push_str(&format!("; CPU per operation: {}", cpu.describe()));
    }
    rows.push(Row {
        scenario: "baseline: handler ceiling (HandleCommand + HandleEvent, direct)".into(),
        figure: ceiling_figure,
        ratio: "1.00".into(),
        target: String::new(),
        verdict: Verdict::Informational,
    });
    let echo_channels = channels(echo_address, config.connections).await?;
    let (echo_result, echo_figure) = get_state_measured(&echo_channels, echo.pid(), config).await;
    let baselines = Baselines {
        ceiling,
        ceiling_cpu,
        echo: echo_result,
    };
    rows.push(Row {
        scenario: "baseline: bare tonic echo (GetState)".into(),
        figure: echo_figure,
        ratio: "1.00".into(),
        target: String::new(),
        verdict: Verdict::Informational,
    });

    let mut stores = Vec::new();
    if let Some(target) = &config.postgres {
        stores.push(BenchStore::postgres(target, "write"));
    }
    stores.push(BenchStore::sqlite()?);
    for store in stores.iter().filter(|_| config.runs("write")) {
        write_scenarios(
            store,
            &handler,
            &handler_channels,
            &baselines,
            config,
            &mut rows,
        )
        .await?;
        store.drop_schema().await;
    }

    if config.runs("recovery") {
        let recovery_store = match &config.postgres {
            Some(target) => BenchStore::postgres(target, "recovery"),
            None => BenchStore::sqlite()?,
        };
        recovery_scenarios(&recovery_store, handler_address, config, &mut rows).await?;
        recovery_store.drop_schema().await;
    }
    if config.runs("memory") {
        memory_scenarios(handler_address, config, &mut rows).await?;
    }
    if config.runs("readside") {
        read_side_scenarios(handler_address, config, &mut rows).await?;
    }
    if config.runs("cluster") {
        match &config.postgres {
            Some(target) => rows
                .push(super::cluster::three_nodes_vs_one(target, handler_address, config).await?),
            None => rows.push(Row {
                scenario: "3 nodes vs 1 node".into(),
                figure: "not measured: a cluster needs PostgreSQL".into(),
                ratio: String::new(),
                target: String::new(),
                verdict: Verdict::Informational,
            }),
        }
    }

    echo.stop().await?;
    handler.stop().await?;
    Ok(rows)
}

async fn write_scenarios(
    store: &BenchStore,
    handler: &ChildProcess,
    handler_channels: &[Channel],
    baselines: &Baselines,
    config: &BenchConfig,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let ceiling = &baselines.ceiling;
    let handler_address = handler.address;
    let cos = start_cos(&store.environment, handler_address, &[]).await?;
    let cos_channels = channels(cos.address, config.connections).await?;
    let processes = PacedProcesses {
        cos: cos.pid(),
        handler: handler.pid(),
    };
    let write_before = CpuSample::take(cos.pid(), handler.pid()).ok();
    let write = write_load(&cos_channels, config, spread_entity).await;
    let is_postgres = store.name == "postgres";
    let write_cpu =
        cpu_per_operation_since(write_before, cos.pid(), handler.pid(), write.operations).map(
            |cpu| {
                if is_postgres {
                    cpu
                } else {
                    cpu.without_postgres()
                }
            },
        );
    let ratio = write.throughput() / ceiling.throughput().max(1.0);
    let mut figure = describe(&write);
    let mut ratio_text = format!("{ratio:.2} × handler ceiling");
    if let Some(cpu) = &write_cpu {
        figure.push_str(&format!("; CPU per command: {}", cpu.describe()));
        if let Some(bound) = baselines
            .ceiling_cpu
            .as_ref()
            .and_then(|ceiling_cpu| free_cos_ratio(ceiling_cpu, cpu))
        {
            ratio_text.push_str(&format!(" (a CoS costing no CPU: {bound:.2} ×)"));
        }
    }
    rows.push(Row {
        scenario: format!(
            "write path on {} ({} clients, {} entities)",
            store.name, config.concurrency, config.entities
        ),
        figure,
        ratio: ratio_text,
        target: if is_postgres {
            "≥ 0.5 ×".into()
        } else {
            String::new()
        },
        verdict: if is_postgres {
            Verdict::from_check(ratio >= 0.5)
        } else {
            Verdict::Informational
        },
    });

    // Let the write phase's entities come to rest (2 s, plus a maintenance tick) before measuring latency
    // or GetState, so that work belongs to neither phase.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    if let Some(settings) = store.postgres_settings() {
        let probe = CommitProbe::open(settings).await?;
        let half_peak = PacedLatency::measure(
            write.throughput() / 2.0,
            "paced",
            &cos_channels,
            handler_channels,
            processes,
            Some(&probe),
            config,
        )
        .await;
        rows.push(half_peak.half_peak_row(store.name));
        let low_rate = PacedLatency::measure(
            LOW_RATE_PER_SECOND,
            "low-rate",
            &cos_channels,
            handler_channels,
            processes,
            Some(&probe),
            config,
        )
        .await;
        rows.push(low_rate.low_rate_row(store.name));
        probe.close().await;
    }

    let (get_state, figure) = get_state_measured(&cos_channels, cos.pid(), config).await;
    let ratio = get_state.throughput() / baselines.echo.throughput().max(1.0);
    rows.push(Row {
        scenario: format!("GetState of cached entities, {}", store.name),
        figure,
        ratio: format!("{ratio:.2} × echo"),
        target: "≥ 0.8 ×".into(),
        verdict: Verdict::from_check(ratio >= 0.8),
    });

    let hot = write_load(&cos_channels, config, hot_entity).await;
    rows.push(Row {
        scenario: format!(
            "one hot entity, {} ({} clients)",
            store.name, config.concurrency
        ),
        figure: describe(&hot),
        ratio: format!(
            "{:.2} × handler ceiling",
            hot.throughput() / ceiling.throughput().max(1.0)
        ),
        target: String::new(),
        verdict: Verdict::Informational,
    });
    cos.stop().await?;
    if is_postgres {
        rows.push(resting_on_the_write_path(store, handler_address, config).await?);
    }
    Ok(())
}

/// What resting costs or saves on the write path: the same load on warmed-up nodes with the default
/// `COS_PASSIVATION_REST_AFTER` (2 s: an entity that gets a command less often than that rests in between
/// and its next command wakes it) and with `off` (every live entity keeps its actor, as in the original).
async fn resting_on_the_write_path(
    store: &BenchStore,
    handler_address: SocketAddr,
    config: &BenchConfig,
) -> anyhow::Result<Row> {
    let with_resting = warm_write_load(store, handler_address, config, &[]).await?;
    let without_resting = warm_write_load(
        store,
        handler_address,
        config,
        &[("COS_PASSIVATION_REST_AFTER", "off")],
    )
    .await?;
    let ratio = with_resting.load.throughput() / without_resting.load.throughput().max(1.0);
    Ok(Row {
        scenario: format!(
            "write path on {}, warmed up: default resting vs COS_PASSIVATION_REST_AFTER=off",
            store.name
        ),
        figure: format!(
            "resting: {}; off: {}",
            describe_with_cos_cpu(&with_resting),
            describe_with_cos_cpu(&without_resting)
        ),
        ratio: format!("{ratio:.2} × off"),
        target: String::new(),
        verdict: Verdict::Informational,
    })
}

/// A write load's figures and, when the node's CPU could be read, its CPU per command.
fn describe_with_cos_cpu(measured: &MeasuredLoad) -> String {
    let mut text = describe(&measured.load);
    if let Some(micros) = measured.server_micros_per_operation() {
        text.push_str(&format!(", CoS CPU {micros:.0} µs per command"));
    }
    text
}

/// The write load on a fresh node with `settings`, after a warm-up that touches every entity.
async fn warm_write_load(
    store: &BenchStore,
    handler_address: SocketAddr,
    config: &BenchConfig,
    settings: &[(&str, &str)],
) -> anyhow::Result<MeasuredLoad> {
    let cos = start_cos(&store.environment, handler_address, settings).await?;
    let cos_channels = channels(cos.address, config.connections).await?;
    let warm_up = BenchConfig {
        duration: config.duration / 4,
        ..config.clone()
    };
    let _warmed = write_load(&cos_channels, &warm_up, spread_entity).await;
    let measured =
        MeasuredLoad::run(cos.pid(), write_load(&cos_channels, config, spread_entity)).await;
    cos.stop().await?;
    Ok(measured)
}
