//! One read side's settings as text, validated the same way whichever source they came from; only the names
//! used in messages differ (the YAML key `port` or the variable setting `PORT`).

use std::time::Duration;

use super::policy::FAILURE_POLICY_RULE;
use super::values::{BOOLEAN_RULE, parse_boolean};
use super::{FailurePolicy, ReadSideConfig, ReadSideConfigError, ReadSideProtocol};
use crate::domain::{EntityType, MAX_ENTITY_TYPE_CHARS};

/// The original's default handler deadline.
const DEFAULT_TIMEOUT_MILLIS: u64 = 30_000;

/// One setting as given: the name it is reported under and its text (trimmed; blank means absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawSetting {
    pub(super) name: String,
    pub(super) text: String,
}

impl RawSetting {
    pub(super) fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// The entity type list: a YAML sequence, or comma-separated text (env, or a YAML string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawEntityTypes {
    pub(super) name: String,
    /// What the user wrote, echoed in errors.
    pub(super) shown: String,
    pub(super) items: Vec<String>,
}

impl RawEntityTypes {
    /// A comma-separated list; blank items are ignored.
    pub(super) fn from_csv(name: impl Into<String>, text: &str) -> Self {
        Self {
            name: name.into(),
            shown: text.to_string(),
            items: text.split(',').map(str::to_string).collect(),
        }
    }
}

/// A read side with a valid id and its other settings still as text; `None` means not given.
#[derive(Debug, Clone, Default)]
pub(super) struct RawReadSide {
    pub(super) id: String,
    pub(super) protocol: Option<RawSetting>,
    pub(super) host: Option<RawSetting>,
    pub(super) port: Option<RawSetting>,
    pub(super) use_tls: Option<RawSetting>,
    pub(super) timeout: Option<RawSetting>,
    pub(super) auto_start: Option<RawSetting>,
    pub(super) enabled: Option<RawSetting>,
    pub(super) failure_policy: Option<RawSetting>,
    pub(super) entity_types: Option<RawEntityTypes>,
}

impl RawReadSide {
    /// Validates every setting; `host_name`/`port_name` name the required settings when they are missing.
    pub(super) fn build(
        self,
        host_name: &str,
        port_name: &str,
    ) -> Result<ReadSideConfig, ReadSideConfigError> {
        let id = self.id.clone();
        let host = match given(&self.host) {
            Some(host) => host.text.trim().to_string(),
            None => return Err(self.missing(host_name)),
        };
        let port = match given(&self.port) {
            Some(port) => self.port_number(port)?,
            None => return Err(self.missing(port_name)),
        };
        let protocol = match given(&self.protocol) {
            Some(raw) => self.protocol(raw)?,
            None => ReadSideProtocol::Grpc,
        };
        let timeout = match given(&self.timeout) {
            Some(raw) => self.timeout_millis(raw)?,
            None => Duration::from_millis(DEFAULT_TIMEOUT_MILLIS),
        };
        let failure_policy = match given(&self.failure_policy) {
            Some(raw) => FailurePolicy::parse(&raw.text)
                .ok_or_else(|| self.invalid(raw, FAILURE_POLICY_RULE))?,
            None => FailurePolicy::Stop,
        };
        let entity_types = match &self.entity_types {
            Some(raw) => Some(self.entity_type_list(raw)?),
            None => None,
        };
        Ok(ReadSideConfig {
            protocol,
            host,
            port,
            use_tls: self.boolean(&self.use_tls, false)?,
            timeout,
            auto_start: self.boolean(&self.auto_start, true)?,
            enabled: self.boolean(&self.enabled, true)?,
            failure_policy,
            entity_types,
            id,
        })
    }

    fn invalid(&self, raw: &RawSetting, rule: &str) -> ReadSideConfigError {
        ReadSideConfigError::Invalid {
            read_side: self.id.clone(),
            setting: raw.name.clone(),
            value: raw.text.clone(),
            rule: rule.to_string(),
        }
    }

    fn missing(&self, setting: &str) -> ReadSideConfigError {
        ReadSideConfigError::Missing {
            read_side: self.id.clone(),
            setting: setting.to_string(),
        }
    }

    fn port_number(&self, raw: &RawSetting) -> Result<u16, ReadSideConfigError> {
        const RULE: &str = "must be an integer between 1 and 65535";
        match raw.text.trim().parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(self.invalid(raw, RULE)),
        }
    }

    fn protocol(&self, raw: &RawSetting) -> Result<ReadSideProtocol, ReadSideConfigError> {
        match raw.text.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(ReadSideProtocol::Grpc),
            "http" => Ok(ReadSideProtocol::Http),
            _ => Err(self.invalid(raw, "must be grpc or http")),
        }
    }

    fn timeout_millis(&self, raw: &RawSetting) -> Result<Duration, ReadSideConfigError> {
        const RULE: &str = "must be a positive whole number of milliseconds";
        match raw.text.trim().parse::<u64>() {
            Ok(millis) if millis > 0 => Ok(Duration::from_millis(millis)),
            _ => Err(self.invalid(raw, RULE)),
        }
    }

    fn boolean(
        &self,
        raw: &Option<RawSetting>,
        default: bool,
    ) -> Result<bool, ReadSideConfigError> {
        match given(raw) {
            Some(raw) => parse_boolean(&raw.text).ok_or_else(|| self.invalid(raw, BOOLEAN_RULE)),
            None => Ok(default),
        }
    }

    /// Validated, distinct names in the order given; an explicitly empty list is refused because a read side
    /// listening to nothing is surely a mistake (leave the setting out to listen to all types).
    fn entity_type_list(&self, raw: &RawEntityTypes) -> Result<Vec<String>, ReadSideConfigError> {
        let mut names: Vec<String> = Vec::new();
        for item in &raw.items {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let Ok(entity_type) = EntityType::parse(item) else {
                let rule = format!(
                    "must list entity types of 1 to {MAX_ENTITY_TYPE_CHARS} characters from a-z, 0-9, '_' and '-' ({item:?} is not one)"
                );
                return Err(self.invalid(&RawSetting::new(&raw.name, &raw.shown), &rule));
            };
            let name = entity_type.as_str().to_string();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if names.is_empty() {
            let rule = "must name at least one entity type (leave it out to receive all of them)";
            return Err(self.invalid(&RawSetting::new(&raw.name, &raw.shown), rule));
        }
        Ok(names)
    }
}

/// The setting when it is present and not blank: blank counts as absent, as in HOCON's `${?VAR}`.
fn given(raw: &Option<RawSetting>) -> Option<&RawSetting> {
    raw.as_ref().filter(|raw| !raw.text.trim().is_empty())
}
