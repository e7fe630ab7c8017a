//! How the drill's load clients reach a secured deployment: the access key
//! they sign with when the topology has `[access]`, and TLS when it has
//! `[client_tls]`.
//!
//! The runner starts the deployment from the file's keys file, so it knows
//! every key and its secret: `meridian drill run --access-key ID` picks one
//! of them, and without it the runner uses the topology's `internal_key`
//! if that key is granted what the load does. What the load does, and so
//! what the key must be granted: `pub` on the load's topic (when it has
//! producers), `sub` on it as the load's group (when it has consumers) and
//! as `drill-observer-<region>` (the observers, always). A key without all
//! of it is refused before anything starts, naming what it lacks and the
//! keys of the file that would do.
//!
//! Official clients run as commands get the key and TLS through their
//! environment (never their command line): `DRILL_ACCESS_KEY` and
//! `DRILL_SECRET_KEY` with `[access]`; `DRILL_TLS=1` with `[client_tls]`,
//! and the CA's path in `SSL_CERT_FILE` (the Rust client's roots),
//! `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH` (Python's grpcio and Node.js's
//! grpc-js) and `NODE_EXTRA_CA_CERTS` (Node.js's own TLS). The key
//! variables are removed from what a client inherits when the topology
//! has no `[access]`, and `DRILL_TLS` when it has no `[client_tls]`.

use super::client::Transport;
use anyhow::Context as _;
use meridian_face::Caller;
use meridian_face::access::{AccessKeys, Authentication, Permission};
use meridian_face::tls::Dialer;
use meridian_topology::{ClientKind, DrillLoad, Topology};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The access key an official drill client signs with.
pub const ACCESS_KEY_VARIABLE: &str = "DRILL_ACCESS_KEY";
/// Its secret.
pub const SECRET_KEY_VARIABLE: &str = "DRILL_SECRET_KEY";
/// `1` when an official drill client must dial with TLS.
pub const TLS_VARIABLE: &str = "DRILL_TLS";
/// Where each official client's TLS stack reads the CA it trusts: the Rust
/// client (`rustls-native-certs`), grpcio and grpc-js, Node.js's own TLS.
pub const CA_VARIABLES: [&str; 3] = [
    "SSL_CERT_FILE",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
    "NODE_EXTRA_CA_CERTS",
];

/// How the load's clients reach the deployment.
#[derive(Debug, Clone)]
pub struct LoadAccess {
    /// The built-in producers, consumers and observers.
    pub transport: Transport,
    /// The official clients run as commands.
    pub environment: ClientEnvironment,
    /// The key signed with, if any.
    pub access_key: Option<String>,
}

impl LoadAccess {
    /// `, signing as access key K, over TLS` for the progress line.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        if let Some(access_key) = &self.access_key {
            text.push_str(&format!(", signing as access key {access_key}"));
        }
        if self.transport.is_tls() {
            text.push_str(", over TLS");
        }
        text
    }
}

/// What an official client run as a command gets in its environment.
#[derive(Clone, Default)]
pub struct ClientEnvironment {
    /// Access key id and secret.
    key: Option<(String, String)>,
    /// The CA to trust, an absolute path.
    ca: Option<PathBuf>,
}

impl std::fmt::Debug for ClientEnvironment {
    /// Names the key, never the secret.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClientEnvironment")
            .field("access_key", &self.key.as_ref().map(|(id, _)| id))
            .field("ca", &self.ca)
            .finish()
    }
}

impl ClientEnvironment {
    /// Sets (or removes) the variables on `command`.
    pub fn apply(&self, command: &mut tokio::process::Command) {
        match &self.key {
            Some((id, secret)) => {
                command
                    .env(ACCESS_KEY_VARIABLE, id)
                    .env(SECRET_KEY_VARIABLE, secret);
            }
            None => {
                command
                    .env_remove(ACCESS_KEY_VARIABLE)
                    .env_remove(SECRET_KEY_VARIABLE);
            }
        }
        match &self.ca {
            Some(ca) => {
                command.env(TLS_VARIABLE, "1");
                for variable in CA_VARIABLES {
                    command.env(variable, ca);
                }
            }
            None => {
                command.env_remove(TLS_VARIABLE);
            }
        }
    }
}

/// The key and TLS of the load of `topology`'s drill (from `file`), with
/// `access_key` as asked on the command line; an error says why no key
/// will do, before anything starts.
pub fn choose(
    file: &Path,
    topology: &Topology,
    load: &DrillLoad,
    observed_regions: &[String],
    access_key: Option<&str>,
) -> anyhow::Result<LoadAccess> {
    let dialer = Dialer::of_topology(topology)
        .with_context(|| format!("{}: [client_tls]", file.display()))?;
    let ca = match &topology.client_tls {
        Some(files) => Some(
            std::path::absolute(&files.ca)
                .with_context(|| format!("the path of {}", files.ca.display()))?,
        ),
        None => None,
    };
    let Some(access) = &topology.access else {
        if let Some(access_key) = access_key {
            anyhow::bail!(
                "--access-key {access_key}: {} has no [access] section, so its deployment \
                 takes clients without keys; leave --access-key out",
                file.display()
            );
        }
        return Ok(LoadAccess {
            transport: Transport::new(dialer, meridian_face::access::Signer::none()),
            environment: ClientEnvironment { key: None, ca },
            access_key: None,
        });
    };
    let keys = meridian_topology::load_access_keys(access)
        .with_context(|| format!("{}: [access]", file.display()))?;
    let ids: Vec<String> = keys.iter().map(|key| key.id.clone()).collect();
    let authentication = Authentication::Keys(Arc::new(
        AccessKeys::new(keys).with_internal_key(access.internal_key.clone()),
    ));
    let observers: Vec<String> = observed_regions
        .iter()
        .map(|region| observer_group(region))
        .collect();
    let needed = needed(load, &observers);
    let keys_file = access.keys_file.display();
    let chosen = match access_key {
        Some(access_key) => {
            anyhow::ensure!(
                ids.iter().any(|id| id == access_key),
                "--access-key {access_key}: {keys_file} has no such key"
            );
            let missing = missing(&authentication, access_key, &needed);
            anyhow::ensure!(
                missing.is_empty(),
                "--access-key {access_key} is not granted {} (what the drill's load does); \
                 grant it in {keys_file}",
                list(&missing)
            );
            access_key.to_owned()
        }
        None => {
            let internal = &access.internal_key;
            let missing = missing(&authentication, internal, &needed);
            if !missing.is_empty() {
                let usable: Vec<&str> = ids
                    .iter()
                    .filter(|id| self::missing(&authentication, id, &needed).is_empty())
                    .map(String::as_str)
                    .collect();
                let advice = if usable.is_empty() {
                    format!(
                        "no key of {keys_file} is granted all of it: add one, then pass \
                         --access-key ID"
                    )
                } else {
                    format!(
                        "pass --access-key with a key of {keys_file} that is: {}",
                        usable.join(", ")
                    )
                };
                let lacks = if missing.len() == needed.len() {
                    "any of it".to_owned()
                } else {
                    list(&missing)
                };
                anyhow::bail!(
                    "{} has [access], so the drill's load needs an access key granted {}; the \
                     internal key {internal} (what the runner signs with by default) is not \
                     granted {lacks}; {advice}",
                    file.display(),
                    list(&needed),
                );
            }
            internal.clone()
        }
    };
    let secret = authentication
        .keys()
        .and_then(|keys| keys.secret(&chosen))
        .with_context(|| format!("access key {chosen} has no secret"))?
        .to_owned();
    Ok(LoadAccess {
        transport: Transport::new(dialer, authentication.signer_for(Some(chosen.clone()))),
        environment: ClientEnvironment {
            key: Some((chosen.clone(), secret)),
            ca,
        },
        access_key: Some(chosen),
    })
}

/// The consumer group of the observer of `region`.
pub fn observer_group(region: &str) -> String {
    format!("drill-observer-{region}")
}

/// What the load does: `pub` on its topic with producers, `sub` as its
/// group with consumers, `sub` as each observer group.
fn needed<'a>(load: &'a DrillLoad, observers: &'a [String]) -> Vec<Permission<'a>> {
    let external = |kind: ClientKind| load.clients.iter().any(|client| client.kind == kind);
    let topic = load.topic.as_str();
    let mut needed = Vec::new();
    if load.producers > 0 || external(ClientKind::Producer) {
        needed.push(Permission::Publish { topic });
    }
    if load.consumers > 0 || external(ClientKind::Consumer) {
        needed.push(Permission::Consume {
            topic,
            group: &load.group,
        });
    }
    for group in observers {
        needed.push(Permission::Consume { topic, group });
    }
    needed
}

/// What of `needed` key `access_key` is not granted.
fn missing<'a>(
    authentication: &Authentication,
    access_key: &str,
    needed: &[Permission<'a>],
) -> Vec<Permission<'a>> {
    let caller = Caller::other("meridian-drill").with_access_key(Some(access_key.to_owned()));
    needed
        .iter()
        .filter(|wanted| authentication.authorize(&caller, **wanted).is_err())
        .copied()
        .collect()
}

fn list(permissions: &[Permission<'_>]) -> String {
    permissions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str = r#"
[[keys]]
id = "loader"
secret = "loader-secret"
allow = [{ actions = ["pub", "sub"], topics = ["demo"], groups = ["drill", "drill-observer-*"] }]

[[keys]]
id = "sender"
secret = "sender-secret"
allow = [{ actions = ["pub"], topics = ["demo"] }]

[[keys]]
id = "internal"
secret = "internal-secret"
allow = [{ actions = ["admin"] }]

[[keys]]
id = "everything"
secret = "everything-secret"
allow = [{ actions = ["pub", "sub", "admin"], topics = ["*"], groups = ["*"] }]
"#;

    fn topology(directory: &Path, internal_key: &str) -> (PathBuf, Topology) {
        let keys = directory.join("keys.toml");
        std::fs::write(&keys, KEYS).expect("write the keys");
        let file = directory.join("drill.toml");
        let text = format!(
            r#"
[access]
keys_file = "keys.toml"
internal_key = "{internal_key}"

[regions.a]
site = "public"
node = "127.0.0.1:1001"
admin = "127.0.0.1:1002"
replicator = "127.0.0.1:1003"
router = "127.0.0.1:1004"
data_dir = "a"

[regions.b]
site = "public"
node = "127.0.0.1:1011"
admin = "127.0.0.1:1012"
replicator = "127.0.0.1:1013"
router = "127.0.0.1:1014"
data_dir = "b"

[[links]]
between = ["a", "b"]
latency_ms = 10

[topics.demo]
queues = 2
message_types = ["normal"]
replicate_to = ["a", "b"]

[drill.load]
region = "a"
topic = "demo"

[[drill.steps]]
action = "kill"
region = "b"
role = "node"
"#
        );
        std::fs::write(&file, text).expect("write the topology");
        let topology = Topology::load(&file).expect("a valid topology");
        (file, topology)
    }

    fn choose_for(internal_key: &str, access_key: Option<&str>) -> anyhow::Result<LoadAccess> {
        let directory = tempfile::tempdir().expect("temp dir");
        let (file, topology) = topology(directory.path(), internal_key);
        let load = topology.drill.as_ref().expect("a drill").load.clone();
        choose(
            &file,
            &topology,
            &load,
            &["a".to_owned(), "b".to_owned()],
            access_key,
        )
    }

    #[test]
    fn a_key_granted_the_whole_load_is_used_and_handed_to_the_clients() {
        let chosen = choose_for("internal", Some("loader")).expect("loader will do");
        assert_eq!(chosen.access_key.as_deref(), Some("loader"));
        assert_eq!(
            chosen.environment.key,
            Some(("loader".to_owned(), "loader-secret".to_owned()))
        );
        assert!(chosen.environment.ca.is_none());
        assert!(!format!("{:?}", chosen.environment).contains("loader-secret"));
        // The internal key itself, when it is granted the load.
        let chosen = choose_for("everything", None).expect("the internal key will do");
        assert_eq!(chosen.access_key.as_deref(), Some("everything"));
    }

    #[test]
    fn without_a_usable_key_the_error_names_what_is_missing_and_who_has_it() {
        let error = choose_for("internal", None)
            .expect_err("the internal key may not send")
            .to_string();
        assert!(error.contains("internal key internal"), "{error}");
        assert!(error.contains("`pub` on topic `demo`"), "{error}");
        assert!(
            error.contains("`sub` on topic `demo` as consumer group `drill-observer-b`"),
            "{error}"
        );
        assert!(error.contains("--access-key with a key"), "{error}");
        assert!(error.contains(": loader, everything"), "{error}");

        let error = choose_for("internal", Some("sender"))
            .expect_err("sender may not consume")
            .to_string();
        assert!(
            error.contains("--access-key sender is not granted"),
            "{error}"
        );
        assert!(!error.contains("`pub`"), "{error}");
        assert!(error.contains("consumer group `drill`"), "{error}");

        let error = choose_for("internal", Some("nobody"))
            .expect_err("an unknown key")
            .to_string();
        assert!(error.contains("has no such key"), "{error}");
    }
}
