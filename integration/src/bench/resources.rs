//! Recovery time and memory scenarios.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cos_core::domain::{EntityId, EntityKey, EntityType};
use cos_core::proto::chief_of_state::v1::chief_of_state_service_client::ChiefOfStateServiceClient;
use cos_core::proto::chief_of_state::v1::{EventWrapper, GetStateRequest, MetaData, StateWrapper};
use cos_core::store::{AppendRequest, EncodedEvent, Journal, SnapshotWrite};
use prost::Message;
use tokio::time::Instant;

use super::config::BenchConfig;
use super::counter_handler::counter_any;
use super::report::{Row, Verdict, millis};
use super::setup::{BenchStore, channels, start_cos};

/// Writes `events` events (and, when `snapshot_every` is set, the snapshots retention would keep) straight
/// into the store, in batches.
async fn seed_history(
    journal: &dyn Journal,
    key: &EntityKey,
    events: u32,
    snapshot_every: Option<u32>,
) -> anyhow::Result<()> {
    let mut revision = 0;
    while revision < events {
        let batch_end = (revision + 1_000).min(events);
        let mut encoded = Vec::new();
        let mut snapshot = None;
        for next in revision + 1..=batch_end {
            let meta = MetaData {
                entity_id: key.entity_id.as_str().to_string(),
                revision_number: next,
                ..MetaData::default()
            };
            let wrapper = EventWrapper {
                event: Some(counter_any(1)),
                resulting_state: Some(counter_any(u64::from(next))),
                meta: Some(meta.clone()),
            };
            encoded.push(EncodedEvent {
                revision: next,
                payload: wrapper.encode_to_vec(),
            });
            if snapshot_every.is_some_and(|every| next % every == 0) {
                let state = StateWrapper {
                    state: Some(counter_any(u64::from(next))),
                    meta: Some(meta),
                };
                snapshot = Some(SnapshotWrite {
                    revision: next,
                    payload: state.encode_to_vec(),
                    delete_snapshots_before: next.saturating_sub(100),
                    delete_events_through: None,
                });
            }
        }
        journal
            .append_atomically(&[AppendRequest {
                key: key.clone(),
                expected_revision: revision,
                shard: 0,
                events: encoded,
                snapshot,
            }])
            .await?;
        revision = batch_end;
    }
    Ok(())
}

pub(crate) async fn recovery_scenarios(
    store: &BenchStore,
    handler_address: SocketAddr,
    config: &BenchConfig,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let journal = store.open().await?;
    let default_type = EntityType::parse(EntityType::DEFAULT_NAME)?;
    let cases = [
        ("long-history-plain", None),
        ("long-history-snapshots", Some(100)),
    ];
    for (entity_id, snapshot_every) in cases {
        let key = EntityKey {
            entity_type: default_type.clone(),
            entity_id: EntityId::parse(entity_id)?,
        };
        seed_history(
            journal.as_ref(),
            &key,
            config.recovery_events,
            snapshot_every,
        )
        .await?;
    }
    journal.close().await;

    let cos = start_cos(&store.environment, handler_address, &[]).await?;
    let mut client = ChiefOfStateServiceClient::connect(format!("http://{}", cos.address)).await?;
    // Warm the connection and the store's pool so the timing below is recovery, not connection set-up.
    let _ = client
        .get_state(GetStateRequest {
            entity_id: "warm-up".into(),
        })
        .await;
    for (entity_id, snapshot_every) in cases {
        let started = Instant::now();
        let state = client
            .get_state(GetStateRequest {
                entity_id: entity_id.into(),
            })
            .await?
            .into_inner();
        let recovery = started.elapsed();
        let started = Instant::now();
        client
            .get_state(GetStateRequest {
                entity_id: entity_id.into(),
            })
            .await?;
        let cached = started.elapsed();
        let revision = state.meta.map_or(0, |meta| meta.revision_number);
        anyhow::ensure!(
            revision == config.recovery_events,
            "recovered revision {revision}, expected {}",
            config.recovery_events
        );
        rows.push(Row {
            scenario: format!(
                "recovery of an entity with {} events, snapshots {}, {}",
                config.recovery_events,
                if snapshot_every.is_some() {
                    "on"
                } else {
                    "off"
                },
                store.name
            ),
            figure: format!(
                "first GetState {} (then {} cached)",
                millis(recovery),
                millis(cached)
            ),
            ratio: format!(
                "{:.1} × a cached GetState",
                recovery.as_secs_f64() / cached.as_secs_f64().max(1e-6)
            ),
            target: "at most one snapshot + later events read".into(),
            verdict: Verdict::Met,
        });
    }
    cos.stop().await
}

/// Touches entities `from..to` with GetState (each starts and stays live until passivated).
async fn touch_entities(
    address: SocketAddr,
    config: &BenchConfig,
    from: usize,
    to: usize,
) -> anyhow::Result<()> {
    let cos = channels(address, config.connections).await?;
    let next = Arc::new(AtomicUsize::new(from));
    let mut workers = Vec::new();
    for worker in 0..config.concurrency {
        let mut client = ChiefOfStateServiceClient::new(cos[worker % cos.len()].clone());
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= to {
                    break;
                }
                let _not_found = client
                    .get_state(GetStateRequest {
                        entity_id: format!("touched-{index}"),
                    })
                    .await;
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    Ok(())
}

pub(crate) async fn memory_scenarios(
    handler_address: SocketAddr,
    config: &BenchConfig,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    live_entity_memory(handler_address, config, EntityForm::Resting, rows).await?;
    live_entity_memory(handler_address, config, EntityForm::Actor, rows).await?;

    let store = BenchStore::sqlite()?;
    let rest_after = rest_after_setting(config);
    let settings = [("COS_PASSIVATION_REST_AFTER", rest_after.as_str())];
    let cos = start_cos(&store.environment, handler_address, &settings).await?;
    let started = Instant::now();
    touch_entities(cos.address, config, 0, config.distinct_entities).await?;
    let rss = cos.rss_bytes()?;
    rows.push(Row {
        scenario: format!(
            "{} distinct entities touched, default passivation",
            config.distinct_entities
        ),
        figure: format!(
            "RSS {:.0} MiB after {:.1} s",
            mib(rss),
            started.elapsed().as_secs_f64()
        ),
        ratio: String::new(),
        target: "< 1.5 GiB".into(),
        verdict: Verdict::from_check(rss < 3 << 29),
    });
    cos.stop().await
}

/// How the live entities of a memory scenario are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntityForm {
    /// The default: idle entities rest in their shard (state kept, actor stopped); sampled once they have.
    Resting,
    /// `COS_PASSIVATION_REST_AFTER=off`: every live entity keeps its actor (what resting saves).
    Actor,
}

fn rest_after_setting(config: &BenchConfig) -> String {
    format!("{}ms", config.rest_after.as_millis())
}

/// RSS with growing numbers of live entities (no passivation), held as `form`.
async fn live_entity_memory(
    handler_address: SocketAddr,
    config: &BenchConfig,
    form: EntityForm,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let store = BenchStore::sqlite()?;
    let rest_after = match form {
        EntityForm::Resting => rest_after_setting(config),
        EntityForm::Actor => "off".to_string(),
    };
    let settings = [
        ("COS_MAX_ACTIVE_ENTITIES", "100000000"),
        ("COS_PASSIVATION_IDLE_TIMEOUT", "off"),
        ("COS_PASSIVATION_REST_AFTER", rest_after.as_str()),
    ];
    let cos = start_cos(&store.environment, handler_address, &settings).await?;
    touch_entities(cos.address, config, 0, 100).await?;
    let baseline = cos.rss_bytes()?;
    let mut touched = 100;
    for &sample in &config.memory_samples {
        touch_entities(cos.address, config, touched, touched + sample).await?;
        touched += sample;
        if form == EntityForm::Resting {
            // The rest period, the shards' maintenance tick (a quarter of it) and some slack.
            tokio::time::sleep(config.rest_after * 2).await;
        }
        let rss = cos.rss_bytes()?;
        let per_entity = rss.saturating_sub(baseline) as f64 / touched as f64;
        let counts = sample >= 100_000 && form == EntityForm::Resting;
        rows.push(Row {
            scenario: match form {
                EntityForm::Resting => format!(
                    "memory with {touched} live entities, idle and resting (COS_PASSIVATION_REST_AFTER={rest_after})"
                ),
                EntityForm::Actor => format!(
                    "memory with {touched} live entities, each keeping its actor (rest off)"
                ),
            },
            figure: format!(
                "RSS {:.0} MiB ({:.0} MiB before); {per_entity:.0} bytes per entity",
                mib(rss),
                mib(baseline)
            ),
            ratio: String::new(),
            target: "100 000 live entities < 1 GiB".into(),
            verdict: if counts {
                Verdict::from_check(rss < 1 << 30)
            } else {
                Verdict::Informational
            },
        });
    }
    cos.stop().await
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
