//! The socket of one session: frames in (through the [`Decoder`]), frames
//! and heart-beats out, and the polite close (FIN, then a short wait for the
//! client's side, so that unread input does not turn the close into a reset
//! that could destroy the ERROR frame on its way).

use crate::Limits;
use crate::error::SessionError;
use crate::frame::{self, Decoder, Frame};
use bytes::{BufMut, BytesMut};
use meridian_face::tls::ClientStream;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::time::Instant;

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Buffered output that is written before more is queued.
pub(super) const FLUSH_AT_BYTES: usize = 256 * 1024;
/// A write buffer larger than this after a flush is given back.
const KEEP_BUFFER_BYTES: usize = 1024 * 1024;
/// How long a closing connection waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(1);
/// Longest the ERROR frame of a failing session may take to write (it is
/// small: a client that does not take it in this time is not reading).
const ERROR_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes read and dropped while waiting for the client to close.
const LINGER_MAX_BYTES: usize = 1024 * 1024;

pub(super) struct Connection {
    reader: ReadHalf<ClientStream>,
    input: BytesMut,
    decoder: Decoder,
    pub(super) writer: Writer,
    /// When a byte last came from the client.
    pub(super) last_read: Instant,
}

impl Connection {
    pub(super) fn new(socket: ClientStream, write_timeout: Duration) -> Self {
        // Frames are written whole; no need to wait for more.
        let _ = socket.tcp().set_nodelay(true);
        let (reader, writer) = tokio::io::split(socket);
        Connection {
            reader,
            input: BytesMut::new(),
            decoder: Decoder::new(),
            writer: Writer {
                half: writer,
                output: BytesMut::new(),
                last_write: Instant::now(),
                timeout: write_timeout,
            },
            last_read: Instant::now(),
        }
    }

    /// The next frame already read, if complete.
    pub(super) fn next_frame(&mut self, limits: &Limits) -> Result<Option<Frame>, SessionError> {
        Ok(self.decoder.decode(&mut self.input, limits)?)
    }

    /// Reads more bytes; `false` when the client closed its side. Cancel
    /// safe (nothing read is lost if the future is dropped).
    pub(super) async fn read_more(&mut self) -> Result<bool, SessionError> {
        self.input.reserve(READ_CHUNK_BYTES);
        let read = self
            .reader
            .read_buf(&mut self.input)
            .await
            .map_err(|source| SessionError::Io {
                action: "read from the client",
                source,
            })?;
        if read > 0 {
            self.last_read = Instant::now();
        }
        Ok(read > 0)
    }

    /// Reads what already arrived, without waiting: `Some(false)` if the
    /// client closed, `None` if nothing is there. For a timer that fired
    /// while the session was busy: bytes it did not read yet count.
    pub(super) fn read_ready(&mut self) -> Result<Option<bool>, SessionError> {
        self.input.reserve(READ_CHUNK_BYTES);
        // One poll (`read_buf` is cancel safe): TLS may have bytes buffered
        // that the socket no longer shows.
        match futures::FutureExt::now_or_never(self.reader.read_buf(&mut self.input)) {
            None => Ok(None),
            Some(Ok(0)) => Ok(Some(false)),
            Some(Ok(_)) => {
                self.last_read = Instant::now();
                Ok(Some(true))
            }
            Some(Err(error)) if error.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Some(Err(source)) => Err(SessionError::Io {
                action: "read from the client",
                source,
            }),
        }
    }

    /// The next frame, reading as needed; `None` if the client closed.
    /// Cancel safe.
    pub(super) async fn read_frame(
        &mut self,
        limits: &Limits,
    ) -> Result<Option<Frame>, SessionError> {
        loop {
            if let Some(frame) = self.next_frame(limits)? {
                return Ok(Some(frame));
            }
            if !self.read_more().await? {
                return Ok(None);
            }
        }
    }

    /// Sends `error` as an ERROR frame if the client can still get it, then
    /// closes.
    pub(super) async fn fail(mut self, error: &SessionError, receipt: Option<&str>) {
        if error.is_reportable() {
            let frame = error.to_frame(receipt);
            let _ = tokio::time::timeout(ERROR_WRITE_TIMEOUT, self.writer.send(&frame)).await;
        }
        self.close().await;
    }

    /// Closes the connection: FIN, then up to [`LINGER`] for the client to
    /// close its side, dropping what it still sends.
    pub(super) async fn close(mut self) {
        let _ = tokio::time::timeout(LINGER, self.writer.half.shutdown()).await;
        let reader = &mut self.reader;
        let input = &mut self.input;
        let _ = tokio::time::timeout(LINGER, async move {
            let mut dropped = 0;
            while dropped < LINGER_MAX_BYTES {
                input.clear();
                input.reserve(READ_CHUNK_BYTES);
                match reader.read_buf(input).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => dropped += read,
                }
            }
        })
        .await;
    }
}

/// The write side: frames are queued into one buffer and written together.
pub(super) struct Writer {
    half: WriteHalf<ClientStream>,
    output: BytesMut,
    /// When bytes last went to the client (heart-beats are due after it).
    pub(super) last_write: Instant,
    timeout: Duration,
}

impl Writer {
    pub(super) fn queue(&mut self, frame: &Frame) {
        frame::encode(frame, &mut self.output);
    }

    pub(super) fn buffered_bytes(&self) -> usize {
        self.output.len()
    }

    /// Writes what is queued, within the write timeout.
    pub(super) async fn flush(&mut self) -> Result<(), SessionError> {
        if self.output.is_empty() {
            return Ok(());
        }
        // `flush`: TLS may hold back the records of what was written.
        let written = async {
            self.half.write_all(&self.output).await?;
            self.half.flush().await
        };
        match tokio::time::timeout(self.timeout, written).await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                return Err(SessionError::Io {
                    action: "write to the client",
                    source,
                });
            }
            Err(_) => {
                return Err(SessionError::WriteTimeout {
                    waited_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                });
            }
        }
        self.last_write = Instant::now();
        if self.output.capacity() > KEEP_BUFFER_BYTES {
            self.output = BytesMut::new();
        } else {
            self.output.clear();
        }
        Ok(())
    }

    pub(super) async fn send(&mut self, frame: &Frame) -> Result<(), SessionError> {
        self.queue(frame);
        self.flush().await
    }

    /// One EOL: a heart-beat.
    pub(super) async fn heart_beat(&mut self) -> Result<(), SessionError> {
        self.output.put_u8(b'\n');
        self.flush().await
    }
}
