//! Read sides across a cluster of real node processes: every shard's events are delivered once the shard has
//! a home, in order per entity, whichever node wrote them; an operator's pause and resume through any node
//! reach the workers on every node; when a node leaves or joins, shards' workers move with the shards and
//! continue from the stored offsets, so nothing is lost and order per entity holds — also when a node is
//! killed mid-delivery.

use std::time::Duration;

use cos_core::proto::chief_of_state::v1::chief_of_state_service_client::ChiefOfStateServiceClient;
use cos_core::proto::chief_of_state::v1::read_side_manager_service_client::ReadSideManagerServiceClient;
use cos_core::proto::chief_of_state::v1::{
    GetStateRequest, PauseReadSideRequest, ResumeReadSideRequest,
};
use cos_core::sharding::shard_of;
use cos_integration::support::cluster_node::{
    SECRET, send, start_node_with, status, three_node_cluster_with,
};
use cos_integration::support::read_handler::{
    Behaviour, Delivery, ReadHandlerServer, assert_complete_and_ordered,
};
use cos_integration::support::read_side_node::read_side_settings;
use cos_integration::support::script_handler::ScriptHandler;

/// Generous: a moved shard's workers start at the new home's next placement check (every 2 s).
const CLUSTER_DELIVERY_WAIT: Duration = Duration::from_secs(30);

/// Waits until `count` distinct events were accepted and returns every accepted delivery.
async fn wait_for_distinct(server: &ReadHandlerServer, count: usize) -> Vec<Delivery> {
    server.wait_for_distinct(count, CLUSTER_DELIVERY_WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_delivered_in_order_and_workers_follow_their_shards() -> anyhow::Result<()> {
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let server = ReadHandlerServer::start_grpc(Behaviour::accept_all()).await;
    let settings = read_side_settings(&[("view", &server)], &[]);
    let (schema, mut nodes) = three_node_cluster_with(running.address, &settings).await?;

    let entities = 24;
    for round in 0..2 {
        for index in 0..entities {
            let node = &nodes[(index + round) % nodes.len()];
            send(node, &format!("acct-{index}"), "emit:x").await?;
        }
    }
    let accepted = wait_for_distinct(&server, entities * 2).await;
    assert_complete_and_ordered(&accepted, entities, 2);
    assert_eq!(
        accepted.len(),
        entities * 2,
        "no redelivery while nothing moves"
    );

    // An operator's pause through one node holds the workers on every node (they read their position at
    // least every poll interval); a resume through another node lets them go on.
    let mut first =
        ReadSideManagerServiceClient::connect(format!("http://{}", nodes[0].grpc)).await?;
    first
        .pause_read_side(PauseReadSideRequest {
            read_side_id: "view".to_string(),
        })
        .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for index in 0..entities {
        send(
            &nodes[index % nodes.len()],
            &format!("acct-{index}"),
            "emit:held",
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        server.accepted().len(),
        entities * 2,
        "paused on every node"
    );
    let mut second =
        ReadSideManagerServiceClient::connect(format!("http://{}", nodes[1].grpc)).await?;
    second
        .resume_read_side(ResumeReadSideRequest {
            read_side_id: "view".to_string(),
        })
        .await?;
    let accepted = wait_for_distinct(&server, entities * 3).await;
    assert_complete_and_ordered(&accepted, entities, 3);

    // A node leaves gracefully: its shards (and their read-side workers) move to the others.
    let leaving = nodes.remove(0);
    leaving.process.stop().await?;
    for index in 0..entities {
        send(
            &nodes[index % nodes.len()],
            &format!("acct-{index}"),
            "emit:y",
        )
        .await?;
    }
    let accepted = wait_for_distinct(&server, entities * 4).await;
    assert_complete_and_ordered(&accepted, entities, 4);

    // A new node joins: the rebalance moves shards to it; the read side keeps up there too.
    let seed = format!("127.0.0.1:{}", nodes[0].cluster_port);
    let joining = start_node_with(&schema, running.address, &seed, SECRET, &settings).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for index in 0..entities {
        send(&joining, &format!("acct-{index}"), "emit:z").await?;
    }
    let accepted = wait_for_distinct(&server, entities * 5).await;
    assert_complete_and_ordered(&accepted, entities, 5);
    joining.process.stop().await?;
    for node in nodes {
        node.process.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_shards_are_delivered_from_the_survivors_without_loss() -> anyhow::Result<()>
{
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    // Each delivery takes 20 ms, so the victim is still delivering its shards' second round when it dies.
    let server = ReadHandlerServer::start_grpc(
        Behaviour::accept_all().with_delay(Duration::from_millis(20)),
    )
    .await;
    let settings = read_side_settings(&[("view", &server)], &[]);
    let (_schema, mut nodes) = three_node_cluster_with(running.address, &settings).await?;
    let entities = 24;
    for index in 0..entities {
        send(
            &nodes[index % nodes.len()],
            &format!("acct-{index}"),
            "emit:a",
        )
        .await?;
    }
    wait_for_distinct(&server, entities).await;

    // The victim: a node other than the first (which hosts the coordinator) with live shards. A node that
    // joined last gets shard homes by rebalancing, and a shard actor starts at its home on the first request,
    // so reads of every entity go round until one has some.
    let mut client =
        ChiefOfStateServiceClient::connect(format!("http://{}", nodes[0].grpc)).await?;
    let give_up = tokio::time::Instant::now() + CLUSTER_DELIVERY_WAIT;
    let (victim_index, victim_shards) = loop {
        for index in 0..entities {
            let request = GetStateRequest {
                entity_id: format!("acct-{index}"),
            };
            client.get_state(request).await?;
        }
        let mut best = (0, Vec::new());
        for (index, node) in nodes.iter().enumerate().skip(1) {
            let shards = status(node).await?.local_shards;
            if shards.len() > best.1.len() {
                best = (index, shards);
            }
        }
        if !best.1.is_empty() {
            break best;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "no node but the first got shards"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut victim = nodes.remove(victim_index);
    // A second round, all at once, then SIGKILL: some of the victim's shards' events are still undelivered,
    // with their offsets unstored.
    let second_round = (0..entities).map(|index| {
        let node = &nodes[index % nodes.len()];
        async move { send(node, &format!("acct-{index}"), "emit:b").await }
    });
    for sent in futures::future::join_all(second_round).await {
        sent?;
    }
    victim.process.kill_hard().await?;

    // Wait until the survivors serve every shard again (a read, so no command is ever sent twice).
    let orphans: Vec<String> = (0..entities)
        .map(|index| format!("acct-{index}"))
        .filter(|entity| victim_shards.contains(&shard_of(entity, 16)))
        .collect();
    assert!(!orphans.is_empty(), "some entities lived on the victim");
    let mut client =
        ChiefOfStateServiceClient::connect(format!("http://{}", nodes[0].grpc)).await?;
    let give_up = tokio::time::Instant::now() + CLUSTER_DELIVERY_WAIT;
    for orphan in &orphans {
        let request = || GetStateRequest {
            entity_id: orphan.clone(),
        };
        while client.get_state(request()).await.is_err() {
            assert!(
                tokio::time::Instant::now() < give_up,
                "{orphan} not served again within {CLUSTER_DELIVERY_WAIT:?} of the kill"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for index in 0..entities {
        send(
            &nodes[index % nodes.len()],
            &format!("acct-{index}"),
            "emit:c",
        )
        .await?;
    }
    let accepted = wait_for_distinct(&server, entities * 3).await;
    assert_complete_and_ordered(&accepted, entities, 3);
    drop(victim);
    for node in nodes {
        node.process.stop().await?;
    }
    Ok(())
}
