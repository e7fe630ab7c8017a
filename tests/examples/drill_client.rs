//! Drill client: an official RocketMQ Rust client (`rocketmq` 5.0.0,
//! unmodified) Producer or SimpleConsumer that runs until told to stop,
//! printing one JSON event per line, for `meridian drill run`.
//!
//! ```sh
//! cargo run -p meridian-tests --example drill_client -- \
//!   --role producer|consumer --endpoints HOST:PORT --topic TOPIC \
//!   [--group drill] [--tag drill] [--interval-ms 100] [--invisible-ms 10000] \
//!   [--batch 16] [--await-ms 2000]
//! ```
//!
//! Events on stdout, each flushed on its own line (nothing else goes to
//! stdout; the client logs to stderr), each with `at_ms`, milliseconds since
//! the program started:
//! - `{"event":"ready","client_id":null}` once started (producer) /
//!   subscribed (this client does not expose its client id; it logs it);
//! - producer, per send: `{"event":"sent","message_id"}` or
//!   `{"event":"send_failed","error"}` (the loop goes on);
//! - consumer, per message received: `{"event":"received","message_id"}`,
//!   then `{"event":"acked","message_id"}` or
//!   `{"event":"ack_failed","message_id","error"}`; a failed receive:
//!   `{"event":"receive_failed","error"}`, retried after 100 ms;
//! - `{"event":"stopped"}` after the shutdown (exit 0);
//! - `{"event":"failed","error"}` when the client cannot start (exit 1) or
//!   the arguments are wrong (exit 2).
//!
//! From the environment (what `meridian drill run` sets for a deployment
//! with `[access]` or `[client_tls]`): `DRILL_ACCESS_KEY` and
//! `DRILL_SECRET_KEY`, the access key every call is signed with;
//! `DRILL_TLS=1`, dial with TLS, trusting the CA certificates this client
//! reads from `SSL_CERT_FILE` (the runner sets it to the deployment's CA).
//!
//! It stops at end of file on stdin (the drill runner closes it), SIGTERM or
//! SIGINT. A call in flight then is abandoned (dropped; its outcome is not
//! reported), so stopping never waits for a long poll. The producer sends
//! `drill <n>` once per `--interval-ms` (without catching up after a slow
//! send). This client does not retry a send itself; its request timeout
//! stays at the default 3 s.

use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
use rocketmq::error::ClientError;
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use rocketmq::{Producer, SimpleConsumer};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

/// Pause after a failed receive: short, because the drill measures recovery in ms.
const RECEIVE_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// What the server keeps back from a receive's deadline to answer an empty
/// poll in time (region-node's `DEADLINE_MARGIN_MS`); see `client_option`.
const SERVER_DEADLINE_MARGIN: Duration = Duration::from_secs(1);
const USAGE: &str = "usage: drill_client --role producer|consumer --endpoints HOST:PORT \
     --topic TOPIC [--group G] [--tag T] [--interval-ms N] [--invisible-ms N] [--batch N] \
     [--await-ms N]";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Producer,
    Consumer,
}

struct Arguments {
    role: Role,
    /// Access key and secret, from the environment.
    key: Option<(String, String)>,
    /// Dial with TLS, from the environment.
    tls: bool,
    endpoints: String,
    topic: String,
    group: String,
    tag: String,
    interval: Duration,
    invisible: Duration,
    batch: i32,
    await_duration: Duration,
}

fn parse_arguments() -> Result<Arguments, String> {
    let mut role = None;
    let mut endpoints = None;
    let mut topic = None;
    let mut group = "drill".to_owned();
    let mut tag = "drill".to_owned();
    let (mut interval_ms, mut invisible_ms, mut batch, mut await_ms) = (100, 10_000, 16, 2_000);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        let positive = |value: &str| match value.parse::<u32>() {
            Ok(number) if number > 0 => Ok(u64::from(number)),
            _ => Err(format!("{flag} is not a positive integer: {value:?}")),
        };
        match flag.as_str() {
            "--role" => {
                role = Some(match value.as_str() {
                    "producer" => Role::Producer,
                    "consumer" => Role::Consumer,
                    _ => {
                        return Err(format!(
                            "--role must be producer or consumer, not {value:?}"
                        ));
                    }
                });
            }
            "--endpoints" => endpoints = Some(value),
            "--topic" => topic = Some(value),
            "--group" => group = value,
            "--tag" => tag = value,
            "--interval-ms" => interval_ms = positive(&value)?,
            "--invisible-ms" => invisible_ms = positive(&value)?,
            "--batch" => batch = positive(&value)?,
            "--await-ms" => await_ms = positive(&value)?,
            _ => return Err(format!("unknown flag {flag:?}; {USAGE}")),
        }
    }
    let (key, tls) = from_environment()?;
    Ok(Arguments {
        role: role.ok_or_else(|| format!("--role is required; {USAGE}"))?,
        key,
        tls,
        endpoints: endpoints.ok_or_else(|| format!("--endpoints is required; {USAGE}"))?,
        topic: topic.ok_or_else(|| format!("--topic is required; {USAGE}"))?,
        group,
        tag,
        interval: Duration::from_millis(interval_ms),
        invisible: Duration::from_millis(invisible_ms),
        batch: i32::try_from(batch).map_err(|_| format!("--batch is too large: {batch}"))?,
        await_duration: Duration::from_millis(await_ms),
    })
}

/// The access key (`DRILL_ACCESS_KEY`, `DRILL_SECRET_KEY`) and whether to
/// dial with TLS (`DRILL_TLS`: `1` or `0`, unset is `0`).
fn from_environment() -> Result<(Option<(String, String)>, bool), String> {
    let variable = |name: &str| match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not UTF-8 text")),
    };
    let key = match (variable("DRILL_ACCESS_KEY")?, variable("DRILL_SECRET_KEY")?) {
        (Some(access_key), Some(secret)) => Some((access_key, secret)),
        (None, None) => None,
        (Some(_), None) => return Err("DRILL_ACCESS_KEY is set without DRILL_SECRET_KEY".into()),
        (None, Some(_)) => return Err("DRILL_SECRET_KEY is set without DRILL_ACCESS_KEY".into()),
    };
    let tls = match variable("DRILL_TLS")?.as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(other) => return Err(format!("DRILL_TLS must be 1 or 0, not {other:?}")),
    };
    if tls && std::env::var_os("SSL_CERT_FILE").is_none() {
        // Without it the client trusts the system's roots only, which do not
        // hold a deployment's own CA: say so rather than fail every call.
        eprintln!("drill_client: DRILL_TLS=1 without SSL_CERT_FILE: trusting the system's roots");
    }
    Ok((key, tls))
}

/// Writes the events: one JSON object a line, flushed, with `at_ms`.
struct Events {
    started: Instant,
}

impl Events {
    /// Writes `{"event":…, fields…, "at_ms":…}`, in that order (a
    /// `serde_json` map would sort the keys).
    fn emit(&self, event: &str, fields: Value) {
        let mut line = format!("{{\"event\":{}", Value::from(event));
        if let Value::Object(fields) = fields {
            for (name, value) in fields {
                line.push_str(&format!(",{}:{value}", Value::from(name)));
            }
        }
        let at_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        line.push_str(&format!(",\"at_ms\":{at_ms}}}"));
        let mut stdout = std::io::stdout().lock();
        // Nobody left to tell if stdout is gone: the runner stops us next.
        let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    }
}

fn error_text(error: &ClientError) -> String {
    format!("ClientError: {error}")
}

/// Stop requests: end of file on stdin (seen by a thread of its own, since
/// reading stdin blocks), SIGTERM, SIGINT.
struct Stop {
    stdin_closed: watch::Receiver<bool>,
    terminate: Signal,
    interrupt: Signal,
    requested: bool,
}

impl Stop {
    fn watch() -> std::io::Result<Self> {
        let (closed, stdin_closed) = watch::channel(false);
        // Detached on purpose: the process exits without waiting for it
        // when stop came from a signal and stdin is still open.
        std::thread::Builder::new()
            .name("stdin-eof".to_owned())
            .spawn(move || {
                let mut buffer = [0u8; 4096];
                let mut stdin = std::io::stdin().lock();
                while matches!(stdin.read(&mut buffer), Ok(read) if read > 0) {}
                closed.send_replace(true);
            })?;
        Ok(Self {
            stdin_closed,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            requested: false,
        })
    }

    /// Completes once stop is requested (at once if it was before). Cancel
    /// safe, so it can race a client call in `select!`.
    async fn requested(&mut self) {
        if !self.requested {
            tokio::select! {
                _ = self.stdin_closed.wait_for(|closed| *closed) => {}
                _ = self.terminate.recv() => {}
                _ = self.interrupt.recv() => {}
            }
            self.requested = true;
        }
    }

    /// Sleeps until `deadline`; false when stop came first.
    async fn sleep_until(&mut self, deadline: Instant) -> bool {
        tokio::select! {
            biased;
            () = self.requested() => false,
            () = tokio::time::sleep_until(deadline.into()) => true,
        }
    }
}

fn client_option(arguments: &Arguments) -> ClientOption {
    let mut option = ClientOption::default();
    option.set_access_url(arguments.endpoints.as_str());
    option.set_enable_tls(arguments.tls);
    if let Some((access_key, secret)) = &arguments.key {
        option.set_access_key(access_key.as_str());
        option.set_secret_key(secret.as_str());
    }
    // This client uses the long-polling time both as the poll it asks for and
    // as the receive call's deadline; the server polls until one second
    // before that deadline. Asking for --await-ms plus that second makes the
    // server poll for --await-ms.
    option.set_long_polling_timeout(arguments.await_duration + SERVER_DEADLINE_MARGIN);
    option
}

async fn produce(arguments: &Arguments, producer: &Producer, stop: &mut Stop, events: &Events) {
    let mut next_send = Instant::now();
    for index in 0u64.. {
        let message = MessageBuilder::builder()
            .set_topic(arguments.topic.as_str())
            .set_tag(arguments.tag.as_str())
            .set_body(format!("drill {index}").into_bytes())
            .build();
        let outcome = match message {
            Ok(message) => tokio::select! {
                biased;
                () = stop.requested() => return,
                outcome = producer.send(message) => outcome,
            },
            Err(error) => Err(error),
        };
        match outcome {
            Ok(receipt) => events.emit("sent", json!({ "message_id": receipt.message_id() })),
            Err(error) => events.emit("send_failed", json!({ "error": error_text(&error) })),
        }
        next_send = (next_send + arguments.interval).max(Instant::now());
        if !stop.sleep_until(next_send).await {
            return;
        }
    }
}

async fn consume(
    arguments: &Arguments,
    consumer: &SimpleConsumer,
    stop: &mut Stop,
    events: &Events,
) {
    let filter = FilterExpression::new(FilterType::Tag, arguments.tag.as_str());
    loop {
        let outcome = tokio::select! {
            biased;
            () = stop.requested() => return,
            outcome = consumer.receive_with(
                arguments.topic.as_str(),
                &filter,
                arguments.batch,
                arguments.invisible,
            ) => outcome,
        };
        let messages = match outcome {
            Ok(messages) => messages,
            Err(error) => {
                events.emit("receive_failed", json!({ "error": error_text(&error) }));
                if !stop.sleep_until(Instant::now() + RECEIVE_RETRY_PAUSE).await {
                    return;
                }
                continue;
            }
        };
        for message in &messages {
            events.emit("received", json!({ "message_id": message.message_id() }));
        }
        // Acks are short calls: the batch is acked even when stop came meanwhile.
        for message in &messages {
            let message_id = message.message_id();
            match consumer.ack(message).await {
                Ok(()) => events.emit("acked", json!({ "message_id": message_id })),
                Err(error) => events.emit(
                    "ack_failed",
                    json!({ "message_id": message_id, "error": error_text(&error) }),
                ),
            }
        }
    }
}

/// Starts the client (unless stop comes first), runs its loop, shuts it down.
/// Err only when the client could not start.
async fn run(arguments: &Arguments, stop: &mut Stop, events: &Events) -> Result<(), String> {
    let option = client_option(arguments);
    let role = match arguments.role {
        Role::Producer => "producer",
        Role::Consumer => "consumer",
    };
    let start_failed = |error: ClientError| format!("start the {role}: {}", error_text(&error));
    let shutdown_failed = |error: ClientError| {
        eprintln!("drill_client: shut the {role} down: {}", error_text(&error));
    };
    match arguments.role {
        Role::Producer => {
            let mut producer_option = ProducerOption::default();
            producer_option.set_topics(vec![arguments.topic.as_str()]);
            let mut producer = Producer::new(producer_option, option).map_err(start_failed)?;
            tokio::select! {
                biased;
                () = stop.requested() => return Ok(()),
                started = producer.start() => started.map_err(start_failed)?,
            }
            // This client's Producer does not expose its client id.
            events.emit("ready", json!({ "client_id": Value::Null }));
            produce(arguments, &producer, stop, events).await;
            producer.shutdown().await.unwrap_or_else(shutdown_failed);
        }
        Role::Consumer => {
            let mut consumer_option = SimpleConsumerOption::default();
            consumer_option.set_topics(vec![arguments.topic.as_str()]);
            consumer_option.set_consumer_group(arguments.group.as_str());
            let mut consumer =
                SimpleConsumer::new(consumer_option, option).map_err(start_failed)?;
            tokio::select! {
                biased;
                () = stop.requested() => return Ok(()),
                started = consumer.start() => started.map_err(start_failed)?,
            }
            events.emit("ready", json!({ "client_id": Value::Null }));
            consume(arguments, &consumer, stop, events).await;
            consumer.shutdown().await.unwrap_or_else(shutdown_failed);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let events = Events {
        started: Instant::now(),
    };
    let arguments = match parse_arguments() {
        Ok(arguments) => arguments,
        Err(error) => {
            events.emit(
                "failed",
                json!({ "error": format!("bad arguments: {error}") }),
            );
            std::process::exit(2);
        }
    };
    let mut stop = match Stop::watch() {
        Ok(stop) => stop,
        Err(error) => {
            let error = format!("watch stdin and signals: {error}");
            events.emit("failed", json!({ "error": error }));
            std::process::exit(1);
        }
    };
    match run(&arguments, &mut stop, &events).await {
        Ok(()) => events.emit("stopped", json!({})),
        Err(error) => {
            events.emit("failed", json!({ "error": error }));
            std::process::exit(1);
        }
    }
}
