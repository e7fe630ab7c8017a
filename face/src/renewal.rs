//! Automatic renewal of push consumers' invisibility: what a receive with
//! `auto_renew = true` asks for (shared/protocols/rocketmq-grpc.md, "Push
//! consumers": the server applies a default invisible time and renews it
//! while the client is alive).
//!
//! The face keeps a lease per message handed out by such a receive, keyed by
//! the receipt handle the client holds. Shortly before the message's
//! invisibility ends, the face extends it through its backend's
//! ChangeInvisibleDuration, which issues a new handle; the lease remembers
//! it, and the client's later ack, nack or dead-letter forward is given the
//! newest handle in place of the one it holds, as the reference proxy does.
//! So node and router behave the same: a client connected to a router in
//! proxy mode has its leases in the router, which renews through the node.
//!
//! Renewal stops, and the message becomes visible again when its current
//! invisibility ends, once the client acknowledges or changes the message
//! itself, sends NotifyClientTermination, has not been heard from for
//! [`CLIENT_IDLE`] (every official client sends Heartbeat every 10 s), or
//! has held the message for [`MAX_RENEWAL`], or once the backend refuses a
//! renewal for good (the message was redelivered or finished elsewhere); a
//! renewal that times out or meets a busy or unreachable node is tried
//! again at the next look. Leases live in memory: after a
//! restart of the process holding them, a renewed message's original handle
//! no longer matches and the message is delivered again once its last
//! renewal runs out (at-least-once, never lost).

use crate::{Backend, Caller};
use meridian_proto::rocketmq::v2::{ChangeInvisibleDurationRequest, Code, Resource};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a client may go without a Heartbeat or receive before its
/// messages are no longer renewed: three missed heartbeats of the official
/// clients (every 10 s).
pub const CLIENT_IDLE: Duration = Duration::from_secs(30);
/// How long after its receive a message is renewed at most; then it
/// becomes visible again when its invisibility ends (a redelivery).
pub const MAX_RENEWAL: Duration = Duration::from_secs(60 * 60);
/// Messages under renewal at most per face; deliveries beyond are not
/// renewed (their invisibility ends as a receive without auto-renewal's).
pub const MAX_LEASES: usize = 100_000;
/// How often leases are looked at.
const TICK: Duration = Duration::from_millis(250);
/// Renewals in flight at once.
const CONCURRENT_RENEWALS: usize = 16;
/// How long one renewal may take before it is tried again later.
const RENEWAL_TIMEOUT: Duration = Duration::from_secs(2);

/// One message handed out with `auto_renew`.
#[derive(Debug)]
pub(crate) struct Lease {
    /// The receipt handle the client holds (the lease's key).
    original: String,
    group: Resource,
    topic: Resource,
    message_id: String,
    /// The delivery attempt (1 for the first delivery).
    attempt: u32,
    /// The newest receipt handle of the delivery.
    current: String,
    /// Each renewal makes the message invisible for this long.
    slice: Duration,
    /// No renewal after this.
    until: Instant,
    /// Acknowledged, changed or given up: never renewed again.
    finished: bool,
    /// The access key of the client that received it (renewals act for it).
    access_key: Option<String>,
}

/// A lease and what the scan needs without locking it.
#[derive(Debug)]
struct Entry {
    client_id: String,
    /// When to renew next.
    renew_at: Instant,
    lease: Arc<tokio::sync::Mutex<Lease>>,
}

#[derive(Debug, Default)]
struct State {
    /// By the receipt handle the client holds (its first).
    leases: HashMap<String, Entry>,
    /// When each client was last heard from.
    clients: HashMap<String, Instant>,
}

/// The leases of one face.
#[derive(Debug, Default)]
pub(crate) struct Renewals {
    state: Mutex<State>,
}

/// A message a receive hands out with `auto_renew`.
pub(crate) struct Handed<'a> {
    pub group: &'a Resource,
    pub topic: &'a Resource,
    pub message_id: &'a str,
    pub receipt_handle: &'a str,
    /// `delivery_attempt` of the message (1 for the first delivery).
    pub attempt: u32,
    pub invisible: Duration,
    /// The access key of the receiving client.
    pub access_key: Option<&'a str>,
}

/// The leases of the handles a request names, locked: each request entry's
/// handle is replaced by its newest; [`Held::settle`] ends the leases.
pub(crate) struct Held {
    guards: Vec<Option<(String, tokio::sync::OwnedMutexGuard<Lease>)>>,
}

impl Renewals {
    /// Notes that `client_id` is alive at `now`.
    pub fn seen(&self, client_id: &str, now: Instant) {
        let mut state = self.state.lock();
        match state.clients.get_mut(client_id) {
            Some(seen) => *seen = now,
            None => {
                state.clients.insert(client_id.to_owned(), now);
            }
        }
    }

    /// Stops renewing `client_id`'s messages (it said it terminates).
    pub fn forget_client(&self, client_id: &str) {
        let mut state = self.state.lock();
        state.clients.remove(client_id);
        let before = state.leases.len();
        state.leases.retain(|_, entry| entry.client_id != client_id);
        let dropped = before - state.leases.len();
        if dropped > 0 {
            debug!(
                client_id,
                dropped, "client terminated: its messages are no longer renewed"
            );
        }
    }

    /// Starts renewing messages `client_id` received with `auto_renew` at `now`.
    pub fn lease(&self, client_id: &str, handed: &[Handed<'_>], now: Instant) {
        let mut state = self.state.lock();
        state.clients.insert(client_id.to_owned(), now);
        for message in handed {
            if state.leases.contains_key(message.receipt_handle) {
                // A retried receive (same attempt id) got the same answer.
                continue;
            }
            if state.leases.len() >= MAX_LEASES {
                warn!(
                    client_id,
                    limit = MAX_LEASES,
                    "too many messages under automatic renewal: this one is not renewed"
                );
                continue;
            }
            let lease = Lease {
                original: message.receipt_handle.to_owned(),
                group: message.group.clone(),
                topic: message.topic.clone(),
                message_id: message.message_id.to_owned(),
                attempt: message.attempt,
                current: message.receipt_handle.to_owned(),
                slice: message.invisible,
                until: now + MAX_RENEWAL,
                finished: false,
                access_key: message.access_key.map(str::to_owned),
            };
            state.leases.insert(
                message.receipt_handle.to_owned(),
                Entry {
                    client_id: client_id.to_owned(),
                    renew_at: now + message.invisible / 2,
                    lease: Arc::new(tokio::sync::Mutex::new(lease)),
                },
            );
        }
    }

    /// Locks the leases of `handles` (waiting for a renewal in flight) and
    /// replaces each handle under renewal by its newest.
    pub async fn hold(&self, handles: &mut [&mut String]) -> Held {
        let leases: Vec<Option<Arc<tokio::sync::Mutex<Lease>>>> = {
            let state = self.state.lock();
            handles
                .iter()
                .map(|handle| {
                    state
                        .leases
                        .get(handle.as_str())
                        .map(|entry| Arc::clone(&entry.lease))
                })
                .collect()
        };
        let mut guards = Vec::with_capacity(leases.len());
        for (handle, lease) in handles.iter_mut().zip(leases) {
            let Some(lease) = lease else {
                guards.push(None);
                continue;
            };
            let guard = lease.lock_owned().await;
            let original = std::mem::replace(&mut **handle, guard.current.clone());
            guards.push(Some((original, guard)));
        }
        Held { guards }
    }

    /// One scan: what is due for renewal (client id and lease); drops the
    /// leases of clients no longer heard from.
    fn due(&self, now: Instant) -> Vec<(String, Arc<tokio::sync::Mutex<Lease>>)> {
        let mut state = self.state.lock();
        let State { leases, clients } = &mut *state;
        clients.retain(|_, seen| now.duration_since(*seen) < CLIENT_IDLE);
        leases.retain(|_, entry| clients.contains_key(&entry.client_id));
        let mut due = Vec::new();
        for entry in leases.values_mut() {
            if entry.renew_at <= now {
                // Not picked again while this renewal runs.
                entry.renew_at = now + MAX_RENEWAL;
                due.push((entry.client_id.clone(), Arc::clone(&entry.lease)));
            }
        }
        due
    }

    fn reschedule(&self, original: &str, renew_at: Instant) {
        if let Some(entry) = self.state.lock().leases.get_mut(original) {
            entry.renew_at = renew_at;
        }
    }

    fn remove(&self, original: &str) {
        self.state.lock().leases.remove(original);
    }
}

impl Held {
    /// The delivery attempt of the `index`th handle if it is under renewal
    /// (handed to a push consumer), else `None`.
    pub fn attempt(&self, index: usize) -> Option<u32> {
        self.guards
            .get(index)
            .and_then(Option::as_ref)
            .map(|(_, lease)| lease.attempt)
    }

    /// Ends the leases whose request entry succeeded or whose handle the
    /// backend no longer knows (acknowledged, changed, forwarded: never
    /// renewed again); keeps the others for the client's retry.
    /// `outcomes` has one entry per handle, in order.
    pub fn settle(self, renewals: &Renewals, outcomes: &[Result<(), Code>]) {
        for (held, outcome) in self.guards.into_iter().zip(outcomes) {
            let Some((original, mut guard)) = held else {
                continue;
            };
            if matches!(outcome, Ok(()) | Err(Code::InvalidReceiptHandle)) {
                guard.finished = true;
                renewals.remove(&original);
            }
        }
    }
}

/// Renews leases until `stop`.
pub(crate) async fn run<B: Backend>(
    renewals: Arc<Renewals>,
    backend: Arc<B>,
    stop: CancellationToken,
) {
    use futures::StreamExt as _;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let due = renewals.due(Instant::now());
        futures::stream::iter(due)
            .for_each_concurrent(CONCURRENT_RENEWALS, |(client_id, lease)| {
                renew(&renewals, backend.as_ref(), client_id, lease)
            })
            .await;
    }
}

/// Extends one message's invisibility by its slice.
async fn renew<B: Backend>(
    renewals: &Renewals,
    backend: &B,
    client_id: String,
    lease: Arc<tokio::sync::Mutex<Lease>>,
) {
    let mut guard = lease.lock().await;
    let original = guard.original.clone();
    let now = Instant::now();
    if guard.finished || now >= guard.until {
        if !guard.finished {
            debug!(
                message_id = guard.message_id,
                "message held for the longest renewal: it becomes visible when its invisibility ends"
            );
        }
        guard.finished = true;
        renewals.remove(&original);
        return;
    }
    let request = ChangeInvisibleDurationRequest {
        group: Some(guard.group.clone()),
        topic: Some(guard.topic.clone()),
        receipt_handle: guard.current.clone(),
        invisible_duration: Some(crate::service::proto_duration(guard.slice)),
        message_id: guard.message_id.clone(),
        ..ChangeInvisibleDurationRequest::default()
    };
    let caller = Caller {
        client_id,
        language: String::new(),
        remaining: None,
        subscription: None,
        access_key: guard.access_key.clone(),
    };
    let renewed = tokio::time::timeout(
        RENEWAL_TIMEOUT,
        backend.change_invisible_duration(&caller, request),
    )
    .await;
    match renewed {
        Ok(Ok(handle)) => {
            debug!(
                message_id = guard.message_id,
                "message invisibility renewed"
            );
            guard.current = handle;
            renewals.reschedule(&original, now + guard.slice / 2);
        }
        Ok(Err(refusal)) if !is_transient(refusal.code) => {
            debug!(
                message_id = guard.message_id,
                %refusal,
                "renewal refused: the message is no longer renewed"
            );
            guard.finished = true;
            renewals.remove(&original);
        }
        // The node did not answer in time or is briefly unavailable: try
        // again at the next look (if the invisibility runs out meanwhile,
        // the next try is refused and the lease ends).
        Ok(Err(_)) | Err(_) => {
            debug!(
                message_id = guard.message_id,
                "renewal failed for now; trying again"
            );
            renewals.reschedule(&original, Instant::now() + TICK);
        }
    }
}

/// Whether a refused renewal may work when tried again (the node is busy,
/// down or restarting), as opposed to a message that is gone or changed.
fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::RequestTimeout
            | Code::TooManyRequests
            | Code::InternalError
            | Code::InternalServerError
            | Code::ProxyTimeout
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(name: &str) -> Resource {
        Resource {
            name: name.to_owned(),
            ..Resource::default()
        }
    }

    fn hand(renewals: &Renewals, client: &str, handle: &str, now: Instant) {
        let (group, topic) = (resource("g"), resource("t"));
        renewals.lease(
            client,
            &[Handed {
                group: &group,
                topic: &topic,
                message_id: "id",
                receipt_handle: handle,
                attempt: 1,
                invisible: Duration::from_secs(10),
                access_key: None,
            }],
            now,
        );
    }

    #[test]
    fn leases_come_due_at_half_their_slice_and_only_once() {
        let renewals = Renewals::default();
        let start = Instant::now();
        hand(&renewals, "c1", "h1", start);
        assert!(renewals.due(start).is_empty());
        let later = start + Duration::from_secs(5);
        renewals.seen("c1", later);
        assert_eq!(renewals.due(later).len(), 1);
        assert!(renewals.due(later).is_empty(), "picked once");
    }

    #[test]
    fn idle_or_terminated_clients_lose_their_leases() {
        let renewals = Renewals::default();
        let start = Instant::now();
        hand(&renewals, "idle", "h1", start);
        hand(&renewals, "gone", "h2", start);
        hand(&renewals, "alive", "h3", start);
        renewals.forget_client("gone");
        let later = start + CLIENT_IDLE;
        renewals.seen("alive", later);
        let due = renewals.due(later);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, "alive");
        assert_eq!(renewals.state.lock().leases.len(), 1);
    }

    #[tokio::test]
    async fn held_handles_are_replaced_by_the_newest_and_settled_leases_end() {
        let renewals = Renewals::default();
        let start = Instant::now();
        hand(&renewals, "c1", "h1", start);
        let lease = renewals.due(start + Duration::from_secs(5))[0].1.clone();
        lease.lock().await.current = "h1-renewed".to_owned();
        let mut handle = "h1".to_owned();
        let mut unknown = "other".to_owned();
        let held = renewals.hold(&mut [&mut handle, &mut unknown]).await;
        assert_eq!(handle, "h1-renewed");
        assert_eq!(unknown, "other");
        assert_eq!((held.attempt(0), held.attempt(1)), (Some(1), None));
        held.settle(&renewals, &[Ok(()), Ok(())]);
        assert!(renewals.state.lock().leases.is_empty());
        assert!(lease.lock().await.finished);
    }

    #[test]
    fn only_busy_or_unreachable_answers_are_retried() {
        assert!(is_transient(Code::ProxyTimeout));
        assert!(is_transient(Code::InternalError));
        assert!(!is_transient(Code::InvalidReceiptHandle));
        assert!(!is_transient(Code::IllegalInvisibleTime));
    }

    #[tokio::test]
    async fn a_failed_ack_keeps_the_lease_for_the_retry() {
        let renewals = Renewals::default();
        hand(&renewals, "c1", "h1", Instant::now());
        let mut handle = "h1".to_owned();
        let held = renewals.hold(&mut [&mut handle]).await;
        held.settle(&renewals, &[Err(Code::InternalError)]);
        assert_eq!(renewals.state.lock().leases.len(), 1);
    }
}
