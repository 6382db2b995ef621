//! Measures the resident memory of idle ractor actors, to separate ractor's own per-actor cost from ours
//! (see docs/performance.md), and what spawning one costs (what waking a resting entity adds).
//! Run: `cargo run --release -p cos-actors --example actor_memory`.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;

/// The smallest useful message: one pointer.
#[derive(RactorMessage)]
enum Ping {
    Once(Box<u64>),
}

/// An actor with no state that ignores its messages.
struct Minimal;

impl Actor for Minimal {
    type Msg = Ping;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Ping>,
        _arguments: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Ping>,
        message: Ping,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let Ping::Once(value) = message;
        std::hint::black_box(value);
        Ok(())
    }
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kilobytes| kilobytes.parse::<u64>().ok())
        .map_or(0, |kilobytes| kilobytes * 1024)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count = 100_000_u64;
    let before = resident_bytes();
    let started = std::time::Instant::now();
    let mut actors = Vec::new();
    for _ in 0..count {
        let (actor, _join) = Actor::spawn(None, Minimal, ()).await?;
        actor.cast(Ping::Once(Box::new(1)))?;
        actors.push(actor);
    }
    let spawned_in = started.elapsed();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after = resident_bytes();
    println!(
        "{count} idle ractor actors: {} bytes of resident memory each; spawned and sent one message in \
         {:.1} µs each",
        after.saturating_sub(before) / count,
        spawned_in.as_secs_f64() * 1e6 / count as f64
    );
    Ok(())
}
