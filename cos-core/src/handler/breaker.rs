//! A circuit breaker around a write handler (`COS_WRITE_SIDE_BREAKER_*`): after `max_failures` failures in a
//! row, calls fail fast with UNAVAILABLE for `reset_timeout`; then one trial call closes it again or reopens
//! it. Unlike the original, only infrastructure failures count (unreachable, timeouts, INTERNAL/UNKNOWN-like
//! statuses): a handler that rejects commands on business grounds (INVALID_ARGUMENT, FAILED_PRECONDITION, …)
//! is working, and must not be cut off.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tonic::Code;

use super::WriteHandler;
use crate::error::CommandError;
use crate::proto::chief_of_state::v1::{
    HandleCommandRequest, HandleCommandResponse, HandleEventRequest, HandleEventResponse, Header,
};
use crate::settings::BreakerSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is under way.
    HalfOpen,
}

/// A write handler guarded by a circuit breaker.
pub struct BreakerWriteHandler<H> {
    inner: H,
    settings: BreakerSettings,
    state: Mutex<BreakerState>,
}

impl<H: WriteHandler> BreakerWriteHandler<H> {
    pub fn new(inner: H, settings: BreakerSettings) -> Self {
        Self {
            inner,
            settings,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets a call through, or refuses it while open.
    fn admit(&self) -> Result<(), CommandError> {
        let mut state = self.lock();
        match *state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open { until } if Instant::now() >= until => {
                *state = BreakerState::HalfOpen;
                Ok(())
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => {
                Err(CommandError::HandlerUnavailable(
                    "circuit breaker is open; calls are failing fast".to_string(),
                ))
            }
        }
    }

    fn record(&self, failed: bool) {
        let mut state = self.lock();
        let reopen = BreakerState::Open {
            until: Instant::now() + self.settings.reset_timeout,
        };
        *state = match (*state, failed) {
            (_, false) => BreakerState::Closed { failures: 0 },
            (BreakerState::HalfOpen, true) => reopen,
            (BreakerState::Closed { failures }, true)
                if failures + 1 >= self.settings.max_failures =>
            {
                tracing::warn!(
                    failures = failures + 1,
                    "write handler circuit breaker opened"
                );
                reopen
            }
            (BreakerState::Closed { failures }, true) => BreakerState::Closed {
                failures: failures + 1,
            },
            (open @ BreakerState::Open { .. }, true) => open,
        };
    }

    fn counts_as_failure<T>(&self, result: &Result<T, CommandError>, took: Duration) -> bool {
        if took > self.settings.call_timeout {
            return true;
        }
        match result {
            Ok(_) => false,
            Err(CommandError::HandlerUnavailable(_) | CommandError::DeadlineExceeded(_)) => true,
            Err(CommandError::Handler(status)) => matches!(
                Code::from_i32(status.code),
                Code::Internal
                    | Code::Unknown
                    | Code::Unavailable
                    | Code::DataLoss
                    | Code::ResourceExhausted
                    | Code::DeadlineExceeded
            ),
            Err(_) => false,
        }
    }
}

#[async_trait]
impl<H: WriteHandler> WriteHandler for BreakerWriteHandler<H> {
    async fn handle_command(
        &self,
        request: HandleCommandRequest,
        propagated_headers: &[Header],
        timeout: Duration,
    ) -> Result<HandleCommandResponse, CommandError> {
        self.admit()?;
        let started = Instant::now();
        let result = self
            .inner
            .handle_command(request, propagated_headers, timeout)
            .await;
        self.record(self.counts_as_failure(&result, started.elapsed()));
        result
    }

    async fn handle_event(
        &self,
        request: HandleEventRequest,
        timeout: Duration,
    ) -> Result<HandleEventResponse, CommandError> {
        self.admit()?;
        let started = Instant::now();
        let result = self.inner.handle_event(request, timeout).await;
        self.record(self.counts_as_failure(&result, started.elapsed()));
        result
    }
}
