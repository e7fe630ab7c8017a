//! The Alibaba Cloud MQ HTTP API (2015-06-06) on `/topics/{topic}/messages`
//! (brief A1–A6), mapped onto the backend:
//!
//! | request | backend |
//! |---|---|
//! | `POST` | `send` of one message (type from the reserved properties) |
//! | `GET` | `receive_with` (ordered with `trans=order`), repeated until `waitseconds` pass |
//! | `GET …&trans=pop` | `take_check_backs`: half messages, `ReceiptHandle` = transaction id |
//! | `DELETE` | `ack` of the handles |
//! | `DELETE …&trans=commit\|rollback` | `end_transaction` per handle (`consumer` not needed) |
//!
//! `ns` (the instance) prefixes topic and group: `NS%TOPIC`, `NS%GROUP`.
//! A consume that finds nothing answers 404 `MessageNotExist` (never 200
//! with no messages: Node crashes on that).
//!
//! In consume answers, `MessageBody` is the body as UTF-8 (a body that is
//! not UTF-8 is sent with U+FFFD in place of its invalid bytes, and its
//! `MessageBodyMD5` is that of the stored bytes); `FirstConsumeTime` is the
//! time of *this* delivery (a timed message's due time, else the time of
//! the answer), not fixed across redeliveries as Aliyun's is;
//! `NextConsumeTime` is the answer's time plus the invisible time (300 s,
//! 60 s ordered); for check-backs it is the answer's time plus 10 s, about
//! when the node offers the half message again.

use crate::error::{GatewayError, XML_CONTENT_TYPE, handle_error_code};
use crate::message::{self, Delivered, Outgoing};
use crate::request::{Gateway, RequestContext};
use crate::{properties, signature, xml};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use futures::FutureExt as _;
use meridian_face::{Caller, ReceiveOptions};
use meridian_proto::prost_types::Duration as ProtoDuration;
use meridian_proto::rocketmq::v2::{
    EndTransactionRequest, FilterExpression, FilterType, Message, MessageQueue,
    ReceiveMessageRequest, Resource, TransactionResolution, TransactionSource,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Most messages one consume asks for, and most handles one ack names.
const MAX_BATCH: usize = 16;
/// Longest `waitseconds`.
const MAX_WAIT_SECONDS: u64 = 30;
/// Longest `MessageTag`, in characters.
const MAX_TAG_CHARS: usize = 64;
/// How long a delivered message stays invisible (the SDKs: "ack within 300 s").
const INVISIBLE: Duration = Duration::from_secs(300);
/// How long an ordered delivery stays invisible (the docs: one minute).
const INVISIBLE_ORDERED: Duration = Duration::from_secs(60);
/// About when a check-back's half message is offered again.
const CHECK_BACK_INTERVAL: Duration = Duration::from_secs(10);
/// What this face serves (for errors naming an unknown path).
const SERVED: &str =
    "/topics/{topic}/messages (and the JSON API under /v1/, described at /v1/openapi.json)";

/// The query parameters of the API; each at most once.
#[derive(Debug, Default)]
struct Query {
    consumer: Option<String>,
    num_of_messages: Option<String>,
    ns: Option<String>,
    wait_seconds: Option<String>,
    tag: Option<String>,
    trans: Option<String>,
}

impl Query {
    fn parse(raw: Option<&str>) -> Result<Query, GatewayError> {
        let mut query = Query::default();
        for (name, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let slot = match name.as_ref() {
                "consumer" => &mut query.consumer,
                "numOfMessages" => &mut query.num_of_messages,
                "ns" => &mut query.ns,
                "waitseconds" => &mut query.wait_seconds,
                "tag" => &mut query.tag,
                "trans" => &mut query.trans,
                // Unknown parameters are ignored, as SDKs may add some.
                _ => continue,
            };
            if slot.is_some() {
                return Err(GatewayError::QueryString {
                    reason: format!("`{name}` is given more than once"),
                });
            }
            *slot = Some(value.into_owned());
        }
        Ok(query)
    }

    fn ns(&self) -> Option<&str> {
        self.ns.as_deref().filter(|ns| !ns.is_empty())
    }

    fn trans(&self) -> &str {
        self.trans.as_deref().unwrap_or_default()
    }

    /// The consumer group, required.
    fn group(&self) -> Result<Resource, GatewayError> {
        match self.consumer.as_deref().map(str::trim) {
            Some(consumer) if !consumer.is_empty() => Ok(message::resource(self.ns(), consumer)),
            _ => Err(GatewayError::Argument {
                parameter: "consumer",
                reason: "the query parameter `consumer` (the group id) is required".to_owned(),
            }),
        }
    }
}

/// A number parameter within `range`.
fn number(
    parameter: &'static str,
    value: Option<&str>,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, GatewayError> {
    let Some(value) = value else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(number) if range.contains(&number) => Ok(Some(number)),
        _ => Err(GatewayError::Argument {
            parameter,
            reason: format!(
                "`{}` is not a number from {} to {}",
                value.chars().take(32).collect::<String>(),
                range.start(),
                range.end()
            ),
        }),
    }
}

/// The topic of `/topics/{topic}/messages`, percent-decoded.
fn topic_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/topics/")?;
    let topic = rest.strip_suffix("/messages")?;
    if topic.is_empty() || topic.contains('/') {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(topic)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!decoded.is_empty()).then_some(decoded)
}

/// Serves one request of the API.
pub(crate) async fn handle(
    gateway: &Gateway,
    context: &RequestContext,
    parts: &Parts,
    body: Bytes,
) -> Result<Response, GatewayError> {
    let topic = topic_of(parts.uri.path()).ok_or_else(|| GatewayError::UnknownPath {
        path: parts.uri.path().chars().take(128).collect(),
        served: SERVED,
    })?;
    if ![Method::POST, Method::GET, Method::DELETE].contains(&parts.method) {
        return Err(GatewayError::MethodNotAllowed {
            method: parts.method.to_string(),
            path: "/topics/{topic}/messages".to_owned(),
            allowed: "POST, GET, DELETE",
        });
    }
    let access_key = match gateway.config.authentication.keys() {
        Some(keys) => Some(signature::verify(
            keys,
            &parts.method,
            &parts.uri,
            &parts.headers,
            SystemTime::now(),
        )?),
        None => None,
    };
    let caller = context.caller(access_key.as_deref());
    let query = Query::parse(parts.uri.query())?;
    let topic = message::resource(query.ns(), &topic);
    match parts.method {
        Method::POST => publish(gateway, context, &caller, topic, &body).await,
        Method::GET => consume(gateway, &caller, topic, &query).await,
        _ => delete(gateway, &caller, topic, &query, &body).await,
    }
}

fn xml_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(XML_CONTENT_TYPE),
    );
    response
}

async fn publish(
    gateway: &Gateway,
    context: &RequestContext,
    caller: &Caller,
    topic: Resource,
    body: &[u8],
) -> Result<Response, GatewayError> {
    let request = xml::parse_publish(body)?;
    if request.body.is_empty() {
        return Err(GatewayError::Argument {
            parameter: "MessageBody",
            reason: "it is empty; a message needs a body".to_owned(),
        });
    }
    if let Some(tag) = request.tag.as_deref()
        && tag.chars().count() > MAX_TAG_CHARS
    {
        return Err(GatewayError::Argument {
            parameter: "MessageTag",
            reason: format!("it is longer than {MAX_TAG_CHARS} characters"),
        });
    }
    let properties =
        properties::parse(request.properties.as_deref().unwrap_or_default()).map_err(|error| {
            GatewayError::Argument {
                parameter: "Properties",
                reason: error.to_string(),
            }
        })?;
    let body = request.body.into_bytes();
    let body_md5 = message::body_md5(&body);
    let outgoing = Outgoing {
        topic,
        body,
        tag: request.tag,
        keys: properties.keys,
        user_properties: properties.user.into_iter().collect(),
        deliver_at_ms: properties.start_deliver_time_ms,
        message_group: properties.sharding_key,
        transactional: properties.transactional,
    };
    let receipt = gateway.publish(caller, context.peer, outgoing).await?;
    let transaction = Some(receipt.transaction_id.as_str()).filter(|id| !id.is_empty());
    Ok(xml_response(
        StatusCode::CREATED,
        xml::write_published(&receipt.message_id, &body_md5, transaction),
    ))
}

async fn consume(
    gateway: &Gateway,
    caller: &Caller,
    topic: Resource,
    query: &Query,
) -> Result<Response, GatewayError> {
    let count = number(
        "numOfMessages",
        query.num_of_messages.as_deref(),
        1..=MAX_BATCH as u64,
    )?
    .ok_or_else(|| GatewayError::Argument {
        parameter: "numOfMessages",
        reason: format!("the query parameter `numOfMessages` (1 to {MAX_BATCH}) is required"),
    })?;
    let wait = Duration::from_secs(
        number(
            "waitseconds",
            query.wait_seconds.as_deref(),
            0..=MAX_WAIT_SECONDS,
        )?
        .unwrap_or(0),
    );
    let count = usize::try_from(count).unwrap_or(MAX_BATCH);
    let consumed = match query.trans() {
        "" => receive(gateway, caller, topic, query, count, wait, false).await?,
        "order" => receive(gateway, caller, topic, query, count, wait, true).await?,
        "pop" => check_backs(gateway, caller, topic, count, wait).await?,
        other => {
            return Err(GatewayError::Argument {
                parameter: "trans",
                reason: format!(
                    "`{}` is not one of `order` and `pop` for a consume",
                    other.chars().take(32).collect::<String>()
                ),
            });
        }
    };
    if consumed.is_empty() {
        return Err(GatewayError::NoMessage);
    }
    Ok(xml_response(StatusCode::OK, xml::write_messages(&consumed)))
}

async fn receive(
    gateway: &Gateway,
    caller: &Caller,
    topic: Resource,
    query: &Query,
    count: usize,
    wait: Duration,
    ordered: bool,
) -> Result<Vec<xml::ConsumedMessage>, GatewayError> {
    let group = query.group()?;
    let tag = query
        .tag
        .as_deref()
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
        .unwrap_or("*");
    let invisible = if ordered {
        INVISIBLE_ORDERED
    } else {
        INVISIBLE
    };
    let request = ReceiveMessageRequest {
        group: Some(group),
        message_queue: Some(MessageQueue {
            topic: Some(topic),
            ..MessageQueue::default()
        }),
        filter_expression: Some(FilterExpression {
            r#type: FilterType::Tag as i32,
            expression: tag.to_owned(),
        }),
        batch_size: i32::try_from(count).unwrap_or(1),
        invisible_duration: Some(proto_duration(invisible)),
        auto_renew: false,
        long_polling_timeout: None,
        attempt_id: None,
    };
    let options = ReceiveOptions { ordered };
    let backend = Arc::clone(&gateway.backend);
    let messages = gateway
        .long_poll(wait, |slice| {
            let (backend, caller) = (Arc::clone(&backend), caller.clone());
            let request = ReceiveMessageRequest {
                long_polling_timeout: Some(proto_duration(slice)),
                ..request.clone()
            };
            async move { backend.receive_with(&caller, request, options).await }.boxed()
        })
        .await
        .map_err(GatewayError::refused("consuming"))?;
    let now = message::now_ms();
    Ok(messages
        .iter()
        .map(|message| {
            let delivered = Delivered(message);
            let invisible_ms = message
                .system_properties
                .as_ref()
                .and_then(|system| system.invisible_duration.as_ref())
                .map_or_else(
                    || duration_ms(invisible),
                    |duration| {
                        duration
                            .seconds
                            .saturating_mul(1000)
                            .saturating_add(i64::from(duration.nanos / 1_000_000))
                    },
                );
            consumed(
                message,
                delivered.receipt_handle().to_owned(),
                delivered
                    .delivery_ms()
                    .filter(|at| *at <= now)
                    .unwrap_or(now),
                now.saturating_add(invisible_ms),
            )
        })
        .collect())
}

async fn check_backs(
    gateway: &Gateway,
    caller: &Caller,
    topic: Resource,
    count: usize,
    wait: Duration,
) -> Result<Vec<xml::ConsumedMessage>, GatewayError> {
    let backend = Arc::clone(&gateway.backend);
    let check_backs = gateway
        .long_poll(wait, |slice| {
            let (backend, caller, topic) = (Arc::clone(&backend), caller.clone(), topic.clone());
            async move {
                backend
                    .take_check_backs(&caller, &topic, count, slice)
                    .await
            }
            .boxed()
        })
        .await
        .map_err(GatewayError::refused("polling for transaction check-backs"))?;
    let now = message::now_ms();
    Ok(check_backs
        .iter()
        .map(|check_back| {
            consumed(
                &check_back.message,
                check_back.transaction_id.clone(),
                now,
                now.saturating_add(duration_ms(CHECK_BACK_INTERVAL)),
            )
        })
        .collect())
}

/// A delivered message as the consume answer carries it.
fn consumed(
    message: &Message,
    receipt_handle: String,
    first_consume_time_ms: i64,
    next_consume_time_ms: i64,
) -> xml::ConsumedMessage {
    let delivered = Delivered(message);
    xml::ConsumedMessage {
        message_id: delivered.message_id().to_owned(),
        receipt_handle,
        body_md5: message::body_md5(&message.body),
        body: String::from_utf8_lossy(&message.body).into_owned(),
        publish_time_ms: delivered.born_ms(),
        first_consume_time_ms,
        next_consume_time_ms,
        consumed_times: delivered.attempt(),
        tag: delivered.tag().to_owned(),
        properties: properties::render(message),
    }
}

async fn delete(
    gateway: &Gateway,
    caller: &Caller,
    topic: Resource,
    query: &Query,
    body: &[u8],
) -> Result<Response, GatewayError> {
    let handles = xml::parse_receipt_handles(body)?;
    if handles.is_empty() || handles.iter().any(String::is_empty) {
        return Err(GatewayError::MissingReceiptHandle);
    }
    if handles.len() > MAX_BATCH {
        return Err(GatewayError::Argument {
            parameter: "ReceiptHandles",
            reason: format!(
                "{} handles are named; at most {MAX_BATCH} are allowed",
                handles.len()
            ),
        });
    }
    let failures = match query.trans() {
        "" => acknowledge(gateway, caller, topic, query.group()?, &handles).await?,
        "commit" => end_transactions(gateway, caller, topic, &handles, true).await,
        "rollback" => end_transactions(gateway, caller, topic, &handles, false).await,
        other => {
            return Err(GatewayError::Argument {
                parameter: "trans",
                reason: format!(
                    "`{}` is not one of `commit` and `rollback` for a delete",
                    other.chars().take(32).collect::<String>()
                ),
            });
        }
    };
    if failures.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(xml_response(
        StatusCode::NOT_FOUND,
        xml::write_handle_errors(&failures),
    ))
}

async fn acknowledge(
    gateway: &Gateway,
    caller: &Caller,
    topic: Resource,
    group: Resource,
    handles: &[String],
) -> Result<Vec<xml::HandleError>, GatewayError> {
    let outcomes =
        message::acknowledge(gateway.backend.as_ref(), caller, topic, group, handles).await?;
    Ok(handles
        .iter()
        .zip(outcomes)
        .filter_map(|(handle, outcome)| {
            outcome.err().map(|refusal| xml::HandleError {
                code: handle_error_code(refusal.code),
                message: refusal.message,
                receipt_handle: handle.clone(),
            })
        })
        .collect())
}

async fn end_transactions(
    gateway: &Gateway,
    caller: &Caller,
    topic: Resource,
    handles: &[String],
    commit: bool,
) -> Vec<xml::HandleError> {
    let resolution = if commit {
        TransactionResolution::Commit
    } else {
        TransactionResolution::Rollback
    };
    let mut failures = Vec::new();
    for handle in handles {
        let request = EndTransactionRequest {
            topic: Some(topic.clone()),
            message_id: String::new(),
            transaction_id: handle.clone(),
            resolution: resolution as i32,
            source: TransactionSource::SourceClient as i32,
            trace_context: String::new(),
        };
        if let Err(refusal) = gateway.backend.end_transaction(caller, request).await {
            failures.push(xml::HandleError {
                code: handle_error_code(refusal.code),
                message: refusal.message,
                receipt_handle: handle.clone(),
            });
        }
    }
    failures
}

fn proto_duration(duration: Duration) -> ProtoDuration {
    ProtoDuration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_come_from_the_path() {
        assert_eq!(topic_of("/topics/T1/messages").as_deref(), Some("T1"));
        assert_eq!(topic_of("/topics/a%20b/messages").as_deref(), Some("a b"));
        assert_eq!(topic_of("/topics/a+b/messages").as_deref(), Some("a+b"));
        assert_eq!(topic_of("/topics/%ff/messages"), None);
        assert_eq!(topic_of("/topics//messages"), None);
        assert_eq!(topic_of("/topics/a/b/messages"), None);
        assert_eq!(topic_of("/topics/T1/messages/"), None);
        assert_eq!(topic_of("/"), None);
    }

    #[test]
    fn query_parameters_in_any_order_each_once() {
        let query = Query::parse(Some(
            "numOfMessages=3&tag=TagA%7C%7CTagB&consumer=GID_1&ns=MQ_INST_1&waitseconds=3&trans=order&extra=1",
        ))
        .expect("parses");
        assert_eq!(query.consumer.as_deref(), Some("GID_1"));
        assert_eq!(query.tag.as_deref(), Some("TagA||TagB"));
        assert_eq!(query.trans(), "order");
        assert_eq!(query.group().expect("a group").name, "MQ_INST_1%GID_1");
        assert!(matches!(
            Query::parse(Some("consumer=a&consumer=b")),
            Err(GatewayError::QueryString { .. })
        ));
        let go_commit = Query::parse(Some("consumer=&trans=commit")).expect("parses");
        assert!(go_commit.group().is_err());
        assert_eq!(Query::parse(None).expect("parses").trans(), "");
    }

    #[test]
    fn numbers_must_be_in_range() {
        assert_eq!(number("n", Some("16"), 1..=16).expect("in range"), Some(16));
        assert_eq!(number("n", None, 1..=16).expect("absent"), None);
        for bad in ["0", "17", "-1", "x", ""] {
            assert!(number("n", Some(bad), 1..=16).is_err(), "{bad}");
        }
    }
}
