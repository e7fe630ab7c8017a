//! The admin API as JSON over HTTP, served on the region's admin address
//! next to its gRPC services (the same port answers HTTP/1.1 and HTTP/2),
//! for scripts and curl, with its OpenAPI 3 document at `/openapi.json`,
//! generated from these handlers and the API's messages (utoipa).
//!
//! Each endpoint calls the gRPC `AdminService` method of the same name, so
//! the two never disagree: the JSON bodies are the protobuf messages of
//! `admin.proto`, field for field (absent optional fields are `null`).
//! Errors are `{"error": "...", "code": "..."}` with 400 for a bad request
//! (`code` names the gRPC code, `error` the field and what is wrong; request
//! bodies with unknown fields included), 404 for an unknown topic, group,
//! message or path, 405 for a method a path does not take, 409 for a topic
//! or group that exists or a change a rule forbids (shrinking queues), 503
//! while the node stops and 500 otherwise.

use crate::grpc::admin::Admin;
use crate::storage::LogStore;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use meridian_face::access::Authentication;
use meridian_proto::meridian::v1::admin_service_server::AdminService;
use meridian_proto::meridian::v1::{
    DeleteGroupRequest, DeleteGroupResponse, DeleteTopicRequest, DeleteTopicResponse,
    DescribeGroupRequest, DescribeTopicRequest, ExportTopologyRequest, ExportTopologyResponse,
    GetMessageRequest, GetMessageResponse, GroupDefinition, GroupDescription, GroupQueueProgress,
    GroupSummary, ListGroupsRequest, ListGroupsResponse, ListTopicsRequest, ListTopicsResponse,
    MessageSummary, QueryMessagesRequest, QueryMessagesResponse, QueueOffsets, QueuePosition,
    ResetGroupRequest, ResetGroupResponse, TopicDefinition, TopicDescription, TopicSummary,
    TraceStep, TracedMessage, reset_group_request,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// The routes of the JSON admin API, over `admin`. With access keys, every
/// route but the OpenAPI document takes HTTP Basic credentials of a key
/// granted `admin` (401 without or with wrong ones, 403 for a key without
/// the grant).
pub fn router<S: LogStore>(admin: Arc<Admin<S>>, authentication: Authentication) -> axum::Router {
    let guarded = axum::Router::new()
        .route("/v1/topics", get(list_topics::<S>).post(create_topic::<S>))
        .route(
            "/v1/topics/{topic}",
            get(describe_topic::<S>)
                .put(update_topic::<S>)
                .delete(delete_topic::<S>),
        )
        .route("/v1/topics/{topic}/messages", get(query_messages::<S>))
        .route("/v1/groups", get(list_groups::<S>).post(create_group::<S>))
        .route(
            "/v1/groups/{group}",
            get(describe_group::<S>)
                .put(update_group::<S>)
                .delete(delete_group::<S>),
        )
        .route("/v1/export", get(export::<S>))
        .route("/v1/groups/{group}/reset", post(reset_group::<S>))
        .route("/v1/messages/{id}", get(get_message::<S>))
        .route_layer(axum::middleware::from_fn(move |request, next| {
            let authentication = authentication.clone();
            async move { admin_only(&authentication, request, next).await }
        }));
    axum::Router::new()
        .route("/openapi.json", get(openapi))
        .merge(guarded)
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(admin)
}

/// Passes requests with credentials of a key granted `admin`.
async fn admin_only(
    authentication: &Authentication,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let credentials = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    match authentication.check_admin_basic(credentials) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let forbidden = refusal.code == meridian_proto::rocketmq::v2::Code::Forbidden;
            let status = if forbidden {
                tonic::Status::permission_denied(refusal.message)
            } else {
                tonic::Status::unauthenticated(refusal.message)
            };
            let mut response = ApiError(status).into_response();
            if !forbidden {
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Basic realm=\"meridian admin\""),
                );
            }
            response
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Meridian admin API",
        description = "A region node's topics, consumer groups (progress, reset) and messages \
                       (query, trace). The same API is served over gRPC as \
                       meridian.v1.AdminService (proto/proto/meridian/v1/admin.proto)."
    ),
    paths(
        list_topics,
        create_topic,
        update_topic,
        delete_topic,
        create_group,
        update_group,
        delete_group,
        export,
        describe_topic,
        query_messages,
        list_groups,
        describe_group,
        reset_group,
        get_message
    ),
    components(schemas(
        ListTopicsResponse,
        TopicSummary,
        TopicDescription,
        QueueOffsets,
        ListGroupsResponse,
        GroupSummary,
        GroupDescription,
        GroupQueueProgress,
        ResetBody,
        ResetGroupResponse,
        QueuePosition,
        QueryMessagesResponse,
        MessageSummary,
        GetMessageResponse,
        TracedMessage,
        TraceStep,
        TopicDefinition,
        GroupDefinition,
        DeleteTopicResponse,
        DeleteGroupResponse,
        ExportTopologyResponse,
        ErrorBody
    ))
)]
struct ApiDoc;

/// The OpenAPI 3 document of this API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}

/// An error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What was wrong, naming the field for a bad request.
    error: String,
    /// The gRPC status code of the same answer (`INVALID_ARGUMENT`, `NOT_FOUND`, …).
    code: String,
}

/// A gRPC status as an HTTP answer.
struct ApiError(tonic::Status);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.0.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => StatusCode::BAD_REQUEST,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => StatusCode::CONFLICT,
            tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let code = format!("{:?}", self.0.code());
        let body = ErrorBody {
            error: self.0.message().to_owned(),
            code: screaming_snake(&code),
        };
        (status, Json(body)).into_response()
    }
}

/// `InvalidArgument` → `INVALID_ARGUMENT`.
fn screaming_snake(camel: &str) -> String {
    let mut text = String::with_capacity(camel.len() + 4);
    for (index, character) in camel.chars().enumerate() {
        if character.is_uppercase() && index > 0 {
            text.push('_');
        }
        text.push(character.to_ascii_uppercase());
    }
    text
}

type Answer<T> = Result<Json<T>, ApiError>;

fn answer<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Answer<T> {
    result
        .map(|response| Json(response.into_inner()))
        .map_err(ApiError)
}

/// Every topic this region holds, with its message count.
#[utoipa::path(get, path = "/v1/topics", tag = "topics",
    responses((status = 200, body = ListTopicsResponse)))]
async fn list_topics<S: LogStore>(
    State(admin): State<Arc<Admin<S>>>,
) -> Answer<ListTopicsResponse> {
    answer(
        admin
            .list_topics(tonic::Request::new(ListTopicsRequest {}))
            .await,
    )
}

/// One topic and, per queue, its first and next offset.
#[utoipa::path(get, path = "/v1/topics/{topic}", tag = "topics",
    params(("topic" = String, Path, description = "The topic's name")),
    responses((status = 200, body = TopicDescription), (status = 404, body = ErrorBody)))]
async fn describe_topic<S: LogStore>(
    State(admin): State<Arc<Admin<S>>>,
    Path(topic): Path<String>,
) -> Answer<TopicDescription> {
    answer(
        admin
            .describe_topic(tonic::Request::new(DescribeTopicRequest { topic }))
            .await,
    )
}

/// Which messages [`query_messages`] returns.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct MessageQuery {
    /// Only messages with this key (at most one of key and tag).
    key: Option<String>,
    /// Only messages with this tag.
    tag: Option<String>,
    /// Stored at or after, ms since the Unix epoch.
    start_ms: Option<i64>,
    /// Stored before, ms since the Unix epoch.
    end_ms: Option<i64>,
    /// Messages per page, 1..=1000 (default 100).
    limit: Option<u32>,
    /// The previous page's `next_page_token`.
    page_token: Option<String>,
}

/// Messages of a topic stored in this region, oldest first, a page at a time.
#[utoipa::path(get, path = "/v1/topics/{topic}/messages", tag = "messages",
    params(("topic" = String, Path, description = "The topic's name"), MessageQuery),
    responses((status = 200, body = QueryMessagesResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn query_messages<S: LogStore>(
    State(admin): State<Arc<Admin<S>>>,
    Path(topic): Path<String>,
    parameters: Result<Query<MessageQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<QueryMessagesResponse> {
    let query = self::query(parameters)?;
    answer(
        admin
            .query_messages(tonic::Request::new(QueryMessagesRequest {
                topic,
                key: query.key,
                tag: query.tag,
                start_ms: query.start_ms,
                end_ms: query.end_ms,
                limit: query.limit.unwrap_or_default(),
                page_token: query.page_token.unwrap_or_default(),
            }))
            .await,
    )
}

/// Every consumer group the topology configures or the node tracks.
#[utoipa::path(get, path = "/v1/groups", tag = "groups",
    responses((status = 200, body = ListGroupsResponse)))]
async fn list_groups<S: LogStore>(
    State(admin): State<Arc<Admin<S>>>,
) -> Answer<ListGroupsResponse> {
    answer(
        admin
            .list_groups(tonic::Request::new(ListGroupsRequest {}))
            .await,
    )
}

/// One consumer group's progress on every queue it consumed here.
#[utoipa::path(get, path = "/v1/groups/{group}", tag = "groups",
    params(("group" = String, Path, description = "The group's name")),
    responses((status = 200, body = GroupDescription), (status = 404, body = ErrorBody)))]
async fn describe_group<S: LogStore>(
    State(admin): State<Arc<Admin<S>>>,
    Path(group): Path<String>,
) -> Answer<GroupDescription> {
    answer(
        admin
            .describe_group(tonic::Request::new(DescribeGroupRequest { group }))
            .await,
    )
}

/// Where a reset moves a group: `to` is `earliest` or `latest`, or
/// `timestamp_ms` names a time (the first message stored at or after it).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    /// The topic whose queues are reset.
    topic: String,
    /// `earliest` or `latest`.
    to: Option<String>,
    /// ms since the Unix epoch.
    timestamp_ms: Option<i64>,
}

/// Moves a group's progress on every queue of a topic, effective at once
/// for running consumers (this region only).
#[utoipa::path(post, path = "/v1/groups/{group}/reset", tag = "groups",
    params(("group" = String, Path, description = "The group's name")),
    request_body = ResetBody,
    responses((status = 200, body = ResetGroupResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn reset_group<S: LogStore>(
    State(admin): State<Arc<Admin<S>>>,
    Path(group): Path<String>,
    body: Result<Json<ResetBody>, axum::extract::rejection::JsonRejection>,
) -> Answer<ResetGroupResponse> {
    let body = self::body(body)?;
    let to = match (body.to.as_deref(), body.timestamp_ms) {
        (Some("earliest"), None) => reset_group_request::To::Earliest(true),
        (Some("latest"), None) => reset_group_request::To::Latest(true),
        (None, Some(ms)) => reset_group_request::To::TimestampMs(ms),
        (Some(other), None) => {
            return Err(ApiError(tonic::Status::invalid_argument(format!(
                "to: `{other}` is neither `earliest` nor `latest` (give a time as timestamp_ms)"
            ))));
        }
        _ => {
            return Err(ApiError(tonic::Status::invalid_argument(
                "to: give exactly one of `to` (earliest, latest) and `timestamp_ms`",
            )));
        }
    };
    answer(
        admin
            .reset_group(tonic::Request::new(ResetGroupRequest {
                group,
                topic: body.topic,
                to: Some(to),
            }))
            .await,
    )
}

/// Any other path: JSON 404 for people and scripts, gRPC UNIMPLEMENTED for
/// gRPC clients (the same port serves the gRPC services).
async fn fallback(request: axum::extract::Request) -> Response {
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented(format!("no service at {}", request.uri().path()))
            .into_http();
    }
    ApiError(tonic::Status::not_found(format!(
        "no such path: {} (see /openapi.json)",
        request.uri().path()
    )))
    .into_response()
}

/// A known path with a method it does not take.
async fn method_not_allowed(request: axum::extract::Request) -> Response {
    let body = ErrorBody {
        error: format!(
            "{} does not take {} (see /openapi.json)",
            request.uri().path(),
            request.method()
        ),
        code: "UNIMPLEMENTED".to_owned(),
    };
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// Query parameters, or 400 naming what is wrong with them.
fn query<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query.map(|Query(query)| query).map_err(|rejection| {
        ApiError(tonic::Status::invalid_argument(format!(
            "query: {}",
            rejection.body_text()
        )))
    })
}

/// The name a body gives, if any, must be the path's.
fn same_name(path: &str, body: &str) -> Result<(), ApiError> {
    if body.is_empty() || body == path {
        Ok(())
    } else {
        Err(ApiError(tonic::Status::invalid_argument(format!(
            "name: the body names `{body}`, the path `{path}` (renaming is not supported)"
        ))))
    }
}

/// A JSON body, or 400 naming what is wrong with it.
fn body<T>(body: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(body)| body).map_err(|rejection| {
        ApiError(tonic::Status::invalid_argument(format!(
            "body: {}",
            rejection.body_text()
        )))
    })
}

/// Creates a topic; stored by the node and replicated to every region.
#[utoipa::path(post, path = "/v1/topics", tag = "topics", request_body = TopicDefinition,
    responses((status = 200, body = TopicSummary), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn create_topic<S: LogStore>(
    State(admin): State<Arc<Admin<S>>>,
    definition: Result<Json<TopicDefinition>, axum::extract::rejection::JsonRejection>,
) -> Answer<TopicSummary> {
    let definition = body(definition)?;
    answer(admin.create_topic(tonic::Request::new(definition)).await)
}

/// Changes the fields given of a topic (queues may grow, never shrink).
#[utoipa::path(put, path = "/v1/topics/{topic}", tag = "topics", request_body = TopicDefinition,
    params(("topic" = String, Path, description = "The topic's name")),
    responses((status = 200, body = TopicSummary), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_topic<S: LogStore>(
    State(admin): State<Arc<Admin<S>>>,
    Path(topic): Path<String>,
    definition: Result<Json<TopicDefinition>, axum::extract::rejection::JsonRejection>,
) -> Answer<TopicSummary> {
    let definition = body(definition)?;
    same_name(&topic, &definition.name)?;
    let definition = TopicDefinition {
        name: topic,
        ..definition
    };
    answer(admin.update_topic(tonic::Request::new(definition)).await)
}

/// Deletes a topic.
#[utoipa::path(delete, path = "/v1/topics/{topic}", tag = "topics",
    params(("topic" = String, Path, description = "The topic's name")),
    responses((status = 200, body = DeleteTopicResponse), (status = 404, body = ErrorBody)))]
async fn delete_topic<S: LogStore>(
    State(admin): State<Arc<Admin<S>>>,
    Path(topic): Path<String>,
) -> Answer<DeleteTopicResponse> {
    answer(
        admin
            .delete_topic(tonic::Request::new(DeleteTopicRequest { topic }))
            .await,
    )
}

/// Configures a consumer group.
#[utoipa::path(post, path = "/v1/groups", tag = "groups", request_body = GroupDefinition,
    responses((status = 200, body = GroupSummary), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn create_group<S: LogStore>(
    State(admin): State<Arc<Admin<S>>>,
    definition: Result<Json<GroupDefinition>, axum::extract::rejection::JsonRejection>,
) -> Answer<GroupSummary> {
    let definition = body(definition)?;
    answer(admin.create_group(tonic::Request::new(definition)).await)
}

/// Changes the fields given of a configured consumer group.
#[utoipa::path(put, path = "/v1/groups/{group}", tag = "groups", request_body = GroupDefinition,
    params(("group" = String, Path, description = "The group's name")),
    responses((status = 200, body = GroupSummary), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn update_group<S: LogStore>(
    State(admin): State<Arc<Admin<S>>>,
    Path(group): Path<String>,
    definition: Result<Json<GroupDefinition>, axum::extract::rejection::JsonRejection>,
) -> Answer<GroupSummary> {
    let definition = body(definition)?;
    same_name(&group, &definition.name)?;
    let definition = GroupDefinition {
        name: group,
        ..definition
    };
    answer(admin.update_group(tonic::Request::new(definition)).await)
}

/// Removes a group's configuration everywhere and its progress in this region.
#[utoipa::path(delete, path = "/v1/groups/{group}", tag = "groups",
    params(("group" = String, Path, description = "The group's name")),
    responses((status = 200, body = DeleteGroupResponse), (status = 404, body = ErrorBody)))]
async fn delete_group<S: LogStore>(
    State(admin): State<Arc<Admin<S>>>,
    Path(group): Path<String>,
) -> Answer<DeleteGroupResponse> {
    answer(
        admin
            .delete_group(tonic::Request::new(DeleteGroupRequest { group }))
            .await,
    )
}

/// The region's topology now, as a topology file (TOML).
#[utoipa::path(get, path = "/v1/export", tag = "topology",
    responses((status = 200, body = ExportTopologyResponse)))]
async fn export<S: LogStore>(State(admin): State<Arc<Admin<S>>>) -> Answer<ExportTopologyResponse> {
    answer(
        admin
            .export_topology(tonic::Request::new(ExportTopologyRequest {}))
            .await,
    )
}

/// Options of [`get_message`].
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct MessageOptions {
    /// Include the bodies (base64).
    with_body: Option<bool>,
}

/// The messages with an id (the producer's, or the 32-hex-digit dedup id),
/// with their traces.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, description = "Message id or dedup id"), MessageOptions),
    responses((status = 200, body = GetMessageResponse), (status = 404, body = ErrorBody)))]
async fn get_message<S: LogStore>(
    State(admin): State<Arc<Admin<S>>>,
    Path(id): Path<String>,
    parameters: Result<Query<MessageOptions>, axum::extract::rejection::QueryRejection>,
) -> Answer<GetMessageResponse> {
    let options = query(parameters)?;
    answer(
        admin
            .get_message(tonic::Request::new(GetMessageRequest {
                message_id: id,
                with_body: options.with_body.unwrap_or(false),
            }))
            .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_route_and_schema() {
        let document = serde_json::to_value(openapi_document()).expect("JSON");
        assert_eq!(document["openapi"], "3.1.0");
        for path in [
            "/v1/topics",
            "/v1/topics/{topic}",
            "/v1/topics/{topic}/messages",
            "/v1/groups",
            "/v1/groups/{group}",
            "/v1/groups/{group}/reset",
            "/v1/messages/{id}",
            "/v1/export",
        ] {
            assert!(document["paths"][path].is_object(), "{path} missing");
        }
        assert!(document["components"]["schemas"]["TracedMessage"].is_object());
    }

    #[test]
    fn status_codes_are_named_as_grpc_names_them() {
        assert_eq!(screaming_snake("InvalidArgument"), "INVALID_ARGUMENT");
        assert_eq!(screaming_snake("NotFound"), "NOT_FOUND");
    }
}
