//! The Aliyun MQ HTTP API over a loopback connection and the fake backend.

use crate::support::{
    ACCESS_KEY, Client, Request, assert_error, development, elements, keys, message_xml, start,
    within,
};
use meridian_http::Limits;
use meridian_proto::rocketmq::v2::{
    FilterType, MessageType, TransactionResolution, TransactionSource,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits")
}

#[tokio::test]
async fn publish_consume_and_ack_as_the_python_sdk_does() {
    let gateway = development().await;
    let published = gateway
        .publish(
            "/topics/T1/messages",
            &message_xml("hello", Some("TagA"), Some("KEYS:k1|a:1|")),
        )
        .await;
    assert_eq!(published.status, 201, "{}", published.text());
    assert_eq!(
        published.header("content-type"),
        Some("text/xml;charset=utf-8")
    );
    assert_eq!(published.header("x-mq-version"), Some("2015-06-06"));
    assert!(published.header("x-mq-request-id").is_some());
    assert!(published.header("date").is_some());
    assert!(
        published
            .text()
            .contains(r#"xmlns="http://mq.aliyuncs.com/doc/v1/""#)
    );
    let message_id = published.xml("MessageId").expect("a MessageId");
    assert_eq!(message_id.len(), 32);
    assert_eq!(
        published.xml("MessageBodyMD5").as_deref(),
        Some("5D41402ABC4B2A76B9719D911017C592")
    );
    assert!(published.xml("ReceiptHandle").is_none());

    let sent = gateway.backend.sent();
    let system = sent[0]
        .system_properties
        .clone()
        .expect("system properties");
    assert_eq!(
        sent[0].topic.as_ref().map(|topic| topic.name.as_str()),
        Some("T1")
    );
    assert_eq!(sent[0].body, b"hello");
    assert_eq!(system.message_id, message_id);
    assert_eq!(system.message_type(), MessageType::Normal);
    assert_eq!(system.tag.as_deref(), Some("TagA"));
    assert_eq!(system.keys, ["k1"]);
    assert!((0..4).contains(&system.queue_id));
    assert!(system.born_host.starts_with("127.0.0.1:"));
    assert!(system.born_timestamp.is_some());
    assert_eq!(
        sent[0].user_properties.get("a").map(String::as_str),
        Some("1")
    );
    assert!(
        gateway
            .backend
            .callers()
            .iter()
            .all(|caller| caller == "http/anonymous@127.0.0.1")
    );

    let before = now_ms();
    let consumed = gateway
        .consume(
            "/topics/T1/messages?consumer=GID_1&numOfMessages=3&waitseconds=1&tag=TagA%7C%7CTagB",
        )
        .await;
    assert_eq!(consumed.status, 200, "{}", consumed.text());
    assert_eq!(
        consumed.header("content-type"),
        Some("text/xml;charset=utf-8")
    );
    assert!(!consumed.text().contains("CDATA"));
    assert_eq!(consumed.xml("MessageId"), Some(message_id.clone()));
    assert_eq!(consumed.xml("MessageBody").as_deref(), Some("hello"));
    assert_eq!(consumed.xml("MessageTag").as_deref(), Some("TagA"));
    assert_eq!(consumed.xml("Properties").as_deref(), Some("KEYS:k1|a:1|"));
    assert_eq!(consumed.xml("ConsumedTimes").as_deref(), Some("1"));
    let next: i64 = consumed
        .xml("NextConsumeTime")
        .expect("set")
        .parse()
        .expect("a number");
    assert!(next >= before + 300_000 && next <= now_ms() + 300_000);
    let first: i64 = consumed
        .xml("FirstConsumeTime")
        .expect("set")
        .parse()
        .expect("a number");
    assert!(first >= before);
    let published_at: i64 = consumed
        .xml("PublishTime")
        .expect("set")
        .parse()
        .expect("a number");
    assert!(published_at <= first);
    let (request, options) = gateway.backend.receives()[0].clone();
    assert!(!options.ordered);
    assert_eq!(
        request.group.map(|group| group.name).as_deref(),
        Some("GID_1")
    );
    assert_eq!(request.batch_size, 3);
    let filter = request.filter_expression.expect("a filter");
    assert_eq!(filter.r#type(), FilterType::Tag);
    assert_eq!(filter.expression, "TagA||TagB");
    assert_eq!(
        request.invisible_duration.map(|duration| duration.seconds),
        Some(300)
    );

    let handle = consumed.xml("ReceiptHandle").expect("a handle");
    let acked = gateway
        .delete("/topics/T1/messages?consumer=GID_1", &[&handle])
        .await;
    assert_eq!(acked.status, 204, "{}", acked.text());
    assert!(acked.body.is_empty());
    assert!(acked.header("x-mq-request-id").is_some());

    let again = gateway
        .delete("/topics/T1/messages?consumer=GID_1", &[&handle, "bogus"])
        .await;
    assert_eq!(again.status, 404);
    assert_eq!(again.header("content-type"), Some("text/xml;charset=utf-8"));
    let text = again.text();
    assert!(
        text.contains(r#"<Errors xmlns="http://mq.aliyuncs.com/doc/v1/">"#),
        "{text}"
    );
    let errors = elements(text, "Error");
    assert_eq!(errors.len(), 2);
    for error in &errors {
        let children: Vec<&str> = error
            .split('<')
            .filter(|part| !part.starts_with('/') && !part.is_empty())
            .map(|part| part.split('>').next().unwrap_or_default())
            .collect();
        assert_eq!(
            children,
            ["ErrorCode", "ErrorMessage", "ReceiptHandle"],
            "{error}"
        );
    }
    assert_eq!(
        elements(text, "ErrorCode"),
        ["ReceiptHandleError", "ReceiptHandleError"]
    );
    assert_eq!(elements(text, "ReceiptHandle"), [handle.as_str(), "bogus"]);
    gateway.stop().await;
}

#[tokio::test]
async fn nothing_to_consume_is_404_message_not_exist_after_the_wait() {
    let gateway = development().await;
    let started = std::time::Instant::now();
    let empty = gateway
        .consume("/topics/T1/messages?consumer=G&numOfMessages=1&waitseconds=1")
        .await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_error(&empty, 404, "MessageNotExist");
    assert_eq!(empty.xml("Message").as_deref(), Some("Message not exist."));
    assert!(
        empty
            .xml("HostId")
            .is_some_and(|host| host.starts_with("http://"))
    );
    let short = gateway
        .consume("/topics/T1/messages?consumer=G&numOfMessages=1")
        .await;
    assert_error(&short, 404, "MessageNotExist");
    let receives = gateway.backend.receives();
    let last = receives.last().expect("a receive");
    assert_eq!(
        last.0.long_polling_timeout.map(|duration| duration.seconds),
        Some(0),
        "a short poll asks the backend not to wait"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_long_poll_answers_when_a_message_arrives() {
    let gateway = development().await;
    let address = gateway.address;
    let polling = tokio::spawn(async move {
        Client::connect(address)
            .await
            .send(&Request::new(
                "GET",
                "/topics/T1/messages?consumer=G&numOfMessages=16&waitseconds=30",
            ))
            .await
    });
    within(gateway.backend.receive_started.notified()).await;
    let published = gateway
        .publish("/topics/T1/messages", &message_xml("late", None, None))
        .await;
    assert_eq!(published.status, 201);
    let consumed = within(polling).await.expect("joins");
    assert_eq!(consumed.status, 200, "{}", consumed.text());
    assert_eq!(consumed.xml("MessageBody").as_deref(), Some("late"));
    assert!(
        consumed.xml("MessageTag").is_none(),
        "an empty tag is left out"
    );
    assert!(
        consumed.xml("Properties").is_none(),
        "empty properties are left out"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn namespaces_prefix_topics_and_groups() {
    let gateway = development().await;
    let published = gateway
        .publish(
            "/topics/T1/messages?ns=MQ_INST_1",
            &message_xml("x", None, None),
        )
        .await;
    assert_eq!(published.status, 201, "{}", published.text());
    assert_eq!(
        gateway.backend.sent()[0]
            .topic
            .as_ref()
            .map(|topic| topic.name.as_str()),
        Some("MQ_INST_1%T1")
    );
    let consumed = gateway
        .consume("/topics/T1/messages?numOfMessages=1&ns=MQ_INST_1&consumer=GID_1")
        .await;
    assert_eq!(consumed.status, 200, "{}", consumed.text());
    let request = gateway.backend.receives()[0].0.clone();
    assert_eq!(
        request.group.map(|group| group.name).as_deref(),
        Some("MQ_INST_1%GID_1")
    );
    gateway.stop().await;
}

#[tokio::test]
async fn reserved_properties_make_message_types() {
    let gateway = development().await;
    let later = now_ms() + 60_000;
    let timed = gateway
        .publish(
            "/topics/demo/messages",
            &message_xml("t", None, Some(&format!("__STARTDELIVERTIME:{later}|"))),
        )
        .await;
    assert_eq!(timed.status, 201, "{}", timed.text());
    let ordered = gateway
        .publish(
            "/topics/demo/messages",
            &message_xml(
                "o",
                None,
                Some("__SHARDINGKEY:shard1|__STARTDELIVERTIME:1700000000000|"),
            ),
        )
        .await;
    assert_eq!(ordered.status, 201, "{}", ordered.text());
    let transactional = gateway
        .publish(
            "/topics/demo/messages",
            &message_xml("x", None, Some("__TransCheckT:10|")),
        )
        .await;
    assert_eq!(transactional.status, 201, "{}", transactional.text());
    assert_eq!(
        transactional.xml("ReceiptHandle").as_deref(),
        Some("t1.test.1")
    );
    let ordered_and_timed = gateway
        .publish(
            "/topics/demo/messages",
            &message_xml(
                "o",
                None,
                Some(&format!("__SHARDINGKEY:s|__STARTDELIVERTIME:{later}|")),
            ),
        )
        .await;
    assert_error(&ordered_and_timed, 400, "InvalidArgument");

    let sent = gateway.backend.sent();
    let system = |index: usize| sent[index].system_properties.clone().expect("system");
    assert_eq!(system(0).message_type(), MessageType::Delay);
    assert_eq!(
        system(0)
            .delivery_timestamp
            .map(|at| at.seconds * 1000 + i64::from(at.nanos / 1_000_000)),
        Some(later)
    );
    assert_eq!(system(1).message_type(), MessageType::Fifo);
    assert_eq!(system(1).message_group.as_deref(), Some("shard1"));
    assert_eq!(system(1).delivery_timestamp, None);
    assert_eq!(system(2).message_type(), MessageType::Transaction);
    assert_eq!(
        sent[2]
            .user_properties
            .get("__TransCheckT")
            .map(String::as_str),
        Some("10")
    );
    gateway.stop().await;
}

#[tokio::test]
async fn ordered_consume_asks_for_order_and_a_minute_of_invisibility() {
    let gateway = development().await;
    gateway
        .publish(
            "/topics/T1/messages",
            &message_xml("1", None, Some("__SHARDINGKEY:s|")),
        )
        .await;
    let consumed = gateway
        .consume("/topics/T1/messages?consumer=G&numOfMessages=2&trans=order")
        .await;
    assert_eq!(consumed.status, 200, "{}", consumed.text());
    assert_eq!(
        consumed.xml("Properties").as_deref(),
        Some("__SHARDINGKEY:s|")
    );
    let (request, options) = gateway.backend.receives()[0].clone();
    assert!(options.ordered);
    assert_eq!(
        request.invisible_duration.map(|duration| duration.seconds),
        Some(60)
    );
    gateway.stop().await;
}

#[tokio::test]
async fn transactions_commit_roll_back_and_check_back() {
    let gateway = development().await;
    let body = |text: &str| message_xml(text, Some("X"), Some("__TransCheckT:10|"));
    let commit = gateway
        .publish("/topics/T1/messages", &body("commit"))
        .await;
    let rollback = gateway
        .publish("/topics/T1/messages", &body("rollback"))
        .await;
    let orphan = gateway
        .publish("/topics/T1/messages", &body("orphan"))
        .await;
    let handle = |reply: &crate::support::Reply| reply.xml("ReceiptHandle").expect("a handle");
    // The Go SDK sends `consumer=` empty for commit and rollback.
    let committed = gateway
        .delete(
            "/topics/T1/messages?consumer=&trans=commit",
            &[&handle(&commit)],
        )
        .await;
    assert_eq!(committed.status, 204, "{}", committed.text());
    let rolled_back = gateway
        .delete(
            "/topics/T1/messages?consumer=P&trans=rollback",
            &[&handle(&rollback)],
        )
        .await;
    assert_eq!(rolled_back.status, 204, "{}", rolled_back.text());
    let ends = gateway.backend.ends();
    assert_eq!(ends[0].resolution(), TransactionResolution::Commit);
    assert_eq!(ends[0].source(), TransactionSource::SourceClient);
    assert_eq!(ends[0].transaction_id, handle(&commit));
    assert_eq!(ends[1].resolution(), TransactionResolution::Rollback);

    let checked = gateway
        .consume("/topics/T1/messages?consumer=P&numOfMessages=16&trans=pop")
        .await;
    assert_eq!(checked.status, 200, "{}", checked.text());
    assert_eq!(elements(checked.text(), "MessageBody"), ["orphan"]);
    assert_eq!(checked.xml("ReceiptHandle"), Some(handle(&orphan)));
    assert_eq!(
        checked.xml("Properties").as_deref(),
        Some("__TransCheckT:10|")
    );
    let committed = gateway
        .delete(
            "/topics/T1/messages?consumer=P&trans=commit",
            &[&handle(&orphan)],
        )
        .await;
    assert_eq!(committed.status, 204);

    let consumed = gateway
        .consume("/topics/T1/messages?consumer=G&numOfMessages=16&tag=X")
        .await;
    assert_eq!(
        elements(consumed.text(), "MessageBody"),
        ["commit", "orphan"]
    );
    let twice = gateway
        .delete("/topics/T1/messages?trans=commit", &[&handle(&commit)])
        .await;
    assert_eq!(twice.status, 404);
    assert_eq!(elements(twice.text(), "ErrorCode"), ["ReceiptHandleError"]);
    let none_left = gateway
        .consume("/topics/T1/messages?consumer=P&numOfMessages=16&trans=pop")
        .await;
    assert_error(&none_left, 404, "MessageNotExist");
    gateway.stop().await;
}

#[tokio::test]
async fn bad_requests_get_400_with_the_listed_codes() {
    let gateway = development().await;
    for target in [
        "/topics/T1/messages?consumer=G&numOfMessages=0",
        "/topics/T1/messages?consumer=G&numOfMessages=17",
        "/topics/T1/messages?consumer=G",
        "/topics/T1/messages?consumer=G&numOfMessages=1&waitseconds=31",
        "/topics/T1/messages?consumer=G&numOfMessages=1&waitseconds=soon",
        "/topics/T1/messages?consumer=G&numOfMessages=1&trans=commit",
        "/topics/T1/messages?numOfMessages=1",
    ] {
        assert_error(&gateway.consume(target).await, 400, "InvalidArgument");
    }
    assert_error(
        &gateway
            .consume("/topics/T1/messages?consumer=G&consumer=H&numOfMessages=1")
            .await,
        400,
        "InvalidQueryString",
    );
    let malformed = gateway
        .publish("/topics/T1/messages", "<Message><MessageBody>x</Message>")
        .await;
    assert_error(&malformed, 400, "MalformedXML");
    assert!(
        malformed
            .xml("Message")
            .is_some_and(|text| text.contains("well-formed"))
    );
    let no_body = gateway
        .publish(
            "/topics/T1/messages",
            "<Message><MessageTag>a</MessageTag></Message>",
        )
        .await;
    assert_error(&no_body, 400, "MalformedXML");
    assert!(
        no_body
            .xml("Message")
            .is_some_and(|text| text.contains("MessageBody"))
    );
    assert_error(
        &gateway
            .publish("/topics/T1/messages", &message_xml("", None, None))
            .await,
        400,
        "InvalidArgument",
    );
    assert_error(
        &gateway
            .publish(
                "/topics/T1/messages",
                &message_xml("x", Some(&"t".repeat(65)), None),
            )
            .await,
        400,
        "InvalidArgument",
    );
    assert_error(
        &gateway
            .publish(
                "/topics/T1/messages",
                &message_xml("x", None, Some("__STARTDELIVERTIME:soon|")),
            )
            .await,
        400,
        "InvalidArgument",
    );
    assert_error(
        &gateway
            .publish("/topics/nope/messages", &message_xml("x", None, None))
            .await,
        404,
        "TopicNotExist",
    );
    assert_error(
        &gateway.delete("/topics/T1/messages?consumer=G", &[]).await,
        400,
        "MissingReceiptHandle",
    );
    let seventeen: Vec<String> = (0..17).map(|index| format!("h{index}")).collect();
    let seventeen: Vec<&str> = seventeen.iter().map(String::as_str).collect();
    assert_error(
        &gateway
            .delete("/topics/T1/messages?consumer=G", &seventeen)
            .await,
        400,
        "InvalidArgument",
    );
    assert_error(
        &gateway.delete("/topics/T1/messages", &["h"]).await,
        400,
        "InvalidArgument",
    );
    assert_error(
        &gateway
            .delete("/topics/T1/messages?consumer=missing", &["h"])
            .await,
        404,
        "SubscriptionNotExist",
    );
    assert_error(
        &gateway
            .consume("/topics/T1/messages?consumer=missing&numOfMessages=1")
            .await,
        404,
        "SubscriptionNotExist",
    );
    assert_error(
        &gateway.consume("/topics/T1").await,
        400,
        "InvalidRequestURL",
    );
    assert_error(&gateway.consume("/").await, 400, "InvalidRequestURL");
    let put = gateway
        .send(Request::new("PUT", "/topics/T1/messages"))
        .await;
    assert_error(&put, 405, "MethodNotAllowed");
    let long = format!(
        "/topics/T1/messages?consumer={}&numOfMessages=1",
        "g".repeat(1000)
    );
    assert_error(&gateway.consume(&long).await, 400, "InvalidRequestURL");
    gateway.stop().await;
}

#[tokio::test]
async fn bodies_that_are_not_utf8_text_or_xml_safe_arrive_lossily() {
    let gateway = development().await;
    let published = gateway
        .publish(
            "/topics/T1/messages",
            &message_xml("a &amp; &lt;b&gt; &#13;\u{263a}", None, None),
        )
        .await;
    assert_eq!(published.status, 201);
    assert_eq!(
        gateway.backend.sent()[0].body,
        "a & <b> \r\u{263a}".as_bytes()
    );
    let consumed = gateway
        .consume("/topics/T1/messages?consumer=G&numOfMessages=1")
        .await;
    assert!(
        consumed
            .text()
            .contains("<MessageBody>a &amp; &lt;b&gt; &#13;\u{263a}</MessageBody>")
    );
    gateway.stop().await;
}

#[tokio::test]
async fn signatures_are_checked_with_access_keys() {
    let gateway = start(keys(), Limits::default()).await;
    let target = "/topics/T1/messages?consumer=GID_1&numOfMessages=1&tag=TagA%7C%7CTagB";
    // Signed over the raw target: gets past authentication.
    let signed = gateway.consume(target).await;
    assert_error(&signed, 404, "MessageNotExist");
    let published = gateway
        .publish("/topics/T1/messages", &message_xml("x", None, None))
        .await;
    assert_eq!(published.status, 201, "{}", published.text());
    assert!(
        gateway
            .backend
            .callers()
            .iter()
            .all(|caller| caller == &format!("http/{ACCESS_KEY}@127.0.0.1"))
    );

    let mut client = Client::connect(gateway.address).await;
    let wrong_secret = Request::new("GET", target).signed(ACCESS_KEY, "wrong");
    let reply = client.send(&wrong_secret).await;
    assert_error(&reply, 403, "SignatureDoesNotMatch");
    assert!(
        reply
            .xml("Message")
            .is_some_and(|text| text.contains("x-mq-version:2015-06-06"))
    );
    let unknown = Request::new("GET", target).signed("other", "testSecret");
    assert_error(&client.send(&unknown).await, 403, "InvalidAccessKeyId");
    let mut reordered = Request::new("GET", target).signed(ACCESS_KEY, "testSecret");
    reordered.target =
        "/topics/T1/messages?numOfMessages=1&consumer=GID_1&tag=TagA%7C%7CTagB".to_owned();
    assert_error(&client.send(&reordered).await, 403, "SignatureDoesNotMatch");
    assert_error(
        &client.send(&Request::new("GET", target)).await,
        400,
        "MissingAuthorizationHeader",
    );
    assert_error(
        &client
            .send(&Request::new("GET", target).header("Authorization", "Basic eA=="))
            .await,
        400,
        "InvalidAuthorizationHeader",
    );
    assert_error(
        &client
            .send(
                &Request::new("GET", target)
                    .without("Date")
                    .signed(ACCESS_KEY, "testSecret"),
            )
            .await,
        400,
        "MissingDateHeader",
    );
    let old = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(16 * 60));
    assert_error(
        &client
            .send(
                &Request::new("GET", target)
                    .header("Date", &old)
                    .signed(ACCESS_KEY, "testSecret"),
            )
            .await,
        408,
        "TimeExpired",
    );
    // Go: Content-MD5 (base64 of the hex digest) on a GET, signed, not checked.
    let go = Request::new("GET", target)
        .header(
            "Content-MD5",
            "ZDQxZDhjZDk4ZjAwYjIwNGU5ODAwOTk4ZWNmODQyN2U=",
        )
        .header("Content-Type", "text/xml;charset=utf-8")
        .signed(ACCESS_KEY, "testSecret");
    assert_error(&client.send(&go).await, 404, "MessageNotExist");
    gateway.stop().await;
}

#[tokio::test]
async fn development_mode_accepts_any_authorization() {
    let gateway = development().await;
    let reply = gateway
        .send(
            Request::new("POST", "/topics/T1/messages")
                .body(message_xml("x", None, None).as_bytes())
                .header("Authorization", "MQ dummy:not-a-signature")
                .without("Date"),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    gateway.stop().await;
}

#[tokio::test]
async fn queues_are_picked_round_robin_from_a_cached_route() {
    let gateway = development().await;
    for index in 0..8 {
        let reply = gateway
            .publish(
                "/topics/T1/messages",
                &message_xml(&index.to_string(), None, None),
            )
            .await;
        assert_eq!(reply.status, 201);
    }
    assert_eq!(gateway.backend.route_calls(), 1);
    let queues: Vec<i32> = gateway
        .backend
        .sent()
        .iter()
        .map(|message| {
            message
                .system_properties
                .as_ref()
                .map_or(-1, |system| system.queue_id)
        })
        .collect();
    assert_eq!(queues, [0, 1, 2, 3, 0, 1, 2, 3]);
    gateway.stop().await;
}
