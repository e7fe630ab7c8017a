//! `meridian admin`: a region's topics and consumer groups, read from its
//! node's `meridian.v1.AdminService` on the admin address. Tables for
//! people, `--json` for scripts (one JSON document on stdout).

use anyhow::Context as _;
use meridian_face::access::{AccessKeys, Authentication, Signer};
use meridian_face::tls::Dialer;
use meridian_proto::meridian::v1::admin_service_client::AdminServiceClient;
use meridian_proto::meridian::v1::{
    DeleteGroupRequest, DeleteTopicRequest, DescribeGroupRequest, DescribeTopicRequest,
    ExportTopologyRequest, GroupDefinition, GroupDescription, GroupSummary, ListGroupsRequest,
    ListTopicsRequest, ResetGroupRequest, TopicDefinition, TopicDescription, TopicSummary,
    reset_group_request,
};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

/// How long the node may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What `meridian admin` asks.
#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Topics of the region: `list`, `describe NAME` (per queue offsets),
    /// `create NAME …`, `update NAME …`, `delete NAME`.
    #[command(subcommand)]
    Topics(TopicCommand),
    /// Consumer groups: `list`, `describe NAME` (per queue: consumed
    /// offset, in flight, backlog, age of the oldest unacknowledged
    /// message), `create|update NAME …`, `delete NAME`, or `reset NAME
    /// --topic T --to WHEN`.
    #[command(subcommand)]
    Groups(GroupCommand),
    /// Messages: `query --topic T [--key K | --tag X] [--from T1] [--to T2]`
    /// (a page at a time), or `show ID` (the message and its trace).
    #[command(subcommand)]
    Messages(crate::messages::MessageCommand),
    /// The topology as the region has it now, as a topology file: the
    /// regions and links of the --topology file with the topics and groups
    /// the node has (the file's, with the admin API's changes); TOML on
    /// stdout, or into --output.
    Export {
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
}

#[derive(clap::Subcommand)]
pub enum TopicCommand {
    /// Every one, a line each.
    List,
    /// One, in detail.
    Describe { name: String },
    /// A new topic, stored by the node and replicated to every region.
    /// Unset options: 8 queues, normal messages, this region only, consumed
    /// from the earliest message, local durability, 72 h retention.
    Create {
        name: String,
        #[command(flatten)]
        fields: TopicFields,
    },
    /// Changes the options given; queues may grow, never shrink.
    Update {
        name: String,
        #[command(flatten)]
        fields: TopicFields,
    },
    /// Deletes a topic: sends and receives of it are refused from then on.
    Delete { name: String },
}

/// A topic's options, each left as it is (update) or at its default
/// (create) when not given.
#[derive(clap::Args)]
pub struct TopicFields {
    /// Number of queues (1..=1024).
    #[arg(long)]
    queues: Option<u32>,
    /// Message types: normal, fifo, delay, transaction (comma-separated).
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
    /// Regions that hold the topic (comma-separated).
    #[arg(long, value_delimiter = ',')]
    replicate_to: Vec<String>,
    /// Where a new consumer group starts: earliest or latest.
    #[arg(long)]
    consume_from: Option<String>,
    /// local, or geo (acknowledged once other regions applied it).
    #[arg(long)]
    durability: Option<String>,
    /// With geo durability: how many other regions.
    #[arg(long)]
    geo_copies: Option<u32>,
    /// How long messages are kept, in ms.
    #[arg(long)]
    retention_ms: Option<u64>,
    /// Most bytes kept per region (0: no limit).
    #[arg(long)]
    retention_bytes: Option<u64>,
}

/// A consumer group's options, each left as it is (update) or at its
/// default (create) when not given.
#[derive(clap::Args)]
pub struct GroupFields {
    /// true: every consumer instance gets every message.
    #[arg(long)]
    broadcast: Option<bool>,
    /// true: ordered per message group.
    #[arg(long)]
    fifo: Option<bool>,
    /// Deliveries before a message moves to the group's dead-letter topic.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Invisible time of receives that name none (push consumers), in ms.
    #[arg(long)]
    invisible_ms: Option<u64>,
    /// Back-off before each retry, in ms (comma-separated; the last repeats).
    #[arg(long, value_delimiter = ',')]
    retry_backoff_ms: Vec<u64>,
}

#[derive(clap::Subcommand)]
pub enum GroupCommand {
    /// Every one, a line each.
    List,
    /// One, in detail.
    Describe { name: String },
    /// Configures a group, stored by the node and replicated to every region.
    Create {
        name: String,
        #[command(flatten)]
        fields: GroupFields,
    },
    /// Changes the options given of a configured group.
    Update {
        name: String,
        #[command(flatten)]
        fields: GroupFields,
    },
    /// Removes a group's configuration everywhere and its progress in this
    /// region.
    Delete { name: String },
    /// Moves the group's progress on every queue of a topic: consumers get
    /// messages again from there (or skip to it), at once. Deliveries in
    /// flight are forgotten. This region only.
    Reset {
        name: String,
        #[arg(long)]
        topic: String,
        /// `earliest` (the oldest message kept), `latest` (only new
        /// messages), an RFC 3339 time (`2026-11-30T10:00:00Z`: the first
        /// message stored at or after it) or ms since the Unix epoch.
        #[arg(long, value_parser = parse_position)]
        to: ResetTo,
    },
}

/// Where `groups reset` moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    /// ms since the Unix epoch.
    Time(i64),
}

/// Now, in ms since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Reads `--to`.
fn parse_position(text: &str) -> Result<ResetTo, String> {
    match text {
        "earliest" => return Ok(ResetTo::Earliest),
        "latest" => return Ok(ResetTo::Latest),
        _ => {}
    }
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ResetTo::Time(ms));
    }
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|error| {
            format!(
                "`{text}` is neither earliest, latest, an RFC 3339 time \
                 (2026-11-30T10:00:00Z) nor ms since the Unix epoch: {error}"
            )
        })?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000)
        .map(ResetTo::Time)
        .map_err(|_| format!("`{text}` is out of range"))
}

impl TopicFields {
    fn definition(&self, name: &str) -> TopicDefinition {
        TopicDefinition {
            name: name.to_owned(),
            queues: self.queues,
            message_types: self.types.clone(),
            replicate_to: self.replicate_to.clone(),
            consume_from: self.consume_from.clone(),
            durability: self.durability.clone(),
            geo_copies: self.geo_copies,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
        }
    }
}

impl GroupFields {
    fn definition(&self, name: &str) -> GroupDefinition {
        GroupDefinition {
            name: name.to_owned(),
            broadcast: self.broadcast,
            fifo: self.fifo,
            max_attempts: self.max_attempts,
            invisible_ms: self.invisible_ms,
            retry_backoff_ms: self.retry_backoff_ms.clone(),
        }
    }
}

/// What signs the calls of this deployment's own processes to admin ports:
/// the topology's `[access] internal_key` (nothing in development mode).
/// When the keys file cannot be read, says why on stderr and signs nothing
/// (the node then refuses the calls, naming what is missing).
pub fn internal_signer(topology: &meridian_topology::Topology) -> Signer {
    match Authentication::of_topology(topology.access.as_ref()) {
        Ok(authentication) => authentication.internal_signer(),
        Err(error) => {
            eprintln!(
                "warning: calls to admin ports go unsigned: {:#}",
                anyhow::Error::from(error)
            );
            Signer::none()
        }
    }
}

/// How this process dials the deployment's endpoints: with TLS trusting the
/// CA of `[client_tls]`, or plain. The CA was read once already when the
/// topology was loaded; an error now says what went wrong since.
pub fn dialer(topology: &meridian_topology::Topology) -> anyhow::Result<Dialer> {
    Dialer::of_topology(topology).context("[client_tls]")
}

/// Signs with `access_key` and its `secret`.
pub fn signer_of(access_key: String, secret: String) -> Signer {
    let keys = AccessKeys::new([meridian_topology::AccessKey {
        id: access_key.clone(),
        secret,
        grants: Vec::new(),
    }]);
    Authentication::Keys(std::sync::Arc::new(keys)).signer_for(Some(access_key))
}

/// Runs `command` against the node whose admin address is `admin`, each
/// call signed by `signer`; the text to print.
pub async fn run(
    admin: SocketAddr,
    signer: Signer,
    file: &meridian_topology::Topology,
    command: &AdminCommand,
    as_json: bool,
) -> anyhow::Result<String> {
    let channel = dialer(file)?
        .endpoint(admin)?
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("cannot connect to the node's admin address {admin}"))?;
    let mut client = AdminServiceClient::with_interceptor(channel, signer);
    let answer = |status: tonic::Status| anyhow::anyhow!("{}", status.message());
    Ok(match command {
        AdminCommand::Messages(command) => {
            crate::messages::run(&mut client, command, as_json).await?
        }
        AdminCommand::Export { output } => {
            let node_view = client
                .export_topology(ExportTopologyRequest {})
                .await
                .map_err(answer)?
                .into_inner()
                .toml;
            // The node's view has its addresses as it sees them (under
            // `meridian up`, other regions' are the link emulator's): keep
            // the file's regions, links and drill, take its topics and groups.
            let now = meridian_topology::Topology::from_toml_str(
                &node_view,
                std::path::Path::new("the node's topology"),
            )
            .map_err(|error| anyhow::anyhow!("the node's topology does not parse: {error}"))?;
            let mut exported = file.clone();
            exported.topics = now.topics;
            exported.groups = now.groups;
            let toml = exported.to_toml_string();
            match output {
                Some(path) => {
                    std::fs::write(path, &toml)
                        .with_context(|| format!("write {}", path.display()))?;
                    format!("wrote the topology to {}\n", path.display())
                }
                None => toml,
            }
        }
        AdminCommand::Topics(TopicCommand::Create { name, fields })
        | AdminCommand::Topics(TopicCommand::Update { name, fields }) => {
            let definition = fields.definition(name);
            let summary = if matches!(command, AdminCommand::Topics(TopicCommand::Create { .. })) {
                client.create_topic(definition).await
            } else {
                client.update_topic(definition).await
            }
            .map_err(answer)?
            .into_inner();
            if as_json {
                to_text(&topic_json(&summary))
            } else {
                topics_table(std::slice::from_ref(&summary))
            }
        }
        AdminCommand::Topics(TopicCommand::Delete { name }) => {
            client
                .delete_topic(DeleteTopicRequest {
                    topic: name.clone(),
                })
                .await
                .map_err(answer)?;
            if as_json {
                to_text(&json!({ "deleted": name }))
            } else {
                format!("topic {name} deleted\n")
            }
        }
        AdminCommand::Groups(GroupCommand::Create { name, fields })
        | AdminCommand::Groups(GroupCommand::Update { name, fields }) => {
            let definition = fields.definition(name);
            let summary = if matches!(command, AdminCommand::Groups(GroupCommand::Create { .. })) {
                client.create_group(definition).await
            } else {
                client.update_group(definition).await
            }
            .map_err(answer)?
            .into_inner();
            if as_json {
                to_text(&group_json(&summary))
            } else {
                groups_table(std::slice::from_ref(&summary))
            }
        }
        AdminCommand::Groups(GroupCommand::Delete { name }) => {
            client
                .delete_group(DeleteGroupRequest {
                    group: name.clone(),
                })
                .await
                .map_err(answer)?;
            if as_json {
                to_text(&json!({ "deleted": name }))
            } else {
                format!("consumer group {name} deleted\n")
            }
        }
        AdminCommand::Topics(TopicCommand::List) => {
            let topics = client
                .list_topics(ListTopicsRequest {})
                .await
                .map_err(answer)?
                .into_inner()
                .topics;
            if as_json {
                to_text(&Value::Array(topics.iter().map(topic_json).collect()))
            } else {
                topics_table(&topics)
            }
        }
        AdminCommand::Topics(TopicCommand::Describe { name }) => {
            let topic = client
                .describe_topic(DescribeTopicRequest {
                    topic: name.clone(),
                })
                .await
                .map_err(answer)?
                .into_inner();
            if as_json {
                to_text(&topic_description_json(&topic))
            } else {
                topic_text(&topic)
            }
        }
        AdminCommand::Groups(GroupCommand::Reset { name, topic, to }) => {
            let asked = *to;
            let to = match *to {
                ResetTo::Earliest => reset_group_request::To::Earliest(true),
                ResetTo::Latest => reset_group_request::To::Latest(true),
                ResetTo::Time(ms) => reset_group_request::To::TimestampMs(ms),
            };
            let queues = client
                .reset_group(ResetGroupRequest {
                    group: name.clone(),
                    topic: topic.clone(),
                    to: Some(to),
                })
                .await
                .map_err(answer)?
                .into_inner()
                .queues;
            if as_json {
                to_text(&json!({
                    "group": name,
                    "topic": topic,
                    "queues": queues
                        .iter()
                        .map(|queue| json!({"queue_id": queue.queue_id, "offset": queue.offset}))
                        .collect::<Vec<_>>(),
                }))
            } else {
                let rows: Vec<Vec<String>> = queues
                    .iter()
                    .map(|queue| vec![queue.queue_id.to_string(), queue.offset.to_string()])
                    .collect();
                let future = match asked {
                    ResetTo::Time(ms) if ms > now_ms() => format!(
                        "note: {ms} ms is in the future: no message was stored at or after it \
                         yet, so every queue moved to its end (as `--to latest`)\n"
                    ),
                    _ => String::new(),
                };
                format!(
                    "{future}group {name} on topic {topic} now consumes from:\n{}",
                    table(&["QUEUE", "NEXT OFFSET"], &rows)
                )
            }
        }
        AdminCommand::Groups(GroupCommand::List) => {
            let groups = client
                .list_groups(ListGroupsRequest {})
                .await
                .map_err(answer)?
                .into_inner()
                .groups;
            if as_json {
                to_text(&Value::Array(groups.iter().map(group_json).collect()))
            } else {
                groups_table(&groups)
            }
        }
        AdminCommand::Groups(GroupCommand::Describe { name }) => {
            let group = client
                .describe_group(DescribeGroupRequest {
                    group: name.clone(),
                })
                .await
                .map_err(answer)?
                .into_inner();
            if as_json {
                to_text(&group_description_json(&group))
            } else {
                group_text(&group)
            }
        }
    })
}

pub(crate) fn to_text(value: &Value) -> String {
    format!("{value:#}\n")
}

fn topic_json(topic: &TopicSummary) -> Value {
    json!({
        "name": topic.name,
        "queues": topic.queues,
        "message_types": topic.message_types,
        "replicate_to": topic.replicate_to,
        "retention_ms": topic.retention_ms,
        "retention_bytes": topic.retention_bytes,
        "messages": topic.messages,
        "consume_from": topic.consume_from,
        "durability": topic.durability,
        "geo_copies": topic.geo_copies,
    })
}

fn topic_description_json(topic: &TopicDescription) -> Value {
    let mut value = topic.topic.as_ref().map(topic_json).unwrap_or_default();
    value["queue_offsets"] = topic
        .queues
        .iter()
        .map(|queue| {
            json!({
                "queue_id": queue.queue_id,
                "min_offset": queue.min_offset,
                "max_offset": queue.max_offset,
            })
        })
        .collect();
    value
}

fn group_json(group: &GroupSummary) -> Value {
    json!({
        "name": group.name,
        "configured": group.configured,
        "fifo": group.fifo,
        "broadcast": group.broadcast,
        "max_attempts": group.max_attempts,
        "invisible_ms": group.invisible_ms,
        "topics": group.topics,
    })
}

fn group_description_json(group: &GroupDescription) -> Value {
    let mut value = group.group.as_ref().map(group_json).unwrap_or_default();
    value["queues"] = group
        .queues
        .iter()
        .map(|queue| {
            json!({
                "topic": queue.topic,
                "queue_id": queue.queue_id,
                "consumed_offset": queue.consumed_offset,
                "next_offset": queue.next_offset,
                "max_offset": queue.max_offset,
                "in_flight": queue.in_flight,
                "backlog": queue.backlog,
                "oldest_unconsumed_age_ms": queue.oldest_unconsumed_age_ms,
            })
        })
        .collect();
    value
}

/// Rows under a header, each column as wide as its widest cell.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = header.iter().map(|cell| (*cell).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(text, "{}", cells.join("  ").trim_end());
    }
    text
}

fn topics_table(topics: &[TopicSummary]) -> String {
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|topic| {
            vec![
                topic.name.clone(),
                topic.queues.to_string(),
                topic.messages.to_string(),
                topic.message_types.join(","),
                topic.replicate_to.join(","),
                retention(topic),
                topic.consume_from.clone(),
                match topic.durability.as_str() {
                    "geo" => format!("geo ({} copies)", topic.geo_copies),
                    other => other.to_owned(),
                },
            ]
        })
        .collect();
    table(
        &[
            "TOPIC",
            "QUEUES",
            "MESSAGES",
            "TYPES",
            "REPLICATE TO",
            "RETENTION",
            "CONSUME FROM",
            "DURABILITY",
        ],
        &rows,
    )
}

fn retention(topic: &TopicSummary) -> String {
    let age = format!("{} s", topic.retention_ms / 1000);
    match topic.retention_bytes {
        Some(bytes) => format!("{age}, {bytes} bytes"),
        None => age,
    }
}

fn topic_text(topic: &TopicDescription) -> String {
    let mut text = topic
        .topic
        .as_ref()
        .map(|summary| topics_table(std::slice::from_ref(summary)))
        .unwrap_or_default();
    text.push('\n');
    let rows: Vec<Vec<String>> = topic
        .queues
        .iter()
        .map(|queue| {
            vec![
                queue.queue_id.to_string(),
                queue.min_offset.to_string(),
                queue.max_offset.to_string(),
                queue
                    .max_offset
                    .saturating_sub(queue.min_offset)
                    .to_string(),
            ]
        })
        .collect();
    text.push_str(&table(
        &["QUEUE", "FIRST OFFSET", "NEXT OFFSET", "MESSAGES"],
        &rows,
    ));
    text
}

fn groups_table(groups: &[GroupSummary]) -> String {
    let rows: Vec<Vec<String>> = groups.iter().map(group_row).collect();
    table(
        &[
            "GROUP",
            "CONFIGURED",
            "MODE",
            "MAX ATTEMPTS",
            "INVISIBLE",
            "TOPICS",
        ],
        &rows,
    )
}

fn group_row(group: &GroupSummary) -> Vec<String> {
    let mode = match (group.broadcast, group.fifo) {
        (true, true) => "broadcast, fifo",
        (true, false) => "broadcast",
        (false, true) => "clustering, fifo",
        (false, false) => "clustering",
    };
    vec![
        group.name.clone(),
        if group.configured {
            "yes"
        } else {
            "no (defaults)"
        }
        .to_owned(),
        mode.to_owned(),
        group.max_attempts.to_string(),
        format!("{} s", group.invisible_ms / 1000),
        group.topics.join(","),
    ]
}

fn group_text(group: &GroupDescription) -> String {
    let mut text = group
        .group
        .as_ref()
        .map(|summary| groups_table(std::slice::from_ref(summary)))
        .unwrap_or_default();
    text.push('\n');
    let rows: Vec<Vec<String>> = group
        .queues
        .iter()
        .map(|queue| {
            vec![
                queue.topic.clone(),
                queue.queue_id.to_string(),
                queue.consumed_offset.to_string(),
                queue.max_offset.to_string(),
                queue.in_flight.to_string(),
                queue.backlog.to_string(),
                queue.oldest_unconsumed_age_ms.map_or_else(
                    || "-".to_owned(),
                    |age| format!("{:.1} s", age as f64 / 1000.0),
                ),
            ]
        })
        .collect();
    text.push_str(&table(
        &[
            "TOPIC",
            "QUEUE",
            "CONSUMED",
            "MAX OFFSET",
            "IN FLIGHT",
            "BACKLOG",
            "OLDEST",
        ],
        &rows,
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_positions_read_words_times_and_milliseconds() {
        assert_eq!(parse_position("earliest"), Ok(ResetTo::Earliest));
        assert_eq!(parse_position("latest"), Ok(ResetTo::Latest));
        assert_eq!(
            parse_position("1700000000000"),
            Ok(ResetTo::Time(1_700_000_000_000))
        );
        assert_eq!(
            parse_position("2023-11-14T22:13:20Z"),
            Ok(ResetTo::Time(1_700_000_000_000))
        );
        let error = parse_position("yesterday").expect_err("refused");
        assert!(error.contains("yesterday"), "{error}");
    }

    #[test]
    fn tables_align_columns_to_the_widest_cell() {
        let text = table(
            &["A", "LONG HEADER"],
            &[vec!["wide cell".to_owned(), "x".to_owned()]],
        );
        assert_eq!(text, "A          LONG HEADER\nwide cell  x\n");
    }
}
