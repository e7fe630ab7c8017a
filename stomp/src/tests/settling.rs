//! Subscriptions, deliveries, ack modes, NACK, flow control and
//! transactions.

use super::*;
use meridian_proto::rocketmq::v2::FilterType;

/// Whether `consumer` acknowledged handle `handle`.
fn acked(state: &fake::State, consumer: &str, handle: &str) -> bool {
    state
        .acks
        .iter()
        .any(|(name, acked)| name == consumer && acked == handle)
}

/// The receipt handle of the fake's `number`th delivery (it numbers them
/// h1, h2, … in delivery order).
fn handle(number: u64) -> String {
    format!("h{number}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_ack_delivers_and_acknowledges() {
    let server = Server::start().await;
    let mut client = server.client().await;
    client
        .request(subscribe("/queue/demo", "sub-1", "auto"), "s")
        .await;
    let sent = send("/queue/demo", b"hello")
        .with_header("tag", "TagA")
        .with_header("keys", "k1,k2")
        .with_header("content-type", "text/plain")
        .with_header("x-custom", "a:b");
    client.request(sent, "r").await;
    let message = client.expect(Command::Message).await;
    assert_eq!(message.header("destination"), Some("/queue/demo"));
    assert_eq!(message.header("subscription"), Some("sub-1"));
    assert_eq!(message.header("ack"), message.header("message-id"));
    assert_eq!(message.header("content-length"), Some("5"));
    assert_eq!(message.header("content-type"), Some("text/plain"));
    assert_eq!(message.header("tag"), Some("TagA"));
    assert_eq!(message.header("keys"), Some("k1,k2"));
    assert_eq!(message.header("x-custom"), Some("a:b"));
    assert_eq!(message.header("delivery-attempt"), Some("1"));
    assert_eq!(message.header("redelivered"), None);
    let stored_id = server.backend.read(|state| {
        state.messages("demo")[0]
            .system_properties
            .as_ref()
            .map(|properties| properties.message_id.clone())
    });
    assert_eq!(message.header("rocketmq-message-id"), stored_id.as_deref());
    assert_eq!(&message.body[..], b"hello");
    server
        .backend
        .wait_for("the auto ack", WAIT, |state| {
            acked(state, "stomp_demo", &handle(1)).then_some(())
        })
        .await;
    let (request, own) = server.backend.read(|state| state.receives[0].clone());
    assert_eq!(own, None);
    assert_eq!(
        request.group.map(|group| group.name).as_deref(),
        Some("stomp_demo")
    );
    assert_eq!(request.batch_size, 32);
    assert!(!request.auto_renew);
    assert_eq!(request.invisible_duration.map(|d| d.seconds), Some(300));
    assert!(request.filter_expression.is_none());
    // The first receive (before the RECEIPT of the SUBSCRIBE) does not
    // wait; the next ones long-poll.
    assert_eq!(request.long_polling_timeout.map(|d| d.seconds), Some(0));
    let next = server
        .backend
        .wait_for("a second receive", WAIT, |state| {
            state.receives.get(1).cloned()
        })
        .await;
    assert_eq!(next.0.long_polling_timeout.map(|d| d.seconds), Some(20));
    // An auto-ack message awaits no ACK.
    let id = message.header("ack").unwrap_or_default().to_owned();
    client.send(&frame(Command::Ack, &[("id", &id)])).await;
    client.expect_error("not awaiting an acknowledgement").await;
}

#[tokio::test]
async fn client_individual_acks_one_and_releases_the_rest_at_disconnect() {
    let server = Server::start().await;
    let mut client = server.client().await;
    server.backend.store("demo", None, b"one");
    server.backend.store("demo", None, b"two");
    client
        .request(
            subscribe("/queue/demo", "s", "client-individual").with_header("ack-timeout", "60000"),
            "s",
        )
        .await;
    let first = client.expect(Command::Message).await;
    let second = client.expect(Command::Message).await;
    assert_eq!(&first.body[..], b"one");
    assert_ne!(first.header("ack"), second.header("ack"));
    let id = second.header("ack").unwrap_or_default().to_owned();
    client
        .request(frame(Command::Ack, &[("id", &id)]), "a")
        .await;
    server.backend.read(|state| {
        assert!(acked(state, "stomp_demo", &handle(2)));
        assert!(!acked(state, "stomp_demo", &handle(1)));
        assert_eq!(
            state.receives[0].0.invisible_duration.map(|d| d.seconds),
            Some(60)
        );
    });
    // The same id again is no longer pending.
    client
        .send(&frame(Command::Ack, &[("id", &id), ("receipt", "again")]))
        .await;
    let error = client.expect_error("not awaiting an acknowledgement").await;
    assert_eq!(error.header("receipt-id"), Some("again"));
    // The session ended: the first message is visible again at once.
    server
        .backend
        .wait_for("the release", WAIT, |state| {
            state
                .changes
                .iter()
                .any(|(name, released, millis)| {
                    name == "stomp_demo" && *released == handle(1) && *millis == 0
                })
                .then_some(())
        })
        .await;
    assert_eq!(
        server.backend.read(|state| state.in_flight("stomp_demo")),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ack_is_cumulative() {
    let server = Server::start().await;
    let mut client = server.client().await;
    for body in [b"1", b"2", b"3"] {
        server.backend.store("demo", None, body);
    }
    client
        .request(subscribe("/queue/demo", "s", "client"), "s")
        .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let message = client.expect(Command::Message).await;
        ids.push(message.header("ack").unwrap_or_default().to_owned());
    }
    client
        .request(frame(Command::Ack, &[("id", &ids[1])]), "a")
        .await;
    server.backend.read(|state| {
        assert!(acked(state, "stomp_demo", &handle(1)));
        assert!(acked(state, "stomp_demo", &handle(2)));
        assert!(!acked(state, "stomp_demo", &handle(3)));
        assert_eq!(state.ack_calls, [2]);
    });
    client.send(&frame(Command::Ack, &[("id", &ids[0])])).await;
    client.expect_error("not awaiting").await;
}

#[tokio::test]
async fn nack_delivers_the_message_again_at_once() {
    let server = Server::start().await;
    let mut client = server.client().await;
    server.backend.store("demo", Some("TagA"), b"retry me");
    client
        .request(subscribe("/queue/demo", "s", "client-individual"), "s")
        .await;
    let first = client.expect(Command::Message).await;
    let id = first.header("ack").unwrap_or_default().to_owned();
    client
        .request(frame(Command::Nack, &[("id", &id)]), "n")
        .await;
    let again = client.expect(Command::Message).await;
    assert_eq!(&again.body[..], b"retry me");
    assert_eq!(again.header("redelivered"), Some("true"));
    assert_eq!(again.header("delivery-attempt"), Some("2"));
    assert_eq!(
        again.header("rocketmq-message-id"),
        first.header("rocketmq-message-id")
    );
    assert_ne!(again.header("message-id"), first.header("message-id"));
    let id = again.header("ack").unwrap_or_default().to_owned();
    client
        .request(frame(Command::Ack, &[("id", &id)]), "a")
        .await;
    server.backend.read(|state| {
        assert_eq!(state.changes, [("stomp_demo".to_owned(), handle(1), 0)]);
        assert!(acked(state, "stomp_demo", &handle(2)));
    });
    client.send(&frame(Command::Nack, &[("id", "999")])).await;
    client.expect_error("NACK: message \"999\"").await;
}

#[tokio::test]
async fn prefetch_count_bounds_unacknowledged_messages() {
    let server = Server::start().await;
    let mut client = server.client().await;
    for body in [b"1", b"2", b"3"] {
        server.backend.store("demo", None, body);
    }
    client
        .request(
            subscribe("/queue/demo", "s", "client-individual").with_header("prefetch-count", "2"),
            "s",
        )
        .await;
    let first = client.expect(Command::Message).await;
    client.expect(Command::Message).await;
    let batch = server.backend.read(|state| state.receives[0].0.batch_size);
    assert_eq!(batch, 2);
    client.expect_quiet(Duration::from_millis(300)).await;
    assert_eq!(server.backend.read(|state| state.receives.len()), 1);
    let id = first.header("ack").unwrap_or_default().to_owned();
    client.send(&frame(Command::Ack, &[("id", &id)])).await;
    let third = client.expect(Command::Message).await;
    assert_eq!(&third.body[..], b"3");
}

#[tokio::test]
async fn selectors_and_tags_filter_by_tag() {
    let server = Server::start().await;
    let mut client = server.client().await;
    server.backend.store("demo", Some("TagA"), b"a");
    server.backend.store("demo", Some("TagB"), b"b");
    server.backend.store("demo", Some("TagC"), b"c");
    client
        .request(
            subscribe("/queue/demo", "s", "auto").with_header("selector", "TagA || TagC"),
            "s",
        )
        .await;
    assert_eq!(&client.expect(Command::Message).await.body[..], b"a");
    assert_eq!(&client.expect(Command::Message).await.body[..], b"c");
    let filter = server
        .backend
        .read(|state| state.receives[0].0.filter_expression.clone())
        .expect("a filter");
    assert_eq!(filter.r#type(), FilterType::Tag);
    assert_eq!(filter.expression, "TagA || TagC");
    let mut other = server.client().await;
    other
        .request(
            subscribe("/queue/demo", "s", "auto")
                .with_header("tag", "TagB")
                .with_header("consumer-group", "tagged"),
            "s",
        )
        .await;
    assert_eq!(&other.expect(Command::Message).await.body[..], b"b");
}

#[tokio::test]
async fn a_topic_subscription_is_a_consumer_of_its_own() {
    let server = Server::start().await;
    let mut client = server.client().await;
    server.backend.store("demo", None, b"before");
    client
        .request(subscribe("/topic/demo", "t", "client"), "s")
        .await;
    let (request, own) = server
        .backend
        .wait_for("a receive", WAIT, |state| state.receives.first().cloned())
        .await;
    let own = own.expect("its own subscription");
    assert!(!own.contains('@') && !own.contains('.'), "{own}");
    assert_eq!(
        request.group.map(|group| group.name).as_deref(),
        Some("stomp_topic_demo")
    );
    server.backend.store("demo", None, b"after");
    let message = client.expect(Command::Message).await;
    assert_eq!(&message.body[..], b"after");
    assert_eq!(message.header("destination"), Some("/topic/demo"));
    client
        .request(frame(Command::Unsubscribe, &[("id", "t")]), "u")
        .await;
    server.backend.read(|state| {
        assert_eq!(
            state.ended,
            [(
                "stomp_topic_demo".to_owned(),
                own.clone(),
                "demo".to_owned()
            )]
        );
        // Its unacknowledged message is dropped with it, not released.
        assert!(state.changes.is_empty());
    });
    // A second topic subscription gets another id.
    client
        .request(subscribe("/topic/demo", "t", "auto"), "s2")
        .await;
    let second = server
        .backend
        .wait_for("a second receive", WAIT, |state| {
            state
                .receives
                .iter()
                .filter_map(|(_, own)| own.clone())
                .find(|id| *id != own)
        })
        .await;
    assert_ne!(second, own);
}

#[tokio::test]
async fn consumer_group_makes_a_topic_subscription_shared() {
    let server = Server::start().await;
    let mut client = server.client().await;
    client
        .request(
            subscribe("/topic/demo", "t", "auto").with_header("consumer-group", "durable"),
            "s",
        )
        .await;
    let (request, own) = server
        .backend
        .wait_for("a receive", WAIT, |state| state.receives.first().cloned())
        .await;
    assert_eq!(own, None);
    assert_eq!(
        request.group.map(|group| group.name).as_deref(),
        Some("durable")
    );
}

#[tokio::test]
async fn unsubscribe_releases_what_the_subscription_held() {
    let server = Server::start().await;
    let mut client = server.client().await;
    server.backend.store("demo", None, b"held");
    client
        .request(subscribe("/queue/demo", "s", "client"), "s")
        .await;
    client.expect(Command::Message).await;
    client
        .request(frame(Command::Unsubscribe, &[("id", "s")]), "u")
        .await;
    server.backend.read(|state| {
        assert_eq!(state.changes, [("stomp_demo".to_owned(), handle(1), 0)]);
    });
    // The id may be used again.
    client
        .request(subscribe("/queue/demo", "s", "client"), "s2")
        .await;
    let again = client.expect(Command::Message).await;
    assert_eq!(again.header("delivery-attempt"), Some("2"));
    client
        .send(&frame(Command::Unsubscribe, &[("id", "nope")]))
        .await;
    client
        .expect_error("no subscription with id \"nope\"")
        .await;
}

#[tokio::test]
async fn subscription_errors() {
    let server = Server::with_limits(Limits {
        max_subscriptions: 1,
        ..Limits::default()
    })
    .await;
    let cases = [
        (subscribe("/queue/missing", "s", "auto"), "TOPIC_NOT_FOUND"),
        (
            subscribe("/queue/demo", "s", "sometimes"),
            "header ack:sometimes is invalid",
        ),
        (
            subscribe("/queue/demo", "s", "client").with_header("prefetch-count", "0"),
            "prefetch-count",
        ),
        (
            subscribe("/queue/demo", "s", "client").with_header("ack-timeout", "10"),
            "ack-timeout",
        ),
        (
            subscribe("/queue/demo", "s", "auto").with_header("consumer-group", "a@b"),
            "consumer-group",
        ),
        (
            frame(Command::Subscribe, &[("destination", "/queue/demo")]),
            "the id header is required",
        ),
    ];
    for (subscribe, text) in cases {
        let mut client = server.client().await;
        client.send(&subscribe).await;
        client.expect_error(text).await;
    }
    let mut client = server.client().await;
    client
        .request(subscribe("/queue/demo", "s", "auto"), "s")
        .await;
    client.send(&subscribe("/queue/other", "s", "auto")).await;
    client.expect_error("already in use").await;
    let mut client = server.client().await;
    client
        .request(subscribe("/queue/demo", "s", "auto"), "s")
        .await;
    client.send(&subscribe("/queue/other", "t", "auto")).await;
    client.expect_error("at most 1 subscriptions").await;
}

#[tokio::test]
async fn a_refused_receive_is_an_error() {
    let server = Server::start().await;
    // The first receive answers the SUBSCRIBE.
    let mut client = server.client().await;
    client
        .send(&subscribe("/queue/broken", "s", "auto").with_header("receipt", "s"))
        .await;
    let error = client
        .expect_error("SUBSCRIBE to topic broken refused")
        .await;
    assert_eq!(error.header("receipt-id"), Some("s"));
    // A later one ends the session.
    let mut client = server.client().await;
    client
        .request(subscribe("/queue/other", "s", "auto"), "s")
        .await;
    server
        .backend
        .update(|state| state.broken.insert("other".to_owned()));
    client.expect_error("receive from topic other").await;
}

#[tokio::test]
async fn transactions_apply_at_commit_and_vanish_at_abort() {
    let server = Server::start().await;
    let mut client = server.client().await;
    let stored = |server: &Server| {
        server.backend.read(|state| {
            state
                .messages("demo")
                .iter()
                .map(|message| message.body.clone())
                .collect::<Vec<_>>()
        })
    };
    client
        .request(frame(Command::Begin, &[("transaction", "t1")]), "b1")
        .await;
    for body in [&b"one"[..], b"two"] {
        client
            .request(
                send("/queue/demo", body).with_header("transaction", "t1"),
                "s",
            )
            .await;
    }
    assert!(stored(&server).is_empty());
    client
        .request(frame(Command::Begin, &[("transaction", "t2")]), "b2")
        .await;
    client
        .request(
            send("/queue/demo", b"never").with_header("transaction", "t2"),
            "s",
        )
        .await;
    client
        .request(frame(Command::Abort, &[("transaction", "t2")]), "a2")
        .await;
    client
        .request(frame(Command::Commit, &[("transaction", "t1")]), "c1")
        .await;
    assert_eq!(stored(&server), [b"one".to_vec(), b"two".to_vec()]);
    client
        .send(&send("/queue/demo", b"x").with_header("transaction", "t2"))
        .await;
    client.expect_error("no open transaction \"t2\"").await;
    assert_eq!(stored(&server).len(), 2);
}

#[tokio::test]
async fn acks_in_a_transaction_wait_for_commit() {
    let server = Server::start().await;
    let mut client = server.client().await;
    server.backend.store("demo", None, b"m");
    client
        .request(subscribe("/queue/demo", "s", "client-individual"), "s")
        .await;
    let message = client.expect(Command::Message).await;
    let id = message.header("ack").unwrap_or_default().to_owned();
    client
        .request(frame(Command::Begin, &[("transaction", "t")]), "b")
        .await;
    client
        .request(
            frame(Command::Ack, &[("id", &id), ("transaction", "t")]),
            "a",
        )
        .await;
    assert!(server.backend.read(|state| state.acks.is_empty()));
    client
        .request(frame(Command::Commit, &[("transaction", "t")]), "c")
        .await;
    assert!(
        server
            .backend
            .read(|state| acked(state, "stomp_demo", &handle(1)))
    );
    client
        .send(&frame(Command::Begin, &[("transaction", "x")]))
        .await;
    client
        .send(&frame(Command::Begin, &[("transaction", "x")]))
        .await;
    client.expect_error("already open").await;
}

#[tokio::test]
async fn transactions_are_bounded() {
    let server = Server::with_limits(Limits {
        max_transactions: 1,
        max_transaction_frames: 2,
        ..Limits::default()
    })
    .await;
    let mut client = server.client().await;
    client
        .request(frame(Command::Begin, &[("transaction", "t")]), "b")
        .await;
    for index in 0..2 {
        client
            .request(
                send("/queue/demo", b"x").with_header("transaction", "t"),
                &format!("s{index}"),
            )
            .await;
    }
    client
        .send(&send("/queue/demo", b"x").with_header("transaction", "t"))
        .await;
    client.expect_error("would hold more than 2 frames").await;
    let mut client = server.client().await;
    client
        .request(frame(Command::Begin, &[("transaction", "a")]), "b")
        .await;
    client
        .send(&frame(Command::Begin, &[("transaction", "b")]))
        .await;
    client.expect_error("at most 1 transactions").await;
    assert!(
        server
            .backend
            .read(|state| state.messages("demo").is_empty())
    );
}
