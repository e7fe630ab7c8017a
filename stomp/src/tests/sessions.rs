//! Connecting, sending, errors, heart-beats, limits and shutdown.

use super::*;
use meridian_face::access::AccessKeys;
use meridian_proto::rocketmq::v2::MessageType;

#[tokio::test]
async fn connect_then_disconnect_with_a_receipt() {
    let server = Server::start().await;
    let mut client = Client::open(server.address).await;
    let connected = client.connect(&[("heart-beat", "0,0")]).await;
    assert_eq!(connected.command, Command::Connected);
    assert_eq!(connected.header("version"), Some("1.2"));
    assert_eq!(connected.header("heart-beat"), Some("10000,10000"));
    assert_eq!(connected.header("server"), Some(crate::SERVER_NAME));
    assert!(crate::SERVER_NAME.starts_with("meridian/"));
    assert_eq!(connected.header("session").map(str::len), Some(32));
    client
        .send(&frame(Command::Disconnect, &[("receipt", "bye")]))
        .await;
    let receipt = client.expect(Command::Receipt).await;
    assert_eq!(receipt.header("receipt-id"), Some("bye"));
    client.expect_closed().await;
    server.stop().await;
}

#[tokio::test]
async fn the_stomp_command_connects_too() {
    let server = Server::start().await;
    let mut client = Client::open(server.address).await;
    client
        .send(&frame(
            Command::Stomp,
            &[("accept-version", "1.0,1.1,1.2"), ("host", "127.0.0.1")],
        ))
        .await;
    client.expect(Command::Connected).await;
}

#[tokio::test]
async fn only_stomp_1_2_is_spoken() {
    let server = Server::start().await;
    for headers in [vec![("accept-version", "1.0,1.1")], vec![]] {
        let mut client = Client::open(server.address).await;
        client.send(&frame(Command::Connect, &headers)).await;
        let error = client.expect_error("speaks STOMP 1.2 only").await;
        assert!(!error.body.is_empty());
    }
}

#[tokio::test]
async fn the_first_frame_must_be_connect() {
    let server = Server::start().await;
    let mut client = Client::open(server.address).await;
    client.send(&send("/queue/demo", b"x")).await;
    client.expect_error("must be CONNECT or STOMP").await;
    assert!(
        server
            .backend
            .read(|state| state.messages("demo").is_empty())
    );
}

#[tokio::test]
async fn a_silent_socket_is_closed_after_the_connect_timeout() {
    let server = Server::with_limits(Limits {
        connect_timeout: Duration::from_millis(200),
        ..Limits::default()
    })
    .await;
    let mut client = Client::open(server.address).await;
    client
        .expect_error("no CONNECT or STOMP frame within 200 ms")
        .await;
}

#[tokio::test]
async fn access_keys_are_checked() {
    let keys = AccessKeys::new([meridian_topology::AccessKey::granted_everything(
        "ak", "s3cret",
    )]);
    let server = Server::with(Limits::default(), Authentication::Keys(Arc::new(keys))).await;
    for credentials in [
        vec![("login", "ak"), ("passcode", "wrong")],
        vec![("login", "nobody"), ("passcode", "s3cret")],
        vec![("login", "ak")],
        vec![],
    ] {
        let mut client = Client::open(server.address).await;
        let login = credentials
            .iter()
            .find(|(name, _)| *name == "login")
            .map_or("", |(_, value)| *value);
        let error = client.connect(&credentials).await;
        assert_eq!(error.command, Command::Error);
        let message = error.header("message").unwrap_or_default();
        assert!(message.starts_with("authentication failed"), "{message}");
        assert!(message.contains(&format!("{login:?}")), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        assert!(!String::from_utf8_lossy(&error.body).contains("s3cret"));
        client.expect_closed().await;
    }
    let mut client = Client::open(server.address).await;
    let connected = client
        .connect(&[("login", "ak"), ("passcode", "s3cret")])
        .await;
    assert_eq!(connected.command, Command::Connected);
}

#[tokio::test]
async fn a_send_stores_a_message_with_its_headers() {
    let server = Server::start().await;
    let mut client = server.client().await;
    let frame = send("/queue/demo", b"hello")
        .with_header("tag", "TagA")
        .with_header("keys", "k1 k2")
        .with_header("content-type", "text/plain")
        .with_header("x-custom", "a:b\nc");
    client.request(frame, "r-1").await;
    let message = server
        .backend
        .read(|state| state.messages("demo").first().cloned())
        .expect("stored");
    let properties = message.system_properties.clone().expect("set");
    assert_eq!(message.body, b"hello");
    assert_eq!(properties.tag.as_deref(), Some("TagA"));
    assert_eq!(properties.keys, ["k1", "k2"]);
    assert_eq!(properties.message_type(), MessageType::Normal);
    assert!(properties.born_host.starts_with("127.0.0.1:"));
    assert_eq!(
        message.user_properties.get("x-custom").map(String::as_str),
        Some("a:b\nc")
    );
    assert_eq!(
        message
            .user_properties
            .get("content-type")
            .map(String::as_str),
        Some("text/plain")
    );
    assert!(!message.user_properties.contains_key("receipt"));
    let senders = server.backend.read(|state| state.senders.clone());
    assert!(senders.iter().all(|sender| sender.starts_with("stomp-")));
}

#[tokio::test]
async fn sends_take_turns_over_the_queues() {
    let server = Server::start().await;
    let mut client = server.client().await;
    let sends = usize::try_from(fake::QUEUES * 2).expect("small");
    for index in 0..sends {
        client
            .request(send("demo", b"x"), &format!("r-{index}"))
            .await;
    }
    let queues: Vec<i32> = server.backend.read(|state| {
        state
            .messages("demo")
            .iter()
            .map(|message| {
                message
                    .system_properties
                    .as_ref()
                    .map_or(-1, |p| p.queue_id)
            })
            .collect()
    });
    let distinct: std::collections::BTreeSet<i32> = queues.iter().copied().collect();
    assert_eq!(distinct, (0..fake::QUEUES).collect(), "{queues:?}");
}

#[tokio::test]
async fn a_body_with_nul_bytes_survives() {
    let server = Server::start().await;
    let mut client = server.client().await;
    client
        .request(subscribe("/queue/demo", "s", "auto"), "sub")
        .await;
    client.request(send("/queue/demo", b"a\0b\0"), "sent").await;
    let message = client.expect(Command::Message).await;
    assert_eq!(&message.body[..], b"a\0b\0");
    assert_eq!(message.header("content-length"), Some("4"));
}

#[tokio::test]
async fn a_refused_send_is_an_error() {
    let server = Server::start().await;
    let mut client = server.client().await;
    client
        .send(&send("/queue/missing", b"x").with_header("receipt", "r-9"))
        .await;
    let error = client.expect_error("TOPIC_NOT_FOUND").await;
    let message = error.header("message").unwrap_or_default();
    assert!(
        message.starts_with("SEND to topic missing refused"),
        "{message}"
    );
    assert_eq!(error.header("receipt-id"), Some("r-9"));
}

#[tokio::test]
async fn bad_destinations_are_errors() {
    let server = Server::start().await;
    for destination in ["/exchange/amq.topic/x", "/queue/", "a b"] {
        let mut client = server.client().await;
        client.send(&send(destination, b"x")).await;
        client.expect_error("destination").await;
    }
    let mut client = server.client().await;
    client.send(&frame(Command::Send, &[])).await;
    client
        .expect_error("the destination header is required")
        .await;
}

#[tokio::test]
async fn malformed_frames_are_errors_that_say_why() {
    let server = Server::start().await;
    let cases: [(&[u8], &str); 5] = [
        (b"BOGUS\n\n\0", "unknown command \"BOGUS\""),
        (
            b"SEND\ndestination:/queue/demo\nbad\\t:x\n\n\0",
            "invalid escape",
        ),
        (
            b"SEND\ndestination:/queue/demo\nno colon\n\n\0",
            "has no ':'",
        ),
        (b"SEND\ncontent-length:1\n\nab\0", "not followed by NUL"),
        (b"MESSAGE\n\n\0", "a client may not send this frame"),
    ];
    for (bytes, text) in cases {
        let mut client = server.client().await;
        client.send_raw(bytes).await;
        client.expect_error(text).await;
    }
    let mut client = server.client().await;
    client
        .send(&frame(Command::Connect, &[("accept-version", "1.2")]))
        .await;
    client.expect_error("already established").await;
    assert!(
        server
            .backend
            .read(|state| state.messages("demo").is_empty())
    );
}

#[tokio::test]
async fn oversized_frames_are_refused_while_reading() {
    let server = Server::with_limits(Limits {
        max_frame_bytes: 1024,
        max_header_line_bytes: 64,
        max_headers: 4,
        ..Limits::default()
    })
    .await;
    let mut client = server.client().await;
    client
        .send_raw(b"SEND\ndestination:/queue/demo\ncontent-length:5000\n\n")
        .await;
    client.expect_error("content-length 5000").await;
    let mut client = server.client().await;
    let mut bytes = b"SEND\ndestination:/queue/demo\n\n".to_vec();
    bytes.extend_from_slice(&[b'x'; 2048]);
    client.send_raw(&bytes).await;
    client.expect_error("larger than 1024 bytes").await;
    let mut client = server.client().await;
    client
        .send_raw(format!("SEND\nx:{}", "y".repeat(100)).as_bytes())
        .await;
    client.expect_error("longer than 64 bytes").await;
    let mut client = server.client().await;
    client.send_raw(b"SEND\na:1\nb:2\nc:3\nd:4\ne:5\n").await;
    client.expect_error("more than 4 headers").await;
}

#[tokio::test]
async fn pipelined_frames_are_all_processed_in_order() {
    let server = Server::start().await;
    let mut client = Client::open(server.address).await;
    let mut bytes = BytesMut::new();
    for frame in [
        frame(Command::Connect, &[("accept-version", "1.2")]),
        send("/queue/demo", b"one"),
        send("/queue/demo", b"two").with_header("receipt", "r-2"),
        frame(Command::Disconnect, &[("receipt", "bye")]),
    ] {
        encode(&frame, &mut bytes);
    }
    client.send_raw(&bytes).await;
    client.expect(Command::Connected).await;
    let receipt = client.expect(Command::Receipt).await;
    assert_eq!(receipt.header("receipt-id"), Some("r-2"));
    let receipt = client.expect(Command::Receipt).await;
    assert_eq!(receipt.header("receipt-id"), Some("bye"));
    client.expect_closed().await;
    let bodies: Vec<Vec<u8>> = server.backend.read(|state| {
        state
            .messages("demo")
            .iter()
            .map(|message| message.body.clone())
            .collect()
    });
    assert_eq!(bodies, [b"one".to_vec(), b"two".to_vec()]);
}

#[tokio::test]
async fn a_host_that_is_no_host_name_is_a_namespace() {
    let server = Server::start().await;
    let mut client = Client::open(server.address).await;
    client
        .send(&frame(
            Command::Connect,
            &[("accept-version", "1.2"), ("host", "MQ_INST_1")],
        ))
        .await;
    client.expect(Command::Connected).await;
    client.request(send("/queue/demo", b"ns"), "r").await;
    let stored = server
        .backend
        .read(|state| state.messages("MQ_INST_1%demo").len());
    assert_eq!(stored, 1);
    client
        .request(
            subscribe("/queue/demo", "s", "auto").with_header("consumer-group", "GID_1"),
            "sub",
        )
        .await;
    client.expect(Command::Message).await;
    let group = server
        .backend
        .wait_for("a receive", WAIT, |state| {
            state
                .receives
                .first()
                .map(|(request, _)| request.group.clone())
        })
        .await;
    assert_eq!(
        group.map(|group| group.name).as_deref(),
        Some("MQ_INST_1%GID_1")
    );
}

#[tokio::test]
async fn a_selector_is_a_tag_expression_or_else_sql92() {
    use meridian_proto::rocketmq::v2::FilterType;
    for (selector, expected) in [
        ("TagA || TagB", FilterType::Tag),
        ("*", FilterType::Tag),
        ("amount > 10", FilterType::Sql),
        ("TAGS = 'Amt'", FilterType::Sql),
    ] {
        let server = Server::start().await;
        let mut client = server.client().await;
        client
            .request(
                subscribe("/queue/demo", "s", "auto").with_header("selector", selector),
                "sub",
            )
            .await;
        let filter = server
            .backend
            .wait_for("a receive", WAIT, |state| {
                state
                    .receives
                    .first()
                    .map(|(request, _)| request.filter_expression.clone())
            })
            .await
            .expect("a filter");
        assert_eq!(filter.r#type, expected as i32, "{selector}");
        assert_eq!(filter.expression, selector, "{selector}");
    }
}

#[tokio::test]
async fn the_server_sends_heart_beats_and_closes_silent_clients() {
    let server = Server::with_limits(Limits {
        heart_beat_send: Duration::from_millis(100),
        heart_beat_receive: Duration::from_millis(100),
        ..Limits::default()
    })
    .await;
    let mut client = Client::open(server.address).await;
    let connected = client.connect(&[("heart-beat", "100,50")]).await;
    assert_eq!(connected.header("heart-beat"), Some("100,100"));
    // The server's EOLs arrive as raw bytes before the ERROR.
    let mut raw = client.input.to_vec();
    let mut chunk = [0_u8; 256];
    loop {
        let read = tokio::time::timeout(WAIT, client.stream.read(&mut chunk))
            .await
            .expect("bytes in time")
            .expect("read");
        if read == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..read]);
    }
    let error_at = raw
        .windows(5)
        .position(|window| window == b"ERROR")
        .expect("an ERROR frame after the silence");
    assert!(raw[..error_at].iter().all(|byte| *byte == b'\n'));
    assert!(error_at >= 1, "no heart-beat before the ERROR");
    let text = String::from_utf8_lossy(&raw[error_at..]);
    assert!(
        text.contains("no heart-beat or frame from the client"),
        "{text}"
    );
}

#[tokio::test]
async fn heart_beats_from_the_client_keep_it_connected() {
    let server = Server::with_limits(Limits {
        heart_beat_send: Duration::from_millis(0),
        heart_beat_receive: Duration::from_millis(100),
        ..Limits::default()
    })
    .await;
    let mut client = Client::open(server.address).await;
    let connected = client.connect(&[("heart-beat", "100,0")]).await;
    assert_eq!(connected.header("heart-beat"), Some("0,100"));
    // Ten heart-beats 50 ms apart span 2.5 times the silence limit.
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    for _ in 0..10 {
        ticks.tick().await;
        client.send_raw(b"\r\n").await;
    }
    client.request(send("/queue/demo", b"alive"), "r").await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    let server = Server::with_limits(Limits {
        max_connections: 1,
        ..Limits::default()
    })
    .await;
    let mut first = server.client().await;
    let mut second = Client::open(server.address).await;
    second.expect_error("at most 1 connections").await;
    first.request(send("/queue/demo", b"x"), "r").await;
    first
        .send(&frame(Command::Disconnect, &[("receipt", "bye")]))
        .await;
    first.expect(Command::Receipt).await;
    first.expect_closed().await;
    drop(first);
    // The slot is free once the first session's task ended, which the
    // client cannot observe: a refused attempt is tried again (at most a
    // few times, each one ending in an ERROR and a close).
    let mut refused = 0;
    loop {
        let mut third = Client::open(server.address).await;
        let answer = third.connect(&[]).await;
        if answer.command == Command::Connected {
            break;
        }
        assert_eq!(answer.command, Command::Error);
        third.expect_closed().await;
        refused += 1;
        assert!(refused < 100, "the connection slot was never freed");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn one_address_gets_its_share_of_connections() {
    let server = Server::with_limits(Limits {
        max_connections: 8,
        max_connections_per_address: 1,
        ..Limits::default()
    })
    .await;
    let mut first = server.client().await;
    let mut second = Client::open(server.address).await;
    second
        .expect_error("at most 1 connections at once from one address (127.0.0.1)")
        .await;
    first.request(send("/queue/demo", b"x"), "r").await;
}

#[tokio::test]
async fn shutdown_tells_clients_and_waits_for_sessions() {
    let server = Server::start().await;
    let mut client = server.client().await;
    client
        .request(subscribe("/queue/demo", "s", "client"), "sub")
        .await;
    server.backend.store("demo", None, b"held");
    client.expect(Command::Message).await;
    let backend = Arc::clone(&server.backend);
    server.stop().await;
    client.expect_error("server shutting down").await;
    // The session released what it held before serve returned.
    backend.read(|state| {
        assert_eq!(state.changes.len(), 1);
        assert_eq!(state.changes[0].2, 0);
    });
}
