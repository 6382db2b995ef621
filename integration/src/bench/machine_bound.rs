//! How much of the write-throughput ratio is Chief of State's own cost and how much is the shared machine's.
//!
//! The handler ceiling spends only the handler's and the load generator's CPU per operation; a command through
//! Chief of State also spends the database's and Chief of State's, on the same cores. From the CPU each process
//! used in the same run this module works out the rate a Chief of State that cost no CPU at all could reach,
//! as a ratio to the ceiling: about the most any implementation could show on this machine. It errs low, since
//! the other processes would batch more per system call at a free Chief of State's higher rate.

use super::cpu::CpuSample;

/// CPU per operation of each part of a closed-loop run, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct CpuPerOperation {
    pub cos: f64,
    pub handler: f64,
    pub load_generator: f64,
    pub postgres: f64,
    /// The share of the machine's cores that was busy during the run.
    pub machine_busy: f64,
}

impl CpuPerOperation {
    /// Divides what a run used by its successful operations; `None` when it had none.
    pub fn of_run(used: &CpuSample, operations: u64) -> Option<Self> {
        if operations == 0 {
            return None;
        }
        let per = |cpu: std::time::Duration| cpu.as_secs_f64() * 1e6 / operations as f64;
        Some(Self {
            cos: per(used.cos),
            handler: per(used.handler),
            load_generator: per(used.load_generator),
            postgres: per(used.postgres),
            machine_busy: used.machine_busy_fraction(),
        })
    }

    /// The same figures for a run on SQLite: a local PostgreSQL's idle ticks are not part of its cost.
    pub fn without_postgres(self) -> Self {
        Self {
            postgres: 0.0,
            ..self
        }
    }

    /// Everything but Chief of State: what a command costs the machine even if Chief of State were free.
    fn outside_cos(&self) -> f64 {
        self.handler + self.load_generator + self.postgres
    }

    /// "CoS a µs, handler b µs, load generator c µs, PostgreSQL d µs; machine e % busy" (parts that used
    /// nothing are left out, so the ceiling's line shows only its two processes).
    pub fn describe(&self) -> String {
        let parts = [
            ("CoS", self.cos),
            ("handler", self.handler),
            ("load generator", self.load_generator),
            ("PostgreSQL", self.postgres),
        ];
        let listed: Vec<String> = parts
            .iter()
            .filter(|(_, micros)| *micros > 0.0)
            .map(|(name, micros)| format!("{name} {micros:.0} µs"))
            .collect();
        format!(
            "{}; machine {:.0} % busy",
            listed.join(", "),
            100.0 * self.machine_busy
        )
    }
}

/// The write-path ratio a Chief of State that cost no CPU would reach: the ceiling's cost per operation over
/// the write run's cost per command outside Chief of State, with the machine as busy as during the ceiling.
/// `None` when either run's processes could not be read.
pub fn free_cos_ratio(ceiling: &CpuPerOperation, write: &CpuPerOperation) -> Option<f64> {
    let ceiling_cost = ceiling.handler + ceiling.load_generator;
    let write_cost = write.outside_cos();
    (ceiling_cost > 0.0 && write_cost > 0.0).then(|| ceiling_cost / write_cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(handler: f64, load_generator: f64, postgres: f64) -> CpuPerOperation {
        CpuPerOperation {
            cos: 0.0,
            handler,
            load_generator,
            postgres,
            machine_busy: 1.0,
        }
    }

    #[test]
    fn a_free_cos_is_bounded_by_what_the_other_processes_spend_per_command() {
        // The ceiling spends 60 µs per operation; a command spends 135 µs outside CoS.
        let ratio = free_cos_ratio(&run(30.0, 30.0, 0.0), &run(30.0, 65.0, 40.0));
        let ratio = ratio.expect("both runs were measured");
        assert!((ratio - 60.0 / 135.0).abs() < 1e-9, "{ratio}");
    }

    #[test]
    fn a_run_whose_processes_were_not_read_gives_no_bound() {
        assert_eq!(
            free_cos_ratio(&run(0.0, 0.0, 0.0), &run(30.0, 65.0, 40.0)),
            None
        );
        assert!(CpuPerOperation::of_run(&CpuSample::default(), 0).is_none());
    }

    #[test]
    fn a_sqlite_run_counts_no_postgres_time() {
        let sqlite = run(30.0, 30.0, 1.0).without_postgres();
        assert_eq!(sqlite.postgres, 0.0);
        assert!(!sqlite.describe().contains("PostgreSQL"));
    }

    #[test]
    fn the_description_leaves_out_processes_that_did_not_take_part() {
        let line = run(30.0, 31.0, 0.0).describe();
        assert_eq!(
            line,
            "handler 30 µs, load generator 31 µs; machine 100 % busy"
        );
    }
}
