//! Message query and trace for the admin API (`QueryMessages`,
//! `GetMessage`): read through storage's indexes, bounded per call.

use super::NodeContext;
use crate::error::NodeError;
use crate::storage::{IndexLookup, LogStore, MessageIndex, QueryPosition};
use meridian_proto::meridian::v1::{
    GetMessageRequest, GetMessageResponse, MessageSummary, MessageType, QueryMessagesRequest,
    QueryMessagesResponse, Record, TraceEventKind, TraceStep, TracedMessage, TransactionEndSource,
};
use tonic::Status;

/// Messages one QueryMessages page returns when the request names no limit.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most messages one QueryMessages page returns.
pub const MAX_LIMIT: u32 = 1000;
/// Most messages GetMessage returns for one id (producers that reuse ids).
const MAX_SAME_ID: usize = 16;
/// Most trace records read for one message.
const MAX_TRACE_RECORDS: usize = 1000;

fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

/// A page token: the last position returned, `<stored ms>.<sequence>`.
fn page_token(position: QueryPosition) -> String {
    format!("{}.{}", position.stored_ms, position.sequence)
}

fn parse_page_token(token: &str) -> Result<Option<QueryPosition>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let parsed = token.split_once('.').and_then(|(stored, sequence)| {
        Some(QueryPosition {
            stored_ms: stored.parse().ok()?,
            sequence: sequence.parse().ok()?,
        })
    });
    parsed
        .map(Some)
        .ok_or_else(|| invalid("page_token", "not a token a previous answer gave"))
}

/// QueryMessages: see `admin.proto`.
pub async fn query<S: LogStore>(
    context: &NodeContext<S>,
    request: QueryMessagesRequest,
) -> Result<QueryMessagesResponse, Status> {
    let topic = request.topic.trim().to_owned();
    if topic.is_empty() {
        return Err(invalid("topic", "empty"));
    }
    if context.topology.get().topic(&topic).is_none() {
        return Err(Status::not_found(format!("topic `{topic}` does not exist")));
    }
    let limit = match request.limit {
        0 => DEFAULT_LIMIT,
        limit if limit > MAX_LIMIT => {
            return Err(invalid(
                "limit",
                format!("{limit} is above the most one page returns ({MAX_LIMIT})"),
            ));
        }
        limit => limit,
    };
    let start = request.start_ms.unwrap_or(i64::MIN);
    let end = request.end_ms.unwrap_or(i64::MAX);
    if start >= end {
        return Err(invalid(
            "end_ms",
            format!("the range must end ({end}) after it starts ({start})"),
        ));
    }
    let after = parse_page_token(&request.page_token)?;
    let (key, tag) = (request.key, request.tag);
    if key.is_some() && tag.is_some() {
        return Err(invalid("tag", "set at most one of key and tag"));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    context
        .blocking(move |store, _| {
            let index = match (&key, &tag) {
                (Some(key), _) => MessageIndex::Key(key),
                (None, Some(tag)) => MessageIndex::Tag(tag),
                (None, None) => MessageIndex::Time,
            };
            // One more than asked: whether another page follows.
            let mut found = store.query_messages(&topic, index, start..end, after, limit + 1)?;
            let more = found.len() > limit;
            found.truncate(limit);
            let next_page_token = match (more, found.last()) {
                (true, Some((position, _))) => page_token(*position),
                _ => String::new(),
            };
            let messages = found
                .iter()
                .map(|(_, record)| summary(store, record))
                .collect::<Result<_, _>>()?;
            Ok(QueryMessagesResponse {
                messages,
                next_page_token,
            })
        })
        .await
        .map_err(|error| error.to_grpc())
}

/// GetMessage: see `admin.proto`.
pub async fn get<S: LogStore>(
    context: &NodeContext<S>,
    request: GetMessageRequest,
) -> Result<GetMessageResponse, Status> {
    let id = request.message_id.trim().to_owned();
    if id.is_empty() {
        return Err(invalid("message_id", "empty"));
    }
    let with_body = request.with_body;
    let local_region = context.region.clone();
    let messages = context
        .blocking(move |store, _| {
            let mut records = store.indexed_records(IndexLookup::MessageId(&id), MAX_SAME_ID)?;
            if records.is_empty()
                && let Some(dedup_id) = hex::decode(&id).ok().filter(|id| id.len() == 16)
                && let Some(location) = store.locate_message(&dedup_id)?
            {
                records.extend(store.get(location.sequence)?);
            }
            records
                .into_iter()
                .filter(|record| record.message.is_some())
                .map(|record| traced(store, &record, &local_region, with_body))
                .collect::<Result<Vec<_>, NodeError>>()
        })
        .await
        .map_err(|error| error.to_grpc())?;
    if messages.is_empty() {
        return Err(Status::not_found(format!(
            "no message with id `{}` is stored in region `{}`",
            request.message_id.trim(),
            context.region
        )));
    }
    Ok(GetMessageResponse { messages })
}

/// Where a step comes among steps of the same millisecond.
fn step_rank(event: &str) -> u8 {
    match event {
        "sent" => 0,
        "stored" => 1,
        "transaction checked" => 2,
        "transaction committed" | "transaction rolled back" => 3,
        "arrived" => 4,
        "delivered" => 5,
        "acknowledged" => 6,
        "dead-lettered" => 7,
        _ => 8,
    }
}

fn type_name(message_type: i32) -> &'static str {
    match MessageType::try_from(message_type) {
        Ok(MessageType::Fifo) => "fifo",
        Ok(MessageType::Delay) => "delay",
        Ok(MessageType::Transaction) => "transaction",
        _ => "normal",
    }
}

/// What an admin sees of a stored message.
fn summary<S: LogStore>(store: &S, record: &Record) -> Result<MessageSummary, NodeError> {
    let message = record.message.clone().unwrap_or_default();
    let location = store.locate_message(&record.dedup_id)?;
    let queue_offset = location.and_then(|location| location.queue_offset);
    let transactional = message.message_type == MessageType::Transaction as i32;
    let state = match (queue_offset, transactional) {
        (Some(_), true) => "committed",
        (Some(_), false) => "stored",
        (None, true) if location.is_some_and(|location| location.open_transaction) => "half",
        (None, true) => "rolled back",
        (None, false) => "scheduled",
    };
    Ok(MessageSummary {
        message_id: message.client_message_id,
        dedup_id: hex::encode(&record.dedup_id),
        topic: message.topic,
        tag: message.tag,
        keys: message.keys,
        message_type: type_name(message.message_type).to_owned(),
        message_group: message.message_group,
        queue_id: message.queue_id,
        queue_offset,
        origin_region: record.origin_region.clone(),
        stored_at_ms: message.store_timestamp_ms,
        born_at_ms: message.born_timestamp_ms,
        born_host: message.born_host,
        producer_client_id: message.producer_client_id,
        delivery_at_ms: message.delivery_timestamp_ms,
        body_bytes: u64::try_from(message.body.len()).unwrap_or(u64::MAX),
        properties: message.user_properties.into_iter().collect(),
        state: state.to_owned(),
    })
}

/// A message with its trace, oldest step first.
fn traced<S: LogStore>(
    store: &S,
    record: &Record,
    local_region: &str,
    with_body: bool,
) -> Result<TracedMessage, NodeError> {
    let summary = summary(store, record)?;
    let message = record.message.as_ref();
    let mut trace = vec![
        TraceStep {
            at_ms: summary.born_at_ms,
            event: "sent".to_owned(),
            region: summary.origin_region.clone(),
            client_id: summary.producer_client_id.clone(),
            detail: format!("from host {}", summary.born_host),
            ..TraceStep::default()
        },
        TraceStep {
            at_ms: summary.stored_at_ms,
            event: "stored".to_owned(),
            region: summary.origin_region.clone(),
            detail: match (summary.origin_region == local_region, summary.queue_offset) {
                (true, Some(offset)) => format!("queue {}, offset {offset}", summary.queue_id),
                _ => format!("queue {}", summary.queue_id),
            },
            ..TraceStep::default()
        },
    ];
    for trace_record in
        store.indexed_records(IndexLookup::Trace(&record.dedup_id), MAX_TRACE_RECORDS)?
    {
        let Some(events) = trace_record.trace else {
            continue;
        };
        for event in events
            .events
            .into_iter()
            .filter(|event| event.message_dedup_id == record.dedup_id)
        {
            let kind = TraceEventKind::try_from(event.kind).unwrap_or_default();
            let (name, detail) = match kind {
                TraceEventKind::Arrived => ("arrived", format!("from {}", event.from_region)),
                TraceEventKind::Delivered => ("delivered", String::new()),
                TraceEventKind::Acknowledged => ("acknowledged", String::new()),
                TraceEventKind::DeadLettered => (
                    "dead-lettered",
                    format!("after {} deliveries", event.attempt),
                ),
                TraceEventKind::TransactionChecked => ("transaction checked", String::new()),
                TraceEventKind::Unspecified => ("unknown", String::new()),
            };
            trace.push(TraceStep {
                at_ms: event.at_ms,
                event: name.to_owned(),
                region: event.region,
                group: event.group,
                client_id: event.client_id,
                attempt: event.attempt,
                detail,
            });
        }
    }
    if let Some(end_sequence) =
        store.find_dedup(&crate::transactions::end_dedup_id(&record.dedup_id))?
        && let Some(end_record) = store.get(end_sequence)?
        && let Some(end) = end_record.transaction_end
    {
        let source = match TransactionEndSource::try_from(end.source).unwrap_or_default() {
            TransactionEndSource::Client => "by the producer",
            TransactionEndSource::ServerCheck => "by the producer, answering a check-back",
            TransactionEndSource::Timeout => "by the node: no outcome in time",
            TransactionEndSource::Unspecified => "",
        };
        trace.push(TraceStep {
            at_ms: end.ended_at_ms,
            event: if end.commit {
                "transaction committed"
            } else {
                "transaction rolled back"
            }
            .to_owned(),
            region: end_record.origin_region,
            client_id: end.client_id,
            detail: source.to_owned(),
            ..TraceStep::default()
        });
    }
    // Steps of the same ms in the order they can happen in.
    trace.sort_by_key(|step| (step.at_ms, step_rank(&step.event)));
    Ok(TracedMessage {
        message: Some(summary),
        body: with_body.then(|| {
            message
                .map(|message| message.body.clone())
                .unwrap_or_default()
        }),
        trace,
    })
}
