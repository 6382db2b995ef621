//! Membership: every node announces itself to every other node each heartbeat interval; silence longer than
//! `unreachable_after` marks a member unreachable, and the leader (oldest reachable member) downs a member
//! unreachable for `down_after`. Downed incarnations are remembered and gossiped, so a downed node can only
//! come back as a new incarnation (a restart). Members are identified by `name@host` plus incarnation, never
//! by ractor's per-session node ids. Lost connections are re-established with backoff.
//!
//! Cost: O(members) per heartbeat per node, O(members²) messages per interval cluster-wide — fine for the
//! tens of nodes CoS runs on, not for thousands.

use std::collections::HashMap;
use std::time::Duration;

use cos_core::proto::internal::{DownedMember, MemberAnnouncement, MemberStatus};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::{NodeServerMessage, RactorClusterMessage};
use tokio::sync::watch;
use tokio::time::Instant;

use super::view::{ClusterView, DetectorTiming, Member, MemberState};
use super::wire::Wire;

/// The process group every membership actor joins.
pub const MEMBERSHIP_GROUP: &str = "cos-membership";

/// Longest pause between two connection attempts to the same address.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(10);

/// Messages of the membership actor (remotable: heartbeats come from other nodes).
#[derive(RactorClusterMessage)]
pub enum MembershipMessage {
    /// Another member's announcement.
    Heartbeat(Wire<MemberAnnouncement>),
    /// Time to announce, detect failures and reconnect.
    Tick(()),
    /// A session to this peer (`name@host`) is ready.
    PeerConnected(String),
    /// The session to this peer closed.
    PeerDisconnected(String),
    /// This node is shutting down: announce it as leaving.
    Leave(()),
    /// This node's region endpoint runs: announce it as up (it may host shards from now on).
    Ready(()),
    /// This node has handed everything off and stops now: tell the others to remove it at once.
    Exit(()),
}

/// Arguments of the membership actor.
pub struct MembershipArguments {
    pub self_name: String,
    pub cluster_address: String,
    pub incarnation: u64,
    pub seeds: Vec<String>,
    pub timing: DetectorTiming,
    pub node_server: ActorRef<NodeServerMessage>,
    pub view: watch::Sender<ClusterView>,
    /// Set to true when the leader downed this node: it must stop serving.
    pub downed_self: watch::Sender<bool>,
    /// How long to wait for an up member before forming a cluster alone: zero for a first seed with no
    /// other seed, a few seconds for a first seed with others, longer for every other node. Nodes starting
    /// together must not each form a cluster of their own.
    pub form_alone_after: Duration,
}

struct KnownMember {
    cluster_address: String,
    incarnation: u64,
    state: MemberState,
    last_heard: Instant,
}

struct Reconnect {
    next_attempt: Instant,
    backoff: Duration,
}

/// The state of the membership actor.
pub struct MembershipState {
    arguments: MembershipArguments,
    /// The region endpoint runs (`Ready` received).
    sharding_ready: bool,
    started_at: Instant,
    ready: bool,
    leaving: bool,
    members: HashMap<String, KnownMember>,
    downed: HashMap<String, u64>,
    connected: std::collections::HashSet<String>,
    reconnects: HashMap<String, Reconnect>,
}

/// The membership actor.
pub struct MembershipActor;

impl Actor for MembershipActor {
    type Msg = MembershipMessage;
    type State = MembershipState;
    type Arguments = MembershipArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        arguments: MembershipArguments,
    ) -> Result<MembershipState, ActorProcessingErr> {
        ractor::pg::join(MEMBERSHIP_GROUP.to_string(), vec![myself.get_cell()]);
        // Dial the seeds at once rather than one interval later.
        let _ = myself.cast(MembershipMessage::Tick(()));
        myself.send_interval(arguments.timing.heartbeat_interval, || {
            MembershipMessage::Tick(())
        });
        let state = MembershipState {
            arguments,
            sharding_ready: false,
            started_at: Instant::now(),
            ready: false,
            leaving: false,
            members: HashMap::new(),
            downed: HashMap::new(),
            connected: Default::default(),
            reconnects: HashMap::new(),
        };
        state.publish();
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: MembershipMessage,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MembershipMessage::Heartbeat(Wire(announcement)) => state.heard(announcement),
            MembershipMessage::Tick(()) => state.tick(&myself),
            MembershipMessage::PeerConnected(name) => {
                state.connected.insert(name);
            }
            MembershipMessage::PeerDisconnected(name) => {
                tracing::info!(peer = %name, "cluster session closed");
                state.connected.remove(&name);
            }
            MembershipMessage::Leave(()) => {
                state.leaving = true;
                state.announce(&myself);
            }
            MembershipMessage::Ready(()) => {
                state.sharding_ready = true;
                state.become_up_when_joined(&myself);
            }
            MembershipMessage::Exit(()) => {
                let mut farewell = state.announcement();
                farewell.status = MemberStatus::Exiting as i32;
                state.broadcast(&myself, &farewell);
            }
        }
        state.publish();
        Ok(())
    }
}

impl MembershipState {
    fn own_state(&self) -> MemberState {
        if self.leaving {
            MemberState::Leaving
        } else if self.ready {
            MemberState::Up
        } else {
            MemberState::Joining
        }
    }

    fn announcement(&self) -> MemberAnnouncement {
        let status = match self.own_state() {
            MemberState::Joining => MemberStatus::Joining,
            MemberState::Up => MemberStatus::Up,
            MemberState::Leaving => MemberStatus::Leaving,
        };
        MemberAnnouncement {
            name: self.arguments.self_name.clone(),
            cluster_address: self.arguments.cluster_address.clone(),
            incarnation: self.arguments.incarnation,
            status: status as i32,
            downed: self
                .downed
                .iter()
                .map(|(name, incarnation)| DownedMember {
                    name: name.clone(),
                    incarnation: *incarnation,
                })
                .collect(),
        }
    }

    fn heard(&mut self, announcement: MemberAnnouncement) {
        if announcement.name.is_empty() || announcement.name == self.arguments.self_name {
            return;
        }
        for downed in &announcement.downed {
            self.record_down(&downed.name, downed.incarnation);
        }
        let is_downed = self
            .downed
            .get(&announcement.name)
            .is_some_and(|incarnation| *incarnation >= announcement.incarnation);
        if is_downed {
            return;
        }
        if announcement.status == MemberStatus::Exiting as i32 {
            // Remembered like a downed incarnation, so a late heartbeat cannot bring it back.
            tracing::info!(member = %announcement.name, "member exited");
            self.record_down(&announcement.name, announcement.incarnation);
            return;
        }
        let state = if announcement.status == MemberStatus::Leaving as i32 {
            MemberState::Leaving
        } else if announcement.status == MemberStatus::Joining as i32 {
            MemberState::Joining
        } else {
            MemberState::Up
        };
        let is_new = !self.members.contains_key(&announcement.name);
        if is_new {
            tracing::info!(member = %announcement.name, address = %announcement.cluster_address, "member joined");
        }
        self.members.insert(
            announcement.name,
            KnownMember {
                cluster_address: announcement.cluster_address,
                incarnation: announcement.incarnation,
                state,
                last_heard: Instant::now(),
            },
        );
    }

    fn record_down(&mut self, name: &str, incarnation: u64) {
        if name == self.arguments.self_name {
            if incarnation >= self.arguments.incarnation {
                tracing::error!("this node was downed by the cluster leader; it stops serving");
                let _ = self.arguments.downed_self.send(true);
            }
            return;
        }
        let known = self.downed.get(name).copied().unwrap_or(0);
        if incarnation > known {
            self.downed.insert(name.to_string(), incarnation);
        }
        let remove = self
            .members
            .get(name)
            .is_some_and(|member| member.incarnation <= incarnation);
        if remove {
            self.members.remove(name);
            tracing::warn!(member = %name, "member downed");
        }
    }

    fn announce(&self, myself: &ActorRef<MembershipMessage>) {
        self.broadcast(myself, &self.announcement());
    }

    fn broadcast(&self, myself: &ActorRef<MembershipMessage>, announcement: &MemberAnnouncement) {
        for cell in ractor::pg::get_members(&MEMBERSHIP_GROUP.to_string()) {
            if cell.get_id() == myself.get_id() || cell.get_id().is_local() {
                continue;
            }
            let peer: ActorRef<MembershipMessage> = cell.into();
            let _unreachable = peer.cast(MembershipMessage::Heartbeat(Wire(announcement.clone())));
        }
    }

    /// Becomes up once sharding runs and this node either may form the cluster, has heard from an up
    /// member (it joined an existing cluster), or waited `join_timeout` for one.
    fn become_up_when_joined(&mut self, myself: &ActorRef<MembershipMessage>) {
        if self.ready || !self.sharding_ready {
            return;
        }
        let joined = self
            .members
            .values()
            .any(|member| member.state == MemberState::Up);
        let waited = self.started_at.elapsed() >= self.arguments.form_alone_after;
        if joined || waited {
            if !joined && !self.arguments.form_alone_after.is_zero() {
                tracing::warn!("no up member answered; forming a cluster of this node alone");
            }
            self.ready = true;
            self.announce(myself);
        }
    }

    fn tick(&mut self, myself: &ActorRef<MembershipMessage>) {
        self.become_up_when_joined(myself);
        self.announce(myself);
        self.down_long_unreachable_members();
        self.reconnect();
    }

    /// The leader downs members that stayed unreachable for `down_after`.
    fn down_long_unreachable_members(&mut self) {
        let view = self.view();
        if view.leader() != Some(self.arguments.self_name.as_str()) {
            return;
        }
        let limit = self.arguments.timing.unreachable_after + self.arguments.timing.down_after;
        let to_down: Vec<(String, u64)> = self
            .members
            .iter()
            .filter(|(_, member)| member.last_heard.elapsed() >= limit)
            .map(|(name, member)| (name.clone(), member.incarnation))
            .collect();
        for (name, incarnation) in to_down {
            tracing::warn!(member = %name, "downing a member unreachable for too long");
            self.record_down(&name, incarnation);
        }
    }

    /// Connects to seeds (while alone) and to members whose session is gone, with backoff per address.
    fn reconnect(&mut self) {
        // A member whose heartbeats arrive has a session, whatever the session events said (ractor reports
        // the loser of a duplicate-connection election as disconnected): dial only silent members.
        let quiet_for = self.arguments.timing.heartbeat_interval * 2;
        let mut targets: Vec<String> = self
            .members
            .iter()
            .filter(|(name, member)| {
                !self.connected.contains(*name) && member.last_heard.elapsed() >= quiet_for
            })
            .map(|(_, member)| member.cluster_address.clone())
            .collect();
        if self.connected.is_empty() {
            targets.extend(
                self.arguments
                    .seeds
                    .iter()
                    .filter(|seed| **seed != self.arguments.cluster_address)
                    .cloned(),
            );
        }
        let now = Instant::now();
        for address in targets {
            let attempt = self.reconnects.entry(address.clone()).or_insert(Reconnect {
                next_attempt: now,
                backoff: self.arguments.timing.heartbeat_interval,
            });
            if attempt.next_attempt > now {
                continue;
            }
            attempt.next_attempt = now + attempt.backoff;
            attempt.backoff = (attempt.backoff * 2).min(MAX_RECONNECT_BACKOFF);
            let node_server = self.arguments.node_server.clone();
            tokio::spawn(async move {
                if let Err(error) =
                    ractor_cluster::client_connect(&node_server, address.as_str()).await
                {
                    tracing::debug!(%address, ?error, "cluster connection attempt failed");
                }
            });
        }
        let connected_addresses: Vec<String> = self
            .members
            .iter()
            .filter(|(name, _)| self.connected.contains(*name))
            .map(|(_, member)| member.cluster_address.clone())
            .collect();
        for address in connected_addresses {
            self.reconnects.remove(&address);
        }
    }

    fn view(&self) -> ClusterView {
        let unreachable_after = self.arguments.timing.unreachable_after;
        let mut members: Vec<Member> = self
            .members
            .iter()
            .map(|(name, member)| Member {
                name: name.clone(),
                cluster_address: member.cluster_address.clone(),
                incarnation: member.incarnation,
                state: member.state,
                reachable: member.last_heard.elapsed() < unreachable_after,
            })
            .collect();
        members.push(Member {
            name: self.arguments.self_name.clone(),
            cluster_address: self.arguments.cluster_address.clone(),
            incarnation: self.arguments.incarnation,
            state: self.own_state(),
            reachable: true,
        });
        members.sort_by(|left, right| {
            (left.incarnation, &left.name).cmp(&(right.incarnation, &right.name))
        });
        ClusterView {
            self_name: self.arguments.self_name.clone(),
            members,
        }
    }

    fn publish(&self) {
        let view = self.view();
        self.arguments.view.send_if_modified(|current| {
            if *current == view {
                return false;
            }
            *current = view;
            true
        });
    }
}

/// Forwards ractor_cluster's session events to the membership actor.
pub struct SessionEvents {
    pub membership: ActorRef<MembershipMessage>,
}

impl ractor_cluster::NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, _session: ractor_cluster::node::NodeServerSessionInformation) {}

    fn node_session_disconnected(
        &self,
        session: ractor_cluster::node::NodeServerSessionInformation,
    ) {
        if let Some(peer) = session.peer_name {
            let _ = self
                .membership
                .cast(MembershipMessage::PeerDisconnected(peer.name));
        }
    }

    fn node_session_authenticated(
        &self,
        _session: ractor_cluster::node::NodeServerSessionInformation,
    ) {
    }

    fn node_session_ready(&self, session: ractor_cluster::node::NodeServerSessionInformation) {
        if let Some(peer) = session.peer_name {
            tracing::info!(peer = %peer.name, "cluster session ready");
            let _ = self
                .membership
                .cast(MembershipMessage::PeerConnected(peer.name));
        }
    }
}
