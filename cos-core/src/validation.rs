//! Optional allow-lists of event and state message types (`COS_WRITE_SIDE_PROTO_VALIDATION`).

use std::collections::HashSet;

use prost_types::Any;

use crate::domain::type_name_of;
use crate::error::CommandError;

/// Which message types a handler may return; when disabled, everything is accepted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProtoValidation {
    pub enabled: bool,
    pub event_types: HashSet<String>,
    pub state_types: HashSet<String>,
}

impl ProtoValidation {
    /// Rejects an event whose message type is not listed (message wording as in the original).
    pub fn check_event(&self, event: &Any) -> Result<(), CommandError> {
        if self.enabled && !self.event_types.contains(type_name_of(event)) {
            return Err(CommandError::InvalidArgument(format!(
                "invalid event: {}",
                event.type_url
            )));
        }
        Ok(())
    }

    /// Rejects a resulting state whose message type is not listed.
    pub fn check_state(&self, state: &Any) -> Result<(), CommandError> {
        if self.enabled && !self.state_types.contains(type_name_of(state)) {
            return Err(CommandError::InvalidArgument(format!(
                "invalid state: {}",
                state.type_url
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(name: &str) -> Any {
        Any {
            type_url: format!("type.googleapis.com/{name}"),
            value: vec![],
        }
    }

    #[test]
    fn disabled_accepts_everything() {
        let validation = ProtoValidation::default();
        assert!(validation.check_event(&any("x.Y")).is_ok());
    }

    #[test]
    fn enabled_accepts_only_listed_names() {
        let validation = ProtoValidation {
            enabled: true,
            event_types: HashSet::from(["bank.Opened".to_string()]),
            state_types: HashSet::new(),
        };
        assert!(validation.check_event(&any("bank.Opened")).is_ok());
        let error = validation
            .check_event(&any("bank.Closed"))
            .expect_err("rejected");
        assert_eq!(
            error.to_string(),
            "invalid event: type.googleapis.com/bank.Closed"
        );
        assert!(validation.check_state(&any("bank.Account")).is_err());
    }
}
