//! The benchmark report: one markdown table of figures, each with the baseline it is compared to.

use std::fmt::Write as _;
use std::time::Duration;

use super::load::LoadResult;

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub figure: String,
    pub ratio: String,
    pub target: String,
    pub verdict: Verdict,
}

/// Whether a figure meets its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    Informational,
}

impl Verdict {
    pub fn from_check(met: bool) -> Self {
        if met { Self::Met } else { Self::Missed }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "MISSED",
            Self::Informational => "",
        }
    }
}

/// Formats a duration in milliseconds with two decimals.
pub fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// "N ops/s, p50/p90/p99" for a load result.
pub fn describe(result: &LoadResult) -> String {
    let errors = if result.errors > 0 {
        format!(", {} errors", result.errors)
    } else {
        String::new()
    };
    format!(
        "{:.0} ops/s; p50 {} p90 {} p99 {}{errors}",
        result.throughput(),
        millis(result.percentile(0.50)),
        millis(result.percentile(0.90)),
        millis(result.percentile(0.99)),
    )
}

/// Renders the rows as a markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut table = String::from(
        "| scenario | figure | ratio to baseline | target | verdict |\n|---|---|---|---|---|\n",
    );
    for row in rows {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} |",
            row.scenario,
            row.figure,
            row.ratio,
            row.target,
            row.verdict.label()
        );
    }
    table
}
