//! Failure policies: what a projection does when its read handler fails an event (§5.5 of the reference).

use std::time::Duration;

/// What a failed event does to a read side's projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Stop the read side on the first failure (also the default and the meaning of an empty policy).
    #[default]
    Stop,
    /// Skip the failed event at once; the offset advances.
    Skip,
    /// Retry the event `retries` more times, `interval` apart, then stop.
    ReplayStop { retries: u32, interval: Duration },
    /// Retry the event `retries` more times, `interval` apart, then skip it.
    ReplaySkip { retries: u32, interval: Duration },
}

/// The original's fixed replay count.
const REPLAY_RETRIES: u32 = 5;
/// The original's fixed pause between replays.
const REPLAY_INTERVAL: Duration = Duration::from_secs(5);

/// What failure policies accept, for error messages.
pub(super) const FAILURE_POLICY_RULE: &str =
    "must be STOP, SKIP, REPLAY_STOP or REPLAY_SKIP (or empty for STOP)";

impl FailurePolicy {
    /// Parses a policy name, case-insensitively; `REPLAY-STOP`/`REPLAY-SKIP` are accepted as in the original's
    /// parser and an empty (or blank) name means STOP. `None` for anything else.
    pub fn parse(name: &str) -> Option<FailurePolicy> {
        match name.trim().to_ascii_uppercase().as_str() {
            "" | "STOP" => Some(FailurePolicy::Stop),
            "SKIP" => Some(FailurePolicy::Skip),
            "REPLAY_STOP" | "REPLAY-STOP" => Some(FailurePolicy::ReplayStop {
                retries: REPLAY_RETRIES,
                interval: REPLAY_INTERVAL,
            }),
            "REPLAY_SKIP" | "REPLAY-SKIP" => Some(FailurePolicy::ReplaySkip {
                retries: REPLAY_RETRIES,
                interval: REPLAY_INTERVAL,
            }),
            _ => None,
        }
    }

    /// The canonical name, as the manager service and logs show it.
    pub fn name(&self) -> &'static str {
        match self {
            FailurePolicy::Stop => "STOP",
            FailurePolicy::Skip => "SKIP",
            FailurePolicy::ReplayStop { .. } => "REPLAY_STOP",
            FailurePolicy::ReplaySkip { .. } => "REPLAY_SKIP",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLAY_STOP: FailurePolicy = FailurePolicy::ReplayStop {
        retries: 5,
        interval: Duration::from_secs(5),
    };
    const REPLAY_SKIP: FailurePolicy = FailurePolicy::ReplaySkip {
        retries: 5,
        interval: Duration::from_secs(5),
    };

    #[test]
    fn failure_policy_spec_parses_stop_and_skip() {
        assert_eq!(FailurePolicy::parse("STOP"), Some(FailurePolicy::Stop));
        assert_eq!(FailurePolicy::parse("SKIP"), Some(FailurePolicy::Skip));
        assert_eq!(FailurePolicy::parse("skip"), Some(FailurePolicy::Skip));
    }

    #[test]
    fn failure_policy_spec_replays_five_times_five_seconds_apart_with_either_separator() {
        assert_eq!(FailurePolicy::parse("REPLAY_STOP"), Some(REPLAY_STOP));
        assert_eq!(FailurePolicy::parse("REPLAY-STOP"), Some(REPLAY_STOP));
        assert_eq!(FailurePolicy::parse("replay_stop"), Some(REPLAY_STOP));
        assert_eq!(FailurePolicy::parse("REPLAY_SKIP"), Some(REPLAY_SKIP));
        assert_eq!(FailurePolicy::parse("REPLAY-SKIP"), Some(REPLAY_SKIP));
    }

    #[test]
    fn failure_policy_spec_refuses_unknown_names() {
        for name in ["RETRY", "REPLAY", "STOP_SKIP", "REPLAY SKIP"] {
            assert_eq!(FailurePolicy::parse(name), None, "{name}");
        }
    }

    #[test]
    fn failure_policy_spec_empty_and_default_mean_stop() {
        assert_eq!(FailurePolicy::parse(""), Some(FailurePolicy::Stop));
        assert_eq!(FailurePolicy::parse("  "), Some(FailurePolicy::Stop));
        assert_eq!(FailurePolicy::default(), FailurePolicy::Stop);
    }

    #[test]
    fn read_side_failure_policy_spec_canonical_names() {
        assert_eq!(FailurePolicy::Stop.name(), "STOP");
        assert_eq!(FailurePolicy::Skip.name(), "SKIP");
        assert_eq!(REPLAY_STOP.name(), "REPLAY_STOP");
        assert_eq!(REPLAY_SKIP.name(), "REPLAY_SKIP");
    }
}
