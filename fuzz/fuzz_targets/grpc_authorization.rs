//! The RocketMQ face's request signature check
//! (`meridian_face::access::Authentication::verify_grpc`: the
//! `authorization` header `MQv2-HMAC-SHA1 Credential=…, SignedHeaders=…,
//! Signature=…`, HMAC-SHA1 over `x-mq-date-time`, which is RFC 3339 or
//! `yyyyMMddTHHmmssZ` within 15 minutes of the server's clock) with one
//! key `ak` / `secret`, and the admin API's HTTP Basic check
//! (`meridian_face::access::verify_basic`) on the same `authorization`.
//!
//! Input: a flags byte, then the `authorization` value up to the first
//! newline, then the `x-mq-date-time` value. With flag bit 0 the target
//! appends the right signature of the date-time to the `authorization`
//! value, so that mutations reach the date parsing and the clock check.
//! A value tonic's `AsciiMetadataValue` refuses is left out (the header is
//! then missing). Nothing may panic; only key `ak` is ever accepted; a
//! request signed right in the canonical form is refused only for its
//! date-time.
#![no_main]

use hmac::{Hmac, Mac as _};
use libfuzzer_sys::fuzz_target;
use meridian_face::access::{
    AUTHORIZATION_HEADER, AccessKeys, Authentication, DATE_TIME_HEADER, verify_basic,
};
use meridian_topology::AccessKey;
use sha1::Sha1;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

const ACCESS_KEY: &str = "ak";
const SECRET: &str = "secret";
/// The canonical header before the signature.
const CANONICAL: &str = "MQv2-HMAC-SHA1 Credential=ak, SignedHeaders=x-mq-date-time, Signature=";
/// The server's clock: 2026-05-28T20:26:40Z.
const NOW_SECONDS: u64 = 1_780_000_000;

/// Built once: a key's grants compile globs.
static KEYS: LazyLock<Arc<AccessKeys>> = LazyLock::new(|| {
    Arc::new(AccessKeys::new([AccessKey::granted_everything(
        ACCESS_KEY, SECRET,
    )]))
});

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (authorization, date_time) = match rest.iter().position(|byte| *byte == b'\n') {
        Some(newline) => (&rest[..newline], &rest[newline + 1..]),
        None => (rest, &[][..]),
    };
    let date_value = AsciiMetadataValue::try_from(date_time).ok();
    // What verify_grpc reads: the value as visible ASCII, trimmed.
    let signed_text = date_value
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .map(|text| text.trim().to_owned());
    let sign = flags & 1 == 1;
    let mut authorization = authorization.to_vec();
    if sign {
        let mut mac = Hmac::<Sha1>::new_from_slice(SECRET.as_bytes()).expect("any key length");
        mac.update(signed_text.as_deref().unwrap_or_default().as_bytes());
        authorization.extend_from_slice(hex::encode(mac.finalize().into_bytes()).as_bytes());
    }
    let canonical = sign
        && authorization.len() == CANONICAL.len() + 40
        && authorization.starts_with(CANONICAL.as_bytes());

    let mut metadata = MetadataMap::new();
    if let Ok(value) = AsciiMetadataValue::try_from(&authorization[..]) {
        metadata.insert(AUTHORIZATION_HEADER, value);
    }
    if let Some(value) = date_value {
        metadata.insert(DATE_TIME_HEADER, value);
    }
    let authentication = Authentication::Keys(Arc::clone(&KEYS));
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECONDS);
    match authentication.verify_grpc(&metadata, now) {
        Ok(key) => assert_eq!(key.as_deref(), Some(ACCESS_KEY)),
        Err(refusal) => {
            let has_date = signed_text.as_deref().is_some_and(|text| !text.is_empty());
            if canonical && has_date {
                assert!(
                    refusal.message.contains(DATE_TIME_HEADER),
                    "a right signature refused: {}",
                    refusal.message
                );
            }
        }
    }

    if let Ok(header) = std::str::from_utf8(&authorization)
        && let Ok(id) = verify_basic(&KEYS, Some(header))
    {
        assert_eq!(id, ACCESS_KEY);
    }
});
