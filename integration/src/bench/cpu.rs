//! CPU time from `/proc`, to say where a scenario's time goes: per process (Chief of State, a handler), summed
//! over every PostgreSQL process, and for the whole machine. Resolution is one clock tick (10 ms), so it is
//! meant for windows of a second or more.

use std::time::Duration;

use anyhow::Context;

/// Clock ticks per second of `/proc/<pid>/stat` and `/proc/stat` (`USER_HZ`, 100 on the Linux architectures
/// we run on).
const TICKS_PER_SECOND: u64 = 100;

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// User plus system CPU time of a process so far.
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    let (_, after_name) = stat.rsplit_once(')').context("malformed stat line")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 counted from 0 after the name.
    let user: u64 = fields.get(11).context("no utime")?.parse()?;
    let system: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(ticks_to_duration(user + system))
}

/// CPU time so far of every running process whose command name is `name` (processes that already exited
/// are not counted, so compare samples of long-lived processes such as a pool's database backends).
pub fn cpu_of_processes_named(name: &str) -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    let mut total = Duration::ZERO;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|pid| pid.parse().ok()) else {
            continue;
        };
        let Ok(command) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if command.trim_end() == name {
            total += process_cpu(pid).unwrap_or_default();
        }
    }
    total
}

/// Busy and total CPU time of the whole machine so far (all cores), from the first line of `/proc/stat`.
pub fn machine_cpu() -> anyhow::Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let mut ticks = Vec::new();
    for field in line.split_whitespace().skip(1).take(8) {
        ticks.push(field.parse::<u64>()?);
    }
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok((ticks_to_duration(total - idle), ticks_to_duration(total)))
}

/// CPU used by the parts of a run (Chief of State, one handler process, the load generator, PostgreSQL),
/// between two samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    pub cos: Duration,
    /// The run's handler process: the read handler of a read-side run, the write handler of a latency run.
    pub handler: Duration,
    /// This process: the benchmark's clients are its own tasks.
    pub load_generator: Duration,
    /// Every process named `postgres` (the server and its backends), whoever they work for.
    pub postgres: Duration,
    /// All cores, busy and in total.
    pub machine_busy: Duration,
    pub machine_total: Duration,
}

impl CpuSample {
    /// The CPU used so far by Chief of State, the handler, the load generator, PostgreSQL and the machine.
    pub fn take(cos_pid: Option<u32>, handler_pid: Option<u32>) -> anyhow::Result<Self> {
        let (machine_busy, machine_total) = machine_cpu()?;
        Ok(Self {
            cos: cos_pid.map_or(Ok(Duration::ZERO), process_cpu)?,
            handler: handler_pid.map_or(Ok(Duration::ZERO), process_cpu)?,
            load_generator: process_cpu(std::process::id())?,
            postgres: cpu_of_processes_named("postgres"),
            machine_busy,
            machine_total,
        })
    }

    /// What was used between `earlier` and this sample.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            cos: self.cos.saturating_sub(earlier.cos),
            handler: self.handler.saturating_sub(earlier.handler),
            load_generator: self.load_generator.saturating_sub(earlier.load_generator),
            postgres: self.postgres.saturating_sub(earlier.postgres),
            machine_busy: self.machine_busy.saturating_sub(earlier.machine_busy),
            machine_total: self.machine_total.saturating_sub(earlier.machine_total),
        }
    }

    /// The share of the machine's cores that was busy.
    pub fn machine_busy_fraction(&self) -> f64 {
        self.machine_busy.as_secs_f64() / self.machine_total.as_secs_f64().max(1e-6)
    }

    /// "`label`: CoS a µs, read handler b µs, PostgreSQL c µs; machine d % busy", the processes' CPU divided by
    /// `events`.
    pub fn per_event(&self, label: &str, events: usize, with_postgres: bool) -> String {
        let micros = |duration: Duration| duration.as_secs_f64() * 1e6 / events.max(1) as f64;
        let postgres = if with_postgres {
            format!(", PostgreSQL {:.0} µs", micros(self.postgres))
        } else {
            String::new()
        };
        format!(
            "{label}: CoS {:.0} µs, read handler {:.0} µs{postgres}; machine {:.0} % busy",
            micros(self.cos),
            micros(self.handler),
            100.0 * self.machine_busy_fraction(),
        )
    }
}
