//! Who sent a request: the Aliyun MQ signature (brief A3) and, for the JSON
//! API, HTTP Basic credentials.
//!
//! ```text
//! StringToSign = METHOD "\n" Content-MD5 "\n" Content-Type "\n" Date "\n"
//!                CanonicalizedMQHeaders CanonicalizedResource
//! Signature    = Base64(HMAC-SHA1(AccessKeySecret, UTF-8(StringToSign)))
//! ```
//!
//! The canonical resource is the request target exactly as it arrived (path,
//! `?`, raw query): every SDK signs the URL string it sends, so nothing is
//! decoded, reordered or normalized. Header values are taken as received;
//! `Content-MD5` is signed when sent but never checked against the body (Go
//! and Node send base64 of the *hex* digest). A `Date` more than 15 minutes
//! from the server's clock is refused (408 `TimeExpired`), which bounds how
//! long a captured request can be replayed.

use axum::http::{HeaderMap, Method, Uri, header};
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use meridian_face::access::{AccessKeys, BasicError};
use sha1::Sha1;
use std::time::{Duration, SystemTime};

type HmacSha1 = Hmac<Sha1>;

/// The most a request's `Date` may differ from the server's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authenticating the request failed: it has no Authorization header")]
    MissingAuthorization,
    #[error(
        "authenticating the request failed: the Authorization header is not `MQ <AccessKeyId>:<Signature>`: {reason}"
    )]
    InvalidAuthorization { reason: &'static str },
    #[error("authenticating the request failed: it has no Date header")]
    MissingDate,
    #[error(
        "authenticating the request failed: the Date header `{value}` is not an HTTP date (RFC 1123, e.g. `Thu, 01 Jan 2026 00:00:00 GMT`)"
    )]
    InvalidDate { value: String },
    #[error(
        "authenticating the request failed: its Date is {skew_seconds} s away from the server's clock; at most {} s are allowed",
        MAX_CLOCK_SKEW.as_secs()
    )]
    TimeExpired { skew_seconds: u64 },
    #[error("authenticating the request failed: no access key has the id `{id}`")]
    UnknownAccessKey { id: String },
    #[error(
        "authenticating the request failed: the signature does not match; the server signed {string_to_sign:?} (check the secret, the Date and that the signed path and query are the ones sent)"
    )]
    SignatureMismatch { string_to_sign: String },
    #[error("authenticating the request failed: {0}")]
    Basic(BasicError),
}

/// The canonicalized MQ headers: every `x-mq-*` header (name lowercased),
/// sorted by name, as `name:value\n`.
pub fn canonical_mq_headers<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut mq: Vec<(String, &str)> = headers
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .filter(|(name, _)| name.starts_with("x-mq-"))
        .collect();
    // Stable: a repeated header keeps the order it arrived in.
    mq.sort_by(|left, right| left.0.cmp(&right.0));
    let mut canonical = String::new();
    for (name, value) in mq {
        canonical.push_str(&name);
        canonical.push(':');
        canonical.push_str(value);
        canonical.push('\n');
    }
    canonical
}

/// The string the client signed, from its parts: `canonical_mq_headers` as
/// [`canonical_mq_headers`] builds it, `resource` as
/// [`canonical_resource`] does.
pub fn string_to_sign(
    method: &str,
    content_md5: &str,
    content_type: &str,
    date: &str,
    canonical_mq_headers: &str,
    resource: &str,
) -> String {
    format!("{method}\n{content_md5}\n{content_type}\n{date}\n{canonical_mq_headers}{resource}")
}

/// Base64 of HMAC-SHA1 of `text` keyed with `secret`.
pub fn sign(secret: &str, text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(mac(secret, text).finalize().into_bytes())
}

fn mac(secret: &str, text: &str) -> HmacSha1 {
    let mut mac =
        HmacSha1::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(text.as_bytes());
    mac
}

/// The canonical resource of a request: its target as it arrived, path and
/// raw query (for an absolute-form target, without scheme and authority).
pub fn canonical_resource(uri: &Uri) -> &str {
    uri.path_and_query()
        .map_or("/", |path_and_query| path_and_query.as_str())
}

/// A header's value as text, as received (bytes that are not UTF-8 become
/// U+FFFD, so such a value never verifies).
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()))
}

/// Checks an Aliyun MQ signature against `keys` at `now`; returns the
/// access key id.
pub fn verify(
    keys: &AccessKeys,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<String, AuthError> {
    let authorization = header_text(headers, header::AUTHORIZATION.as_str())
        .ok_or(AuthError::MissingAuthorization)?;
    let (id, signature) = parse_authorization(authorization.trim())?;
    let date = header_text(headers, header::DATE.as_str()).ok_or(AuthError::MissingDate)?;
    let signed_at = httpdate::parse_http_date(date.trim()).map_err(|_| AuthError::InvalidDate {
        value: date.chars().take(64).collect(),
    })?;
    let skew = now
        .duration_since(signed_at)
        .unwrap_or_else(|ahead| ahead.duration());
    if skew > MAX_CLOCK_SKEW {
        return Err(AuthError::TimeExpired {
            skew_seconds: skew.as_secs(),
        });
    }
    let secret = keys
        .secret(id)
        .ok_or_else(|| AuthError::UnknownAccessKey { id: id.to_owned() })?;
    let mq_headers = canonical_mq_headers(
        headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("x-mq-"))
            .map(|(name, value)| {
                (
                    name.as_str(),
                    std::str::from_utf8(value.as_bytes()).unwrap_or_default(),
                )
            }),
    );
    let text = string_to_sign(
        method.as_str(),
        &header_text(headers, "content-md5").unwrap_or_default(),
        &header_text(headers, header::CONTENT_TYPE.as_str()).unwrap_or_default(),
        &date,
        &mq_headers,
        canonical_resource(uri),
    );
    let claimed = base64::engine::general_purpose::STANDARD
        .decode(signature)
        .unwrap_or_default();
    // Constant time: `verify_slice` compares without an early exit.
    mac(secret, &text)
        .verify_slice(&claimed)
        .map_err(|_| AuthError::SignatureMismatch {
            string_to_sign: text,
        })?;
    Ok(id.to_owned())
}

/// `MQ <AccessKeyId>:<Signature>` → (id, signature).
fn parse_authorization(value: &str) -> Result<(&str, &str), AuthError> {
    let credentials = value
        .strip_prefix("MQ ")
        .ok_or(AuthError::InvalidAuthorization {
            reason: "it does not start with `MQ `",
        })?
        .trim();
    let (id, signature) = credentials
        .rsplit_once(':')
        .ok_or(AuthError::InvalidAuthorization {
            reason: "no `:` between the access key id and the signature",
        })?;
    if id.is_empty() || signature.is_empty() {
        return Err(AuthError::InvalidAuthorization {
            reason: "the access key id or the signature is empty",
        });
    }
    Ok((id, signature))
}

/// Checks HTTP Basic credentials (access key id and secret) against `keys`
/// ([`meridian_face::access::verify_basic`]); returns the access key id.
pub fn verify_basic(keys: &AccessKeys, headers: &HeaderMap) -> Result<String, AuthError> {
    let value = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => Some(value.to_str().map_err(|_| {
            AuthError::Basic(BasicError::Invalid {
                reason: "it is not ASCII",
            })
        })?),
    };
    meridian_face::access::verify_basic(keys, value).map_err(|error| match error {
        BasicError::UnknownAccessKey { id } => AuthError::UnknownAccessKey { id },
        other => AuthError::Basic(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const VECTOR: &str = "GET\n\n\nThu, 01 Jan 2026 00:00:00 GMT\nx-mq-version:2015-06-06\n/topics/T1/messages?consumer=GID_1&numOfMessages=1";

    fn keys() -> AccessKeys {
        AccessKeys::new([meridian_topology::AccessKey::granted_everything(
            "ak",
            "testSecret",
        )])
    }

    fn at(date: &str) -> SystemTime {
        httpdate::parse_http_date(date).expect("a date")
    }

    #[test]
    fn the_brief_s_test_vector() {
        assert_eq!(sign("testSecret", VECTOR), "kyHQPpEIdeJ0QPrg/33IivBrNB4=");
    }

    #[test]
    fn the_string_to_sign_is_built_from_its_parts() {
        let headers = canonical_mq_headers([
            ("Host", "x"),
            ("X-MQ-Version", "2015-06-06"),
            ("date", "Thu, 01 Jan 2026 00:00:00 GMT"),
        ]);
        assert_eq!(headers, "x-mq-version:2015-06-06\n");
        let text = string_to_sign(
            "GET",
            "",
            "",
            "Thu, 01 Jan 2026 00:00:00 GMT",
            &headers,
            "/topics/T1/messages?consumer=GID_1&numOfMessages=1",
        );
        assert_eq!(text, VECTOR);
    }

    #[test]
    fn mq_headers_are_sorted_by_lowercased_name() {
        let headers = canonical_mq_headers([("x-mq-b", "2"), ("X-Mq-A", "1"), ("other", "3")]);
        assert_eq!(headers, "x-mq-a:1\nx-mq-b:2\n");
    }

    #[test]
    fn the_canonical_resource_is_the_raw_target() {
        let raw = "/topics/T1/messages?numOfMessages=3&consumer=GID_1&tag=TagA%7C%7CTagB&ns=";
        let uri: Uri = raw.parse().expect("a target");
        assert_eq!(canonical_resource(&uri), raw);
        let absolute: Uri = "http://h:1/topics/T/messages?a=%2f"
            .parse()
            .expect("a target");
        assert_eq!(canonical_resource(&absolute), "/topics/T/messages?a=%2f");
    }

    fn signed_headers(authorization: &str, date: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-mq-version", HeaderValue::from_static("2015-06-06"));
        headers.insert("date", HeaderValue::from_str(date).expect("ascii"));
        headers.insert(
            "authorization",
            HeaderValue::from_str(authorization).expect("ascii"),
        );
        headers
    }

    #[test]
    fn verify_accepts_the_vector_and_refuses_what_differs() {
        let date = "Thu, 01 Jan 2026 00:00:00 GMT";
        let uri: Uri = "/topics/T1/messages?consumer=GID_1&numOfMessages=1"
            .parse()
            .expect("uri");
        let good = signed_headers("MQ ak:kyHQPpEIdeJ0QPrg/33IivBrNB4=", date);
        assert_eq!(
            verify(&keys(), &Method::GET, &uri, &good, at(date)),
            Ok("ak".to_owned())
        );
        // The query reordered: the signed target differs.
        let reordered: Uri = "/topics/T1/messages?numOfMessages=1&consumer=GID_1"
            .parse()
            .expect("uri");
        assert!(matches!(
            verify(&keys(), &Method::GET, &reordered, &good, at(date)),
            Err(AuthError::SignatureMismatch { .. })
        ));
        assert!(matches!(
            verify(&keys(), &Method::DELETE, &uri, &good, at(date)),
            Err(AuthError::SignatureMismatch { .. })
        ));
        let unknown = signed_headers("MQ other:kyHQPpEIdeJ0QPrg/33IivBrNB4=", date);
        assert_eq!(
            verify(&keys(), &Method::GET, &uri, &unknown, at(date)),
            Err(AuthError::UnknownAccessKey {
                id: "other".to_owned()
            })
        );
        let later = at(date) + Duration::from_secs(16 * 60);
        assert_eq!(
            verify(&keys(), &Method::GET, &uri, &good, later),
            Err(AuthError::TimeExpired { skew_seconds: 960 })
        );
        let earlier = at(date) - Duration::from_secs(14 * 60);
        assert!(verify(&keys(), &Method::GET, &uri, &good, earlier).is_ok());
    }

    #[test]
    fn verify_names_what_is_missing_or_malformed() {
        let uri: Uri = "/topics/T/messages".parse().expect("uri");
        let date = "Thu, 01 Jan 2026 00:00:00 GMT";
        let mut headers = HeaderMap::new();
        assert_eq!(
            verify(&keys(), &Method::GET, &uri, &headers, at(date)),
            Err(AuthError::MissingAuthorization)
        );
        headers.insert("authorization", HeaderValue::from_static("MQ ak:sig"));
        assert_eq!(
            verify(&keys(), &Method::GET, &uri, &headers, at(date)),
            Err(AuthError::MissingDate)
        );
        headers.insert("date", HeaderValue::from_static("yesterday"));
        assert!(matches!(
            verify(&keys(), &Method::GET, &uri, &headers, at(date)),
            Err(AuthError::InvalidDate { .. })
        ));
        for bad in ["Basic abc", "MQ aksig", "MQ :sig", "MQ ak:"] {
            let headers = signed_headers(bad, date);
            assert!(
                matches!(
                    verify(&keys(), &Method::GET, &uri, &headers, at(date)),
                    Err(AuthError::InvalidAuthorization { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn basic_credentials() {
        let basic = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                "authorization",
                HeaderValue::from_str(value).expect("ascii"),
            );
            verify_basic(&keys(), &headers)
        };
        // "ak:testSecret"
        assert_eq!(basic("Basic YWs6dGVzdFNlY3JldA=="), Ok("ak".to_owned()));
        // "ak:wrong"
        assert_eq!(
            basic("Basic YWs6d3Jvbmc="),
            Err(AuthError::Basic(BasicError::WrongSecret {
                id: "ak".to_owned()
            }))
        );
        assert!(matches!(
            basic("Bearer x"),
            Err(AuthError::Basic(BasicError::Invalid { .. }))
        ));
        assert!(matches!(
            basic("Basic !!"),
            Err(AuthError::Basic(BasicError::Invalid { .. }))
        ));
        assert_eq!(
            verify_basic(&keys(), &HeaderMap::new()),
            Err(AuthError::Basic(BasicError::Missing))
        );
    }
}
