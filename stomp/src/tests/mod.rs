//! Session tests: the real server on a loopback listener (port 0), a small
//! STOMP client built on the crate's own codec, and the in-memory
//! [`fake::FakeBackend`]. Every wait has a timeout; waits for the backend
//! use its change notifications, never sleeps.

mod fake;
mod sessions;
mod settling;

use crate::frame::{Command, Decoder, Frame, encode};
use crate::{Config, Limits};
use bytes::BytesMut;
use fake::FakeBackend;
use meridian_face::access::Authentication;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest any single step of a test may take.
const WAIT: Duration = Duration::from_secs(10);

/// A running server over a fake backend.
struct Server {
    address: SocketAddr,
    backend: Arc<FakeBackend>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    async fn start() -> Server {
        Server::with(Limits::default(), Authentication::Development).await
    }

    async fn with_limits(limits: Limits) -> Server {
        Server::with(limits, Authentication::Development).await
    }

    async fn with(limits: Limits, authentication: Authentication) -> Server {
        let backend = Arc::new(FakeBackend::new(&[
            "demo",
            "other",
            "broken",
            "MQ_INST_1%demo",
        ]));
        backend.update(|state| state.broken.insert("broken".to_owned()));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("a bound address");
        let shutdown = CancellationToken::new();
        let config = Config {
            region: "test".to_owned(),
            authentication,
            limits,
            tls: None,
        };
        let task = tokio::spawn(crate::serve(
            listener,
            Arc::clone(&backend) as Arc<dyn meridian_face::Backend>,
            config,
            shutdown.clone(),
        ));
        Server {
            address,
            backend,
            shutdown,
            task: Some(task),
        }
    }

    /// A connected client.
    async fn client(&self) -> Client {
        let mut client = Client::open(self.address).await;
        let connected = client.connect(&[]).await;
        assert_eq!(connected.command, Command::Connected, "{connected:?}");
        client
    }

    /// Fires the shutdown and waits for `serve` to return.
    async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve does not panic")
            .expect("serve succeeds");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A raw STOMP client.
struct Client {
    stream: TcpStream,
    input: BytesMut,
    decoder: Decoder,
}

impl Client {
    async fn open(address: SocketAddr) -> Client {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(address))
            .await
            .expect("connect in time")
            .expect("connect");
        Client {
            stream,
            input: BytesMut::new(),
            decoder: Decoder::new(),
        }
    }

    /// Sends CONNECT (version 1.2, host localhost, plus `headers`) and
    /// returns the answer.
    async fn connect(&mut self, headers: &[(&str, &str)]) -> Frame {
        let mut frame = Frame::new(Command::Connect);
        for (name, value) in headers {
            frame = frame.with_header(*name, *value);
        }
        let frame = frame
            .with_header("accept-version", "1.2")
            .with_header("host", "localhost");
        self.send(&frame).await;
        self.frame().await
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write");
    }

    async fn send(&mut self, frame: &Frame) {
        let mut out = BytesMut::new();
        encode(frame, &mut out);
        self.send_raw(&out).await;
    }

    /// The next frame, or `None` at the end of the stream.
    async fn next(&mut self) -> Option<Frame> {
        let limits = Limits::default();
        loop {
            if let Some(frame) = self
                .decoder
                .decode(&mut self.input, &limits)
                .expect("the server writes valid frames")
            {
                return Some(frame);
            }
            self.input.reserve(64 * 1024);
            let read = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.input))
                .await
                .expect("a frame in time");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    async fn frame(&mut self) -> Frame {
        self.next()
            .await
            .expect("a frame before the connection closed")
    }

    /// The next frame, which must be `command`.
    async fn expect(&mut self, command: Command) -> Frame {
        let frame = self.frame().await;
        assert_eq!(frame.command, command, "{frame:?}");
        frame
    }

    /// Sends `frame` with `receipt:id` and waits for its RECEIPT.
    async fn request(&mut self, frame: Frame, id: &str) {
        self.send(&frame.with_header("receipt", id)).await;
        let receipt = self.expect(Command::Receipt).await;
        assert_eq!(receipt.header("receipt-id"), Some(id));
    }

    /// The next frame is an ERROR whose message contains `text`; then the
    /// server closes the connection.
    async fn expect_error(&mut self, text: &str) -> Frame {
        let error = self.expect(Command::Error).await;
        let message = error.header("message").unwrap_or_default();
        assert!(
            message.contains(text),
            "{message:?} does not contain {text:?}"
        );
        assert_eq!(error.header("content-type"), Some("text/plain"));
        assert_eq!(
            error.header("content-length"),
            Some(error.body.len().to_string().as_str())
        );
        self.expect_closed().await;
        error
    }

    async fn expect_closed(&mut self) {
        if let Some(frame) = self.next().await {
            panic!("expected the connection to close, got {frame:?}");
        }
    }

    /// Asserts that no frame arrives within `window` (only for checks that
    /// something does not happen).
    async fn expect_quiet(&mut self, window: Duration) {
        let limits = Limits::default();
        if let Some(frame) = self
            .decoder
            .decode(&mut self.input, &limits)
            .expect("valid frames")
        {
            panic!("expected no frame, got {frame:?}");
        }
        self.input.reserve(1024);
        if let Ok(read) = tokio::time::timeout(window, self.stream.read_buf(&mut self.input)).await
        {
            let read = read.expect("read");
            let frame = self
                .decoder
                .decode(&mut self.input, &limits)
                .expect("valid");
            assert!(
                read == 0 || frame.is_none(),
                "expected no frame, got {frame:?}"
            );
        }
    }
}

fn send(destination: &str, body: &'static [u8]) -> Frame {
    Frame::new(Command::Send)
        .with_header("destination", destination)
        .with_header("content-length", body.len().to_string())
        .with_body(body)
}

fn subscribe(destination: &str, id: &str, ack: &str) -> Frame {
    Frame::new(Command::Subscribe)
        .with_header("destination", destination)
        .with_header("id", id)
        .with_header("ack", ack)
}

fn frame(command: Command, headers: &[(&str, &str)]) -> Frame {
    let mut frame = Frame::new(command);
    for (name, value) in headers {
        frame = frame.with_header(*name, *value);
    }
    frame
}
