use super::*;
use proptest::prelude::*;

fn limits() -> Limits {
    Limits::default()
}

fn small_limits() -> Limits {
    Limits {
        max_frame_bytes: 256,
        max_headers: 4,
        max_header_line_bytes: 32,
        ..Limits::default()
    }
}

fn decode_all(bytes: &[u8], limits: &Limits) -> Result<Vec<Frame>, FrameError> {
    let mut buffer = BytesMut::from(bytes);
    let mut decoder = Decoder::new();
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut buffer, limits)? {
        frames.push(frame);
    }
    Ok(frames)
}

fn one(bytes: &[u8]) -> Frame {
    let frames = decode_all(bytes, &limits()).expect("a valid frame");
    assert_eq!(frames.len(), 1, "{frames:?}");
    frames.into_iter().next().expect("one frame")
}

fn error(bytes: &[u8], limits: &Limits) -> FrameError {
    decode_all(bytes, limits).expect_err("an invalid frame")
}

fn encoded(frame: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    encode(frame, &mut out);
    out
}

#[test]
fn decodes_a_send() {
    let frame = one(b"SEND\ndestination:/queue/a\nreceipt:r-1\n\nhello\0");
    assert_eq!(frame.command, Command::Send);
    assert_eq!(frame.header("destination"), Some("/queue/a"));
    assert_eq!(frame.header("receipt"), Some("r-1"));
    assert_eq!(&frame.body[..], b"hello");
}

#[test]
fn accepts_crlf_line_ends() {
    let frame = one(b"SEND\r\ndestination:/queue/a\r\nx:y\r\n\r\nbody\0");
    assert_eq!(frame.command, Command::Send);
    assert_eq!(frame.header("destination"), Some("/queue/a"));
    assert_eq!(frame.header("x"), Some("y"));
    assert_eq!(&frame.body[..], b"body");
}

#[test]
fn skips_heart_beats_between_frames() {
    let frames = decode_all(
        b"\n\r\n\nSEND\nd:1\n\n\0\n\r\nSEND\nd:2\n\nx\0\n",
        &limits(),
    )
    .expect("valid frames");
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].header("d"), Some("1"));
    assert_eq!(&frames[1].body[..], b"x");
    assert!(
        decode_all(b"\n\n\r\n", &limits())
            .expect("only heart-beats")
            .is_empty()
    );
}

#[test]
fn a_frame_without_headers() {
    let frame = one(b"DISCONNECT\n\n\0");
    assert_eq!(frame.command, Command::Disconnect);
    assert!(frame.headers.is_empty());
    assert!(frame.body.is_empty());
}

#[test]
fn content_length_bodies_may_hold_nul() {
    let frame = one(b"SEND\ncontent-length:5\n\na\0b\0c\0");
    assert_eq!(&frame.body[..], b"a\0b\0c");
    let frame = one(b"SEND\ncontent-length:0\n\n\0");
    assert!(frame.body.is_empty());
}

#[test]
fn content_length_must_end_in_nul() {
    assert_eq!(
        error(b"SEND\ncontent-length:2\n\nabc\0", &limits()),
        FrameError::MissingNul { length: 2 }
    );
}

#[test]
fn content_length_must_be_a_number() {
    for value in ["abc", "-1", "", "1.5", "0x10", "99999999999999999999999999"] {
        let bytes = format!("SEND\ncontent-length:{value}\n\nx\0");
        assert!(
            matches!(
                error(bytes.as_bytes(), &limits()),
                FrameError::InvalidContentLength { .. }
            ),
            "{value:?}"
        );
    }
}

#[test]
fn a_repeated_header_keeps_its_first_value() {
    let frame = one(b"SEND\nfoo:first\nfoo:second\n\n\0");
    assert_eq!(frame.header("foo"), Some("first"));
    assert_eq!(frame.headers.len(), 2);
}

#[test]
fn values_keep_spaces_and_later_colons() {
    let frame = one(b"MESSAGE\nkey: a value \n\n\0");
    assert_eq!(frame.header("key"), Some(" a value "));
    let frame = one(b"CONNECT\nhost:a:b\n\n\0");
    assert_eq!(frame.header("host"), Some("a:b"));
}

#[test]
fn unescapes_headers_except_in_connect() {
    let frame = one(b"SEND\nk\\cey:a\\nb\\rc\\\\d\\ce\n\n\0");
    assert_eq!(frame.header("k:ey"), Some("a\nb\rc\\d:e"));
    let frame = one(b"CONNECT\npasscode:a\\cb\\n\n\n\0");
    assert_eq!(frame.header("passcode"), Some("a\\cb\\n"));
    let frame = one(b"STOMP\npasscode:a\\t\n\n\0");
    assert_eq!(frame.header("passcode"), Some("a\\t"));
}

#[test]
fn unknown_escapes_are_errors() {
    for line in ["k:a\\tb", "k:a\\", "k\\x:v", "k:\\ "] {
        let bytes = format!("SEND\n{line}\n\n\0");
        assert!(
            matches!(
                error(bytes.as_bytes(), &limits()),
                FrameError::InvalidEscape { .. }
            ),
            "{line:?}"
        );
    }
}

#[test]
fn garbage_is_refused_with_what_was_wrong() {
    assert_eq!(
        error(b"send\n\n\0", &limits()),
        FrameError::UnknownCommand {
            command: "send".to_owned()
        }
    );
    assert!(matches!(
        error(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &limits()),
        FrameError::UnknownCommand { .. }
    ));
    assert!(matches!(
        error(b"\x00\x01\x02\n\n\0", &limits()),
        FrameError::UnknownCommand { .. }
    ));
    assert_eq!(
        error(b"SEND\nno colon here\n\n\0", &limits()),
        FrameError::HeaderWithoutColon {
            line: "no colon here".to_owned()
        }
    );
    assert_eq!(
        error(b"SEND\n:value\n\n\0", &limits()),
        FrameError::EmptyHeaderName
    );
    assert!(matches!(
        error(b"SEND\nk:\xff\xfe\n\n\0", &limits()),
        FrameError::NotUtf8 { .. }
    ));
    let message = error(b"SEND\nbad\n\n\0", &limits()).to_string();
    assert!(message.starts_with("read frame: "), "{message}");
}

#[test]
fn long_lines_are_refused_before_they_end() {
    let limits = small_limits();
    let mut buffer = BytesMut::from(&b"SEND\nk:"[..]);
    buffer.extend_from_slice(&[b'v'; 40]);
    assert_eq!(
        decode(&mut buffer, &limits),
        Err(FrameError::LineTooLong { limit: 32 })
    );
    let line = format!("SEND\nk:{}\n\n\0", "v".repeat(31));
    assert_eq!(
        error(line.as_bytes(), &limits),
        FrameError::LineTooLong { limit: 32 }
    );
    let line = format!("SEND\nk:{}\r\n\r\n\0", "v".repeat(30));
    assert_eq!(
        decode_all(line.as_bytes(), &limits).map(|frames| frames.len()),
        Ok(1)
    );
}

#[test]
fn too_many_headers_are_refused() {
    let limits = small_limits();
    assert_eq!(
        decode_all(b"SEND\na:1\nb:2\nc:3\nd:4\n\n\0", &limits).map(|frames| frames.len()),
        Ok(1)
    );
    assert_eq!(
        error(b"SEND\na:1\nb:2\nc:3\nd:4\ne:5\n", &limits),
        FrameError::TooManyHeaders { limit: 4 }
    );
}

#[test]
fn large_frames_are_refused_while_reading() {
    let limits = small_limits();
    assert_eq!(
        error(b"SEND\ncontent-length:1000\n\n", &limits),
        FrameError::ContentLengthTooLarge {
            length: 1000,
            limit: 256
        }
    );
    // No NUL yet, and already more than a frame may have.
    let mut bytes = b"SEND\n\n".to_vec();
    bytes.extend_from_slice(&[b'x'; 300]);
    assert_eq!(
        error(&bytes, &limits),
        FrameError::FrameTooLarge { limit: 256 }
    );
    let mut bytes = b"SEND\n\n".to_vec();
    bytes.extend_from_slice(&[b'x'; 250]);
    bytes.push(0);
    assert_eq!(
        decode_all(&bytes, &limits).map(|frames| frames.len()),
        Ok(1)
    );
}

#[test]
fn the_default_frame_limit_fits_the_largest_body() {
    let body = vec![7_u8; meridian_proto::MAX_BODY_BYTES];
    let frame = Frame::new(Command::Send)
        .with_header("destination", "/queue/demo")
        .with_header("content-length", body.len().to_string())
        .with_body(body.clone());
    let decoded = decode_all(&encoded(&frame), &limits()).expect("fits");
    assert_eq!(decoded[0].body.len(), body.len());
}

#[test]
fn frames_arrive_in_pieces() {
    let bytes =
        b"\nSEND\r\ndestination:/queue/a\r\ncontent-length:3\r\n\r\na\0b\0SUBSCRIBE\nid:1\n\n\0";
    let mut buffer = BytesMut::new();
    let mut decoder = Decoder::new();
    let mut frames = Vec::new();
    for byte in bytes {
        buffer.extend_from_slice(&[*byte]);
        while let Some(frame) = decoder.decode(&mut buffer, &limits()).expect("valid") {
            frames.push(frame);
        }
    }
    assert_eq!(frames.len(), 2);
    assert_eq!(&frames[0].body[..], b"a\0b");
    assert_eq!(frames[1].command, Command::Subscribe);
    assert!(buffer.is_empty());
}

#[test]
fn the_stateless_decode_leaves_a_partial_frame() {
    let mut buffer = BytesMut::from(&b"SEND\ncontent-length:4\n\nab"[..]);
    assert_eq!(decode(&mut buffer, &limits()), Ok(None));
    assert_eq!(&buffer[..], b"SEND\ncontent-length:4\n\nab");
    buffer.extend_from_slice(b"cd\0");
    let frame = decode(&mut buffer, &limits())
        .expect("valid")
        .expect("complete");
    assert_eq!(&frame.body[..], b"abcd");
}

#[test]
fn encodes_with_escapes() {
    let frame = Frame::new(Command::Message)
        .with_header("x:y", "a\nb\rc\\d:e")
        .with_body(&b"hi"[..]);
    assert_eq!(
        &encoded(&frame)[..],
        b"MESSAGE\nx\\cy:a\\nb\\rc\\\\d\\ce\n\nhi\0"
    );
    let frame = Frame::new(Command::Connected).with_header("server", "meridian/0.1.0");
    assert_eq!(
        &encoded(&frame)[..],
        b"CONNECTED\nserver:meridian/0.1.0\n\n\0"
    );
}

fn escaped_command() -> impl Strategy<Value = Command> {
    prop::sample::select(
        Command::ALL
            .into_iter()
            .filter(|command| command.escapes_headers())
            .collect::<Vec<_>>(),
    )
}

proptest! {
    #[test]
    fn frames_round_trip(
        command in escaped_command(),
        headers in prop::collection::vec(("[a-z:\\\\\r\n-]{1,12}", "\\PC{0,20}|[:\\\\\r\n ]{0,5}"), 0..8),
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut frame = Frame::new(command);
        for (name, value) in headers {
            if name != "content-length" {
                frame = frame.with_header(name, value);
            }
        }
        let frame = frame
            .with_header("content-length", body.len().to_string())
            .with_body(body);
        let decoded = decode_all(&encoded(&frame), &limits()).expect("decodes");
        prop_assert_eq!(decoded, vec![frame]);
    }

    #[test]
    fn any_bytes_decode_or_fail_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let limits = small_limits();
        let mut buffer = BytesMut::from(&bytes[..]);
        let mut decoder = Decoder::new();
        loop {
            let before = buffer.len();
            match decoder.decode(&mut buffer, &limits) {
                Ok(Some(frame)) => {
                    prop_assert!(buffer.len() < before);
                    prop_assert!(frame.body.len() <= limits.max_frame_bytes);
                }
                Ok(None) | Err(_) => break,
            }
        }
        prop_assert!(buffer.len() <= bytes.len());
    }

    #[test]
    fn split_points_do_not_matter(split in 0_usize..60) {
        let bytes = b"\r\nSEND\r\na:b\\c\r\ncontent-length:3\r\n\r\nx\0y\0\nACK\nid:1\n\n\0";
        let whole = decode_all(bytes, &limits()).expect("valid");
        let split = split.min(bytes.len());
        let mut buffer = BytesMut::from(&bytes[..split]);
        let mut decoder = Decoder::new();
        let mut frames = Vec::new();
        while let Some(frame) = decoder.decode(&mut buffer, &limits()).expect("valid") {
            frames.push(frame);
        }
        buffer.extend_from_slice(&bytes[split..]);
        while let Some(frame) = decoder.decode(&mut buffer, &limits()).expect("valid") {
            frames.push(frame);
        }
        prop_assert_eq!(frames, whole);
    }
}
