//! [`GatewayError`]: why a request failed, and the one place where failures
//! (the gateway's own and the backend's refusals) become HTTP answers, for
//! the Aliyun API (brief A5: status, `Code`, the `<Error>` body) and for
//! the JSON API (`{"error", "code"}`).

use crate::signature::AuthError;
use crate::xml::{self, XmlError};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use meridian_face::Refusal;
use meridian_proto::rocketmq::v2::Code;

/// The content type of every XML answer (Node reads only `text/xml` or
/// `application/xml` bodies).
pub(crate) const XML_CONTENT_TYPE: &str = "text/xml;charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    #[error(
        "reading the request failed: the request line is {chars} characters long; at most {max} are allowed"
    )]
    RequestLineTooLong { chars: usize, max: usize },
    #[error("reading the request body failed: it is larger than {max_bytes} bytes")]
    BodyTooLarge { max_bytes: usize },
    #[error("reading the request body failed: it did not arrive within {seconds} s")]
    BodyTimeout { seconds: u64 },
    #[error("reading the request body failed: {reason}")]
    BodyUnreadable { reason: String },
    #[error(
        "reading the request body failed: other requests' bodies fill the gateway's buffers; try again"
    )]
    Busy,
    #[error("{reason}; try again later")]
    ConnectionRefused {
        reason: meridian_face::accept::Refused,
    },
    #[error("this port takes HTTPS only; send the request with TLS (an https:// endpoint)")]
    PlainTextToTlsPort,
    #[error("no resource at `{path}`; this API serves {served}")]
    UnknownPath { path: String, served: &'static str },
    #[error("{path} does not take {method}; it takes {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    #[error("the {parameter} is invalid: {reason}")]
    Argument {
        parameter: &'static str,
        reason: String,
    },
    #[error("the query string is invalid: {reason}")]
    QueryString { reason: String },
    #[error("reading the XML body failed: {0}")]
    MalformedXml(#[from] XmlError),
    #[error("reading the JSON body failed: {reason}")]
    MalformedJson { reason: String },
    #[error("the body names no receipt handle (1 to 16 <ReceiptHandle> elements, none empty)")]
    MissingReceiptHandle,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{action} failed: {}", refusal.message)]
    Refused {
        action: &'static str,
        refusal: Refusal,
    },
    #[error("Message not exist.")]
    NoMessage,
    #[error("{action} failed: {reason}")]
    Internal {
        action: &'static str,
        reason: String,
    },
}

impl GatewayError {
    pub fn refused(action: &'static str) -> impl FnOnce(Refusal) -> GatewayError {
        move |refusal| GatewayError::Refused { action, refusal }
    }

    /// Whether the server, not the client, is at fault (logged as a warning).
    pub fn is_server_side(&self) -> bool {
        self.aliyun_status().0.is_server_error()
    }

    /// The Aliyun API's status and error code.
    fn aliyun_status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::RequestLineTooLong { .. } => (StatusCode::BAD_REQUEST, "InvalidRequestURL"),
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "InvalidArgument"),
            Self::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "RequestTimeout"),
            Self::BodyUnreadable { .. }
            | Self::Argument { .. }
            | Self::MalformedJson { .. }
            | Self::PlainTextToTlsPort => (StatusCode::BAD_REQUEST, "InvalidArgument"),
            Self::Busy | Self::ConnectionRefused { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
            }
            Self::UnknownPath { .. } => (StatusCode::BAD_REQUEST, "InvalidRequestURL"),
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            Self::QueryString { .. } => (StatusCode::BAD_REQUEST, "InvalidQueryString"),
            Self::MalformedXml(_) => (StatusCode::BAD_REQUEST, "MalformedXML"),
            Self::MissingReceiptHandle => (StatusCode::BAD_REQUEST, "MissingReceiptHandle"),
            Self::Auth(error) => match error {
                AuthError::MissingAuthorization => {
                    (StatusCode::BAD_REQUEST, "MissingAuthorizationHeader")
                }
                AuthError::InvalidAuthorization { .. } => {
                    (StatusCode::BAD_REQUEST, "InvalidAuthorizationHeader")
                }
                AuthError::MissingDate => (StatusCode::BAD_REQUEST, "MissingDateHeader"),
                AuthError::InvalidDate { .. } => (StatusCode::BAD_REQUEST, "InvalidDateHeader"),
                AuthError::TimeExpired { .. } => (StatusCode::REQUEST_TIMEOUT, "TimeExpired"),
                AuthError::UnknownAccessKey { .. } => (StatusCode::FORBIDDEN, "InvalidAccessKeyId"),
                AuthError::SignatureMismatch { .. } => {
                    (StatusCode::FORBIDDEN, "SignatureDoesNotMatch")
                }
                AuthError::Basic(_) => (StatusCode::FORBIDDEN, "AccessDenied"),
            },
            Self::Refused { refusal, .. } => aliyun_refusal(refusal.code),
            Self::NoMessage => (StatusCode::NOT_FOUND, "MessageNotExist"),
            Self::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }

    /// The JSON API's status and error code (RocketMQ's code names where
    /// one fits).
    fn json_status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::RequestLineTooLong { .. }
            | Self::BodyUnreadable { .. }
            | Self::Argument { .. }
            | Self::QueryString { .. }
            | Self::MalformedXml(_)
            | Self::MalformedJson { .. }
            | Self::MissingReceiptHandle
            | Self::PlainTextToTlsPort => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Self::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT"),
            Self::Busy => (StatusCode::SERVICE_UNAVAILABLE, "TOO_MANY_REQUESTS"),
            Self::ConnectionRefused { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "TOO_MANY_CONNECTIONS")
            }
            Self::UnknownPath { .. } => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            // Credentials missing or not proving a key: 401, as the admin
            // API answers (RFC 9110 §15.5.2); a key's missing grant is a
            // backend refusal, 403.
            Self::Auth(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            Self::Refused { refusal, .. } => {
                (json_refusal(refusal.code), refusal.code.as_str_name())
            }
            Self::NoMessage => (StatusCode::NOT_FOUND, "MESSAGE_NOT_FOUND"),
            Self::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
        }
    }

    /// The Aliyun API's answer: the `<Error>` document with all four
    /// children. `host_id` is `http://host:port` as the client addressed
    /// the server.
    pub fn aliyun_response(&self, request_id: &str, host_id: &str) -> Response {
        let (status, code) = self.aliyun_status();
        let body = xml::write_error(code, &self.to_string(), request_id, host_id);
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(XML_CONTENT_TYPE),
        );
        if let Self::MethodNotAllowed { allowed, .. } = self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allowed));
        }
        response
    }

    /// The JSON API's answer: `{"error": "...", "code": "..."}`.
    pub fn json_response(&self) -> Response {
        let (status, code) = self.json_status();
        let body = crate::rest::ErrorBody {
            error: self.to_string(),
            code: code.to_owned(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="meridian""#),
            );
        }
        if let Self::MethodNotAllowed { allowed, .. } = self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allowed));
        }
        response
    }
}

/// Codes that mean the request itself was wrong.
fn is_client_error(code: Code) -> bool {
    let number = code as i32;
    (40000..40100).contains(&number)
        || (41300..41400).contains(&number)
        || (43100..43200).contains(&number)
        || code == Code::PreconditionFailed
}

/// A backend refusal in the Aliyun API's terms.
pub(crate) fn aliyun_refusal(code: Code) -> (StatusCode, &'static str) {
    match code {
        Code::TopicNotFound => (StatusCode::NOT_FOUND, "TopicNotExist"),
        Code::ConsumerGroupNotFound => (StatusCode::NOT_FOUND, "SubscriptionNotExist"),
        Code::MessageNotFound => (StatusCode::NOT_FOUND, "MessageNotExist"),
        Code::Unauthorized | Code::Forbidden | Code::PaymentRequired => {
            (StatusCode::FORBIDDEN, "AccessDenied")
        }
        Code::TooManyRequests
        | Code::LiteTopicQuotaExceeded
        | Code::LiteSubscriptionQuotaExceeded => (StatusCode::BAD_REQUEST, "QpsLimitExceeded"),
        code if is_client_error(code) => (StatusCode::BAD_REQUEST, "InvalidArgument"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
    }
}

/// A backend refusal's status in the JSON API.
fn json_refusal(code: Code) -> StatusCode {
    match code {
        Code::NotFound
        | Code::TopicNotFound
        | Code::ConsumerGroupNotFound
        | Code::MessageNotFound => StatusCode::NOT_FOUND,
        Code::Unauthorized | Code::Forbidden | Code::PaymentRequired => StatusCode::FORBIDDEN,
        Code::TooManyRequests
        | Code::LiteTopicQuotaExceeded
        | Code::LiteSubscriptionQuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
        code if is_client_error(code) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The error code of one failed handle in an `<Errors>` answer.
pub(crate) fn handle_error_code(code: Code) -> &'static str {
    match aliyun_refusal(code) {
        (status, _) if status.is_client_error() => "ReceiptHandleError",
        (_, code) => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_as_the_brief_says() {
        let cases = [
            (Code::TopicNotFound, 404, "TopicNotExist"),
            (Code::ConsumerGroupNotFound, 404, "SubscriptionNotExist"),
            (Code::BadRequest, 400, "InvalidArgument"),
            (Code::IllegalMessageTag, 400, "InvalidArgument"),
            (Code::InvalidReceiptHandle, 400, "InvalidArgument"),
            (Code::MessageBodyTooLarge, 400, "InvalidArgument"),
            (
                Code::MessagePropertyConflictWithType,
                400,
                "InvalidArgument",
            ),
            (Code::Unauthorized, 403, "AccessDenied"),
            (Code::Forbidden, 403, "AccessDenied"),
            (Code::TooManyRequests, 400, "QpsLimitExceeded"),
            (Code::InternalError, 500, "InternalError"),
            (Code::NotImplemented, 500, "InternalError"),
            (Code::SlavePersistenceTimeout, 500, "InternalError"),
        ];
        for (code, status, name) in cases {
            assert_eq!(
                aliyun_refusal(code),
                (StatusCode::from_u16(status).expect("status"), name),
                "{code:?}"
            );
        }
        assert_eq!(
            handle_error_code(Code::InvalidReceiptHandle),
            "ReceiptHandleError"
        );
        assert_eq!(
            handle_error_code(Code::InvalidTransactionId),
            "ReceiptHandleError"
        );
        assert_eq!(handle_error_code(Code::InternalError), "InternalError");
    }

    #[test]
    fn refusal_messages_reach_the_client() {
        let error = GatewayError::Refused {
            action: "publishing",
            refusal: Refusal::new(Code::IllegalMessageTag, "the tag holds `|`"),
        };
        let (status, code) = error.aliyun_status();
        assert_eq!((status.as_u16(), code), (400, "InvalidArgument"));
        assert_eq!(error.to_string(), "publishing failed: the tag holds `|`");
        assert_eq!(
            error.json_status(),
            (StatusCode::BAD_REQUEST, "ILLEGAL_MESSAGE_TAG")
        );
    }
}
