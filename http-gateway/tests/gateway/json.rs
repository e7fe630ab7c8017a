//! The JSON API under `/v1/` over a loopback connection and the fake backend.

use crate::support::{Client, Reply, Request, development, keys, start};
use base64::Engine as _;
use meridian_http::Limits;
use meridian_proto::rocketmq::v2::MessageType;
use serde_json::{Value, json};

fn post(target: &str, body: &Value) -> Request {
    let mut request = Request::new("POST", target).header("Content-Type", "application/json");
    request.body = body.to_string().into_bytes();
    request
}

fn assert_json_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| !error.is_empty()),
        "{body}"
    );
    assert!(reply.header("x-mq-request-id").is_some());
}

#[tokio::test]
async fn publish_receive_and_acknowledge() {
    let gateway = development().await;
    let published = gateway
        .send(post(
            "/v1/topics/T1/messages",
            &json!({"body": "hi", "tag": "A", "keys": ["k1", "k2"], "properties": {"p": "1"}}),
        ))
        .await;
    assert_eq!(published.status, 201, "{}", published.text());
    let message_id = published.json()["message_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    assert!(published.json().get("transaction_id").is_none());
    let binary = gateway
        .send(post(
            "/v1/topics/T1/messages",
            &json!({"body_base64": base64::engine::general_purpose::STANDARD.encode([0xff, 0, 1])}),
        ))
        .await;
    assert_eq!(binary.status, 201, "{}", binary.text());

    let received = gateway
        .send(Request::new(
            "GET",
            "/v1/topics/T1/messages?group=g&max=5&wait_ms=100",
        ))
        .await;
    assert_eq!(received.status, 200, "{}", received.text());
    assert!(
        received
            .header("content-type")
            .is_some_and(|kind| kind.starts_with("application/json"))
    );
    let messages = received.json()["messages"]
        .as_array()
        .expect("a list")
        .clone();
    assert_eq!(messages.len(), 2);
    let text = &messages[0];
    assert_eq!(text["message_id"], message_id.as_str());
    assert_eq!(text["body"], "hi");
    assert_eq!(text["body_base64"], "aGk=");
    assert_eq!(text["tag"], "A");
    assert_eq!(text["keys"], json!(["k1", "k2"]));
    assert_eq!(text["properties"], json!({"p": "1"}));
    assert_eq!(text["delivery_attempt"], 1);
    assert!(text["born_at_ms"].as_i64().is_some_and(|at| at > 0));
    assert!(text["invisible_until_ms"].as_i64() > text["born_at_ms"].as_i64());
    assert!(messages[1].get("body").is_none(), "not UTF-8: base64 only");
    assert_eq!(messages[1]["body_base64"], "/wAB");

    let handle = text["receipt_handle"].as_str().expect("a handle");
    let acked = gateway
        .send(post(
            "/v1/topics/T1/acks",
            &json!({"group": "g", "receipt_handles": [handle, "bogus"]}),
        ))
        .await;
    assert_eq!(acked.status, 200, "{}", acked.text());
    let results = acked.json()["results"].clone();
    assert_eq!(results[0], json!({"receipt_handle": handle, "ok": true}));
    assert_eq!(results[1]["ok"], false);
    assert!(
        results[1]["error"]
            .as_str()
            .is_some_and(|error| error.contains("bogus"))
    );

    let empty = gateway
        .send(Request::new(
            "GET",
            "/v1/topics/T1/messages?group=other&tag=none",
        ))
        .await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json(), json!({"messages": []}));
    gateway.stop().await;
}

#[tokio::test]
async fn ordered_and_timed_messages() {
    let gateway = development().await;
    let ordered = gateway
        .send(post(
            "/v1/topics/demo/messages",
            &json!({"body": "o", "message_group": "g1"}),
        ))
        .await;
    assert_eq!(ordered.status, 201, "{}", ordered.text());
    let timed = gateway
        .send(post(
            "/v1/topics/demo/messages",
            &json!({"body": "t", "deliver_at_ms": 4_000_000_000_000_i64}),
        ))
        .await;
    assert_eq!(timed.status, 201, "{}", timed.text());
    let sent = gateway.backend.sent();
    let kind = |index: usize| {
        sent[index]
            .system_properties
            .as_ref()
            .map(|system| system.message_type())
    };
    assert_eq!(kind(0), Some(MessageType::Fifo));
    assert_eq!(kind(1), Some(MessageType::Delay));
    gateway.stop().await;
}

#[tokio::test]
async fn bad_requests_are_json_errors() {
    let gateway = development().await;
    assert_json_error(
        &gateway
            .send(post(
                "/v1/topics/T1/messages",
                &json!({"body": "x", "colour": "red"}),
            ))
            .await,
        400,
        "BAD_REQUEST",
    );
    assert_json_error(
        &gateway
            .send(post(
                "/v1/topics/T1/messages",
                &json!({"body": "x", "body_base64": "eA=="}),
            ))
            .await,
        400,
        "BAD_REQUEST",
    );
    assert_json_error(
        &gateway
            .send(post("/v1/topics/T1/messages", &json!({})))
            .await,
        400,
        "BAD_REQUEST",
    );
    let mut not_json = Request::new("POST", "/v1/topics/T1/messages");
    not_json.body = b"{".to_vec();
    assert_json_error(&gateway.send(not_json).await, 400, "BAD_REQUEST");
    assert_json_error(
        &gateway
            .send(post("/v1/topics/nope/messages", &json!({"body": "x"})))
            .await,
        404,
        "TOPIC_NOT_FOUND",
    );
    for target in [
        "/v1/topics/T1/messages",
        "/v1/topics/T1/messages?group=g&max=0",
        "/v1/topics/T1/messages?group=g&max=33",
        "/v1/topics/T1/messages?group=g&wait_ms=30001",
        "/v1/topics/T1/messages?group=g&colour=red",
    ] {
        assert_json_error(
            &gateway.send(Request::new("GET", target)).await,
            400,
            "BAD_REQUEST",
        );
    }
    assert_json_error(
        &gateway
            .send(post(
                "/v1/topics/T1/acks",
                &json!({"group": "g", "receipt_handles": []}),
            ))
            .await,
        400,
        "BAD_REQUEST",
    );
    assert_json_error(
        &gateway
            .send(post(
                "/v1/topics/T1/acks",
                &json!({"group": "missing", "receipt_handles": ["h"]}),
            ))
            .await,
        404,
        "CONSUMER_GROUP_NOT_FOUND",
    );
    assert_json_error(
        &gateway.send(Request::new("GET", "/v1/nothing")).await,
        404,
        "NOT_FOUND",
    );
    let delete = gateway
        .send(Request::new("DELETE", "/v1/topics/T1/messages"))
        .await;
    assert_json_error(&delete, 405, "METHOD_NOT_ALLOWED");
    assert_eq!(delete.header("allow"), Some("GET, POST"));
    gateway.stop().await;
}

#[tokio::test]
async fn the_openapi_document_is_served() {
    let gateway = start(keys(), Limits::default()).await;
    // Without credentials, even with access keys.
    let mut client = Client::connect(gateway.address).await;
    let document = client.send(&Request::new("GET", "/v1/openapi.json")).await;
    assert_eq!(document.status, 200);
    let document = document.json();
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["paths"]["/v1/topics/{topic}/acks"]["post"].is_object());
    gateway.stop().await;
}

#[tokio::test]
async fn access_keys_require_basic_credentials() {
    let gateway = start(keys(), Limits::default()).await;
    let mut client = Client::connect(gateway.address).await;
    let publish = post("/v1/topics/T1/messages", &json!({"body": "x"}));
    let missing = client.send(&publish).await;
    assert_json_error(&missing, 401, "UNAUTHORIZED");
    assert!(
        missing
            .header("www-authenticate")
            .is_some_and(|value| value.starts_with("Basic"))
    );
    let wrong = publish.clone().header(
        "Authorization",
        &format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("ak:wrong")
        ),
    );
    // A wrong secret proves no key either: 401, as the admin API answers.
    let refused = client.send(&wrong).await;
    assert_json_error(&refused, 401, "UNAUTHORIZED");
    assert!(refused.text().contains("wrong secret for access key `ak`"));
    let good = publish.header(
        "Authorization",
        &format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("ak:testSecret")
        ),
    );
    let published = client.send(&good).await;
    assert_eq!(published.status, 201, "{}", published.text());
    gateway.stop().await;
}
