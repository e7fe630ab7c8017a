//! The router in-process, against fake nodes, through a real gRPC client
//! (the harness is in `support`).

mod support;

use meridian_proto::rocketmq::v2::{
    Code, HeartbeatRequest, Message, Publishing, QueryAssignmentRequest, QueryRouteRequest,
    ReceiveMessageRequest, SendMessageRequest, Settings, SystemProperties, TelemetryCommand,
    receive_message_response, settings::PubSub, telemetry_command,
};
use meridian_topology::DEMO_TOPIC;
use std::time::Duration;
use support::{Harness, STEP_TIMEOUT, code, resource, routed_to, with_client_id};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;

/// How long the router may take to notice a dead region.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn routes_to_own_region_then_fails_over_to_the_nearest_up_region() {
    let mut harness = Harness::start().await;

    // Right after start: the router waits for its first probes instead of failing.
    let route = harness.query_route(DEMO_TOPIC).await;
    assert_eq!(
        routed_to(&route),
        ("eu-west".to_owned(), harness.node_address("eu-west"))
    );
    let queue = &route.message_queues[0];
    assert_eq!(queue.id, 0);
    assert_eq!(queue.topic.as_ref(), Some(&resource(DEMO_TOPIC)));

    let killed_at = Instant::now();
    harness.kill_node("eu-west").await;

    // on-prem is nearer but has never answered: us-east must be chosen.
    let mut polls = tokio::time::interval(Duration::from_millis(100));
    loop {
        polls.tick().await;
        let route = harness.query_route(DEMO_TOPIC).await;
        let (region, address) = routed_to(&route);
        if region == "us-east" {
            assert_eq!(address, harness.node_address("us-east"));
            break;
        }
        assert_eq!(region, "eu-west", "only eu-west or us-east may be chosen");
        assert!(
            killed_at.elapsed() < FAILOVER_DEADLINE,
            "the router still routes to eu-west {:?} after its node died",
            killed_at.elapsed()
        );
    }

    // QueryAssignment follows the same choice.
    let assignment = timeout(
        STEP_TIMEOUT,
        harness
            .client
            .query_assignment(with_client_id(QueryAssignmentRequest {
                topic: Some(resource(DEMO_TOPIC)),
                group: Some(resource("group")),
                endpoints: None,
            })),
    )
    .await
    .expect("QueryAssignment answers in time")
    .expect("QueryAssignment succeeds at the gRPC level")
    .into_inner();
    assert_eq!(code(assignment.status.as_ref()), Some(Code::Ok));
    // One queue per broker, id -1 ("any queue"), for a group that is not FIFO.
    assert_eq!(assignment.assignments.len(), 1);
    let queue = assignment.assignments[0]
        .message_queue
        .as_ref()
        .expect("assigned queue");
    assert_eq!(queue.id, -1);
    let broker = queue.broker.as_ref().expect("assigned broker");
    assert_eq!(broker.name, "us-east");

    // With every node gone, the router says so instead of routing anywhere.
    let stopped_at = Instant::now();
    harness.kill_node("us-east").await;
    loop {
        polls.tick().await;
        let route = harness.query_route(DEMO_TOPIC).await;
        if code(route.status.as_ref()) == Some(Code::HaNotAvailable) {
            assert!(route.message_queues.is_empty());
            let message = route
                .status
                .map(|status| status.message)
                .unwrap_or_default();
            assert!(
                message.contains("eu-west, on-prem, us-east are down"),
                "{message}"
            );
            break;
        }
        assert!(
            stopped_at.elapsed() < FAILOVER_DEADLINE,
            "the router still routes to {:?} after every node died",
            routed_to(&route)
        );
    }
    harness.stop().await;
}

#[tokio::test]
async fn unknown_or_blank_topics_are_refused_without_queues() {
    let mut harness = Harness::start().await;
    let route = harness.query_route("no-such-topic").await;
    assert_eq!(code(route.status.as_ref()), Some(Code::TopicNotFound));
    assert!(route.message_queues.is_empty());

    let route = harness.query_route(" ").await;
    assert_eq!(code(route.status.as_ref()), Some(Code::IllegalTopic));
    assert!(route.message_queues.is_empty());
    harness.stop().await;
}

#[tokio::test]
async fn requests_without_a_client_id_are_refused() {
    let mut harness = Harness::start().await;
    let route = harness
        .client
        .query_route(Request::new(QueryRouteRequest {
            topic: Some(resource(DEMO_TOPIC)),
            endpoints: None,
        }))
        .await
        .expect("QueryRoute succeeds at the gRPC level")
        .into_inner();
    assert_eq!(code(route.status.as_ref()), Some(Code::ClientIdRequired));
    assert!(route.message_queues.is_empty());

    let heartbeat = harness
        .client
        .heartbeat(Request::new(HeartbeatRequest::default()))
        .await
        .expect("Heartbeat succeeds at the gRPC level")
        .into_inner();
    assert_eq!(
        code(heartbeat.status.as_ref()),
        Some(Code::ClientIdRequired)
    );

    // Telemetry: one command carrying the refusal, then the stream ends.
    let (_commands, outbound) = mpsc::channel::<TelemetryCommand>(1);
    let mut replies = timeout(
        STEP_TIMEOUT,
        harness
            .client
            .telemetry(Request::new(ReceiverStream::new(outbound))),
    )
    .await
    .expect("Telemetry headers arrive at once")
    .expect("Telemetry starts")
    .into_inner();
    let refusal = timeout(STEP_TIMEOUT, replies.message())
        .await
        .expect("refusal in time")
        .expect("refusal frame")
        .expect("one command");
    assert_eq!(code(refusal.status.as_ref()), Some(Code::ClientIdRequired));
    assert!(refusal.command.is_none());
    let end = timeout(STEP_TIMEOUT, replies.message())
        .await
        .expect("stream ends in time")
        .expect("stream ends cleanly");
    assert!(end.is_none());
    harness.stop().await;
}

#[tokio::test]
async fn telemetry_answers_settings_and_ends_on_shutdown() {
    let mut harness = Harness::start().await;
    let (commands, outbound) = mpsc::channel(4);
    let mut replies = timeout(
        STEP_TIMEOUT,
        harness
            .client
            .telemetry(with_client_id(ReceiverStream::new(outbound))),
    )
    .await
    .expect("Telemetry headers arrive before any command is sent")
    .expect("Telemetry starts")
    .into_inner();

    let settings = Settings {
        pub_sub: Some(PubSub::Publishing(Publishing {
            topics: vec![resource(DEMO_TOPIC)],
            ..Publishing::default()
        })),
        ..Settings::default()
    };
    commands
        .send(TelemetryCommand {
            status: None,
            command: Some(telemetry_command::Command::Settings(settings)),
        })
        .await
        .expect("send settings");
    let reply = timeout(STEP_TIMEOUT, replies.message())
        .await
        .expect("settings reply in time")
        .expect("settings reply frame")
        .expect("a settings reply");
    assert_eq!(code(reply.status.as_ref()), Some(Code::Ok));
    let Some(telemetry_command::Command::Settings(merged)) = reply.command else {
        panic!("expected settings, got {:?}", reply.command);
    };
    let Some(PubSub::Publishing(publishing)) = merged.pub_sub else {
        panic!("expected publishing settings, got {:?}", merged.pub_sub);
    };
    assert_eq!(publishing.max_body_size, 4 * 1024 * 1024);
    assert_eq!(publishing.topics, vec![resource(DEMO_TOPIC)]);

    // The stream stays open while the client keeps its side open; shutdown ends it.
    harness.router_stop.cancel();
    let end = timeout(STEP_TIMEOUT, replies.message())
        .await
        .expect("stream ends in time on shutdown");
    assert!(matches!(end, Ok(None)), "{end:?}");
    drop(commands);
    harness.stop().await;
}

#[tokio::test]
async fn heartbeats_are_acknowledged_and_data_rpcs_point_at_the_nodes() {
    let mut harness = Harness::start().await;
    let heartbeat = harness
        .client
        .heartbeat(with_client_id(HeartbeatRequest::default()))
        .await
        .expect("Heartbeat")
        .into_inner();
    assert_eq!(code(heartbeat.status.as_ref()), Some(Code::Ok));

    let message = |id: &str| Message {
        topic: Some(resource(DEMO_TOPIC)),
        system_properties: Some(SystemProperties {
            message_id: id.to_owned(),
            ..SystemProperties::default()
        }),
        ..Message::default()
    };
    let sent = harness
        .client
        .send_message(with_client_id(SendMessageRequest {
            messages: vec![message("id-1"), message("id-2")],
        }))
        .await
        .expect("SendMessage")
        .into_inner();
    assert_eq!(code(sent.status.as_ref()), Some(Code::NotImplemented));
    let entries: Vec<(&str, Option<Code>)> = sent
        .entries
        .iter()
        .map(|entry| (entry.message_id.as_str(), code(entry.status.as_ref())))
        .collect();
    assert_eq!(
        entries,
        vec![
            ("id-1", Some(Code::NotImplemented)),
            ("id-2", Some(Code::NotImplemented))
        ]
    );

    let mut frames = harness
        .client
        .receive_message(with_client_id(ReceiveMessageRequest::default()))
        .await
        .expect("ReceiveMessage")
        .into_inner();
    let frame = frames
        .message()
        .await
        .expect("status frame")
        .expect("one frame");
    let Some(receive_message_response::Content::Status(status)) = frame.content else {
        panic!("expected a status frame, got {frame:?}");
    };
    assert_eq!(code(Some(&status)), Some(Code::NotImplemented));
    assert!(status.message.contains("QueryRoute"), "{}", status.message);
    assert!(frames.message().await.expect("clean end").is_none());
    harness.stop().await;
}
