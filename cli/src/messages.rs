//! `meridian admin messages`: find messages of a region by key, tag or
//! time (`query`), and show one with its trace (`show`), through the node's
//! `AdminService` (`QueryMessages`, `GetMessage`).

use crate::admin::{table, to_text};
use meridian_proto::meridian::v1::admin_service_client::AdminServiceClient;
use meridian_proto::meridian::v1::{
    GetMessageRequest, MessageSummary, QueryMessagesRequest, TraceStep, TracedMessage,
};
use serde_json::{Value, json};
use std::fmt::Write as _;

#[derive(clap::Subcommand)]
pub enum MessageCommand {
    /// Messages of a topic stored in the region, oldest first: all of them,
    /// or those with a key or a tag, within a time range; a page at a time.
    Query {
        #[arg(long)]
        topic: String,
        /// Only messages with this key (RocketMQ message keys).
        #[arg(long, conflicts_with = "tag")]
        key: Option<String>,
        /// Only messages with this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Stored at or after: an RFC 3339 time (`2026-11-30T10:00:00Z`) or
        /// ms since the Unix epoch.
        #[arg(long, value_parser = parse_time)]
        from: Option<i64>,
        /// Stored before (same forms as --from).
        #[arg(long, value_parser = parse_time)]
        to: Option<i64>,
        /// Messages per page (1..=1000, default 100).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// The page after the one that printed this token.
        #[arg(long, default_value = "")]
        page: String,
    },
    /// One message (by the producer's message id or the 32-hex-digit dedup
    /// id) and its trace: sent, stored, arrived in other regions,
    /// delivered, acknowledged, dead-lettered, transaction outcome.
    Show {
        id: String,
        /// Print the body too (as UTF-8 where it is, else as hex).
        #[arg(long)]
        body: bool,
    },
}

/// Reads an RFC 3339 time or ms since the Unix epoch, as ms.
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|error| {
            format!(
                "`{text}` is neither an RFC 3339 time (2026-11-30T10:00:00Z) nor ms since the \
                 Unix epoch: {error}"
            )
        })?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("`{text}` is out of range"))
}

/// `ms` since the Unix epoch as an RFC 3339 time, UTC, always with three
/// decimals (so columns line up).
fn time_text(ms: i64) -> String {
    let format = time::format_description::parse_borrowed::<2>(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z",
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .zip(format.ok())
        .and_then(|(time, format)| time.format(&format).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Runs `command`; the text to print.
pub async fn run(
    client: &mut AdminServiceClient<meridian_face::access::SignedChannel>,
    command: &MessageCommand,
    as_json: bool,
) -> anyhow::Result<String> {
    let answer = |status: tonic::Status| anyhow::anyhow!("{}", status.message());
    Ok(match command {
        MessageCommand::Query {
            topic,
            key,
            tag,
            from,
            to,
            limit,
            page,
        } => {
            let found = client
                .query_messages(QueryMessagesRequest {
                    topic: topic.clone(),
                    key: key.clone(),
                    tag: tag.clone(),
                    start_ms: *from,
                    end_ms: *to,
                    limit: *limit,
                    page_token: page.clone(),
                })
                .await
                .map_err(answer)?
                .into_inner();
            if as_json {
                to_text(&json!({
                    "messages": found.messages.iter().map(summary_json).collect::<Vec<_>>(),
                    "next_page_token": found.next_page_token,
                }))
            } else {
                let mut text = messages_table(&found.messages);
                if !found.next_page_token.is_empty() {
                    let _ = writeln!(
                        text,
                        "more: add --page {} for the next page",
                        found.next_page_token
                    );
                }
                text
            }
        }
        MessageCommand::Show { id, body } => {
            let found = client
                .get_message(GetMessageRequest {
                    message_id: id.clone(),
                    with_body: *body,
                })
                .await
                .map_err(answer)?
                .into_inner();
            if as_json {
                to_text(&Value::Array(
                    found.messages.iter().map(traced_json).collect(),
                ))
            } else {
                found
                    .messages
                    .iter()
                    .map(traced_text)
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
    })
}

fn summary_json(message: &MessageSummary) -> Value {
    json!({
        "message_id": message.message_id,
        "dedup_id": message.dedup_id,
        "topic": message.topic,
        "tag": message.tag,
        "keys": message.keys,
        "message_type": message.message_type,
        "message_group": message.message_group,
        "queue_id": message.queue_id,
        "queue_offset": message.queue_offset,
        "origin_region": message.origin_region,
        "stored_at_ms": message.stored_at_ms,
        "born_at_ms": message.born_at_ms,
        "born_host": message.born_host,
        "producer_client_id": message.producer_client_id,
        "delivery_at_ms": message.delivery_at_ms,
        "body_bytes": message.body_bytes,
        "properties": message.properties,
        "state": message.state,
    })
}

fn step_json(step: &TraceStep) -> Value {
    json!({
        "at_ms": step.at_ms,
        "event": step.event,
        "region": step.region,
        "group": step.group,
        "client_id": step.client_id,
        "attempt": step.attempt,
        "detail": step.detail,
    })
}

fn traced_json(traced: &TracedMessage) -> Value {
    let mut value = traced
        .message
        .as_ref()
        .map(summary_json)
        .unwrap_or_default();
    value["trace"] = traced.trace.iter().map(step_json).collect();
    if let Some(body) = traced.body.as_ref() {
        value["body_hex"] = Value::String(hex::encode(body));
    }
    value
}

fn messages_table(messages: &[MessageSummary]) -> String {
    let rows: Vec<Vec<String>> = messages
        .iter()
        .map(|message| {
            vec![
                time_text(message.stored_at_ms),
                message.message_id.clone(),
                message.tag.clone().unwrap_or_default(),
                message.keys.join(","),
                message.queue_id.to_string(),
                message
                    .queue_offset
                    .map_or_else(|| "-".to_owned(), |offset| offset.to_string()),
                message.state.clone(),
                message.origin_region.clone(),
                message.body_bytes.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "STORED",
            "MESSAGE ID",
            "TAG",
            "KEYS",
            "QUEUE",
            "OFFSET",
            "STATE",
            "ORIGIN",
            "BYTES",
        ],
        &rows,
    )
}

fn traced_text(traced: &TracedMessage) -> String {
    let mut text = String::new();
    if let Some(message) = traced.message.as_ref() {
        let fields = [
            ("message id", message.message_id.clone()),
            ("dedup id", message.dedup_id.clone()),
            ("topic", message.topic.clone()),
            ("type", message.message_type.clone()),
            ("state", message.state.clone()),
            ("tag", message.tag.clone().unwrap_or_default()),
            ("keys", message.keys.join(", ")),
            (
                "queue",
                match message.queue_offset {
                    Some(offset) => format!("{} at offset {offset} here", message.queue_id),
                    None => message.queue_id.to_string(),
                },
            ),
            ("origin", message.origin_region.clone()),
            ("producer", message.producer_client_id.clone()),
            ("body", format!("{} bytes", message.body_bytes)),
        ];
        for (name, value) in fields {
            let _ = writeln!(text, "{name:<11} {value}");
        }
    }
    if let Some(body) = traced.body.as_ref() {
        let shown = match std::str::from_utf8(body) {
            Ok(utf8) => utf8.to_owned(),
            Err(_) => hex::encode(body),
        };
        let _ = writeln!(text, "{:<11} {shown}", "content");
    }
    text.push('\n');
    let rows: Vec<Vec<String>> = traced
        .trace
        .iter()
        .map(|step| {
            vec![
                time_text(step.at_ms),
                step.event.clone(),
                step.region.clone(),
                step.group.clone(),
                step.client_id.clone(),
                if step.attempt == 0 {
                    String::new()
                } else {
                    step.attempt.to_string()
                },
                step.detail.clone(),
            ]
        })
        .collect();
    text.push_str(&table(
        &[
            "TIME", "EVENT", "REGION", "GROUP", "CLIENT", "ATTEMPT", "DETAIL",
        ],
        &rows,
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_always_have_three_decimals() {
        assert_eq!(time_text(1_796_020_752_960), "2026-11-30T06:39:12.960Z");
        assert_eq!(time_text(1_796_020_752_000), "2026-11-30T06:39:12.000Z");
    }

    #[test]
    fn times_are_rfc_3339_or_ms() {
        assert_eq!(parse_time("1796020752960"), Ok(1_796_020_752_960));
        assert_eq!(
            parse_time("2026-11-30T06:39:12.960Z"),
            Ok(1_796_020_752_960)
        );
        assert!(parse_time("yesterday").is_err());
    }
}
