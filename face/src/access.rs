//! Who may use the client protocols, and for what: the access keys a
//! deployment gives out (AccessKey id → secret and grants), or the
//! development mode that lets anyone do anything.
//!
//! Each face proves who the caller is in its protocol's way and puts the
//! key id in [`Caller::access_key`]: the RocketMQ face checks the
//! `authorization` header ([`Authentication::verify_grpc`]), the HTTP face
//! the Aliyun MQ signature, STOMP `login` / `passcode`. What the key may do
//! is checked below every face, by [`crate::Guarded`] around the backend,
//! against the grants of the keys file (`[access] keys_file`, see
//! `meridian_topology::load_access_keys`).
//!
//! Refusals: a missing, unknown or wrongly signed credential, or a date
//! outside [`MAX_CLOCK_SKEW`], is `UNAUTHORIZED` (40100); a known key
//! without the grant is `FORBIDDEN` (40300) naming the key, the action and
//! the resource, never the secret.

use crate::{Caller, Refusal};
use hmac::{Hmac, Mac as _};
use meridian_proto::rocketmq::v2::Code;
use meridian_topology::{AccessKey, Action};
use sha1::Sha1;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

/// The RocketMQ 5 request signature header: `MQv2-HMAC-SHA1
/// Credential=<AK>, SignedHeaders=x-mq-date-time, Signature=<hex
/// HMAC-SHA1(SK, x-mq-date-time)>` (rocketmq-clients docs/transport.md;
/// shared/protocols/rocketmq-grpc.md §3).
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// The signed header: the request's time, RFC 3339 (Rust client) or
/// `yyyyMMddTHHmmssZ` (Python, Node.js).
pub const DATE_TIME_HEADER: &str = "x-mq-date-time";
/// The algorithm the authorization header names.
const ALGORITHM: &str = "MQv2-HMAC-SHA1";
/// How far a request's `x-mq-date-time` may be from the server's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Access keys by id.
#[derive(Clone, Default)]
pub struct AccessKeys {
    keys: HashMap<String, AccessKey>,
    /// The key the deployment's own processes sign with (`[access]
    /// internal_key`).
    internal: Option<String>,
}

impl std::fmt::Debug for AccessKeys {
    /// Names the key ids, never the secrets.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        ids.sort_unstable();
        formatter
            .debug_struct("AccessKeys")
            .field("ids", &ids)
            .finish_non_exhaustive()
    }
}

impl AccessKeys {
    pub fn new(keys: impl IntoIterator<Item = AccessKey>) -> Self {
        AccessKeys {
            keys: keys.into_iter().map(|key| (key.id.clone(), key)).collect(),
            internal: None,
        }
    }

    /// These keys, with `id` as the one the deployment's own processes
    /// sign with.
    #[must_use]
    pub fn with_internal_key(mut self, id: impl Into<String>) -> Self {
        self.internal = Some(id.into());
        self
    }

    /// Whether `secret` is key `id`'s, compared in constant time.
    pub fn check_secret(&self, id: &str, secret: &str) -> bool {
        let Some(expected) = self.secret(id) else {
            return false;
        };
        // MACs of both under one fixed key: equal length, constant-time
        // comparison whatever the secrets' contents.
        let tag = |text: &str| {
            let mut mac = Hmac::<Sha1>::new_from_slice(id.as_bytes())
                .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
            mac.update(text.as_bytes());
            mac
        };
        let expected = tag(expected).finalize().into_bytes();
        tag(secret).verify_slice(&expected).is_ok()
    }

    /// The secret of access key `id`, if the key exists.
    pub fn secret(&self, id: &str) -> Option<&str> {
        self.keys.get(id).map(|key| key.secret.as_str())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether key `id` may do `wanted`.
    fn allows(&self, id: &str, wanted: &Permission<'_>) -> bool {
        let Some(key) = self.keys.get(id) else {
            return false;
        };
        key.grants.iter().any(|grant| match wanted {
            Permission::Publish { topic } => {
                grant.actions.contains(&Action::Pub) && grant.topics.matches(topic)
            }
            Permission::Consume { topic, group } => {
                grant.actions.contains(&Action::Sub)
                    && grant.topics.matches(topic)
                    && grant.groups.matches(group)
            }
            Permission::Route { topic } => {
                (grant.actions.contains(&Action::Pub) || grant.actions.contains(&Action::Sub))
                    && grant.topics.matches(topic)
            }
            Permission::Subscribe { topic } => {
                grant.actions.contains(&Action::Sub) && grant.topics.matches(topic)
            }
            Permission::Group { group } => {
                grant.actions.contains(&Action::Sub) && grant.groups.matches(group)
            }
            Permission::Admin => grant.actions.contains(&Action::Admin),
        })
    }
}

/// What a call asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission<'a> {
    /// Send to `topic`, end its transactions, take its check-backs (`pub`).
    Publish { topic: &'a str },
    /// Consume `topic` as consumer group `group` (`sub`).
    Consume { topic: &'a str, group: &'a str },
    /// Learn `topic`'s route: `pub` or `sub` on it.
    Route { topic: &'a str },
    /// Learn `topic`'s assignment: `sub` on it, as any group.
    Subscribe { topic: &'a str },
    /// Act as consumer group `group` on any topic (a heartbeat): `sub`.
    Group { group: &'a str },
    /// The admin API.
    Admin,
}

impl std::fmt::Display for Permission<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Permission::Publish { topic } => write!(formatter, "`pub` on topic `{topic}`"),
            Permission::Consume { topic, group } => {
                write!(
                    formatter,
                    "`sub` on topic `{topic}` as consumer group `{group}`"
                )
            }
            Permission::Route { topic } => {
                write!(formatter, "`pub` or `sub` on topic `{topic}`")
            }
            Permission::Subscribe { topic } => write!(formatter, "`sub` on topic `{topic}`"),
            Permission::Group { group } => {
                write!(formatter, "`sub` as consumer group `{group}`")
            }
            Permission::Admin => formatter.write_str("`admin`"),
        }
    }
}

/// How a face decides who may call it.
#[derive(Debug, Clone, Default)]
pub enum Authentication {
    /// Development mode: anonymous clients are accepted, credentials are
    /// not checked and every call is allowed (each face logs this when it
    /// starts).
    #[default]
    Development,
    /// Every request must carry one of these keys, proven with its secret,
    /// and may do what the key's grants allow.
    Keys(Arc<AccessKeys>),
}

impl Authentication {
    /// The topology's `[access]`: its keys file's keys, or development mode
    /// without one.
    pub fn of_topology(
        access: Option<&meridian_topology::Access>,
    ) -> Result<Self, meridian_topology::TopologyError> {
        Ok(match access {
            None => Authentication::Development,
            Some(access) => Authentication::Keys(Arc::new(
                AccessKeys::new(meridian_topology::load_access_keys(access)?)
                    .with_internal_key(access.internal_key.clone()),
            )),
        })
    }

    /// The keys to check against; `None` in development mode.
    pub fn keys(&self) -> Option<&AccessKeys> {
        match self {
            Authentication::Development => None,
            Authentication::Keys(keys) => Some(keys),
        }
    }

    /// Checks a RocketMQ request's signature: the key id it proves, `None`
    /// in development mode (the header is then ignored). `now` is the
    /// server's clock.
    pub fn verify_grpc(
        &self,
        metadata: &MetadataMap,
        now: SystemTime,
    ) -> Result<Option<String>, Refusal> {
        let Some(keys) = self.keys() else {
            return Ok(None);
        };
        let header = |name: &str| {
            metadata
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
                .filter(|value| !value.is_empty())
        };
        let Some(authorization) = header(AUTHORIZATION_HEADER) else {
            return Err(unauthorized(
                "this server requires an access key: set the client's access key and \
                 secret key (the request has no `authorization` header)",
            ));
        };
        let signed = parse_authorization(authorization)?;
        if signed.access_key.is_empty() {
            return Err(unauthorized(
                "this server requires an access key: set the client's access key and \
                 secret key (the request's `authorization` names none)",
            ));
        }
        let Some(secret) = keys.secret(signed.access_key) else {
            return Err(unauthorized(format!(
                "access key `{}` is unknown to this server",
                shorten(signed.access_key)
            )));
        };
        let Some(date_time) = header(DATE_TIME_HEADER) else {
            return Err(unauthorized(format!(
                "the request has no `{DATE_TIME_HEADER}` header, which the signature covers"
            )));
        };
        let signature = hex::decode(signed.signature).map_err(|_| {
            unauthorized(format!(
                "the signature of access key `{}` is not hex",
                signed.access_key
            ))
        })?;
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes())
            .map_err(|_| unauthorized("the key's secret cannot key HMAC-SHA1"))?;
        mac.update(date_time.as_bytes());
        if mac.verify_slice(&signature).is_err() {
            return Err(unauthorized(format!(
                "the signature does not match access key `{}`: check the client's secret key",
                signed.access_key
            )));
        }
        let sent = parse_date_time(date_time).ok_or_else(|| {
            unauthorized(format!(
                "`{DATE_TIME_HEADER}` is `{}`, neither RFC 3339 nor yyyyMMddTHHmmssZ",
                shorten(date_time)
            ))
        })?;
        let skew = match now.duration_since(sent) {
            Ok(behind) => behind,
            Err(ahead) => ahead.duration(),
        };
        if skew > MAX_CLOCK_SKEW {
            return Err(unauthorized(format!(
                "`{DATE_TIME_HEADER}` {date_time} is {} s away from the server's clock (at \
                 most {} s): check the client machine's clock",
                skew.as_secs(),
                MAX_CLOCK_SKEW.as_secs()
            )));
        }
        Ok(Some(signed.access_key.to_owned()))
    }

    /// Whether `caller` may do `wanted`: always in development mode, else
    /// if its key has a grant for it.
    pub fn authorize(&self, caller: &Caller, wanted: Permission<'_>) -> Result<(), Refusal> {
        let Some(keys) = self.keys() else {
            return Ok(());
        };
        let Some(access_key) = caller.access_key.as_deref() else {
            return Err(unauthorized("this server requires an access key"));
        };
        if keys.allows(access_key, &wanted) {
            Ok(())
        } else {
            Err(Refusal::new(
                Code::Forbidden,
                format!("access key `{access_key}` is not granted {wanted}"),
            ))
        }
    }

    /// Checks a call to a node's admin port: a signature (as
    /// [`Authentication::verify_grpc`]) of a key granted `admin`; always
    /// allowed in development mode.
    pub fn check_admin_grpc(&self, metadata: &MetadataMap) -> Result<(), Refusal> {
        let access_key = self.verify_grpc(metadata, SystemTime::now())?;
        self.authorize(
            &Caller::other("admin").with_access_key(access_key),
            Permission::Admin,
        )
    }

    /// Checks HTTP Basic credentials (`authorization: Basic
    /// base64(id:secret)`, RFC 7617) of a key granted `admin`; always
    /// allowed in development mode.
    pub fn check_admin_basic(&self, authorization: Option<&str>) -> Result<(), Refusal> {
        let Some(keys) = self.keys() else {
            return Ok(());
        };
        let access_key =
            verify_basic(keys, authorization).map_err(|error| unauthorized(error.to_string()))?;
        self.authorize(
            &Caller::other("admin").with_access_key(Some(access_key)),
            Permission::Admin,
        )
    }

    /// What the deployment's own processes attach to their calls to
    /// admin ports: signatures of the internal key.
    pub fn internal_signer(&self) -> Signer {
        Signer {
            access_key: self.keys().and_then(|keys| keys.internal.clone()),
            authentication: self.clone(),
        }
    }

    /// What a client attaches to its calls: signatures of `access_key`
    /// (with its secret from these keys).
    pub fn signer_for(&self, access_key: Option<String>) -> Signer {
        Signer {
            access_key,
            authentication: self.clone(),
        }
    }

    /// Signs a request the server makes on behalf of `access_key` (the
    /// router forwarding a client's call to a node): `x-mq-date-time` now,
    /// and the `authorization` the node verifies. Nothing in development
    /// mode, or for an unknown key.
    pub fn sign_grpc(&self, access_key: Option<&str>, metadata: &mut MetadataMap) {
        let (Some(keys), Some(access_key)) = (self.keys(), access_key) else {
            return;
        };
        let Some(secret) = keys.secret(access_key) else {
            return;
        };
        let Ok(now) = OffsetDateTime::now_utc().format(COMPACT) else {
            return;
        };
        let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else {
            return;
        };
        mac.update(now.as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        let authorization = format!(
            "{ALGORITHM} Credential={access_key}, SignedHeaders={DATE_TIME_HEADER}, \
             Signature={signature}"
        );
        if let (Ok(date_time), Ok(authorization)) = (
            AsciiMetadataValue::try_from(now),
            AsciiMetadataValue::try_from(authorization),
        ) {
            metadata.insert(DATE_TIME_HEADER, date_time);
            metadata.insert(AUTHORIZATION_HEADER, authorization);
        }
    }
}

/// Signs every call of a gRPC client (a tonic interceptor) for one access
/// key, afresh each time; signs nothing in development mode.
#[derive(Debug, Clone)]
pub struct Signer {
    authentication: Authentication,
    access_key: Option<String>,
}

impl Signer {
    /// A signer that signs nothing (development mode).
    pub fn none() -> Self {
        Signer {
            authentication: Authentication::Development,
            access_key: None,
        }
    }
}

impl tonic::service::Interceptor for Signer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        self.authentication
            .sign_grpc(self.access_key.as_deref(), request.metadata_mut());
        Ok(request)
    }
}

/// Lets through the calls to a node's admin port that
/// [`Authentication::check_admin_grpc`] allows (a tonic interceptor); the
/// others get gRPC `UNAUTHENTICATED` or `PERMISSION_DENIED` with the reason.
#[derive(Debug, Clone)]
pub struct AdminGuard {
    authentication: Authentication,
}

impl AdminGuard {
    pub fn new(authentication: Authentication) -> Self {
        AdminGuard { authentication }
    }
}

impl tonic::service::Interceptor for AdminGuard {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        match self.authentication.check_admin_grpc(request.metadata()) {
            Ok(()) => Ok(request),
            Err(refusal) if refusal.code == Code::Forbidden => {
                Err(tonic::Status::permission_denied(refusal.message))
            }
            Err(refusal) => Err(tonic::Status::unauthenticated(refusal.message)),
        }
    }
}

/// A gRPC channel whose calls are signed.
pub type SignedChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Signer>;

/// Why HTTP Basic credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasicError {
    #[error("send HTTP Basic credentials (access key id and secret), e.g. `curl -u ID:SECRET`")]
    Missing,
    #[error("the Authorization header is not HTTP Basic: {reason}")]
    Invalid { reason: &'static str },
    #[error("no access key has the id `{id}`")]
    UnknownAccessKey { id: String },
    #[error("wrong secret for access key `{id}`")]
    WrongSecret { id: String },
}

/// The access key id that HTTP Basic credentials (`Basic base64(id:secret)`)
/// prove.
pub fn verify_basic(keys: &AccessKeys, authorization: Option<&str>) -> Result<String, BasicError> {
    use base64::Engine as _;
    let value = authorization.ok_or(BasicError::Missing)?;
    let (scheme, encoded) = value.trim().split_once(' ').ok_or(BasicError::Invalid {
        reason: "no scheme",
    })?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(BasicError::Invalid {
            reason: "the scheme is not Basic",
        });
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| BasicError::Invalid {
            reason: "the credentials are not base64",
        })?;
    let decoded = String::from_utf8(decoded).map_err(|_| BasicError::Invalid {
        reason: "the credentials are not UTF-8",
    })?;
    let (id, secret) = decoded.split_once(':').ok_or(BasicError::Invalid {
        reason: "no `:` between the access key id and the secret",
    })?;
    if keys.secret(id).is_none() {
        return Err(BasicError::UnknownAccessKey { id: shorten(id) });
    }
    if !keys.check_secret(id, secret) {
        return Err(BasicError::WrongSecret { id: id.to_owned() });
    }
    Ok(id.to_owned())
}

/// `yyyyMMddTHHmmssZ`, as the Python and Node.js clients write it.
const COMPACT: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

fn unauthorized(message: impl Into<String>) -> Refusal {
    Refusal::new(Code::Unauthorized, message)
}

/// At most 64 characters of a client-supplied value, for messages.
fn shorten(value: &str) -> String {
    value.chars().take(64).collect()
}

/// The parts of an authorization header.
#[derive(Debug, PartialEq, Eq)]
struct Signed<'a> {
    access_key: &'a str,
    signature: &'a str,
}

/// Parses `MQv2-HMAC-SHA1 Credential=AK, SignedHeaders=x-mq-date-time,
/// Signature=HEX` (parameters in any order, spaces around commas ignored).
fn parse_authorization(header: &str) -> Result<Signed<'_>, Refusal> {
    let malformed = || {
        unauthorized(format!(
            "the `authorization` header is not `{ALGORITHM} Credential=<access key>, \
             SignedHeaders={DATE_TIME_HEADER}, Signature=<hex>`"
        ))
    };
    let (algorithm, parameters) = header.split_once(' ').ok_or_else(malformed)?;
    if algorithm != ALGORITHM {
        return Err(unauthorized(format!(
            "the `authorization` header's algorithm is `{}`; this server takes {ALGORITHM}",
            shorten(algorithm)
        )));
    }
    let (mut access_key, mut signed_headers, mut signature) = (None, None, None);
    for parameter in parameters.split(',') {
        let (name, value) = parameter.trim().split_once('=').ok_or_else(malformed)?;
        match name.trim() {
            "Credential" => access_key = Some(value.trim()),
            "SignedHeaders" => signed_headers = Some(value.trim()),
            "Signature" => signature = Some(value.trim()),
            _ => {}
        }
    }
    let (Some(access_key), Some(signed_headers), Some(signature)) =
        (access_key, signed_headers, signature)
    else {
        return Err(malformed());
    };
    if !signed_headers.eq_ignore_ascii_case(DATE_TIME_HEADER) {
        return Err(unauthorized(format!(
            "the signature covers `{}`; this server takes SignedHeaders={DATE_TIME_HEADER}",
            shorten(signed_headers)
        )));
    }
    Ok(Signed {
        access_key,
        signature,
    })
}

/// An `x-mq-date-time` value: RFC 3339, or `yyyyMMddTHHmmssZ` read as UTC.
fn parse_date_time(value: &str) -> Option<SystemTime> {
    let parsed = OffsetDateTime::parse(value, &Rfc3339).or_else(|_| {
        time::PrimitiveDateTime::parse(value, COMPACT).map(|local| local.assume_utc())
    });
    parsed.ok().map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_topology::{Access, load_access_keys};

    const AK: &str = "orders";
    const SK: &str = "orders-secret";

    fn keys() -> Authentication {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(
            file.path(),
            format!(
                "[[keys]]\nid = \"{AK}\"\nsecret = \"{SK}\"\nallow = [\n  \
                 {{ actions = [\"pub\"], topics = [\"orders*\"] }},\n  \
                 {{ actions = [\"sub\"], topics = [\"orders\"], groups = [\"billing\"] }},\n]\n\
                 [[keys]]\nid = \"ops\"\nsecret = \"ops-secret\"\nallow = [{{ actions = [\"admin\"] }}]\n"
            ),
        )
        .expect("write");
        let loaded = load_access_keys(&Access {
            keys_file: file.path().to_owned(),
            internal_key: "ops".to_owned(),
        })
        .expect("load");
        Authentication::Keys(Arc::new(AccessKeys::new(loaded)))
    }

    fn signed(access_key: &str, secret: &str, date_time: &str, upper: bool) -> MetadataMap {
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(date_time.as_bytes());
        let mut signature = hex::encode(mac.finalize().into_bytes());
        if upper {
            signature = signature.to_uppercase();
        }
        let mut metadata = MetadataMap::new();
        metadata.insert(
            AUTHORIZATION_HEADER,
            format!(
                "MQv2-HMAC-SHA1 Credential={access_key}, SignedHeaders=x-mq-date-time, Signature={signature}"
            )
            .parse()
            .expect("ascii"),
        );
        metadata.insert(DATE_TIME_HEADER, date_time.parse().expect("ascii"));
        metadata
    }

    fn at(rfc3339: &str) -> SystemTime {
        SystemTime::from(OffsetDateTime::parse(rfc3339, &Rfc3339).expect("time"))
    }

    fn refusal_of(result: Result<Option<String>, Refusal>) -> Refusal {
        result.expect_err("refused")
    }

    #[test]
    fn every_client_s_date_format_and_hex_case_verifies() {
        let authentication = keys();
        let now = at("2026-12-06T03:00:00Z");
        for (date_time, upper) in [
            ("2026-12-06T04:01:30.123456+01:00", false), // Rust client: RFC 3339, local offset
            ("20261206T025900Z", false),                 // Python
            ("20261206T030100Z", true),                  // Node.js: upper-case hex
        ] {
            let metadata = signed(AK, SK, date_time, upper);
            assert_eq!(
                authentication.verify_grpc(&metadata, now).expect(date_time),
                Some(AK.to_owned())
            );
        }
    }

    #[test]
    fn bad_credentials_are_unauthorized_with_the_reason() {
        let authentication = keys();
        let now = at("2026-12-06T03:00:00Z");
        let date = "20261206T030000Z";
        let cases = [
            (MetadataMap::new(), "no `authorization` header"),
            (signed("", SK, date, false), "names none"),
            (
                signed("nobody", SK, date, false),
                "access key `nobody` is unknown",
            ),
            (
                signed(AK, "wrong", date, false),
                "does not match access key `orders`",
            ),
            (signed(AK, SK, "20261206T023000Z", false), "1800 s away"),
            (signed(AK, SK, "yesterday", false), "neither RFC 3339"),
        ];
        for (metadata, expected) in cases {
            let refusal = refusal_of(authentication.verify_grpc(&metadata, now));
            assert_eq!(refusal.code, Code::Unauthorized, "{expected}");
            assert!(refusal.message.contains(expected), "{}", refusal.message);
            assert!(!refusal.message.contains(SK), "{}", refusal.message);
        }
        let mut metadata = signed(AK, SK, date, false);
        metadata.insert(AUTHORIZATION_HEADER, "Basic abc".parse().expect("ascii"));
        let refusal = refusal_of(authentication.verify_grpc(&metadata, now));
        assert!(refusal.message.contains("algorithm is `Basic`"));
    }

    #[test]
    fn development_mode_ignores_credentials_and_allows_everything() {
        let development = Authentication::Development;
        let metadata = signed(AK, "wrong", "then", false);
        assert_eq!(
            development.verify_grpc(&metadata, SystemTime::now()),
            Ok(None)
        );
        let anonymous = Caller::other("anyone");
        assert!(development.authorize(&anonymous, Permission::Admin).is_ok());
    }

    #[test]
    fn grants_decide_and_a_denial_names_key_action_and_resource() {
        let authentication = keys();
        let orders = Caller::other("c").with_access_key(Some(AK.to_owned()));
        let allowed = [
            Permission::Publish { topic: "orders-eu" },
            Permission::Consume {
                topic: "orders",
                group: "billing",
            },
            Permission::Route { topic: "orders" },
            Permission::Group { group: "billing" },
        ];
        for wanted in allowed {
            assert!(
                authentication.authorize(&orders, wanted).is_ok(),
                "{wanted}"
            );
        }
        let denied = [
            (
                Permission::Publish { topic: "payments" },
                "`pub` on topic `payments`",
            ),
            (
                Permission::Consume {
                    topic: "orders-eu",
                    group: "billing",
                },
                "`sub` on topic `orders-eu` as consumer group `billing`",
            ),
            (
                Permission::Route { topic: "payments" },
                "`pub` or `sub` on topic `payments`",
            ),
            (Permission::Admin, "`admin`"),
        ];
        for (wanted, named) in denied {
            let refusal = authentication
                .authorize(&orders, wanted)
                .expect_err("denied");
            assert_eq!(refusal.code, Code::Forbidden);
            assert_eq!(
                refusal.message,
                format!("access key `{AK}` is not granted {named}")
            );
        }
        let ops = Caller::other("c").with_access_key(Some("ops".to_owned()));
        assert!(authentication.authorize(&ops, Permission::Admin).is_ok());
        let anonymous = Caller::other("c");
        assert_eq!(
            authentication
                .authorize(&anonymous, Permission::Admin)
                .expect_err("anonymous")
                .code,
            Code::Unauthorized
        );
    }

    #[test]
    fn what_the_router_signs_the_node_verifies() {
        let authentication = keys();
        let mut metadata = MetadataMap::new();
        authentication.sign_grpc(Some(AK), &mut metadata);
        assert_eq!(
            authentication.verify_grpc(&metadata, SystemTime::now()),
            Ok(Some(AK.to_owned()))
        );
        let mut unsigned = MetadataMap::new();
        Authentication::Development.sign_grpc(Some(AK), &mut unsigned);
        assert!(unsigned.is_empty());
    }
}
