//! CI's smoke run of the benchmark tool: it starts everything it needs and prints a complete table. The
//! figures themselves are never asserted (these machines are noisy); docs/performance.md has a full run.

use std::process::Command;

use cos_integration::bench::process::sibling_binary;

#[test]
fn the_quick_benchmark_runs_every_scenario_and_prints_a_table() -> anyhow::Result<()> {
    let output = Command::new(sibling_binary("cos-bench")?)
        .args(["run", "--quick"])
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "cos-bench failed: {stderr}\n{stdout}"
    );
    assert!(
        stdout.contains("| scenario | figure |"),
        "no table: {stdout}"
    );
    for scenario in [
        "baseline: handler ceiling",
        "baseline: bare tonic echo",
        "write path on postgres",
        "write latency at half the peak rate",
        "write latency at a low rate",
        "write path on sqlite",
        "GetState of cached entities",
        "one hot entity",
        "recovery of an entity",
        "memory with",
        "distinct entities touched",
        "read-side catch-up",
        "read-side lag",
        "read-side delivery throughput",
        "3 nodes vs 1 node",
    ] {
        let row = stdout
            .lines()
            .find(|line| line.contains(scenario))
            .unwrap_or_else(|| panic!("no row for {scenario:?} in {stdout}"));
        assert!(
            row.chars().any(|c| c.is_ascii_digit()),
            "row without a figure: {row}"
        );
    }
    for latency_row in stdout
        .lines()
        .filter(|line| line.contains("write latency at"))
    {
        assert!(
            latency_row.contains("a bare one-row commit at the same rate: p50"),
            "latency row without its commit floor: {latency_row}"
        );
    }
    Ok(())
}
