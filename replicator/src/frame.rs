//! The frame codec of a replication stream.
//!
//! A replication link is one QUIC bidirectional stream carrying a sequence of
//! frames, each a 4-byte big-endian length followed by one prost-encoded
//! [`ReplicationFrame`]. The length is checked against [`MAX_FRAME_BYTES`]
//! before anything is buffered for the body, so a hostile peer cannot make the
//! receiver allocate more than that per connection.
//!
//! The decoder is incremental ([`FrameCodec`] implements tokio-util's
//! `Decoder`), which makes [`FrameReader::next_frame`] cancel-safe: the
//! replication loops wait on it inside `select!` next to other events without
//! losing bytes. Every failure is a [`FrameError`] naming what was wrong; the
//! decoder never panics on input.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use meridian_proto::meridian::v1::replication_frame::Frame;
use meridian_proto::meridian::v1::{Ack, Batch, Goodbye, Hello, ReplicationFrame};
use prost::Message;
use tokio::io::AsyncRead;
use tokio_stream::StreamExt;
use tokio_util::codec::{Decoder, Encoder, FramedRead};

/// Largest encoded `ReplicationFrame` (the length prefix excluded): 16 MiB.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Size of the big-endian length prefix in front of every frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The kind of a frame, for error messages and protocol checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Hello,
    Batch,
    Ack,
    Goodbye,
}

impl FrameKind {
    /// The kind of a decoded frame body.
    pub fn of(frame: &Frame) -> Self {
        match frame {
            Frame::Hello(_) => Self::Hello,
            Frame::Batch(_) => Self::Batch,
            Frame::Ack(_) => Self::Ack,
            Frame::Goodbye(_) => Self::Goodbye,
        }
    }
}

impl std::fmt::Display for FrameKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::Hello => "Hello",
            Self::Batch => "Batch",
            Self::Ack => "Ack",
            Self::Goodbye => "Goodbye",
        };
        formatter.write_str(name)
    }
}

/// What was wrong with the bytes of a replication stream.
///
/// Every variant but [`FrameError::Io`] is the peer's fault, and its message
/// starts with "malformed replication frame" (the receiver sends it to the peer
/// as the reason it closes the connection).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("malformed replication frame: length {length} exceeds {max}")]
    TooLarge { length: u64, max: usize },
    #[error("malformed replication frame: stream ended after {received} of {expected} bytes")]
    Truncated { expected: usize, received: usize },
    #[error("malformed replication frame: invalid protobuf")]
    Undecodable(#[source] prost::DecodeError),
    #[error("malformed replication frame: no frame kind set")]
    Empty,
    #[error("malformed replication frame: expected {expected}, got {actual}")]
    Unexpected {
        expected: &'static str,
        actual: FrameKind,
    },
    /// The transport failed; the bytes themselves were not at fault.
    #[error("read replication stream")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// True when the peer sent bad bytes (as opposed to the transport failing).
    pub fn is_malformed(&self) -> bool {
        !matches!(self, Self::Io(_))
    }
}

/// Encodes one frame: length prefix plus protobuf body.
pub fn encode(frame: &ReplicationFrame) -> Bytes {
    let body_length = frame.encoded_len();
    let mut buffer = BytesMut::with_capacity(LENGTH_PREFIX_BYTES + body_length);
    encode_into(frame, &mut buffer);
    buffer.freeze()
}

fn encode_into(frame: &ReplicationFrame, buffer: &mut BytesMut) {
    let body_length = frame.encoded_len();
    // A body over u32::MAX is far above MAX_FRAME_BYTES; the receiver refuses it
    // either way, so saturating keeps the prefix honest about "too large".
    buffer.put_u32(u32::try_from(body_length).unwrap_or(u32::MAX));
    buffer.reserve(body_length);
    frame
        .encode(buffer)
        .expect("BytesMut grows on demand, so encoding cannot run out of space");
}

/// The encoded size of a frame, length prefix included.
pub fn encoded_len(frame: &ReplicationFrame) -> usize {
    LENGTH_PREFIX_BYTES + frame.encoded_len()
}

/// Wraps a frame body into a [`ReplicationFrame`].
pub fn frame(body: Frame) -> ReplicationFrame {
    ReplicationFrame { frame: Some(body) }
}

/// Incremental codec: `decode` returns `Ok(None)` until a whole frame is buffered.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = ReplicationFrame;
    type Error = FrameError;

    fn decode(&mut self, source: &mut BytesMut) -> Result<Option<ReplicationFrame>, FrameError> {
        decode(source)
    }

    fn decode_eof(
        &mut self,
        source: &mut BytesMut,
    ) -> Result<Option<ReplicationFrame>, FrameError> {
        match decode(source)? {
            Some(frame) => Ok(Some(frame)),
            None if source.is_empty() => Ok(None),
            None => Err(truncated(source)),
        }
    }
}

impl Encoder<&ReplicationFrame> for FrameCodec {
    type Error = FrameError;

    fn encode(
        &mut self,
        frame: &ReplicationFrame,
        target: &mut BytesMut,
    ) -> Result<(), FrameError> {
        encode_into(frame, target);
        Ok(())
    }
}

/// Decodes one frame from the front of `source` if it is complete, consuming it.
///
/// `Ok(None)` means more bytes are needed (nothing is consumed). The length is
/// checked as soon as the prefix is there, before the body arrives.
pub fn decode(source: &mut BytesMut) -> Result<Option<ReplicationFrame>, FrameError> {
    let Some(prefix) = source.get(..LENGTH_PREFIX_BYTES) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let length = usize::try_from(length)
        .ok()
        .filter(|length| *length <= MAX_FRAME_BYTES)
        .ok_or(FrameError::TooLarge {
            length: u64::from(length),
            max: MAX_FRAME_BYTES,
        })?;
    if source.len() < LENGTH_PREFIX_BYTES + length {
        return Ok(None);
    }
    source.advance(LENGTH_PREFIX_BYTES);
    let body = source.split_to(length).freeze();
    let frame = ReplicationFrame::decode(body).map_err(FrameError::Undecodable)?;
    if frame.frame.is_none() {
        return Err(FrameError::Empty);
    }
    Ok(Some(frame))
}

/// The error for a stream that ended inside a frame.
fn truncated(source: &BytesMut) -> FrameError {
    let received = source.len();
    let expected = match source.get(..LENGTH_PREFIX_BYTES) {
        Some(prefix) => {
            let length = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
            // decode() already refused lengths above MAX_FRAME_BYTES.
            LENGTH_PREFIX_BYTES + usize::try_from(length).unwrap_or(MAX_FRAME_BYTES)
        }
        None => LENGTH_PREFIX_BYTES,
    };
    FrameError::Truncated { expected, received }
}

/// Reads frames from an async byte stream (a QUIC receive stream).
pub struct FrameReader<R> {
    inner: FramedRead<R, FrameCodec>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R) -> Self {
        Self {
            inner: FramedRead::new(reader, FrameCodec),
        }
    }

    /// The next frame; `Ok(None)` when the stream ended cleanly between frames.
    ///
    /// Cancel-safe: partial input stays buffered for the next call.
    pub async fn next_frame(&mut self) -> Result<Option<ReplicationFrame>, FrameError> {
        self.inner.next().await.transpose()
    }
}

/// Extracts the body of a frame expected to be a [`Hello`].
pub fn expect_hello(frame: ReplicationFrame) -> Result<Hello, FrameError> {
    match into_body(frame)? {
        Frame::Hello(hello) => Ok(hello),
        other => Err(unexpected("Hello", &other)),
    }
}

/// What a sender may receive: [`Ack`] or [`Goodbye`].
#[derive(Debug, Clone, PartialEq)]
pub enum SenderInbound {
    Ack(Ack),
    Goodbye(Goodbye),
}

/// Classifies a frame received by the sending side.
pub fn expect_sender_inbound(frame: ReplicationFrame) -> Result<SenderInbound, FrameError> {
    match into_body(frame)? {
        Frame::Ack(ack) => Ok(SenderInbound::Ack(ack)),
        Frame::Goodbye(goodbye) => Ok(SenderInbound::Goodbye(goodbye)),
        other => Err(unexpected("Ack or Goodbye", &other)),
    }
}

/// What a receiver may receive after the Hello: [`Batch`] or [`Goodbye`].
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverInbound {
    Batch(Batch),
    Goodbye(Goodbye),
}

/// Classifies a frame received by the receiving side after the handshake.
pub fn expect_receiver_inbound(frame: ReplicationFrame) -> Result<ReceiverInbound, FrameError> {
    match into_body(frame)? {
        Frame::Batch(batch) => Ok(ReceiverInbound::Batch(batch)),
        Frame::Goodbye(goodbye) => Ok(ReceiverInbound::Goodbye(goodbye)),
        other => Err(unexpected("Batch or Goodbye", &other)),
    }
}

fn into_body(frame: ReplicationFrame) -> Result<Frame, FrameError> {
    frame.frame.ok_or(FrameError::Empty)
}

fn unexpected(expected: &'static str, actual: &Frame) -> FrameError {
    FrameError::Unexpected {
        expected,
        actual: FrameKind::of(actual),
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
