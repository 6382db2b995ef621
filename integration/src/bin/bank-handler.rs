//! `bank-handler`: runs the example bank-account write handler so a Chief of State can be pointed at it.
//!
//! Usage: `bank-handler [--listen 127.0.0.1:50051]`; prints one line with the bound address, serves until Ctrl-C.

use anyhow::Context;
use clap::Parser;
use cos_integration::bank;
use tokio::net::TcpListener;

/// Command-line arguments of `bank-handler`.
#[derive(Debug, Parser)]
#[command(
    name = "bank-handler",
    about = "Serve the example bank-account write handler for Chief of State"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the bound address is printed)
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local_address = listener
        .local_addr()
        .context("cannot read the bound address")?;
    println!("bank-handler listening on {local_address}");
    bank::serve(listener, wait_for_ctrl_c())
        .await
        .context("bank handler server failed")?;
    Ok(())
}

/// Resolves on Ctrl-C; if the signal cannot be watched, keeps serving rather than stopping at once.
async fn wait_for_ctrl_c() {
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("cannot watch for ctrl-c, serve until killed: {error}");
        std::future::pending::<()>().await;
    }
}
