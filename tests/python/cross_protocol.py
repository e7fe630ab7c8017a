"""One side of a cross-protocol exchange: sends or receives messages over the
Aliyun MQ HTTP API (official SDK `mq-http-sdk`) or STOMP 1.2 (`stomp.py`), so
that the Rust integration test (http_stomp.rs) can pair it with the official
RocketMQ gRPC client on another region's node.

    cross_protocol.py send-http    --endpoint http://H:P --topic T --count N --prefix P
    cross_protocol.py send-stomp   --endpoint H:P        --topic T --count N --prefix P
    cross_protocol.py receive-http  --endpoint http://H:P --topic T --group G --count N
    cross_protocol.py receive-stomp --endpoint H:P        --topic T --group G --count N

Every sent message carries the tag `cross`, the key `<prefix>-<i>` and the
property `origin=<protocol>`. Prints one JSON object on stdout: {"ok": true,
"messages": [{"body", "tag", "keys", "properties"}]} (received or sent), or
{"ok": false, "error": ...} before exiting 1.
"""

import argparse
import json
import queue
import sys
import time
import traceback

import stomp
from mq_http_sdk.mq_client import MQClient
from mq_http_sdk.mq_exception import MQExceptionBase
from mq_http_sdk.mq_producer import TopicMessage

# The node runs in development mode: the SDK needs some key and secret.
ACCESS_KEY = "dev"
SECRET = "dev-secret"
TIMEOUT_S = 60


def http_client(endpoint):
    client = MQClient(endpoint, ACCESS_KEY, SECRET)
    client.set_log_level(40)  # logging.ERROR: the SDK logs every request at INFO
    return client


def send_http(args):
    producer = http_client(args.endpoint).get_producer("", args.topic)
    sent = []
    for index in range(args.count):
        key = f"{args.prefix}-{index}"
        message = TopicMessage(f"{args.prefix} over http #{index}", "cross")
        message.set_message_key(key)
        message.put_property("origin", "http")
        producer.publish_message(message)
        sent.append({"body": message.message_body, "tag": "cross", "keys": key,
                     "properties": {"origin": "http"}})
    return sent


def receive_http(args):
    consumer = http_client(args.endpoint).get_consumer("", args.topic, args.group, "cross")
    received = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(received) < args.count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"received {len(received)} of {args.count} over HTTP")
        try:
            messages = consumer.consume_message(16, 3)
        except MQExceptionBase as error:
            if error.type == "MessageNotExist":
                continue
            raise
        consumer.ack_message([message.receipt_handle for message in messages])
        for message in messages:
            properties = dict(message.properties)
            received.append({
                "body": message.message_body,
                "tag": message.message_tag,
                "keys": message.get_message_key(),
                "properties": {key: value for key, value in properties.items()
                               if key not in ("KEYS",)},
            })
    return received


def stomp_connection(endpoint, listener=None):
    host, port = endpoint.rsplit(":", 1)
    connection = stomp.Connection12([(host, int(port))])
    if listener is not None:
        connection.set_listener("", listener)
    connection.connect(ACCESS_KEY, SECRET, wait=True)
    return connection


def send_stomp(args):
    connection = stomp_connection(args.endpoint)
    sent = []
    for index in range(args.count):
        key = f"{args.prefix}-{index}"
        body = f"{args.prefix} over stomp #{index}"
        connection.send(destination=f"/queue/{args.topic}", body=body,
                        headers={"tag": "cross", "keys": key, "origin": "stomp"},
                        receipt=f"sent-{index}")
        sent.append({"body": body, "tag": "cross", "keys": key,
                     "properties": {"origin": "stomp"}})
    # The DISCONNECT's receipt comes after every earlier frame was processed.
    connection.disconnect()
    return sent


class Inbox(stomp.ConnectionListener):
    def __init__(self):
        self.frames = queue.Queue()
        self.errors = queue.Queue()

    def on_message(self, frame):
        self.frames.put(frame)

    def on_error(self, frame):
        self.errors.put(frame)


def receive_stomp(args):
    inbox = Inbox()
    connection = stomp_connection(args.endpoint, inbox)
    connection.subscribe(destination=f"/queue/{args.topic}", id="cross", ack="client-individual",
                         headers={"consumer-group": args.group, "selector": "cross"})
    received = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(received) < args.count:
        if not inbox.errors.empty():
            error = inbox.errors.get()
            raise RuntimeError(f"STOMP ERROR frame: {error.headers} {error.body}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"received {len(received)} of {args.count} over STOMP")
        try:
            frame = inbox.frames.get(timeout=min(remaining, 1.0))
        except queue.Empty:
            continue
        connection.ack(frame.headers["ack"])
        headers = frame.headers
        received.append({
            "body": frame.body,
            "tag": headers.get("tag"),
            "keys": headers.get("keys"),
            "properties": {"origin": headers.get("origin")},
        })
    connection.disconnect()
    return received


def main():
    global TIMEOUT_S  # pylint: disable=global-statement
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", choices=["send-http", "send-stomp", "receive-http",
                                           "receive-stomp"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", default="cross")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--prefix", default="cross")
    parser.add_argument("--deadline", type=float, default=TIMEOUT_S,
                        help="seconds the whole run may take (the test harness passes it)")
    args = parser.parse_args()
    TIMEOUT_S = min(TIMEOUT_S, args.deadline)
    actions = {"send-http": send_http, "send-stomp": send_stomp,
               "receive-http": receive_http, "receive-stomp": receive_stomp}
    try:
        messages = actions[args.action](args)
    except Exception as error:  # pylint: disable=broad-except
        traceback.print_exc(file=sys.stderr)
        print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}))
        sys.exit(1)
    print(json.dumps({"ok": True, "messages": messages}))


if __name__ == "__main__":
    main()
