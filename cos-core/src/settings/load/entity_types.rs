//! Builds the configured entity types: the classic one from the global `COS_WRITE_SIDE_*` settings and any
//! number from the file's `entity_types` list, each key falling back to the global value, then the default.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use config::{Map, Value, ValueKind};

use super::SettingsError;
use super::parse::RawValue;
use super::sources::{ENTITY_TYPE_KEYS, Sources, describe_value, raw_from_value, variable_name};
use crate::domain::{EntityType, MAX_ENTITY_TYPE_CHARS};
use crate::headers::{is_valid_header_name, parse_header_list};
use crate::settings::{EntityTypeSettings, EntityTypes, SnapshotSettings, WriteHandlerSettings};
use crate::validation::ProtoValidation;

const DEFAULT_SNAPSHOT_FREQUENCY: u32 = 100;
const DEFAULT_SNAPSHOTS_RETAINED: u32 = 2;

/// All entity types and the default one; at least one type must be configured.
pub(super) fn load_entity_types(sources: &Sources<'_>) -> Result<EntityTypes, SettingsError> {
    let mut types: BTreeMap<EntityType, EntityTypeSettings> = BTreeMap::new();
    for declared in declared_types(sources)? {
        let scope = TypeScope {
            sources,
            name: &declared.name,
            table: Some(declared.table),
        };
        let settings = scope.build()?;
        types.insert(declared.name, settings);
    }

    let classic_host = sources.global_opt("write_side_host")?;
    let classic_configured = classic_host.is_some_and(|raw| !raw.trimmed().is_empty());
    let classic_name = entity_type_name(EntityType::DEFAULT_NAME)?;
    // A file entry named "default" already falls back to the global keys, so it is the classic type.
    if classic_configured && !types.contains_key(&classic_name) {
        let scope = TypeScope {
            sources,
            name: &classic_name,
            table: None,
        };
        let settings = scope.build()?;
        types.insert(classic_name.clone(), settings);
    }

    if types.is_empty() {
        return Err(SettingsError::Missing {
            name: variable_name("write_side_host"),
            reason: "no write handler configured; set COS_WRITE_SIDE_HOST and COS_WRITE_SIDE_PORT or declare entity_types in the config file".to_string(),
        });
    }
    let default_type = choose_default_type(sources, &types, &classic_name)?;
    Ok(EntityTypes {
        default_type,
        types,
    })
}

fn entity_type_rule() -> String {
    format!("must be 1 to {MAX_ENTITY_TYPE_CHARS} characters from a-z, 0-9, '_' and '-'")
}

fn entity_type_name(name: &str) -> Result<EntityType, SettingsError> {
    EntityType::parse(name).map_err(|_| SettingsError::Invalid {
        name: "entity type".to_string(),
        value: name.to_string(),
        rule: entity_type_rule(),
    })
}

/// One table of the file's `entity_types` list, with its validated name.
struct DeclaredType<'s> {
    name: EntityType,
    table: &'s Map<String, Value>,
}

/// The file's `entity_types` tables with their validated, distinct names, after checking their keys.
fn declared_types<'s>(sources: &'s Sources<'_>) -> Result<Vec<DeclaredType<'s>>, SettingsError> {
    let Some(file) = sources.file() else {
        return Ok(Vec::new());
    };
    let Some(list) = file.root.get("entity_types") else {
        return Ok(Vec::new());
    };
    let items = match &list.kind {
        ValueKind::Nil => return Ok(Vec::new()),
        ValueKind::Array(items) => items,
        _ => {
            return Err(SettingsError::Invalid {
                name: "entity_types".to_string(),
                value: describe_value(list),
                rule: "must be a list of tables, each with a name".to_string(),
            });
        }
    };

    let mut declared = Vec::new();
    let mut seen = HashSet::new();
    for (index, item) in items.iter().enumerate() {
        let ValueKind::Table(table) = &item.kind else {
            return Err(SettingsError::Invalid {
                name: format!("entity_types[{index}]"),
                value: describe_value(item),
                rule: "must be a table with a name and write handler settings".to_string(),
            });
        };
        let name_label = format!("entity_types[{index}].name");
        let raw_name = match table.get("name") {
            Some(value) => raw_from_value(name_label.clone(), value)?,
            None => None,
        };
        let Some(raw_name) = raw_name else {
            return Err(SettingsError::Missing {
                name: name_label,
                reason: "every entity type needs a name".to_string(),
            });
        };
        let name = EntityType::parse(raw_name.text.as_str())
            .map_err(|_| raw_name.invalid(entity_type_rule()))?;
        if !seen.insert(name.clone()) {
            return Err(raw_name.invalid("duplicate entity type name"));
        }
        check_type_keys(&file.path, &name, table)?;
        declared.push(DeclaredType { name, table });
    }
    Ok(declared)
}

/// Rejects keys an entity type table cannot have, so misspellings fail at start-up.
fn check_type_keys(
    path: &std::path::Path,
    name: &EntityType,
    table: &Map<String, Value>,
) -> Result<(), SettingsError> {
    let mut keys: Vec<&String> = table.keys().collect();
    keys.sort();
    for key in keys {
        if key == "name" || ENTITY_TYPE_KEYS.contains(&key.as_str()) {
            continue;
        }
        return Err(SettingsError::UnknownFileKey {
            key: format!("entity_types[{name}].{key}"),
            path: path.to_path_buf(),
            hint: format!(
                "no such per-type setting; allowed: name, {}",
                ENTITY_TYPE_KEYS.join(", ")
            ),
        });
    }
    Ok(())
}

/// `COS_DEFAULT_ENTITY_TYPE` if set, else "default" if configured, else the only type.
fn choose_default_type(
    sources: &Sources<'_>,
    types: &BTreeMap<EntityType, EntityTypeSettings>,
    classic_name: &EntityType,
) -> Result<EntityType, SettingsError> {
    let configured_names: Vec<&str> = types.keys().map(EntityType::as_str).collect();
    let requested = sources
        .global_opt("default_entity_type")?
        .filter(|raw| !raw.trimmed().is_empty());
    if let Some(raw) = requested {
        let name = EntityType::parse(raw.trimmed()).map_err(|_| raw.invalid(entity_type_rule()))?;
        if !types.contains_key(&name) {
            return Err(raw.invalid(format!(
                "must name a configured entity type ({})",
                configured_names.join(", ")
            )));
        }
        return Ok(name);
    }
    if types.contains_key(classic_name) {
        return Ok(classic_name.clone());
    }
    let mut names = types.keys();
    if let (Some(only), None) = (names.next(), names.next()) {
        return Ok(only.clone());
    }
    Err(SettingsError::Missing {
        name: variable_name("default_entity_type"),
        reason: format!(
            "several entity types are configured ({}); set it to the one used when a request names no type",
            configured_names.join(", ")
        ),
    })
}

/// The values of one entity type: its own table first, then the global value, then the default.
struct TypeScope<'s, 'e> {
    sources: &'s Sources<'e>,
    name: &'s EntityType,
    /// `None` for the classic type, built from the global keys only.
    table: Option<&'s Map<String, Value>>,
}

impl TypeScope<'_, '_> {
    /// The name a key of this type is reported under when no source set it.
    fn default_label(&self, key: &str) -> String {
        match self.table {
            Some(_) => format!("entity_types[{}].{key}", self.name),
            None => variable_name(key),
        }
    }

    fn value_opt(&self, key: &str) -> Result<Option<RawValue>, SettingsError> {
        if let Some(value) = self.table.and_then(|table| table.get(key)) {
            let label = format!("entity_types[{}].{key}", self.name);
            if let Some(raw) = raw_from_value(label, value)? {
                return Ok(Some(raw));
            }
        }
        self.sources.global_opt(key)
    }

    fn value(&self, key: &str, default: &str) -> Result<RawValue, SettingsError> {
        let value = self.value_opt(key)?;
        Ok(value.unwrap_or_else(|| RawValue::new(self.default_label(key), default)))
    }

    fn build(&self) -> Result<EntityTypeSettings, SettingsError> {
        Ok(EntityTypeSettings {
            name: self.name.clone(),
            write_handler: self.write_handler()?,
            snapshots: self.snapshots()?,
            validation: self.proto_validation()?,
            propagated_headers: self.header_list("write_side_propagated_headers")?,
            persisted_headers: self.header_list("write_persisted_headers")?,
        })
    }

    fn write_handler(&self) -> Result<WriteHandlerSettings, SettingsError> {
        let protocol = self.value("write_side_protocol", "grpc")?;
        match protocol.trimmed().to_ascii_lowercase().as_str() {
            "grpc" => {}
            "http" => {
                return Err(protocol.invalid(
                    "the HTTP write handler is not available in this build yet; use grpc",
                ));
            }
            _ => {
                return Err(
                    protocol.invalid("must be grpc (http is not available in this build yet)")
                );
            }
        }

        let host = match self.value_opt("write_side_host")? {
            Some(raw) if !raw.trimmed().is_empty() => raw.trimmed().to_string(),
            Some(raw) => {
                return Err(missing(
                    raw.label,
                    "the write handler's host name or address is required",
                ));
            }
            None => {
                let label = self.default_label("write_side_host");
                return Err(missing(
                    label,
                    "the write handler's host name or address is required",
                ));
            }
        };

        // The original's default port is -1, meaning "not set".
        let port = match self.value_opt("write_side_port")? {
            Some(raw) if raw.trimmed() != "-1" && !raw.trimmed().is_empty() => {
                raw.integer_in::<u16>(1..=65535, "must be an integer between 1 and 65535")?
            }
            Some(raw) => return Err(missing(raw.label, "the write handler's port is required")),
            None => {
                let label = self.default_label("write_side_port");
                return Err(missing(label, "the write handler's port is required"));
            }
        };

        let use_tls = self.value("write_side_use_tls", "false")?.boolean()?;
        let call_timeout_millis = self
            .value("grpc_calls_timeout", "60000")?
            .integer_in::<u64>(
                1..=i64::MAX,
                "must be a positive whole number of milliseconds",
            )?;
        Ok(WriteHandlerSettings {
            host,
            port,
            use_tls,
            call_timeout: Duration::from_millis(call_timeout_millis),
        })
    }

    /// Ranges are only enforced when snapshots are on (as in the original); values must still be integers.
    fn snapshots(&self) -> Result<SnapshotSettings, SettingsError> {
        let disabled = self.value("disable_snapshot", "false")?.boolean()?;
        let enabled = !disabled;
        let frequency_raw = self.value("snapshot_frequency", "100")?;
        let retain_raw = self.value("num_snapshots_to_retain", "2")?;
        let delete_events = self.value("journal_logical_deletion", "false")?.boolean()?;

        let (frequency, retain) = if enabled {
            let frequency = frequency_raw.integer_in::<u32>(
                1..=i64::from(u32::MAX),
                "must be a positive integer when snapshots are enabled",
            )?;
            let retain = retain_raw.integer_in::<u32>(
                1..=100,
                "must be an integer between 1 and 100 when snapshots are enabled",
            )?;
            (frequency, retain)
        } else {
            let frequency: i64 =
                frequency_raw.integer_in(i64::MIN..=i64::MAX, "must be an integer")?;
            let retain: i64 = retain_raw.integer_in(i64::MIN..=i64::MAX, "must be an integer")?;
            // Unused while disabled, but keep them usable so no reader can divide by zero.
            let frequency = u32::try_from(frequency)
                .ok()
                .filter(|value| *value > 0)
                .unwrap_or(DEFAULT_SNAPSHOT_FREQUENCY);
            let retain = u32::try_from(retain)
                .ok()
                .filter(|value| (1..=100).contains(value))
                .unwrap_or(DEFAULT_SNAPSHOTS_RETAINED);
            (frequency, retain)
        };
        Ok(SnapshotSettings {
            enabled,
            frequency,
            retain,
            delete_events,
        })
    }

    fn proto_validation(&self) -> Result<ProtoValidation, SettingsError> {
        let enabled = self
            .value("write_side_proto_validation", "false")?
            .boolean()?;
        let event_types = self.value("write_side_event_protos", "")?;
        let state_types = self.value("write_side_state_protos", "")?;
        Ok(ProtoValidation {
            enabled,
            event_types: parse_header_list(&event_types.text).into_iter().collect(),
            state_types: parse_header_list(&state_types.text).into_iter().collect(),
        })
    }

    /// A CSV of header names, each of which must be usable as a gRPC metadata key.
    fn header_list(&self, key: &str) -> Result<Vec<String>, SettingsError> {
        let raw = self.value(key, "")?;
        let names = parse_header_list(&raw.text);
        for name in &names {
            if !is_valid_header_name(name) {
                return Err(raw.invalid(format!("{name:?} is not a valid header name")));
            }
        }
        Ok(names)
    }
}

fn missing(name: String, reason: &str) -> SettingsError {
    SettingsError::Missing {
        name,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests;
