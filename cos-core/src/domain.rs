//! Domain types shared by every layer: entity identity, revisions and the initial state of an entity.

use std::fmt;

use prost::Message;
use prost_types::Any;

use crate::proto::chief_of_state::v1::{MetaData, StateWrapper};

/// Longest accepted entity id, in bytes. The original stored ids in a VARCHAR(255) column and failed late
/// (at persist time) for longer ones; we reject them at the edge instead.
pub const MAX_ENTITY_ID_BYTES: usize = 255;

/// Longest accepted entity type name; type names appear in metadata, logs and storage keys.
pub const MAX_ENTITY_TYPE_CHARS: usize = 64;

/// Revision of an entity: 0 before its first event, +1 per persisted event (the wire type is uint32).
pub type Revision = u32;

/// Why an entity id or type name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The wording matches the original service, which clients may match on.
    #[error("empty entity ID")]
    EmptyEntityId,
    #[error("entity ID is {length} bytes long; the limit is {MAX_ENTITY_ID_BYTES} bytes")]
    EntityIdTooLong { length: usize },
    #[error("entity ID contains a NUL character")]
    EntityIdWithNul,
    #[error(
        "invalid entity type {name:?}: use 1 to {MAX_ENTITY_TYPE_CHARS} characters from a-z, 0-9, '_' and '-'"
    )]
    InvalidEntityType { name: String },
}

/// The id of one entity, as sent by the client; never empty and at most [`MAX_ENTITY_ID_BYTES`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityId(String);

impl EntityId {
    /// Validates a client-supplied id.
    pub fn parse(raw: impl Into<String>) -> Result<Self, IdentityError> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err(IdentityError::EmptyEntityId);
        }
        if raw.len() > MAX_ENTITY_ID_BYTES {
            return Err(IdentityError::EntityIdTooLong { length: raw.len() });
        }
        // PostgreSQL text cannot hold NUL; refusing it everywhere keeps both stores equivalent.
        if raw.contains('\0') {
            return Err(IdentityError::EntityIdWithNul);
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The name of an entity type: each type has its own write handler, settings and shard region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityType(String);

impl EntityType {
    /// The name of the type built from the classic `COS_WRITE_SIDE_*` settings.
    pub const DEFAULT_NAME: &'static str = "default";

    /// Validates a type name from configuration or from the `x-cos-entity-type` header.
    pub fn parse(raw: impl Into<String>) -> Result<Self, IdentityError> {
        let raw = raw.into();
        let valid_chars = raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if raw.is_empty() || raw.chars().count() > MAX_ENTITY_TYPE_CHARS || !valid_chars {
            return Err(IdentityError::InvalidEntityType { name: raw });
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntityType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The storage key of an entity: equal ids of different types are different entities.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityKey {
    pub entity_type: EntityType,
    pub entity_id: EntityId,
}

impl fmt::Display for EntityKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.entity_type, self.entity_id)
    }
}

/// Type URL of `google.protobuf.Empty`, the state of a never-written entity.
pub const EMPTY_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Empty";

/// The state of an entity that has no event yet: a packed `google.protobuf.Empty` at revision 0, with only
/// the entity id in its meta (exactly what the original hands to `HandleCommand` for a new entity).
pub fn initial_state(entity_id: &EntityId) -> StateWrapper {
    StateWrapper {
        state: Some(Any {
            type_url: EMPTY_TYPE_URL.to_string(),
            value: ().encode_to_vec(),
        }),
        meta: Some(MetaData {
            entity_id: entity_id.as_str().to_string(),
            ..MetaData::default()
        }),
    }
}

/// The revision recorded in a state's meta (0 when absent).
pub fn revision_of(state: &StateWrapper) -> Revision {
    state.meta.as_ref().map_or(0, |meta| meta.revision_number)
}

/// The message full name of an `Any` (text after the last `/` of its type URL), as the original compares it.
pub fn type_name_of(any: &Any) -> &str {
    any.type_url.rsplit('/').next().unwrap_or_default()
}

/// True for an `Any` with neither a type URL nor a payload; such events are dropped, as in the original.
pub fn is_empty_any(any: &Any) -> bool {
    any.type_url.is_empty() && any.value.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_id_rules() {
        assert_eq!(EntityId::parse(""), Err(IdentityError::EmptyEntityId));
        assert!(EntityId::parse("a".repeat(255)).is_ok());
        assert_eq!(EntityId::parse("a\0b"), Err(IdentityError::EntityIdWithNul));
        assert_eq!(
            EntityId::parse("é".repeat(128)),
            Err(IdentityError::EntityIdTooLong { length: 256 })
        );
    }

    #[test]
    fn entity_type_rules() {
        assert!(EntityType::parse("accounts-v2_x").is_ok());
        for bad in ["", "Accounts", "a b", &"x".repeat(65)] {
            assert!(EntityType::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn initial_state_is_packed_empty_at_revision_zero() {
        let state = initial_state(&EntityId::parse("acct-1").expect("valid id"));
        let any = state.state.as_ref().expect("state present");
        assert_eq!(any.type_url, EMPTY_TYPE_URL);
        assert!(any.value.is_empty());
        assert_eq!(revision_of(&state), 0);
        assert_eq!(
            state.meta.as_ref().map(|m| m.entity_id.as_str()),
            Some("acct-1")
        );
    }

    #[test]
    fn type_name_is_text_after_last_slash() {
        let any = Any {
            type_url: "type.googleapis.com/chief_of_state.v1.AccountOpened".into(),
            value: vec![],
        };
        assert_eq!(type_name_of(&any), "chief_of_state.v1.AccountOpened");
    }
}
