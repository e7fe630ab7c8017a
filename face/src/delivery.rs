//! Delivering a message in a shape its client can decode.
//!
//! A body may be as large as 4 MiB (`publishing.max_body_size`), but a
//! delivery carries more than the body (topic, properties, receipt handle),
//! and some official clients refuse any gRPC message over 4 MiB:
//!
//! | client (`x-mq-language`) | inbound limit | GZIP bodies |
//! |---|---|---|
//! | Python 5.1.2 (`PYTHON`) | none: `grpc.max_receive_message_length = -1` (rocketmq/v5/client/connection/rpc_channel.py) | decoded (model/message.py) |
//! | Node.js 1.0.8 (`HTTP`) | grpc-js default, 4 MiB | decoded, digest checked on the compressed bytes (message/MessageView.js) |
//! | Rust 5.0.0 (`RUST`) | tonic 0.9 default, 4 MiB | not decoded: the body is handed over as received |
//! | Java, Go, C# and others | 4 MiB (gRPC defaults) | decoded |
//!
//! So a delivery larger than 4 MiB goes as it is to a client without a
//! limit, with its body GZIP-compressed (`body_encoding = GZIP`, the digest
//! recomputed over the compressed bytes as the clients check it) to a
//! client that decodes GZIP when that makes it fit, and otherwise as it is:
//! the client then fails the receive, the message comes back after its
//! invisible time and, after the group's max attempts, moves to the
//! dead-letter topic. A request without `x-mq-language` (a router relaying
//! a client's receive) gets every delivery as it is: the face that answers
//! the client shapes it.

use md5::{Digest as _, Md5};
use meridian_proto::rocketmq::v2::{Digest, DigestType, Encoding, Message};
use std::io::Write as _;

/// The largest gRPC message the 4 MiB-limited clients accept, in bytes.
pub const CLIENT_INBOUND_FRAME_MAX: usize = 4 * 1024 * 1024;

/// What a client can take, by its `x-mq-language` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inbound {
    /// Any size.
    Unlimited,
    /// At most [`CLIENT_INBOUND_FRAME_MAX`]; `gzip`: decodes GZIP bodies.
    Limited { gzip: bool },
}

fn inbound(language: &str) -> Inbound {
    match language {
        // No header: not an official client (a router relaying a receive).
        "" | "PYTHON" => Inbound::Unlimited,
        "RUST" => Inbound::Limited { gzip: false },
        _ => Inbound::Limited { gzip: true },
    }
}

/// How a delivery was shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shaped {
    /// Sent as stored.
    AsIs,
    /// Body GZIP-compressed to fit.
    Compressed,
    /// Larger than the client accepts, and no shape fits: sent as stored.
    TooLarge { frame_bytes: usize },
}

/// The size of `message` as a ReceiveMessageResponse frame, in bytes.
fn frame_len(message: &Message) -> usize {
    // `content.message` is field 2 of ReceiveMessageResponse.
    prost::encoding::message::encoded_len(2, message)
}

/// Shapes `message` for a client whose `x-mq-language` is `language`.
pub fn shape(message: &mut Message, language: &str) -> Shaped {
    let frame_bytes = frame_len(message);
    let gzip = match inbound(language) {
        _ if frame_bytes <= CLIENT_INBOUND_FRAME_MAX => return Shaped::AsIs,
        Inbound::Unlimited => return Shaped::AsIs,
        Inbound::Limited { gzip } => gzip,
    };
    let identity = message
        .system_properties
        .as_ref()
        .is_some_and(|properties| properties.body_encoding == Encoding::Identity as i32);
    if !gzip || !identity {
        return Shaped::TooLarge { frame_bytes };
    }
    let Some(compressed) = gzip_bytes(&message.body) else {
        return Shaped::TooLarge { frame_bytes };
    };
    let saved = message.body.len().saturating_sub(compressed.len());
    if frame_bytes.saturating_sub(saved) > CLIENT_INBOUND_FRAME_MAX {
        return Shaped::TooLarge { frame_bytes };
    }
    if let Some(properties) = message.system_properties.as_mut() {
        properties.body_encoding = Encoding::Gzip as i32;
        properties.body_digest = Some(Digest {
            r#type: DigestType::Md5 as i32,
            checksum: hex::encode_upper(Md5::digest(&compressed)),
        });
    }
    message.body = compressed;
    Shaped::Compressed
}

fn gzip_bytes(body: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 2),
        flate2::Compression::fast(),
    );
    encoder.write_all(body).ok()?;
    encoder.finish().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::rocketmq::v2::SystemProperties;
    use std::io::Read as _;

    fn message(body: Vec<u8>) -> Message {
        Message {
            body,
            system_properties: Some(SystemProperties {
                message_id: "01".to_owned(),
                receipt_handle: Some("v1.a.0.0.1.0".to_owned()),
                body_encoding: Encoding::Identity as i32,
                ..SystemProperties::default()
            }),
            ..Message::default()
        }
    }

    /// Four MiB of text that compresses well.
    fn text_body() -> Vec<u8> {
        b"meridian ".repeat(CLIENT_INBOUND_FRAME_MAX / 9 + 1)[..CLIENT_INBOUND_FRAME_MAX].to_vec()
    }

    /// Four MiB that does not compress (xorshift bytes).
    fn noise_body() -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        (0..CLIENT_INBOUND_FRAME_MAX)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn small_deliveries_and_unlimited_clients_get_the_body_as_stored() {
        let mut small = message(b"hello".to_vec());
        assert_eq!(shape(&mut small, "HTTP"), Shaped::AsIs);
        let mut large = message(text_body());
        assert_eq!(shape(&mut large, "PYTHON"), Shaped::AsIs);
        assert_eq!(shape(&mut large, ""), Shaped::AsIs);
        assert_eq!(large.body.len(), CLIENT_INBOUND_FRAME_MAX);
    }

    #[test]
    fn a_four_mib_text_body_is_compressed_for_clients_that_decode_gzip() {
        let body = text_body();
        let mut delivered = message(body.clone());
        assert_eq!(shape(&mut delivered, "HTTP"), Shaped::Compressed);
        assert!(frame_len(&delivered) <= CLIENT_INBOUND_FRAME_MAX);
        let properties = delivered.system_properties.as_ref().expect("properties");
        assert_eq!(properties.body_encoding, Encoding::Gzip as i32);
        let digest = properties.body_digest.as_ref().expect("a digest");
        assert_eq!(
            digest.checksum,
            hex::encode_upper(Md5::digest(&delivered.body))
        );
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(delivered.body.as_slice())
            .read_to_end(&mut decoded)
            .expect("gzip");
        assert_eq!(decoded, body);
    }

    #[test]
    fn what_cannot_fit_goes_as_stored() {
        let mut rust = message(text_body());
        assert!(matches!(shape(&mut rust, "RUST"), Shaped::TooLarge { .. }));
        let mut noise = message(noise_body());
        let before = noise.body.clone();
        assert!(matches!(shape(&mut noise, "HTTP"), Shaped::TooLarge { .. }));
        assert_eq!(noise.body, before);
        let properties = noise.system_properties.as_ref().expect("properties");
        assert_eq!(properties.body_encoding, Encoding::Identity as i32);
    }
}
