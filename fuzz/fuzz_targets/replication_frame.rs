//! The replication stream's frame decoder (`meridian_replicator::frame`) on
//! arbitrary bytes, as a peer's QUIC stream delivers them: length-prefixed
//! `ReplicationFrame`s. Fed whole and in two pieces through the codec: it
//! must never panic, both ways must give the same frames and the same error,
//! a stream ending inside a frame is `Truncated`, and every decoded frame
//! must encode to bytes that decode to the same frame. The frames then go
//! through what the receiver and the sender do with them (`expect_hello`,
//! `ReceiverCore::on_hello` / `on_batch`, `expect_sender_inbound`).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meridian_replicator::frame::{
    self, FrameCodec, FrameError, ReceiverInbound, decode, encode, encoded_len,
};
use meridian_replicator::receiver_core::ReceiverCore;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_util::codec::Decoder as _;

/// Every frame `decode` takes from the front of `buffer`, and the error
/// that stopped it (as text: `FrameError` is not `PartialEq`).
fn decode_all(
    codec: &mut FrameCodec,
    buffer: &mut BytesMut,
    frames: &mut Vec<meridian_proto::meridian::v1::ReplicationFrame>,
) -> Option<String> {
    loop {
        match codec.decode(buffer) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => return None,
            Err(error) => {
                assert!(
                    error.is_malformed(),
                    "bytes alone cannot fail as I/O: {error}"
                );
                return Some(error.to_string());
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut codec = FrameCodec;
    // Whole.
    let mut whole = BytesMut::from(data);
    let mut frames = Vec::new();
    let whole_error = decode_all(&mut codec, &mut whole, &mut frames);
    if whole_error.is_none() {
        // The stream ends here: leftover bytes are a truncated frame.
        match codec.decode_eof(&mut whole) {
            Ok(None) => assert!(whole.is_empty()),
            Err(FrameError::Truncated { expected, received }) => {
                assert!(received < expected, "{received} of {expected}");
                assert_eq!(received, whole.len());
            }
            other => panic!("decode_eof after the last frame: {other:?}"),
        }
    }

    // In two pieces, split where the first byte says.
    let split = data
        .first()
        .map_or(0, |byte| usize::from(*byte) % (data.len() + 1));
    let mut pieces = BytesMut::from(&data[..split]);
    let mut piecewise = Vec::new();
    let mut piecewise_error = decode_all(&mut codec, &mut pieces, &mut piecewise);
    if piecewise_error.is_none() {
        pieces.extend_from_slice(&data[split..]);
        piecewise_error = decode_all(&mut codec, &mut pieces, &mut piecewise);
    }
    assert_eq!(piecewise, frames, "piecewise and whole decoding differ");
    assert_eq!(piecewise_error, whole_error);

    // Round trip.
    for decoded in &frames {
        let encoded = encode(decoded);
        assert_eq!(encoded.len(), encoded_len(decoded));
        let mut buffer = BytesMut::from(&encoded[..]);
        let again = decode(&mut buffer)
            .expect("an encoded frame decodes")
            .expect("an encoded frame is complete");
        assert_eq!(&again, decoded);
        assert!(buffer.is_empty());
    }

    // The receiver's handshake and batch checks, and the sender's view.
    let peers = BTreeSet::from(["us-east".to_owned(), "ap-south".to_owned()]);
    let mut core = ReceiverCore::new("eu-west", peers, Instant::now(), Duration::from_secs(5));
    let mut frames = frames.into_iter();
    if let Some(first) = frames.next() {
        let _ = frame::expect_sender_inbound(first.clone());
        if let Ok(hello) = frame::expect_hello(first)
            && core.on_hello(&hello).is_ok()
        {
            assert_eq!(core.peer(), Some(hello.from_region.as_str()));
            for next in frames {
                let _ = frame::expect_sender_inbound(next.clone());
                match frame::expect_receiver_inbound(next) {
                    Ok(ReceiverInbound::Batch(batch)) => {
                        if core.on_batch(batch.through_sequence).is_err() {
                            break;
                        }
                    }
                    Ok(ReceiverInbound::Goodbye(_)) | Err(_) => break,
                }
            }
        }
    }
});
