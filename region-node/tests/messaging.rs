//! Conformance of the node's RocketMQ 5 `MessagingService` with what the
//! official clients need (shared/protocols/rocketmq-grpc.md, §1–§5), driven
//! in-process with the raw tonic client against a real node on a temp dir.
//!
//! This file: QueryRoute, Telemetry, SendMessage and the status-code audit.
//! `messaging/receive.rs`: ReceiveMessage (stream shape, properties, batches,
//! filters, long polling, argument checks). `messaging/redelivery.rs`:
//! invisibility, ack, ChangeInvisibleDuration, delay and restarts.
//!
//! Every test opens its own node. Sleeping is used only where the passing of
//! an invisibility or delivery deadline is itself the behaviour under test.

#[path = "messaging/receive.rs"]
mod receive;
#[path = "messaging/redelivery.rs"]
mod redelivery;
mod support;

use meridian_proto::rocketmq::v2::settings::PubSub;
use meridian_proto::rocketmq::v2::{
    ClientType, Code, HeartbeatRequest, Message, MessageType, NotifyClientTerminationRequest,
    Permission, Publishing, QueryRouteRequest, Settings, Subscription, SubscriptionEntry,
    TelemetryCommand, telemetry_command,
};
use std::time::Duration;
use support::{
    Client, MAX_BODY, QUEUES, Receive, STEP, TOPIC, TestNode, code, delivered_properties, message,
    properties, resource, within,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[tokio::test(flavor = "multi_thread")]
async fn query_route_answers_the_topic_queues_on_this_node() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("route-client").await;

    let route = client.query_route(TOPIC).await;
    assert_eq!(code(route.status.as_ref()), Code::Ok, "{route:?}");
    let ids: Vec<i32> = route.message_queues.iter().map(|queue| queue.id).collect();
    assert_eq!(
        ids,
        (0..QUEUES).collect::<Vec<_>>(),
        "8 queues, id 0 included"
    );
    for queue in &route.message_queues {
        assert_eq!(queue.topic, resource(TOPIC), "the topic is echoed");
        assert_eq!(queue.permission, Permission::ReadWrite as i32);
        assert!(!queue.accept_message_types.is_empty(), "{queue:?}");
        let broker = queue.broker.as_ref().expect("a broker");
        assert_eq!(broker.id, 0, "clients keep only broker id 0");
        assert!(!broker.name.is_empty());
        let address = broker
            .endpoints
            .as_ref()
            .and_then(|endpoints| endpoints.addresses.first())
            .expect("a broker address");
        assert_eq!(
            format!("{}:{}", address.host, address.port),
            node.node_address.to_string(),
            "the queues point at the node"
        );
    }

    let unknown = client.query_route("no-such-topic").await;
    assert_eq!(code(unknown.status.as_ref()), Code::TopicNotFound);
    assert!(
        unknown.message_queues.is_empty(),
        "no queues for an unknown topic"
    );

    let anonymous = QueryRouteRequest {
        topic: resource(TOPIC),
        endpoints: None,
    };
    let refused = within(STEP, "QueryRoute", client.inner.query_route(anonymous))
        .await
        .expect("gRPC OK")
        .into_inner();
    assert_eq!(code(refused.status.as_ref()), Code::ClientIdRequired);
    assert!(refused.message_queues.is_empty());

    drop(client);
    node.stop().await;
}

/// Opens a Telemetry stream, checks that its headers come at once, sends
/// `settings` and returns the reply.
async fn settings_reply(client: &mut Client, settings: Settings) -> TelemetryCommand {
    let (commands, outbound) = mpsc::channel(4);
    let request = client.request(ReceiverStream::new(outbound));
    // The Rust client's start() waits for exactly these headers, with no deadline.
    let mut inbound = within(
        Duration::from_secs(3),
        "Telemetry response headers",
        client.inner.telemetry(request),
    )
    .await
    .expect("Telemetry answers with gRPC OK")
    .into_inner();
    commands
        .send(TelemetryCommand {
            status: None,
            command: Some(telemetry_command::Command::Settings(settings)),
        })
        .await
        .expect("the outbound stream is open");
    let reply = within(STEP, "the settings reply", inbound.message())
        .await
        .expect("the stream is healthy")
        .expect("a reply before the stream ends");
    assert_eq!(code(reply.status.as_ref()), Code::Ok, "{reply:?}");
    reply
}

#[tokio::test(flavor = "multi_thread")]
async fn telemetry_answers_settings_at_once() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("telemetry-client").await;

    let producer = Settings {
        client_type: Some(ClientType::Producer as i32),
        pub_sub: Some(PubSub::Publishing(Publishing {
            topics: vec![resource(TOPIC).expect("some")],
            ..Publishing::default()
        })),
        ..Settings::default()
    };
    let reply = settings_reply(&mut client, producer).await;
    let Some(telemetry_command::Command::Settings(settings)) = reply.command else {
        panic!("the reply carries settings: {reply:?}");
    };
    let Some(PubSub::Publishing(publishing)) = settings.pub_sub else {
        panic!("publishing settings are echoed: {settings:?}");
    };
    assert_eq!(publishing.max_body_size, 4 * 1024 * 1024);
    assert_eq!(publishing.topics, vec![resource(TOPIC).expect("some")]);
    assert!(
        settings.backoff_policy.is_some(),
        "Node asserts a back-off policy"
    );

    let consumer = Settings {
        client_type: Some(ClientType::SimpleConsumer as i32),
        pub_sub: Some(PubSub::Subscription(Subscription {
            group: resource("telemetry-group"),
            subscriptions: vec![SubscriptionEntry {
                topic: resource(TOPIC),
                expression: None,
            }],
            ..Subscription::default()
        })),
        ..Settings::default()
    };
    let reply = settings_reply(&mut client, consumer).await;
    let Some(telemetry_command::Command::Settings(settings)) = reply.command else {
        panic!("the reply carries settings: {reply:?}");
    };
    let Some(PubSub::Subscription(subscription)) = settings.pub_sub else {
        panic!("subscription settings are echoed: {settings:?}");
    };
    assert_eq!(subscription.group, resource("telemetry-group"));
    assert!(subscription.receive_batch_size.is_some_and(|size| size > 0));
    assert!(
        subscription
            .long_polling_timeout
            .is_some_and(|timeout| timeout.seconds > 0),
        "{subscription:?}"
    );

    drop(client);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn send_echoes_ids_one_entry_per_message_with_offsets() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("send-client").await;

    let mut offsets = Vec::new();
    for index in 0..3 {
        offsets.push(
            client
                .send_ok(message(&format!("send-{index}"), "body"))
                .await,
        );
    }
    assert_eq!(offsets, [0, 1, 2], "queue offsets of queue 0, in order");

    let batch = client
        .send(vec![message("batch-0", "x"), message("batch-1", "y")])
        .await;
    assert_eq!(code(batch.status.as_ref()), Code::Ok, "{batch:?}");
    let ids: Vec<&str> = batch
        .entries
        .iter()
        .map(|entry| entry.message_id.as_str())
        .collect();
    assert_eq!(ids, ["batch-0", "batch-1"]);
    let offsets: Vec<i64> = batch.entries.iter().map(|entry| entry.offset).collect();
    assert_eq!(offsets, [3, 4]);
    assert_eq!(node.message_count().await, 5);

    drop(client);
    node.stop().await;
}

/// Sends one message the node must refuse; returns the entry's code, which
/// must also be the aggregate code.
async fn refusal(client: &mut Client, message: Message) -> Code {
    let response = client.send(vec![message]).await;
    assert_eq!(
        response.entries.len(),
        1,
        "one entry per message: {response:?}"
    );
    let entry_code = code(response.entries[0].status.as_ref());
    assert_eq!(code(response.status.as_ref()), entry_code, "{response:?}");
    entry_code
}

#[tokio::test(flavor = "multi_thread")]
async fn send_refuses_invalid_messages_with_their_codes() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("send-refusals").await;

    assert_eq!(
        refusal(&mut client, message("", "no id")).await,
        Code::IllegalMessageId
    );
    let too_large = message("too-large", vec![7_u8; MAX_BODY + 1]);
    assert_eq!(
        refusal(&mut client, too_large).await,
        Code::MessageBodyTooLarge
    );
    let mut unknown = message("unknown-topic", "x");
    unknown.topic = resource("no-such-topic");
    assert_eq!(refusal(&mut client, unknown).await, Code::TopicNotFound);
    let mut lite = message("lite", "x");
    properties(&mut lite).message_type = MessageType::Lite as i32;
    assert_eq!(refusal(&mut client, lite).await, Code::Unsupported);
    // A half message joins its queue at commit; it cannot wait for a time too.
    let mut delayed_transaction = message("delayed-transaction", "x");
    properties(&mut delayed_transaction).message_type = MessageType::Transaction as i32;
    properties(&mut delayed_transaction).delivery_timestamp =
        Some(meridian_proto::prost_types::Timestamp {
            seconds: 4_000_000_000,
            nanos: 0,
        });
    assert_eq!(
        refusal(&mut client, delayed_transaction).await,
        Code::IllegalDeliveryTime
    );
    let mut no_group = message("fifo-without-group", "x");
    properties(&mut no_group).message_type = MessageType::Fifo as i32;
    assert_eq!(
        refusal(&mut client, no_group).await,
        Code::IllegalMessageGroup
    );
    assert_eq!(node.message_count().await, 0, "nothing refused was stored");

    // A body of exactly 4 MiB is taken: the server's decode limit is above it.
    client
        .send_ok(message("largest", vec![7_u8; MAX_BODY]))
        .await;

    let mixed = client
        .send(vec![message("mixed-ok", "x"), message("", "no id")])
        .await;
    assert_eq!(
        code(mixed.status.as_ref()),
        Code::MultipleResults,
        "{mixed:?}"
    );
    let codes: Vec<Code> = mixed
        .entries
        .iter()
        .map(|entry| code(entry.status.as_ref()))
        .collect();
    assert_eq!(codes, [Code::Ok, Code::IllegalMessageId]);
    assert_eq!(mixed.entries[0].message_id, "mixed-ok");
    assert_eq!(node.message_count().await, 2);

    drop(client);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_producer_retry_with_the_same_message_id_is_stored_once() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("retrying-producer").await;

    client.send_ok(message("before", "body")).await;
    let first = client.send_ok(message("retried", "body")).await;
    // Python retries on the next queue: still the same message.
    let mut retry = message("retried", "body");
    properties(&mut retry).queue_id = 3;
    let second = client.send_ok(retry).await;
    assert_eq!(
        node.message_count().await,
        2,
        "the retry is not stored again"
    );
    assert_eq!(first, 1);
    assert_eq!(second, first, "the retry is told where the message is");

    drop(client);
    node.stop().await;
}

/// Two producers whose message ids collide (hosts with the same MAC, both
/// pid 1, the same second): different messages with one id are all stored
/// and delivered; only a true retry (same id, same content) is skipped.
#[tokio::test(flavor = "multi_thread")]
async fn different_messages_with_one_message_id_are_all_stored_and_delivered() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut first = node.client("container-1").await;
    let mut second = node.client("container-2").await;
    let id = "010A0000000001000105000000000000";
    let mut offsets = Vec::new();
    offsets.push(first.send_ok(message(id, "from container 1")).await);
    offsets.push(second.send_ok(message(id, "from container 2")).await);
    let mut other_tag = message(id, "from container 1");
    properties(&mut other_tag).tag = Some("other".to_owned());
    offsets.push(second.send_ok(other_tag).await);
    // A true retry of the second message, to another queue.
    let mut retry = message(id, "from container 2");
    properties(&mut retry).queue_id = 5;
    let retried = second.send_ok(retry).await;
    assert_eq!(
        retried, offsets[1],
        "the retry is told where its message is"
    );
    assert_eq!(node.message_count().await, 3, "three different messages");

    let mut consumer = node.client("consumer").await;
    let delivered = consumer
        .receive(&Receive::new("colliding-ids"))
        .await
        .expect_messages("a new group receives every message");
    let mut bodies: Vec<(String, Option<String>)> = delivered
        .iter()
        .map(|message| {
            assert_eq!(delivered_properties(message).message_id, id);
            (
                String::from_utf8_lossy(&message.body).into_owned(),
                delivered_properties(message).tag.clone(),
            )
        })
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        [
            ("from container 1".to_owned(), Some("other".to_owned())),
            ("from container 1".to_owned(), Some("t".to_owned())),
            ("from container 2".to_owned(), Some("t".to_owned())),
        ]
    );
    drop((first, second, consumer));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_code_the_node_emits_is_known_to_the_oldest_client() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("audit-client").await;
    // `support::code` checks each status it is given; this test walks the
    // error paths that the other tests do not reach.
    let heartbeat = client.request(HeartbeatRequest {
        group: resource("audit"),
        client_type: ClientType::SimpleConsumer as i32,
    });
    let heartbeat = within(STEP, "Heartbeat", client.inner.heartbeat(heartbeat))
        .await
        .expect("gRPC OK")
        .into_inner();
    assert_eq!(code(heartbeat.status.as_ref()), Code::Ok);

    let mut malformed = Vec::new();
    let mut bad_filter = support::Receive::new("audit");
    bad_filter.filter = "a||".to_owned();
    malformed.push(client.receive(&bad_filter).await.code);
    let mut no_group = support::Receive::new("");
    no_group.poll = Duration::ZERO;
    malformed.push(client.receive(&no_group).await.code);
    let mut wrong_queue = message("wrong-queue", "x");
    properties(&mut wrong_queue).queue_id = QUEUES;
    let response = client.send(vec![wrong_queue]).await;
    malformed.push(code(response.status.as_ref()));
    let empty = client.send(Vec::new()).await;
    malformed.push(code(empty.status.as_ref()));
    // One entry even so: the Rust client 5.0.0 indexes entry 0 unchecked.
    assert_eq!(empty.entries.len(), 1, "{empty:?}");
    assert_eq!(
        code(empty.entries[0].status.as_ref()),
        Code::BadRequest,
        "{empty:?}"
    );
    for received in &malformed {
        assert_ne!(*received, Code::Ok, "{malformed:?}");
    }

    let terminate = client.request(NotifyClientTerminationRequest {
        group: resource("audit"),
    });
    let terminated = within(
        STEP,
        "NotifyClientTermination",
        client.inner.notify_client_termination(terminate),
    )
    .await
    .expect("gRPC OK")
    .into_inner();
    assert_eq!(
        code(terminated.status.as_ref()),
        Code::Ok,
        "Rust shutdown() needs OK"
    );

    drop(client);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_the_node_ends_open_telemetry_streams_and_long_polls() {
    let directory = tempfile::tempdir().expect("temp dir");
    let node = TestNode::start(directory.path()).await;
    let mut client = node.client("stopping-client").await;
    // A Telemetry stream the client keeps open, as every official client does.
    let (_commands, outbound) = mpsc::channel::<TelemetryCommand>(4);
    let request = client.request(ReceiverStream::new(outbound));
    let _telemetry = within(STEP, "Telemetry", client.inner.telemetry(request))
        .await
        .expect("Telemetry answers with gRPC OK");
    let mut receive = support::Receive::new("stopping");
    receive.poll = Duration::from_secs(15);
    let mut polling_client = node.client("stopping-consumer").await;
    let polling = tokio::spawn(async move { polling_client.receive(&receive).await });
    // The poll must be waiting before the stop.
    node.until_receives_wait(1).await;

    let started = tokio::time::Instant::now();
    within(
        Duration::from_secs(10),
        "stop with open streams",
        node.stop(),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let answered = within(STEP, "the pending long poll", polling)
        .await
        .expect("the receive task");
    answered.expect_not_found("a stopping node answers pending polls");
}
