//! Why a STOMP session ends, and the one place that turns it into the ERROR
//! frame the client receives ([`SessionError::to_frame`]).

use crate::frame::{Command, Frame, FrameError};
use meridian_face::Refusal;

/// What ends a session with an ERROR frame (or, for I/O errors, without
/// one). STOMP has no recoverable errors: after an ERROR the server closes
/// the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("connect: no CONNECT or STOMP frame within {waited_ms} ms")]
    ConnectTimeout { waited_ms: u64 },
    #[error("connect: the first frame must be CONNECT or STOMP, not {command}")]
    NotConnected { command: Command },
    #[error("connect: this server speaks STOMP 1.2 only, the client accepts {accepted:?}")]
    UnsupportedVersion { accepted: String },
    #[error("authentication failed: unknown login {login:?} or wrong passcode")]
    AuthenticationFailed { login: String },
    #[error("{command}: the connection is already established")]
    AlreadyConnected { command: Command },
    #[error("{command}: a client may not send this frame")]
    ServerFrame { command: Command },
    #[error("{command}: the {header} header is required")]
    MissingHeader {
        command: Command,
        header: &'static str,
    },
    #[error("{command}: header {header}:{value} is invalid: {expected}")]
    InvalidHeader {
        command: Command,
        header: &'static str,
        value: String,
        expected: String,
    },
    #[error("{command}: destination {destination:?} is invalid: {reason}")]
    BadDestination {
        command: Command,
        destination: String,
        reason: &'static str,
    },
    #[error("SEND: the body of {length} bytes is larger than the {limit} bytes a message may have")]
    BodyTooLarge { length: usize, limit: usize },
    #[error("SUBSCRIBE: subscription id {id:?} is already in use on this connection")]
    DuplicateSubscription { id: String },
    #[error("SUBSCRIBE: at most {limit} subscriptions per connection")]
    TooManySubscriptions { limit: usize },
    #[error("UNSUBSCRIBE: no subscription with id {id:?}")]
    UnknownSubscription { id: String },
    #[error(
        "{command}: message {id:?} is not awaiting an acknowledgement on this connection \
         (unknown, already settled, or from an auto-ack subscription)"
    )]
    UnknownMessage { command: Command, id: String },
    #[error("{command}: no open transaction {transaction:?}")]
    UnknownTransaction {
        command: Command,
        transaction: String,
    },
    #[error("BEGIN: transaction {transaction:?} is already open")]
    DuplicateTransaction { transaction: String },
    #[error("BEGIN: at most {limit} transactions may be open at once")]
    TooManyTransactions { limit: usize },
    #[error(
        "{command}: transaction {transaction:?} would hold more than {max_frames} frames or \
         {max_bytes} body bytes"
    )]
    TransactionTooLarge {
        command: Command,
        transaction: String,
        max_frames: usize,
        max_bytes: usize,
    },
    /// The backend refused what the client asked for.
    #[error("{action} refused: {code}: {message}", code = refusal.code.as_str_name(), message = refusal.message)]
    Refused {
        /// What was refused, such as `SEND to topic demo`.
        action: String,
        refusal: Refusal,
    },
    #[error("no heart-beat or frame from the client for {silent_ms} ms")]
    HeartBeatTimeout { silent_ms: u64 },
    #[error("server shutting down")]
    ShuttingDown,
    #[error("{reason}; try again later")]
    ConnectionRefused {
        reason: meridian_face::accept::Refused,
    },
    #[error("this port takes STOMP over TLS only; connect with TLS")]
    PlainTextToTlsPort,
    #[error("write to the client: no progress within {waited_ms} ms")]
    WriteTimeout { waited_ms: u64 },
    #[error("connection: {action}")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl SessionError {
    /// Whether the client can still be told (an ERROR frame is worth
    /// writing).
    pub(crate) fn is_reportable(&self) -> bool {
        !matches!(
            self,
            SessionError::Io { .. } | SessionError::WriteTimeout { .. }
        )
    }

    /// The ERROR frame: `message` is the one-line reason, the body its
    /// full explanation; `receipt-id` if the failed frame asked for a
    /// receipt.
    pub(crate) fn to_frame(&self, receipt: Option<&str>) -> Frame {
        let mut body = meridian_report::chain(self);
        body.push('\n');
        let mut frame = Frame::new(Command::Error).with_header("message", self.to_string());
        if let Some(receipt) = receipt {
            frame = frame.with_header("receipt-id", receipt);
        }
        frame
            .with_header("content-type", "text/plain")
            .with_header("content-length", body.len().to_string())
            .with_body(body)
    }
}
