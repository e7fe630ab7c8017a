//! The official Rust client's side of the cross-language round trips that
//! the Python and Node.js client tests share: send with the Rust producer,
//! receive with the Rust consumer, and the fields both ends compare.

use crate::json::{Access as _, Value};
use crate::script;
use crate::support::{CLIENT_CALL_TIMEOUT, ack, receive, start_consumer, start_producer, within};
use anyhow::Context as _;
use meridian_tests::{TEST_TOPIC, TestCluster};
use rocketmq::model::message::{MessageBuilder, MessageView};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Display;
use std::time::Duration;
use tokio::time::Instant;

/// What a message must keep across clients and regions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    pub message_id: String,
    pub tag: Option<String>,
    pub keys: BTreeSet<String>,
    pub properties: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Fields {
    /// From a script's description of a message: `message_id`, `tag`,
    /// `keys`, `properties`, `body_hex` (and `size`, checked against it).
    pub fn from_json(value: &Value) -> anyhow::Result<Fields> {
        let body = script::decode_hex(value.field("body_hex")?.str()?)?;
        anyhow::ensure!(
            body.len() as u64 == value.field("size")?.u64()?,
            "body_hex and size disagree"
        );
        Fields::from_json_with_body(value, body)
    }

    /// From a script's description of a message, with `body` given.
    pub fn from_json_with_body(value: &Value, body: Vec<u8>) -> anyhow::Result<Fields> {
        let tag = value.field("tag")?;
        Ok(Fields {
            message_id: value.field("message_id")?.str()?.to_owned(),
            tag: if tag.is_null() {
                None
            } else {
                Some(tag.str()?.to_owned())
            },
            keys: value
                .field("keys")?
                .array()?
                .iter()
                .map(|key| key.str().map(str::to_owned))
                .collect::<anyhow::Result<_>>()?,
            properties: value
                .field("properties")?
                .object()?
                .iter()
                .map(|(key, property)| Ok((key.clone(), property.str()?.to_owned())))
                .collect::<anyhow::Result<_>>()?,
            body,
        })
    }

    fn from_view(message: &MessageView) -> Fields {
        Fields {
            message_id: message.message_id().to_owned(),
            tag: message.tag().map(str::to_owned),
            keys: message.keys().iter().cloned().collect(),
            properties: message
                .properties()
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            body: message.body().to_vec(),
        }
    }
}

/// Sends `count` binary messages tagged `tag`, with two keys and three user
/// properties (one non-ASCII), with the official Rust producer through region
/// a's router; returns them by the message id the server acknowledged.
pub async fn rust_sends(
    cluster: &TestCluster,
    tag: &str,
    count: usize,
) -> anyhow::Result<BTreeMap<String, Fields>> {
    let producer = start_producer(&cluster.router_endpoint("a")).await?;
    let mut sent = BTreeMap::new();
    for index in 0..count {
        let body = script::binary_body(index);
        let keys = vec![format!("order-{index}"), tag.to_owned()];
        let properties = BTreeMap::from([
            ("origin".to_owned(), "rust".to_owned()),
            ("index".to_owned(), index.to_string()),
            ("unicode".to_owned(), "größe ✓ 東京 😀".to_owned()),
        ]);
        let message = MessageBuilder::builder()
            .set_topic(TEST_TOPIC)
            .set_tag(tag)
            .set_keys(keys.clone())
            .set_properties(properties.clone().into_iter().collect::<HashMap<_, _>>())
            .set_body(body.clone())
            .build()
            .map_err(|error| anyhow::anyhow!("build a message: {error:?}"))?;
        let receipt = within(CLIENT_CALL_TIMEOUT, "send", producer.send(message))
            .await?
            .map_err(|error| anyhow::anyhow!("send message {index}: {error:?}"))?;
        let id = receipt.message_id().to_owned();
        anyhow::ensure!(!id.is_empty(), "the send result has an empty message id");
        let fields = Fields {
            message_id: id.clone(),
            tag: Some(tag.to_owned()),
            keys: keys.into_iter().collect(),
            properties,
            body,
        };
        anyhow::ensure!(
            sent.insert(id.clone(), fields).is_none(),
            "two sends got message id {id}"
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), producer.shutdown()).await;
    Ok(sent)
}

/// Receives with the official Rust consumer (group `group`, region b's
/// router) until every message of `sent` arrived, each once, first attempt,
/// with every field unchanged; acks each, then checks nothing more comes.
/// `producer` (the producing script's run) is shown when something is wrong.
pub async fn rust_receives_exactly(
    cluster: &TestCluster,
    group: &str,
    sent: &BTreeMap<String, Fields>,
    producer: &dyn Display,
) -> anyhow::Result<()> {
    let consumer = start_consumer(&cluster.router_endpoint("b"), group).await?;
    let mut received = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < sent.len() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "region b delivered {} of {} messages within 60 s\n{producer}",
            received.len(),
            sent.len()
        );
        for message in receive(&consumer).await? {
            let id = message.message_id().to_owned();
            anyhow::ensure!(
                message.delivery_attempt() == 1,
                "message {id} arrived with delivery_attempt {}",
                message.delivery_attempt()
            );
            let fields = Fields::from_view(&message);
            ack(&consumer, &message).await?;
            anyhow::ensure!(
                received.insert(id.clone(), fields).is_none(),
                "region b delivered message {id} twice"
            );
        }
    }
    for (id, expected) in sent {
        let got = received.get(id).with_context(|| {
            format!(
                "region b never delivered {id}; it delivered {:?}",
                received.keys()
            )
        })?;
        anyhow::ensure!(
            got == expected,
            "message {id} changed on its way to the Rust consumer:\n\
             sent {expected:#?}\nreceived {got:#?}\n{producer}"
        );
    }
    let more = receive(&consumer).await?;
    anyhow::ensure!(
        more.is_empty(),
        "after every message was acked, region b delivered {} more",
        more.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), consumer.shutdown()).await;
    Ok(())
}
