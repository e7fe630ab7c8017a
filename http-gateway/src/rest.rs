//! The JSON API under `/v1/`, for scripts and curl: publish, receive and
//! acknowledge, over the same backend calls as the Aliyun API, described by
//! an OpenAPI 3.1 document at `/v1/openapi.json` (generated from these
//! handlers and types by utoipa).
//!
//! With access keys, every request but the document's carries HTTP Basic
//! credentials, the access key id and its secret (`curl -u ID:SECRET`):
//! 401 (with `WWW-Authenticate: Basic`) without them or with a wrong secret
//! or an unknown key, 403 for a key not granted what the request does
//! (`pub` on the topic, `sub` on it and the group). In development mode nothing is
//! checked. Errors are `{"error": "...", "code": "..."}`: 400 for a bad
//! request (unknown JSON fields and query parameters included), 401/403,
//! 404 for an unknown topic or path, 405, 413, 429, 500.
//!
//! Names are used as given (no namespaces: a namespaced topic is written
//! `NS%TOPIC`, `NS%25TOPIC` in a path). A receive makes its messages
//! invisible for 300 s, unordered; the JSON API has no transactions (a
//! `transaction_id` appears only if a backend made the message a half
//! message).

use crate::error::GatewayError;
use crate::message::{self, Delivered, Outgoing};
use crate::request::{Gateway, RequestContext};
use crate::signature;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use bytes::Bytes;
use futures::FutureExt as _;
use meridian_face::Caller;
use meridian_proto::prost_types::Duration as ProtoDuration;
use meridian_proto::rocketmq::v2::{
    FilterExpression, FilterType, MessageQueue, ReceiveMessageRequest, Resource,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt as _;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// The document's path (served without credentials).
const DOCUMENT_PATH: &str = "/v1/openapi.json";
/// Most messages one receive returns, and most handles one ack names.
const MAX_BATCH: u32 = 32;
/// Longest wait of a receive, in ms.
const MAX_WAIT_MS: u64 = 30_000;
/// How long received messages stay invisible.
const INVISIBLE: Duration = Duration::from_secs(300);

/// A message to publish. Exactly one of `body` (text) and `body_base64`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    /// The body as text (stored as its UTF-8 bytes).
    pub body: Option<String>,
    /// The body as standard base64, for bodies that are not text.
    pub body_base64: Option<String>,
    pub tag: Option<String>,
    #[serde(default)]
    pub keys: Vec<String>,
    /// User properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Makes it an ordered (FIFO) message of this group.
    pub message_group: Option<String>,
    /// Makes it a timed message delivered at this time (epoch ms; a past
    /// time means now).
    pub deliver_at_ms: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Published {
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
}

/// Which messages a receive takes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReceiveParameters {
    /// The consumer group.
    pub group: String,
    /// Most messages to return, 1 to 32 (default 16).
    #[param(minimum = 1, maximum = 32)]
    pub max: Option<u32>,
    /// How long to wait for a message, 0 to 30000 ms (default 0).
    #[param(maximum = 30000)]
    pub wait_ms: Option<u64>,
    /// Tag filter: `*` (default) or `A||B`.
    pub tag: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Received {
    /// Empty when none arrived in time.
    pub messages: Vec<ReceivedMessage>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReceivedMessage {
    pub message_id: String,
    /// What acknowledges this delivery (valid until `invisible_until_ms`).
    pub receipt_handle: String,
    /// The body, when it is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body as standard base64, always.
    pub body_base64: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub keys: Vec<String>,
    /// User properties.
    pub properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_group: Option<String>,
    /// When the producer made it, epoch ms.
    pub born_at_ms: i64,
    /// 1 for the first delivery.
    pub delivery_attempt: i64,
    /// Until when it is hidden from other receives, epoch ms.
    pub invisible_until_ms: i64,
}

/// Deliveries to acknowledge.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    pub group: String,
    /// 1 to 32 receipt handles.
    pub receipt_handles: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AckResults {
    /// One per handle, in order.
    pub results: Vec<AckResult>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AckResult {
    pub receipt_handle: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every error answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What failed and why.
    pub error: String,
    /// RocketMQ's name of the error (`TOPIC_NOT_FOUND`, `BAD_REQUEST`, …).
    pub code: String,
}

struct BasicAuthentication;

impl Modify for BasicAuthentication {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "access_key",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
            );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Meridian HTTP API",
        description = "Publish, receive and acknowledge messages of a Meridian region node as \
                       JSON. With access keys, authenticate with HTTP Basic (access key id and \
                       secret); in development mode, no credentials are needed. The same node \
                       serves the Alibaba Cloud MQ HTTP API (2015-06-06) at /topics/{topic}/messages."
    ),
    paths(publish, receive, acknowledge, document),
    components(schemas(
        PublishBody,
        Published,
        Received,
        ReceivedMessage,
        AckBody,
        AckResults,
        AckResult,
        ErrorBody
    )),
    modifiers(&BasicAuthentication)
)]
struct ApiDoc;

/// The OpenAPI 3.1 document of the JSON API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Who called a JSON route (put in the request's extensions).
#[derive(Clone)]
struct Called {
    caller: Caller,
    context: RequestContext,
}

/// A failure as a JSON answer.
struct Failure(GatewayError);

impl From<GatewayError> for Failure {
    fn from(error: GatewayError) -> Self {
        Failure(error)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        if self.0.is_server_side() {
            tracing::warn!(error = %meridian_report::Report(&self.0), "JSON API request failed");
        } else {
            tracing::debug!(error = %meridian_report::Report(&self.0), "JSON API request refused");
        }
        self.0.json_response()
    }
}

type Answer<T> = Result<(StatusCode, Json<T>), Failure>;

/// The routes of the JSON API over `gateway`.
pub(crate) fn router(gateway: Arc<Gateway>) -> axum::Router {
    axum::Router::new()
        .route(DOCUMENT_PATH, get(document))
        .route("/v1/topics/{topic}/messages", post(publish).get(receive))
        .route("/v1/topics/{topic}/acks", post(acknowledge))
        .fallback(unknown_path)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies were read (and limited) before routing.
        .layer(DefaultBodyLimit::disable())
        .with_state(gateway)
}

/// Serves one request of the JSON API through `router`.
pub(crate) async fn handle(
    gateway: &Gateway,
    router: &axum::Router,
    context: &RequestContext,
    parts: Parts,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let access_key = match gateway.config.authentication.keys() {
        Some(keys) if parts.uri.path() != DOCUMENT_PATH => {
            Some(signature::verify_basic(keys, &parts.headers)?)
        }
        _ => None,
    };
    let mut request = Request::from_parts(parts, axum::body::Body::from(body));
    request.extensions_mut().insert(Called {
        caller: context.caller(access_key.as_deref()),
        context: context.clone(),
    });
    let response = router
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {});
    Ok(response)
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API")))]
async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}

async fn unknown_path(uri: Uri) -> Failure {
    Failure(GatewayError::UnknownPath {
        path: uri.path().chars().take(128).collect(),
        served: "/v1/topics/{topic}/messages, /v1/topics/{topic}/acks and /v1/openapi.json",
    })
}

async fn method_not_allowed(method: Method, uri: Uri) -> Failure {
    let allowed = if uri.path().ends_with("/acks") {
        "POST"
    } else if uri.path() == DOCUMENT_PATH {
        "GET"
    } else {
        "GET, POST"
    };
    Failure(GatewayError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().chars().take(128).collect(),
        allowed,
    })
}

fn topic(path: Result<Path<String>, PathRejection>) -> Result<Resource, GatewayError> {
    let Path(name) = path.map_err(|rejection| GatewayError::Argument {
        parameter: "topic",
        reason: rejection.body_text(),
    })?;
    if name.trim().is_empty() {
        return Err(GatewayError::Argument {
            parameter: "topic",
            reason: "it is empty".to_owned(),
        });
    }
    Ok(message::resource(None, &name))
}

fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(body).map_err(|error| GatewayError::MalformedJson {
        reason: error.to_string(),
    })
}

/// Publishes one message.
#[utoipa::path(post, path = "/v1/topics/{topic}/messages", tag = "messages",
    params(("topic" = String, Path, description = "The topic")),
    request_body = PublishBody,
    security((), ("access_key" = [])),
    responses((status = 201, body = Published), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
async fn publish(
    State(gateway): State<Arc<Gateway>>,
    Extension(called): Extension<Called>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Answer<Published> {
    let topic = topic(path)?;
    let request: PublishBody = json(&body)?;
    let body = match (request.body, request.body_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|error| GatewayError::Argument {
                parameter: "body_base64",
                reason: format!("it is not standard base64: {error}"),
            })?,
        _ => {
            return Err(GatewayError::Argument {
                parameter: "body",
                reason: "give exactly one of `body` and `body_base64`".to_owned(),
            }
            .into());
        }
    };
    if body.is_empty() {
        return Err(GatewayError::Argument {
            parameter: "body",
            reason: "it is empty; a message needs a body".to_owned(),
        }
        .into());
    }
    let outgoing = Outgoing {
        topic,
        body,
        tag: request.tag.filter(|tag| !tag.is_empty()),
        keys: request.keys,
        user_properties: request.properties.into_iter().collect(),
        deliver_at_ms: request.deliver_at_ms,
        message_group: request.message_group.filter(|group| !group.is_empty()),
        transactional: false,
    };
    let receipt = gateway
        .publish(&called.caller, called.context.peer, outgoing)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Published {
            message_id: receipt.message_id,
            transaction_id: Some(receipt.transaction_id).filter(|id| !id.is_empty()),
        }),
    ))
}

/// Receives messages for a consumer group, waiting up to `wait_ms` for the
/// first; they stay invisible to the group for 300 s unless acknowledged.
#[utoipa::path(get, path = "/v1/topics/{topic}/messages", tag = "messages",
    params(("topic" = String, Path, description = "The topic"), ReceiveParameters),
    security((), ("access_key" = [])),
    responses((status = 200, body = Received), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
async fn receive(
    State(gateway): State<Arc<Gateway>>,
    Extension(called): Extension<Called>,
    path: Result<Path<String>, PathRejection>,
    parameters: Result<Query<ReceiveParameters>, QueryRejection>,
) -> Answer<Received> {
    let topic = topic(path)?;
    let Query(parameters) = parameters.map_err(|rejection| GatewayError::QueryString {
        reason: rejection.body_text(),
    })?;
    if parameters.group.trim().is_empty() {
        return Err(GatewayError::Argument {
            parameter: "group",
            reason: "it is empty".to_owned(),
        }
        .into());
    }
    let max = parameters.max.unwrap_or(16);
    if !(1..=MAX_BATCH).contains(&max) {
        return Err(GatewayError::Argument {
            parameter: "max",
            reason: format!("{max} is not from 1 to {MAX_BATCH}"),
        }
        .into());
    }
    let wait_ms = parameters.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(GatewayError::Argument {
            parameter: "wait_ms",
            reason: format!("{wait_ms} is more than {MAX_WAIT_MS}"),
        }
        .into());
    }
    let request = ReceiveMessageRequest {
        group: Some(message::resource(None, parameters.group.trim())),
        message_queue: Some(MessageQueue {
            topic: Some(topic),
            ..MessageQueue::default()
        }),
        filter_expression: Some(FilterExpression {
            r#type: FilterType::Tag as i32,
            expression: parameters
                .tag
                .filter(|tag| !tag.trim().is_empty())
                .unwrap_or_else(|| "*".to_owned()),
        }),
        batch_size: i32::try_from(max).unwrap_or(1),
        invisible_duration: Some(ProtoDuration {
            seconds: i64::try_from(INVISIBLE.as_secs()).unwrap_or(300),
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: None,
        attempt_id: None,
    };
    let backend = Arc::clone(&gateway.backend);
    let messages = gateway
        .long_poll(Duration::from_millis(wait_ms), |slice| {
            let (backend, caller) = (Arc::clone(&backend), called.caller.clone());
            let request = ReceiveMessageRequest {
                long_polling_timeout: Some(ProtoDuration {
                    seconds: i64::try_from(slice.as_secs()).unwrap_or(0),
                    nanos: i32::try_from(slice.subsec_nanos()).unwrap_or(0),
                }),
                ..request.clone()
            };
            async move { backend.receive(&caller, request).await }.boxed()
        })
        .await
        .map_err(GatewayError::refused("receiving"))?;
    let invisible_until_ms =
        message::now_ms().saturating_add(i64::try_from(INVISIBLE.as_millis()).unwrap_or(i64::MAX));
    let messages = messages
        .iter()
        .map(|message| {
            let delivered = Delivered(message);
            ReceivedMessage {
                message_id: delivered.message_id().to_owned(),
                receipt_handle: delivered.receipt_handle().to_owned(),
                body: std::str::from_utf8(&message.body).ok().map(str::to_owned),
                body_base64: base64::engine::general_purpose::STANDARD.encode(&message.body),
                tag: Some(delivered.tag().to_owned()).filter(|tag| !tag.is_empty()),
                keys: delivered.keys().to_vec(),
                properties: message
                    .user_properties
                    .iter()
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
                message_group: delivered.message_group().map(str::to_owned),
                born_at_ms: delivered.born_ms(),
                delivery_attempt: delivered.attempt(),
                invisible_until_ms,
            }
        })
        .collect();
    Ok((StatusCode::OK, Json(Received { messages })))
}

/// Acknowledges deliveries: one result per handle.
#[utoipa::path(post, path = "/v1/topics/{topic}/acks", tag = "messages",
    params(("topic" = String, Path, description = "The topic")),
    request_body = AckBody,
    security((), ("access_key" = [])),
    responses((status = 200, body = AckResults), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 500, body = ErrorBody)))]
async fn acknowledge(
    State(gateway): State<Arc<Gateway>>,
    Extension(called): Extension<Called>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Answer<AckResults> {
    let topic = topic(path)?;
    let request: AckBody = json(&body)?;
    if request.group.trim().is_empty() {
        return Err(GatewayError::Argument {
            parameter: "group",
            reason: "it is empty".to_owned(),
        }
        .into());
    }
    let count = request.receipt_handles.len();
    if count == 0 || count > MAX_BATCH as usize {
        return Err(GatewayError::Argument {
            parameter: "receipt_handles",
            reason: format!("{count} handles are named; 1 to {MAX_BATCH} are allowed"),
        }
        .into());
    }
    let outcomes = message::acknowledge(
        gateway.backend.as_ref(),
        &called.caller,
        topic,
        message::resource(None, request.group.trim()),
        &request.receipt_handles,
    )
    .await?;
    let results = request
        .receipt_handles
        .into_iter()
        .zip(outcomes)
        .map(|(receipt_handle, outcome)| {
            let error = outcome.err().map(|refusal| refusal.message);
            AckResult {
                receipt_handle,
                ok: error.is_none(),
                error,
            }
        })
        .collect();
    Ok((StatusCode::OK, Json(AckResults { results })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_names_every_route() {
        let document = serde_json::to_value(openapi_document()).expect("serializes");
        assert_eq!(document["openapi"], "3.1.0");
        for path in [
            "/v1/topics/{topic}/messages",
            "/v1/topics/{topic}/acks",
            "/v1/openapi.json",
        ] {
            assert!(document["paths"][path].is_object(), "{path}");
        }
        assert!(document["paths"]["/v1/topics/{topic}/messages"]["get"].is_object());
        assert!(document["paths"]["/v1/topics/{topic}/messages"]["post"].is_object());
        assert_eq!(
            document["components"]["securitySchemes"]["access_key"]["scheme"],
            "basic"
        );
        for schema in [
            "PublishBody",
            "Received",
            "ReceivedMessage",
            "AckBody",
            "ErrorBody",
        ] {
            assert!(
                document["components"]["schemas"][schema].is_object(),
                "{schema}"
            );
        }
    }

    #[test]
    fn unknown_json_fields_are_refused() {
        assert!(json::<PublishBody>(br#"{"body":"x","colour":"red"}"#).is_err());
        assert!(json::<AckBody>(br#"{"group":"g","receipt_handles":[],"x":1}"#).is_err());
        assert!(
            json::<PublishBody>(br#"{"body":"x","keys":["k"],"properties":{"a":"1"}}"#).is_ok()
        );
    }
}
