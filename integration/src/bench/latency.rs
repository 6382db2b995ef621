//! Write latency at a fixed request rate, against the direct handler round trip at the same rate: once at
//! half the measured write peak (the target) and once at a low rate, where stalls that load hides
//! (delayed ACKs held back by Nagle's algorithm, timers) show up.

use std::time::Duration;

use cos_core::proto::chief_of_state::v1::chief_of_state_service_client::ChiefOfStateServiceClient;
use cos_core::proto::chief_of_state::v1::write_side_handler_service_client::WriteSideHandlerServiceClient;
use tonic::transport::Channel;

use super::commit_probe::CommitProbe;
use super::config::BenchConfig;
use super::cpu::CpuSample;
use super::load::{LoadResult, open_loop, open_loop_split};
use super::report::{Row, Verdict, describe, millis};
use super::scenarios::{command_request, direct_handler_round_trip};

/// The low rate: a few requests at a time on an otherwise idle machine.
pub const LOW_RATE_PER_SECOND: f64 = 200.0;

/// How many entities a paced run spreads its commands over, in turn: the first command of each is the
/// entity's first ever, which recovers it from the store (finding nothing) before it runs.
const PACED_ENTITIES: u64 = 1000;

/// The processes whose CPU time a paced run divides by its operations.
#[derive(Debug, Clone, Copy)]
pub struct PacedProcesses {
    pub cos: Option<u32>,
    pub handler: Option<u32>,
}

/// A CPU sample of the run's processes; a process that cannot be read counts nothing (the row still has its
/// latencies).
fn cpu_sample(processes: PacedProcesses) -> CpuSample {
    CpuSample::take(processes.cos, processes.handler).unwrap_or_default()
}

/// Commands through Chief of State and direct handler round trips, each paced at the same rate, with the
/// CPU each cost the server-side processes (the figure that explains the ratios on a shared machine).
pub struct PacedLatency {
    pub rate: f64,
    pub through_cos: LoadResult,
    /// The first command of each entity (`through_cos` holds them too).
    pub first_commands: LoadResult,
    /// Every later command (`through_cos` holds them too).
    pub later_commands: LoadResult,
    pub direct: LoadResult,
    /// Bare single-row commits at the same rate, when the store is PostgreSQL: the disk's share.
    pub bare_commit: Option<LoadResult>,
    cpu_through_cos: CpuSample,
    cpu_direct: CpuSample,
}

impl PacedLatency {
    /// Paces `rate` commands per second through `cos` over `PACED_ENTITIES` entities named `{prefix}-N`,
    /// then the same rate of direct round trips on `handler`, then (given a probe) the same rate of bare
    /// commits.
    pub async fn measure(
        rate: f64,
        prefix: &'static str,
        cos: &[Channel],
        handler: &[Channel],
        processes: PacedProcesses,
        probe: Option<&CommitProbe>,
        config: &BenchConfig,
    ) -> Self {
        let rate = rate.max(1.0);
        let before = cpu_sample(processes);
        let max_in_flight = config.concurrency * 4;
        let cos = cos.to_vec();
        let split = open_loop_split(
            rate,
            config.duration,
            max_in_flight,
            PACED_ENTITIES,
            move |sequence| {
                let mut client =
                    ChiefOfStateServiceClient::new(cos[sequence as usize % cos.len()].clone());
                let entity = format!("{prefix}-{}", sequence % PACED_ENTITIES);
                async move {
                    client
                        .process_command(command_request(entity))
                        .await
                        .is_ok()
                }
            },
        )
        .await;
        let between = cpu_sample(processes);
        let handler = handler.to_vec();
        let direct = open_loop(rate, config.duration, max_in_flight, move |sequence| {
            let client = WriteSideHandlerServiceClient::new(
                handler[sequence as usize % handler.len()].clone(),
            );
            direct_handler_round_trip(client)
        })
        .await;
        let after = cpu_sample(processes);
        let bare_commit = match probe {
            Some(probe) => Some(probe.paced(rate, config.duration, max_in_flight).await),
            None => None,
        };
        Self {
            rate,
            through_cos: split.all,
            first_commands: split.leading,
            later_commands: split.rest,
            direct,
            bare_commit,
            cpu_through_cos: between.since(&before),
            cpu_direct: after.since(&between),
        }
    }

    fn ratio_at(&self, quantile: f64) -> f64 {
        self.ratio_of(&self.through_cos, quantile)
    }

    fn ratio_of(&self, commands: &LoadResult, quantile: f64) -> f64 {
        commands.percentile(quantile).as_secs_f64()
            / self.direct.percentile(quantile).as_secs_f64().max(1e-6)
    }

    /// The ratios of all commands, of the commands after each entity's first when the run reached them
    /// (informational: the target counts every command), and what a handler call plus a durable commit take.
    fn ratios(&self) -> String {
        let mut text = format!(
            "p50 {:.2} ×, p99 {:.2} ×",
            self.ratio_at(0.5),
            self.ratio_at(0.99)
        );
        if !self.later_commands.latencies_micros.is_empty() {
            text.push_str(&format!(
                " (later commands: p50 {:.2} ×, p99 {:.2} ×)",
                self.ratio_of(&self.later_commands, 0.5),
                self.ratio_of(&self.later_commands, 0.99)
            ));
        }
        if let Some(estimate) = self.round_trip_plus_commit() {
            text.push_str(&format!(
                "; direct round trip + bare commit (medians added): {estimate:.2} ×"
            ));
        }
        text
    }

    /// The median of a direct round trip plus the median of a bare commit, over the direct median: about what
    /// any service that calls the handler and then commits durably pays before its own gRPC hop. An estimate,
    /// not a bound: medians do not add exactly, and the probe commits at another moment of the run.
    fn round_trip_plus_commit(&self) -> Option<f64> {
        let commits = self.bare_commit.as_ref()?;
        if commits.latencies_micros.is_empty() || self.direct.latencies_micros.is_empty() {
            return None;
        }
        let direct = self.direct.percentile(0.5).as_secs_f64().max(1e-6);
        Some((direct + commits.percentile(0.5).as_secs_f64()) / direct)
    }

    fn figure(&self) -> String {
        let per =
            |cpu: Duration, operations: u64| cpu.as_secs_f64() * 1e6 / operations.max(1) as f64;
        let commands = self.through_cos.operations;
        let round_trips = self.direct.operations;
        let bare_commit = self
            .bare_commit
            .as_ref()
            .map(|commits| {
                format!(
                    "; a bare one-row commit at the same rate: p50 {} p99 {}",
                    millis(commits.percentile(0.5)),
                    millis(commits.percentile(0.99))
                )
            })
            .unwrap_or_default();
        format!(
            "{}; of these, each entity's first command (recovers it): {}, the later ones: {}; direct handler \
             at the same rate: p50 {} p99 {}{bare_commit}; CPU per command: CoS {:.0} µs, handler {:.0} µs, \
             PostgreSQL {:.0} µs; per direct round trip: handler {:.0} µs",
            describe(&self.through_cos),
            median_and_p99(&self.first_commands),
            median_and_p99(&self.later_commands),
            millis(self.direct.percentile(0.5)),
            millis(self.direct.percentile(0.99)),
            per(self.cpu_through_cos.cos, commands),
            per(self.cpu_through_cos.handler, commands),
            per(self.cpu_through_cos.postgres, commands),
            per(self.cpu_direct.handler, round_trips),
        )
    }

    /// The target row: p50 ≤ 2 ×, p99 ≤ 3 × the direct round trip at half the write peak.
    pub fn half_peak_row(&self, store: &str) -> Row {
        let (p50, p99) = (self.ratio_at(0.5), self.ratio_at(0.99));
        Row {
            scenario: format!(
                "write latency at half the peak rate ({:.0}/s), {store}",
                self.rate
            ),
            figure: self.figure(),
            ratio: self.ratios(),
            target: "p50 ≤ 2 ×, p99 ≤ 3 ×".into(),
            verdict: Verdict::from_check(p50 <= 2.0 && p99 <= 3.0),
        }
    }

    /// The same comparison at a low rate (informational).
    pub fn low_rate_row(&self, store: &str) -> Row {
        Row {
            scenario: format!("write latency at a low rate ({:.0}/s), {store}", self.rate),
            figure: self.figure(),
            ratio: self.ratios(),
            target: String::new(),
            verdict: Verdict::Informational,
        }
    }
}

/// "p50 … p99 …" of a part of a run, or "none" when the run was too short to reach it.
fn median_and_p99(part: &LoadResult) -> String {
    if part.latencies_micros.is_empty() {
        return "none".into();
    }
    format!(
        "p50 {} p99 {}",
        millis(part.percentile(0.5)),
        millis(part.percentile(0.99))
    )
}
