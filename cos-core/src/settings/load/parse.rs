//! Value parsers. Every setting is read as text and parsed here, so an error can name the variable, echo the
//! value and say exactly what is allowed (HOCON's `${?VAR}` semantics for booleans and durations).

use std::ops::RangeInclusive;
use std::time::Duration;

use super::SettingsError;

/// One setting as text, with the name it is reported under: the environment variable (`COS_NUM_SHARDS`), the
/// file key (`num_shards`, `entity_types[accounts].write_side_port`) or, for a default, the variable name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawValue {
    pub(super) label: String,
    pub(super) text: String,
}

/// What booleans accept, for error messages.
const BOOLEAN_RULE: &str = "must be true or false (yes/no and on/off are accepted too)";

impl RawValue {
    pub(super) fn new(label: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            text: text.into(),
        }
    }

    /// The error for this value breaking `rule`.
    pub(super) fn invalid(&self, rule: impl Into<String>) -> SettingsError {
        SettingsError::Invalid {
            name: self.label.clone(),
            value: self.text.clone(),
            rule: rule.into(),
        }
    }

    /// The text without surrounding whitespace, for values that are words or numbers.
    pub(super) fn trimmed(&self) -> &str {
        self.text.trim()
    }

    /// A whole number in `range`, converted to the target type; `rule` is reported otherwise.
    pub(super) fn integer_in<T: TryFrom<i64>>(
        &self,
        range: RangeInclusive<i64>,
        rule: &str,
    ) -> Result<T, SettingsError> {
        let number = parse_integer(self.trimmed()).ok_or_else(|| self.invalid(rule))?;
        if !range.contains(&number) {
            return Err(self.invalid(rule));
        }
        T::try_from(number).map_err(|_| self.invalid(rule))
    }

    /// A boolean in any of the spellings HOCON accepts.
    pub(super) fn boolean(&self) -> Result<bool, SettingsError> {
        parse_boolean(self.trimmed()).ok_or_else(|| self.invalid(BOOLEAN_RULE))
    }

    /// A HOCON duration (`500ms`, `10s`, `1m`, `2h`; a bare number means milliseconds).
    pub(super) fn duration(&self, rule: &str) -> Result<Duration, SettingsError> {
        parse_duration(self.trimmed()).ok_or_else(|| self.invalid(rule))
    }

    /// `off` (any case) as `None`, otherwise a duration of at least `minimum`; `rule` is reported otherwise.
    pub(super) fn duration_at_least_or_off(
        &self,
        minimum: Duration,
        rule: &str,
    ) -> Result<Option<Duration>, SettingsError> {
        if self.trimmed().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let duration = self.duration(rule)?;
        if duration < minimum {
            return Err(self.invalid(rule));
        }
        Ok(Some(duration))
    }
}

/// A decimal integer with an optional sign; `None` for anything else, including overflow.
pub(super) fn parse_integer(text: &str) -> Option<i64> {
    text.parse::<i64>().ok()
}

/// `true/false/yes/no/on/off`, case-insensitive. The original silently read anything else as false; we refuse.
pub(crate) fn parse_boolean(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Some(true),
        "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A non-negative whole number followed by an optional unit (whitespace between them allowed). Units:
/// `ms`/`millis`/`milliseconds`, `s`/`seconds`, `m`/`minutes`, `h`/`hours` (singular forms too); no unit
/// means milliseconds, as in HOCON.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let digits_end = text
        .find(|character: char| !character.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, rest) = text.split_at(digits_end);
    if digits.is_empty() {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    let unit = rest.trim_start().to_ascii_lowercase();
    let millis_per_unit: u64 = match unit.as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "second" | "seconds" => 1_000,
        "m" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        _ => return None,
    };
    let millis = amount.checked_mul(millis_per_unit)?;
    Some(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_accept_hocon_spellings_in_any_case() {
        for text in ["true", "TRUE", "yes", "On"] {
            assert_eq!(parse_boolean(text), Some(true), "{text}");
        }
        for text in ["false", "No", "OFF"] {
            assert_eq!(parse_boolean(text), Some(false), "{text}");
        }
        for text in ["", "1", "0", "y", "enabled"] {
            assert_eq!(parse_boolean(text), None, "{text}");
        }
    }

    #[test]
    fn durations_take_hocon_units_and_bare_numbers_are_milliseconds() {
        assert_eq!(parse_duration("500"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("120s"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("10 seconds"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("1 minute"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("3 HOURS"), Some(Duration::from_secs(10800)));
    }

    #[test]
    fn malformed_durations_are_refused() {
        for text in [
            "",
            "s",
            "-1s",
            "1.5s",
            "10 parsecs",
            "ten seconds",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
    }

    #[test]
    fn integers_out_of_range_report_the_rule() {
        let raw = RawValue::new("COS_DB_PORT", "70000");
        let error = raw
            .integer_in::<u16>(1..=65535, "must be an integer between 1 and 65535")
            .expect_err("out of range");
        assert_eq!(
            error.to_string(),
            "invalid setting COS_DB_PORT=\"70000\": must be an integer between 1 and 65535"
        );
        let padded = RawValue::new("COS_DB_PORT", " 5433 ");
        assert_eq!(padded.integer_in::<u16>(1..=65535, "rule").ok(), Some(5433));
    }
}
