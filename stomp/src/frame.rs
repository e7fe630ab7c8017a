//! STOMP 1.2 frames: the decoder that reads them from the network and the
//! encoder that writes them. Public so that fuzz targets and tests can drive
//! the decoder with any bytes.
//!
//! A frame is `COMMAND EOL (header EOL)* EOL body NUL`, where EOL is `\n` or
//! `\r\n`. EOLs between frames are heart-beats and are skipped. Header names
//! and values are unescaped (`\r`, `\n`, `\c`, `\\`; any other escape is an
//! error) except in CONNECT, STOMP and CONNECTED frames, which are never
//! escaped. A repeated header keeps its first value ([`Frame::header`]).
//! With `content-length` the body is exactly that many bytes (it may contain
//! NUL) and must be followed by NUL; without it the body runs to the first
//! NUL.
//!
//! Every limit is checked while reading, so a peer can make the decoder
//! buffer at most [`Limits::max_frame_bytes`] (plus one read) for a frame.
//! Commands must be known to STOMP 1.2; header bytes must be UTF-8; bodies
//! are bytes.

use crate::Limits;
use bytes::{BufMut, Bytes, BytesMut};

/// The commands of STOMP 1.2, client and server frames alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Connect,
    Stomp,
    Connected,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    Message,
    Receipt,
    Error,
}

impl Command {
    const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Connected,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// The command as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Connected => "CONNECTED",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    fn parse(line: &[u8]) -> Option<Command> {
        Command::ALL
            .into_iter()
            .find(|command| command.as_str().as_bytes() == line)
    }

    /// Whether header names and values of this frame are escaped (all but
    /// the connection handshake's).
    pub fn escapes_headers(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// One STOMP frame, headers unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: Command,
    /// In the order they came, repeats included.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    pub fn new(command: Command) -> Self {
        Frame {
            command,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// The first value of header `name` (a repeated header keeps its first
    /// value, as STOMP 1.2 says).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Adds a header (after any of the same name, which then wins).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// Why bytes are not a STOMP 1.2 frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("read frame: a command or header line is longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("read frame: more than {limit} headers")]
    TooManyHeaders { limit: usize },
    #[error("read frame: the frame is larger than {limit} bytes")]
    FrameTooLarge { limit: usize },
    #[error("read frame: content-length {length} is more than the {limit} bytes a frame may have")]
    ContentLengthTooLarge { length: usize, limit: usize },
    #[error("read frame: content-length {value:?} is not a number of bytes")]
    InvalidContentLength { value: String },
    #[error("read frame: the {length} bytes of the body (content-length) are not followed by NUL")]
    MissingNul { length: usize },
    #[error("read frame: unknown command {command:?} (STOMP 1.2 commands are upper case)")]
    UnknownCommand { command: String },
    #[error("read frame: header line {line:?} has no ':'")]
    HeaderWithoutColon { line: String },
    #[error("read frame: a header has an empty name")]
    EmptyHeaderName,
    #[error(
        "read frame: invalid escape {sequence:?} in header {line:?} (STOMP 1.2 knows \\r, \\n, \\c and \\\\)"
    )]
    InvalidEscape { sequence: String, line: String },
    #[error("read frame: header line {line:?} is not UTF-8")]
    NotUtf8 { line: String },
}

/// Longest piece of a peer's input quoted in an error.
const QUOTE_MAX_CHARS: usize = 80;

fn quote(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(QUOTE_MAX_CHARS)
        .collect()
}

/// A parsed command line and headers, waiting for the body.
#[derive(Debug)]
struct Head {
    command: Command,
    headers: Vec<(String, String)>,
    /// Bytes of the head in the buffer, blank line included.
    length: usize,
    content_length: Option<usize>,
}

#[derive(Debug)]
enum State {
    /// Looking for the blank line that ends the head: `scanned` bytes from
    /// the frame's start are complete lines already checked, `lines` of
    /// them.
    Head { scanned: usize, lines: usize },
    /// The head is parsed; `scanned` bytes from the frame's start hold no
    /// NUL (only used without content-length).
    Body { head: Head, scanned: usize },
}

/// Reads frames from a buffer that the caller appends to. It remembers how
/// far it looked, so reading a large frame in many pieces costs linear
/// time; the buffer must only be changed by appending and by the decoder.
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            state: State::Head {
                scanned: 0,
                lines: 0,
            },
        }
    }

    /// The next complete frame in `buffer`, removed from it; `None` if more
    /// bytes are needed. After an error the connection cannot be read on.
    pub fn decode(
        &mut self,
        buffer: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Frame>, FrameError> {
        if let State::Head { scanned, lines } = &mut self.state {
            if *scanned == 0 {
                skip_heart_beats(buffer);
            }
            let Some(head) = scan_head(buffer, scanned, lines, limits)? else {
                return Ok(None);
            };
            let scanned = head.length;
            self.state = State::Body { head, scanned };
        }
        let State::Body { head, scanned } = &mut self.state else {
            return Ok(None);
        };
        let body_end = match head.content_length {
            Some(length) => {
                let end = head.length + length;
                if buffer.len() <= end {
                    return Ok(None);
                }
                if buffer[end] != 0 {
                    return Err(FrameError::MissingNul { length });
                }
                end
            }
            None => match buffer[*scanned..].iter().position(|byte| *byte == 0) {
                Some(offset) => *scanned + offset,
                None => {
                    *scanned = buffer.len();
                    if buffer.len() > limits.max_frame_bytes {
                        return Err(FrameError::FrameTooLarge {
                            limit: limits.max_frame_bytes,
                        });
                    }
                    return Ok(None);
                }
            },
        };
        if body_end > limits.max_frame_bytes {
            return Err(FrameError::FrameTooLarge {
                limit: limits.max_frame_bytes,
            });
        }
        let (command, head_length) = (head.command, head.length);
        let headers = std::mem::take(&mut head.headers);
        self.state = State::Head {
            scanned: 0,
            lines: 0,
        };
        let mut frame = buffer.split_to(body_end + 1).freeze();
        let body = frame.split_off(head_length).slice(..body_end - head_length);
        Ok(Some(Frame {
            command,
            headers,
            body,
        }))
    }
}

/// Decodes one frame from the start of `buffer` (see [`Decoder`]); a fresh
/// decoder each call, so a frame that arrives in pieces is scanned again
/// each time. For tests and fuzzing.
pub fn decode(buffer: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, FrameError> {
    Decoder::new().decode(buffer, limits)
}

/// Drops the EOLs (heart-beats) before a frame. A `\r` at the end stays: it
/// may be the start of `\r\n`.
fn skip_heart_beats(buffer: &mut BytesMut) {
    let mut skip = 0;
    loop {
        match buffer.get(skip..skip + 2) {
            Some([b'\n', _]) => skip += 1,
            Some([b'\r', b'\n']) => skip += 2,
            _ => match buffer.get(skip) {
                Some(b'\n') => skip += 1,
                _ => break,
            },
        }
    }
    let _ = buffer.split_to(skip);
}

/// Scans the lines after `scanned` for the blank line ending the head,
/// checking the limits as it goes; parses the head once it is complete.
fn scan_head(
    buffer: &BytesMut,
    scanned: &mut usize,
    lines: &mut usize,
    limits: &Limits,
) -> Result<Option<Head>, FrameError> {
    loop {
        let line_start = *scanned;
        let Some(offset) = buffer[line_start..].iter().position(|byte| *byte == b'\n') else {
            // Room for the line and its `\r`.
            let partial = buffer.len() - line_start;
            if partial > limits.max_header_line_bytes.saturating_add(1) {
                return Err(FrameError::LineTooLong {
                    limit: limits.max_header_line_bytes,
                });
            }
            if buffer.len() > limits.max_frame_bytes {
                return Err(FrameError::FrameTooLarge {
                    limit: limits.max_frame_bytes,
                });
            }
            return Ok(None);
        };
        let line = strip_cr(&buffer[line_start..line_start + offset]);
        *scanned = line_start + offset + 1;
        if line.len() > limits.max_header_line_bytes {
            return Err(FrameError::LineTooLong {
                limit: limits.max_header_line_bytes,
            });
        }
        if *scanned > limits.max_frame_bytes {
            return Err(FrameError::FrameTooLarge {
                limit: limits.max_frame_bytes,
            });
        }
        if line.is_empty() && *lines > 0 {
            return parse_head(&buffer[..*scanned], limits).map(Some);
        }
        *lines += 1;
        // The command line and the headers.
        if *lines > limits.max_headers.saturating_add(1) {
            return Err(FrameError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses a complete head (command line, header lines, blank line).
fn parse_head(bytes: &[u8], limits: &Limits) -> Result<Head, FrameError> {
    let mut lines = bytes
        .split(|byte| *byte == b'\n')
        .map(strip_cr)
        .take_while(|line| !line.is_empty());
    let command_line = lines.next().unwrap_or_default();
    let command = Command::parse(command_line).ok_or_else(|| FrameError::UnknownCommand {
        command: quote(command_line),
    })?;
    let mut headers = Vec::new();
    for line in lines {
        let colon = line
            .iter()
            .position(|byte| *byte == b':')
            .ok_or_else(|| FrameError::HeaderWithoutColon { line: quote(line) })?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() {
            return Err(FrameError::EmptyHeaderName);
        }
        let (name, value) = if command.escapes_headers() {
            (unescape(name, line)?, unescape(value, line)?)
        } else {
            (name.to_vec(), value.to_vec())
        };
        let text = |bytes: Vec<u8>| {
            String::from_utf8(bytes).map_err(|_| FrameError::NotUtf8 { line: quote(line) })
        };
        headers.push((text(name)?, text(value)?));
    }
    let content_length = match headers.iter().find(|(name, _)| name == "content-length") {
        None => None,
        Some((_, value)) => {
            let digits = value.trim();
            let length = (!digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()))
                .then(|| digits.parse::<usize>().ok())
                .flatten()
                .ok_or_else(|| FrameError::InvalidContentLength {
                    value: value.chars().take(QUOTE_MAX_CHARS).collect(),
                })?;
            let room = limits.max_frame_bytes.saturating_sub(bytes.len());
            if length > room {
                return Err(FrameError::ContentLengthTooLarge {
                    length,
                    limit: limits.max_frame_bytes,
                });
            }
            Some(length)
        }
    };
    Ok(Head {
        command,
        headers,
        length: bytes.len(),
        content_length,
    })
}

fn unescape(bytes: &[u8], line: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut iter = bytes.iter();
    while let Some(byte) = iter.next() {
        if *byte != b'\\' {
            out.push(*byte);
            continue;
        }
        match iter.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b'c') => out.push(b':'),
            Some(b'\\') => out.push(b'\\'),
            other => {
                let mut sequence = String::from("\\");
                if let Some(other) = other {
                    sequence.push_str(&String::from_utf8_lossy(&[*other]));
                }
                return Err(FrameError::InvalidEscape {
                    sequence,
                    line: quote(line),
                });
            }
        }
    }
    Ok(out)
}

fn escape_into(text: &str, out: &mut BytesMut) {
    for byte in text.bytes() {
        match byte {
            b'\r' => out.put_slice(b"\\r"),
            b'\n' => out.put_slice(b"\\n"),
            b':' => out.put_slice(b"\\c"),
            b'\\' => out.put_slice(b"\\\\"),
            other => out.put_u8(other),
        }
    }
}

/// Appends `frame` to `out`: LF line ends, headers escaped (except for
/// CONNECT, STOMP and CONNECTED, whose headers the caller must keep free of
/// `:` in names and of line ends), no `content-length` added (callers add
/// it where it is wanted), and a NUL after the body.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    out.put_slice(frame.command.as_str().as_bytes());
    out.put_u8(b'\n');
    for (name, value) in &frame.headers {
        if frame.command.escapes_headers() {
            escape_into(name, out);
            out.put_u8(b':');
            escape_into(value, out);
        } else {
            out.put_slice(name.as_bytes());
            out.put_u8(b':');
            out.put_slice(value.as_bytes());
        }
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.put_slice(&frame.body);
    out.put_u8(0);
}

#[cfg(test)]
mod tests;
