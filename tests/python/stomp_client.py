"""Drives Meridian's STOMP 1.2 face with stomp.py 9.0.0 (PyPI stomp-py,
unmodified) and checks what a STOMP user relies on.

Checks (each on its own connections, with a tag and a consumer group unique
to the run and the check, so earlier runs and other checks cannot interfere;
every frame that can carry a receipt asks for one and waits for it):

  connect          CONNECTED headers (version 1.2, server meridian/…, session,
                   heart-beat), for both the STOMP and the CONNECT command
  round_trip       SEND with tag, keys, content-type, custom headers (one
                   holding ':') and a body with a NUL byte; SUBSCRIBE to
                   /queue/TOPIC (the shared group stomp_TOPIC) with a selector
                   gets it back with every header
  auto_ack         a message delivered in auto mode is not delivered again
                   after resubscribing to the same group
  client_individual  ACK of one of three; after a reconnect only the other two
                   come back, marked redelivered
  client_cumulative  ACK of the second of three in client mode settles the
                   first too; after a reconnect only the third comes back
  nack             NACK brings the same message back at once with
                   redelivered:true and delivery-attempt:2
  transactions     SENDs in a transaction arrive only at COMMIT, an ABORTed
                   transaction's never; ACKs in a committed transaction hold
  topic            /topic/TOPIC subscriptions each get every message sent
                   after their SUBSCRIBE's receipt
  heartbeats       heartbeats=(1000,1000), idle for --idle seconds, still
                   connected (no heart-beat timeout) and still served
  errors           ERROR (then a closed connection) for a bad destination, a
                   SEND to a missing topic and a SUBSCRIBE to one (with the
                   SUBSCRIBE's receipt-id)
  authentication   only with --login: a wrong passcode is refused

Usage:
  stomp_client.py --host 127.0.0.1 --port 61613 [--topic demo]
      [--missing-topic NAME] [--login ID --passcode SECRET] [--vhost NS]
      [--checks connect,round_trip,…] [--timeout 20] [--quiet 1.5] [--idle 3]

Output: one JSON object, {"ok": true, "run", "topic", "checks": {name:
{"ms", …}}, "stomp_log": {"errors", "warnings"}, "client_log"} or {"ok":
false, "error": "...", "check": name, …}; exit 0, 1 on a failed check, 2
when --deadline passed.
"""

import logging
import os
import sys
import threading
import time
import uuid

import common
import stomp
from stomp.exception import ConnectFailedException

CHECKS = (
    "connect",
    "round_trip",
    "auto_ack",
    "client_individual",
    "client_cumulative",
    "nack",
    "transactions",
    "topic",
    "heartbeats",
    "errors",
    "authentication",
)


def parse_arguments():
    parser = common.argument_parser(__doc__.splitlines()[0], credentials=False)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="the node's STOMP port")
    parser.add_argument("--topic", default="demo", help="an existing topic (default demo)")
    parser.add_argument(
        "--missing-topic",
        default="stomp-client-no-such-topic",
        help="a topic that does not exist (for the errors check)",
    )
    parser.add_argument("--login", help="access key id (when the node checks keys)")
    parser.add_argument("--passcode", help="the access key's secret")
    parser.add_argument("--vhost", help="host header: an instance namespace, if not a host name")
    parser.add_argument(
        "--checks",
        default=",".join(CHECKS),
        help="comma-separated checks to run, in this order (default: all)",
    )
    parser.add_argument(
        "--timeout", type=float, default=20.0, help="seconds to wait for any one frame"
    )
    parser.add_argument(
        "--tls-ca",
        metavar="PEM",
        help="connect with TLS, trusting this CA file (a node with [client_tls])",
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=1.5,
        help="seconds to watch for a message that must not arrive",
    )
    parser.add_argument(
        "--idle", type=float, default=3.0, help="seconds the heartbeats check stays idle"
    )
    arguments = parser.parse_args()
    arguments.checks = [check for check in arguments.checks.split(",") if check]
    unknown = [check for check in arguments.checks if check not in CHECKS]
    if unknown:
        parser.error(f"unknown checks {unknown}; known: {', '.join(CHECKS)}")
    return arguments


class StompLog(logging.Handler):
    """stomp.py's WARNING+ log records of this run."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.lines = []
        self._lock = threading.Lock()
        logging.getLogger("stomp.py").addHandler(self)

    def emit(self, record):
        with self._lock:
            self.lines.append((record.levelno, f"{record.levelname} {record.getMessage()}"))

    def summary(self):
        with self._lock:
            return {
                "errors": [line for level, line in self.lines if level >= logging.ERROR],
                "warnings": [line for level, line in self.lines if level < logging.ERROR],
            }


class Recorder(stomp.ConnectionListener):
    """Everything one connection received, and waits on it."""

    def __init__(self, timeout):
        self.timeout = timeout
        self.condition = threading.Condition()
        self.connected = None
        self.messages = []
        self.receipts = set()
        self.errors = []
        self.disconnected = False
        self.heartbeats = 0
        self.heartbeat_timeouts = 0

    def _record(self, change):
        with self.condition:
            change()
            self.condition.notify_all()

    def on_connected(self, frame):
        self._record(lambda: setattr(self, "connected", dict(frame.headers)))

    def on_message(self, frame):
        self._record(lambda: self.messages.append((dict(frame.headers), bytes(frame.body))))

    def on_receipt(self, frame):
        self._record(lambda: self.receipts.add(frame.headers.get("receipt-id")))

    def on_error(self, frame):
        self._record(lambda: self.errors.append((dict(frame.headers), bytes(frame.body or b""))))

    def on_disconnected(self):
        self._record(lambda: setattr(self, "disconnected", True))

    def on_heartbeat(self):
        self._record(lambda: setattr(self, "heartbeats", self.heartbeats + 1))

    def on_heartbeat_timeout(self):
        self._record(lambda: setattr(self, "heartbeat_timeouts", self.heartbeat_timeouts + 1))

    def wait(self, what, found, timeout=None):
        """Waits until found() is truthy (called under the lock) and returns it."""
        deadline = time.monotonic() + (timeout or self.timeout)
        with self.condition:
            while True:
                result = found()
                if result:
                    return result
                if self.errors and not what.startswith("an ERROR"):
                    headers, body = self.errors[0]
                    raise common.Failure(
                        f"ERROR while waiting for {what}: {headers.get('message')}",
                        error_body=body.decode("utf-8", "replace"),
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise common.Failure(
                        f"no {what} within {timeout or self.timeout} s",
                        received=[describe(headers, body) for headers, body in self.messages],
                    )
                self.condition.wait(remaining)

    def take_messages(self):
        with self.condition:
            taken, self.messages = self.messages, []
            return taken


def describe(headers, body):
    described = dict(headers)
    described["body"] = body.decode("utf-8", "replace")
    return described


class Client:
    """One stomp.py connection with a Recorder; every request waits for its receipt."""

    def __init__(self, arguments, heartbeats=(0, 0), connect_command=False, passcode=None):
        self.arguments = arguments
        self.recorder = Recorder(arguments.timeout)
        self.connection = stomp.Connection12(
            [(arguments.host, arguments.port)],
            heartbeats=heartbeats,
            vhost=arguments.vhost,
            auto_decode=False,
            reconnect_attempts_max=1,
        )
        if arguments.tls_ca:
            # stomp.py checks the server's certificate against this CA.
            self.connection.set_ssl(
                for_hosts=[(arguments.host, arguments.port)], ca_certs=arguments.tls_ca
            )
        self.connection.set_listener("recorder", self.recorder)
        self.connect_command = connect_command
        self.passcode = passcode if passcode is not None else arguments.passcode
        self.receipts = 0

    def connect(self):
        """CONNECT (or STOMP); a refusal raises common.Failure with the server's ERROR."""
        try:
            self.connection.connect(
                self.arguments.login,
                self.passcode,
                wait=True,
                with_connect_command=self.connect_command,
            )
        except ConnectFailedException:
            refused = [headers.get("message") for headers, _ in self.recorder.errors]
            raise common.Failure(
                f"connect to {self.arguments.host}:{self.arguments.port} failed: "
                f"{refused[0] if refused else 'no CONNECTED frame'}",
                server_errors=refused,
            ) from None
        return self.recorder.wait("CONNECTED", lambda: self.recorder.connected)

    def _receipt(self):
        self.receipts += 1
        return f"r-{uuid.uuid4().hex[:12]}"

    def _await(self, receipt, what):
        self.recorder.wait(f"RECEIPT of {what}", lambda: receipt in self.recorder.receipts)

    def send(self, destination, body, headers=None, transaction=None):
        receipt = self._receipt()
        headers = dict(headers or {})
        headers["receipt"] = receipt
        if transaction:
            headers["transaction"] = transaction
        self.connection.send(destination, body, headers=headers)
        self._await(receipt, f"SEND to {destination}")

    def subscribe(self, destination, subscription, ack="auto", headers=None):
        receipt = self._receipt()
        headers = dict(headers or {})
        headers["receipt"] = receipt
        self.connection.subscribe(destination, subscription, ack=ack, headers=headers)
        self._await(receipt, f"SUBSCRIBE to {destination}")

    def unsubscribe(self, subscription):
        receipt = self._receipt()
        self.connection.unsubscribe(subscription, headers={"receipt": receipt})
        self._await(receipt, f"UNSUBSCRIBE {subscription}")

    def ack(self, message_headers, transaction=None):
        receipt = self._receipt()
        self.connection.ack(message_headers["ack"], transaction=transaction, receipt=receipt)
        self._await(receipt, f"ACK {message_headers['ack']}")

    def nack(self, message_headers):
        receipt = self._receipt()
        self.connection.nack(message_headers["ack"], receipt=receipt)
        self._await(receipt, f"NACK {message_headers['ack']}")

    def begin(self, transaction):
        receipt = self._receipt()
        self.connection.begin(transaction, headers={"receipt": receipt})
        self._await(receipt, f"BEGIN {transaction}")

    def commit(self, transaction):
        receipt = self._receipt()
        self.connection.commit(transaction, headers={"receipt": receipt})
        self._await(receipt, f"COMMIT {transaction}")

    def abort(self, transaction):
        receipt = self._receipt()
        self.connection.abort(transaction, headers={"receipt": receipt})
        self._await(receipt, f"ABORT {transaction}")

    def messages(self, count, what):
        """Waits for `count` messages in all (since the last take) and takes them."""
        self.recorder.wait(
            f"{count} MESSAGE frame(s) ({what})",
            lambda: len(self.recorder.messages) >= count,
        )
        return self.recorder.take_messages()

    def quiet(self, what):
        """Fails if a message arrives within --quiet seconds."""
        time.sleep(self.arguments.quiet)
        extra = self.recorder.take_messages()
        if extra:
            raise common.Failure(
                f"unexpected MESSAGE frame(s) {what}",
                received=[describe(headers, body) for headers, body in extra],
            )

    def disconnect(self):
        """DISCONNECT with a receipt (stomp.py closes its side when it arrives)."""
        if not self.connection.is_connected():
            return
        receipt = self._receipt()
        self.connection.disconnect(receipt=receipt)
        self.recorder.wait(
            "RECEIPT of DISCONNECT",
            lambda: receipt in self.recorder.receipts or self.recorder.disconnected,
        )

    def expect_error(self, what, contains):
        """Waits for an ERROR frame (and the server's close); returns its headers."""
        headers, body = self.recorder.wait(
            f"an ERROR frame for {what}", lambda: self.recorder.errors and self.recorder.errors[0]
        )
        message = headers.get("message", "")
        if contains not in message:
            raise common.Failure(
                f"ERROR for {what}: {message!r} does not mention {contains!r}",
                error_headers=headers,
            )
        self.recorder.wait(
            f"an ERROR then the server closing the connection ({what})",
            lambda: self.recorder.disconnected,
        )
        return {"message": message, "receipt-id": headers.get("receipt-id"), "body": body.decode()}


class Run:
    """Names unique to this run."""

    def __init__(self, arguments):
        self.arguments = arguments
        self.id = f"{os.getpid()}{time.time_ns() % 10**10}"
        self.queue = f"/queue/{arguments.topic}"

    def tag(self, check):
        return f"stomp_{self.id}_{check}"

    def group(self, check):
        return f"stomp-py-{self.id}-{check}"

    def client(self, **options):
        client = Client(self.arguments, **options)
        client.connect()
        return client

    def consumer(self, check, ack, subscription="s-1"):
        """A connected client subscribed to the queue in this check's group and tag."""
        client = self.client()
        client.subscribe(
            self.queue,
            subscription,
            ack=ack,
            headers={"consumer-group": self.group(check), "selector": self.tag(check)},
        )
        return client

    def produce(self, check, bodies, transaction=None, client=None):
        producer = client or self.client()
        for body in bodies:
            producer.send(
                self.queue,
                body.encode(),
                headers={"tag": self.tag(check)},
                transaction=transaction,
            )
        if client is None:
            producer.disconnect()


def bodies_of(messages):
    return sorted(body.decode() for _, body in messages)


def expect_bodies(messages, wanted, what):
    got = bodies_of(messages)
    if got != sorted(wanted):
        raise common.Failure(
            f"{what}: received {got}, expected {sorted(wanted)}",
            received=[describe(headers, body) for headers, body in messages],
        )


def check_connect(run):
    result = {}
    for command, connect_command in (("STOMP", False), ("CONNECT", True)):
        client = Client(run.arguments, connect_command=connect_command)
        connected = client.connect()
        problems = []
        if connected.get("version") != "1.2":
            problems.append(f"version {connected.get('version')!r}")
        if not connected.get("server", "").startswith("meridian/"):
            problems.append(f"server {connected.get('server')!r}")
        if not connected.get("session"):
            problems.append("no session")
        if "heart-beat" not in connected:
            problems.append("no heart-beat")
        if problems:
            raise common.Failure(f"CONNECTED after {command}: {problems}", connected=connected)
        client.disconnect()
        result[command] = connected
    return result


def check_round_trip(run):
    tag = run.tag("round_trip")
    consumer = run.client()
    # The queue's shared group stomp_TOPIC, narrowed to this run's tag.
    consumer.subscribe(run.queue, "rt", ack="auto", headers={"selector": tag})
    producer = run.client()
    body = b"round trip \x00 with a NUL byte, \xc3\xa9t\xc3\xa9"
    sent_headers = {
        "tag": tag,
        "keys": "key-1 key-2",
        "x-color": "blue",
        "x-with-colon": "a:b",
        "content-type": "text/plain; charset=utf-8",
    }
    producer.send(run.queue, body, headers=sent_headers)
    producer.disconnect()
    [(headers, received)] = consumer.messages(1, "the round trip")
    wanted = {
        "destination": run.queue,
        "subscription": "rt",
        "tag": tag,
        "keys": "key-1,key-2",
        "x-color": "blue",
        "x-with-colon": "a:b",
        "content-type": "text/plain; charset=utf-8",
        "content-length": str(len(body)),
    }
    wrong = {name: headers.get(name) for name, value in wanted.items() if headers.get(name) != value}
    if received != body:
        wrong["body"] = received.decode("utf-8", "replace")
    if headers.get("ack") != headers.get("message-id") or not headers.get("message-id"):
        wrong["ack"] = headers.get("ack")
    if len(headers.get("rocketmq-message-id", "")) != 32:
        wrong["rocketmq-message-id"] = headers.get("rocketmq-message-id")
    if wrong:
        raise common.Failure(f"the MESSAGE differs from the SEND: {wrong}", headers=headers)
    consumer.unsubscribe("rt")
    consumer.disconnect()
    return {"headers": headers}


def check_auto_ack(run):
    consumer = run.consumer("auto_ack", "auto")
    run.produce("auto_ack", ["auto-1"])
    expect_bodies(consumer.messages(1, "auto mode"), ["auto-1"], "auto mode")
    consumer.disconnect()
    consumer = run.consumer("auto_ack", "client-individual")
    run.produce("auto_ack", ["sentinel"])
    received = consumer.messages(1, "the sentinel")
    consumer.quiet("after the sentinel (auto-acked messages must not return)")
    expect_bodies(received, ["sentinel"], "after resubscribing")
    consumer.ack(received[0][0])
    consumer.disconnect()
    return {}


def check_client_individual(run):
    consumer = run.consumer("client_individual", "client-individual")
    run.produce("client_individual", ["a", "b", "c"])
    received = consumer.messages(3, "client-individual")
    expect_bodies(received, ["a", "b", "c"], "client-individual")
    acked = next(headers for headers, body in received if body == b"b")
    consumer.ack(acked)
    consumer.disconnect()
    # The session ended: a and c are visible again at once.
    consumer = run.consumer("client_individual", "client-individual")
    again = consumer.messages(2, "the unacknowledged two after a reconnect")
    consumer.quiet("after the redeliveries (b was acknowledged)")
    expect_bodies(again, ["a", "c"], "after a reconnect")
    not_marked = [headers for headers, _ in again if headers.get("redelivered") != "true"]
    if not_marked:
        raise common.Failure("redeliveries lack redelivered:true", headers=not_marked)
    for headers, _ in again:
        consumer.ack(headers)
    consumer.disconnect()
    return {"redelivered": [describe(headers, body) for headers, body in again]}


def check_client_cumulative(run):
    consumer = run.consumer("client_cumulative", "client")
    run.produce("client_cumulative", ["one", "two", "three"])
    received = consumer.messages(3, "client mode")
    # Delivery order is the order of message-id (a number per connection).
    received.sort(key=lambda message: int(message[0]["message-id"]))
    consumer.ack(received[1][0])
    consumer.disconnect()
    consumer = run.consumer("client_cumulative", "client")
    again = consumer.messages(1, "the message after the cumulative ACK")
    consumer.quiet("after the redelivery (the ACK settled the first two)")
    expect_bodies(again, [received[2][1].decode()], "after a reconnect")
    consumer.ack(again[0][0])
    consumer.disconnect()
    return {"order": [body.decode() for _, body in received]}


def check_nack(run):
    consumer = run.consumer("nack", "client-individual")
    run.produce("nack", ["nack me"])
    [(first, _)] = consumer.messages(1, "the first delivery")
    consumer.nack(first)
    [(again, body)] = consumer.messages(1, "the delivery after NACK")
    problems = {}
    if body != b"nack me":
        problems["body"] = body.decode("utf-8", "replace")
    if again.get("redelivered") != "true":
        problems["redelivered"] = again.get("redelivered")
    if again.get("delivery-attempt") != "2":
        problems["delivery-attempt"] = again.get("delivery-attempt")
    if again.get("rocketmq-message-id") != first.get("rocketmq-message-id"):
        problems["rocketmq-message-id"] = again.get("rocketmq-message-id")
    if problems:
        raise common.Failure(f"the NACKed message came back wrong: {problems}", headers=again)
    consumer.ack(again)
    consumer.disconnect()
    return {"first": first, "again": again}


def check_transactions(run):
    consumer = run.consumer("transactions", "client-individual")
    producer = run.client()
    producer.begin("t-commit")
    run.produce("transactions", ["committed-1", "committed-2"], "t-commit", producer)
    producer.begin("t-abort")
    run.produce("transactions", ["aborted"], "t-abort", producer)
    consumer.quiet("before COMMIT (transactional SENDs must wait)")
    producer.abort("t-abort")
    producer.commit("t-commit")
    committed = consumer.messages(2, "the committed SENDs")
    expect_bodies(committed, ["committed-1", "committed-2"], "after COMMIT")
    # ACKs in a transaction count once it commits.
    consumer.begin("t-ack")
    for headers, _ in committed:
        consumer.ack(headers, transaction="t-ack")
    consumer.commit("t-ack")
    run.produce("transactions", ["sentinel"], client=producer)
    sentinel = consumer.messages(1, "the sentinel")
    consumer.quiet("after the sentinel (the ABORTed SEND must never arrive)")
    expect_bodies(sentinel, ["sentinel"], "after ABORT")
    consumer.ack(sentinel[0][0])
    consumer.disconnect()
    producer.disconnect()
    # Nothing acknowledged in the transaction comes back.
    consumer = run.consumer("transactions", "client-individual")
    run.produce("transactions", ["sentinel-2"])
    after = consumer.messages(1, "the second sentinel")
    consumer.quiet("after the second sentinel (the transaction's ACKs held)")
    expect_bodies(after, ["sentinel-2"], "after reconnecting")
    consumer.ack(after[0][0])
    consumer.disconnect()
    return {}


def check_topic(run):
    tag = run.tag("topic")
    destination = f"/topic/{run.arguments.topic}"
    first, second = run.client(), run.client()
    for client in (first, second):
        client.subscribe(destination, "t", ack="client-individual", headers={"selector": tag})
    producer = run.client()
    producer.send(destination, b"to every subscriber", headers={"tag": tag})
    producer.disconnect()
    for name, client in (("first", first), ("second", second)):
        [(headers, body)] = client.messages(1, f"the broadcast ({name} subscriber)")
        if body != b"to every subscriber" or headers.get("destination") != destination:
            raise common.Failure(f"{name} subscriber got {describe(headers, body)}")
        client.ack(headers)
        client.unsubscribe("t")
        client.disconnect()
    return {}


def check_heartbeats(run):
    client = Client(run.arguments, heartbeats=(1000, 1000))
    connected = client.connect()
    offered = connected.get("heart-beat", "")
    time.sleep(run.arguments.idle)
    recorder = client.recorder
    if not client.connection.is_connected() or recorder.disconnected:
        raise common.Failure(f"disconnected while idle (server heart-beat {offered})")
    if recorder.heartbeat_timeouts:
        raise common.Failure(f"heart-beat timeout while idle (server heart-beat {offered})")
    client.send(run.queue, b"still here", headers={"tag": run.tag("heartbeats")})
    client.disconnect()
    return {
        "server_heart_beat": offered,
        "idle_seconds": run.arguments.idle,
        "heartbeats_received": recorder.heartbeats,
    }


def check_errors(run):
    result = {}
    client = run.client()
    client.connection.send("/exchange/amq.topic/key", b"x")
    result["bad_destination"] = client.expect_error("a bad destination", "destination")
    missing = run.arguments.missing_topic
    client = run.client()
    client.connection.send(f"/queue/{missing}", b"x")
    result["missing_topic_send"] = client.expect_error(f"a SEND to {missing}", missing)
    client = run.client()
    client.connection.subscribe(f"/queue/{missing}", "s", headers={"receipt": "sub-missing"})
    refused = client.expect_error(f"a SUBSCRIBE to {missing}", missing)
    if refused["receipt-id"] != "sub-missing":
        raise common.Failure("the ERROR lacks the SUBSCRIBE's receipt-id", error=refused)
    result["missing_topic_subscribe"] = refused
    return result


def check_authentication(run):
    if run.arguments.login is None:
        return {"skipped": "no --login given (development mode accepts anyone)"}
    client = Client(run.arguments, passcode=(run.arguments.passcode or "") + "-wrong")
    try:
        client.connect()
    except common.Failure:
        pass
    else:
        raise common.Failure("a wrong passcode was accepted")
    message = client.recorder.errors[0][0].get("message", "") if client.recorder.errors else ""
    if "authentication failed" not in message or run.arguments.login not in message:
        raise common.Failure(f"unexpected ERROR for a wrong passcode: {message!r}")
    return {"message": message}


def main(arguments, _log):
    stomp_log = StompLog()
    run = Run(arguments)
    result = {"run": run.id, "topic": arguments.topic, "checks": {}}
    for check in arguments.checks:
        started = time.monotonic()
        try:
            outcome = globals()[f"check_{check}"](run)
        except common.Failure as failure:
            failure.details.update(check=check, checks=result["checks"], stomp_log=stomp_log.summary())
            raise common.Failure(f"{check}: {failure}", **failure.details) from None
        outcome["ms"] = common.elapsed_ms(started)
        result["checks"][check] = outcome
        sys.stderr.write(f"{check}: ok in {outcome['ms']} ms\n")
        sys.stderr.flush()
    result["stomp_log"] = stomp_log.summary()
    return result


if __name__ == "__main__":
    common.run(main, parse_arguments())
