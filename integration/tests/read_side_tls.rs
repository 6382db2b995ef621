//! Read handlers behind TLS (`useTls`), gRPC and HTTPS: a `cos` process that trusts the handler's CA (given
//! through `SSL_CERT_FILE`, which the system trust store loader honours) delivers; one that trusts another CA
//! refuses the handshake, delivers nothing and stops the read side with the reason. Real processes, because
//! the trust store is read from the process environment.

use std::net::SocketAddr;
use std::time::Duration;

use cos_core::proto::chief_of_state::v1::ProcessCommandRequest;
use cos_core::proto::chief_of_state::v1::chief_of_state_service_client::ChiefOfStateServiceClient;
use cos_core::proto::internal::ListReadSidesRequest;
use cos_core::proto::internal::read_side_admin_client::ReadSideAdminClient;
use cos_core::readside::ReadSideProtocol;
use cos_integration::bench::process::ChildProcess;
use cos_integration::support::read_handler::{Behaviour, ReadHandlerServer, TlsIdentity};
use cos_integration::support::read_side_node::{DELIVERY_WAIT, start_read_side_process};
use cos_integration::support::script_handler::{ScriptHandler, text_any};

/// A `cos` process on SQLite with one TLS read side `secure` on `server`, trusting the CA in `ca_file`.
async fn start_node(
    data: &tempfile::TempDir,
    write_handler: SocketAddr,
    server: &ReadHandlerServer,
    ca_file: &std::path::Path,
) -> anyhow::Result<ChildProcess> {
    let protocol = match server.protocol {
        ReadSideProtocol::Grpc => "grpc",
        ReadSideProtocol::Http => "http",
    };
    let read_side = [
        (
            "COS_READ_SIDE_CONFIG__PROTOCOL__secure",
            protocol.to_string(),
        ),
        (
            "COS_READ_SIDE_CONFIG__HOST__secure",
            "127.0.0.1".to_string(),
        ),
        (
            "COS_READ_SIDE_CONFIG__PORT__secure",
            server.port.to_string(),
        ),
        ("COS_READ_SIDE_CONFIG__USE_TLS__secure", "true".to_string()),
        ("COS_READ_SIDE_CONFIG__TIMEOUT__secure", "3000".to_string()),
        ("SSL_CERT_FILE", ca_file.to_string_lossy().into_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_string(), value))
    .collect();
    start_read_side_process(data, write_handler, read_side).await
}

async fn emit(node: &ChildProcess, entity_id: &str) -> anyhow::Result<()> {
    let mut client = ChiefOfStateServiceClient::connect(format!("http://{}", node.address)).await?;
    client
        .process_command(ProcessCommandRequest {
            entity_id: entity_id.to_string(),
            command: Some(text_any("emit:sealed")),
        })
        .await?;
    Ok(())
}

/// The stop reasons of the `secure` read side's shards (empty strings for running shards).
async fn stop_reasons(node: &ChildProcess) -> anyhow::Result<Vec<String>> {
    let mut admin = ReadSideAdminClient::connect(format!("http://{}", node.address)).await?;
    let listed = admin
        .list_read_sides(ListReadSidesRequest {})
        .await?
        .into_inner();
    Ok(listed
        .read_sides
        .into_iter()
        .flat_map(|status| status.shards)
        .map(|shard| shard.stopped_reason)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_read_handlers_are_reached_only_through_a_trusted_certificate() -> anyhow::Result<()> {
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let fixtures = TlsIdentity::test_ca_path();
    let other_ca = fixtures.with_file_name("other-ca.pem");
    for protocol in [ReadSideProtocol::Grpc, ReadSideProtocol::Http] {
        let server = ReadHandlerServer::start_with_tls(
            protocol,
            0,
            Behaviour::accept_all(),
            Some(TlsIdentity::test_server()?),
        )
        .await?;

        let data = tempfile::TempDir::new()?;
        let trusting = start_node(&data, running.address, &server, &fixtures).await?;
        emit(&trusting, "sealed-1").await?;
        let accepted = server.wait_for_accepted(1, DELIVERY_WAIT).await;
        assert_eq!(accepted[0].entity_id, "sealed-1", "{protocol:?}");
        trusting.stop().await?;

        let data = tempfile::TempDir::new()?;
        let distrusting = start_node(&data, running.address, &server, &other_ca).await?;
        emit(&distrusting, "sealed-2").await?;
        let give_up = tokio::time::Instant::now() + DELIVERY_WAIT;
        let reason = loop {
            let stopped: Vec<String> = stop_reasons(&distrusting)
                .await?
                .into_iter()
                .filter(|reason| !reason.is_empty())
                .collect();
            if let Some(reason) = stopped.first() {
                break reason.clone();
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "{protocol:?}: no stop"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            reason.contains("unavailable") || reason.contains("certificate"),
            "{protocol:?}: {reason}"
        );
        assert_eq!(
            server.accepted().len(),
            1,
            "{protocol:?}: nothing got through"
        );
        distrusting.stop().await?;
        server.shutdown().await;
    }
    Ok(())
}
