//! The access keys file that `[access] keys_file` names.
//!
//! ```toml
//! [[keys]]
//! id = "LTAI-orders"             # the AccessKey id clients send
//! secret_env = "ORDERS_SECRET"   # the environment variable holding its secret
//!
//! [[keys]]
//! id = "dev"
//! secret = "dev-secret"          # or the secret itself, in this file
//! ```
//!
//! Secrets never live in the topology itself; the file can be kept
//! readable by the service's user alone. An environment variable must not be
//! named `MERIDIAN_*`: those override topology keys.

use crate::{Access, TopologyError};
use serde::Deserialize;
use std::collections::BTreeSet;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_env: Option<String>,
}

/// Reads the access keys `access` names: (AccessKey id, secret) pairs.
/// Errors name the file, the entry and what is wrong (never a secret).
pub fn load_access_keys(access: &Access) -> Result<Vec<(String, String)>, TopologyError> {
    let path = &access.keys_file;
    let invalid = |key: String, value: String, allowed: &str| TopologyError::Invalid {
        path: Some(path.clone()),
        key,
        value,
        allowed: allowed.to_owned(),
    };
    let text = std::fs::read_to_string(path).map_err(|cause| TopologyError::Read {
        path: path.clone(),
        cause,
    })?;
    let file: KeysFile = toml::from_str(&text).map_err(|error| TopologyError::Parse {
        path: path.clone(),
        key: None,
        value: None,
        variable: None,
        message: error.message().to_owned(),
    })?;
    if file.keys.is_empty() {
        return Err(invalid(
            "keys".to_owned(),
            "[]".to_owned(),
            "at least one [[keys]] entry with `id` and `secret` or `secret_env` \
             (remove [access] from the topology for development mode)",
        ));
    }
    let mut seen = BTreeSet::new();
    let mut keys = Vec::with_capacity(file.keys.len());
    for (index, entry) in file.keys.into_iter().enumerate() {
        let at = |field: &str| format!("keys[{index}].{field}");
        let id = entry.id.trim().to_owned();
        if id.is_empty()
            || id.len() > 128
            || id.contains(|c: char| c.is_control() || c == ':' || c.is_whitespace())
        {
            return Err(invalid(
                at("id"),
                format!("{:?}", entry.id),
                "1 to 128 characters, no spaces, control characters or `:`",
            ));
        }
        if !seen.insert(id.clone()) {
            return Err(invalid(at("id"), format!("{id:?}"), "each key id once"));
        }
        let secret = match (entry.secret, entry.secret_env) {
            (Some(secret), None) => secret,
            (None, Some(variable)) => {
                if variable.starts_with("MERIDIAN_") {
                    return Err(invalid(
                        at("secret_env"),
                        format!("{variable:?}"),
                        "a variable not named MERIDIAN_* (those override topology keys)",
                    ));
                }
                std::env::var(&variable).map_err(|_| {
                    invalid(
                        at("secret_env"),
                        format!("{variable:?}"),
                        "an environment variable that is set (to the secret, UTF-8)",
                    )
                })?
            }
            _ => {
                return Err(invalid(
                    format!("keys[{index}]"),
                    format!("{{ id = {id:?} }}"),
                    "exactly one of `secret` and `secret_env`",
                ));
            }
        };
        if secret.is_empty() {
            return Err(invalid(
                at("secret"),
                "\"\"".to_owned(),
                "a non-empty secret",
            ));
        }
        keys.push((id, secret));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Vec<(String, String)>, TopologyError> {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        load_access_keys(&Access {
            keys_file: file.path().to_owned(),
        })
    }

    #[test]
    fn keys_come_from_the_file_or_the_environment() {
        let keys = load(
            "[[keys]]\nid = \"ak\"\nsecret = \"s1\"\n\n[[keys]]\nid = \"env\"\nsecret_env = \"PATH\"\n",
        )
        .expect("load");
        assert_eq!(keys[0], ("ak".to_owned(), "s1".to_owned()));
        assert_eq!(keys[1].0, "env");
        assert!(!keys[1].1.is_empty());
    }

    #[test]
    fn bad_files_are_refused_naming_the_entry_and_never_the_secret() {
        for (text, expected) in [
            ("", "at least one"),
            ("[[keys]]\nid = \"a\"\n", "exactly one of"),
            (
                "[[keys]]\nid = \"a:b\"\nsecret = \"hidden\"\n",
                "keys[0].id",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecret = \"hidden\"\n[[keys]]\nid = \"a\"\nsecret = \"hidden\"\n",
                "each key id once",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecret_env = \"MERIDIAN_X\"\n",
                "not named MERIDIAN_",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecret_env = \"NO_SUCH_VARIABLE_FOR_MERIDIAN\"\n",
                "is set",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecrt = \"hidden\"\n",
                "unknown field",
            ),
        ] {
            let error = load(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains("hidden"), "{text:?}: {error}");
        }
    }
}
