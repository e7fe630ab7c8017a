//! One STOMP connection, from CONNECT to close.
//!
//! A session task owns the socket and all of the connection's state (its
//! subscriptions, their unacknowledged messages, its transactions), and
//! handles one thing at a time: a frame from the client, a batch of
//! messages from one of its subscriptions' receive tasks, a heart-beat due,
//! or the shutdown. Frames are processed in order, so a RECEIPT means the
//! frames before it are done. Each subscription's receive task only talks
//! to the backend and hands its batches over a bounded channel.
//!
//! A session ends on DISCONNECT (RECEIPT after the subscriptions ended,
//! then close), on an error (ERROR frame, then close; see [`SessionError`]),
//! when the client closes or stays silent past the heart-beat limit, or at
//! shutdown (ERROR "server shutting down"). Then its subscriptions end: the
//! messages they hold become visible again at once, `/topic/` consumers are
//! dropped, open transactions are discarded.
//!
//! Backend refusals of what a client asked for (SEND, ACK, NACK, a receive)
//! end the session with an ERROR naming the refusal; failures of what the
//! server does on its own (acknowledging in `auto` mode, releasing
//! messages) are logged, the messages coming back after their ack timeout.

mod connection;
mod handlers;
mod subscription;
mod transaction;

use crate::Config;
use crate::error::SessionError;
use crate::frame::{Command, Frame};
use crate::heartbeat::{self, HeartBeats};
use connection::Connection;
use meridian_face::tls::ClientStream;
use meridian_face::{Backend, Caller, Refusal};
use meridian_proto::rocketmq::v2::Message;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subscription::{Received, Spec, Subscription};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use transaction::Transaction;

/// Longest a session's end may spend releasing its messages and dropping
/// its topic consumers.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Batches from receive tasks waiting for the session.
const EVENT_QUEUE: usize = 16;

/// What every session of one server shares.
pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) config: Config,
}

/// What a subscription's receive task hands to its session.
pub(crate) enum Event {
    Delivered {
        spec: Arc<Spec>,
        messages: Vec<Received>,
    },
    Refused {
        spec: Arc<Spec>,
        refusal: Refusal,
    },
}

impl Event {
    /// The messages of an event that could not be handed over.
    fn into_messages(self) -> Vec<Message> {
        match self {
            Event::Delivered { messages, .. } => messages
                .into_iter()
                .map(|received| received.message)
                .collect(),
            Event::Refused { .. } => Vec::new(),
        }
    }
}

/// What the session does after a frame.
enum Flow {
    Continue,
    Disconnect,
}

/// How a session ended without an error.
enum Ending {
    /// DISCONNECT, with the receipt it asked for.
    Disconnected { receipt: Option<String> },
    /// The client closed its side.
    Closed,
}

/// An error that ends the session, and the receipt of the frame that
/// caused it.
struct Failure {
    error: SessionError,
    receipt: Option<String>,
}

impl From<SessionError> for Failure {
    fn from(error: SessionError) -> Self {
        Failure {
            error,
            receipt: None,
        }
    }
}

/// The state of a connected session.
pub(crate) struct Session {
    shared: Arc<Shared>,
    /// 32 hex digits, unique; names the session in CONNECTED and logs.
    id: String,
    peer: SocketAddr,
    namespace: Option<String>,
    caller: Caller,
    subscriptions: HashMap<String, Subscription>,
    transactions: HashMap<String, Transaction>,
    /// The last subscription serial given out.
    last_serial: u64,
    /// The last message number given out (MESSAGE `message-id`).
    last_message: u64,
    events: mpsc::Sender<Event>,
    routes: handlers::Routes,
}

/// Serves one accepted connection until it ends.
pub(crate) async fn run(
    socket: ClientStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let limits = &shared.config.limits;
    let mut connection = Connection::new(socket, limits.write_timeout);
    let first = tokio::select! {
        biased;
        () = shutdown.cancelled() => Err(SessionError::ShuttingDown),
        read = tokio::time::timeout(limits.connect_timeout, connection.read_frame(limits)) => {
            read.unwrap_or(Err(SessionError::ConnectTimeout {
                waited_ms: u64::try_from(limits.connect_timeout.as_millis()).unwrap_or(u64::MAX),
            }))
        }
    };
    let frame = match first {
        Ok(Some(frame)) => frame,
        Ok(None) => return,
        Err(error) => {
            tracing::debug!(%peer, error = %meridian_report::Report(&error), "STOMP connection refused");
            connection.fail(&error, None).await;
            return;
        }
    };
    let receipt = frame.header("receipt").map(str::to_owned);
    let (session, heart_beats, mut events) = match Session::accept(&frame, peer, &shared) {
        Ok(accepted) => accepted,
        Err(error) => {
            if matches!(error, SessionError::AuthenticationFailed { .. }) {
                tracing::info!(%peer, error = %error, "STOMP connection refused");
            } else {
                tracing::debug!(%peer, error = %meridian_report::Report(&error), "STOMP connection refused");
            }
            connection.fail(&error, receipt.as_deref()).await;
            return;
        }
    };
    let span = tracing::debug_span!("stomp", session = %session.id, %peer);
    tracing::Instrument::instrument(
        session.serve(connection, heart_beats, &mut events, shutdown),
        span,
    )
    .await;
}

impl Session {
    /// Checks a CONNECT (or STOMP) frame: version, credentials, heart-beat.
    fn accept(
        frame: &Frame,
        peer: SocketAddr,
        shared: &Arc<Shared>,
    ) -> Result<(Session, HeartBeats, mpsc::Receiver<Event>), SessionError> {
        let command = frame.command;
        if !matches!(command, Command::Connect | Command::Stomp) {
            return Err(SessionError::NotConnected { command });
        }
        let accepted = frame.header("accept-version");
        if !accepted
            .is_some_and(|versions| versions.split(',').any(|version| version.trim() == "1.2"))
        {
            return Err(SessionError::UnsupportedVersion {
                accepted: accepted
                    .unwrap_or("1.0 (no accept-version header)")
                    .chars()
                    .take(80)
                    .collect(),
            });
        }
        let mut access_key = None;
        if let Some(keys) = shared.config.authentication.keys() {
            let login = frame.header("login").unwrap_or_default();
            let passcode = frame.header("passcode").unwrap_or_default();
            let known = keys
                .secret(login)
                .is_some_and(|secret| same_secret(secret, passcode));
            if !known {
                return Err(SessionError::AuthenticationFailed {
                    login: login.chars().take(80).collect(),
                });
            }
            access_key = Some(login.to_owned());
        }
        let offered = frame.header("heart-beat");
        let client = heartbeat::parse(offered).ok_or_else(|| SessionError::InvalidHeader {
            command,
            header: "heart-beat",
            value: offered.unwrap_or_default().chars().take(80).collect(),
            expected: "two numbers of milliseconds, such as 10000,10000".to_owned(),
        })?;
        let limits = &shared.config.limits;
        let server = heartbeat::offer(limits.heart_beat_send, limits.heart_beat_receive);
        let heart_beats = heartbeat::negotiate(client, server);
        let id = format!("{:x}", uuid::Uuid::now_v7().simple());
        let (events, receiver) = mpsc::channel(EVENT_QUEUE);
        let session = Session {
            shared: Arc::clone(shared),
            namespace: crate::destination::namespace_of_host(frame.header("host")),
            caller: Caller::other(format!("stomp-{id}")).with_access_key(access_key),
            id,
            peer,
            subscriptions: HashMap::new(),
            transactions: HashMap::new(),
            last_serial: 0,
            last_message: 0,
            events,
            routes: handlers::Routes::default(),
        };
        Ok((session, heart_beats, receiver))
    }

    fn connected_frame(&self) -> Frame {
        let limits = &self.shared.config.limits;
        let (send, receive) = heartbeat::offer(limits.heart_beat_send, limits.heart_beat_receive);
        Frame::new(Command::Connected)
            .with_header("version", "1.2")
            .with_header("heart-beat", format!("{send},{receive}"))
            .with_header("server", crate::SERVER_NAME)
            .with_header("session", self.id.clone())
    }

    /// Runs the connected session to its end, then ends its subscriptions.
    async fn serve(
        mut self,
        mut connection: Connection,
        heart_beats: HeartBeats,
        events: &mut mpsc::Receiver<Event>,
        shutdown: CancellationToken,
    ) {
        tracing::debug!(namespace = ?self.namespace, "STOMP client connected");
        let connected = self.connected_frame();
        let outcome = match connection.writer.send(&connected).await {
            Ok(()) => {
                self.main_loop(&mut connection, heart_beats, events, &shutdown)
                    .await
            }
            Err(error) => Err(Failure::from(error)),
        };
        match outcome {
            Ok(Ending::Disconnected { receipt }) => {
                self.end(events).await;
                if let Some(receipt) = receipt {
                    let _ = connection.writer.send(&receipt_frame(&receipt)).await;
                }
                connection.close().await;
                tracing::debug!("STOMP client disconnected");
            }
            Ok(Ending::Closed) => {
                connection.close().await;
                self.end(events).await;
                tracing::debug!("STOMP client closed the connection");
            }
            Err(Failure { error, receipt }) => {
                tracing::debug!(error = %meridian_report::Report(&error), "STOMP session ended");
                connection.fail(&error, receipt.as_deref()).await;
                self.end(events).await;
            }
        }
    }

    async fn main_loop(
        &mut self,
        connection: &mut Connection,
        heart_beats: HeartBeats,
        events: &mut mpsc::Receiver<Event>,
        shutdown: &CancellationToken,
    ) -> Result<Ending, Failure> {
        let shared = Arc::clone(&self.shared);
        let limits = &shared.config.limits;
        loop {
            while let Some(frame) = connection.next_frame(limits)? {
                let receipt = frame.header("receipt").map(str::to_owned);
                match self.handle(&frame).await {
                    Ok(Flow::Continue) => {
                        if let Some(receipt) = &receipt {
                            connection.writer.send(&receipt_frame(receipt)).await?;
                        }
                    }
                    Ok(Flow::Disconnect) => return Ok(Ending::Disconnected { receipt }),
                    Err(error) => return Err(Failure { error, receipt }),
                }
            }
            if shutdown.is_cancelled() {
                return Err(SessionError::ShuttingDown.into());
            }
            let heart_beat_due = heart_beats
                .send_every
                .map(|every| connection.writer.last_write + every);
            let silent_since = connection.last_read;
            let silence_ends = heart_beats.silence_limit.map(|limit| silent_since + limit);
            tokio::select! {
                () = shutdown.cancelled() => return Err(SessionError::ShuttingDown.into()),
                more = connection.read_more() => {
                    if !more? {
                        return Ok(Ending::Closed);
                    }
                }
                Some(event) = events.recv() => self.on_event(event, connection).await?,
                () = sleep_until(heart_beat_due) => connection.writer.heart_beat().await?,
                () = sleep_until(silence_ends) => match connection.read_ready()? {
                    Some(true) => {}
                    Some(false) => return Ok(Ending::Closed),
                    None => {
                        let silent_ms = u64::try_from(silent_since.elapsed().as_millis())
                            .unwrap_or(u64::MAX);
                        return Err(SessionError::HeartBeatTimeout { silent_ms }.into());
                    }
                },
            }
        }
    }

    /// Handles one client frame (after CONNECT).
    async fn handle(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        match frame.command {
            Command::Send => self.on_send(frame).await?,
            Command::Subscribe => self.on_subscribe(frame).await?,
            Command::Unsubscribe => self.on_unsubscribe(frame).await?,
            Command::Ack | Command::Nack => self.on_settle(frame).await?,
            Command::Begin => self.on_begin(frame)?,
            Command::Commit => self.on_commit(frame).await?,
            Command::Abort => self.on_abort(frame)?,
            Command::Disconnect => return Ok(Flow::Disconnect),
            command @ (Command::Connect | Command::Stomp) => {
                return Err(SessionError::AlreadyConnected { command });
            }
            command @ (Command::Connected
            | Command::Message
            | Command::Receipt
            | Command::Error) => return Err(SessionError::ServerFrame { command }),
        }
        Ok(Flow::Continue)
    }

    /// Ends every subscription and drops the transactions, within
    /// [`CLEANUP_TIMEOUT`] (receive tasks left are aborted).
    async fn end(&mut self, events: &mut mpsc::Receiver<Event>) {
        self.transactions.clear();
        let backend = Arc::clone(&self.shared.backend);
        let subscriptions: Vec<Subscription> = self
            .subscriptions
            .drain()
            .map(|(_, subscription)| subscription)
            .collect();
        let ended = tokio::time::timeout(CLEANUP_TIMEOUT, async {
            futures::future::join_all(
                subscriptions
                    .into_iter()
                    .map(|subscription| subscription.stop(backend.as_ref())),
            )
            .await;
            // Batches handed over but never delivered.
            events.close();
            while let Ok(event) = events.try_recv() {
                if let Event::Delivered { spec, messages } = event {
                    handlers::release_stale(backend.as_ref(), &spec, messages).await;
                }
            }
        })
        .await;
        if ended.is_err() {
            tracing::warn!(
                timeout_ms = u64::try_from(CLEANUP_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
                "ending a STOMP session's subscriptions took too long; the messages they held \
                 return after their ack timeout"
            );
        }
    }
}

fn receipt_frame(receipt: &str) -> Frame {
    Frame::new(Command::Receipt).with_header("receipt-id", receipt)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Compares a secret with what the client sent in time independent of
/// where they differ.
fn same_secret(secret: &str, offered: &str) -> bool {
    let (secret, offered) = (secret.as_bytes(), offered.as_bytes());
    let mut difference = u8::from(secret.len() != offered.len());
    for (index, byte) in secret.iter().enumerate() {
        difference |= byte ^ offered.get(index).copied().unwrap_or(!byte);
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_compare_whole() {
        assert!(super::same_secret("s3cret", "s3cret"));
        assert!(!super::same_secret("s3cret", "s3cre"));
        assert!(!super::same_secret("s3cret", "s3cret!"));
        assert!(!super::same_secret("s3cret", "S3cret"));
        assert!(!super::same_secret("s3cret", ""));
        assert!(super::same_secret("", ""));
    }
}
