//! `cos.internal.v1.ClusterAdmin`: this node's view of the cluster and the shards it hosts, for operators
//! and for the multi-node tests.

use std::sync::Arc;
use std::time::Duration;

use cos_actors::EntityRouter;
use cos_actors::cluster::view::{ClusterView, MemberState};
use cos_actors::region::RegionMessage;
use cos_core::proto::internal::cluster_admin_server::ClusterAdmin;
use cos_core::proto::internal::{ClusterStatusRequest, ClusterStatusResponse, MemberView};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// The tonic implementation of the cluster status service.
pub struct ClusterAdminService {
    pub view: Option<watch::Receiver<ClusterView>>,
    pub router: Arc<EntityRouter>,
}

#[tonic::async_trait]
impl ClusterAdmin for ClusterAdminService {
    async fn get_cluster_status(
        &self,
        _request: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let mut local_shards = std::collections::BTreeSet::new();
        for region in self.router.regions().into_values() {
            let shards = region
                .call(RegionMessage::LocalShards, Some(Duration::from_secs(2)))
                .await;
            if let Ok(ractor::rpc::CallResult::Success(shards)) = shards {
                local_shards.extend(shards);
            }
        }
        let mut response = ClusterStatusResponse {
            local_shards: local_shards.into_iter().collect(),
            ..ClusterStatusResponse::default()
        };
        if let Some(view) = &self.view {
            let view = view.borrow().clone();
            response.self_name = view.self_name.clone();
            response.leader = view.coordinator_host().unwrap_or_default().to_string();
            response.members = view
                .members
                .iter()
                .map(|member| MemberView {
                    name: member.name.clone(),
                    cluster_address: member.cluster_address.clone(),
                    incarnation: member.incarnation,
                    status: match member.state {
                        MemberState::Joining => "joining".to_string(),
                        MemberState::Up => "up".to_string(),
                        MemberState::Leaving => "leaving".to_string(),
                    },
                    reachable: member.reachable,
                })
                .collect();
        }
        Ok(Response::new(response))
    }
}
