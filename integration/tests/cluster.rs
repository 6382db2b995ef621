//! Multi-node behaviour with real node processes (ractor's registries are per process) on loopback ports,
//! a shared PostgreSQL schema and a real write handler.

use std::net::SocketAddr;
use std::time::Duration;

use cos_core::proto::chief_of_state::v1::chief_of_state_service_client::ChiefOfStateServiceClient;
use cos_core::proto::chief_of_state::v1::{GetStateRequest, ProcessCommandRequest};
use cos_core::sharding::shard_of;
use cos_integration::bench::process::{ChildProcess, free_port, sibling_binary};
use cos_integration::support::database::{TestPostgres, unique_schema_name};
use cos_integration::support::script_handler::{ScriptHandler, any_text, text_any};

use cos_integration::support::cluster_node::{
    Node, SECRET, node_environment, send, start_node, status, three_node_cluster, wait_for_members,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_agree_and_commands_through_any_node_get_consecutive_revisions()
-> anyhow::Result<()> {
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let (_schema, nodes) = three_node_cluster(running.address).await?;
    let leaders: Vec<String> = {
        let mut leaders = Vec::new();
        for node in &nodes {
            leaders.push(status(node).await?.leader);
        }
        leaders
    };
    assert!(
        leaders
            .iter()
            .all(|leader| *leader == leaders[0] && !leader.is_empty()),
        "{leaders:?}"
    );

    for round in 0..30_u32 {
        let node = &nodes[round as usize % nodes.len()];
        let revision = send(node, "roaming-1", &format!("emit:e{round}")).await?;
        assert_eq!(revision, round + 1, "through {}", node.grpc);
    }
    for node in &nodes {
        let mut client =
            ChiefOfStateServiceClient::connect(format!("http://{}", node.grpc)).await?;
        let state = client
            .get_state(GetStateRequest {
                entity_id: "roaming-1".into(),
            })
            .await?
            .into_inner();
        assert_eq!(state.meta.map(|meta| meta.revision_number), Some(30));
        assert!(any_text(state.state.as_ref()).ends_with("e28|e29"));
    }
    let shard = shard_of("roaming-1", 16);
    let mut hosts = 0;
    for node in &nodes {
        if status(node).await?.local_shards.contains(&shard) {
            hosts += 1;
        }
    }
    assert_eq!(hosts, 1, "the entity's shard lives on exactly one node");
    report_cross_node_hop(&nodes, shard).await?;
    for node in nodes {
        node.process.stop().await?;
    }
    Ok(())
}

/// Prints (never asserts: machines are noisy) the mean GetState latency through the shard's owner and
/// through another node, whose difference is the cost of one cross-node hop.
async fn report_cross_node_hop(nodes: &[Node], shard: u32) -> anyhow::Result<()> {
    let mut owner = None;
    let mut other = None;
    for node in nodes {
        if status(node).await?.local_shards.contains(&shard) {
            owner = Some(node);
        } else {
            other = Some(node);
        }
    }
    let (Some(owner), Some(other)) = (owner, other) else {
        return Ok(());
    };
    let mut means = Vec::new();
    for node in [owner, other] {
        let mut client =
            ChiefOfStateServiceClient::connect(format!("http://{}", node.grpc)).await?;
        let started = tokio::time::Instant::now();
        for _ in 0..300 {
            client
                .get_state(GetStateRequest {
                    entity_id: "roaming-1".into(),
                })
                .await?;
        }
        means.push(started.elapsed() / 300);
    }
    eprintln!(
        "GetState through the owner: {:?}; through another node: {:?}; one cross-node hop adds {:?}",
        means[0],
        means[1],
        means[1].saturating_sub(means[0])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_never_joins() -> anyhow::Result<()> {
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let schema = unique_schema_name();
    let good = start_node(&schema, running.address, "", SECRET).await?;
    let seed = format!("127.0.0.1:{}", good.cluster_port);
    let intruder = start_node(&schema, running.address, &seed, "wrong-secret").await?;
    // The control: a node with the right secret, started after the intruder and given the same seed, joins.
    // By then the intruder has had the same chances (its first dial is immediate).
    let friend = start_node(&schema, running.address, &seed, SECRET).await?;
    wait_for_members(&[&good, &friend], 2, Duration::from_secs(20)).await?;
    let good_view = status(&good).await?;
    assert!(
        good_view
            .members
            .iter()
            .all(|member| !member.name.contains(&intruder.cluster_port.to_string())),
        "the good node never admitted the intruder: {:?}",
        good_view.members
    );
    assert_eq!(
        status(&intruder).await?.members.len(),
        1,
        "the intruder joined nobody"
    );
    friend.process.stop().await?;
    intruder.process.stop().await?;
    good.process.stop().await?;
    Ok(())
}

#[test]
fn a_cluster_on_sqlite_refuses_to_start() -> anyhow::Result<()> {
    let output = std::process::Command::new(sibling_binary("cos")?)
        .env_clear()
        .env("COS_WRITE_SIDE_HOST", "127.0.0.1")
        .env("COS_WRITE_SIDE_PORT", "50051")
        .env("COS_REPLICA_COUNT", "2")
        .env("COS_CLUSTER_SECRET", SECRET)
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("requires PostgreSQL"), "{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_under_load_the_dead_nodes_shards_are_served_elsewhere() -> anyhow::Result<()>
{
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let (schema, mut nodes) = three_node_cluster(running.address).await?;
    let mut victim = nodes.pop().ok_or_else(|| anyhow::anyhow!("three nodes"))?;
    // Clients talk to the survivors; the victim hosts shards, so some of their commands run there.
    let targets = std::sync::Arc::new(std::sync::Mutex::new(
        nodes.iter().map(|node| node.grpc).collect::<Vec<_>>(),
    ));
    let load = start_load(targets, "load", 24);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim_shards = status(&victim).await?.local_shards;
    assert!(!victim_shards.is_empty(), "the victim hosted shards");
    victim.process.kill_hard().await?;
    let killed_at = tokio::time::Instant::now();

    let orphan = (0..24)
        .map(|index| format!("load-{index}"))
        .find(|entity| victim_shards.contains(&shard_of(entity, 16)))
        .ok_or_else(|| anyhow::anyhow!("an entity on the victim"))?;
    let mut served_after = None;
    while killed_at.elapsed() < Duration::from_secs(20) {
        if send(&nodes[0], &orphan, "emit:probe").await.is_ok() {
            served_after = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let served_after =
        served_after.ok_or_else(|| anyhow::anyhow!("the orphaned shard was never served again"))?;
    eprintln!("time from kill -9 to the shard served again: {served_after:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outcome = load.finish().await?;

    // Every success the clients saw is in the journal, and each entity's history has no gap or duplicate.
    let mut postgres = TestPostgres::from_env().settings_for_new_schema();
    postgres.schema = schema;
    let journal = cos_core::store::postgres::PostgresJournal::connect(&postgres).await?;
    use cos_core::store::Journal;
    for index in 0..24 {
        let entity = format!("load-{index}");
        let key = cos_integration::support::node::default_key(&entity)?;
        let stored: Vec<u32> = journal
            .events_after(&key, 0)
            .await?
            .into_iter()
            .map(|row| row.revision)
            .collect();
        let expected: Vec<u32> = (1..=u32::try_from(stored.len())?).collect();
        assert_eq!(stored, expected, "{entity}: gap or duplicate");
        for revision in outcome.succeeded.get(&entity).into_iter().flatten() {
            assert!(
                stored.contains(revision),
                "{entity}: acknowledged revision {revision} missing"
            );
        }
    }
    journal.close().await;
    for failure in &outcome.failures {
        assert!(
            failure.contains("Unavailable"),
            "only the kill's in-flight commands may fail: {failure}"
        );
    }
    drop(victim);
    for node in nodes {
        node.process.stop().await?;
    }
    Ok(())
}

/// Sends commands in a loop through the nodes the test lists as serving, recording every outcome.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<LoadOutcome>>,
}

#[derive(Debug, Default)]
struct LoadOutcome {
    succeeded: std::collections::HashMap<String, Vec<u32>>,
    failures: Vec<String>,
}

/// One client sending commands one at a time, round-robin over `entities` entities named `{prefix}-{n}`.
fn start_load(
    targets: std::sync::Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    prefix: &'static str,
    entities: usize,
) -> Load {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let task = tokio::spawn(async move {
        let mut outcome = LoadOutcome::default();
        let mut round = 0_usize;
        while !stopping.load(std::sync::atomic::Ordering::SeqCst) {
            let target = {
                let serving = targets.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                serving[round % serving.len()]
            };
            let entity = format!("{prefix}-{}", round % entities);
            round += 1;
            let connected = ChiefOfStateServiceClient::connect(format!("http://{target}")).await;
            let Ok(mut client) = connected else {
                continue; // a node the test is taking out of rotation: never accepted the command
            };
            let request = ProcessCommandRequest {
                entity_id: entity.clone(),
                command: Some(text_any(&format!("emit:r{round}"))),
            };
            match client.process_command(request).await {
                Ok(reply) => outcome.succeeded.entry(entity).or_default().push(
                    reply
                        .into_inner()
                        .meta
                        .map_or(0, |meta| meta.revision_number),
                ),
                Err(status) => outcome
                    .failures
                    .push(format!("{entity} via {target}: {status:?}")),
            }
        }
        Ok(outcome)
    });
    Load { stop, task }
}

impl Load {
    async fn finish(self) -> anyhow::Result<LoadOutcome> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.await?
    }
}

/// Every success for an entity got the next revision: none lost, none duplicated.
fn assert_consecutive(outcome: &LoadOutcome) {
    for (entity, revisions) in &outcome.succeeded {
        let expected: Vec<u32> = (1..=u32::try_from(revisions.len()).unwrap_or(0)).collect();
        assert_eq!(revisions, &expected, "{entity}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joining_under_load_receives_shards_and_no_command_fails()
-> anyhow::Result<()> {
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let (schema, nodes) = three_node_cluster(running.address).await?;
    let targets = std::sync::Arc::new(std::sync::Mutex::new(
        nodes.iter().map(|node| node.grpc).collect::<Vec<_>>(),
    ));
    let load = start_load(targets.clone(), "load", 40);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seed = format!("127.0.0.1:{}", nodes[0].cluster_port);
    let fourth = start_node(&schema, running.address, &seed, SECRET).await?;
    let mut received = false;
    for _ in 0..100 {
        if !status(&fourth).await?.local_shards.is_empty() {
            received = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outcome = load.finish().await?;
    assert!(received, "rebalancing moved shards to the new node");
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    assert_consecutive(&outcome);
    for node in nodes.into_iter().chain(std::iter::once(fourth)) {
        node.process.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_command() -> anyhow::Result<()> {
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let (schema, mut nodes) = three_node_cluster(running.address).await?;
    let targets = std::sync::Arc::new(std::sync::Mutex::new(
        nodes.iter().map(|node| node.grpc).collect::<Vec<_>>(),
    ));
    let load = start_load(targets.clone(), "load", 40);
    // Eight clients on one entity: its commands queue up and share writes, so its shard is handed off while
    // a write is in flight with requests waiting behind it.
    let hot: Vec<Load> = (0..8)
        .map(|_| start_load(targets.clone(), "hot", 1))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for index in 0..nodes.len() {
        // Like a load balancer, stop sending to the node before it is told to stop.
        let leaving = nodes[index].grpc;
        targets
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .retain(|target| *target != leaving);
        let seed = format!(
            "127.0.0.1:{}",
            nodes[(index + 1) % nodes.len()].cluster_port
        );
        let old = std::mem::replace(
            &mut nodes[index],
            start_node(&schema, running.address, &seed, SECRET).await?,
        );
        old.process.stop().await?;
        targets
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .push(nodes[index].grpc);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let outcome = load.finish().await?;
    assert!(
        outcome.failures.is_empty(),
        "{} failures: {:?}",
        outcome.failures.len(),
        outcome.failures
    );
    assert!(
        outcome.succeeded.values().map(Vec::len).sum::<usize>() > 50,
        "load kept flowing"
    );
    assert_consecutive(&outcome);
    let mut hot_revisions = Vec::new();
    for client in hot {
        let outcome = client.finish().await?;
        assert!(
            outcome.failures.is_empty(),
            "hot entity: {} failures: {:?}",
            outcome.failures.len(),
            outcome.failures
        );
        hot_revisions.extend(outcome.succeeded.into_values().flatten());
    }
    assert!(hot_revisions.len() > 50, "the hot entity kept working");
    hot_revisions.sort_unstable();
    let expected: Vec<u32> = (1..=u32::try_from(hot_revisions.len())?).collect();
    assert_eq!(
        hot_revisions, expected,
        "every success on the hot entity has its own revision, none skipped"
    );
    for node in nodes {
        node.process.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_coordinator_moves_it_and_keeps_one_home_per_shard() -> anyhow::Result<()> {
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let (_schema, mut nodes) = three_node_cluster(running.address).await?;
    let entities: Vec<String> = (0..24).map(|index| format!("fail-over-{index}")).collect();
    for entity in &entities {
        assert_eq!(send(&nodes[1], entity, "emit:before").await?, 1);
    }
    let old_leader = status(&nodes[0]).await?.leader;
    // The first node is the oldest: it hosts the coordinator.
    let mut oldest = nodes.remove(0);
    assert_eq!(
        old_leader,
        format!("node-{}@127.0.0.1", oldest.cluster_port)
    );
    oldest.process.kill_hard().await?;
    wait_for_members(&[&nodes[0], &nodes[1]], 2, Duration::from_secs(20)).await?;

    for entity in &entities {
        let mut revision = None;
        for _ in 0..100 {
            if let Ok(next) = send(&nodes[0], entity, "emit:after").await {
                revision = Some(next);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            revision,
            Some(2),
            "{entity} served after the fail-over, nothing lost"
        );
    }
    let first = status(&nodes[0]).await?;
    let second = status(&nodes[1]).await?;
    assert_eq!(first.leader, second.leader);
    assert_ne!(first.leader, old_leader, "a new coordinator took over");
    let overlap: Vec<u32> = first
        .local_shards
        .iter()
        .filter(|shard| second.local_shards.contains(shard))
        .copied()
        .collect();
    assert!(overlap.is_empty(), "shards hosted twice: {overlap:?}");
    drop(oldest);
    for node in nodes {
        node.process.stop().await?;
    }
    Ok(())
}

/// Entries added to /etc/hosts for one test and removed when dropped (the original file is restored).
struct HostsEntries {
    original: String,
}

impl HostsEntries {
    fn add(name: &str, addresses: &[&str]) -> std::io::Result<Self> {
        let original = std::fs::read_to_string("/etc/hosts")?;
        let mut updated = original.clone();
        if !updated.ends_with('\n') {
            updated.push('\n');
        }
        for address in addresses {
            updated.push_str(&format!("{address} {name}\n"));
        }
        std::fs::write("/etc/hosts", updated)?;
        Ok(Self { original })
    }
}

impl Drop for HostsEntries {
    fn drop(&mut self) {
        let _ = std::fs::write("/etc/hosts", &self.original);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_a_cluster_through_dns_discovery() -> anyhow::Result<()> {
    // DNS-style discovery (COS_DEPLOYMENT_MODE=docker): one name resolving to every node's address, all on
    // the same cluster port. The name comes from /etc/hosts, so this needs root, as CI has.
    let name = format!("cos-dns-{}.test", std::process::id());
    let addresses = ["127.0.0.21", "127.0.0.22", "127.0.0.23"];
    let _hosts = match HostsEntries::add(&name, &addresses) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("skipped: cannot add {name} to /etc/hosts ({error}); run the suite as root");
            return Ok(());
        }
    };
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let schema = unique_schema_name();
    let cluster_port = free_port()?;
    let mut starting = Vec::new();
    for address in addresses {
        let grpc_port = free_port()?;
        let grpc: SocketAddr = format!("{address}:{grpc_port}").parse()?;
        let mut environment = node_environment(
            &schema,
            running.address,
            grpc_port,
            cluster_port,
            "",
            SECRET,
        );
        environment.retain(|(key, _)| key != "COS_CLUSTER_SEEDS" && key != "COS_ADDRESS");
        environment.extend([
            ("COS_ADDRESS".to_string(), address.to_string()),
            ("COS_DEPLOYMENT_MODE".to_string(), "docker".to_string()),
            ("COS_SERVICE_NAME".to_string(), name.clone()),
            ("COS_REPLICA_COUNT".to_string(), "3".to_string()),
        ]);
        starting.push(tokio::spawn(async move {
            ChildProcess::start("cos", sibling_binary("cos")?, &[], &environment, grpc)
                .await
                .map(|process| Node {
                    process,
                    grpc,
                    cluster_port,
                })
        }));
    }
    let mut nodes = Vec::new();
    for node in starting {
        nodes.push(node.await??);
    }
    wait_for_members(
        &nodes.iter().collect::<Vec<_>>(),
        3,
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(send(&nodes[2], "dns-1", "emit:a").await?, 1);
    assert_eq!(send(&nodes[0], "dns-1", "emit:b").await?, 2);
    for node in nodes {
        node.process.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_gracefully_is_removed_without_waiting_to_be_downed() -> anyhow::Result<()>
{
    let handler = ScriptHandler::default();
    let running = handler.serve().await?;
    let schema = unique_schema_name();
    // A down-after of a minute: only the farewell can remove the stopped node within the wait below.
    let slow_downing = |grpc_port: u16, cluster_port: u16, seeds: &str| {
        let mut environment = node_environment(
            &schema,
            running.address,
            grpc_port,
            cluster_port,
            seeds,
            SECRET,
        );
        environment.retain(|(key, _)| key != "COS_CLUSTER_DOWN_AFTER");
        environment.push(("COS_CLUSTER_DOWN_AFTER".to_string(), "60s".to_string()));
        environment
    };
    let mut nodes = Vec::new();
    let first_cluster_port = free_port()?;
    let seed = format!("127.0.0.1:{first_cluster_port}");
    for index in 0..2 {
        let grpc_port = free_port()?;
        let cluster_port = if index == 0 {
            first_cluster_port
        } else {
            free_port()?
        };
        let grpc: SocketAddr = format!("127.0.0.1:{grpc_port}").parse()?;
        let process = ChildProcess::start(
            "cos",
            sibling_binary("cos")?,
            &[],
            &slow_downing(grpc_port, cluster_port, &seed),
            grpc,
        )
        .await?;
        nodes.push(Node {
            process,
            grpc,
            cluster_port,
        });
    }
    wait_for_members(
        &nodes.iter().collect::<Vec<_>>(),
        2,
        Duration::from_secs(20),
    )
    .await?;
    let leaving = nodes.pop().ok_or_else(|| anyhow::anyhow!("two nodes"))?;
    leaving.process.stop().await?;
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if status(&nodes[0]).await?.members.len() == 1 {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < give_up,
            "the stopped node is still a member"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in nodes {
        node.process.stop().await?;
    }
    Ok(())
}
