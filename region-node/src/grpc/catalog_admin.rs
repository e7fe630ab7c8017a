//! The admin API's changes of topics and consumer groups (create, update,
//! delete) and the export of the topology as it is now; see
//! `crate::catalog` for how changes are stored, replicated and applied.

use super::admin::{Admin, messages, topic_summary};
use super::convert::now_ms;
use crate::catalog::change_of;
use crate::storage::LogStore;
use meridian_proto::meridian::v1::{
    DeleteGroupResponse, DeleteTopicResponse, ExportTopologyResponse, GroupDefinition,
    GroupSummary, Record, RecordKind, TopicDefinition, TopicSummary,
};
use meridian_topology::{
    CatalogEntry, CatalogKind, ConsumeFrom, Durability, Group, MessageType, Topic,
};
use tonic::Status;

fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

/// Whether a change creates an item or changes an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Create,
    Update,
}

impl<S: LogStore> Admin<S> {
    /// Stores `entry` (appends its catalog record, which storage keeps as
    /// the item's newest change) and swaps in the topology it gives, after
    /// checking that it gives a valid one (INVALID_ARGUMENT naming the key).
    async fn change(&self, entry: CatalogEntry) -> Result<(), Status> {
        self.context
            .topology
            .with(std::slice::from_ref(&entry))
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let record = Record {
            kind: RecordKind::Catalog as i32,
            dedup_id: uuid::Uuid::now_v7().as_bytes().to_vec(),
            origin_region: self.context.region.clone(),
            path: vec![self.context.region.clone()],
            catalog: Some(change_of(&entry)),
            ..Record::default()
        };
        self.context
            .commit
            .append(vec![record])
            .await
            .map_err(|error| crate::error::NodeError::from(error).to_grpc())?;
        let context = std::sync::Arc::clone(&self.context);
        self.context
            .blocking(move |store, _| Ok(context.topology.reload(store)?))
            .await
            .map_err(|error| error.to_grpc())?;
        tracing::info!(
            kind = entry.kind.as_str(),
            name = entry.name,
            deleted = entry.deleted,
            "topic or group changed through the admin API"
        );
        Ok(())
    }

    /// CreateTopic and UpdateTopic.
    pub(super) async fn define_topic(
        &self,
        definition: TopicDefinition,
        change: Change,
    ) -> Result<TopicSummary, Status> {
        let name = definition.name.trim().to_owned();
        if name.is_empty() {
            return Err(invalid("name", "empty"));
        }
        let topology = self.context.topology.get();
        let existing = topology.topics.get(&name).cloned();
        let mut topic = match (change, existing) {
            (Change::Create, Some(_)) => {
                return Err(Status::already_exists(format!(
                    "topic `{name}` exists; update it instead"
                )));
            }
            (Change::Update, None) => {
                return Err(Status::not_found(format!("topic `{name}` does not exist")));
            }
            (Change::Update, Some(existing)) => existing,
            (Change::Create, None) => Topic {
                queues: 8,
                message_types: vec![MessageType::Normal],
                replicate_to: vec![self.context.region.clone()],
                consume_from: ConsumeFrom::Earliest,
                durability: Durability::Local,
                geo_copies: 1,
                retention_ms: meridian_topology::DEFAULT_RETENTION_MS,
                retention_bytes: None,
                transaction_checks: Default::default(),
            },
        };
        if let Some(queues) = definition.queues {
            let queues = u16::try_from(queues)
                .map_err(|_| invalid("queues", format!("{queues} is above 1024")))?;
            if change == Change::Update && queues < topic.queues {
                return Err(Status::failed_precondition(format!(
                    "queues: topic `{name}` has {} queues; they may grow, never shrink (messages \
                     in the queues above {queues} would be stranded)",
                    topic.queues
                )));
            }
            topic.queues = queues;
        }
        if !definition.message_types.is_empty() {
            topic.message_types = definition
                .message_types
                .iter()
                .map(|name| {
                    MessageType::ALL
                        .into_iter()
                        .find(|kind| kind.as_str() == name.trim())
                        .ok_or_else(|| {
                            invalid(
                                "message_types",
                                format!("`{name}` is none of normal, fifo, delay, transaction"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?;
        }
        if !definition.replicate_to.is_empty() {
            topic.replicate_to = definition.replicate_to.clone();
        }
        if let Some(consume_from) = definition.consume_from.as_deref() {
            topic.consume_from = match consume_from {
                "earliest" => ConsumeFrom::Earliest,
                "latest" => ConsumeFrom::Latest,
                other => {
                    return Err(invalid(
                        "consume_from",
                        format!("`{other}` is neither earliest nor latest"),
                    ));
                }
            };
        }
        if let Some(durability) = definition.durability.as_deref() {
            topic.durability = match durability {
                "local" => Durability::Local,
                "geo" => Durability::Geo,
                other => {
                    return Err(invalid(
                        "durability",
                        format!("`{other}` is neither local nor geo"),
                    ));
                }
            };
        }
        if let Some(copies) = definition.geo_copies {
            topic.geo_copies = u8::try_from(copies)
                .map_err(|_| invalid("geo_copies", format!("{copies} is above 255")))?;
        }
        if let Some(retention_ms) = definition.retention_ms {
            topic.retention_ms = retention_ms;
        }
        if let Some(bytes) = definition.retention_bytes {
            topic.retention_bytes = (bytes > 0).then_some(bytes);
        }
        self.change(CatalogEntry::topic(
            &name,
            &topic,
            now_ms(),
            &self.context.region,
        ))
        .await?;
        let queues = self.queue_offsets(&name, topic.queues).await?;
        Ok(topic_summary(&name, &topic, messages(&queues)))
    }

    /// DeleteTopic.
    pub(super) async fn delete_topic_named(
        &self,
        name: &str,
    ) -> Result<DeleteTopicResponse, Status> {
        let name = name.trim();
        let topology = self.context.topology.get();
        let Some(topic) = topology.topics.get(name) else {
            return Err(Status::not_found(format!("topic `{name}` does not exist")));
        };
        // With its last definition: retention still retires what it stored.
        self.change(CatalogEntry::topic_deletion(
            name,
            topic,
            now_ms(),
            &self.context.region,
        ))
        .await?;
        Ok(DeleteTopicResponse {})
    }

    /// CreateGroup and UpdateGroup.
    pub(super) async fn define_group(
        &self,
        definition: GroupDefinition,
        change: Change,
    ) -> Result<GroupSummary, Status> {
        let name = definition.name.trim().to_owned();
        if name.is_empty() {
            return Err(invalid("name", "empty"));
        }
        if name.contains(meridian_topology::BROADCAST_INSTANCE_SEPARATOR) {
            return Err(invalid(
                "name",
                "contains `@`, which names broadcast consumer instances",
            ));
        }
        let topology = self.context.topology.get();
        let mut group = match (change, topology.groups.get(&name).cloned()) {
            (Change::Create, Some(_)) => {
                return Err(Status::already_exists(format!(
                    "consumer group `{name}` is configured; update it instead"
                )));
            }
            (Change::Update, None) => {
                return Err(Status::not_found(format!(
                    "consumer group `{name}` is not configured"
                )));
            }
            (Change::Update, Some(existing)) => existing,
            (Change::Create, None) => Group::default(),
        };
        if let Some(broadcast) = definition.broadcast {
            group.broadcast = broadcast;
        }
        if let Some(fifo) = definition.fifo {
            group.fifo = fifo;
        }
        if let Some(max_attempts) = definition.max_attempts {
            group.max_attempts = max_attempts;
        }
        if let Some(invisible_ms) = definition.invisible_ms {
            group.invisible_ms = invisible_ms;
        }
        if !definition.retry_backoff_ms.is_empty() {
            group.retry_backoff_ms = definition.retry_backoff_ms.clone();
        }
        self.change(CatalogEntry::group(
            &name,
            &group,
            now_ms(),
            &self.context.region,
        ))
        .await?;
        Ok(self.group_summary(&name, Vec::new()))
    }

    /// DeleteGroup: its configuration everywhere, its progress here.
    pub(super) async fn delete_group_named(
        &self,
        name: &str,
    ) -> Result<DeleteGroupResponse, Status> {
        let name = name.trim().to_owned();
        let configured = self.context.topology.get().groups.contains_key(&name);
        let forget = name.clone();
        let forgotten = self
            .context
            .blocking(move |_, consumers| Ok(consumers.forget_group(&forget)?))
            .await
            .map_err(|error| error.to_grpc())?;
        if !configured && forgotten == 0 {
            return Err(Status::not_found(format!(
                "consumer group `{name}` is neither configured nor tracked here"
            )));
        }
        if configured {
            self.change(CatalogEntry::deletion(
                CatalogKind::Group,
                &name,
                now_ms(),
                &self.context.region,
            ))
            .await?;
        }
        Ok(DeleteGroupResponse {})
    }

    /// ExportTopology.
    pub(super) fn export(&self) -> ExportTopologyResponse {
        ExportTopologyResponse {
            toml: self.context.topology.get().to_toml_string(),
        }
    }
}
