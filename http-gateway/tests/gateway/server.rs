//! The listener: keep-alive, `Expect: 100-continue`, limits, timeouts,
//! garbage, and graceful shutdown.

use crate::support::{Client, Request, assert_error, development, message_xml, start, within};
use meridian_face::access::Authentication;
use meridian_http::Limits;
use std::time::Duration;

#[tokio::test]
async fn one_connection_serves_several_requests() {
    let gateway = development().await;
    let mut client = Client::connect(gateway.address).await;
    for body in ["one", "two", "three"] {
        let request = Request::new("POST", "/topics/T1/messages")
            .header("Connection", "Keep-Alive")
            .body(message_xml(body, None, None).as_bytes());
        assert_eq!(client.send(&request).await.status, 201);
    }
    let request = Request::new("GET", "/topics/T1/messages?consumer=G&numOfMessages=16");
    let reply = client.send(&request).await;
    assert_eq!(reply.status, 200);
    gateway.stop().await;
}

#[tokio::test]
async fn expect_100_continue_is_answered() {
    let gateway = development().await;
    let mut client = Client::connect(gateway.address).await;
    let body = message_xml("java", None, None);
    let request = Request::new("POST", "/topics/T1/messages")
        .header("Expect", "100-continue")
        .body(body.as_bytes());
    let bytes = request.bytes();
    let head_length = bytes.len() - body.len();
    client.write(&bytes[..head_length]).await;
    let informational = client.read().await;
    assert_eq!(informational.status, 100);
    client.write(body.as_bytes()).await;
    assert_eq!(client.read().await.status, 201);
    gateway.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_it_is_sent() {
    let limits = Limits {
        max_body_bytes: 1024,
        ..Limits::default()
    };
    let gateway = start(Authentication::Development, limits).await;
    let mut client = Client::connect(gateway.address).await;
    let head = "POST /topics/T1/messages HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: text/xml\r\nContent-Length: 2048\r\n\r\n";
    client.write(head.as_bytes()).await;
    let reply = client.read().await;
    assert_error(&reply, 413, "InvalidArgument");
    // Chunked, without a length: cut off at the limit.
    let mut client = Client::connect(gateway.address).await;
    let chunk = "x".repeat(1500);
    let chunked = format!(
        "POST /topics/T1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    client.write(chunked.as_bytes()).await;
    assert_error(&client.read().await, 413, "InvalidArgument");
    gateway.stop().await;
}

#[tokio::test]
async fn garbage_gets_an_error_and_the_server_goes_on() {
    let gateway = development().await;
    let mut client = Client::connect(gateway.address).await;
    client.write(b"\x00\x01GARBAGE \xff\r\n\r\n").await;
    let reply = client.read().await;
    assert_eq!(reply.status, 400);
    assert!(client.closed().await);
    let mut client = Client::connect(gateway.address).await;
    let headers: String = (0..100)
        .map(|index| format!("X-Filler-{index}: {}\r\n", "v".repeat(200)))
        .collect();
    client
        .write(format!("GET /topics/T1/messages HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes())
        .await;
    assert_eq!(client.read().await.status, 431);
    let reply = gateway
        .publish(
            "/topics/T1/messages",
            &message_xml("still here", None, None),
        )
        .await;
    assert_eq!(reply.status, 201);
    gateway.stop().await;
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        ..Limits::default()
    };
    let gateway = start(Authentication::Development, limits).await;
    let mut idle = Client::connect(gateway.address).await;
    let reply = idle
        .send(
            &Request::new("POST", "/topics/T1/messages")
                .body(message_xml("x", None, None).as_bytes()),
        )
        .await;
    assert_eq!(reply.status, 201);
    let started = std::time::Instant::now();
    assert!(idle.closed().await);
    assert!(started.elapsed() >= Duration::from_millis(500));

    let mut slow = Client::connect(gateway.address).await;
    slow.write(b"GET /topics/T1/messages HTTP/1.1\r\nHost: x\r\n")
        .await;
    let started = std::time::Instant::now();
    assert!(slow.closed().await);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_millis(600),
        "{elapsed:?}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn shutdown_ends_long_polls_with_the_empty_answer() {
    let gateway = development().await;
    let address = gateway.address;
    let polling = tokio::spawn(async move {
        Client::connect(address)
            .await
            .send(&Request::new(
                "GET",
                "/topics/T1/messages?consumer=G&numOfMessages=1&waitseconds=30",
            ))
            .await
    });
    within(gateway.backend.receive_started.notified()).await;
    let started = std::time::Instant::now();
    gateway.stop().await;
    let reply = within(polling).await.expect("joins");
    assert_error(&reply, 404, "MessageNotExist");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn connections_over_the_limit_get_503_until_one_closes() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let gateway = start(Authentication::Development, limits).await;
    let request = Request::new("GET", "/topics/T1/messages?consumer=G&numOfMessages=1");
    let mut first = Client::connect(gateway.address).await;
    assert_eq!(first.send(&request).await.status, 404);
    let refused = Client::connect(gateway.address).await.send(&request).await;
    assert_error(&refused, 503, "ServiceUnavailable");
    assert_eq!(refused.header("connection"), Some("close"));
    assert!(
        refused
            .xml("Message")
            .is_some_and(|message| message.contains("at most 1 connections at once")),
        "{}",
        refused.text()
    );
    drop(first);
    // The place is free once the first connection's task ended, which the
    // client cannot observe: a refused attempt is tried again.
    let mut attempts = 0;
    loop {
        let reply = Client::connect(gateway.address).await.send(&request).await;
        if reply.status == 404 {
            break;
        }
        assert_error(&reply, 503, "ServiceUnavailable");
        attempts += 1;
        assert!(attempts < 100, "the connection's place was never freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gateway.stop().await;
}

#[tokio::test]
async fn one_address_gets_its_share_of_connections() {
    let limits = Limits {
        max_connections: 8,
        max_connections_per_address: 1,
        ..Limits::default()
    };
    let gateway = start(Authentication::Development, limits).await;
    let request = Request::new("GET", "/topics/T1/messages?consumer=G&numOfMessages=1");
    let mut first = Client::connect(gateway.address).await;
    assert_eq!(first.send(&request).await.status, 404);
    let refused = Client::connect(gateway.address).await.send(&request).await;
    assert_error(&refused, 503, "ServiceUnavailable");
    assert!(
        refused
            .xml("Message")
            .is_some_and(|message| message.contains("from one address (127.0.0.1)")),
        "{}",
        refused.text()
    );
    gateway.stop().await;
}
