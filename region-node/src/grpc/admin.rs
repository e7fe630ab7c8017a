//! `meridian.v1.AdminService`: the operators' view of the node (topics,
//! consumer groups and their progress, messages and their traces) and
//! resetting a group's progress, served on the admin address; `meridian
//! admin` uses it.

use super::NodeContext;
use super::catalog_admin::Change;
use super::convert::now_ms;
use crate::consumer::QueueProgress;
use crate::error::NodeError;
use crate::storage::LogStore;
use meridian_proto::meridian::v1::admin_service_server::AdminService;
use meridian_proto::meridian::v1::{
    DeleteGroupRequest, DeleteGroupResponse, DeleteTopicRequest, DeleteTopicResponse,
    DescribeGroupRequest, DescribeTopicRequest, ExportTopologyRequest, ExportTopologyResponse,
    GetMessageRequest, GetMessageResponse, GroupDefinition, GroupDescription, GroupQueueProgress,
    GroupSummary, ListGroupsRequest, ListGroupsResponse, ListTopicsRequest, ListTopicsResponse,
    QueryMessagesRequest, QueryMessagesResponse, QueueOffsets, QueuePosition, ResetGroupRequest,
    ResetGroupResponse, TopicDefinition, TopicDescription, TopicSummary, reset_group_request,
};
use meridian_topology::Topic;
use std::collections::BTreeSet;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct Admin<S> {
    pub(super) context: Arc<NodeContext<S>>,
}

impl<S> Admin<S> {
    pub fn new(context: Arc<NodeContext<S>>) -> Self {
        Self { context }
    }
}

/// A topic's summary, with `messages` in its queues.
pub(super) fn topic_summary(name: &str, topic: &Topic, messages: u64) -> TopicSummary {
    TopicSummary {
        name: name.to_owned(),
        queues: u32::from(topic.queues),
        message_types: topic
            .message_types
            .iter()
            .map(|kind| kind.as_str().to_owned())
            .collect(),
        replicate_to: topic.replicate_to.clone(),
        retention_ms: topic.retention_ms,
        retention_bytes: topic.retention_bytes,
        messages,
        consume_from: match topic.consume_from {
            meridian_topology::ConsumeFrom::Earliest => "earliest",
            meridian_topology::ConsumeFrom::Latest => "latest",
        }
        .to_owned(),
        durability: match topic.durability {
            meridian_topology::Durability::Local => "local",
            meridian_topology::Durability::Geo => "geo",
        }
        .to_owned(),
        geo_copies: u32::from(topic.geo_copies),
    }
}

impl<S: LogStore> Admin<S> {
    /// Every queue's offsets of a topic.
    pub(super) async fn queue_offsets(
        &self,
        name: &str,
        queues: u16,
    ) -> Result<Vec<QueueOffsets>, Status> {
        let name = name.to_owned();
        self.context
            .blocking(move |store, _| {
                (0..i32::from(queues))
                    .map(|queue_id| {
                        let bounds = store.queue_bounds(&name, queue_id)?;
                        Ok(QueueOffsets {
                            queue_id,
                            min_offset: bounds.min,
                            max_offset: bounds.max,
                        })
                    })
                    .collect()
            })
            .await
            .map_err(|error| error.to_grpc())
    }

    pub(super) fn group_summary(&self, name: &str, topics: Vec<String>) -> GroupSummary {
        let topology = self.context.topology.get();
        let policy = topology.group(name);
        GroupSummary {
            name: name.to_owned(),
            fifo: policy.fifo,
            broadcast: policy.broadcast,
            max_attempts: policy.max_attempts,
            invisible_ms: policy.invisible_ms,
            configured: self
                .context
                .topology
                .get()
                .groups
                .contains_key(meridian_topology::configured_group(name)),
            topics,
        }
    }
}

/// NOT_FOUND for an admin call naming an unknown topic.
fn topic_not_found(topic: &str) -> Status {
    Status::not_found(
        NodeError::TopicNotFound {
            topic: topic.to_owned(),
        }
        .to_string(),
    )
}

pub(super) fn messages(queues: &[QueueOffsets]) -> u64 {
    queues
        .iter()
        .map(|queue| queue.max_offset.saturating_sub(queue.min_offset))
        .sum()
}

#[tonic::async_trait]
impl<S: LogStore> AdminService for Admin<S> {
    async fn list_topics(
        &self,
        _request: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        let mut topics = Vec::new();
        for (name, topic) in &self.context.topology.get().topics {
            if !topic.replicate_to.contains(&self.context.region) {
                continue;
            }
            let queues = self.queue_offsets(name, topic.queues).await?;
            topics.push(topic_summary(name, topic, messages(&queues)));
        }
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<DescribeTopicRequest>,
    ) -> Result<Response<TopicDescription>, Status> {
        let name = request.into_inner().topic;
        let topic = self
            .context
            .topology
            .get()
            .topic(&name)
            .ok_or_else(|| topic_not_found(&name))?
            .into_owned();
        let queues = self.queue_offsets(&name, topic.queues).await?;
        Ok(Response::new(TopicDescription {
            topic: Some(topic_summary(&name, &topic, messages(&queues))),
            queues,
        }))
    }

    async fn list_groups(
        &self,
        _request: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let mut names: BTreeSet<String> =
            self.context.topology.get().groups.keys().cloned().collect();
        names.extend(self.context.consumers.group_names());
        let groups = names
            .iter()
            .map(|name| {
                let topics: BTreeSet<String> = self
                    .context
                    .consumers
                    .progress(name)
                    .into_iter()
                    .map(|queue| queue.topic)
                    .collect();
                self.group_summary(name, topics.into_iter().collect())
            })
            .collect();
        Ok(Response::new(ListGroupsResponse { groups }))
    }

    async fn reset_group(
        &self,
        request: Request<ResetGroupRequest>,
    ) -> Result<Response<ResetGroupResponse>, Status> {
        let request = request.into_inner();
        let group = request.group.trim().to_owned();
        if group.is_empty() || group.len() > meridian_topology::GROUP_NAME_LENGTH_MAX {
            return Err(Status::invalid_argument(
                "group: must be 1 to 255 bytes (a broadcast instance as <group>@<client id>)",
            ));
        }
        let Some(to) = request.to else {
            return Err(Status::invalid_argument(
                "to: say earliest, latest or timestamp_ms",
            ));
        };
        let topic_name = request.topic;
        let topology = self.context.topology.get();
        let topic = topology
            .topic(&topic_name)
            .ok_or_else(|| topic_not_found(&topic_name))?
            .into_owned();
        let configured = topology
            .groups
            .contains_key(meridian_topology::configured_group(&group));
        let queues = self
            .context
            .blocking(move |store, consumers| {
                // A typo must not quietly start a new group.
                if !configured && !consumers.group_names().contains(&group) {
                    return Err(NodeError::UnknownGroup { group });
                }
                let mut positions = Vec::new();
                for queue_id in 0..i32::from(topic.queues) {
                    let bounds = store.queue_bounds(&topic_name, queue_id)?;
                    let position = match to {
                        reset_group_request::To::Earliest(_) => bounds.min,
                        reset_group_request::To::Latest(_) => bounds.max,
                        reset_group_request::To::TimestampMs(time) => {
                            store.offset_at_time(&topic_name, queue_id, time)?
                        }
                    };
                    positions.push((queue_id, position));
                }
                consumers.reset(&group, &topic_name, &positions)?;
                tracing::info!(
                    group,
                    topic = topic_name,
                    ?positions,
                    "group progress reset"
                );
                Ok(positions
                    .into_iter()
                    .map(|(queue_id, offset)| QueuePosition { queue_id, offset })
                    .collect())
            })
            .await
            .map_err(|error| error.to_grpc())?;
        Ok(Response::new(ResetGroupResponse { queues }))
    }

    async fn describe_group(
        &self,
        request: Request<DescribeGroupRequest>,
    ) -> Result<Response<GroupDescription>, Status> {
        let name = request.into_inner().group;
        let progress = self.context.consumers.progress(&name);
        if progress.is_empty() && !self.context.topology.get().groups.contains_key(&name) {
            return Err(Status::not_found(format!(
                "consumer group `{name}` is neither in the topology nor tracked by this node"
            )));
        }
        let now = now_ms();
        let queues = self
            .context
            .blocking(move |store, _| {
                progress
                    .into_iter()
                    .map(|queue| describe_queue(store, queue, now))
                    .collect::<Result<Vec<_>, NodeError>>()
            })
            .await
            .map_err(|error| error.to_grpc())?;
        let topics: BTreeSet<String> = queues.iter().map(|queue| queue.topic.clone()).collect();
        Ok(Response::new(GroupDescription {
            group: Some(self.group_summary(&name, topics.into_iter().collect())),
            queues,
        }))
    }

    async fn query_messages(
        &self,
        request: Request<QueryMessagesRequest>,
    ) -> Result<Response<QueryMessagesResponse>, Status> {
        super::messages::query(&self.context, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_message(
        &self,
        request: Request<GetMessageRequest>,
    ) -> Result<Response<GetMessageResponse>, Status> {
        super::messages::get(&self.context, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_topic(
        &self,
        request: Request<TopicDefinition>,
    ) -> Result<Response<TopicSummary>, Status> {
        self.define_topic(request.into_inner(), Change::Create)
            .await
            .map(Response::new)
    }

    async fn update_topic(
        &self,
        request: Request<TopicDefinition>,
    ) -> Result<Response<TopicSummary>, Status> {
        self.define_topic(request.into_inner(), Change::Update)
            .await
            .map(Response::new)
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        self.delete_topic_named(&request.into_inner().topic)
            .await
            .map(Response::new)
    }

    async fn create_group(
        &self,
        request: Request<GroupDefinition>,
    ) -> Result<Response<GroupSummary>, Status> {
        self.define_group(request.into_inner(), Change::Create)
            .await
            .map(Response::new)
    }

    async fn update_group(
        &self,
        request: Request<GroupDefinition>,
    ) -> Result<Response<GroupSummary>, Status> {
        self.define_group(request.into_inner(), Change::Update)
            .await
            .map(Response::new)
    }

    async fn delete_group(
        &self,
        request: Request<DeleteGroupRequest>,
    ) -> Result<Response<DeleteGroupResponse>, Status> {
        self.delete_group_named(&request.into_inner().group)
            .await
            .map(Response::new)
    }

    async fn export_topology(
        &self,
        _request: Request<ExportTopologyRequest>,
    ) -> Result<Response<ExportTopologyResponse>, Status> {
        Ok(Response::new(self.export()))
    }
}

/// One queue's progress, with the queue's end and the age of the oldest
/// message not acknowledged.
fn describe_queue<S: LogStore>(
    store: &S,
    progress: QueueProgress,
    now_ms: i64,
) -> Result<GroupQueueProgress, NodeError> {
    let bounds = store.queue_bounds(&progress.topic, progress.queue_id)?;
    // Offsets before the queue's first are gone (retention): not counted.
    let floor = progress.floor.max(bounds.min);
    let next = progress.next.max(floor);
    let never_delivered = bounds.max.saturating_sub(next);
    let backlog = progress.in_flight + progress.waiting + never_delivered;
    let oldest_unconsumed_age_ms = if backlog == 0 {
        None
    } else {
        store
            .read_queue(&progress.topic, progress.queue_id, floor, 1)?
            .first()
            .and_then(|(_, record)| record.message.as_ref())
            .map(|message| now_ms.saturating_sub(message.store_timestamp_ms).max(0))
    };
    Ok(GroupQueueProgress {
        topic: progress.topic,
        queue_id: progress.queue_id,
        consumed_offset: floor,
        next_offset: next,
        max_offset: bounds.max,
        in_flight: progress.in_flight,
        backlog,
        oldest_unconsumed_age_ms,
    })
}
