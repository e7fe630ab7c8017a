//! Reading a topology from a file or a string, and writing one back.
//!
//! The layers are the TOML text, then (for [`Topology::load`] only) the
//! `MERIDIAN_*` environment variables described in the `env` module, then
//! [`Topology::validate`]. There is no defaults layer: a topology has no
//! sensible default regions, and the fields that do have defaults (`flush`,
//! `links`, `topics`, `consume_from`, the link emulation fields, most of
//! `drill`) get them from serde.
//!
//! Figment's errors are turned into [`TopologyError::Parse`] here, in one
//! place, so that an unknown key reads `key regions.eu-west.sitee: unknown
//! key; allowed keys: …` and names the file and, when it came from one, the
//! environment variable. A drill step that does not fit its action (see the
//! `drill` module) reaches figment as one message about the whole step; it
//! is converted again here to name the exact key, `drill.steps[1].role`.

use crate::drill::{self, StepShapeError};
use crate::{Topology, TopologyError, env, error};
use figment::error::{Actual, Kind};
use figment::providers::{Format, Toml};
use figment::value::Value;
use figment::{Figment, Provider};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// Fields holding arrays: a numeric segment after one of them is an index.
const ARRAY_FIELDS: [&str; 8] = [
    "links",
    "between",
    "message_types",
    "replicate_to",
    "steps",
    "clients",
    "command",
    "link",
];
/// Fields holding socket addresses.
const ADDRESS_FIELDS: [&str; 4] = ["node", "admin", "replicator", "router"];

impl Topology {
    /// Reads the topology file at `path`, applies the `MERIDIAN_*` environment
    /// overrides, resolves relative `data_dir`s against the directory
    /// containing the file (made absolute, so the result does not depend on
    /// the current directory later) and validates the result.
    ///
    /// # Environment overrides
    ///
    /// After `MERIDIAN_`, a variable's name is a key path with `__` between
    /// the segments (`_` alone stays inside a segment: `DATA_DIR` is
    /// `data_dir`). Names are matched without case. In the segment after
    /// `REGIONS`, `_` stands for `-` (region names never contain `_`); the
    /// segment after `TOPICS` finds the file's topic with that name ignoring
    /// case and `_`/`-`, if exactly one matches.
    ///
    /// ```text
    /// MERIDIAN_REGIONS__EU_WEST__FLUSH=async      regions.eu-west.flush = "async"
    /// MERIDIAN_TOPICS__ORDER_EVENTS__QUEUES=16    topics.order-events.queues = 16
    /// MERIDIAN_LINKS='[{between=["a","b"],latency_ms=5}]'   replaces every link
    /// ```
    ///
    /// Only names containing `__` (or exactly `MERIDIAN_REGIONS`,
    /// `MERIDIAN_LINKS`, `MERIDIAN_TOPICS`, `MERIDIAN_DRILL`) are overrides; other `MERIDIAN_*`
    /// variables such as `MERIDIAN_LOG` are ignored here. An override of an
    /// unknown key is refused like one in the file, naming the variable.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|cause| TopologyError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        parse(&text, path, absolute.parent(), Layers::FileAndEnvironment)
    }

    /// Parses and validates a topology from TOML text, without the
    /// environment layer (so the result depends on `text` alone).
    ///
    /// `origin` names the text in error messages, and relative `data_dir`s
    /// are resolved against `origin.parent()` as given (a relative origin
    /// gives relative data directories).
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Topology, TopologyError> {
        parse(text, origin, origin.parent(), Layers::FileOnly)
    }

    /// The topology as TOML that [`Topology::from_toml_str`] and
    /// [`Topology::load`] read back to an equal value (for the data
    /// directories: when they are absolute).
    ///
    /// TOML strings are UTF-8: a `data_dir` that is not is written lossily
    /// ([`Topology::validate`] refuses such directories). TOML integers are
    /// signed: a `u64` above `i64::MAX` is written as `i64::MAX` (validation
    /// refuses those too). A drill's `expect.max_lost = None` cannot be
    /// written at all (TOML has no null) and reads back as `Some(0)`.
    pub fn to_toml_string(&self) -> String {
        let utf8 = self
            .regions
            .values()
            .all(|region| region.data_dir.to_str().is_some());
        let topology = if utf8 {
            Cow::Borrowed(self)
        } else {
            let mut lossy = self.clone();
            for region in lossy.regions.values_mut() {
                region.data_dir = PathBuf::from(region.data_dir.to_string_lossy().into_owned());
            }
            Cow::Owned(lossy)
        };
        // Serialization fails only for non-UTF-8 paths, integers beyond i64,
        // `None`s or non-string map keys; the model has none of those left
        // (`u64`s are written saturated, `None`s skipped).
        toml::to_string(topology.as_ref())
            .expect("a topology with UTF-8 paths always serializes to TOML")
    }

    /// Makes every relative, non-empty `data_dir` (and the access keys
    /// file) relative to `base` instead.
    fn resolve_data_dirs(&mut self, base: &Path) {
        for region in self.regions.values_mut() {
            let dir = &region.data_dir;
            if dir.is_relative() && !dir.as_os_str().is_empty() {
                region.data_dir = base.join(dir);
            }
        }
        if let Some(access) = self.access.as_mut()
            && access.keys_file.is_relative()
            && !access.keys_file.as_os_str().is_empty()
        {
            access.keys_file = base.join(&access.keys_file);
        }
        for tls in [self.replication_tls.as_mut(), self.client_tls.as_mut()]
            .into_iter()
            .flatten()
        {
            for path in [&mut tls.ca, &mut tls.cert, &mut tls.key] {
                if path.is_relative() && !path.as_os_str().is_empty() {
                    *path = base.join(&*path);
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layers {
    FileOnly,
    FileAndEnvironment,
}

fn parse(
    text: &str,
    origin: &Path,
    base_dir: Option<&Path>,
    layers: Layers,
) -> Result<Topology, TopologyError> {
    let file_topics = topic_names(text);
    let mut figment = Figment::from(Toml::string(text));
    let mut env_source = None;
    if layers == Layers::FileAndEnvironment {
        let provider = env::provider(file_topics.clone());
        env_source = Some(provider.metadata().name.into_owned());
        figment = figment.merge(provider);
    }
    let mut topology: Topology = figment.extract().map_err(|error| {
        let from_env = error
            .metadata
            .as_ref()
            .is_some_and(|metadata| env_source.as_deref() == Some(metadata.name.as_ref()));
        parse_error(error, &figment, origin, from_env, &file_topics)
    })?;
    if let Some(base) = base_dir {
        topology.resolve_data_dirs(base);
    }
    topology.validate().map_err(|error| error.in_file(origin))?;
    Ok(topology)
}

/// The topic names the text defines, for matching environment variables;
/// empty when the text does not parse (figment then reports why).
fn topic_names(text: &str) -> Vec<String> {
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return Vec::new();
    };
    match table.get("topics") {
        Some(toml::Value::Table(topics)) => topics.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn parse_error(
    error: figment::Error,
    figment: &Figment,
    origin: &Path,
    from_env: bool,
    file_topics: &[String],
) -> TopologyError {
    let mut segments = error.path.clone();
    // A drill step that does not fit its action: name the field it is about.
    if let Kind::Message(_) = &error.kind
        && let Some(shape) = drill_step_shape(figment, &segments)
    {
        if let Some(field) = shape.field {
            segments.push(field.to_owned());
        }
        return TopologyError::Parse {
            path: origin.to_path_buf(),
            key: Some(render_key(&segments)),
            value: shape.value,
            variable: variable_for(from_env, &segments, file_topics),
            message: shape.message,
        };
    }
    // Figment's path ends at the struct for some kinds and at the field for others.
    let mut push_field = |field: &str| {
        if segments.last().map(String::as_str) != Some(field) {
            segments.push(field.to_owned());
        }
    };
    let (value, message) = match &error.kind {
        Kind::UnknownField(field, allowed) => {
            push_field(field);
            (
                None,
                format!("unknown key; allowed keys: {}", allowed.join(", ")),
            )
        }
        Kind::MissingField(field) => {
            push_field(field);
            (None, "required key is missing".to_owned())
        }
        Kind::DuplicateField(field) => {
            push_field(field);
            (None, "key is set twice".to_owned())
        }
        Kind::UnknownVariant(found, allowed) => (
            Some(error::quoted(found)),
            format!("allowed values: {}", allowed.join(", ")),
        ),
        Kind::InvalidType(found, expected) | Kind::InvalidValue(found, expected) => (
            Some(actual(found)),
            format!("expected {}", expected_type(expected)),
        ),
        Kind::InvalidLength(length, expected) => {
            let plural = if *length == 1 { "" } else { "s" };
            (
                Some(format!("{length} element{plural}")),
                format!("expected {expected}"),
            )
        }
        Kind::Message(message)
            if segments
                .last()
                .is_some_and(|field| ADDRESS_FIELDS.contains(&field.as_str())) =>
        {
            (
                None,
                format!(
                    "{message}; expected an IP address and port such as \"127.0.0.1:8082\" \
                     or \"[::1]:8082\" (host names are not resolved)"
                ),
            )
        }
        other => (None, other.to_string()),
    };
    let key = (!segments.is_empty()).then(|| render_key(&segments));
    let value = value.or_else(|| scalar_at(figment, &segments));
    let variable = variable_for(from_env, &segments, file_topics);
    TopologyError::Parse {
        path: origin.to_path_buf(),
        key,
        value,
        variable,
        message,
    }
}

fn variable_for(from_env: bool, segments: &[String], file_topics: &[String]) -> Option<String> {
    if from_env {
        env::variable_setting(segments, file_topics)
    } else {
        None
    }
}

/// When `segments` is `drill.steps.N`, why that step does not fit its
/// action (the error figment reported came from that conversion).
fn drill_step_shape(figment: &Figment, segments: &[String]) -> Option<StepShapeError> {
    let [drill, steps, _] = segments else {
        return None;
    };
    if drill != "drill" || steps != "steps" {
        return None;
    }
    drill::step_shape_error(&value_at(figment, segments)?)
}

/// A value the parser found, spelled as in TOML.
fn actual(found: &Actual) -> String {
    match found {
        Actual::Bool(value) => value.to_string(),
        Actual::Unsigned(value) => value.to_string(),
        Actual::Signed(value) => value.to_string(),
        Actual::Float(value) => value.to_string(),
        Actual::Char(value) => error::quoted(&value.to_string()),
        Actual::Str(value) => error::quoted(value),
        Actual::Seq => "an array".to_owned(),
        Actual::Map => "a table".to_owned(),
        other => other.to_string(),
    }
}

/// Serde's names for integer types, in words.
fn expected_type(expected: &str) -> Cow<'_, str> {
    match expected {
        "u8" => format!("an integer from 0 to {}", u8::MAX).into(),
        "u16" => format!("an integer from 0 to {}", u16::MAX).into(),
        "u32" => format!("an integer from 0 to {}", u32::MAX).into(),
        "u64" => format!("an integer from 0 to {}", u64::MAX).into(),
        other => other.into(),
    }
}

/// The value at `segments`, through tables and arrays.
fn value_at(figment: &Figment, segments: &[String]) -> Option<Value> {
    let (first, rest) = segments.split_first()?;
    if first.contains('.') {
        return None;
    }
    let mut value = figment.find_value(first).ok()?;
    for segment in rest {
        value = match value {
            Value::Dict(_, mut table) => table.remove(segment)?,
            Value::Array(_, mut items) => {
                let index: usize = segment.parse().ok()?;
                if index >= items.len() {
                    return None;
                }
                items.swap_remove(index)
            }
            _ => return None,
        };
    }
    Some(value)
}

/// The scalar value at `segments`, spelled as in TOML, if there is one.
fn scalar_at(figment: &Figment, segments: &[String]) -> Option<String> {
    match value_at(figment, segments)? {
        Value::String(_, text) => Some(error::quoted(&text)),
        Value::Char(_, char) => Some(error::quoted(&char.to_string())),
        Value::Bool(_, bool) => Some(bool.to_string()),
        Value::Num(_, number) => number
            .to_u128()
            .map(|n| n.to_string())
            .or_else(|| number.to_i128().map(|n| n.to_string()))
            .or_else(|| number.to_f64().map(crate::validate::float_value)),
        Value::Empty(..) | Value::Dict(..) | Value::Array(..) => None,
    }
}

/// `["links", "0", "between", "1"]` → `links[0].between[1]`.
pub(crate) fn render_key(segments: &[String]) -> String {
    let mut key = String::new();
    let mut previous: Option<&str> = None;
    for segment in segments {
        let index = previous.is_some_and(|field| ARRAY_FIELDS.contains(&field))
            && !segment.is_empty()
            && segment.bytes().all(|byte| byte.is_ascii_digit());
        if index {
            key.push('[');
            key.push_str(segment);
            key.push(']');
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(&error::key_segment(segment));
        }
        previous = Some(segment);
    }
    key
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
