//! A circuit breaker around a write handler (`COS_WRITE_SIDE_BREAKER_*`): after `max_failures` failures in a
//! row, calls fail fast with UNAVAILABLE for `reset_timeout`; then one trial call closes it again or reopens
//! it. Unlike the original, only infrastructure failures count (unreachable, timeouts, INTERNAL/UNKNOWN-like
//! statuses): a handler that rejects commands on business grounds (INVALID_ARGUMENT, FAILED_PRECONDITION, …)
//! is working, and must not be cut off.

use std::future::Future;
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

tokio::task_local! {
    /// Set while the caller may cut handler calls short for its own scheduling.
    static CUT_FOR_SCHEDULING: ();
}

/// Runs `calls` (handler calls) so that a timeout or a cancellation among them gives the breaker no verdict.
/// For a caller that cuts calls short for its own reasons (an entity that must start a write shared with
/// earlier commands): such a cut says nothing about the handler's health. Calls slower than `CALL_TIMEOUT` and
/// infrastructure errors still count, and a command cut short runs again later without this, so a hanging
/// handler still opens the breaker.
pub async fn cut_for_scheduling<F: Future>(calls: F) -> F::Output {
    CUT_FOR_SCHEDULING.scope((), calls).await
}

fn cut_for_scheduling_here() -> bool {
    CUT_FOR_SCHEDULING.try_with(|()| ()).is_ok()
}

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

    /// No verdict on the handler: a trial call in flight gives its turn back, so that the next call is the trial.
    fn abstain(&self) {
        let mut state = self.lock();
        if *state == BreakerState::HalfOpen {
            *state = BreakerState::Open {
                until: Instant::now(),
            };
        }
    }

    /// Records the outcome of a finished call.
    fn settle<T>(&self, result: &Result<T, CommandError>, took: Duration) {
        let timed_out = matches!(result, Err(CommandError::DeadlineExceeded(_)));
        if timed_out && took <= self.settings.call_timeout && cut_for_scheduling_here() {
            self.abstain();
        } else {
            self.record(self.counts_as_failure(result, took));
        }
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

/// Counts a call that never finished (its future was dropped, e.g. at the command's deadline) as a failure,
/// so a cancelled trial call cannot leave the breaker half-open for ever; one cut for scheduling gives its
/// trial back instead.
struct PendingCall<'a, H: WriteHandler> {
    breaker: &'a BreakerWriteHandler<H>,
    finished: bool,
}

impl<H: WriteHandler> Drop for PendingCall<'_, H> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if cut_for_scheduling_here() {
            self.breaker.abstain();
        } else {
            self.breaker.record(true);
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
        let mut pending = PendingCall {
            breaker: self,
            finished: false,
        };
        let started = Instant::now();
        let result = self
            .inner
            .handle_command(request, propagated_headers, timeout)
            .await;
        pending.finished = true;
        self.settle(&result, started.elapsed());
        result
    }

    async fn handle_event(
        &self,
        request: HandleEventRequest,
        timeout: Duration,
    ) -> Result<HandleEventResponse, CommandError> {
        self.admit()?;
        let mut pending = PendingCall {
            breaker: self,
            finished: false,
        };
        let started = Instant::now();
        let result = self.inner.handle_event(request, timeout).await;
        pending.finished = true;
        self.settle(&result, started.elapsed());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler whose calls take as long as asked (to cancel them mid-flight) and then fail with `error`.
    struct SlowHandler {
        delay: Duration,
        error: CommandError,
    }

    impl SlowHandler {
        fn unavailable(delay: Duration) -> Self {
            Self {
                delay,
                error: CommandError::HandlerUnavailable("down".to_string()),
            }
        }
    }

    #[async_trait]
    impl WriteHandler for SlowHandler {
        async fn handle_command(
            &self,
            _request: HandleCommandRequest,
            _propagated_headers: &[Header],
            _timeout: Duration,
        ) -> Result<HandleCommandResponse, CommandError> {
            tokio::time::sleep(self.delay).await;
            Err(self.error.clone())
        }

        async fn handle_event(
            &self,
            _request: HandleEventRequest,
            _timeout: Duration,
        ) -> Result<HandleEventResponse, CommandError> {
            Ok(HandleEventResponse::default())
        }
    }

    fn one_failure_opens_it() -> BreakerSettings {
        BreakerSettings {
            max_failures: 1,
            call_timeout: Duration::from_secs(60),
            reset_timeout: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn calls_cut_for_scheduling_give_no_verdict_and_other_failures_still_count() {
        // The caller's timeout, as the gRPC client reports it.
        let times_out = SlowHandler {
            delay: Duration::ZERO,
            error: CommandError::DeadlineExceeded("cut short".to_string()),
        };
        let breaker = BreakerWriteHandler::new(times_out, one_failure_opens_it());
        let call =
            || breaker.handle_command(HandleCommandRequest::default(), &[], Duration::from_secs(1));
        // A call that timed out inside the scope leaves the breaker closed, and so does one dropped there.
        assert!(cut_for_scheduling(call()).await.is_err());
        assert_eq!(*breaker.lock(), BreakerState::Closed { failures: 0 });
        let slow = BreakerWriteHandler::new(
            SlowHandler::unavailable(Duration::from_secs(10)),
            one_failure_opens_it(),
        );
        let dropped = cut_for_scheduling(tokio::time::timeout(
            Duration::from_millis(5),
            slow.handle_command(HandleCommandRequest::default(), &[], Duration::from_secs(1)),
        ))
        .await;
        assert!(dropped.is_err(), "the call was dropped before it finished");
        assert_eq!(*slow.lock(), BreakerState::Closed { failures: 0 });
        // The same timeout outside the scope opens it (max_failures = 1).
        assert!(call().await.is_err());
        assert!(matches!(*breaker.lock(), BreakerState::Open { .. }));
        // A trial cut for scheduling hands its turn back: the breaker is open again at once, not half-open.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(cut_for_scheduling(call()).await.is_err());
        assert!(
            matches!(*breaker.lock(), BreakerState::Open { until } if until <= Instant::now()),
            "the next call is the trial"
        );
        let unavailable = BreakerWriteHandler::new(
            SlowHandler::unavailable(Duration::ZERO),
            one_failure_opens_it(),
        );
        let failed = cut_for_scheduling(unavailable.handle_command(
            HandleCommandRequest::default(),
            &[],
            Duration::from_secs(1),
        ))
        .await;
        assert!(matches!(failed, Err(CommandError::HandlerUnavailable(_))));
        assert!(
            matches!(*unavailable.lock(), BreakerState::Open { .. }),
            "an unreachable handler counts even inside the scope"
        );
    }

    #[tokio::test]
    async fn a_cancelled_trial_call_reopens_the_breaker_instead_of_blocking_it_for_ever() {
        let settings = BreakerSettings {
            max_failures: 1,
            call_timeout: Duration::from_secs(60),
            reset_timeout: Duration::from_millis(50),
        };
        let breaker = BreakerWriteHandler::new(
            SlowHandler::unavailable(Duration::from_millis(10)),
            settings,
        );
        let call =
            || breaker.handle_command(HandleCommandRequest::default(), &[], Duration::from_secs(1));
        assert!(call().await.is_err(), "first failure opens it");
        assert!(
            matches!(call().await, Err(CommandError::HandlerUnavailable(message)) if message.contains("open"))
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        // The trial call is dropped before it finishes (as a command deadline would drop it).
        let cancelled = tokio::time::timeout(Duration::from_millis(1), call()).await;
        assert!(cancelled.is_err(), "the trial call was cancelled");
        assert!(
            matches!(*breaker.lock(), BreakerState::Open { .. }),
            "a cancelled trial reopens the breaker"
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        let next_trial = call().await;
        assert!(
            matches!(next_trial, Err(CommandError::HandlerUnavailable(message)) if message == "down"),
            "after the reset timeout another trial reaches the handler"
        );
    }
}
