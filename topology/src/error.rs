//! The crate's one error type, and how keys and values are spelled in it.
//!
//! Every message names the file (when known), the key as it would be written
//! in TOML (`topics.demo.queues`, `links[2].between[0]`), the offending value
//! and what is allowed, so that an operator can fix the file without reading
//! this code. Validation does not know which file a [`Topology`](crate::Topology)
//! came from; [`Topology::load`](crate::Topology::load) and
//! [`Topology::from_toml_str`](crate::Topology::from_toml_str) attach the path
//! afterwards with [`TopologyError::in_file`].

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Why a topology could not be read, parsed, validated or looked up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// The topology file could not be read (missing, unreadable, not UTF-8).
    // The message carries the cause itself (callers print errors with
    // `Display` alone), so it is not also a `source`: chain printers such as
    // anyhow's `{:#}` would repeat it.
    /// The access keys file (`[access] keys_file`) cannot be read or is
    /// invalid; `detail` names the entry and what is wrong, never a secret.
    #[error("invalid access keys file {path}: {detail}")]
    AccessKeys { path: PathBuf, detail: String },

    #[error("failed to read topology file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// The file is not valid TOML, or a key or value does not fit the model:
    /// an unknown or missing key, a value of the wrong type, an unknown variant.
    #[error(
        "failed to parse topology {path}: {}{message}",
        parse_location(.key.as_deref(), .value.as_deref(), .variable.as_deref())
    )]
    Parse {
        path: PathBuf,
        /// The key path, e.g. `regions.eu-west.sitee`; `None` for TOML syntax errors.
        key: Option<String>,
        /// The offending value, when the parser reported it.
        value: Option<String>,
        /// The `MERIDIAN_*` environment variable the key came from, if any.
        variable: Option<String>,
        /// What went wrong and what is allowed.
        message: String,
    },

    /// A value parsed but breaks a rule of [`Topology::validate`](crate::Topology::validate).
    #[error("invalid topology{}: key {key} = {value}: {allowed}", in_path(.path.as_deref()))]
    Invalid {
        /// The topology file, when the topology came from one.
        path: Option<PathBuf>,
        /// The key path, e.g. `topics.demo.queues`.
        key: String,
        /// The offending value, spelled as in TOML (strings quoted).
        value: String,
        /// What the value must be instead.
        allowed: String,
    },

    /// A region name that the topology does not define, either looked up by
    /// [`Topology::region`](crate::Topology::region) (`key` is `None`) or
    /// referenced from the file (`key` names where).
    #[error("{}", unknown_region(.path.as_deref(), .key.as_deref(), .name, .known))]
    UnknownRegion {
        path: Option<PathBuf>,
        key: Option<String>,
        name: String,
        /// The regions the topology does define, sorted.
        known: Vec<String>,
    },
}

impl TopologyError {
    /// Attaches the topology file to a validation error that does not name one
    /// yet; other errors are returned unchanged.
    #[must_use]
    pub fn in_file(mut self, file: &Path) -> Self {
        match &mut self {
            TopologyError::Invalid { path, .. } | TopologyError::UnknownRegion { path, .. } => {
                if path.is_none() {
                    *path = Some(file.to_path_buf());
                }
            }
            TopologyError::Read { .. }
            | TopologyError::Parse { .. }
            | TopologyError::AccessKeys { .. } => {}
        }
        self
    }

    /// The key path the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            TopologyError::Read { .. } | TopologyError::AccessKeys { .. } => None,
            TopologyError::Parse { key, .. } | TopologyError::UnknownRegion { key, .. } => {
                key.as_deref()
            }
            TopologyError::Invalid { key, .. } => Some(key),
        }
    }

    /// A validation error not yet tied to a file.
    pub(crate) fn invalid(
        key: impl Into<String>,
        value: impl Into<String>,
        allowed: impl Into<String>,
    ) -> Self {
        TopologyError::Invalid {
            path: None,
            key: key.into(),
            value: value.into(),
            allowed: allowed.into(),
        }
    }

    /// A reference to an undefined region at `key`, not yet tied to a file.
    pub(crate) fn unknown_region_at(
        key: impl Into<String>,
        name: &str,
        known: Vec<String>,
    ) -> Self {
        TopologyError::UnknownRegion {
            path: None,
            key: Some(key.into()),
            name: name.to_owned(),
            known,
        }
    }
}

fn in_path(path: Option<&Path>) -> String {
    path.map(|path| format!(" {}", path.display()))
        .unwrap_or_default()
}

fn parse_location(key: Option<&str>, value: Option<&str>, variable: Option<&str>) -> String {
    let Some(key) = key else {
        return String::new();
    };
    let mut location = format!("key {key}");
    if let Some(value) = value {
        let _ = write!(location, " = {value}");
    }
    if let Some(variable) = variable {
        let _ = write!(location, " (from environment variable {variable})");
    }
    location.push_str(": ");
    location
}

fn unknown_region(path: Option<&Path>, key: Option<&str>, name: &str, known: &[String]) -> String {
    let known = if known.is_empty() {
        "none".to_owned()
    } else {
        known.join(", ")
    };
    match key {
        Some(key) => format!(
            "invalid topology{}: key {key} = {}: unknown region; known regions: {known}",
            in_path(path),
            quoted(name)
        ),
        None => format!("unknown region {}; known regions: {known}", quoted(name)),
    }
}

/// A string value as TOML would spell it: in double quotes, escaped.
pub(crate) fn quoted(value: &str) -> String {
    format!("{value:?}")
}

/// One segment of a key path: bare when TOML allows it, quoted otherwise
/// (topic names may contain `%` and `|`).
pub(crate) fn key_segment(segment: &str) -> Cow<'_, str> {
    let bare = !segment.is_empty()
        && segment
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if bare {
        Cow::Borrowed(segment)
    } else {
        Cow::Owned(quoted(segment))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_file_key_value_and_rule() {
        let error = TopologyError::invalid("topics.demo.queues", "0", "must be between 1 and 1024")
            .in_file(Path::new("/x/t.toml"));
        assert_eq!(
            error.to_string(),
            "invalid topology /x/t.toml: key topics.demo.queues = 0: must be between 1 and 1024"
        );
    }

    #[test]
    fn invalid_without_file() {
        let error = TopologyError::invalid("regions", "{}", "at least one region is required");
        assert_eq!(
            error.to_string(),
            "invalid topology: key regions = {}: at least one region is required"
        );
    }

    #[test]
    fn unknown_region_lookup_lists_known_regions() {
        let error = TopologyError::UnknownRegion {
            path: None,
            key: None,
            name: "mars".to_owned(),
            known: vec!["eu-west".to_owned(), "us-east".to_owned()],
        };
        assert_eq!(
            error.to_string(),
            "unknown region \"mars\"; known regions: eu-west, us-east"
        );
    }

    #[test]
    fn key_segments_are_quoted_when_toml_needs_it() {
        assert_eq!(key_segment("eu-west"), "eu-west");
        assert_eq!(key_segment("%RETRY%group"), "\"%RETRY%group\"");
        assert_eq!(key_segment(""), "\"\"");
    }
}
