//! Records for unit tests: a message of topic `orders` that originated in
//! region `here`, with fresh dedup and client ids; tests adjust the fields
//! they care about.

use meridian_proto::meridian::v1::{Message, Record, RecordKind};

pub fn message_record(queue_id: i32, body: &[u8]) -> Record {
    Record {
        kind: RecordKind::Message as i32,
        dedup_id: uuid::Uuid::now_v7().as_bytes().to_vec(),
        origin_region: "here".into(),
        message: Some(Message {
            client_message_id: uuid::Uuid::now_v7().to_string(),
            topic: "orders".into(),
            queue_id,
            body: body.to_vec(),
            ..Message::default()
        }),
        ..Record::default()
    }
}
