//! The gateway on a loopback port over an in-memory backend, and a raw
//! HTTP/1.1 client (so tests control every byte on the wire: raw targets,
//! `Expect: 100-continue`, garbage).

use meridian_face::access::{AccessKeys, Authentication};
use meridian_face::{Backend, Caller, CheckBack, ReceiveOptions, Refusal, SendReceipt};
use meridian_http::{Config, Limits};
use meridian_proto::rocketmq::v2::{
    AckMessageRequest, Code, EndTransactionRequest, Message, MessageQueue, MessageType, Permission,
    ReceiveMessageRequest, Resource, TransactionResolution,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Every await in the tests is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);

pub const ACCESS_KEY: &str = "ak";
pub const SECRET: &str = "testSecret";

/// Awaits `future`, failing the test after [`STEP`].
pub async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .expect("a step of the test took longer than 10 s")
}

/// One message the fake stores.
#[derive(Debug, Clone)]
struct Stored {
    message: Message,
    group_state: HashMap<String, Delivery>,
}

#[derive(Debug, Clone, Default)]
struct Delivery {
    acked: bool,
    attempts: i32,
    invisible_until: Option<Instant>,
}

#[derive(Default)]
struct State {
    messages: Vec<Stored>,
    /// Receipt handle → (group, message index).
    handles: HashMap<String, (String, usize)>,
    /// Transaction id → half message.
    half: HashMap<String, Message>,
    next_transaction: u64,
    sent: Vec<Message>,
    receives: Vec<(ReceiveMessageRequest, ReceiveOptions)>,
    ends: Vec<EndTransactionRequest>,
    callers: Vec<String>,
    route_calls: usize,
}

/// An in-memory backend: topics `T1`, `MQ_INST_1%T1`, `demo` with 4
/// queues; group `missing` does not exist.
#[derive(Default)]
pub struct Fake {
    state: Mutex<State>,
    stored: Notify,
    pub receive_started: Notify,
}

const TOPICS: [&str; 3] = ["T1", "MQ_INST_1%T1", "demo"];

fn known(topic: Option<&Resource>) -> Result<String, Refusal> {
    let name = topic.map(|topic| topic.name.clone()).unwrap_or_default();
    if TOPICS.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(Refusal::new(
            Code::TopicNotFound,
            format!("topic `{name}` does not exist"),
        ))
    }
}

fn tag_matches(expression: &str, message: &Message) -> bool {
    let tag = message
        .system_properties
        .as_ref()
        .and_then(|system| system.tag.as_deref())
        .unwrap_or_default();
    expression.trim() == "*" || expression.split("||").any(|wanted| wanted.trim() == tag)
}

impl Fake {
    pub fn sent(&self) -> Vec<Message> {
        self.state.lock().sent.clone()
    }

    pub fn receives(&self) -> Vec<(ReceiveMessageRequest, ReceiveOptions)> {
        self.state.lock().receives.clone()
    }

    pub fn ends(&self) -> Vec<EndTransactionRequest> {
        self.state.lock().ends.clone()
    }

    pub fn callers(&self) -> Vec<String> {
        self.state.lock().callers.clone()
    }

    pub fn route_calls(&self) -> usize {
        self.state.lock().route_calls
    }

    fn note(&self, caller: &Caller) {
        self.state.lock().callers.push(caller.client_id.clone());
    }

    fn take_visible(&self, request: &ReceiveMessageRequest) -> Vec<Message> {
        let group = request.group.clone().unwrap_or_default().name;
        let expression = request
            .filter_expression
            .as_ref()
            .map_or("*".to_owned(), |filter| filter.expression.clone());
        let invisible = request
            .invisible_duration
            .as_ref()
            .map_or(Duration::from_secs(30), |duration| {
                Duration::from_secs(u64::try_from(duration.seconds).unwrap_or(0))
            });
        let topic = request
            .message_queue
            .as_ref()
            .and_then(|queue| queue.topic.as_ref())
            .map(|topic| topic.name.clone())
            .unwrap_or_default();
        let batch = usize::try_from(request.batch_size).unwrap_or(1);
        let now = Instant::now();
        let mut state = self.state.lock();
        let mut found = Vec::new();
        let mut handles = Vec::new();
        for (index, stored) in state.messages.iter_mut().enumerate() {
            if found.len() >= batch {
                break;
            }
            let same_topic = stored
                .message
                .topic
                .as_ref()
                .is_some_and(|resource| resource.name == topic);
            if !same_topic || !tag_matches(&expression, &stored.message) {
                continue;
            }
            let delivery = stored.group_state.entry(group.clone()).or_default();
            if delivery.acked || delivery.invisible_until.is_some_and(|until| until > now) {
                continue;
            }
            delivery.attempts += 1;
            delivery.invisible_until = Some(now + invisible);
            let handle = format!("h-{group}-{index}-{}", delivery.attempts);
            let mut message = stored.message.clone();
            if let Some(system) = message.system_properties.as_mut() {
                system.receipt_handle = Some(handle.clone());
                system.delivery_attempt = Some(delivery.attempts);
            }
            handles.push((handle, (group.clone(), index)));
            found.push(message);
        }
        state.handles.extend(handles);
        found
    }
}

#[tonic::async_trait]
impl Backend for Fake {
    fn unserved_hint(&self) -> &'static str {
        "a test fake"
    }

    fn group_policy(&self, _group: &str) -> meridian_topology::Group {
        meridian_topology::Group::default()
    }

    async fn route(
        &self,
        caller: &Caller,
        _rpc: &'static str,
        topic: Option<&Resource>,
    ) -> Result<Vec<MessageQueue>, Refusal> {
        self.note(caller);
        self.state.lock().route_calls += 1;
        known(topic)?;
        Ok((0..4)
            .map(|id| MessageQueue {
                topic: topic.cloned(),
                id,
                permission: Permission::ReadWrite as i32,
                ..MessageQueue::default()
            })
            .collect())
    }

    async fn send(
        &self,
        caller: &Caller,
        messages: Vec<Message>,
    ) -> Vec<Result<SendReceipt, Refusal>> {
        self.note(caller);
        let outcomes = messages
            .into_iter()
            .map(|message| {
                known(message.topic.as_ref())?;
                let mut state = self.state.lock();
                state.sent.push(message.clone());
                let system = message.system_properties.clone().unwrap_or_default();
                let mut receipt = SendReceipt {
                    message_id: system.message_id.clone(),
                    offset: i64::try_from(state.messages.len()).unwrap_or(0),
                    transaction_id: String::new(),
                };
                if system.message_type() == MessageType::Transaction {
                    state.next_transaction += 1;
                    receipt.transaction_id = format!("t1.test.{}", state.next_transaction);
                    state.half.insert(receipt.transaction_id.clone(), message);
                } else {
                    state.messages.push(Stored {
                        message,
                        group_state: HashMap::new(),
                    });
                }
                Ok(receipt)
            })
            .collect();
        self.stored.notify_waiters();
        outcomes
    }

    async fn receive(
        &self,
        caller: &Caller,
        request: ReceiveMessageRequest,
    ) -> Result<Vec<Message>, Refusal> {
        self.receive_with(caller, request, ReceiveOptions::default())
            .await
    }

    async fn receive_with(
        &self,
        caller: &Caller,
        request: ReceiveMessageRequest,
        options: ReceiveOptions,
    ) -> Result<Vec<Message>, Refusal> {
        self.note(caller);
        let topic = request
            .message_queue
            .as_ref()
            .and_then(|queue| queue.topic.as_ref());
        known(topic)?;
        if request
            .group
            .as_ref()
            .is_some_and(|group| group.name == "missing")
        {
            return Err(Refusal::new(
                Code::ConsumerGroupNotFound,
                "group `missing` does not exist",
            ));
        }
        self.state.lock().receives.push((request.clone(), options));
        let wait = request
            .long_polling_timeout
            .as_ref()
            .map_or(Duration::ZERO, |duration| {
                Duration::from_secs(u64::try_from(duration.seconds).unwrap_or(0))
                    + Duration::from_nanos(u64::try_from(duration.nanos).unwrap_or(0))
            });
        let deadline = Instant::now() + wait;
        loop {
            let stored = self.stored.notified();
            tokio::pin!(stored);
            stored.as_mut().enable();
            let found = self.take_visible(&request);
            self.receive_started.notify_waiters();
            if !found.is_empty() {
                return Ok(found);
            }
            tokio::select! {
                () = stored => {}
                () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }

    async fn ack(
        &self,
        caller: &Caller,
        request: AckMessageRequest,
    ) -> Result<Vec<Result<(), Refusal>>, Refusal> {
        self.note(caller);
        known(request.topic.as_ref())?;
        let group = request.group.clone().unwrap_or_default().name;
        if group == "missing" {
            return Err(Refusal::new(
                Code::ConsumerGroupNotFound,
                "group `missing` does not exist",
            ));
        }
        let mut state = self.state.lock();
        Ok(request
            .entries
            .iter()
            .map(|entry| {
                let target = state.handles.remove(&entry.receipt_handle);
                match target {
                    Some((handle_group, index)) if handle_group == group => {
                        if let Some(delivery) = state.messages[index].group_state.get_mut(&group) {
                            delivery.acked = true;
                        }
                        Ok(())
                    }
                    _ => Err(Refusal::new(
                        Code::InvalidReceiptHandle,
                        format!("receipt handle `{}` is not valid", entry.receipt_handle),
                    )),
                }
            })
            .collect())
    }

    async fn end_transaction(
        &self,
        caller: &Caller,
        request: EndTransactionRequest,
    ) -> Result<(), Refusal> {
        self.note(caller);
        let mut state = self.state.lock();
        state.ends.push(request.clone());
        let half = state.half.remove(&request.transaction_id).ok_or_else(|| {
            Refusal::new(
                Code::InvalidTransactionId,
                format!("no open transaction `{}`", request.transaction_id),
            )
        })?;
        if request.resolution() == TransactionResolution::Commit {
            state.messages.push(Stored {
                message: half,
                group_state: HashMap::new(),
            });
            drop(state);
            self.stored.notify_waiters();
        }
        Ok(())
    }

    async fn take_check_backs(
        &self,
        caller: &Caller,
        topic: &Resource,
        max: usize,
        _wait: Duration,
    ) -> Result<Vec<CheckBack>, Refusal> {
        self.note(caller);
        known(Some(topic))?;
        let state = self.state.lock();
        let mut ids: Vec<&String> = state.half.keys().collect();
        ids.sort();
        Ok(ids
            .into_iter()
            .take(max)
            .map(|id| CheckBack {
                transaction_id: id.clone(),
                message: state.half[id].clone(),
            })
            .collect())
    }
}

/// A gateway serving on a loopback port.
pub struct Running {
    pub address: SocketAddr,
    pub backend: Arc<Fake>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<std::io::Result<()>>,
    /// Signs Aliyun requests (keys mode) with this secret.
    pub secret: Option<String>,
}

pub async fn start(authentication: Authentication, limits: Limits) -> Running {
    let listener = within(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("binds a loopback port");
    let address = listener.local_addr().expect("an address");
    let backend = Arc::new(Fake::default());
    let shutdown = CancellationToken::new();
    let secret = authentication.keys().map(|_| SECRET.to_owned());
    let config = Config {
        region: "test".to_owned(),
        authentication,
        limits,
        tls: None,
    };
    let task = tokio::spawn(meridian_http::serve(
        listener,
        backend.clone(),
        config,
        shutdown.clone(),
    ));
    Running {
        address,
        backend,
        shutdown,
        task,
        secret,
    }
}

pub async fn development() -> Running {
    start(Authentication::Development, Limits::default()).await
}

pub fn keys() -> Authentication {
    Authentication::Keys(Arc::new(AccessKeys::new([
        meridian_topology::AccessKey::granted_everything(ACCESS_KEY, SECRET),
    ])))
}

/// An answer as read off the wire.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The text of the first `<name>` element of an XML body.
    pub fn xml(&self, name: &str) -> Option<String> {
        element(self.text(), name)
    }
}

/// The text of the first `<name>` element in `xml`, unescaped.
pub fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#13;", "\r")
            .replace("&amp;", "&"),
    )
}

/// Every `<name>` element's text in `xml`.
pub fn elements(xml: &str, name: &str) -> Vec<String> {
    let close = format!("</{name}>");
    xml.split(&format!("<{name}>"))
        .skip(1)
        .filter_map(|part| part.find(&close).map(|end| part[..end].to_owned()))
        .collect()
}

/// One HTTP/1.1 connection.
pub struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    pub async fn connect(address: SocketAddr) -> Client {
        let stream = within(TcpStream::connect(address)).await.expect("connects");
        Client {
            stream: BufReader::new(stream),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        within(self.stream.get_mut().write_all(bytes))
            .await
            .expect("writes");
    }

    /// Reads one answer (a 1xx included).
    pub async fn read(&mut self) -> Reply {
        within(self.read_reply()).await
    }

    async fn read_reply(&mut self) -> Reply {
        let mut line = String::new();
        self.stream.read_line(&mut line).await.expect("reads");
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|status| status.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("a status line, got {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await.expect("reads");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header");
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let length = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, value)| value.parse::<usize>().expect("a length"));
        let mut body = vec![0; length];
        self.stream
            .read_exact(&mut body)
            .await
            .expect("reads the body");
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Sends a request and reads its answer.
    pub async fn send(&mut self, request: &Request) -> Reply {
        self.write(&request.bytes()).await;
        self.read().await
    }

    /// Whether the server closed the connection (read until end of file).
    pub async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(STEP, self.stream.read_to_end(&mut rest)).await,
            Ok(Ok(_)) | Ok(Err(_))
        )
    }
}

/// A request to write on the wire.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: vec![
                ("Host".to_owned(), "127.0.0.1".to_owned()),
                ("x-mq-version".to_owned(), "2015-06-06".to_owned()),
                (
                    "Date".to_owned(),
                    httpdate::fmt_http_date(std::time::SystemTime::now()),
                ),
            ],
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers
            .retain(|(header, _)| !header.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn without(mut self, name: &str) -> Request {
        self.headers
            .retain(|(header, _)| !header.eq_ignore_ascii_case(name));
        self
    }

    pub fn body(mut self, body: &[u8]) -> Request {
        self.body = body.to_vec();
        self.header("Content-Type", "text/xml;charset=UTF-8")
    }

    fn value(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map_or("", |(_, value)| value.as_str())
    }

    /// Signed as the SDKs sign: `MQ <id>:<signature>` over the raw target.
    pub fn signed(self, id: &str, secret: &str) -> Request {
        let mq_headers = meridian_http::signature::canonical_mq_headers(
            self.headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str())),
        );
        let text = meridian_http::signature::string_to_sign(
            &self.method,
            self.value("Content-MD5"),
            self.value("Content-Type"),
            self.value("Date"),
            &mq_headers,
            &self.target,
        );
        let signature = meridian_http::signature::sign(secret, &text);
        self.header("Authorization", &format!("MQ {id}:{signature}"))
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

impl Running {
    /// Sends `request` on a new connection (signed in keys mode).
    pub async fn send(&self, request: Request) -> Reply {
        let request = match &self.secret {
            Some(secret) => request.signed(ACCESS_KEY, secret),
            None => request,
        };
        Client::connect(self.address).await.send(&request).await
    }

    /// Publishes `body` (XML already) to `target`; the answer.
    pub async fn publish(&self, target: &str, body: &str) -> Reply {
        self.send(Request::new("POST", target).body(body.as_bytes()))
            .await
    }

    pub async fn consume(&self, target: &str) -> Reply {
        self.send(Request::new("GET", target)).await
    }

    pub async fn delete(&self, target: &str, handles: &[&str]) -> Reply {
        let mut body = String::from(
            r#"<?xml version="1.0" encoding="utf-8"?><ReceiptHandles xmlns="http://mq.aliyuncs.com/doc/v1/">"#,
        );
        for handle in handles {
            body.push_str(&format!("<ReceiptHandle>{handle}</ReceiptHandle>"));
        }
        body.push_str("</ReceiptHandles>");
        self.send(Request::new("DELETE", target).body(body.as_bytes()))
            .await
    }

    /// Stops the gateway and waits for `serve` to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        within(self.task)
            .await
            .expect("serve joins")
            .expect("serve returns Ok");
    }
}

/// A Python-style publish body.
pub fn message_xml(body: &str, tag: Option<&str>, properties: Option<&str>) -> String {
    let mut xml = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><Message xmlns="http://mq.aliyuncs.com/doc/v1/"><MessageBody>{body}</MessageBody>"#
    );
    if let Some(properties) = properties {
        xml.push_str(&format!("<Properties>{properties}</Properties>"));
    }
    if let Some(tag) = tag {
        xml.push_str(&format!("<MessageTag>{tag}</MessageTag>"));
    }
    xml.push_str("</Message>");
    xml
}

/// Checks the A5 error body: all four children, the namespace without its
/// trailing slash, XML content type, a request id header.
pub fn assert_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("text/xml;charset=utf-8"));
    let text = reply.text();
    assert!(
        text.contains(r#"<Error xmlns="http://mq.aliyuncs.com/doc/v1">"#),
        "{text}"
    );
    assert_eq!(reply.xml("Code").as_deref(), Some(code), "{text}");
    for child in ["Message", "RequestId", "HostId"] {
        assert!(
            reply.xml(child).is_some_and(|value| !value.is_empty()),
            "{child} in {text}"
        );
    }
    assert_eq!(
        reply.xml("RequestId").as_deref(),
        reply.header("x-mq-request-id")
    );
}
