//! What every RPC of the face does with a request before and after its
//! backend: who the caller is, how long it waits, how entries' statuses
//! combine.

use crate::access::Authentication;
use crate::client_settings::{ok, status};
use crate::{CLIENT_ID_HEADER, Caller, LANGUAGE_HEADER, Refusal};
use meridian_proto::rocketmq::v2::{Code, Status};
use std::time::{Duration, SystemTime};
use tonic::Request;
use tracing::debug;

/// The caller of a request, or CLIENT_ID_REQUIRED, or UNAUTHORIZED when
/// `authentication` wants an access key the request does not prove.
pub(crate) fn caller<T>(
    request: &Request<T>,
    authentication: &Authentication,
) -> Result<Caller, Refusal> {
    let client_id = request
        .metadata()
        .get(CLIENT_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .ok_or_else(Refusal::client_id_required)?;
    let language = request
        .metadata()
        .get(LANGUAGE_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .unwrap_or_default();
    let access_key = authentication.verify_grpc(request.metadata(), SystemTime::now())?;
    Ok(Caller {
        client_id: client_id.to_owned(),
        language: language.to_owned(),
        remaining: remaining(request),
        subscription: None,
        access_key,
    })
}

/// The time left before the caller's `grpc-timeout` (value and unit H, M, S,
/// m, u or n, per the gRPC-over-HTTP/2 spec), if it sent a valid one.
pub(crate) fn remaining<T>(request: &Request<T>) -> Option<Duration> {
    let text = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// The body status of an outcome, logging a refusal where it is answered.
pub(crate) fn answered(rpc: &str, outcome: Result<(), Refusal>) -> Status {
    match outcome {
        Ok(()) => ok(),
        Err(refusal) => {
            debug!(rpc, %refusal, "answering with an error status");
            refusal.to_status()
        }
    }
}

/// One status for many entries: theirs if they agree, else MULTIPLE_RESULTS.
pub(crate) fn aggregate(statuses: &[Status]) -> Status {
    match statuses {
        [] => ok(),
        [only] => only.clone(),
        [first, rest @ ..] if rest.iter().all(|other| other.code == first.code) => first.clone(),
        _ => status(Code::MultipleResults, "entries have different results"),
    }
}

/// `items`, or one default item when there are none: the Rust client 5.0.0
/// indexes the first entry of SendMessage and AckMessage answers unchecked.
pub(crate) fn at_least_one<T: Default>(mut items: Vec<T>) -> Vec<T> {
    if items.is_empty() {
        items.push(T::default());
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_client_id<T>(message: T, client_id: &str) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert(
            CLIENT_ID_HEADER,
            client_id.parse().expect("ascii header value"),
        );
        request
    }

    #[test]
    fn blank_client_ids_are_refused() {
        assert_eq!(
            caller(&Request::new(()), &Authentication::Development).map_err(|refusal| refusal.code),
            Err(Code::ClientIdRequired)
        );
        assert!(caller(&with_client_id((), "   "), &Authentication::Development).is_err());
        assert_eq!(
            caller(
                &with_client_id((), " host@1#2 "),
                &Authentication::Development
            )
            .map(|caller| caller.client_id),
            Ok("host@1#2".to_owned())
        );
    }

    #[test]
    fn grpc_timeout_header_is_read_in_every_unit() {
        let mut request = Request::new(());
        for (text, expected) in [
            ("40S", Duration::from_secs(40)),
            ("39999m", Duration::from_millis(39_999)),
            ("1M", Duration::from_secs(60)),
            ("1H", Duration::from_secs(3600)),
            ("5000000u", Duration::from_secs(5)),
            ("7n", Duration::from_nanos(7)),
        ] {
            request
                .metadata_mut()
                .insert("grpc-timeout", text.parse().expect("ascii"));
            assert_eq!(remaining(&request), Some(expected), "{text}");
        }
        for bad in ["x", "", "10", "-1S", "5X"] {
            request
                .metadata_mut()
                .insert("grpc-timeout", bad.parse().expect("ascii"));
            assert_eq!(remaining(&request), None, "{bad:?}");
        }
    }

    #[test]
    fn aggregate_status_reports_mixed_results() {
        assert_eq!(aggregate(&[ok(), ok()]).code, Code::Ok as i32);
        let mixed = aggregate(&[ok(), status(Code::TopicNotFound, "x")]);
        assert_eq!(mixed.code, Code::MultipleResults as i32);
        assert_eq!(aggregate(&[]).code, Code::Ok as i32);
    }

    #[test]
    fn empty_entry_lists_get_one_entry() {
        assert_eq!(at_least_one(Vec::<String>::new()), vec![String::new()]);
        assert_eq!(at_least_one(vec![1, 2]), vec![1, 2]);
    }
}
