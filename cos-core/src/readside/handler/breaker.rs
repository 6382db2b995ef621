//! The read side circuit breaker (§5.8): one per read side, shared by its shards. After `max_failures` failed
//! calls in a row it fails fast for `reset_timeout` without calling the handler; then one trial call closes it
//! or reopens it. As in the original, a handler that answers `successful: false` made a *successful call*
//! (it is up and answering), so only transport errors, timeouts, error statuses and bad responses trip it.
//! Calls are cut off at `call_timeout`, which makes a slow call a failure too.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use tokio::time::Instant;

use super::{ReadHandler, ReadHandlerError, ReadSideDelivery, millis};
use crate::readside::ReadSideBreaker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is under way; everything else fails fast until it ends.
    HalfOpen,
}

/// A read handler guarded by a circuit breaker.
pub struct BreakerReadHandler {
    inner: Arc<dyn ReadHandler>,
    settings: ReadSideBreaker,
    state: Mutex<BreakerState>,
}

impl BreakerReadHandler {
    /// Wraps `inner`; the breaker starts closed.
    pub fn new(inner: Arc<dyn ReadHandler>, settings: ReadSideBreaker) -> Self {
        Self {
            inner,
            settings,
            state: Mutex::new(BreakerState::Closed { failures: 0 }),
        }
    }

    /// The state is a few words updated without awaiting, so a panic elsewhere cannot leave it half-written.
    fn lock(&self) -> MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a call through (turning an expired open breaker into the trial call), or refuses it.
    fn admit(&self) -> Result<(), ReadHandlerError> {
        let mut state = self.lock();
        match *state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open { until } if Instant::now() >= until => {
                *state = BreakerState::HalfOpen;
                Ok(())
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => {
                Err(ReadHandlerError::BreakerOpen)
            }
        }
    }

    fn record(&self, call_failed: bool) {
        let mut state = self.lock();
        let reopen = BreakerState::Open {
            until: Instant::now() + self.settings.reset_timeout,
        };
        *state = match (*state, call_failed) {
            (BreakerState::Closed { .. }, false) => BreakerState::Closed { failures: 0 },
            (BreakerState::HalfOpen, false) => {
                tracing::info!("read handler circuit breaker closed");
                BreakerState::Closed { failures: 0 }
            }
            (BreakerState::HalfOpen, true) => reopen,
            (BreakerState::Closed { failures }, true)
                if failures.saturating_add(1) >= self.settings.max_failures =>
            {
                tracing::warn!(
                    failures = failures.saturating_add(1),
                    reset_timeout_ms = millis(self.settings.reset_timeout),
                    "read handler circuit breaker opened"
                );
                reopen
            }
            (BreakerState::Closed { failures }, true) => BreakerState::Closed {
                failures: failures.saturating_add(1),
            },
            // A call admitted while closed that ends after the breaker opened changes nothing.
            (open @ BreakerState::Open { .. }, _) => open,
        };
    }
}

/// Whether an outcome counts against the breaker: everything but success and a handler's explicit "no".
fn call_failed(result: &Result<(), ReadHandlerError>) -> bool {
    !matches!(result, Ok(()) | Err(ReadHandlerError::Unsuccessful))
}

/// Records a failure if the call is dropped before it ends (the projection was stopped mid-call), so a
/// cancelled trial call cannot leave the breaker half-open for ever.
struct PendingCall<'a> {
    breaker: &'a BreakerReadHandler,
    recorded: bool,
}

impl PendingCall<'_> {
    fn finish(mut self, call_failed: bool) {
        self.recorded = true;
        self.breaker.record(call_failed);
    }
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.record(true);
        }
    }
}

#[async_trait]
impl ReadHandler for BreakerReadHandler {
    async fn handle(&self, delivery: ReadSideDelivery<'_>) -> Result<(), ReadHandlerError> {
        self.admit()?;
        let pending = PendingCall {
            breaker: self,
            recorded: false,
        };
        let call_timeout = self.settings.call_timeout;
        let result = match tokio::time::timeout(call_timeout, self.inner.handle(delivery)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ReadHandlerError::Timeout(millis(call_timeout))),
        };
        pending.finish(call_failed(&result));
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::readside::handler::test_support;

    /// A handler that answers from a script and counts calls.
    struct ScriptedHandler {
        calls: AtomicUsize,
        answer: fn() -> Result<(), ReadHandlerError>,
        delay: Duration,
    }

    #[async_trait]
    impl ReadHandler for ScriptedHandler {
        async fn handle(&self, _delivery: ReadSideDelivery<'_>) -> Result<(), ReadHandlerError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            (self.answer)()
        }
    }

    fn scripted(answer: fn() -> Result<(), ReadHandlerError>) -> Arc<ScriptedHandler> {
        Arc::new(ScriptedHandler {
            calls: AtomicUsize::new(0),
            answer,
            delay: Duration::ZERO,
        })
    }

    fn settings(max_failures: u32, reset_timeout: Duration) -> ReadSideBreaker {
        ReadSideBreaker {
            max_failures,
            call_timeout: Duration::from_secs(5),
            reset_timeout,
        }
    }

    async fn call(handler: &BreakerReadHandler) -> Result<(), ReadHandlerError> {
        let event = test_support::event();
        let delivery = ReadSideDelivery {
            entity_type: "accounts",
            read_side_id: "accounts-view",
            shard: 2,
            event: &event,
        };
        handler.handle(delivery).await
    }

    fn unavailable() -> Result<(), ReadHandlerError> {
        Err(ReadHandlerError::Unavailable(
            "http://127.0.0.1:1".to_string(),
            "connection refused".to_string(),
        ))
    }

    #[tokio::test]
    async fn breaker_opens_after_max_failures_and_fails_fast_without_calling() {
        let inner = scripted(unavailable);
        let breaker = BreakerReadHandler::new(inner.clone(), settings(3, Duration::from_secs(60)));

        for _ in 0..3 {
            assert!(matches!(
                call(&breaker).await,
                Err(ReadHandlerError::Unavailable(..))
            ));
        }
        let refused = call(&breaker).await;

        assert!(
            matches!(refused, Err(ReadHandlerError::BreakerOpen)),
            "{refused:?}"
        );
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn unsuccessful_answers_do_not_trip_the_breaker() {
        let inner = scripted(|| Err(ReadHandlerError::Unsuccessful));
        let breaker = BreakerReadHandler::new(inner.clone(), settings(2, Duration::from_secs(60)));

        for _ in 0..5 {
            assert!(matches!(
                call(&breaker).await,
                Err(ReadHandlerError::Unsuccessful)
            ));
        }

        assert_eq!(inner.calls.load(Ordering::SeqCst), 5);
    }

    /// Answers from a list, one answer per call.
    struct SequenceHandler {
        answers: Mutex<Vec<Result<(), ReadHandlerError>>>,
    }

    #[async_trait]
    impl ReadHandler for SequenceHandler {
        async fn handle(&self, _delivery: ReadSideDelivery<'_>) -> Result<(), ReadHandlerError> {
            self.answers.lock().unwrap().remove(0)
        }
    }

    #[tokio::test]
    async fn failures_must_be_consecutive_to_open_the_breaker() {
        let answers = vec![unavailable(), Ok(()), unavailable(), unavailable()];
        let inner = Arc::new(SequenceHandler {
            answers: Mutex::new(answers),
        });
        let breaker = BreakerReadHandler::new(inner, settings(2, Duration::from_secs(60)));

        assert!(call(&breaker).await.is_err());
        assert!(call(&breaker).await.is_ok());
        assert!(matches!(
            call(&breaker).await,
            Err(ReadHandlerError::Unavailable(..))
        ));
        assert!(matches!(
            call(&breaker).await,
            Err(ReadHandlerError::Unavailable(..))
        ));

        assert!(matches!(
            call(&breaker).await,
            Err(ReadHandlerError::BreakerOpen)
        ));
    }

    #[tokio::test]
    async fn breaker_closes_after_reset_timeout_when_the_trial_call_succeeds() {
        let inner = scripted(|| Ok(()));
        let breaker =
            BreakerReadHandler::new(inner.clone(), settings(1, Duration::from_millis(50)));
        breaker.record(true);
        assert!(matches!(
            call(&breaker).await,
            Err(ReadHandlerError::BreakerOpen)
        ));

        tokio::time::sleep(Duration::from_millis(80)).await;

        assert!(call(&breaker).await.is_ok(), "trial call goes through");
        assert!(call(&breaker).await.is_ok(), "breaker is closed again");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_trial_call_reopens_the_breaker() {
        let inner = scripted(unavailable);
        let breaker =
            BreakerReadHandler::new(inner.clone(), settings(1, Duration::from_millis(50)));
        breaker.record(true);
        tokio::time::sleep(Duration::from_millis(80)).await;

        assert!(matches!(
            call(&breaker).await,
            Err(ReadHandlerError::Unavailable(..))
        ));

        assert!(matches!(
            call(&breaker).await,
            Err(ReadHandlerError::BreakerOpen)
        ));
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn calls_slower_than_call_timeout_fail_and_count_against_the_breaker() {
        let inner = Arc::new(ScriptedHandler {
            calls: AtomicUsize::new(0),
            answer: || Ok(()),
            delay: Duration::from_millis(500),
        });
        let mut slow_settings = settings(1, Duration::from_secs(60));
        slow_settings.call_timeout = Duration::from_millis(50);
        let breaker = BreakerReadHandler::new(inner, slow_settings);

        assert!(matches!(
            call(&breaker).await,
            Err(ReadHandlerError::Timeout(50))
        ));
        assert!(matches!(
            call(&breaker).await,
            Err(ReadHandlerError::BreakerOpen)
        ));
    }

    #[tokio::test]
    async fn a_cancelled_trial_call_does_not_leave_the_breaker_half_open() {
        let inner = Arc::new(ScriptedHandler {
            calls: AtomicUsize::new(0),
            answer: || Ok(()),
            delay: Duration::from_secs(1),
        });
        let breaker = BreakerReadHandler::new(inner, settings(1, Duration::from_millis(20)));
        breaker.record(true);
        tokio::time::sleep(Duration::from_millis(40)).await;

        let cancelled = tokio::time::timeout(Duration::from_millis(10), call(&breaker)).await;

        assert!(cancelled.is_err());
        assert!(matches!(*breaker.lock(), BreakerState::Open { .. }));
    }
}
