//! Read sides from a YAML file or folder (`COS_READ_SIDE_CONFIG`): every document is one read side, in the
//! original's camelCase keys. Errors name the file and document until the id is known, then the read side.

use std::fs;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use super::config::{RawEntityTypes, RawReadSide, RawSetting};
use super::values::is_valid_id;
use super::{Located, ReadSideConfigError};

/// The keys a document may use. Other keys are ignored, as in the original, unless they look like a
/// misspelling of one of these (see [`near_miss`]).
const KEYS: [&str; 10] = [
    "readSideId",
    "protocol",
    "host",
    "port",
    "useTls",
    "timeout",
    "autoStart",
    "enabled",
    "failurePolicy",
    "entityTypes",
];

/// Reads a file, or every file under a folder (recursively, sorted by path so the result and the first
/// error do not depend on the file system's order).
pub(super) fn load_path(path: &Path) -> Result<Vec<Located>, ReadSideConfigError> {
    let file_error = |reason: String| ReadSideConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(file_error("path does not exist".to_string()));
        }
        Err(error) => return Err(file_error(error.to_string())),
    };
    let mut files = Vec::new();
    if metadata.is_dir() {
        collect_files(path, &mut files)?;
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut located = Vec::new();
    for file in files {
        located.extend(load_file(&file)?);
    }
    Ok(located)
}

/// Regular files under `folder`, following symbolic links to files but not to folders (no cycles). Hidden
/// entries are skipped: a Kubernetes ConfigMap mount holds every file three times (`x.yaml`,
/// `..data/x.yaml`, `..2024_…/x.yaml`), which would otherwise be duplicate read sides.
fn collect_files(folder: &Path, files: &mut Vec<PathBuf>) -> Result<(), ReadSideConfigError> {
    let folder_error = |error: std::io::Error| ReadSideConfigError::File {
        path: folder.to_path_buf(),
        reason: error.to_string(),
    };
    for entry in fs::read_dir(folder).map_err(folder_error)? {
        let entry = entry.map_err(folder_error)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let entry_path = entry.path();
        let file_type = entry.file_type().map_err(folder_error)?;
        if file_type.is_dir() {
            collect_files(&entry_path, files)?;
        } else if file_type.is_file() || (file_type.is_symlink() && entry_path.is_file()) {
            files.push(entry_path);
        }
    }
    Ok(())
}

/// Every non-empty document of one file.
fn load_file(path: &Path) -> Result<Vec<Located>, ReadSideConfigError> {
    let file_error = |reason: String| ReadSideConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = fs::read_to_string(path).map_err(|error| file_error(error.to_string()))?;
    let documents = YamlLoader::load_from_str(&text)
        .map_err(|error| file_error(format!("not valid YAML: {error}")))?;
    let mut located = Vec::new();
    for (index, document) in documents.iter().enumerate() {
        if matches!(document, Yaml::Null) {
            continue;
        }
        let number = index + 1;
        let raw = read_document(path, number, document)?;
        let config = raw.build("host", "port")?;
        located.push(Located {
            config,
            origin: format!("read side config file {path:?}, document {number}"),
        });
    }
    Ok(located)
}

/// One document as a read side with a valid id and its other settings as text.
fn read_document(
    path: &Path,
    number: usize,
    document: &Yaml,
) -> Result<RawReadSide, ReadSideConfigError> {
    let document_error = |problem: String| ReadSideConfigError::Document {
        path: path.to_path_buf(),
        document: number,
        problem,
    };
    let Yaml::Hash(mapping) = document else {
        return Err(document_error(
            "must be a mapping of read side settings".to_string(),
        ));
    };
    for key in mapping.keys().filter_map(Yaml::as_str) {
        if let Some(known) = near_miss(key) {
            return Err(document_error(format!(
                "unknown key {key:?}, did you mean {known}?"
            )));
        }
    }
    let value = |key: &str| mapping.get(&Yaml::String(key.to_string()));
    let id = match value("readSideId").map(scalar_text) {
        None | Some(Ok(None)) => return Err(document_error("missing readSideId".to_string())),
        Some(Err(shape)) => {
            return Err(document_error(format!(
                "readSideId must be text, not {shape}"
            )));
        }
        Some(Ok(Some(id))) => id.trim().to_string(),
    };
    if id.is_empty() {
        return Err(document_error("missing readSideId".to_string()));
    }
    if !is_valid_id(&id) {
        return Err(ReadSideConfigError::InvalidId {
            id,
            origin: format!("read side config file {path:?}, document {number}"),
        });
    }
    let setting = |key: &str| -> Result<Option<RawSetting>, ReadSideConfigError> {
        match value(key).map(scalar_text) {
            None | Some(Ok(None)) => Ok(None),
            Some(Ok(Some(text))) => Ok(Some(RawSetting::new(key, text))),
            Some(Err(shape)) => Err(ReadSideConfigError::Invalid {
                read_side: id.clone(),
                setting: key.to_string(),
                value: shape.to_string(),
                rule: "must be a single value".to_string(),
            }),
        }
    };
    Ok(RawReadSide {
        protocol: setting("protocol")?,
        host: setting("host")?,
        port: setting("port")?,
        use_tls: setting("useTls")?,
        timeout: setting("timeout")?,
        auto_start: setting("autoStart")?,
        enabled: setting("enabled")?,
        failure_policy: setting("failurePolicy")?,
        entity_types: entity_types(&id, value("entityTypes"))?,
        id,
    })
}

/// `entityTypes` as a list of names or comma-separated text; absent, null or blank text mean all types.
fn entity_types(
    id: &str,
    value: Option<&Yaml>,
) -> Result<Option<RawEntityTypes>, ReadSideConfigError> {
    let invalid = |shown: String| ReadSideConfigError::Invalid {
        read_side: id.to_string(),
        setting: "entityTypes".to_string(),
        value: shown,
        rule: "must be a list of entity type names".to_string(),
    };
    let Some(value) = value else {
        return Ok(None);
    };
    if let Yaml::Array(items) = value {
        let mut names = Vec::with_capacity(items.len());
        for item in items {
            match scalar_text(item) {
                Ok(Some(name)) => names.push(name),
                Ok(None) => names.push(String::new()),
                Err(shape) => return Err(invalid(format!("a list containing {shape}"))),
            }
        }
        return Ok(Some(RawEntityTypes {
            name: "entityTypes".to_string(),
            shown: names.join(","),
            items: names,
        }));
    }
    match scalar_text(value) {
        Ok(None) => Ok(None),
        Ok(Some(text)) if text.trim().is_empty() => Ok(None),
        Ok(Some(text)) => Ok(Some(RawEntityTypes::from_csv("entityTypes", &text))),
        Err(shape) => Err(invalid(shape.to_string())),
    }
}

/// A scalar as text (`None` for null), or the shape of a non-scalar for the error message.
fn scalar_text(value: &Yaml) -> Result<Option<String>, &'static str> {
    match value {
        Yaml::String(text) | Yaml::Real(text) => Ok(Some(text.clone())),
        Yaml::Integer(number) => Ok(Some(number.to_string())),
        Yaml::Boolean(flag) => Ok(Some(flag.to_string())),
        Yaml::Null => Ok(None),
        Yaml::Array(_) => Err("a list"),
        Yaml::Hash(_) => Err("a mapping"),
        Yaml::Alias(_) | Yaml::BadValue => Err("an alias"),
    }
}

/// The known key `key` almost spells (same letters ignoring case, `_` and `-`, e.g. `autostart`,
/// `read_side_id`): silently ignoring those would drop a setting the user meant to give.
fn near_miss(key: &str) -> Option<&'static str> {
    let normalise = |text: &str| -> String {
        text.chars()
            .filter(|character| *character != '_' && *character != '-')
            .map(|character| character.to_ascii_lowercase())
            .collect()
    };
    let normalised = normalise(key);
    KEYS.iter()
        .find(|known| **known != key && normalise(known) == normalised)
        .copied()
}

#[cfg(test)]
#[path = "yaml_tests.rs"]
mod tests;
