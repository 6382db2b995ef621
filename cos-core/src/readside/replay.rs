//! `COS_READ_SIDE_REPLAY_RETRIES` and `COS_READ_SIDE_REPLAY_INTERVAL` (not in the original, which fixes 5
//! replays 5 s apart): how REPLAY_STOP and REPLAY_SKIP retry a failed event. The defaults are the original's.

use std::collections::HashMap;
use std::time::Duration;

use super::values::{global_text, invalid_global, parse_duration};
use super::{FailurePolicy, ReadSideConfig, ReadSideConfigError};

const RETRIES: &str = "COS_READ_SIDE_REPLAY_RETRIES";
const INTERVAL: &str = "COS_READ_SIDE_REPLAY_INTERVAL";

/// Retries after the first failure, and the pause between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Replay {
    retries: u32,
    interval: Duration,
}

/// Reads and validates the replay settings.
pub(super) fn load_replay(
    environment: &HashMap<String, String>,
) -> Result<Replay, ReadSideConfigError> {
    let retries_text = global_text(environment, RETRIES, "5");
    let retries = match retries_text.parse::<u32>() {
        Ok(count) if (1..=100).contains(&count) => count,
        _ => {
            return Err(invalid_global(
                RETRIES,
                retries_text,
                "must be an integer between 1 and 100",
            ));
        }
    };
    let interval_text = global_text(environment, INTERVAL, "5s");
    let interval = match parse_duration(interval_text) {
        Some(interval)
            if interval >= Duration::from_millis(10) && interval <= Duration::from_secs(3600) =>
        {
            interval
        }
        _ => {
            return Err(invalid_global(
                INTERVAL,
                interval_text,
                "must be a duration such as 5s, between 10ms and 1 hour",
            ));
        }
    };
    Ok(Replay { retries, interval })
}

impl Replay {
    /// The read side with its replay policy (if any) set to these retries.
    pub(super) fn apply(self, mut config: ReadSideConfig) -> ReadSideConfig {
        config.failure_policy = match config.failure_policy {
            FailurePolicy::ReplayStop { .. } => FailurePolicy::ReplayStop {
                retries: self.retries,
                interval: self.interval,
            },
            FailurePolicy::ReplaySkip { .. } => FailurePolicy::ReplaySkip {
                retries: self.retries,
                interval: self.interval,
            },
            other => other,
        };
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Replay, ReadSideConfigError> {
        let environment: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        load_replay(&environment)
    }

    #[test]
    fn replay_defaults_are_the_originals_five_retries_five_seconds_apart() {
        assert_eq!(
            load(&[]).expect("valid"),
            Replay {
                retries: 5,
                interval: Duration::from_secs(5),
            }
        );
    }

    #[test]
    fn replay_settings_are_validated_with_one_line_errors() {
        let replay = load(&[(RETRIES, "2"), (INTERVAL, "100ms")]).expect("valid");
        assert_eq!(
            replay,
            Replay {
                retries: 2,
                interval: Duration::from_millis(100),
            }
        );
        for (name, value, rule) in [
            (RETRIES, "0", "must be an integer between 1 and 100"),
            (RETRIES, "many", "must be an integer between 1 and 100"),
            (
                INTERVAL,
                "1ms",
                "must be a duration such as 5s, between 10ms and 1 hour",
            ),
            (
                INTERVAL,
                "later",
                "must be a duration such as 5s, between 10ms and 1 hour",
            ),
        ] {
            let error = load(&[(name, value)]).expect_err("invalid").to_string();
            assert_eq!(error, format!("invalid setting {name}={value:?}: {rule}"));
        }
    }

    #[test]
    fn replay_settings_change_only_replay_policies() {
        let replay = Replay {
            retries: 2,
            interval: Duration::from_millis(100),
        };
        let mut config = crate::readside::handler::test_support::config(
            crate::readside::ReadSideProtocol::Grpc,
            1,
            Duration::from_secs(1),
        );
        config.failure_policy = FailurePolicy::parse("REPLAY_SKIP").expect("valid");
        assert_eq!(
            replay.apply(config.clone()).failure_policy,
            FailurePolicy::ReplaySkip {
                retries: 2,
                interval: Duration::from_millis(100)
            }
        );
        config.failure_policy = FailurePolicy::Skip;
        assert_eq!(replay.apply(config).failure_policy, FailurePolicy::Skip);
    }
}
