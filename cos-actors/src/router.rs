//! The entry point the gateway uses: picks the region of the requested entity type, sends the request (to
//! the entity's shard directly when the region lists it as hosted here, see [`DirectShards`]), and waits for
//! the answer with the right error when none comes. A `GetState` of an entity resting in such a shard is
//! answered here, in the caller's task ([`crate::resting`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cos_core::domain::{EntityId, EntityType};
use cos_core::error::CommandError;
use cos_core::proto::chief_of_state::v1::StateWrapper;
use cos_core::sharding::shard_of;
use ractor::{Actor, ActorRef, MessagingErr};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::cluster::routing::RegionCluster;
use crate::direct_shards::DirectShards;
use crate::envelope::{EntityEnvelope, EntityRequest};
use crate::passivation::PassivationBudget;
use crate::region::{RegionActor, RegionArguments, RegionMessage};
use crate::runtime::EntityTypeRuntime;
use crate::shard::ShardMessage;

/// How long after a command's deadline we still wait for its reply: the entity stops calling the handler at
/// the deadline, but a write already started must be allowed to finish so its outcome can be reported.
pub const REPLY_GRACE: Duration = Duration::from_secs(10);

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("cannot start the shard region of entity type {entity_type}: {reason}")]
    RegionStart { entity_type: String, reason: String },
    #[error("default entity type {0} has no runtime")]
    MissingDefaultType(String),
}

/// Routes requests to the shard regions of this node, one region per entity type.
pub struct EntityRouter {
    regions: HashMap<EntityType, RegionRoute>,
    default_type: EntityType,
}

/// How requests reach the entities of one type: through the region, or straight to a shard it lists.
struct RegionRoute {
    region: ActorRef<RegionMessage>,
    direct_shards: DirectShards,
    num_shards: u32,
}

impl RegionRoute {
    fn shard_of(&self, entity_id: &EntityId) -> u32 {
        shard_of(entity_id.as_str(), self.num_shards)
    }

    /// Sends to the entity's shard if the region lists it, otherwise (or if that shard just stopped taking
    /// requests) to the region. `false` when neither took the request.
    fn send(&self, shard: u32, envelope: Box<EntityEnvelope>) -> bool {
        let envelope = match self.direct_shards.get(shard) {
            Some(actor) => match actor.cast(ShardMessage::Deliver(envelope)) {
                Ok(()) => return true,
                // Draining for a hand-off, or stopped: the region knows what to do with it.
                Err(MessagingErr::SendErr(ShardMessage::Deliver(envelope))) => envelope,
                // Not produced by a typed local send; the request never reached the shard.
                Err(_) => return false,
            },
            None => envelope,
        };
        self.region.cast(RegionMessage::Deliver(envelope)).is_ok()
    }
}

impl EntityRouter {
    /// Starts one shard region per entity type.
    pub async fn start(
        runtimes: Vec<Arc<EntityTypeRuntime>>,
        default_type: EntityType,
        budget: Arc<PassivationBudget>,
        cluster: Option<RegionCluster>,
    ) -> Result<Self, RouterError> {
        let mut regions = HashMap::new();
        for runtime in runtimes {
            let entity_type = runtime.settings.name.clone();
            let num_shards = runtime.num_shards;
            let direct_shards = DirectShards::default();
            let arguments = RegionArguments {
                runtime,
                budget: budget.clone(),
                cluster: cluster.clone(),
                direct_shards: direct_shards.clone(),
            };
            let (region, _join) =
                Actor::spawn(None, RegionActor, arguments)
                    .await
                    .map_err(|error| RouterError::RegionStart {
                        entity_type: entity_type.to_string(),
                        reason: error.to_string(),
                    })?;
            regions.insert(
                entity_type,
                RegionRoute {
                    region,
                    direct_shards,
                    num_shards,
                },
            );
        }
        if !regions.contains_key(&default_type) {
            return Err(RouterError::MissingDefaultType(default_type.to_string()));
        }
        Ok(Self {
            regions,
            default_type,
        })
    }

    /// The region of every entity type, for the cluster endpoint.
    pub fn regions(&self) -> HashMap<String, ActorRef<RegionMessage>> {
        self.regions
            .iter()
            .map(|(entity_type, route)| (entity_type.as_str().to_string(), route.region.clone()))
            .collect()
    }

    /// Resolves the `x-cos-entity-type` value: absent means the default type.
    pub fn entity_type(&self, requested: Option<&str>) -> Result<EntityType, CommandError> {
        let Some(name) = requested else {
            return Ok(self.default_type.clone());
        };
        self.regions
            .keys()
            .find(|entity_type| entity_type.as_str() == name)
            .cloned()
            .ok_or_else(|| CommandError::UnknownEntityType(name.to_string()))
    }

    /// Sends a request to an entity and waits for its answer until `timeout` (plus [`REPLY_GRACE`] for
    /// commands whose write may already be under way).
    pub async fn ask(
        &self,
        entity_type: &EntityType,
        entity_id: EntityId,
        request: EntityRequest,
        timeout: Duration,
    ) -> Result<StateWrapper, CommandError> {
        let route = self
            .regions
            .get(entity_type)
            .ok_or_else(|| CommandError::UnknownEntityType(entity_type.to_string()))?;
        let is_command = matches!(request, EntityRequest::ProcessCommand(_));
        let shard = route.shard_of(&entity_id);
        if !is_command && let Some(answer) = route.direct_shards.read_resting(shard, &entity_id) {
            return answer;
        }
        let deadline = Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        let envelope = Box::new(EntityEnvelope {
            entity_id,
            request,
            deadline,
            from_remote: false,
            reroutes: 0,
            reply,
        });
        if !route.send(shard, envelope) {
            return Err(CommandError::Retry(format!(
                "the shard region of {entity_type} is not running; retry"
            )));
        }
        let wait_until = if is_command {
            deadline + REPLY_GRACE
        } else {
            deadline
        };
        match tokio::time::timeout_at(wait_until, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_dropped)) if is_command => Err(CommandError::OutcomeUnknown(
                "the entity stopped before answering; the command may or may not have been persisted"
                    .to_string(),
            )),
            Ok(Err(_dropped)) => Err(CommandError::Retry(
                "the entity stopped before answering; retry".to_string(),
            )),
            Err(_elapsed) if is_command => Err(CommandError::OutcomeUnknown(
                "no reply in time; the command may or may not have been persisted".to_string(),
            )),
            Err(_elapsed) => Err(CommandError::DeadlineExceeded(
                "no reply from the entity within the deadline".to_string(),
            )),
        }
    }

    /// Stops every region (and with them their shards and entities) and waits for them to finish.
    pub async fn stop(&self) {
        for route in self.regions.values() {
            let _already_stopped = route
                .region
                .stop_and_wait(
                    Some("node shutting down".to_string()),
                    Some(Duration::from_secs(30)),
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The router's choice between a listed shard and the region, with real actors standing in for both
    //! (they record what reaches them).

    use std::marker::PhantomData;
    use std::sync::Mutex;

    use ractor::{ActorProcessingErr, ActorRef, Message};

    use super::*;
    use crate::resting::RestingStates;
    use crate::shard::HostedShard;

    type Received = Arc<Mutex<Vec<String>>>;

    /// A message that may carry a request for an entity.
    trait CarriesRequest: Message {
        fn entity_id(&self) -> Option<&str>;
    }

    impl CarriesRequest for ShardMessage {
        fn entity_id(&self) -> Option<&str> {
            match self {
                ShardMessage::Deliver(envelope) => Some(envelope.entity_id.as_str()),
                _ => None,
            }
        }
    }

    impl CarriesRequest for RegionMessage {
        fn entity_id(&self) -> Option<&str> {
            match self {
                RegionMessage::Deliver(envelope) => Some(envelope.entity_id.as_str()),
                _ => None,
            }
        }
    }

    /// Stands in for a shard or the region: records the entity ids of the requests it receives.
    struct Recorder<M>(PhantomData<fn() -> M>);

    impl<M> Recorder<M> {
        fn new() -> Self {
            Self(PhantomData)
        }
    }

    impl<M: CarriesRequest> Actor for Recorder<M> {
        type Msg = M;
        type State = Received;
        type Arguments = Received;

        async fn pre_start(
            &self,
            _myself: ActorRef<M>,
            received: Received,
        ) -> Result<Received, ActorProcessingErr> {
            Ok(received)
        }

        async fn handle(
            &self,
            _myself: ActorRef<M>,
            message: M,
            received: &mut Received,
        ) -> Result<(), ActorProcessingErr> {
            if let Some(entity_id) = message.entity_id() {
                received
                    .lock()
                    .expect("recorder lock")
                    .push(entity_id.to_string());
            }
            Ok(())
        }
    }

    fn envelope(entity_id: &str) -> Box<EntityEnvelope> {
        let (reply, _answer) = oneshot::channel();
        Box::new(EntityEnvelope {
            entity_id: EntityId::parse(entity_id).expect("a valid test id"),
            request: EntityRequest::GetState,
            deadline: Instant::now() + Duration::from_secs(5),
            from_remote: false,
            reroutes: 0,
            reply,
        })
    }

    fn ids(received: &Received) -> Vec<String> {
        received.lock().expect("recorder lock").clone()
    }

    /// Waits (up to 5 s, for busy machines) until `received` holds `count` requests.
    async fn wait_for(received: &Received, count: usize) {
        let give_up = Instant::now() + Duration::from_secs(5);
        while ids(received).len() < count && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A route of one shard whose region and shard are recorders.
    struct StandIns {
        route: Arc<RegionRoute>,
        shard: ActorRef<ShardMessage>,
        /// The resting states listed with the shard.
        resting: RestingStates,
        shard_join: ractor::concurrency::JoinHandle<()>,
        at_region: Received,
        at_shard: Received,
    }

    async fn stand_ins() -> StandIns {
        let at_region = Received::default();
        let at_shard = Received::default();
        let (region, _region_join) =
            Actor::spawn(None, Recorder::<RegionMessage>::new(), at_region.clone())
                .await
                .expect("region recorder starts");
        let (shard, shard_join) =
            Actor::spawn(None, Recorder::<ShardMessage>::new(), at_shard.clone())
                .await
                .expect("shard recorder starts");
        let route = Arc::new(RegionRoute {
            region,
            direct_shards: DirectShards::default(),
            num_shards: 1,
        });
        StandIns {
            route,
            shard,
            resting: RestingStates::default(),
            shard_join,
            at_region,
            at_shard,
        }
    }

    impl StandIns {
        fn hosted(&self) -> HostedShard {
            HostedShard {
                actor: self.shard.clone(),
                resting: self.resting.clone(),
            }
        }
    }

    #[tokio::test]
    async fn requests_skip_the_region_only_for_a_listed_shard_that_still_takes_them() {
        let stand_ins = stand_ins().await;
        let hosted = stand_ins.hosted();
        let StandIns {
            route,
            shard,
            shard_join,
            at_region,
            at_shard,
            ..
        } = stand_ins;

        assert!(route.send(0, envelope("unlisted")));
        wait_for(&at_region, 1).await;
        assert_eq!(ids(&at_region), ["unlisted"]);
        assert!(ids(&at_shard).is_empty());

        route.direct_shards.list(0, hosted);
        assert!(route.send(0, envelope("listed")));
        wait_for(&at_shard, 1).await;
        assert_eq!(ids(&at_shard), ["listed"]);
        assert_eq!(ids(&at_region), ["unlisted"]);

        // A shard that stops taking requests (a hand-off drains it) hands the request back to the region.
        shard
            .drain_and_wait(Some(Duration::from_secs(5)))
            .await
            .expect("shard recorder drains");
        let _ = shard_join.await;
        assert!(route.send(0, envelope("refused")));
        wait_for(&at_region, 2).await;
        assert_eq!(ids(&at_region), ["unlisted", "refused"]);
        assert_eq!(ids(&at_shard), ["listed"]);

        route.direct_shards.unlist(0);
        assert!(route.direct_shards.is_empty());
        route.region.stop(None);
    }

    /// Requests sent while the listed shard starts draining (on another thread) each reach exactly one of the
    /// shard and the region: none is lost, none is delivered twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_drain_racing_direct_sends_neither_loses_nor_duplicates_a_request() {
        use std::sync::atomic::{AtomicBool, Ordering};

        /// Requests sent after the drain has certainly begun: all of them must be handed back.
        const AFTER_DRAIN: usize = 100;
        let stand_ins = stand_ins().await;
        let hosted = stand_ins.hosted();
        let StandIns {
            route,
            shard,
            at_region,
            at_shard,
            ..
        } = stand_ins;
        route.direct_shards.list(0, hosted);
        let drained = Arc::new(AtomicBool::new(false));

        let sender = {
            let route = route.clone();
            let drained = drained.clone();
            tokio::spawn(async move {
                let mut sent = 0;
                let mut after_drain = 0;
                while after_drain < AFTER_DRAIN {
                    if drained.load(Ordering::SeqCst) {
                        after_drain += 1;
                    }
                    assert!(route.send(0, envelope(&format!("r{sent}"))));
                    sent += 1;
                    if sent % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                sent
            })
        };
        // Start the drain from another task while the sender is under way.
        while ids(&at_shard).len() < 200 {
            tokio::task::yield_now().await;
        }
        shard.drain().expect("drain starts");
        drained.store(true, Ordering::SeqCst);
        let sent = sender.await.expect("sender finishes");

        let give_up = Instant::now() + Duration::from_secs(10);
        while ids(&at_shard).len() + ids(&at_region).len() < sent && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut all = ids(&at_shard);
        all.extend(ids(&at_region));
        all.sort_unstable();
        let mut expected: Vec<String> = (0..sent).map(|index| format!("r{index}")).collect();
        expected.sort_unstable();
        assert_eq!(all, expected, "every request reached exactly one actor");
        assert!(
            ids(&at_region).len() >= AFTER_DRAIN,
            "requests sent after the drain began were handed back to the region"
        );
        route.region.stop(None);
    }

    /// A `GetState` of an entity resting in a listed shard is answered by the router itself; unlisted, or for
    /// a command, the request travels as before.
    #[tokio::test]
    async fn a_read_of_an_entity_resting_in_a_listed_shard_needs_no_message() {
        use cos_core::domain::initial_state;
        use cos_core::proto::internal::ProcessCommand;

        use crate::census::{CountedRest, EntityCensus};

        let stand_ins = stand_ins().await;
        let entity_type = EntityType::parse("resting-test").expect("a valid type");
        let router = EntityRouter {
            regions: HashMap::from([(
                entity_type.clone(),
                RegionRoute {
                    region: stand_ins.route.region.clone(),
                    direct_shards: stand_ins.route.direct_shards.clone(),
                    num_shards: 1,
                },
            )]),
            default_type: entity_type.clone(),
        };
        let entity = EntityId::parse("rests").expect("a valid test id");
        let mut state = initial_state(&entity);
        if let Some(meta) = state.meta.as_mut() {
            meta.revision_number = 2;
        }
        let census = Arc::new(EntityCensus::default());
        let counted = CountedRest::new(census);
        // Rested a second ago, so that the read below is later by the stamps' millisecond clock.
        let rested_at = Instant::now() - Duration::from_secs(1);
        stand_ins
            .resting
            .insert(entity.clone(), state, rested_at, counted);
        let ask = |request| {
            router.ask(
                &entity_type,
                entity.clone(),
                request,
                Duration::from_millis(200),
            )
        };

        let unlisted = ask(EntityRequest::GetState).await;
        assert!(
            matches!(unlisted, Err(CommandError::Retry(_))),
            "the region stand-in drops requests unanswered: {unlisted:?}"
        );
        assert_eq!(ids(&stand_ins.at_region), ["rests"]);

        stand_ins.route.direct_shards.list(0, stand_ins.hosted());
        let read = ask(EntityRequest::GetState)
            .await
            .expect("answered from rest");
        assert_eq!(read.meta.map(|meta| meta.revision_number), Some(2));
        assert!(
            stand_ins.resting.adopt_read(&entity).is_some(),
            "the read left its stamp for the shard's passivation"
        );
        let command = ask(EntityRequest::ProcessCommand(ProcessCommand::default())).await;
        assert!(
            matches!(command, Err(CommandError::OutcomeUnknown(_))),
            "the shard stand-in drops requests unanswered: {command:?}"
        );
        assert_eq!(ids(&stand_ins.at_shard), ["rests"], "only the command");
        // A read of an entity that is not resting goes to the listed shard.
        stand_ins.resting.take(&entity);
        let awake = ask(EntityRequest::GetState).await;
        assert!(matches!(awake, Err(CommandError::Retry(_))), "{awake:?}");
        assert_eq!(ids(&stand_ins.at_shard), ["rests", "rests"]);
        assert_eq!(ids(&stand_ins.at_region), ["rests"]);
        stand_ins.route.region.stop(None);
    }
}
