//! How database errors become store errors, shared by the PostgreSQL and SQLite stores (the only modules that
//! know sqlx).

use crate::domain::Revision;
use crate::store::StoreError;

/// True when the database refused a row because its key exists.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|database_error| database_error.is_unique_violation())
}

/// A duplicate key is another writer's revision; anything else means the database is not usable now.
pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    if is_unique_violation(&error) {
        StoreError::Conflict(error.to_string())
    } else {
        StoreError::Unavailable(error.to_string())
    }
}

/// A stored revision back into the wire type, refusing values that cannot be revisions.
pub(crate) fn revision_from_row(value: i64) -> Result<Revision, StoreError> {
    Revision::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("revision {value} out of range")))
}

/// Why writing a request (or a batch) failed.
pub(crate) enum WriteFailure {
    /// An entity's head was not at the expected revision.
    Stale(String),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for WriteFailure {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

impl WriteFailure {
    pub(crate) fn into_store_error(self) -> StoreError {
        match self {
            Self::Stale(reason) => StoreError::Conflict(reason),
            Self::Database(error) => store_error(error),
        }
    }

    /// A failure caused by the request's own data (conflict, bad value), not by the database being down.
    pub(crate) fn is_request_specific(&self) -> bool {
        match self {
            Self::Stale(_) => true,
            Self::Database(error) => error.as_database_error().is_some(),
        }
    }
}
