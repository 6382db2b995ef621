//! `chief_of_state.v1.ReadSideManagerService` (the original's ten RPCs) and `cos.internal.v1.ReadSideAdmin`
//! (the list the CLI shows). Positions live in the store, so any node answers for every shard; after a
//! change the local workers reload at once and workers on other nodes within their poll interval.
//!
//! Better than the original: a shard out of range is INVALID_ARGUMENT for every *ByShard* call, an unknown
//! read side is NOT_FOUND, and SkipOffset skips exactly the next undelivered event of the shard (the next one
//! the read side listens to) and names it in the `x-cos-skipped` response header. SkipOffset for all shards
//! skips on the *stopped* shards only: skipping the next event of a healthy shard would drop an event its
//! handler never refused.

use std::collections::HashMap;
use std::sync::Arc;

use cos_actors::readside::host::HostMessage;
use cos_core::proto::chief_of_state::v1::read_side_manager_service_server::ReadSideManagerService;
use cos_core::proto::chief_of_state::v1::{
    GetLatestOffsetByShardRequest, GetLatestOffsetByShardResponse, GetLatestOffsetRequest,
    GetLatestOffsetResponse, PauseReadSideByShardRequest, PauseReadSideByShardResponse,
    PauseReadSideRequest, PauseReadSideResponse, ReadSideOffset, RestartReadSideByShardRequest,
    RestartReadSideByShardResponse, RestartReadSideRequest, RestartReadSideResponse,
    ResumeReadSideByShardRequest, ResumeReadSideByShardResponse, ResumeReadSideRequest,
    ResumeReadSideResponse, SkipOffsetByShardRequest, SkipOffsetByShardResponse, SkipOffsetRequest,
    SkipOffsetResponse,
};
use cos_core::proto::internal::read_side_admin_server::ReadSideAdmin;
use cos_core::proto::internal::{
    ListReadSidesRequest, ListReadSidesResponse, ReadSideShardStatus, ReadSideStatus,
};
use cos_core::readside::{ReadSideConfig, ReadSideProtocol};
use cos_core::store::read_sides::ReadSideStore;
use cos_core::store::{Journal, ShardEvent, StoreError};
use ractor::ActorRef;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

/// Response header naming each event a skip passed over.
pub const SKIPPED_HEADER: &str = "x-cos-skipped";

/// Events scanned per query while looking for the next event a filtered read side listens to.
const SKIP_SCAN_BATCH: u32 = 256;

/// How often a skip retries when the worker moved the offset at the same moment.
const SKIP_ATTEMPTS: usize = 3;

/// What both services share.
pub struct ReadSideControl {
    /// Every configured read side, enabled or not.
    read_sides: Vec<ReadSideConfig>,
    positions: Arc<dyn ReadSideStore>,
    journal: Arc<dyn Journal>,
    num_shards: u32,
    /// This node's workers, told to reload after a change.
    host: Option<ActorRef<HostMessage>>,
}

impl ReadSideControl {
    pub fn new(
        read_sides: Vec<ReadSideConfig>,
        positions: Arc<dyn ReadSideStore>,
        journal: Arc<dyn Journal>,
        num_shards: u32,
        host: Option<ActorRef<HostMessage>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            read_sides,
            positions,
            journal,
            num_shards,
            host,
        })
    }

    fn read_side(&self, id: &str) -> Result<&ReadSideConfig, Status> {
        if id.trim().is_empty() {
            return Err(Status::invalid_argument("read_side_id is required"));
        }
        self.read_sides
            .iter()
            .find(|config| config.id == id)
            .ok_or_else(|| Status::not_found(format!("read side {id:?} is not configured")))
    }

    fn shard(&self, number: u64) -> Result<u32, Status> {
        u32::try_from(number)
            .ok()
            .filter(|shard| *shard < self.num_shards)
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "cluster_shard_number {number} is out of range: shards are 0 to {}",
                    self.num_shards - 1
                ))
            })
    }

    fn reload(&self, read_side_id: &str, shard: Option<u32>) {
        if let Some(host) = &self.host {
            let _ = host.cast(HostMessage::Reload(read_side_id.to_string(), shard));
        }
    }

    async fn offsets(&self, read_side_id: &str) -> Result<HashMap<u32, u64>, Status> {
        let stored = self
            .positions
            .positions(read_side_id)
            .await
            .map_err(store_status)?;
        Ok(stored
            .into_iter()
            .map(|(shard, position)| (shard, position.offset))
            .collect())
    }

    async fn restart(&self, read_side_id: &str, shard: u32) -> Result<(), Status> {
        self.positions
            .reset_offset(read_side_id, shard, None, 0)
            .await
            .map_err(store_status)?;
        Ok(())
    }

    async fn set_paused(&self, read_side_id: &str, shard: u32, paused: bool) -> Result<(), Status> {
        self.positions
            .set_paused(read_side_id, shard, paused)
            .await
            .map_err(store_status)
    }

    /// Moves the offset past the next event the read side would deliver on `shard`; `None` when there is
    /// none. Compare-and-set from the offset it read, so an event the worker delivers meanwhile is not
    /// counted as skipped.
    async fn skip_next(
        &self,
        config: &ReadSideConfig,
        shard: u32,
    ) -> Result<Option<ShardEvent>, Status> {
        for _attempt in 0..SKIP_ATTEMPTS {
            let position = self
                .positions
                .position(&config.id, shard)
                .await
                .map_err(store_status)?;
            let Some(next) = self.next_event(config, shard, position.offset).await? else {
                return Ok(None);
            };
            let moved = self
                .positions
                .reset_offset(&config.id, shard, Some(position.offset), next.offset)
                .await
                .map_err(store_status)?;
            if moved {
                tracing::warn!(read_side = %config.id, shard, offset = next.offset,
                    event = %format!("{}@{}", next.key, next.revision), "operator skipped an event");
                return Ok(Some(next));
            }
        }
        Err(Status::aborted(format!(
            "read side {:?} kept moving on shard {shard} while skipping; try again",
            config.id
        )))
    }

    /// The first event after `offset` on `shard` whose entity type the read side listens to.
    async fn next_event(
        &self,
        config: &ReadSideConfig,
        shard: u32,
        mut offset: u64,
    ) -> Result<Option<ShardEvent>, Status> {
        loop {
            let batch = self
                .journal
                .shard_events_after(shard, offset, SKIP_SCAN_BATCH)
                .await
                .map_err(store_status)?;
            let Some(last) = batch.last() else {
                return Ok(None);
            };
            offset = last.offset;
            let listened = batch.into_iter().find(|event| {
                config.entity_types.as_ref().is_none_or(|types| {
                    types
                        .iter()
                        .any(|listened| listened == event.key.entity_type.as_str())
                })
            });
            if listened.is_some() {
                return Ok(listened);
            }
        }
    }

    async fn status(&self, config: &ReadSideConfig) -> Result<ReadSideStatus, Status> {
        let positions: HashMap<u32, _> = self
            .positions
            .positions(&config.id)
            .await
            .map_err(store_status)?
            .into_iter()
            .collect();
        let latest: HashMap<u32, u64> = self
            .positions
            .latest_offsets()
            .await
            .map_err(store_status)?
            .into_iter()
            .collect();
        let shards = (0..self.num_shards)
            .map(|shard| {
                let position = positions.get(&shard).cloned().unwrap_or_default();
                ReadSideShardStatus {
                    shard,
                    offset: position.offset,
                    latest_offset: latest.get(&shard).copied().unwrap_or(0),
                    paused: position.paused,
                    stopped_reason: position.stopped.unwrap_or_default(),
                }
            })
            .collect();
        Ok(ReadSideStatus {
            read_side_id: config.id.clone(),
            enabled: config.enabled,
            protocol: match config.protocol {
                ReadSideProtocol::Grpc => "grpc".to_string(),
                ReadSideProtocol::Http => "http".to_string(),
            },
            address: format!("{}:{}", config.host, config.port),
            failure_policy: config.failure_policy.name().to_string(),
            auto_start: config.auto_start,
            entity_types: config.entity_types.clone().unwrap_or_default(),
            shards,
        })
    }
}

/// Store failures as gRPC statuses: an unreachable database is worth retrying, anything else is not.
fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::Unavailable(_) => Status::unavailable(error.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// `shard=3 offset=42 entity_type=account entity_id=a-1 revision=7`, the value of one skipped header.
fn skipped_value(shard: u32, event: &ShardEvent) -> String {
    format!(
        "shard={shard} offset={} entity_type={} entity_id={} revision={}",
        event.offset,
        event.key.entity_type.as_str(),
        event.key.entity_id.as_str(),
        event.revision
    )
}

/// A response with one `x-cos-skipped` header per skipped event (ids that are not header-safe are left out
/// of the header; the log still names them).
fn with_skipped<T>(body: T, skipped: &[(u32, ShardEvent)]) -> Response<T> {
    let mut response = Response::new(body);
    for (shard, event) in skipped {
        if let Ok(value) = MetadataValue::try_from(skipped_value(*shard, event)) {
            response.metadata_mut().append(SKIPPED_HEADER, value);
        }
    }
    response
}

/// The public manager service.
pub struct ReadSideManager {
    pub control: Arc<ReadSideControl>,
}

#[tonic::async_trait]
impl ReadSideManagerService for ReadSideManager {
    async fn get_latest_offset(
        &self,
        request: Request<GetLatestOffsetRequest>,
    ) -> Result<Response<GetLatestOffsetResponse>, Status> {
        let control = &self.control;
        let config = control.read_side(&request.get_ref().read_side_id)?;
        let offsets = control.offsets(&config.id).await?;
        let offsets = (0..control.num_shards)
            .map(|shard| ReadSideOffset {
                cluster_shard_number: u64::from(shard),
                offset: offsets.get(&shard).copied().unwrap_or(0),
            })
            .collect();
        Ok(Response::new(GetLatestOffsetResponse { offsets }))
    }

    async fn get_latest_offset_by_shard(
        &self,
        request: Request<GetLatestOffsetByShardRequest>,
    ) -> Result<Response<GetLatestOffsetByShardResponse>, Status> {
        let control = &self.control;
        let config = control.read_side(&request.get_ref().read_side_id)?;
        let shard = control.shard(request.get_ref().cluster_shard_number)?;
        let position = control
            .positions
            .position(&config.id, shard)
            .await
            .map_err(store_status)?;
        Ok(Response::new(GetLatestOffsetByShardResponse {
            offsets: Some(ReadSideOffset {
                cluster_shard_number: u64::from(shard),
                offset: position.offset,
            }),
        }))
    }

    async fn restart_read_side(
        &self,
        request: Request<RestartReadSideRequest>,
    ) -> Result<Response<RestartReadSideResponse>, Status> {
        let control = &self.control;
        let config = control.read_side(&request.get_ref().read_side_id)?;
        for shard in 0..control.num_shards {
            control.restart(&config.id, shard).await?;
        }
        control.reload(&config.id, None);
        tracing::warn!(read_side = %config.id, "operator restarted the read side on every shard");
        Ok(Response::new(RestartReadSideResponse { successful: true }))
    }

    async fn restart_read_side_by_shard(
        &self,
        request: Request<RestartReadSideByShardRequest>,
    ) -> Result<Response<RestartReadSideByShardResponse>, Status> {
        let control = &self.control;
        let config = control.read_side(&request.get_ref().read_side_id)?;
        let shard = control.shard(request.get_ref().cluster_shard_number)?;
        control.restart(&config.id, shard).await?;
        control.reload(&config.id, Some(shard));
        tracing::warn!(read_side = %config.id, shard, "operator restarted the read side");
        Ok(Response::new(RestartReadSideByShardResponse {
            successful: true,
        }))
    }

    async fn pause_read_side(
        &self,
        request: Request<PauseReadSideRequest>,
    ) -> Result<Response<PauseReadSideResponse>, Status> {
        let control = &self.control;
        let config = control.read_side(&request.get_ref().read_side_id)?;
        for shard in 0..control.num_shards {
            control.set_paused(&config.id, shard, true).await?;
        }
        control.reload(&config.id, None);
        tracing::info!(read_side = %config.id, "operator paused the read side on every shard");
        Ok(Response::new(PauseReadSideResponse { successful: true }))
    }

    async fn pause_read_side_by_shard(
        &self,
        request: Request<PauseReadSideByShardRequest>,
    ) -> Result<Response<PauseReadSideByShardResponse>, Status> {
        let control = &self.control;
        let config = control.read_side(&request.get_ref().read_side_id)?;
        let shard = control.shard(request.get_ref().cluster_shard_number)?;
        control.set_paused(&config.id, shard, true).await?;
        control.reload(&config.id, Some(shard));
        tracing::info!(read_side = %config.id, shard, "operator paused the read side");
        Ok(Response::new(PauseReadSideByShardResponse {
            successful: true,
        }))
    }

    async fn resume_read_side(
        &self,
        request: Request<ResumeReadSideRequest>,
    ) -> Result<Response<ResumeReadSideResponse>, Status> {
        let control = &self.control;
        let config = control.read_side(&request.get_ref().read_side_id)?;
        for shard in 0..control.num_shards {
            control.set_paused(&config.id, shard, false).await?;
        }
        control.reload(&config.id, None);
        tracing::info!(read_side = %config.id, "operator resumed the read side on every shard");
        Ok(Response::new(ResumeReadSideResponse { successful: true }))
    }

    async fn resume_read_side_by_shard(
        &self,
        request: Request<ResumeReadSideByShardRequest>,
    ) -> Result<Response<ResumeReadSideByShardResponse>, Status> {
        let control = &self.control;
        let config = control.read_side(&request.get_ref().read_side_id)?;
        let shard = control.shard(request.get_ref().cluster_shard_number)?;
        control.set_paused(&config.id, shard, false).await?;
        control.reload(&config.id, Some(shard));
        tracing::info!(read_side = %config.id, shard, "operator resumed the read side");
        Ok(Response::new(ResumeReadSideByShardResponse {
            successful: true,
        }))
    }

    async fn skip_offset(
        &self,
        request: Request<SkipOffsetRequest>,
    ) -> Result<Response<SkipOffsetResponse>, Status> {
        let control = &self.control;
        let config = control.read_side(&request.get_ref().read_side_id)?;
        let stopped: Vec<u32> = control
            .positions
            .positions(&config.id)
            .await
            .map_err(store_status)?
            .into_iter()
            .filter(|(_, position)| position.stopped.is_some())
            .map(|(shard, _)| shard)
            .collect();
        if stopped.is_empty() {
            return Err(Status::failed_precondition(format!(
                "no shard of read side {:?} is stopped; use SkipOffsetByShard to skip an event of a running shard",
                config.id
            )));
        }
        let mut skipped = Vec::new();
        let mut failures = Vec::new();
        for shard in stopped {
            match control.skip_next(config, shard).await {
                Ok(Some(event)) => skipped.push((shard, event)),
                Ok(None) => {}
                Err(status) => failures.push(format!("shard {shard}: {}", status.message())),
            }
        }
        control.reload(&config.id, None);
        if !failures.is_empty() {
            // Say what was skipped before the failure as well as what failed.
            let mut status = Status::unavailable(format!(
                "skipped on {} shard(s), failed on {}: {}",
                skipped.len(),
                failures.len(),
                failures.join("; ")
            ));
            *status.metadata_mut() = with_skipped((), &skipped).metadata().clone();
            return Err(status);
        }
        Ok(with_skipped(
            SkipOffsetResponse { successful: true },
            &skipped,
        ))
    }

    async fn skip_offset_by_shard(
        &self,
        request: Request<SkipOffsetByShardRequest>,
    ) -> Result<Response<SkipOffsetByShardResponse>, Status> {
        let control = &self.control;
        let config = control.read_side(&request.get_ref().read_side_id)?;
        let shard = control.shard(request.get_ref().cluster_shard_number)?;
        let Some(event) = control.skip_next(config, shard).await? else {
            return Err(Status::failed_precondition(format!(
                "read side {:?} has no undelivered event on shard {shard} to skip",
                config.id
            )));
        };
        control.reload(&config.id, Some(shard));
        Ok(with_skipped(
            SkipOffsetByShardResponse { successful: true },
            &[(shard, event)],
        ))
    }
}

/// The internal admin service: every configured read side with its per-shard status.
pub struct ReadSideAdminService {
    pub control: Arc<ReadSideControl>,
}

#[tonic::async_trait]
impl ReadSideAdmin for ReadSideAdminService {
    async fn list_read_sides(
        &self,
        _request: Request<ListReadSidesRequest>,
    ) -> Result<Response<ListReadSidesResponse>, Status> {
        let mut read_sides = Vec::with_capacity(self.control.read_sides.len());
        for config in &self.control.read_sides {
            read_sides.push(self.control.status(config).await?);
        }
        Ok(Response::new(ListReadSidesResponse { read_sides }))
    }
}
