//! The access keys file that `[access] keys_file` names: each key's id,
//! its secret, and what it may do.
//!
//! ```toml
//! [[keys]]
//! id = "LTAI-orders"             # the AccessKey id clients send
//! secret_env = "ORDERS_SECRET"   # the environment variable holding its secret
//! allow = [
//!   { actions = ["pub"], topics = ["orders", "orders-*"] },
//!   { actions = ["sub"], topics = ["orders"], groups = ["billing", "audit-*"] },
//! ]
//!
//! [[keys]]
//! id = "ops"
//! secret = "…"                   # or the secret itself, in this file
//! allow = [{ actions = ["admin", "pub", "sub"], topics = ["*"], groups = ["*"] }]
//! ```
//!
//! The topology's `[access] internal_key` names the key (granted `admin`)
//! that the deployment's own processes sign admin-port calls with.
//!
//! A key may do only what one of its `allow` grants names: `pub` (send, end
//! transactions, take transaction check-backs) on topics matching `topics`;
//! `sub` (receive, acknowledge, change invisible time, dead-letter) on
//! topics matching `topics` as a consumer group matching `groups`; `admin`,
//! the node's admin API (`meridian admin`) whole, with no `topics` or
//! `groups`. Patterns are globs (`*`, `?`, `[a-z]`, `{a,b}`) over the whole
//! name, a namespaced one (`INSTANCE%topic`) included. A key without `allow`
//! may do nothing.
//!
//! Secrets never live in the topology itself; the file can be kept
//! readable by the service's user alone. An environment variable must not be
//! named `MERIDIAN_*`: those override topology keys.

use crate::{Access, TopologyError};
use globset::{Glob, GlobSet, GlobSetBuilder};
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
    #[serde(default)]
    allow: Vec<GrantEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantEntry {
    actions: Vec<String>,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

/// What a grant lets a key do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Send to a topic, end its transactions, take its check-backs.
    Pub,
    /// Consume a topic as a consumer group.
    Sub,
    /// The node's admin API.
    Admin,
}

impl Action {
    /// The name the keys file uses.
    pub fn name(self) -> &'static str {
        match self {
            Action::Pub => "pub",
            Action::Sub => "sub",
            Action::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Name patterns (globs over the whole name).
#[derive(Debug, Clone)]
pub struct Patterns {
    sources: Vec<String>,
    set: GlobSet,
}

impl Patterns {
    fn new(sources: Vec<String>) -> Result<Self, String> {
        let mut builder = GlobSetBuilder::new();
        for source in &sources {
            let glob =
                Glob::new(source).map_err(|error| format!("{source:?}: {}", error.kind()))?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|error| error.to_string())?;
        Ok(Patterns { sources, set })
    }

    /// Whether `name` matches one of the patterns.
    pub fn matches(&self, name: &str) -> bool {
        self.set.is_match(name)
    }

    /// The patterns as written.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }
}

/// One `allow` entry: actions on topics and consumer groups.
#[derive(Debug, Clone)]
pub struct Grant {
    pub actions: BTreeSet<Action>,
    pub topics: Patterns,
    pub groups: Patterns,
}

/// One access key of the keys file.
#[derive(Clone)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
    pub grants: Vec<Grant>,
}

impl AccessKey {
    /// A key granted everything: `pub` and `sub` on every topic and group,
    /// and `admin` (what a keys file says with
    /// `allow = [{ actions = ["pub", "sub", "admin"], topics = ["*"], groups = ["*"] }]`).
    pub fn granted_everything(id: impl Into<String>, secret: impl Into<String>) -> Self {
        let everything = || Patterns::new(vec!["*".to_owned()]).expect("`*` is a glob");
        AccessKey {
            id: id.into(),
            secret: secret.into(),
            grants: vec![Grant {
                actions: [Action::Pub, Action::Sub, Action::Admin].into(),
                topics: everything(),
                groups: everything(),
            }],
        }
    }
}

impl std::fmt::Debug for AccessKey {
    /// Never shows the secret.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AccessKey")
            .field("id", &self.id)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

/// Reads the access keys `access` names. Errors name the file, the entry
/// and what is wrong (never a secret).
pub fn load_access_keys(access: &Access) -> Result<Vec<AccessKey>, TopologyError> {
    let path = &access.keys_file;
    let invalid = |key: String, value: String, allowed: &str| TopologyError::AccessKeys {
        path: path.clone(),
        detail: format!("key {key} = {value}: {allowed}"),
    };
    let text = std::fs::read_to_string(path).map_err(|cause| TopologyError::AccessKeys {
        path: path.clone(),
        detail: format!("cannot read it: {cause}"),
    })?;
    let file: KeysFile = toml::from_str(&text).map_err(|error| TopologyError::AccessKeys {
        path: path.clone(),
        detail: error.message().to_owned(),
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
            || id.contains(|c: char| c.is_control() || c == ':' || c == ',' || c.is_whitespace())
        {
            return Err(invalid(
                at("id"),
                format!("{:?}", entry.id),
                "1 to 128 characters, no spaces, control characters, `:` or `,`",
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
                std::env::var(&variable).map_err(|error| {
                    let problem = match error {
                        std::env::VarError::NotPresent => "is not set",
                        std::env::VarError::NotUnicode(_) => "is not UTF-8",
                    };
                    TopologyError::AccessKeys {
                        path: path.clone(),
                        detail: format!(
                            "key {} = {variable:?}: the environment variable {variable} {problem}; \
                             set it to the secret of access key {id:?}",
                            at("secret_env")
                        ),
                    }
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
        let grants = entry
            .allow
            .into_iter()
            .enumerate()
            .map(|(grant_index, grant)| {
                grant_of(grant).map_err(|(field, value, allowed)| {
                    invalid(
                        at(&format!("allow[{grant_index}].{field}")),
                        value,
                        &allowed,
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        keys.push(AccessKey { id, secret, grants });
    }
    let internal = keys.iter().find(|key| key.id == access.internal_key);
    let granted_admin = internal.is_some_and(|key| {
        key.grants
            .iter()
            .any(|grant| grant.actions.contains(&Action::Admin))
    });
    if !granted_admin {
        return Err(TopologyError::Invalid {
            path: None,
            key: "access.internal_key".to_owned(),
            value: format!("{:?}", access.internal_key),
            allowed: format!(
                "the id of a key in {} granted `admin` (allow = [{{ actions = [\"admin\"] }}]): \
                 {}",
                path.display(),
                if internal.is_some() {
                    "that key has no `admin` grant"
                } else {
                    "no key has that id"
                }
            ),
        });
    }
    Ok(keys)
}

/// A grant, or (field, value, what is allowed).
fn grant_of(entry: GrantEntry) -> Result<Grant, (&'static str, String, String)> {
    let mut actions = BTreeSet::new();
    for action in &entry.actions {
        let parsed = match action.as_str() {
            "pub" => Action::Pub,
            "sub" => Action::Sub,
            "admin" => Action::Admin,
            _ => {
                return Err((
                    "actions",
                    format!("{action:?}"),
                    "`pub`, `sub` or `admin`".to_owned(),
                ));
            }
        };
        actions.insert(parsed);
    }
    if actions.is_empty() {
        return Err((
            "actions",
            "[]".to_owned(),
            "at least one of `pub`, `sub` and `admin`".to_owned(),
        ));
    }
    let on_names = actions.contains(&Action::Pub) || actions.contains(&Action::Sub);
    let names_given = !entry.topics.is_empty() || !entry.groups.is_empty();
    if !on_names && names_given {
        return Err((
            "topics",
            format!("{:?}", entry.topics),
            "nothing: `admin` grants the admin API whole; name topics and groups in \
             a `pub` or `sub` grant"
                .to_owned(),
        ));
    }
    if on_names && entry.topics.is_empty() {
        return Err((
            "topics",
            "[]".to_owned(),
            "at least one topic name or pattern (`*` for every topic)".to_owned(),
        ));
    }
    if actions.contains(&Action::Sub) && entry.groups.is_empty() {
        return Err((
            "groups",
            "[]".to_owned(),
            "at least one consumer group name or pattern for `sub` (`*` for every group)"
                .to_owned(),
        ));
    }
    if !actions.contains(&Action::Sub) && !entry.groups.is_empty() {
        return Err((
            "groups",
            format!("{:?}", entry.groups),
            "nothing unless the grant has `sub`: groups are what consumers use".to_owned(),
        ));
    }
    let patterns = |field: &'static str, sources: Vec<String>| {
        let shown = format!("{sources:?}");
        Patterns::new(sources).map_err(|reason| (field, shown, format!("glob patterns ({reason})")))
    };
    Ok(Grant {
        actions,
        topics: patterns("topics", entry.topics)?,
        groups: patterns("groups", entry.groups)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPS: &str =
        "\n[[keys]]\nid = \"ops\"\nsecret = \"o\"\nallow = [{ actions = [\"admin\"] }]\n";

    /// Loads `text` with `internal_key = "ops"`, and the key `ops` after
    /// `text`'s unless it is empty.
    fn load(text: &str) -> Result<Vec<AccessKey>, TopologyError> {
        let text = if text.is_empty() {
            String::new()
        } else {
            format!("{text}{OPS}")
        };
        load_as(&text, "ops")
    }

    fn load_as(text: &str, internal_key: &str) -> Result<Vec<AccessKey>, TopologyError> {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        load_access_keys(&Access {
            keys_file: file.path().to_owned(),
            internal_key: internal_key.to_owned(),
        })
    }

    #[test]
    fn the_internal_key_must_exist_and_be_granted_admin() {
        let text = format!("[[keys]]\nid = \"app\"\nsecret = \"s\"\n{OPS}");
        assert!(load_as(&text, "ops").is_ok());
        let error = load_as(&text, "nobody").expect_err("unknown").to_string();
        assert!(
            error.contains("access.internal_key") && error.contains("no key has that id"),
            "{error}"
        );
        let error = load_as(&text, "app").expect_err("not admin").to_string();
        assert!(error.contains("no `admin` grant"), "{error}");
    }

    #[test]
    fn keys_come_from_the_file_or_the_environment() {
        let keys = load(
            "[[keys]]\nid = \"ak\"\nsecret = \"s1\"\n\n[[keys]]\nid = \"env\"\nsecret_env = \"PATH\"\n",
        )
        .expect("load");
        assert_eq!((keys[0].id.as_str(), keys[0].secret.as_str()), ("ak", "s1"));
        assert_eq!(keys[1].id, "env");
        assert!(!keys[1].secret.is_empty());
        assert!(keys[0].grants.is_empty());
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
                "the environment variable NO_SUCH_VARIABLE_FOR_MERIDIAN is not set",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecrt = \"hidden\"\n",
                "unknown field",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecret = \"hidden\"\nallow = [{ actions = [\"publish\"], topics = [\"*\"] }]\n",
                "keys[0].allow[0].actions",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecret = \"hidden\"\nallow = [{ actions = [\"pub\"] }]\n",
                "at least one topic name",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecret = \"hidden\"\nallow = [{ actions = [\"sub\"], topics = [\"t\"] }]\n",
                "keys[0].allow[0].groups",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecret = \"hidden\"\nallow = [{ actions = [\"admin\"], topics = [\"t\"] }]\n",
                "admin API whole",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecret = \"hidden\"\nallow = [{ actions = [\"pub\"], topics = [\"t\"], groups = [\"g\"] }]\n",
                "unless the grant has `sub`",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecret = \"hidden\"\nallow = [{ actions = [\"pub\"], topics = [\"or[ders\"] }]\n",
                "glob patterns",
            ),
        ] {
            let error = load(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains("hidden"), "{text:?}: {error}");
        }
    }

    #[test]
    fn grants_match_names_by_glob() {
        let keys = load(
            "[[keys]]\nid = \"orders\"\nsecret = \"s\"\nallow = [\n  { actions = [\"pub\", \"sub\"], topics = [\"orders\", \"orders-*\"], groups = [\"{billing,audit}\"] },\n  { actions = [\"admin\"] },\n]\n",
        )
        .expect("load");
        let grants = &keys[0].grants;
        assert_eq!(grants.len(), 2);
        let first = &grants[0];
        assert!(first.actions.contains(&Action::Pub) && first.actions.contains(&Action::Sub));
        assert!(first.topics.matches("orders"));
        assert!(first.topics.matches("orders-eu"));
        assert!(!first.topics.matches("orders2"));
        assert!(!first.topics.matches("x-orders"));
        assert!(first.groups.matches("billing") && first.groups.matches("audit"));
        assert!(!first.groups.matches("billing2"));
        assert_eq!(
            grants[1].actions.iter().copied().collect::<Vec<_>>(),
            [Action::Admin]
        );
    }
}
