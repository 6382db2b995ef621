//! `COS_READ_SIDE_BREAKER_*`: validated only when enabled, as in the original (§5.8).

use std::collections::HashMap;
use std::time::Duration;

use super::values::{global_boolean, global_text, invalid_global, parse_duration};
use super::{ReadSideBreaker, ReadSideConfigError};

const ENABLED: &str = "COS_READ_SIDE_BREAKER_ENABLED";
const MAX_FAILURES: &str = "COS_READ_SIDE_BREAKER_MAX_FAILURES";
const CALL_TIMEOUT: &str = "COS_READ_SIDE_BREAKER_CALL_TIMEOUT";
const RESET_TIMEOUT: &str = "COS_READ_SIDE_BREAKER_RESET_TIMEOUT";

/// The breaker settings, or `None` when `COS_READ_SIDE_BREAKER_ENABLED` is false (the default).
pub(super) fn load_breaker(
    environment: &HashMap<String, String>,
) -> Result<Option<ReadSideBreaker>, ReadSideConfigError> {
    if !global_boolean(environment, ENABLED, false)? {
        return Ok(None);
    }
    let max_failures_text = global_text(environment, MAX_FAILURES, "5");
    let max_failures_rule = "must be an integer between 1 and 100";
    let max_failures = match max_failures_text.parse::<u32>() {
        Ok(count) if (1..=100).contains(&count) => count,
        _ => {
            return Err(invalid_global(
                MAX_FAILURES,
                max_failures_text,
                max_failures_rule,
            ));
        }
    };
    let call_text = global_text(environment, CALL_TIMEOUT, "10s");
    let call_rule = "must be a duration such as 10s, more than 0 and at most 5 minutes";
    let call_timeout = match parse_duration(call_text) {
        Some(timeout) if !timeout.is_zero() && timeout <= Duration::from_secs(300) => timeout,
        _ => return Err(invalid_global(CALL_TIMEOUT, call_text, call_rule)),
    };
    let reset_text = global_text(environment, RESET_TIMEOUT, "1m");
    let reset_rule = "must be a duration such as 1m, between 1 second and 1 hour";
    let reset_timeout = match parse_duration(reset_text) {
        Some(timeout)
            if timeout >= Duration::from_secs(1) && timeout <= Duration::from_secs(3600) =>
        {
            timeout
        }
        _ => return Err(invalid_global(RESET_TIMEOUT, reset_text, reset_rule)),
    };
    Ok(Some(ReadSideBreaker {
        max_failures,
        call_timeout,
        reset_timeout,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Option<ReadSideBreaker>, ReadSideConfigError> {
        let environment: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        load_breaker(&environment)
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        match load(pairs) {
            Ok(breaker) => panic!("expected an error, got {breaker:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn breaker_is_disabled_by_default() {
        assert_eq!(load(&[]).expect("valid"), None);
    }

    #[test]
    fn breaker_defaults_are_five_failures_ten_seconds_one_minute() {
        let breaker = load(&[(ENABLED, "true")]).expect("valid");
        assert_eq!(
            breaker,
            Some(ReadSideBreaker {
                max_failures: 5,
                call_timeout: Duration::from_secs(10),
                reset_timeout: Duration::from_secs(60),
            })
        );
    }

    #[test]
    fn breaker_settings_are_read_when_enabled() {
        let breaker = load(&[
            (ENABLED, "yes"),
            (MAX_FAILURES, "100"),
            (CALL_TIMEOUT, "5m"),
            (RESET_TIMEOUT, "1h"),
        ])
        .expect("valid");
        assert_eq!(
            breaker,
            Some(ReadSideBreaker {
                max_failures: 100,
                call_timeout: Duration::from_secs(300),
                reset_timeout: Duration::from_secs(3600),
            })
        );
    }

    #[test]
    fn breaker_disabled_skips_validation() {
        let breaker = load(&[
            (ENABLED, "false"),
            (MAX_FAILURES, "0"),
            (CALL_TIMEOUT, "0s"),
            (RESET_TIMEOUT, "500ms"),
        ])
        .expect("not validated");
        assert_eq!(breaker, None);
    }

    #[test]
    fn breaker_max_failures_must_be_between_1_and_100() {
        for value in ["0", "101", "five"] {
            assert_eq!(
                error(&[(ENABLED, "true"), (MAX_FAILURES, value)]),
                format!(
                    "invalid setting COS_READ_SIDE_BREAKER_MAX_FAILURES={value:?}: must be an integer between 1 and 100"
                )
            );
        }
    }

    #[test]
    fn breaker_call_timeout_must_be_positive_and_at_most_five_minutes() {
        for value in ["0s", "301s", "ten"] {
            assert_eq!(
                error(&[(ENABLED, "true"), (CALL_TIMEOUT, value)]),
                format!(
                    "invalid setting COS_READ_SIDE_BREAKER_CALL_TIMEOUT={value:?}: must be a duration such as 10s, \
                     more than 0 and at most 5 minutes"
                )
            );
        }
    }

    #[test]
    fn breaker_reset_timeout_must_be_between_one_second_and_one_hour() {
        for value in ["500ms", "61m", "soon"] {
            assert_eq!(
                error(&[(ENABLED, "true"), (RESET_TIMEOUT, value)]),
                format!(
                    "invalid setting COS_READ_SIDE_BREAKER_RESET_TIMEOUT={value:?}: must be a duration such as 1m, \
                     between 1 second and 1 hour"
                )
            );
        }
    }

    #[test]
    fn breaker_enabled_must_be_a_boolean() {
        assert_eq!(
            error(&[(ENABLED, "sometimes")]),
            "invalid setting COS_READ_SIDE_BREAKER_ENABLED=\"sometimes\": must be true or false \
             (yes/no and on/off are accepted too)"
        );
    }
}
