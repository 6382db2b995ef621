//! Value parsers shared by the YAML and the environment path, so both accept and refuse exactly the same
//! things (the original's env path silently defaulted unparsable values). Booleans and durations are the
//! settings loader's parsers.

use std::collections::HashMap;
use std::time::Duration;

use super::ReadSideConfigError;

/// What booleans accept, for error messages (same wording as the settings loader).
pub(super) const BOOLEAN_RULE: &str = "must be true or false (yes/no and on/off are accepted too)";

/// `^[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?$`, the original's id rule, written out to avoid a regex.
pub(super) fn is_valid_id(id: &str) -> bool {
    let is_alphanumeric = |character: char| character.is_ascii_alphanumeric();
    let (Some(first), Some(last)) = (id.chars().next(), id.chars().last()) else {
        return false;
    };
    is_alphanumeric(first)
        && is_alphanumeric(last)
        && id
            .chars()
            .all(|character| is_alphanumeric(character) || character == '_' || character == '-')
}

/// `true/false/yes/no/on/off`, case-insensitive (the settings loader's rule); anything else is refused rather
/// than read as false.
pub(super) fn parse_boolean(text: &str) -> Option<bool> {
    crate::settings::parse_boolean(text.trim())
}

/// A whole number with an optional unit (`ms`, `s`, `m`, `h`); no unit means milliseconds (the settings
/// loader's rule).
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
    crate::settings::parse_duration(text.trim())
}

/// A global variable's text, or `default` when it is absent or blank (HOCON's `${?VAR}` semantics).
pub(super) fn global_text<'e>(
    environment: &'e HashMap<String, String>,
    name: &str,
    default: &'e str,
) -> &'e str {
    environment
        .get(name)
        .map(|value| value.trim())
        .filter(|value| !value.is_empty())
        .unwrap_or(default)
}

/// The error for a global variable breaking `rule`.
pub(super) fn invalid_global(name: &str, value: &str, rule: &str) -> ReadSideConfigError {
    ReadSideConfigError::InvalidGlobal {
        name: name.to_string(),
        value: value.to_string(),
        rule: rule.to_string(),
    }
}

/// A global boolean such as `COS_READ_SIDE_ENABLED`.
pub(super) fn global_boolean(
    environment: &HashMap<String, String>,
    name: &str,
    default: bool,
) -> Result<bool, ReadSideConfigError> {
    let default_text = if default { "true" } else { "false" };
    let text = global_text(environment, name, default_text);
    parse_boolean(text).ok_or_else(|| invalid_global(name, text, BOOLEAN_RULE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_side_config_spec_valid_ids() {
        for id in [
            "read-side-1",
            "readSide23",
            "read_side_23",
            "read_side-23",
            "read__side--23",
            "a",
            "RS1",
        ] {
            assert!(is_valid_id(id), "{id}");
        }
    }

    #[test]
    fn read_side_config_spec_invalid_ids() {
        for id in [
            "read__",
            "read__side-",
            "read-side-2;",
            "",
            "-rs",
            "_rs",
            "rs 1",
            "réad",
        ] {
            assert!(!is_valid_id(id), "{id}");
        }
    }

    #[test]
    fn booleans_accept_hocon_spellings_and_refuse_the_rest() {
        assert_eq!(parse_boolean(" TRUE "), Some(true));
        assert_eq!(parse_boolean("off"), Some(false));
        assert_eq!(parse_boolean("1"), None);
        assert_eq!(parse_boolean("ture"), None);
    }

    #[test]
    fn durations_take_units_and_bare_numbers_are_milliseconds() {
        assert_eq!(parse_duration("500"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1 minute"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("soon"), None);
    }
}
