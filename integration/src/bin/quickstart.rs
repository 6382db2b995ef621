//! `quickstart`: Chief of State and the example bank handler in one process, on embedded SQLite, so a
//! newcomer sees it work with one command. Every `COS_*` variable still applies; the write handler settings
//! point at the bundled bank handler.

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context;
use cos_core::proto::chief_of_state::v1::ProcessCommandRequest;
use cos_core::proto::chief_of_state::v1::chief_of_state_service_client::ChiefOfStateServiceClient;
use cos_core::settings::{LoadOptions, Settings};
use cos_integration::bank::proto::{Account, Deposit, OpenAccount};
use cos_integration::bank::{pack, unpack};
use cos_server::RunningNode;
use tokio::net::TcpListener;

const DEMO_ACCOUNT: &str = "demo-account";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("quickstart: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let handler_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the bank handler")?;
    let handler_address = handler_listener.local_addr()?;
    let (stop_handler, handler_stopped) = tokio::sync::oneshot::channel::<()>();
    let handler = tokio::spawn(cos_integration::bank::serve(handler_listener, async {
        let _ = handler_stopped.await;
    }));

    let mut environment: HashMap<String, String> = std::env::vars().collect();
    environment.insert(
        "COS_WRITE_SIDE_HOST".into(),
        handler_address.ip().to_string(),
    );
    environment.insert(
        "COS_WRITE_SIDE_PORT".into(),
        handler_address.port().to_string(),
    );
    environment
        .entry("COS_ADDRESS".into())
        .or_insert_with(|| "127.0.0.1".into());
    environment
        .entry("LOG_STYLE".into())
        .or_insert_with(|| "SIMPLE".into());
    let settings = Settings::load(&LoadOptions {
        config_file: None,
        environment,
    })?;
    cos_server::logging::init(&settings.logging)?;

    let mut node = RunningNode::start(settings).await?;
    let cos_address = node.local_address();
    demo(&format!("http://{cos_address}")).await?;
    println!(
        "\nchief of state is listening on {cos_address} with the example bank handler on {handler_address}.\n\
         try, in another terminal:\n\
         \x20 cargo run -p cos-integration --bin bank-client -- open acct-1 alice 100\n\
         \x20 cargo run -p cos-integration --bin bank-client -- deposit acct-1 50\n\
         \x20 cargo run -p cos-integration --bin bank-client -- withdraw acct-1 500\n\
         \x20 cargo run -p cos-integration --bin bank-client -- state acct-1\n\
         press ctrl-c to stop.\n"
    );

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            node.begin_shutdown();
            node.wait().await?;
        }
        result = node.wait() => result?,
    }
    let _ = stop_handler.send(());
    let _ = handler.await;
    Ok(())
}

/// Opens the demo account on first run, deposits 10, and prints the resulting state.
async fn demo(cos_url: &str) -> anyhow::Result<()> {
    let mut client = ChiefOfStateServiceClient::connect(cos_url.to_string()).await?;
    let open = ProcessCommandRequest {
        entity_id: DEMO_ACCOUNT.to_string(),
        command: Some(pack(&OpenAccount {
            owner: "newcomer".to_string(),
            initial_balance: 100,
        })),
    };
    // Already open on a second run: that refusal is expected.
    let _ = client.process_command(open).await;
    let deposit = ProcessCommandRequest {
        entity_id: DEMO_ACCOUNT.to_string(),
        command: Some(pack(&Deposit { amount: 10 })),
    };
    let response = client.process_command(deposit).await?.into_inner();
    let revision = response.meta.map_or(0, |meta| meta.revision_number);
    let account: Account = match response.state {
        Some(state) => unpack(&state)?,
        None => anyhow::bail!("chief of state answered without a state"),
    };
    println!(
        "demo: deposited 10 into {DEMO_ACCOUNT}: owner={} balance={} revision={revision}",
        account.owner, account.balance
    );
    Ok(())
}
